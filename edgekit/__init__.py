"""edgekit: compress, quantize, export and validate PyTorch image models for edge devices.

The Python API (edgekit.api) is reached lazily from here, so `import edgekit` stays light:
`edgekit.compress(...)`, `edgekit.export(...)`, `edgekit.validate(...)`."""

from __future__ import annotations

import types
from typing import Any

__version__ = "0.1.0"

API = ("compress", "export", "DataSources", "ModelInput", "ValidateSettings")


class _CallableModule(types.ModuleType):
    """`edgekit.validate` is both the subpackage (edgekit/validate/) and the API function: the
    subpackage's module object calls edgekit.api.validate, so `edgekit.validate(...)` works
    whether or not something imported the subpackage first."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from edgekit.api import validate

        return validate(*args, **kwargs)

    @property
    def __signature__(self) -> Any:  # inspect.signature / help() show the API's parameters
        import inspect

        from edgekit.api import validate

        return inspect.signature(validate)

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        import inspect

        from edgekit.api import validate

        return (f"edgekit.validate{inspect.signature(validate)}\n\n"
                f"{inspect.cleandoc(validate.__doc__ or '')}\n\n(This is also the package of "
                "validation modules: latency protocol, accuracy, environment, budget gate.)")


def _make_callable(module: types.ModuleType) -> None:
    module.__class__ = _CallableModule


def __getattr__(name: str) -> Any:
    if name in API:
        from edgekit import api

        return getattr(api, name)
    if name == "validate":
        import importlib

        return importlib.import_module("edgekit.validate")
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API, "validate"])
