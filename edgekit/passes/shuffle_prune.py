"""Channel shuffles (ShuffleNet) in structured pruning.

torchvision's ShuffleNetV2 permutes its channels between units (`channel_shuffle`: view to
(B, groups, C/groups, H, W), transpose, view back). Torch-Pruning 1.6 cannot trace that reshape
(its index mapping divides by zero; VainF/Torch-Pruning issue #14, ShuffleNet, is open), and a
shuffle couples the channels of every unit of a stage through a permutation and two equal halves,
which a channel group cannot express. While the graph is traced (`opaque_channel_shuffles`), each
shuffle runs as one opaque layer (a `ChannelShuffle` module whose channel counts the graph is told,
like a convolution's) and the pruning step never touches a group that reaches it: the width a
stage passes from unit to unit (the two halves and what crosses the shuffle) is kept, and the
channels inside each unit's branches (the 1×1 → depthwise → 1×1 bottleneck, where most of the work
is) are pruned.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

# (module, function): the channel shuffles edgekit knows; each is replaced while tracing only.
SHUFFLES = (("torchvision.models.shufflenetv2", "channel_shuffle"),)
REASON = ("coupled to the channel shuffle of {name}: the channel order is permuted between "
          "units, so the width a stage passes on is kept (the units' inner channels are pruned)")


class _OpaqueShuffle(torch.autograd.Function):
    """The shuffle as one autograd node: the tracer does not see its reshapes."""

    @staticmethod
    def forward(ctx: Any, x: Any, groups: int, original: Any) -> Any:
        ctx.groups, ctx.original = groups, original
        return original(x, groups)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        return ctx.original(grad, grad.shape[1] // ctx.groups), None, None


class ChannelShuffle(nn.Module):
    """A unit's channel shuffle while the graph is traced; `channels` is set by its forward."""

    def __init__(self, original: Any) -> None:
        super().__init__()
        self.original, self.channels = original, None

    def forward(self, x: Any, groups: int) -> Any:
        self.channels = int(x.shape[1])
        return _OpaqueShuffle.apply(x, groups, self.original)


def pruners() -> dict[type, Any]:
    """customized_pruners for Torch-Pruning: a ChannelShuffle's channel counts (never pruned:
    the pruning step refuses every group that reaches one)."""
    import torch_pruning as tp

    class ShufflePruner(tp.pruner.function.BasePruningFunc):
        TARGET_MODULES = (ChannelShuffle,)

        def prune_out_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
            raise ValueError("a channel shuffle's channels are never pruned")

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer: nn.Module) -> int | None:
            return layer.channels

        def get_in_channels(self, layer: nn.Module) -> int | None:
            return layer.channels

    return {ChannelShuffle: ShufflePruner()}


@contextlib.contextmanager
def opaque_channel_shuffles(model: nn.Module, kept: dict[Any, str]) -> Iterator[None]:
    """While active, every known channel shuffle in `model` runs as a ChannelShuffle module of
    the unit that calls it (attached to the unit for this time only); `kept` receives
    {that module: the reason its channels stay}."""
    units: list[tuple[nn.Module, str]] = []
    patched: list[tuple[Any, str, Any]] = []
    names = {m: n for n, m in model.named_modules()}
    calling: list[nn.Module] = []
    for module_name, func_name in SHUFFLES:
        mod = sys.modules.get(module_name)
        original = getattr(mod, func_name, None) if mod is not None else None
        owners = [m for m in model.modules() if type(m).__module__ == module_name
                  and type(m).forward.__code__.co_names.count(func_name)]
        if original is None or not owners:
            continue
        for unit in owners:
            shuffle = ChannelShuffle(original)
            unit.add_module("edgekit_channel_shuffle", shuffle)
            units.append((unit, "edgekit_channel_shuffle"))
            kept[shuffle] = REASON.format(name=names[unit])

        def opaque(x: Any, groups: int, _original: Any = original) -> Any:
            owner = calling[-1] if calling else None
            if owner is None:  # called from elsewhere: the library's own function
                return _original(x, groups)
            return owner.edgekit_channel_shuffle(x, groups)

        patched.append((mod, func_name, original))
        setattr(mod, func_name, opaque)

    def enter(unit: nn.Module, _args: Any) -> None:
        calling.append(unit)

    def leave(_unit: nn.Module, _args: Any, _output: Any) -> None:
        calling.pop()

    hooks = [h for unit, _ in units for h in (unit.register_forward_pre_hook(enter),
                                               unit.register_forward_hook(leave))]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
        for mod, func_name, original in patched:
            setattr(mod, func_name, original)
        for unit, attr in units:
            delattr(unit, attr)


def groups_reaching(graph: Any, kept: dict[Any, str], ignored: list[Any],
                    reasons: dict[Any, str]) -> list[Any]:
    """The Conv/Linear layers whose output group reaches a kept layer (a shuffle): they keep
    their width, with the reason in `reasons`. Torch-Pruning scores every group before the
    pruning step can refuse one, and the indices of a group across a shuffle do not map."""
    roots = []
    for group in graph.get_all_groups(ignored_layers=ignored,
                                      root_module_types=[nn.modules.conv._ConvNd, nn.Linear]):
        hit = next((kept[dep.target.module] for dep, _ in group if dep.target.module in kept),
                   None)
        if hit:
            root = group[0].dep.target.module
            reasons.setdefault(root, hit)
            roots.append(root)
    return roots
