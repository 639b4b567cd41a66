"""Errors edgekit raises on purpose. Each says what was wrong and how to fix it.

The CLI prints `message` and `hint` without a traceback and exits with `exit_code`:
2 for bad input (the user can fix the command), 1 for a failed gate (the model does not meet
its budget), which is a result, not a crash.
"""

from __future__ import annotations


class EdgekitError(Exception):
    """Base class. `hint` is one line that tells the user what to do next."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class InputError(EdgekitError):
    """Something the user passed (a file, a flag, a value) is not usable."""


class ModelLoadError(InputError):
    """A model file cannot be loaded as given."""


class UnsafeModelError(ModelLoadError):
    """Loading this model file would execute code; needs --trust-model."""


class MissingArchError(ModelLoadError):
    """A plain state_dict and no architecture to build it with (--arch)."""


class MissingPreprocessingError(ModelLoadError):
    """A model that records no preprocessing, and none was given. `flags`: the flags (or API
    keywords) that would give what is missing; `lacks`: what is missing, in words."""

    def __init__(self, message: str, hint: str | None = None, *, flags: str = "",
                 lacks: str = "") -> None:
        super().__init__(message, hint)
        self.flags = flags
        self.lacks = lacks


class DataError(InputError):
    """A data source or calibration set is missing, malformed or does not fit the model."""


class MissingLabelsError(DataError):
    """A data set has no labels, and what was asked of it (top-1, a gate, training) needs them."""


class DataShapeError(DataError):
    """A data set's arrays have a shape its format or the model cannot take."""


class ConfigError(InputError):
    """A recipe, device profile or pass configuration is invalid."""


class MissingDependencyError(EdgekitError):
    """An optional library or runtime is not installed here."""


class ExportError(EdgekitError):
    """An export produced an artifact that failed its own check (parity, compile, run)."""

    exit_code = 1


class GateError(EdgekitError):
    """A result did not meet its accuracy budget."""

    exit_code = 1


def shown(value: object, limit: int = 100) -> str:
    """repr(value) for a message, cut to `limit` characters: a value from a file can be megabytes
    long (or expand to gigabytes through YAML aliases), and a message never holds it whole."""
    import reprlib

    cut = reprlib.Repr()
    cut.maxlevel, cut.maxstring, cut.maxother = 3, limit, limit
    cut.maxdict = cut.maxlist = cut.maxtuple = cut.maxset = 6
    short = cut.repr(value)
    return short if len(short) <= limit else short[: limit - 1] + "…"
