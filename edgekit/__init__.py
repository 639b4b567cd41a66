"""edgekit: compress, quantize, export and validate PyTorch image models for edge devices.

The Python API (edgekit.api) is reached lazily from here, so `import edgekit` stays light:
`edgekit.compress(...)`, `edgekit.export(...)`, `edgekit.validate(...)`, `edgekit.optimize(...)`."""

from __future__ import annotations

import types
from typing import Any

__version__ = "0.1.0"

API = ("compress", "export", "DataSources", "ModelInput", "ValidateSettings", "OptimizeResult")


class _CallableModule(types.ModuleType):
    """`edgekit.validate` and `edgekit.optimize` are both subpackages (edgekit/validate/,
    edgekit/optimize/) and API functions: the subpackage's module object calls the edgekit.api
    function of its name, so `edgekit.validate(...)` works whether or not something imported
    the subpackage first."""

    def _api(self) -> Any:
        return _api_attr(self.__name__.rpartition(".")[2])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._api()(*args, **kwargs)

    @property
    def __signature__(self) -> Any:  # inspect.signature / help() show the API's parameters
        import inspect

        return inspect.signature(self._api())

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        import inspect

        function = self._api()
        return (f"edgekit.{function.__name__}{inspect.signature(function)}\n\n"
                f"{inspect.cleandoc(function.__doc__ or '')}\n\n(This is also the package "
                f"of {PACKAGES[function.__name__]}.)")


PACKAGES = {"validate": "validation modules: latency protocol, accuracy, environment, budget "
                        "gate",
            "optimize": "the device-in-the-loop search: space, builds, measurements, cache"}


def _make_callable(module: types.ModuleType) -> None:
    module.__class__ = _CallableModule


def _api_attr(name: str) -> Any:
    """An API name: edgekit.api's, or edgekit.api_optimize's (optimize and its result types)."""
    import importlib

    for module in ("edgekit.api", "edgekit.api_optimize"):
        found = importlib.import_module(module)
        if name in found.__all__:
            return getattr(found, name)
    raise AttributeError(name)


def __getattr__(name: str) -> Any:
    if name in API:
        return _api_attr(name)
    if name in PACKAGES:
        import importlib

        return importlib.import_module(f"edgekit.{name}")
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API, *PACKAGES])
