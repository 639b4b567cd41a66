"""Inherit, don't restart (progressive shrinking): a candidate pruned further than one already
distilled starts from that one's distilled weights, pruned further, instead of from the original.

`pick_parent` chooses the parent among the candidates already distilled: the same dwsep choice,
pruned less (but pruned), the closest ratio first, a full distillation before a short one.
`inherit` prunes a copy of the parent's distilled model down to the child's layer widths, each
group of coupled channels by the L1 norm of the parent's own (distilled) weights, and returns it
only when every tensor then has the child's shape (same names, same shapes; a model whose
surgery - dwsep, fused attention - or RNN hidden units make that uncertain is not inherited).

Whether it pays is measured, not assumed: `INHERIT_DEFAULT` follows benchmarks/bench_inherit.py
(the numbers are beside it); a space may still say `distill: {inherit: false}`."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.optimize.build import Arch

# On, as measured (benchmarks/bench_inherit.py, LeNet-5 for Fashion-MNIST, its shipped checkpoint,
# top-1 on the 10,000 test images, parent prune 0.3 distilled 1 epoch, child prune 0.5, mean of
# the seeds; 2 cores): on 2,000 images per epoch (3 seeds) the inherited child reached 86.60 / 87.30
# / 87.78 % after 32 / 64 / 96 steps against 85.80 / 86.92 / 87.29 % from the original, i.e. the
# original's 96-step top-1 in 64 steps (2/3); every seed of the inherited child was above every
# seed of the other after 1 and 3 epochs. On 6,000 images (2 seeds): 87.70 / 87.99 % after 94 /
# 188 steps against 87.23 / 87.83 %. Undistilled, the inherited start is 78.7-82.5 % against 68.0 %.
INHERIT_DEFAULT = True


def pick_parent(arch: Arch, distilled: Iterable[tuple[Arch, str]]) -> tuple[Arch, str] | None:
    """The (architecture, stage) to start `arch` from, among `distilled` (architectures whose
    stage "short" or "full" is already distilled): the same other choices (dwsep, ...), 0 < its prune < arch's; the
    closest ratio first, then a full distillation before a short one. None: start from the
    original."""
    if arch.prune <= 0:
        return None
    others = {k: v for k, v in arch.choices if k != "prune"}
    fitting = [(a, s) for a, s in distilled
               if {k: v for k, v in a.choices if k != "prune"} == others
               and 0 < a.prune < arch.prune and s in ("short", "full")]
    if not fitting:
        return None
    return max(fitting, key=lambda c: (c[0].prune, c[1] == "full"))


def inherit(parent: Any, child: Any) -> Any | None:
    """A copy of `child` (the bundle pruned from the original: its architecture, spec, surgery,
    meta) whose weights are `parent`'s distilled ones pruned further to the child's widths; None
    when that cannot give the child's exact tensors (names and shapes)."""
    if parent.surgery or child.surgery:
        return None
    try:
        model = prune_to_widths(parent.model, child.model, child.spec)
    except Exception:  # noqa: BLE001 - a graph Torch-Pruning cannot handle: start afresh
        return None
    if model is None:
        return None
    out = copy.deepcopy(child)
    out.model.load_state_dict(model.state_dict())
    out.model.eval()
    return out


def prune_to_widths(wide: Any, narrow: Any, spec: Any) -> Any | None:
    """A copy of `wide` whose Conv/Linear output widths are `narrow`'s (same module names),
    pruned group by group, lowest L1 norm first; None when the result's tensors are not
    `narrow`'s (names and shapes)."""
    import torch
    import torch_pruning as tp
    from torch import nn

    if any(isinstance(m, nn.RNNBase | nn.MultiheadAttention) for m in wide.modules()):
        return None
    model = copy.deepcopy(wide).cpu().eval()
    example = torch.zeros((1, *spec.shape[1:]))
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    targets = {n: _out_width(m) for n, m in narrow.named_modules()}
    scorer = tp.importance.GroupMagnitudeImportance(p=1)
    for name, module in model.named_modules():
        width, want = _out_width(module), targets.get(name)
        if width is None or want is None or want >= width:
            continue
        fn = tp.prune_conv_out_channels if isinstance(module, nn.modules.conv._ConvNd) \
            else tp.prune_linear_out_channels
        scores = scorer(graph.get_pruning_group(module, fn, idxs=list(range(width))))
        drop = torch.argsort(scores)[:width - want].tolist()
        group = graph.get_pruning_group(module, fn, idxs=sorted(drop))
        if not graph.check_pruning_group(group):
            return None
        group.prune()
    mine, theirs = model.state_dict(), narrow.state_dict()
    if mine.keys() != theirs.keys() or any(mine[k].shape != theirs[k].shape for k in mine):
        return None
    return model


def _out_width(module: Any) -> int | None:
    from torch import nn

    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    return None
