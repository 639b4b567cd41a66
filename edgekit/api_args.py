"""The Python API's arguments, checked (edgekit.api): the typed groups its long option lists
became (ModelInput, ValidateSettings; DataSources is edgekit.data.given's, Budget the gate's)
and the checks that turn a misspelt, moved, missing or wrong-typed argument into a ConfigError
naming it and what it accepts, never Python's TypeError."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from edgekit.errors import ConfigError, shown
from edgekit.preprocessing import Preprocessing
from edgekit.spec import InputSpec

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.validate.gate import Budget

M = TypeVar("M", bound=BaseModel)


def user_preprocessing(preprocessing: str | Mapping[str, Any] | None = None,
                       **fields: Any) -> Preprocessing:
    """The API's preprocessing arguments as the one rule takes them (edgekit.preprocessing.
    resolve_preprocessing): `preprocessing` is a preset name ("imagenet", "cifar10",
    "fashion-mnist", "mnist", "arch") or a mapping of preset/mean/std/resize/crop/channel_order;
    `fields` (mean=, std=, resize=, crop=, channel_order=) override it."""
    given: Preprocessing = {}
    if isinstance(preprocessing, str):
        given["preset"] = preprocessing
    elif preprocessing is not None:
        given.update(preprocessing)
    given.update({k: v for k, v in fields.items() if v is not None})
    return {k: v for k, v in given.items() if v is not None}

# ---------------------------------------------------------------- the arguments, checked
class ModelInput(BaseModel):
    """How to read the model: what an in-memory module cannot say about itself (its input
    shape or InputSpec, its preprocessing, the factory that rebuilds it), and how to load a file
    (`trust_model` for a file that executes code). `preprocessing` is a preset name ("imagenet",
    "cifar10", "fashion-mnist", "mnist", "arch") or a mapping of preset / mean / std / resize /
    crop / channel_order; it is never guessed (edgekit.preprocessing.resolve_preprocessing)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True,
                              allow_inf_nan=False)

    input_shape: tuple[Annotated[int, Field(ge=1)], ...] | None = Field(
        None, description="(N, C, H, W) of an in-memory module or a state_dict")
    spec: InputSpec | None = Field(None, description="the full InputSpec instead")
    arch: StrictStr | None = Field(None, description="'module:factory' that rebuilds the model")
    arch_kwargs: dict[str, Any] | str | None = Field(None, description="the factory's kwargs")
    trust_model: StrictBool = Field(False, description="load a file that executes code")
    preprocessing: str | dict[str, Any] | None = Field(
        None, description="a preset name, or preset/mean/std/resize/crop/channel_order")

    @field_validator("preprocessing", mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        from edgekit.data.given import check_preprocessing_keys

        if isinstance(value, Mapping):
            check_preprocessing_keys(value)
        return value

    def given(self) -> Preprocessing:
        """The preprocessing as the one rule takes it (user_preprocessing)."""
        return user_preprocessing(self.preprocessing)


class ValidateSettings(BaseModel):
    """How `validate` measures: batch sizes (one or a list; default the profile's), the thread
    count (default the profile's), and `rerun` (a remote device measures again instead of
    collecting the same job's results)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    batches: list[Annotated[int, Field(ge=1)]] | None = Field(None, description="batch sizes")
    threads: int | None = Field(None, ge=1, description="override the profile's threads")
    rerun: StrictBool = Field(False, description="measure a remote job again")

    @field_validator("batches", mode="before")
    @classmethod
    def _one_batch(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value


# Arguments the API took by name before they were grouped: where each one went.
MOVED = {**{k: "data=DataSources({k}=...)" for k in ("train", "eval", "calib", "data_dir",
                                                       "eval_limit")},
         "limit": "data=DataSources(eval_limit=...)",
         "parity_data": "data=DataSources(eval=...) (the parity data)",
         **{k: "budget={{'{k}': ...}}" for k in ("max_drop", "max_drop_rel", "min_agreement",
                                                  "min_cosine", "min_speedup")},
         **{k: "model_input=ModelInput({k}=...)" for k in ("input_shape", "spec", "arch",
                                                            "arch_kwargs", "trust_model")},
         **{k: "model_input=ModelInput(preprocessing={{'{k}': ...}})"
            for k in ("mean", "std", "resize", "crop", "channel_order")},
         **{k: "settings=ValidateSettings({k}=...)" for k in ("batches", "threads", "rerun")},
         "batch": "settings=ValidateSettings(batches=...)"}
# optimize's search-space fields (a recipe's `optimize:` section), given by name: they go in space=
MOVED_SPACE = ("prune", "dwsep", "runtimes", "precisions", "int8_fallback", "fallback", "batch",
               "trials", "time_budget", "seed")


def call_error(name: str, sig: inspect.Signature, args: tuple, kwargs: dict,
                problem: TypeError) -> ConfigError:
    """A call that does not fit `name`'s signature, said in the API's terms: the argument,
    where it went (MOVED) or the closest one, and what the function takes."""
    import difflib

    params = list(sig.parameters)
    takes = f"{name}() takes: " + ", ".join(params)
    for key in kwargs:
        if key not in sig.parameters:
            if name == "optimize" and key in MOVED_SPACE:
                return ConfigError(f"{name}() has no argument {key!r}; it goes in "
                                   f"space={{'{'int8_fallback' if key == 'fallback' else key}'"
                                   ": ...}", hint=takes)
            if key in MOVED and not (name != "validate" and key == "preprocessing"):
                where = MOVED[key].format(k=key)
                return ConfigError(f"{name}() has no argument {key!r}; it goes in {where}",
                                   hint=takes)
            close = difflib.get_close_matches(key, params, n=1)
            return ConfigError(f"{name}() has no argument {key!r}"
                               + (f"; did you mean {close[0]!r}?" if close else ""), hint=takes)
    positional = [p for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(args) > len(positional):
        return ConfigError(f"{name}() takes {len(positional)} argument(s) by position "
                           f"({', '.join(p.name for p in positional)}), got {len(args)}",
                           hint="pass the others by name, e.g. " + ", ".join(
                               f"{p}=..." for p in params[len(positional):][:3]))
    bound = {**dict(zip(params, args, strict=False)), **kwargs}
    missing = [p for p, v in sig.parameters.items() if v.default is v.empty and p not in bound]
    if missing:
        return ConfigError(f"{name}() needs {missing[0]}=", hint=takes)
    return ConfigError(f"{name}(): {problem}", hint=takes)


F = TypeVar("F", bound=Callable[..., Any])


def checked(fn: F) -> F:
    """`fn` with its call checked first: an argument it does not take (misspelt, or one that
    moved into a group), a missing one or too many by position is a ConfigError naming it and
    what `fn` takes, never Python's TypeError. `help(fn)` shows `fn`'s own signature."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise call_error(fn.__name__, sig, args, kwargs, exc) from None
        return fn(*args, **kwargs)

    return call  # type: ignore[return-value]


def path_arg(name: str, value: Any, *, optional: bool = False) -> Path | None:
    """A str or os.PathLike argument as a Path; anything else a ConfigError naming it."""
    if value is None and optional:
        return None
    if isinstance(value, os.PathLike) or (isinstance(value, str) and value.strip()
                                           and "\x00" not in value):
        return Path(value)
    raise ConfigError(f"{name}={shown(value)} is not a path",
                      hint=f"pass {name}='folder/' (a str or pathlib.Path)"
                           + (", or leave it out" if optional else ""))


def text_arg(name: str, value: Any, accepts: str) -> str | None:
    if value is None or (isinstance(value, str) and value and "\x00" not in value):
        return value
    raise ConfigError(f"{name}={shown(value)} is not {accepts}", hint=f"pass {name}='...'")


def flag_arg(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{name}={shown(value)} is not True or False", hint=f"pass {name}=True")


def group_arg(name: str, value: Any, schema: type[M]) -> M:
    """A typed group (`schema`) from an instance, a mapping of its fields (each checked: a typo
    names the key) or None (its defaults)."""
    from edgekit.config import group

    return group(name, value, schema)


def budget_arg(value: Any, *, only: tuple[str, ...] | None = None) -> Budget:
    """A Budget from an instance, a mapping of its limits or None; `only`: the limits this
    function judges (compress: the top-1 drop)."""
    from edgekit.validate.gate import Budget

    budget = group_arg("budget", value, Budget)
    extra = [k for k in budget.model_fields_set if only and k not in only
             and getattr(budget, k) is not None]
    if extra:
        raise ConfigError(f"budget: {extra[0]} is not judged here",
                          hint=f"this budget takes {' and '.join(only or ())}; {extra[0]} is "
                               "validate's (edgekit.validate(..., budget=...))")
    return budget
