"""Device profiles: the shipped ones load, typos are named with a suggestion, a runtime that is
not installed is reported while the rest is validated, and `edgekit devices` says what works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgekit.devices import DeviceProfile, list_profiles, load_profile
from edgekit.errors import ConfigError
from edgekit.validate.validator import RuntimeStatus, plan, runtime_status

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("local-cpu", "nvidia-gpu", "jetson-orin-nano", "jetson-agx-orin")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_load(name):
    path = ROOT / "devices" / f"{name}.yaml"
    assert path.is_file(), f"the shipped profile {path} is missing"
    profile = load_profile(path)
    assert profile.name == name and profile.runtimes and profile.batch_sizes
    if profile.kind == "jetson":
        assert profile.record and profile.record.power_mode and profile.record.clocks
        assert "tensorrt" in profile.runtimes and profile.latency.min_seconds >= 3.0


def test_list_profiles_finds_the_shipped_ones():
    names = {p.stem for p in list_profiles()}
    assert {"local-cpu", "jetson-orin-nano", "jetson-agx-orin"} <= names


def _write(tmp_path, data) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {"name": "t", "kind": "cpu", "runtimes": {"onnxruntime": {"precisions": ["fp32"]}}}


@pytest.mark.parametrize("change, key, suggestion", [
    ({"thread": 2}, "thread", "threads"),
    ({"latency": {"min_querys": 5}}, "latency.min_querys", "min_queries"),
    ({"runtimes": {"onnxruntime": {"precisons": ["fp32"]}}}, "runtimes.onnxruntime.precisons",
     "precisions"),
    ({"record": {"power_mod": True}}, "record.power_mod", "power_mode"),
])
def test_typo_names_the_key_and_what_was_meant(tmp_path, change, key, suggestion):
    with pytest.raises(ConfigError) as exc:
        load_profile(_write(tmp_path, {**BASE, **change}))
    assert f"unknown key {key!r}" in exc.value.message
    assert exc.value.hint == f"did you mean {suggestion!r}?"


def test_bad_values_are_named(tmp_path):
    with pytest.raises(ConfigError, match="kind"):
        load_profile(_write(tmp_path, {**BASE, "kind": "toaster"}))
    with pytest.raises(ConfigError, match="runtimes.onnxrumtime"):
        load_profile(_write(tmp_path, {**BASE, "runtimes": {"onnxrumtime": {}}}))
    with pytest.raises(ConfigError, match="no device profile"):
        load_profile("no-such-device")


def test_missing_runtime_is_reported_and_the_rest_planned():
    device = DeviceProfile(name="d", kind="gpu", runtimes={
        "onnxruntime": {"precisions": ["fp32", "int8"]},
        "tensorrt": {"precisions": ["fp16", "int8"]}})
    statuses = [RuntimeStatus("onnxruntime", True, "", ("onnx",)),
                RuntimeStatus("tensorrt", False, "tensorrt is not installed (pip install tensorrt)",
                              ("tensorrt",))]
    entries = [{"path": "out/model.onnx", "format": "onnx", "precision": "fp32"},
               {"path": "out/model.fp16.plan", "format": "tensorrt", "precision": "fp16"},
               {"path": "out/model.fp16.xml", "format": "openvino", "precision": "fp16"}]
    pairs, skipped = plan(entries, device, statuses)
    assert [(e["path"], rts) for e, rts in pairs] == [("out/model.onnx", ["onnxruntime"])]
    assert skipped[0]["artifact"] == "model.fp16.plan"
    assert "needs tensorrt, which is not usable here: tensorrt is not installed" in \
        skipped[0]["reason"]
    assert "no runtime of profile d" in skipped[1]["reason"]


def test_runtime_status_checks_this_machine():
    device = DeviceProfile(name="d", kind="gpu", runtimes={
        "onnxruntime": {"providers": ["CPUExecutionProvider"]},
        "tensorrt": {"precisions": ["fp16"]}})
    status = {s.name: s for s in runtime_status(device)}
    assert status["onnxruntime"].usable and status["onnxruntime"].formats == ("onnx",)
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        assert not status["tensorrt"].usable and status["tensorrt"].reason
    gpu_only = DeviceProfile(name="g", kind="gpu", runtimes={
        "onnxruntime": {"providers": ["CUDAExecutionProvider"]}})
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        ort = runtime_status(gpu_only)[0]
        assert not ort.usable and "onnxruntime-gpu" in ort.reason


def test_validate_with_an_uninstalled_runtime_validates_the_rest(tiny_folder, quick_profile,
                                                                 capsys):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; this checks the machine without it")
    from edgekit.cli import main

    folder, eval_npz = tiny_folder()
    profile = quick_profile(runtimes={"onnxruntime": {"precisions": ["fp32", "int8"]},
                                      "tensorrt": {"precisions": ["fp16", "int8"]}})
    main(["validate", str(folder), "--device", profile, "--eval", str(eval_npz), "--json"])
    out = capsys.readouterr()
    result = json.loads(out.out)
    statuses = {r["name"]: r for r in result["runtimes"]}
    assert statuses["tensorrt"]["usable"] is False
    assert {a["name"] for a in result["artifacts"]} == {"model.onnx", "model.int8.onnx"}
    assert result["passed"]
    main(["validate", str(folder), "--device", profile, "--eval", str(eval_npz)])
    assert "runtime tensorrt of quick-cpu is not usable here" in capsys.readouterr().err


def test_devices_command_lists_profiles_and_usability(capsys):
    from edgekit.cli import main

    main(["devices", "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["local-cpu"]["runtimes"]["onnxruntime"]["usable_here"] is True
    assert "reason" in rows["jetson-orin-nano"]["runtimes"]["tensorrt"]
    main(["devices"])
    text = capsys.readouterr().out
    assert "local-cpu" in text and "usable here" in text
