"""Pruning a trained tiny model with real data: Taylor importance from real gradients, and
distillation from the unpruned teacher winning accuracy back."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from edgekit.passes.base import PassContext  # noqa: E402
from edgekit.passes.distill import DistillPass  # noqa: E402
from edgekit.passes.prune import PrunePass  # noqa: E402


def _context(tmp_path, bundle, train: str | None = "fashion-mnist:train") -> PassContext:
    ctx = PassContext(out_dir=tmp_path, train_source=train, eval_source="fashion-mnist:test",
                      eval_limit=1000)
    ctx.original = copy.deepcopy(bundle)
    return ctx


def test_distillation_improves_a_pruned_tiny_model(zoo_checkpoint, tmp_path):
    from edgekit.io.models import load_model
    from edgekit.metrics import torch_top1

    bundle = load_model(zoo_checkpoint("lenet5"))
    ctx = _context(tmp_path, bundle)
    original_top1 = torch_top1(bundle.model, ctx.eval_set(bundle.spec))
    bundle = PrunePass({"ratio": 0.75}).apply(bundle, ctx)
    pruned_top1 = ctx.report[-1]["top1"]
    assert bundle.model.conv1.out_channels == 4
    assert pruned_top1 < original_top1 - 0.02  # pruning this hard costs accuracy
    bundle = DistillPass({"epochs": 1, "limit": 2000}).apply(bundle, ctx)
    row = ctx.report[-1]
    assert row["step"] == "distill" and row["epochs"] == 1
    assert row["top1"] > pruned_top1 + 0.03, (original_top1, pruned_top1, row["top1"])
    assert bundle.model.conv1.out_channels == 4  # distillation keeps the pruned architecture


def test_taylor_importance_from_eval_gradients(zoo_checkpoint, tmp_path):
    """Without --train, Taylor takes its gradients from labelled eval batches; on a trained
    model it keeps accuracy at least as well as chance-level pruning would."""
    from edgekit.io.models import load_model

    bundle = load_model(zoo_checkpoint("lenet5"))
    ctx = _context(tmp_path, bundle, train=None)
    step = PrunePass({"ratio": 0.5, "importance": "taylor", "taylor_batches": 2})
    step.check(bundle, ctx)
    bundle = step.apply(bundle, ctx)
    row = ctx.report[-1]
    assert row["importance"] == "taylor" and bundle.model.conv2.out_channels == 16
    assert row["top1"] > 0.3
    assert all(p.grad is None for p in bundle.model.parameters())
