"""Typed options for targets and runtimes: a typo in a recipe's export options or a profile's
runtime options is an error (exit 2) that names the key and the closest valid one, at load
time, before anything runs; valid options reach the runner and the exporter as typed configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgekit.devices import DeviceProfile, load_profile
from edgekit.errors import ConfigError
from edgekit.recipe import load_recipe
from edgekit.runtimes.base import get_runner
from edgekit.targets.base import get_target

ROOT = Path(__file__).resolve().parents[2]


def _profile(tmp_path: Path, runtimes: dict) -> Path:
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump({"name": "gpu", "kind": "gpu", "runtimes": runtimes}))
    return path


def test_a_profile_typo_in_runtime_options_names_the_key_and_the_fix(tmp_path: Path) -> None:
    path = _profile(tmp_path, {"onnxruntime": {"providers": ["cuda"],
                                               "options": {"allow_cpu_fallbak": True}}})
    with pytest.raises(ConfigError) as exc:
        load_profile(path)
    assert exc.value.message == (f"{path}: runtimes.onnxruntime.options: unknown key "
                                 "'allow_cpu_fallbak'")
    assert exc.value.hint == "did you mean 'allow_cpu_fallback'?"
    with pytest.raises(ConfigError, match="runtimes.torch.options: unknown key 'cuda_graph'"):
        DeviceProfile.model_validate({"name": "g", "kind": "gpu", "runtimes": {
            "torch": {"options": {"device": "cuda", "cuda_graph": True}}}})
    with pytest.raises(ConfigError) as exc:  # a key of another runtime is not taken either
        DeviceProfile.model_validate({"name": "c", "kind": "cpu", "runtimes": {
            "openvino": {"options": {"allow_cpu_fallback": True}}}})
    assert exc.value.hint == ("valid keys here: performance_hint, simulated_delay_ms, device, "
                              "inference_precision")
    with pytest.raises(ConfigError, match="runtimes.torch.options: cuda_graphs: Input should "
                       "be a valid boolean"):
        DeviceProfile.model_validate({"name": "g", "kind": "gpu", "runtimes": {
            "torch": {"options": {"cuda_graphs": "sometimes"}}}})


def test_the_cli_exits_2_on_a_profile_typo(tmp_path: Path, capsys) -> None:
    from edgekit.cli import main

    path = _profile(tmp_path, {"torch": {"options": {"cuda_graph": True}}})
    with pytest.raises(SystemExit) as exc:
        main(["validate", str(tmp_path), "--device", str(path), "--eval", "fashion-mnist:test"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown key 'cuda_graph'" in err and "did you mean 'cuda_graphs'?" in err


@pytest.mark.parametrize("name", ["local-cpu", "nvidia-gpu", "jetson-orin-nano",
                                  "jetson-agx-orin"])
def test_shipped_profiles_give_their_runners_typed_options(name: str) -> None:
    profile = load_profile(ROOT / "devices" / f"{name}.yaml")
    for runtime in profile.runtimes:
        runner = get_runner(runtime)
        options = runner.parse_options(profile.runner_options(runtime))
        assert isinstance(options, runner.Options)
        assert options.performance_hint == profile.performance_hint
    if name == "nvidia-gpu":
        ort = get_runner("onnxruntime").parse_options(profile.runner_options("onnxruntime"))
        assert ort.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        assert ort.allow_cpu_fallback is False
        torch_options = get_runner("torch").parse_options(profile.runner_options("torch"))
        assert (torch_options.device, torch_options.cuda_graphs) == ("cuda", False)


def test_a_recipe_typo_in_export_options_exits_2_naming_the_key(tmp_path: Path,
                                                                  capsys) -> None:
    from edgekit.cli import main

    data = yaml.safe_load((ROOT / "recipes" / "jetson-orin-nano-int8.yaml").read_text())
    data["exports"][0]["options"] = {"workspace_md": 512}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as exc:
        load_recipe(path)
    assert exc.value.message == f"{path}: exports[0].options: unknown key 'workspace_md'"
    assert exc.value.hint == "did you mean 'workspace_mb'?"
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as code:
        main(["run", str(path), "-o", str(out)])
    assert code.value.code == 2
    assert "did you mean 'workspace_mb'?" in capsys.readouterr().err
    assert not out.exists()
    data["exports"][0]["options"] = {"workspace_mb": 512, "dla": 0}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_recipe(path).exports[0].options == {"workspace_mb": 512, "dla": 0}


def test_targets_refuse_options_they_do_not_take(tmp_path: Path) -> None:
    onnx = get_target("onnx")
    with pytest.raises(ConfigError, match="unknown key 'calib'"):
        onnx.export(None, tmp_path, precision="fp32", calib="calibration/x.npz")
    options = get_target("tensorrt").parse_options({"workspace_mb": 256, "min_batch": 1})
    assert (options.workspace_mb, options.gpu_fallback, options.atol) == (256, True, 1e-4)
    with pytest.raises(ConfigError, match="min_batch"):
        get_target("tensorrt").parse_options({"min_batch": 0})
    assert get_target("openvino").parse_options({}).ignored_types == (
        "LSTMSequence", "GRUSequence", "RNNSequence")
