"""Early stopping of training and distillation (issue 28 part 3): the run stops when the top-1
on a held-out slice of the TRAINING data plateaus (patience, min delta), keeps its best holdout
epoch, records how many epochs ran and why it stopped, and never decides on the eval set."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgekit.data import Dataset, RawImages  # noqa: E402
from edgekit.spec import InputSpec  # noqa: E402
from edgekit.zoo.train import TrainConfig, fit, split_holdout  # noqa: E402
from tests.helpers import tiny_torch_model  # noqa: E402

SPEC = InputSpec().with_shape((1, 1, 28, 28))
NO_AUGMENTATION = {"crop_padding": 0, "hflip": False}  # the patterns' places are their classes


def _patterns(n: int = 300, seed: int = 0) -> RawImages:
    """Class k: a bright 6×6 square at its own place (k of a 3×4 grid), on noise. Learnable to
    100 % in a few epochs."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(y):
        r, c = divmod(int(k), 4)
        x[i, 2 + 8 * r:8 + 8 * r, 2 + 6 * c:8 + 6 * c] = 255
    return RawImages(x, y.astype(np.int64), "patterns")


def _model():
    torch.manual_seed(0)
    return tiny_torch_model()


def test_holdout_is_stratified_disjoint_and_taken_from_unused_rows_first() -> None:
    labels = np.arange(1000) % 10
    rows = np.arange(1000)
    train, held = split_holdout(labels, rows, 0.1, seed=0)
    assert len(held) == 100 and len(train) == 900 and not set(train) & set(held)
    assert np.bincount(labels[held]).tolist() == [10] * 10
    limited = np.arange(0, 1000, 4)  # a limit left 750 images unused: hold out from those
    train, held = split_holdout(labels, limited, 0.1, seed=0)
    assert train.tolist() == limited.tolist() and len(held) == 25
    assert not set(held) & set(limited)


def test_stops_on_a_plateau_with_epochs_run_and_why() -> None:
    """A learning rate too small to move the weights: the holdout top-1 stays flat, so a
    6-epoch run with patience 1 stops after epoch 2 and says why."""
    cfg = TrainConfig(epochs=6, lr=1e-12, warmup_epochs=0, patience=1, min_delta=0.002,
                      holdout=0.2, batch_size=32)
    history = fit(_model(), _patterns(), SPEC, None, cfg)
    stop = history["early_stop"]
    assert stop["epochs_run"] == 2 == len(history["epochs"]) and stop["epochs_planned"] == 6
    assert stop["stopped"].startswith("plateau") and stop["holdout_images"] == 60
    assert history["train_images"] == 240  # the holdout is not trained on
    first, second = (e["holdout_top1"] for e in history["epochs"])
    assert abs(second - first) < 0.002 and stop["kept_epoch"] == 1
    # the distillation's report row (and so the manifest) says so
    from edgekit.passes.distill import training_row

    row = training_row(history)
    assert row["epochs"] == 2 and row["stopped"] == stop["stopped"]


def test_keeps_training_while_it_improves_and_keeps_the_best_holdout_epoch() -> None:
    cfg = TrainConfig(epochs=12, lr=1e-3, patience=2, min_delta=0.002, holdout=0.2,
                      batch_size=32, **NO_AUGMENTATION)
    model = _model()
    history = fit(model, _patterns(), SPEC, None, cfg)
    tops = [e["holdout_top1"] for e in history["epochs"]]
    stop = history["early_stop"]
    assert len(tops) == stop["epochs_run"] >= 3 and tops[-1] > tops[0] + 0.2
    best = max(tops)
    assert stop["holdout_top1"] == best and tops[stop["kept_epoch"] - 1] == best
    # it learns the patterns (100 %) in a few epochs, then the holdout top-1 is flat: it stops
    assert stop["epochs_run"] < 12 and stop["stopped"].startswith("plateau")
    assert all(t < best + 0.002 for t in tops[-2:])


def test_the_eval_set_never_decides_when_to_stop() -> None:
    """The same run with no eval set, with the eval set, and with an eval set whose labels are
    shuffled (its top-1 collapses): the same epochs, the same holdout top-1, the same weights."""
    raw = _patterns()
    test = _patterns(100, seed=1)
    x = test.model_inputs(SPEC, np.arange(100))
    good = Dataset(x, test.labels, "eval")
    bad = Dataset(x, np.random.default_rng(3).permutation(test.labels), "eval-shuffled")
    cfg = TrainConfig(epochs=8, lr=1e-3, patience=1, min_delta=0.05, holdout=0.2,
                      batch_size=32, **NO_AUGMENTATION)
    runs = []
    for eval_set in (None, good, bad):
        model = _model()
        history = fit(model, raw, SPEC, eval_set, cfg)
        runs.append((history, model.state_dict()))
    (h0, w0), (h1, w1), (h2, w2) = runs
    assert h1["epochs"][-1]["top1"] != h2["epochs"][-1]["top1"]  # the eval sets do differ
    for h, w in ((h1, w1), (h2, w2)):
        assert h["early_stop"] == h0["early_stop"]
        assert [e["holdout_top1"] for e in h["epochs"]] == \
            [e["holdout_top1"] for e in h0["epochs"]]
        assert all(torch.equal(w[k], w0[k]) for k in w0)


def test_short_runs_and_no_patience_hold_nothing_out() -> None:
    """Early stopping needs more than patience + 1 epochs: shorter runs train on every image,
    as before, and record that all epochs ran."""
    raw = _patterns(100)
    for cfg in (TrainConfig(epochs=3, patience=2), TrainConfig(epochs=4, patience=None)):
        history = fit(copy.deepcopy(_model()), raw, SPEC, None, cfg)
        assert history["train_images"] == 100
        assert history["early_stop"]["epochs_run"] == cfg.epochs
        assert "holdout_top1" not in history["epochs"][0]
