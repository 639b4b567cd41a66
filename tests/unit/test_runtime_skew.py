"""Version skew between the workstation's artifacts and a device's older ONNX Runtime (issue 20):
the agent's capability probe asked of this machine's real onnxruntime, the rule that refuses an
artifact (opset, IR version, operators) with its fix, `export --opset`, the aarch64 install
commands of the device report, and the emulated mark on every time in a table. The emulated
device itself is exercised in tests/e2e/test_arm64_device.py."""

from __future__ import annotations

import pytest

from edgekit.remote import agent_probe


def test_tiny_onnx_is_a_valid_model_and_the_probe_reads_this_runtime():
    import onnx
    import onnxruntime as ort

    model = onnx.load_model_from_string(agent_probe.tiny_onnx(9, 17))
    onnx.checker.check_model(model)
    assert model.ir_version == 9 and model.opset_import[0].version == 17
    assert [n.op_type for n in model.graph.node] == ["Identity"]
    caps = agent_probe.ort_capabilities(ort, ["CPUExecutionProvider"])
    assert caps["max_ir_version"] >= 10
    assert caps["max_opset"][""] >= 21
    # The real runtime loads what it claims and refuses one opset above.
    limit = caps["max_opset"][""]
    ort.InferenceSession(agent_probe.tiny_onnx(caps["max_ir_version"], limit),
                         providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="opset"):
        ort.InferenceSession(agent_probe.tiny_onnx(caps["max_ir_version"], limit + 1),
                             providers=["CPUExecutionProvider"])
    assert caps["kernels"][""]["Conv"] == 1 and caps["kernels"][""]["QuantizeLinear"] == 10
    assert caps["schemas"][""]["Gemm"] == 1


LIMITS = {"version": "1.19.2", "max_ir_version": 10, "max_opset": {"": 21},
          "kernels": {"": {"Conv": 1, "Relu": 6, "QuantizeLinear": 10}},
          "schemas": {"": {"Conv": 1, "Relu": 1, "QuantizeLinear": 10, "Identity": 1}}}


def needs(opset=18, ir=10, nodes=(("conv1", "", "Conv"),)):
    return {"ir_version": ir, "opsets": {"": opset}, "nodes": list(nodes)}


def test_artifact_problems_follow_the_rule():
    from edgekit.remote.compat import artifact_problems

    assert artifact_problems(needs(), LIMITS, name="m.onnx", precision="fp32") == []
    [(what, fix)] = artifact_problems(needs(opset=22), LIMITS, name="m.onnx", precision="fp32")
    assert what == "m.onnx uses ONNX opset 22; the device's onnxruntime 1.19.2 loads opsets up to 21"
    assert fix.startswith("export it again for this device: edgekit export SOURCE --opset 21 "
                          "-o OUT-opset21/ (and for int8: edgekit compress OUT-opset21/model.onnx")
    [(what, _)] = artifact_problems(needs(ir=11), LIMITS, name="m.onnx", precision="fp32")
    assert "IR version 11" in what and "up to 10" in what
    # An operator the device's runtime does not have: int8 -> keep that node float.
    problems = artifact_problems(needs(opset=20, nodes=[("conv1", "", "Conv"), ("act", "", "Gelu")]),
                                 LIMITS, name="m.int8.onnx", precision="int8")
    [(what, fix)] = problems
    assert "node 'act' uses operator Gelu (opset 20)" in what
    assert "--keep-float act" in fix


def test_profile_max_opset_caps_the_device():
    from edgekit.devices import load_profile
    from edgekit.remote.compat import device_limits
    from edgekit.remote.device import DeviceReport

    profile = load_profile("emulated-arm64").model_copy(update={"max_opset": 17})
    report = DeviceReport("h", "w", {}, {}, {"onnxruntime": {
        "importable": True, "version": "1.19.2",
        "capabilities": {"max_ir_version": 10, "max_opset": {"": 21}}}}, {}, {})
    assert device_limits(profile, report)["max_opset"][""] == 17
    assert device_limits(profile.model_copy(update={"max_opset": None}),
                         report)["max_opset"][""] == 21


def test_export_opset_is_a_typed_option():
    from edgekit.errors import ConfigError
    from edgekit.targets.onnx import OPSET, OnnxTarget

    assert OnnxTarget.parse_options({}).opset == OPSET
    assert OnnxTarget.parse_options({"opset": 17}).opset == 17
    with pytest.raises(ConfigError, match="opset"):
        OnnxTarget.parse_options({"opst": 17})
    with pytest.raises(ConfigError):
        OnnxTarget.parse_options({"opset": 99})


def probe(machine: str, error: str = "", ort: bool = True, site: str | None = "/dev/site"):
    edgekit = {"version": "0.1.0", "lean_ok": not error, "has_validate": True,
               "imports_torch": False}
    if error:
        edgekit["error"] = error
    return {"python": {"version": "3.11.2", "supported": True, "site": site},
            "workdir": "/w", "environment": {"machine": machine}, "edgekit": edgekit,
            "packages": {}, "runtimes": {"onnxruntime": {"importable": ort, "version": "1.19.2"}
                                         if ort else {"importable": False}}}


def test_device_report_gives_the_aarch64_install_command():
    from edgekit.devices import load_profile
    from edgekit.remote.device import build_report

    emulated = load_profile("emulated-arm64")
    report = build_report(emulated, probe("aarch64", "No module named 'numpy'"))
    [first] = [m for m in report.missing if m["blocking"]]
    assert first["what"].startswith("numpy")
    assert first["fix"].startswith("pip install --platform manylinux_2_28_aarch64")
    assert "--python-version 3.11 " in first["fix"] and "--target /dev/site 'numpy'" in first["fix"]
    report = build_report(emulated, probe("aarch64", ort=False))
    [fix] = [m["fix"] for m in report.missing if m["what"] == "runtime onnxruntime"]
    assert "'onnxruntime<1.27'" in fix and "manylinux_2_28_aarch64" in fix
    # A real aarch64 board (not a Jetson): its own pip, PyPI's aarch64 wheel.
    board = emulated.model_copy(update={"emulated": False})
    report = build_report(board, probe("aarch64", ort=False))
    [fix] = [m["fix"] for m in report.missing if m["what"] == "runtime onnxruntime"]
    assert fix == ("~/.edgekit-arm64/python -m pip install 'onnxruntime'  (PyPI's manylinux "
                   "aarch64 wheel)")
    # x86: unchanged.
    report = build_report(board, probe("x86_64", ort=False))
    [fix] = [m["fix"] for m in report.missing if m["what"] == "runtime onnxruntime"]
    assert fix == "~/.edgekit-arm64/python -m pip install 'onnxruntime'"


def test_emulated_records_are_marked_in_every_table():
    from edgekit.results.report import render_markdown
    from edgekit.results.table import EMULATED_MARK, gate_row, row

    real = {"model": "m", "device": "jetson", "precision": "fp32", "runtime": "onnxruntime",
            "batch": 1, "accuracy": {"top1": 0.9},
            "latency": {"p50_ms": 1.0, "p90_ms": 1.1, "p99_ms": 1.2, "throughput_per_s": 900,
                        "valid": True}}
    emulated = {**real, "device": "emulated-arm64", "emulated": True,
                "latency": {**real["latency"], "representative": False}}
    assert EMULATED_MARK not in "".join(row(real))
    cells = gate_row(emulated)
    assert cells[8] == "1.000" + EMULATED_MARK and cells[14] == "emulated"
    assert cells[5] == "0.9000"  # top-1 is real: no mark
    text = render_markdown([real, emulated])
    assert "### emulated-arm64 — emulated: top-1 is real, latency is the emulator's" in text
    assert "### jetson\n" in text


def test_an_older_device_onnxruntime_is_a_warning_not_a_refusal():
    from edgekit.devices import load_profile
    from edgekit.remote.device import build_report

    profile = load_profile("emulated-arm64")
    old = probe("aarch64")
    old["runtimes"]["onnxruntime"]["version"] = "1.16.3"
    report = build_report(profile, old)
    assert report.ok
    assert any("onnxruntime 1.16.3 is older than the oldest" in w for w in report.warnings)
    assert not any("older" in w for w in build_report(profile, probe("aarch64")).warnings)
