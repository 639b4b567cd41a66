"""The one table of artifact kinds. Everything that asks "which runtime reads a .xml?", "what
format is a .plan?", "which target writes TensorRT engines?" or "where is this file's InputSpec?"
reads it here; nothing else keeps a copy. Adding an artifact kind is one row; adding a runtime
or a target names its kind here and is otherwise one new file (see CONTRIBUTING.md).

Bottom layer: imports nothing from edgekit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Kind:
    """One kind of artifact file."""

    format: str  # the manifest's `format` of such a file
    suffixes: tuple[str, ...]  # file suffixes; the first is what its target writes
    runtimes: tuple[str, ...]  # runtimes that read it, the default one first
    target: str | None  # the export target that writes it (None: not exported)
    spec_in: str  # where its InputSpec lives (a reader in edgekit/io/artifacts.py)
    precisions: tuple[str, ...] = PRECISIONS
    runnable: bool = True  # `edgekit bench/validate` take it as an artifact
    portable: bool = True  # False: built on the device that runs it (TensorRT engines)
    weights_suffix: str | None = None  # weights in a file beside it (OpenVINO's .bin)
    # or, when the model is large, in a file named after it with this added (ONNX past 2 GB:
    # model.onnx.data, edgekit.io.onnxfile.save_onnx)
    data_suffix: str | None = None

    def weights_file(self, path: str | Path) -> Path | None:
        """Where a file of this kind keeps its weights apart (whether or not it does)."""
        path = Path(path)
        if self.weights_suffix:
            return path.with_suffix(self.weights_suffix)
        return path.with_name(path.name + self.data_suffix) if self.data_suffix else None


KINDS: tuple[Kind, ...] = (
    Kind("onnx", (".onnx",), ("onnxruntime",), "onnx", "onnx-metadata", data_suffix=".data"),
    Kind("openvino", (".xml",), ("openvino",), "openvino", "ir-rt-info", weights_suffix=".bin"),
    Kind("tensorrt", (".plan", ".engine"), ("tensorrt",), "tensorrt", "engine-metadata",
         portable=False),
    Kind("checkpoint", (".pt",), ("torch",), None, "manifest", precisions=("fp32", "fp16"),
         runnable=False),
)

FORMATS: tuple[str, ...] = tuple(k.format for k in KINDS)
RUNTIMES: tuple[str, ...] = tuple(dict.fromkeys(r for k in KINDS for r in k.runtimes))
TARGETS: tuple[str, ...] = tuple(k.target for k in KINDS if k.target)
RUNNABLE_SUFFIXES: tuple[str, ...] = tuple(s for k in KINDS if k.runnable for s in k.suffixes)
# PyTorch model files a user passes in (edgekit.io.models loads them): the checkpoint kind's and
# the other suffixes torch.save and torch.export.save write.
TORCH_SUFFIXES: tuple[str, ...] = (*next(k.suffixes for k in KINDS if k.format == "checkpoint"),
                                   ".pth", ".pt2")


def by_format(fmt: str | None) -> Kind | None:
    return next((k for k in KINDS if k.format == fmt), None)


def by_suffix(path: str | Path) -> Kind | None:
    suffix = Path(path).suffix
    return next((k for k in KINDS if suffix in k.suffixes), None)


def weights_file(path: str | Path, *, existing: bool = False) -> Path | None:
    """The file beside `path` that holds its weights, for kinds that keep them apart (with
    `existing`, only where that file is there: a small ONNX model keeps its weights inside)."""
    kind = by_suffix(path)
    found = kind.weights_file(path) if kind else None
    return None if found is None or (existing and not found.is_file()) else found


# Runtimes that read a kind of the table without a row naming them: a Runner that declares its
# own `formats` registers them here (edgekit/runtimes/base.py), so that a runtime reading ONNX
# files, say, is one file and no edit of this table.
_READERS: dict[str, tuple[str, ...]] = {}


def add_reader(runtime: str, formats: tuple[str, ...]) -> None:
    """Record that `runtime` reads `formats` (kinds of this table)."""
    unknown = [f for f in formats if by_format(f) is None]
    if unknown:
        raise ValueError(f"runtime {runtime!r} reads {unknown}, which no kind of edgekit/kinds.py "
                         f"is (add a row)")
    _READERS[runtime] = tuple(formats)


def remove_reader(runtime: str) -> None:
    _READERS.pop(runtime, None)


def runtimes() -> tuple[str, ...]:
    """Every runtime: the table's, then those that registered as readers of its kinds."""
    return tuple(dict.fromkeys((*RUNTIMES, *_READERS)))


def runtimes_reading(fmt: str | None) -> tuple[str, ...]:
    """The runtimes that read a format, its default one first."""
    kind = by_format(fmt)
    table = kind.runtimes if kind else ()
    return tuple(dict.fromkeys((*table, *(r for r, fs in _READERS.items() if fmt in fs))))


def formats_read_by(runtime: str) -> tuple[str, ...]:
    """The formats a runtime reads (a Runner's `formats`)."""
    return tuple(k.format for k in KINDS if runtime in k.runtimes) or _READERS.get(runtime, ())


def default_runtime(fmt: str | None) -> str | None:
    """The runtime that runs a format unless another is asked for."""
    kind = by_format(fmt)
    return kind.runtimes[0] if kind else None
