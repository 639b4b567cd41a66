"""The lean-runtime rule: edgekit/runtimes/* (except torch.py) and `edgekit bench` import neither
torch nor torchvision, so a device with numpy and a runtime can measure. Checked in a fresh
interpreter: import the runtime modules, run `edgekit bench` on a small ONNX file (and on an
OpenVINO IR made from it without torch), then look at sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgekit.io.onnxfile import save_onnx, set_spec
from edgekit.spec import InputSpec

PROFILE = """
name: lean-cpu
kind: cpu
threads: 1
batch_sizes: [1]
runtimes:
  onnxruntime: {precisions: [fp32]}
  openvino: {precisions: [fp32]}
latency: {warmup_count: 2, warmup_seconds: 0.0, min_queries: 10, min_seconds: 0.0, max_seconds: 5}
"""

SCRIPT = """
import json, sys
import edgekit.runtimes.ort, edgekit.runtimes.openvino, edgekit.runtimes.tensorrt
import edgekit.validate.bench, edgekit.cli.bench
from edgekit.cli import main

targets = sys.argv[2:]
for target in targets:
    try:
        main(["bench", target, "--device", sys.argv[1], "--json"])
    except SystemExit as exc:
        assert not exc.code, f"edgekit bench {target} exited with {exc.code}"
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
print("LEAN-CHECK " + json.dumps(heavy))
"""


def small_onnx(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "W"], ["logits"])], "small",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    set_spec(model, InputSpec(shape=(1, 1, 4, 4), mean=(0.0,), std=(1.0,)))
    save_onnx(model, path)
    return path


def test_runtimes_and_bench_do_not_import_torch(tmp_path: Path) -> None:
    model = small_onnx(tmp_path / "model.onnx")
    profile = tmp_path / "lean.yaml"
    profile.write_text(PROFILE)
    targets = [str(model)]
    try:  # an IR made by OpenVINO's own converter, in this (torch-importing) process
        import openvino as ov

        ir = tmp_path / "model.xml"
        ov.save_model(ov.convert_model(str(model)), str(ir))
        targets.append(str(ir))
    except ImportError:
        pass
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(profile), *targets],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("LEAN-CHECK "))
    assert json.loads(line.removeprefix("LEAN-CHECK ")) == []
    records = json.loads(proc.stdout[: proc.stdout.index("LEAN-CHECK ")].split("\n]\n")[0] + "\n]")
    assert records[0]["runtime"] == "onnxruntime" and records[0]["latency"]["count"] >= 10
