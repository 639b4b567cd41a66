"""Helpers shared by the tests: the CLI run in a subprocess or in-process, and tiny models.

Fixtures live in tests/conftest.py; plain functions that several test files call live here."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the CLI
def edgekit(*args: str, timeout: float = 900, **kwargs: Any) -> subprocess.CompletedProcess:
    """`python -m edgekit ARGS` in a subprocess (text output captured)."""
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def edgekit_on_terminal(*args: str, timeout: float = 900, columns: int = 120,
                        env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`python -m edgekit ARGS` with stdout and stderr each on its own pseudo-terminal (what a
    user at a terminal sees): (exit code, stdout, stderr), line ends as written (\r\n)."""
    import os
    import pty
    import select
    import time

    fds = [pty.openpty() for _ in range(2)]
    environ = {k: v for k, v in os.environ.items()
               if k not in ("EDGEKIT_NO_PROGRESS", "EDGEKIT_FORCE_PROGRESS")}
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", *map(str, args)],
                            stdin=subprocess.DEVNULL, stdout=fds[0][1], stderr=fds[1][1],
                            env={**environ, "COLUMNS": str(columns), "TERM": "xterm-256color",
                                 **(env or {})}, close_fds=True)
    for _, child in fds:
        os.close(child)
    chunks: dict[int, bytes] = {fd: b"" for fd, _ in fds}
    reading, deadline = set(chunks), time.monotonic() + timeout
    while reading and time.monotonic() < deadline:
        ready, _, _ = select.select(list(reading), [], [], 1.0)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                data = b""
            if data:
                chunks[fd] += data
            else:
                reading.discard(fd)
                os.close(fd)
    for fd in reading:
        os.close(fd)
    code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    out, err = (chunks[fd].decode("utf-8", "replace") for fd, _ in fds)
    return code, out, err


class CliResult(NamedTuple):
    code: int
    out: str
    err: str


def cli(capsys: Any, *args: Any) -> CliResult:
    """`edgekit ARGS` in this process: its exit code (0 when it returned) and what it printed
    (only it: what was printed before is dropped)."""
    from edgekit.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


# ---------------------------------------------------------------- outputs never destroy inputs
def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file (and the target of every symlink) under `folder`."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            found[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[rel] = "dir"
    return found


def fast_cpu_profile(path: Path, *, threads: int = 1, batch_sizes: tuple[int, ...] = (1,),
                     openvino: bool = False) -> Path:
    """A device profile (YAML, written to `path`) that measures this CPU in a fraction of a
    second per artifact: ONNX Runtime fp32 and int8, OpenVINO fp32 when `openvino`."""
    runtimes = "  onnxruntime: {precisions: [fp32, int8]}\n" + (
        "  openvino: {precisions: [fp32]}\n" if openvino else "")
    path.write_text(f"name: fast-cpu\nkind: cpu\nthreads: {threads}\n"
                    f"batch_sizes: [{', '.join(map(str, batch_sizes))}]\nruntimes:\n{runtimes}"
                    "latency: {warmup_count: 3, warmup_seconds: 0.05, min_queries: 30, "
                    "min_seconds: 0.2, max_seconds: 10}\n")
    return path


def debris(folder: Path) -> list[str]:
    """The temporary files an interrupted or refused run would have left under `folder`."""
    from edgekit.io.debris import is_debris_name

    return [str(p.relative_to(folder)) for p in folder.rglob("*") if is_debris_name(p.name)]


@dataclass
class RefusalCase:
    """A command that must be refused: `setup(tmp_path, model)` (the model a copy in tmp_path)
    makes its inputs and returns its argv; the refusal exits `code` with `fragment` in stderr."""

    id: str
    setup: Callable[[Path, Path], list]
    fragment: str
    code: int = 2


def check_refused_and_unchanged(case: RefusalCase, model: Path, tmp_path: Path,
                                capsys: Any) -> None:
    """Run `case` on a copy of `model` in tmp_path: exit `case.code` with its fragment and a
    hint, no traceback, nothing under tmp_path changed (every file hashed before and after) and
    no temporary file left."""
    copy = tmp_path / model.name
    shutil.copy(model, copy)
    argv = case.setup(tmp_path, copy)
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, *argv)
    assert code == case.code, err
    assert case.fragment in err and "Traceback" not in err, err
    assert "hint:" in err
    assert snapshot(tmp_path) == before  # no input, store or foreign file changed; nothing new
    assert debris(tmp_path) == []


# ---------------------------------------------------------------- tiny models
def tiny_torch_model():
    """Conv 1→4 3×3, ReLU, Flatten, Linear 2704→10, for 1×28×28 inputs (untrained)."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))


def tiny_se_model(classes: int = 4):
    """MobileNetV3's pattern in miniature, for (N, 3, H, W) inputs (untrained): a 1×1 stem to
    16 channels, a depthwise 3×3, a squeeze-excite whose squeeze has 8 channels (as narrow as
    a device's round_to), a 1×1 to 32 and a linear classifier. No conv has anything to
    substitute for the dwsep pass (every one is 1×1 or depthwise)."""
    from torch import nn

    class SqueezeExcite(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Conv2d(16, 8, 1)
            self.fc2 = nn.Conv2d(8, 16, 1)

        def forward(self, x):
            s = nn.functional.adaptive_avg_pool2d(x, 1)
            return x * nn.functional.hardsigmoid(self.fc2(nn.functional.relu(self.fc1(s))))

    return nn.Sequential(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(), SqueezeExcite(),
                         nn.Conv2d(16, 32, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, classes))


def tiny_onnx(path: Path, spec: Any) -> Path:
    """A torch-free conv net as ONNX with `spec` in its metadata, for (N, 1, 8, 8) inputs:
    Conv(1→4, 3×3) → Relu → GlobalAveragePool → Flatten → Gemm(4→4) logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.io.onnxfile import save_onnx, set_spec

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "fw"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "fb")]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                      ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    set_spec(model, spec)
    save_onnx(model, path)
    return path


# ---------------------------------------------------------------- data
def fashion_train_subset(folder: Path, n: int) -> Path:
    """n stratified Fashion-MNIST training images (uint8) and labels as FOLDER/train-N.npz, a
    small `--train` source; skips the calling test when the data is not installed."""
    import pytest

    from edgekit.data import load_raw
    from edgekit.data.dataset import stratified_indices
    from edgekit.errors import DataError

    try:
        raw = load_raw("fashion-mnist:train")
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST not installed ({exc.message})")
    keep = stratified_indices(raw.labels, n, 0)
    path = folder / f"train-{n}.npz"
    np.savez(path, x=raw.images[keep], y=raw.labels[keep])
    return path
