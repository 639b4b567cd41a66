"""Reading Torch-Pruning's dependency graph for edgekit's prune pass: which layers prune and how
wide they are, the final classifier, the importance scorers, the gradients taylor reads, and the
diagnostics that turn the library's silent skips and crashes into errors that name the layer
(edgekit.passes.prune is the pass; channel_pruning the run)."""

from __future__ import annotations

import contextlib
import copy
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from edgekit.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


class PruneError(InputError):
    """The pruning asked for cannot be done on this model (exit 2, with a hint)."""


class WipeoutError(PruneError):
    """The ratio would remove every channel of a layer."""


class IndexExplosionError(PruneError):
    """Torch-Pruning's index mapping grew past anything the model's layers can index."""


@contextlib.contextmanager
def bounded_index_mapping(model: Any) -> Iterator[int]:
    """While active, Torch-Pruning's flatten index mapping refuses to produce an index list
    longer than max(2^16, 8 × the model's widest parameter dimension): IndexExplosionError.

    Torch-Pruning 1.6 maps a reshape it takes for a flatten as "channel c → c·s … (c+1)·s - 1".
    On a reshape that is no flatten (Swin's window partition, tokens folded into the batch) a
    group's index list grows by s at every such reshape, and around a cycle of the dependency
    graph without end: swin_t at 32×32 with its attention kept whole reached 8.7 GB and a
    MemoryError (~14 GB at a larger size). A real flatten yields at most the width of the layer
    that reads it, so a longer list indexes nothing; the bound turns the blow-up into an error
    that names the layer (through the caller's traceback reading) within tens of MB.
    Torch-Pruning builds these mapping objects afresh in every get_pruning_group, so the bound
    is set on the class, for the length of one pruning run, and put back after. Yields the
    bound."""
    from torch_pruning.dependency import index_mapping

    widest = max((max(p.shape) for p in model.parameters() if p.dim()), default=1)
    limit = max(1 << 16, 8 * int(widest))
    mapping = index_mapping._FlattenIndexMapping
    original = mapping.__call__

    def bounded(self: Any, idxs: Any) -> Any:
        if not self.reverse and len(idxs) * self._stride > limit:
            raise IndexExplosionError(
                f"Torch-Pruning's index mapping through a reshape grows past {limit} indices "
                f"({len(idxs)} × stride {self._stride}; the widest layer has {widest}): it "
                "cannot follow a reshape of this model and would run out of memory",
                hint="ignore the module that reshapes with --prune-ignore NAME")
        return original(self, idxs)

    mapping.__call__ = bounded
    try:
        yield limit
    finally:
        mapping.__call__ = original


class GroupExplosionError(PruneError):
    """Torch-Pruning's dependency group of one layer grew past anything a model couples."""


@contextlib.contextmanager
def bounded_groups(model: Any) -> Iterator[int]:
    """While active, a Torch-Pruning dependency group refuses to grow past max(4,096, 4 × the
    model's module count) items: GroupExplosionError, raised where the traceback names the
    group's root layer (module_in_traceback reads it).

    A group lists each (layer, pruning function, indices) its root's channels reach; a real
    group reaches each layer once or a few times (densenet, ViT's residual stream: hundreds).
    A coupling Torch-Pruning 1.6 maps wrong (a channel slice added into a residual: timm's
    ReXNet) makes it add the same layers again with ever other indices, without end (rexnet_100:
    5,000 items after 1.3 s, still growing; `edgekit inspect` ran past 600 s). edgekit keeps the
    couplings it knows whole (edgekit.passes.channel_slices); this bound turns any other into
    an error naming the layer. Set on the class for one pruning run and put back after."""
    from torch_pruning.dependency.group import Group

    limit = max(4096, 4 * sum(1 for _ in model.modules()))
    original = Group.add_dep

    def bounded(self: Any, dep: Any, idxs: Any) -> Any:
        if len(self._group) >= limit:
            _exploded(self._group[0].dep.target.module, limit)
        return original(self, dep, idxs)

    Group.add_dep = bounded
    try:
        yield limit
    finally:
        Group.add_dep = original


def _exploded(root: Any, limit: int) -> None:
    """Raise GroupExplosionError; `root` (the group's root layer) is this frame's only layer,
    so the traceback reading names it."""
    raise GroupExplosionError(
        f"Torch-Pruning's dependency group of {type(root).__name__} grows past {limit} items: "
        "it cannot follow how this layer's channels are coupled (e.g. a channel slice added "
        "into a residual)", hint="ignore the layer with --prune-ignore NAME")


def channel_width(module: Any) -> int | None:
    """Output size of a prunable layer: conv channels, linear features, RNN hidden units."""
    from torch import nn

    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.RNNBase):
        return module.hidden_size
    return None


def prunable_layers(model: Any) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if channel_width(m) is not None}


def find_classifier(model: Any, example: Any) -> Any:
    """The last Conv/Linear run in a forward pass: the final classifier, whose outputs stay."""
    import torch
    from torch import nn

    from edgekit.passes.stats import forward_hooks

    order: list[Any] = []
    with forward_hooks((m, lambda mod, _i, _o: order.append(mod)) for m in model.modules()
                       if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)), torch.no_grad():
        model(example)
    return order[-1] if order else None


def module_in_traceback(exc: BaseException, names: dict[Any, str]) -> str | None:
    """The innermost layer of the model that the frames of `exc`'s traceback were handling.

    Torch-Pruning (1.6) raises plain exceptions from its tracer and its pruning functions that
    do not say which layer it was working on, and it has no API that does; the traceback's
    frame locals are the only record left. Every local of every frame is looked at (no guessed
    variable names): a layer or parameter of this model, or a dependency / node that points
    at one. The innermost frame wins. The answer only words the error message and its hint;
    nothing is decided by it."""
    from torch import nn

    def layer_of(obj: Any) -> str | None:
        target = getattr(obj, "target", None)
        for candidate in (obj, target, getattr(obj, "module", None),
                          getattr(target, "module", None)):
            if isinstance(candidate, nn.Module | nn.Parameter) and names.get(candidate):
                return names[candidate]
        return None

    found = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        for obj in list(frame.f_locals.values()):
            try:
                hit = layer_of(obj)
            except Exception:  # noqa: BLE001 - a local whose attributes cannot be read
                hit = None
            if hit:
                found = hit
                break
    return found


def failing_module(model: Any, example: Any) -> tuple[str | None, BaseException | None]:
    """Run a forward pass; on an exception return (the module to blame, exception): the
    innermost module running, or, when that is a standard layer whose input came from a custom
    module (whose channels the graph could not see), that custom module."""
    import torch

    names = {m: n for n, m in model.named_modules()}
    stack: list[Any] = []
    finished: list[Any] = []

    def enter(mod: Any, _inputs: Any) -> None:
        stack.append(mod)

    def leave(mod: Any, _inputs: Any, _output: Any) -> None:
        stack.pop()
        finished.append(mod)

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave))
    try:
        with torch.no_grad():
            model(example)
        return None, None
    except Exception as exc:  # noqa: BLE001 - reported to the user with the module's name
        failing = next((m for m in reversed(stack) if names.get(m)), None)
        upstream = next((m for m in reversed(finished)
                         if names.get(m) and m not in stack), None)
        if failing is not None and channel_width(failing) is not None and upstream is not None \
                and channel_width(upstream) is None and any(True for _ in upstream.children()) is False:
            failing = upstream
        return (names[failing] if failing is not None else None), exc
    finally:
        for h in handles:
            h.remove()


def name_of(obj: Any, names: dict[Any, str]) -> str:
    """A module's name, or for a bare parameter its dotted name (owner.weight)."""
    return names.get(obj) or type(obj).__name__


def ignore_hint(name: str | None) -> str:
    if not name:
        return "exclude the offending layer with --prune-ignore NAME (recipe: ignore: [NAME])"
    return f"ignore it: --prune-ignore '{name}' (recipe: prune: {{ignore: ['{name}']}})"


def importance_scorer(kind: str) -> Any:
    import torch_pruning as tp

    if kind == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.BNScaleImportance()


class RecordingImportance:
    """Wraps an importance; remembers the groups it cannot score (e.g. no BN for bn-scale)."""

    def __init__(self, inner: Any, skip: Any = None) -> None:
        self.inner, self.skip = inner, skip  # skip(group): True -> not scored, not pruned
        self.unscored: list[Any] = []
        self.scored = 0

    def __call__(self, group: Any) -> Any:
        if self.skip is not None and self.skip(group):
            return None
        imp = self.inner(group)
        if imp is None:
            self.unscored.append(group[0].dep.target.module)
        else:
            self.scored += 1
        return imp


def compute_gradients(model: Any, x: Any, y: Any, batch_size: int) -> None:
    """Accumulate dL/dw of cross-entropy over (x, y) into the parameters' .grad (eval mode, so
    BatchNorm statistics do not move). What Taylor importance reads."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    inputs = torch.as_tensor(x, dtype=torch.float32)
    labels = torch.as_tensor(y, dtype=torch.long)
    for start in range(0, len(inputs), batch_size):
        loss = F.cross_entropy(model(inputs[start:start + batch_size]),
                               labels[start:start + batch_size], reduction="sum") / len(inputs)
        loss.backward()
    model.train(was_training)


def copy_with_grads(model: Any) -> Any:
    clone = copy.deepcopy(model)
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        q.grad = None if p.grad is None else p.grad.detach().clone()
    return clone


def producers(graph: Any, rnn: Any) -> list[Any]:
    """Conv/Linear layers whose outputs reach `rnn`'s input through non-parametric nodes."""
    from torch import nn

    node = graph.module2node.get(rnn)
    found, stack, seen = [], list(node.inputs) if node else [], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if isinstance(n.module, nn.modules.conv._ConvNd | nn.Linear | nn.RNNBase):
            found.append(n.module)
            continue
        stack.extend(n.inputs)
    return found


def why_unchanged(graph: Any, module: Any, reasons: dict[Any, str], names: dict[Any, str],
                   global_pruning: bool, ratio: float, width: int) -> str:
    """A reason for a layer that kept its width without an explicit one."""
    if module not in graph.module2node:
        return "not used in the traced forward pass"
    pruner = graph.get_pruner_of_module(module)
    try:
        group = graph.get_pruning_group(module, pruner.prune_out_channels, [0])
        for dep, _ in group:
            other = dep.target.module
            if other is not module and other in reasons and \
                    graph.is_out_channel_pruning_fn(dep.handler):
                return f"coupled to {names.get(other, '?')} ({reasons[other]})"
    except Exception:  # noqa: BLE001, S110 - only looking for a better reason
        pass
    if width <= 1:
        return "a single channel"
    if global_pruning:
        return "global ranking kept all its channels"
    keep = int(width * (1 - ratio))
    if keep >= width:
        return f"{width} channels at ratio {ratio:g} leave none to remove"
    return "Torch-Pruning left its group unpruned (a coupled layer has a single channel)"
