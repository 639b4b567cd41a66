"""Channel slices Torch-Pruning cannot map, in structured pruning: partial residuals (timm's
ReXNet) and splits into channel parts of unequal sizes (timm's MobileViTv2).

ReXNet's bottleneck adds its shortcut into a slice of its wider output:
`torch.cat([x[:, 0:in_channels] + shortcut, x[:, in_channels:]], dim=1)`. Torch-Pruning 1.6
follows that channel slice with index mappings that do not converge: the group of each later
block's last 1×1 conv grows without end (measured on rexnet_100 at 64×64: past 5,000 group items in 1.3 s,
still growing; `edgekit inspect` ran past 600 s), and the groups that do close index past their
layer's width (IndexError in the importance). The blocks also keep `in_channels` as a Python int
that no pruner updates.

So every prunable layer whose output reaches such a partial add without passing through another
prunable layer keeps its width (like an ignored layer: its inputs still follow the layers before
it); the channels inside each block (expansion, depthwise, squeeze-excite) are pruned. On
rexnet_100 at 64×64 that prunes 3.53M parameters to 2.21M at ratio 0.3 (round_to 8) and the pruned model
runs. Only a slice of the channels of a 4-D/5-D tensor that leaves some out counts (a token
or spatial slice does not; GhostNet's `out[:, :out_chs]` of an even width takes them all).

MobileViTv2's linear attention splits its qkv_proj output into a 1-channel query and two
d-channel halves (`qkv.split([1, d, d], dim=1)`): Torch-Pruning prunes the split as a whole and
would empty the query at any ratio ("would remove every channel of ...qkv_proj (257)"). A layer
whose output is split along its channels into parts of unequal sizes keeps its width too (its
inputs still follow the layers before it); equal parts (CSP halves, Res2Net) are left to the
library, which maps them.
"""

from __future__ import annotations

from typing import Any

REASON = ("its output meets a partial residual (a shortcut added into a slice of its "
          "channels, x[:, :C] + shortcut: {where}) that Torch-Pruning cannot map: its width is "
          "kept (the layers inside each block are pruned)")
SPLIT_REASON = ("its output is split along its channels into parts of unequal sizes ({sizes}), "
                "which Torch-Pruning would prune as one (emptying the smallest): its width is kept")


def unmappable_producers(model: Any, example: Any, is_prunable: Any) -> dict[Any, str]:
    """{module: reason} for each module (`is_prunable(module)`) whose output reaches a partial
    channel add (_partial_residual) or an uneven channel split (_uneven_split) of
    `model(example)` through no other such module."""
    import torch

    from edgekit.passes.stats import forward_hooks

    produced: dict[Any, Any] = {}  # grad_fn of a prunable module's output -> the module

    def remember(module: Any, _inputs: Any, output: Any) -> None:
        first = output[0] if isinstance(output, tuple) else output
        if isinstance(first, torch.Tensor) and first.grad_fn is not None:
            produced[first.grad_fn] = module

    with forward_hooks((m, remember) for m in model.modules() if is_prunable(m)), \
            torch.enable_grad():
        out = model(example)
    roots = [t.grad_fn for t in _tensors(out) if t.grad_fn is not None]
    nodes = _walk(roots, stop=lambda fn: False)
    adds = [fn for fn in nodes if _partial_residual(fn)]
    reasons = {fn: REASON.format(where=f"partial add {i + 1} of {len(adds)}")
               for i, fn in enumerate(adds)}
    reasons.update({fn: SPLIT_REASON.format(sizes=", ".join(map(str, fn._saved_split_sizes)))
                    for fn in nodes if _uneven_split(fn)})
    kept: dict[Any, str] = {}
    for fn, reason in reasons.items():
        for node in _walk([fn], stop=lambda n: n in produced):
            if node in produced:
                kept.setdefault(produced[node], reason)
    return kept


def _uneven_split(fn: Any) -> bool:
    """A split of dim 1 of an N-C-H-W tensor into parts of unequal sizes."""
    if type(fn).__name__ != "SplitWithSizesBackward0":
        return False
    sizes = tuple(fn._saved_split_sizes)
    return (fn._saved_dim == 1 and len(tuple(fn._saved_self_sym_sizes)) in (4, 5)
            and len(set(sizes)) > 1)


def _partial_residual(fn: Any) -> bool:
    """An add into part of the channels: `x[:, :C] + shortcut` (an add one of whose inputs is
    a slice of dim 1 of an N-C-H-W tensor that leaves channels out). An in-place add into a
    view (autograd's CopySlices) is not read: GhostNet's `x += shortcut` on its full-width
    `out[:, :out_chs]` is one, and Torch-Pruning maps it."""
    name = type(fn).__name__
    return name in ("AddBackward0", "AddBackward1") and any(
        _channel_slice(nxt) for nxt, _ in fn.next_functions if nxt is not None)


def _channel_slice(fn: Any) -> bool:
    if type(fn).__name__ != "SliceBackward0":
        return False
    sizes = tuple(fn._saved_self_sym_sizes)
    return (fn._saved_dim == 1 and len(sizes) in (4, 5)
            and not (fn._saved_start == 0 and fn._saved_end >= sizes[1]))


def _tensors(out: Any) -> list[Any]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _tensors(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _tensors(item)]
    return []


def _walk(starts: list[Any], stop: Any) -> list[Any]:
    """Every autograd node reachable from `starts` (each once); a node where `stop` holds is
    listed but not walked past (a start is always walked past)."""
    seen: set[Any] = set()
    order: list[Any] = []
    stack = [(fn, True) for fn in starts]
    while stack:
        fn, is_start = stack.pop()
        if fn is None or (fn in seen and not is_start):
            continue
        seen.add(fn)
        order.append(fn)
        if not is_start and stop(fn):
            continue
        stack.extend((nxt, False) for nxt, _ in fn.next_functions)
    return order
