"""The teacher's logits computed once (edgekit.zoo.teacher): cached per epoch under a key of the
teacher's weights, the training inputs after preprocessing and the seeded augmentation; a
second distillation with the same key runs no teacher forward and trains the same weights; a
cache of another model or preprocessing is refused and rebuilt; the size bound is kept."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgekit.data import RawImages  # noqa: E402
from edgekit.passes.distill import distillation_loss  # noqa: E402
from edgekit.spec import InputSpec  # noqa: E402
from edgekit.zoo.accel import TrainSettings  # noqa: E402
from edgekit.zoo.teacher import TeacherLogits, cache_size, evict, teacher_root  # noqa: E402
from edgekit.zoo.train import FitOptions, TrainConfig, fit  # noqa: E402
from tests.helpers import tiny_torch_model  # noqa: E402

SPEC = InputSpec().with_shape((1, 1, 28, 28))
CPU_FP32 = TrainSettings(device="cpu", precision="fp32")
N, BATCH, EPOCHS = 96, 32, 2
STEPS = EPOCHS * (N // BATCH)  # teacher forwards of one uncached run


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEKIT_TEACHER_CACHE_MB", raising=False)


def _raw(seed: int = 0) -> RawImages:
    rng = np.random.default_rng(seed)
    return RawImages(rng.integers(0, 256, (N, 28, 28), dtype=np.uint8),
                     rng.integers(0, 10, N).astype(np.int64), "random")


def _models(seed: int = 0):
    torch.manual_seed(seed)
    return tiny_torch_model(), tiny_torch_model()  # teacher, student


def _distill(teacher, student, raw=None, spec=SPEC, *, cache: bool = True, seed: int = 0):
    """Distil a copy of `student`; (its weights, the teacher's record, the teacher)."""
    student = copy.deepcopy(student)
    logits = TeacherLogits(teacher, cache=cache)
    history = fit(student, raw or _raw(), spec, None,
                  TrainConfig(epochs=EPOCHS, batch_size=BATCH, warmup_epochs=0, seed=seed),
                  options=FitOptions(loss_fn=distillation_loss(2.0, 0.5), train=CPU_FP32,
                                     teacher=logits))
    return student.state_dict(), history["teacher"], logits


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_second_distillation_with_the_same_key_runs_no_teacher_forward() -> None:
    teacher, student = _models()
    on_the_fly, record, _ = _distill(teacher, student, cache=False)
    assert record.pop("teacher_s") > 0  # the teacher's own seconds, part of distillation's
    assert record.pop("teacher_precision").startswith("fp32")  # +channels_last where faster
    assert record.pop("teacher_engine").startswith("torch (~")  # too few images for an export
    assert record == {"teacher_forwards": STEPS, "teacher_cache": "off: turned off"}
    first, record1, _ = _distill(teacher, student)
    assert record1["teacher_forwards"] == STEPS and record1["built_epochs"] == [1, 2]
    assert record1["cached_epochs"] == []
    second, record2, _ = _distill(teacher, student)
    assert record2["teacher_forwards"] == 0  # every logit read back, per epoch
    assert record2["cached_epochs"] == [1, 2] and record2["built_epochs"] == []
    assert record2["teacher_cache"] == record1["teacher_cache"]
    # the cached logits are the ones the teacher computed: the same weights, bit for bit
    assert _same(first, on_the_fly) and _same(second, first)
    # another student (another candidate) reuses them too
    _, other_student = _models(seed=5)
    assert _distill(teacher, other_student)[1]["teacher_forwards"] == 0
    # the teacher is back on the CPU in eval mode, its weights untouched
    assert not teacher.training and next(teacher.parameters()).device.type == "cpu"


def test_longer_run_reuses_the_epochs_it_shares() -> None:
    """Epoch e's augmentation depends on the seed, not on how many epochs follow."""
    teacher, student = _models()
    _distill(teacher, student)  # epochs 1 and 2
    logits = TeacherLogits(teacher)
    fit(copy.deepcopy(student), _raw(), SPEC, None,
        TrainConfig(epochs=3, batch_size=BATCH, warmup_epochs=0),
        options=FitOptions(loss_fn=distillation_loss(2.0, 0.5), train=CPU_FP32, teacher=logits))
    assert logits.cached_epochs == [1, 2] and logits.built_epochs == [3]
    assert logits.forwards == N // BATCH  # the third epoch only


@pytest.mark.parametrize("change", ["teacher weights", "data", "preprocessing", "seed"])
def test_another_model_data_preprocessing_or_seed_has_another_key(change: str) -> None:
    teacher, student = _models()
    _, base, _ = _distill(teacher, student)
    raw, spec, seed = _raw(), SPEC, 0
    if change == "teacher weights":
        teacher = copy.deepcopy(teacher)
        with torch.no_grad():
            teacher[0].weight[0, 0, 0, 0] += 1e-3
    elif change == "data":
        raw = _raw(seed=1)
    elif change == "preprocessing":
        spec = SPEC.model_copy(update={"mean": (0.5,), "std": (0.25,)})
    else:
        seed = 1
    _, record, _ = _distill(teacher, student, raw, spec, seed=seed)
    assert record["teacher_cache"] != base["teacher_cache"]
    assert record["teacher_forwards"] == STEPS  # rebuilt, not read from the other key's cache


def test_a_cache_recorded_for_another_key_is_refused_and_rebuilt() -> None:
    teacher, student = _models()
    first, record, logits = _distill(teacher, student)
    folder = teacher_root() / record["teacher_cache"]
    key = json.loads((folder / "key.json").read_text())
    # the folder now says it holds another model's logits (and they are garbage)
    (folder / "key.json").write_text(json.dumps({**key, "teacher": "0" * 64}))
    np.save(folder / "epoch-001.npy", np.full((N, 10), 7.0, np.float32))
    again, record2, _ = _distill(teacher, student)
    assert record2["teacher_forwards"] == STEPS and record2["cached_epochs"] == []
    assert _same(again, first)  # the garbage was never used
    assert json.loads((folder / "key.json").read_text()) == key  # rebuilt under its own key
    assert _distill(teacher, student)[1]["teacher_forwards"] == 0
    # a truncated epoch file is refused too
    np.save(folder / "epoch-002.npy", np.zeros((N - 1, 10), np.float32))
    record3 = _distill(teacher, student)[1]
    assert record3["cached_epochs"] == [1] and record3["built_epochs"] == [2]


def test_over_the_bound_the_teacher_runs_on_the_fly_and_says_so(monkeypatch) -> None:
    teacher, student = _models()
    need_mb = EPOCHS * N * 10 * 4 / 2**20
    monkeypatch.setenv("EDGEKIT_TEACHER_CACHE_MB", str(need_mb / 2))
    for _ in range(2):
        _, record, _ = _distill(teacher, student)
        assert record["teacher_forwards"] == STEPS
        assert "exceed the cache bound" in record["teacher_cache"]
    assert cache_size() == 0
    monkeypatch.setenv("EDGEKIT_TEACHER_CACHE_MB", "0")
    assert "cache is off" in _distill(teacher, student)[1]["teacher_cache"]


def test_least_recently_used_keys_are_evicted_to_the_bound(monkeypatch) -> None:
    teacher, student = _models()
    other_teacher, _ = _models(seed=3)
    _, first, _ = _distill(teacher, student)
    one = cache_size()
    monkeypatch.setenv("EDGEKIT_TEACHER_CACHE_MB", str(1.5 * one / 2**20))  # room for one key
    _, second, _ = _distill(other_teacher, student)
    names = {d.name for d in teacher_root().iterdir()}
    assert names == {second["teacher_cache"]}  # the older key went, the run's own stayed
    assert cache_size() <= 1.5 * one
    assert evict() == []  # within the bound: nothing more to remove


def test_students_training_in_another_precision_share_the_teachers_logits(monkeypatch) -> None:
    """(issue 28) The teacher runs in its own measured plan, not in each student's: two
    candidates whose own measured choices differ (fp32 for one, bf16 + channels_last for the
    other: a pruned student's choice can differ from its sibling's) read the same cached
    logits, and the manifest says what the teacher ran in."""
    from torch import nn

    from edgekit.zoo import accel

    def measured(model, input_shape, batch_size, device, options, rounds=3):
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        wide = convs[0].out_channels > 4  # the second student prefers bf16 + channels_last
        best = "bf16+channels_last" if wide else "fp32"
        return {accel._label(*o): 2.0 if accel._label(*o) == best else 1.0 for o in options}

    monkeypatch.setattr(accel, "bf16_supported", lambda device: True)  # autocast runs anyway
    monkeypatch.setattr(accel, "measure_options", measured)
    auto = TrainSettings(device="cpu", precision="auto")
    teacher, student = _models()
    wide = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))
    records = []
    for one in (student, wide):
        logits = TeacherLogits(teacher)
        history = fit(copy.deepcopy(one), _raw(), SPEC, None,
                      TrainConfig(epochs=EPOCHS, batch_size=BATCH, warmup_epochs=0),
                      options=FitOptions(loss_fn=distillation_loss(2.0, 0.5), train=auto,
                                         teacher=logits))
        records.append((history["training"], history["teacher"]))
    (plan_a, first), (plan_b, second) = records
    assert (plan_a["precision"], plan_b["precision"]) == ("fp32", "bf16")
    assert (plan_a["channels_last"], plan_b["channels_last"]) == (False, True)
    assert first["teacher_forwards"] == STEPS and second["teacher_forwards"] == 0
    assert second["teacher_cache"] == first["teacher_cache"]
    assert first["teacher_precision"] == second["teacher_precision"] == "fp32"
