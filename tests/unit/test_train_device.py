"""Training where it is fastest (edgekit.zoo.accel): the device choice, bf16 / channels_last only
where a micro-benchmark measured them faster (cached per machine), a device torch does not see
refused with exit 2, and every distillation's device and precision in the manifest."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edgekit.data import RawImages  # noqa: E402
from edgekit.errors import InputError  # noqa: E402
from edgekit.spec import InputSpec  # noqa: E402
from edgekit.zoo.accel import (  # noqa: E402
    MIN_GAIN,
    TrainSettings,
    bf16_supported,
    plan_training,
    resolve_device,
    train_settings,
)
from edgekit.zoo.measured import PLANS_FILE  # noqa: E402
from edgekit.zoo.train import FitOptions, TrainConfig, fit  # noqa: E402
from tests.helpers import cli, fashion_train_subset, tiny_torch_model  # noqa: E402

HAVE_CUDA = torch.cuda.is_available()
SPEC = InputSpec().with_shape((1, 1, 28, 28))
AUTO = TrainSettings(device="cpu", precision="auto")


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _raw(n: int = 64) -> RawImages:
    rng = np.random.default_rng(0)
    return RawImages(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                     rng.integers(0, 10, n).astype(np.int64), "random")


def test_device_choice_auto_cpu_and_what_torch_sees() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda:0" if HAVE_CUDA else "cpu")
    seen = torch.cuda.device_count() if HAVE_CUDA else 0
    with pytest.raises(InputError) as err:  # one past the last GPU torch sees (cuda:0 here)
        resolve_device(f"cuda:{seen}")
    assert f"sees {seen} CUDA device" in err.value.message and "--train-device" in err.value.hint
    if not HAVE_CUDA:
        with pytest.raises(InputError, match="sees 0 CUDA devices"):
            resolve_device("cuda")
    with pytest.raises(InputError):
        train_settings({"device": "gpu"})  # not a device name: the schema says so
    with pytest.raises(InputError, match="unknown key 'devise'"):
        train_settings({"devise": "cpu"})


def test_settings_default_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("EDGEKIT_TRAIN_DEVICE", "cpu")
    monkeypatch.setenv("EDGEKIT_TRAIN_PRECISION", "fp32")
    assert TrainSettings().model_dump() == {"device": "cpu", "precision": "fp32"}
    monkeypatch.delenv("EDGEKIT_TRAIN_DEVICE")
    monkeypatch.delenv("EDGEKIT_TRAIN_PRECISION")
    assert TrainSettings().model_dump() == {"device": "auto", "precision": "auto"}


def test_compress_with_a_cuda_device_torch_does_not_see_exits_2(capsys, tmp_path) -> None:
    seen = torch.cuda.device_count() if HAVE_CUDA else 0
    device = f"cuda:{seen}"
    result = cli(capsys, "compress", "model-that-is-never-loaded.pt", "-o", tmp_path / "out",
                 "--prune", "0.3", "--train-device", device)
    assert result.code == 2
    assert f"--train-device {device}" in result.err and f"sees {seen} CUDA device" in result.err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    result = cli(capsys, "optimize", "never.pt", "-o", tmp_path / "opt", "--train-device", device)
    assert result.code == 2 and f"sees {seen} CUDA device" in result.err


def test_the_choice_is_measured_once_and_cached_per_machine(own_cache) -> None:
    model = tiny_torch_model()
    plan = plan_training(model, (1, 1, 28, 28), 16, AUTO)
    options = ["fp32", "fp32+channels_last"] + (
        ["bf16", "bf16+channels_last"] if bf16_supported("cpu") else [])
    assert plan.chosen_by == "measured" and sorted(plan.images_per_s) == sorted(options)
    speeds = plan.images_per_s
    chosen = plan.precision + ("+channels_last" if plan.channels_last else "")
    best = max(speeds, key=speeds.get)
    # the fastest option, unless it beats plain fp32 by less than MIN_GAIN: then plain fp32
    assert chosen == (best if speeds[best] >= MIN_GAIN * speeds["fp32"] else "fp32")
    stored = json.loads((own_cache / PLANS_FILE).read_text())
    (entry,) = stored.values()
    assert entry["key"]["torch"] == torch.__version__ and "in=1x28x28 batch=16" in \
        entry["key"]["shape"] and entry["images_per_s"] == speeds
    again = plan_training(model, (1, 1, 28, 28), 16, AUTO)
    assert again.chosen_by == "measured earlier on this machine"
    assert (again.precision, again.channels_last) == (plan.precision, plan.channels_last)
    # another shape class (batch size) is measured on its own
    other = plan_training(model, (1, 1, 28, 28), 8, AUTO)
    assert other.chosen_by == "measured" and len(json.loads((own_cache / PLANS_FILE)
                                                            .read_text())) == 2


def test_a_precision_asked_for_is_not_measured(own_cache) -> None:
    plan = plan_training(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (1, 1, 28, 28), 16,
                         TrainSettings(device="cpu", precision="fp32"))
    assert (plan.device, plan.precision, plan.channels_last, plan.chosen_by) == \
        ("cpu", "fp32", False, "asked")
    assert not (own_cache / PLANS_FILE).exists()


def test_bf16_training_on_this_cpu_or_refused_where_it_has_none(own_cache) -> None:
    torch.manual_seed(0)
    model = tiny_torch_model()
    before = copy.deepcopy(model.state_dict())
    settings = TrainSettings(device="cpu", precision="bf16")
    cfg = TrainConfig(epochs=2, batch_size=16, warmup_epochs=0, lr=1e-2)
    if not bf16_supported("cpu"):
        with pytest.raises(InputError, match="no bf16 compute"):
            fit(model, _raw(), SPEC, None, cfg, options=FitOptions(train=settings))
        return
    history = fit(model, _raw(), SPEC, None, cfg, options=FitOptions(train=settings))
    assert history["training"]["precision"] == "bf16"
    assert history["training"]["device"] == "cpu"
    assert all(np.isfinite(e["loss"]) and e["images_per_s"] > 0 for e in history["epochs"])
    assert history["epochs"][1]["loss"] < history["epochs"][0]["loss"]
    # the weights stay fp32 (autocast), trained, on the CPU in the default layout
    after = model.state_dict()
    assert all(after[k].dtype == torch.float32 and after[k].is_contiguous() for k in after)
    assert any(not torch.equal(before[k], after[k]) for k in after)


def test_compress_records_where_distillation_trained(zoo_checkpoint, tmp_path, capsys,
                                                     own_cache) -> None:
    """The manifest's distill stage says the device, the precision and the teacher's source;
    a second compress of the same model and data reads the teacher's logits back."""
    checkpoint = zoo_checkpoint("lenet5")
    train = fashion_train_subset(tmp_path, 200)
    rows = []
    for name in ("a", "b"):
        result = cli(capsys, "compress", checkpoint, "-o", tmp_path / name, "--prune", "0.3",
                     "--distill-epochs", "1", "--train", train, "--train-device", "cpu",
                     "--train-precision", "fp32", "--json")
        assert result.code == 0, result.err
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        (stage,) = [s for s in manifest["stages"] if s["stage"] == "distill"]
        (row,) = stage["metrics"]["rows"]
        rows.append(row)
    # fp32 as asked; the layout (contiguous or channels_last) is the measured faster one
    assert rows[0]["train_device"] == "cpu"
    assert rows[0]["train_precision"] in ("fp32", "fp32+channels_last")
    assert rows[0]["teacher"] == "computed, cached" and rows[0]["teacher_forwards"] == 4
    assert rows[1]["teacher"] == "cached" and rows[1]["teacher_forwards"] == 0


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA GPU visible to torch")
def test_distillation_trains_on_the_gpu_and_comes_back(own_cache) -> None:
    from edgekit.passes.distill import distillation_loss
    from edgekit.zoo.teacher import TeacherLogits

    torch.manual_seed(0)
    teacher, student = tiny_torch_model(), tiny_torch_model()
    cfg = TrainConfig(epochs=2, batch_size=16, warmup_epochs=0)
    records = []
    for _ in range(2):
        s = copy.deepcopy(student)
        logits = TeacherLogits(teacher)
        history = fit(s, _raw(), SPEC, None, cfg, options=FitOptions(
            loss_fn=distillation_loss(2.0, 0.5),
            train=TrainSettings(device="cuda", precision="auto"), teacher=logits))
        records.append(history)
        assert history["training"]["device"] == "cuda:0"
        assert next(s.parameters()).device.type == "cpu"  # back where edgekit expects it
        assert next(teacher.parameters()).device.type == "cpu"
    assert records[0]["teacher"]["teacher_forwards"] == 8
    assert records[1]["teacher"]["teacher_forwards"] == 0


def test_a_recipe_says_where_distillation_trains(tmp_path) -> None:
    import yaml

    from edgekit.errors import ConfigError
    from edgekit.recipe import load_recipe

    data = {"recipe_version": 1, "name": "t", "model": {"zoo": "lenet5"},
            "data": {"eval": "fashion-mnist:test"}, "optimize": {},
            "training": {"device": "cpu", "precision": "fp32"}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_recipe(path).training == TrainSettings(device="cpu", precision="fp32")
    path.write_text(yaml.safe_dump({**data, "training": {"device": "cpu", "precison": "fp32"}}))
    with pytest.raises(ConfigError, match="did you mean 'precision'"):
        load_recipe(path)
