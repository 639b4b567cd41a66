"""The world the generated hostile corpus (tests/e2e/test_hostile_corpus.py) runs in: tiny inputs
made once (a LeNet-5 checkpoint, a 1×4×4 ONNX folder, eval and calibration sets, a quick device
profile, a fleet file, a space file, a recipe, a results store, a folder of someone else's files
and another model's output folder), each command's cheapest valid invocation over them, and the
hostile values the strategies draw from.

Every example copies the world into a fresh sandbox, so what a case writes or changes is seen by
hashing the sandbox before and after."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

OUT = "out"  # the fresh output path of the base invocations, relative to the sandbox

QUICK_PROFILE: dict[str, Any] = {
    "schema_version": 1, "name": "quick-cpu", "kind": "cpu", "threads": 1, "batch_sizes": [1],
    "round_to": 8,
    "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"]}},
    "latency": {"warmup_count": 1, "warmup_seconds": 0.0, "min_queries": 5, "min_seconds": 0.0,
                "max_seconds": 0.5},
}
FLEET: dict[str, Any] = {
    "schema_version": 1, "name": "lab",
    "devices": [{"profile": "quick.yaml", "name": "cpu-a"},
                {"profile": "quick.yaml", "name": "cpu-b", "node": "n1"}],
}
SPACE: dict[str, Any] = {
    "prune": [0.0], "dwsep": ["off"], "runtimes": ["onnxruntime"], "precisions": ["fp32"],
    "int8_fallback": ["none"], "calib_size": 8,
    "distill": {"short_limit": 20, "full_limit": 40, "promote_margin": 5.0},
}
RECIPE: dict[str, Any] = {
    "recipe_version": 1, "name": "corpus", "description": "the hostile corpus's recipe",
    "model": {"path": "model.pt"},
    "input": {"mean": [0.0], "std": [1.0]},
    "data": {"eval": "eval28.npz", "eval_limit": 16},
    "steps": [],
    "exports": [],
    "devices": ["quick.yaml"],
    "budget": {"max_drop": 100.0, "min_speedup": 0.01},
    "report": {"store": "results.db", "html": "report.html", "markdown": "report.md"},
}
CONFIGS: dict[str, dict[str, Any]] = {"recipe.yaml": RECIPE, "quick.yaml": QUICK_PROFILE,
                                      "fleet.yaml": FLEET, "space.yaml": SPACE}


def _other_model(ref: Path, out: Path) -> None:
    """Another model: ref's graph with other weights (a byte-identical copy would be the same
    model, which edgekit rightly lets an export of it go into)."""
    import numpy as np
    from onnx import numpy_helper

    from edgekit.io.onnxfile import load_onnx, save_onnx

    model = load_onnx(ref)
    first = model.graph.initializer[0]
    first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) + np.float32(0.5),
                                           first.name))
    out.parent.mkdir(parents=True)
    save_onnx(model, out)


def build_world(root: Path) -> Path:
    """Make the corpus's inputs under `root` (once per session: a few seconds)."""
    import torch

    from edgekit.io.manifest import Manifest
    from edgekit.io.models import save_checkpoint
    from edgekit.results.store import open_store
    from edgekit.zoo import build
    from tests.e2e.test_bad_inputs import _eval, _folder

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_checkpoint(build("lenet5"), root / "model.pt")
    _folder(root)  # root/ref: model.onnx (1×4×4 → 4 classes) and its manifest
    _eval(root, 40, "eval.npz")
    _eval(root, 16, "calib.npz")
    rng = np.random.default_rng(2)
    np.savez(root / "eval28.npz", x=rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
             y=(np.arange(20) % 10).astype(np.int64))
    for name, data in CONFIGS.items():
        (root / name).write_text(yaml.safe_dump(data, sort_keys=False))
    with open_store(root / "results.db") as store:
        store.add([{"model": "tiny", "device": "quick-cpu", "runtime": "onnxruntime",
                    "precision": "fp32", "batch": 1, "p50_ms": 0.1 * (i + 1)} for i in range(3)])
    # someone else's folder, and another model's edgekit output folder
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("the user's own file\n")
    _other_model(root / "ref" / "model.onnx", root / "other" / "model.onnx")
    manifest = Manifest(root / "other")
    manifest.add_stage("compress", outputs=[{"path": "model.onnx", "format": "onnx",
                                             "precision": "fp32", "model": "someone-else"}])
    return root


# ---------------------------------------------------------------- the base invocations
@dataclass(frozen=True)
class Base:
    """A command's cheapest valid invocation in the world; `gate`: exit 1 is documented (a
    failed accuracy/speed gate); `heavy`: minutes when a mutation leaves it valid, so only
    refusals are tried."""

    id: str
    argv: tuple[str, ...]
    gate: bool = False
    heavy: bool = False
    explicit: bool = True  # False: another base covers every option; only generated cases

    @property
    def out(self) -> int | None:
        """The index in argv of its output path (None: it writes nothing of its own)."""
        return self.argv.index("-o") + 1 if "-o" in self.argv else None


BASES: list[Base] = [
    Base("zoo-list", ("zoo", "list", "--json")),
    Base("zoo-train", ("zoo", "train", "lenet5", "--epochs", "1", "--limit", "20",
                       "--eval-limit", "20", "--threads", "1", "-o", f"{OUT}/m.pt")),
    Base("calib-build", ("calib", "build", "eval28.npz", "-n", "8", "-o", f"{OUT}/set.npz")),
    Base("export-onnx", ("export", "model.pt", "-o", OUT)),
    Base("export-openvino", ("export", "ref/model.onnx", "--target", "openvino", "-o", OUT)),
    Base("bench", ("bench", "ref", "--device", "quick.yaml", "--eval", "eval.npz", "--limit",
                   "20", "--batch", "1", "--threads", "1")),
    Base("profile", ("profile", "ref/model.onnx", "--device", "quick.yaml", "--runs", "3",
                     "--threads", "1")),
    Base("compress-onnx", ("compress", "ref/model.onnx", "--int8", "--calib", "calib.npz",
                           "--eval", "eval.npz", "--calib-size", "8", "-o", OUT),
         gate=True),
    Base("compress-prune", ("compress", "model.pt", "--prune", "0.25", "--eval", "eval28.npz",
                            "--eval-limit", "16", "--distill-epochs", "0", "-o", OUT), gate=True,
         explicit=False),
    Base("validate", ("validate", "ref", "--device", "quick.yaml", "--eval", "eval.npz",
                      "--limit", "20", "--threads", "1"), gate=True),
    Base("validate-fleet", ("validate", "ref", "--fleet", "fleet.yaml", "--eval", "eval.npz",
                            "--limit", "20", "--max-drop", "100"), gate=True, explicit=False),
    Base("devices", ("devices", "--json")),
    Base("results", ("results", "results.db", "--json")),
    Base("report", ("report", "results.db", "-o", f"{OUT}/report.html")),
    Base("run", ("run", "recipe.yaml", "-o", OUT), gate=True),
    Base("optimize", ("optimize", "model.pt", "--device", "quick.yaml", "--eval", "eval28.npz",
                      "--eval-limit", "16", "--space", "space.yaml", "--trials", "1", "-o", OUT), gate=True),
    Base("optimize-fleet", ("optimize", "model.pt", "--fleet", "fleet.yaml", "--eval",
                            "eval28.npz", "--eval-limit", "16", "--space", "space.yaml",
                            "--trials", "1", "-o", OUT), gate=True, explicit=False),
    Base("demo", ("demo", "-o", OUT), heavy=True),
]
BASE_BY_ID = {b.id: b for b in BASES}


# ---------------------------------------------------------------- hostile values
NON_FINITE = ("nan", "NaN", "inf", "-inf", "Infinity", "-Infinity", "1e999")
BOUNDARY_NUMBERS = ("0", "-0", "-1", "0.0", "1e-320", "1e308", "-1e308", "99999999999",
                    "9223372036854775808", "-9223372036854775809", "0x10", "1_000", " 1 ")
WRONG_TYPES = ("abc", "", " ", "1,2,x", "[1, 2]", "{a: 1}", "true", "null", "-h", "-1,-1",
               "1,,2", "1;2", "ünïcödé", "x" * 300)
# Paths, relative to the sandbox (the cases' working directory): the user's files, inputs, other
# folders, the sandbox's parent and beyond, odd names.
# "@ROOT@" is the sandbox's absolute path: no case ever names a real system path (a report
# written over /dev/null, as root, would replace the device).
PATH_LIKE = ("foreign", "foreign/notes.txt", "other", "ref", "ref/model.onnx", "model.pt",
             "eval.npz", "results.db", "quick.yaml", "recipe.yaml", "nowhere/deeper/x",
             "../beside", "../../escape-corpus", "..", ".", "~", "@ROOT@/foreign/notes.txt",
             "@ROOT@/other", "foreign/notes.txt/below", "-", "a b/c d", "café", ".hidden",
             "out/../foreign", "x" + "/y" * 60, "file://@ROOT@/foreign/notes.txt",
             "fashion-mnist:../../x")
# Output paths edgekit must refuse: the user's files and folders, its own inputs, the sandbox.
OUT_REFUSED = {"foreign", "foreign/notes.txt", "model.pt", "eval.npz", "ref/model.onnx",
               "quick.yaml", "recipe.yaml", "..", ".", "foreign/notes.txt/below",
               "@ROOT@/foreign/notes.txt", "out/../foreign"}
ROOT_TOKEN = "@ROOT@"


def is_non_finite(text: str) -> bool:
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


@dataclass
class Mutation:
    """One hostile change to a base invocation: what was done (for the report), the argv, a
    config file rewritten in the sandbox, and whether exit 2 is the only documented answer."""

    label: str
    argv: list[str]
    files: dict[str, bytes] = field(default_factory=dict)
    must_refuse: bool = False
    out: str | None = None  # the output path the invocation names, if any


def set_option(argv: list[str], opt: str, value: str | None) -> list[str]:
    """argv with `opt` set to `value` (replaced when present, appended otherwise; a flag when
    value is None)."""
    argv = list(argv)
    if opt in argv:
        i = argv.index(opt)
        if value is None:
            return argv
        if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            argv[i + 1] = value
            return argv
    return argv + ([opt] if value is None else [opt, value])


def yaml_bytes(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


def leaf_paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in a nested dict/list (containers included), depth first."""
    paths = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            paths += leaf_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            paths += leaf_paths(value, (*prefix, i))
    return paths


def get_at(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


def replace_at(data: Any, path: tuple, value: Any) -> Any:
    """A deep copy of `data` with the value at `path` replaced (or removed: value is ...)."""
    import copy

    data = copy.deepcopy(data)
    parent = get_at(data, path[:-1])
    if value is ...:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return data


RawMaker = Callable[[bytes], bytes]
