"""Inherit, don't restart (issue 28 part 3, edgekit.optimize.inherit): a candidate pruned
further than one already distilled starts from that one's distilled weights pruned further
(the child's exact architecture), chosen by pick_parent; the Builder does it when the space
says so, and records the parent in the candidate's manifest."""

from __future__ import annotations

import copy
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from edgekit.optimize.build import Arch, Builder  # noqa: E402
from edgekit.optimize.inherit import inherit, pick_parent  # noqa: E402
from edgekit.passes.prune import prune_model  # noqa: E402
from edgekit.zoo import build  # noqa: E402


def _pruned(bundle, ratio):
    out = copy.deepcopy(bundle)
    prune_model(out.model, out.spec, ratio=ratio)
    return out


def _distilled(bundle, seed=1):
    """Stands for a distillation: every weight moved (so the parent's are not the original's)."""
    out = copy.deepcopy(bundle)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.model.parameters():
            p.mul_(1 + 0.5 * torch.rand(p.shape, generator=g))
    return out


def test_pick_parent_takes_the_closest_less_pruned_same_dwsep_full_first() -> None:
    done = [(Arch(0.25, "off"), "short"), (Arch(0.25, "off"), "full"),
            (Arch(0.4, "off"), "short"), (Arch(0.4, "auto"), "full"), (Arch(0.6, "off"), "full"),
            (Arch(0.0, "off"), "full")]
    assert pick_parent(Arch(0.5, "off"), done) == (Arch(0.4, "off"), "short")
    assert pick_parent(Arch(0.3, "off"), done) == (Arch(0.25, "off"), "full")
    assert pick_parent(Arch(0.5, "auto"), done) == (Arch(0.4, "auto"), "full")
    assert pick_parent(Arch(0.2, "off"), done) is None  # nothing pruned less (but pruned)
    assert pick_parent(Arch(0.0, "auto"), done) is None
    assert pick_parent(Arch(0.5, "off"), []) is None


def test_the_child_starts_from_the_distilled_parents_weights_pruned_further() -> None:
    torch.manual_seed(0)
    original = build("lenet5")
    parent = _distilled(_pruned(original, 0.3))
    child = _pruned(original, 0.5)
    got = inherit(parent, child)
    assert got is not None
    mine, theirs = got.model.state_dict(), child.model.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(mine[k].shape == theirs[k].shape for k in mine)
    assert mine["conv1.weight"].shape[0] == 8 < parent.model.conv1.out_channels == 11
    # conv1 (its input is the image): the child keeps 8 of the parent's 11 filters, in order, as
    # they are after distillation - not the original's filters
    w = parent.model.conv1.weight.detach()
    kept = [next(i for i in range(len(w)) if torch.equal(row, w[i]))
            for row in mine["conv1.weight"]]
    assert kept == sorted(set(kept)) and len(kept) == 8
    assert not torch.equal(mine["conv1.weight"], theirs["conv1.weight"])
    # deeper layers: the parent's rows, restricted to the kept inputs
    fc3 = parent.model.fc3.weight.detach()
    assert mine["fc3.weight"].shape == (10, child.model.fc3.in_features)
    assert all(any(torch.equal(col, c) for c in fc3.T) for col in mine["fc3.weight"].T)
    # the child runs as the child does: same output shape, and the architecture was not touched
    x = torch.randn(2, 1, 28, 28)
    assert got.model(x).shape == (2, 10) and got.surgery == child.surgery


def test_residual_groups_are_pruned_together_to_the_childs_widths() -> None:
    from edgekit.api import as_bundle
    from edgekit.zoo import resnet18_small

    torch.manual_seed(0)
    original = as_bundle(resnet18_small().eval(), input_shape=(1, 1, 28, 28),
                         preprocessing="fashion-mnist",
                         arch="edgekit.zoo:resnet18_small")
    got = inherit(_distilled(_pruned(original, 0.3)), child := _pruned(original, 0.5))
    assert got is not None
    mine, theirs = got.model.state_dict(), child.model.state_dict()
    assert {k: v.shape for k, v in mine.items()} == {k: v.shape for k, v in theirs.items()}
    assert mine["layer1.0.conv1.weight"].shape[0] == 32


def test_a_model_with_surgery_or_other_shapes_is_not_inherited() -> None:
    original = build("lenet5")
    parent, child = _pruned(original, 0.3), _pruned(original, 0.5)
    parent.surgery = [{"kind": "dwsep"}]
    assert inherit(parent, child) is None
    wider = _pruned(original, 0.5)
    assert inherit(wider, _pruned(original, 0.3)) is None  # cannot grow channels back


def test_builder_inherits_and_records_the_parent(tmp_path, monkeypatch, fashion_test_small):
    """With `distill: {inherit: true}`, prune 0.5 is distilled from prune 0.3's distilled
    weights (its manifest says so); without, from the original (as before)."""
    from edgekit.io.files import sha256_file
    from edgekit.io.models import load_model
    from edgekit.optimize.space import SearchSpace
    from edgekit.zoo import shipped_checkpoint

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    path = shipped_checkpoint("lenet5")
    original = load_model(path)

    def builder(inherits, root):
        space = SearchSpace(prune=[0.0, 0.3, 0.5], dwsep=["off"], distill={
            "short_limit": 200, "full_limit": 400, "inherit": inherits})
        return Builder(original, sha256_file(path), root, space, train_source="fashion-mnist:train",
                       calib_source=None, data_dir=None, parity_x=None)

    def distill_stage(b, arch):
        folder = b.model_dir(arch, "short", None)
        stages = json.loads((folder / "manifest.json").read_text())["stages"]
        return next(s for s in stages if s["stage"] == "distill")

    on = builder(True, tmp_path / "on")
    on.bundle(Arch(0.3, "off"), "short", None)
    on.bundle(Arch(0.5, "off"), "short", None)
    assert distill_stage(on, Arch(0.3, "off"))["metrics"]["inherited_from"] is None
    assert distill_stage(on, Arch(0.5, "off"))["metrics"]["inherited_from"] == "prune 0.3 (short)"
    off = builder(False, tmp_path / "off")
    off.bundle(Arch(0.3, "off"), "short", None)
    off.bundle(Arch(0.5, "off"), "short", None)
    assert distill_stage(off, Arch(0.5, "off"))["metrics"]["inherited_from"] is None
    # the inherited candidate is its own cache entry (the key says how it started)
    assert on.model_dir(Arch(0.5, "off"), "short", None).name != \
        off.model_dir(Arch(0.5, "off"), "short", None).name
