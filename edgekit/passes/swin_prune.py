"""Head pruning for torchvision's windowed attention: Swin (ShiftedWindowAttention, V1 and V2)
and MaxViT (RelativePositionalMultiHeadAttention inside a PartitionAttentionLayer).

torchvision's `ShiftedWindowAttention` never calls its `qkv` and `proj` Linears: it hands their
weights to `shifted_window_attention`, which runs `F.linear`, splits the heads as input width //
num_heads and adds a relative-position bias per head (V1: a table of shape [(2M-1)², heads];
V2: `cpb_mlp`, whose last Linear has one output per head, and a per-head `logit_scale`, cosine
attention). Torch-Pruning's dependency graph sees none of that structure, so edgekit removes
whole heads itself, before the channel pruning:

- each layer loses round(head_ratio × heads) heads (at least one stays), chosen by the prune
  step's importance over the head's weights (its q, k and v rows of qkv and its proj input
  columns: l1 = Σ|w|, l2 = Σw², taylor = Σ|w·∂L/∂w|; bn-scale has no BatchNorm here and ranks
  by l1, said in a note);
- a removed head takes its rows of q, k and v in `qkv` (weight and bias), its input columns of
  `proj`, its column of the bias table (V1) or its output row of `cpb_mlp[2]` and its entry of
  `logit_scale` (V2); `num_heads` follows and `head_dim` is kept;
- the layer's forward becomes `window_attention` below: torchvision's function with the head
  width as num_heads × head_dim instead of the input width (the same operations: the same
  outputs, the same ONNX graph). Removing a head gives exactly the original model with that
  head's output zeroed (its proj columns set to 0), which tests/unit/test_prune_swin.py checks.

The residual width (every block's input and output, PatchMerging, the LayerNorms) is kept, as for
the other transformer blocks (edgekit.passes.attn_prune); the MLP hidden channels are pruned by the
channel ratio through Torch-Pruning as usual.

While the dependency graph is traced, every Swin attention runs as one opaque node (`opaque`):
the input and output width, nothing inside. Traced as it is, the attention's window partition
(view/permute/reshape of the whole feature map) and its bias-table indexing are reshapes that
Torch-Pruning 1.6 maps as flattens (`_FlattenIndexMapping`, a stride of 32 or 49 per reshape);
a group of the residual stream passes every block's window partition, so its index list grows by
that factor at each block, and around the graph's cycles, until memory runs out (swin_t at
32×32 with its attention in the ignore list: 8.7 GB resident, then a MemoryError under a 12 GB
address-space limit; the same at 16×16 under 6 GB; ~14 GB was seen unbounded). Opaque, the whole
prune run of swin_t at 32×32 takes about 100 MB over the model itself (33 MB of Python objects
at peak). edgekit.passes.prune_graph.bounded_index_mapping bounds whatever else still explodes.

MaxViT (issue 27: maxvit_t was refused, "PartitionAttentionLayer splits its projections into heads
in code the dependency graph cannot see"): its RelativePositionalMultiHeadAttention has the same
layout under other names (`to_qkv` chunked into q, k, v; `merge`; `n_heads`; a bias table of
one column per head), scales q·k by the input width (kept as it is, so the outputs of the heads
left do not change) and reshapes the heads' output to the input width: its head-aware forward
(`relative_attention`) reshapes to n_heads × head_dim instead. The opaque unit is the whole
PartitionAttentionLayer: its window/grid partition (reshape and permute of the feature map) is
outside the attention, and its MLP runs on the partitioned tensor; the MLP is kept, the MBConv
blocks between them are pruned by Torch-Pruning as usual.

A pruned checkpoint records {"op": "swin_prune", "num_heads": {layer: heads}} (the layers that
hold the heads, Swin's or MaxViT's); load replays it (the forward and the head count) before the
state_dict resizes the weights.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, TypedDict

import torch
from torch import nn

from edgekit.errors import ModelLoadError
from edgekit.io.models import register_surgery


class HeadCut(TypedDict):
    """A Swin attention layer that lost heads: its name, type, heads before and after."""

    layer: str
    type: str
    before: int
    after: int


class SwinSurgery(TypedDict):
    """A checkpoint's record of pruned Swin heads: layer name -> heads left."""

    op: str
    num_heads: dict[str, int]

SWIN_MODULE = "torchvision.models.swin_transformer"
SWIN_CLASS = "ShiftedWindowAttention"  # ShiftedWindowAttentionV2 subclasses it
MAXVIT_MODULE = "torchvision.models.maxvit"


def _is_class(module: Any, where: str, name: str) -> bool:
    return any(k.__module__ == where and k.__name__ == name for k in type(module).__mro__)


def is_window_attention(module: Any) -> bool:
    """Whether `module` is torchvision's ShiftedWindowAttention (or V2) with its qkv and proj."""
    return (_is_class(module, SWIN_MODULE, SWIN_CLASS)
            and isinstance(getattr(module, "qkv", None), nn.Linear)
            and isinstance(getattr(module, "proj", None), nn.Linear)
            and isinstance(getattr(module, "num_heads", None), int))


def is_relative_attention(module: Any) -> bool:
    """Whether `module` is MaxViT's RelativePositionalMultiHeadAttention with its to_qkv,
    merge, n_heads and head_dim."""
    return (_is_class(module, MAXVIT_MODULE, "RelativePositionalMultiHeadAttention")
            and isinstance(getattr(module, "to_qkv", None), nn.Linear)
            and isinstance(getattr(module, "merge", None), nn.Linear)
            and isinstance(getattr(module, "n_heads", None), int)
            and isinstance(getattr(module, "head_dim", None), int))


def is_partition_attention(module: Any) -> bool:
    """Whether `module` is MaxViT's PartitionAttentionLayer around a relative attention."""
    layers = getattr(module, "attn_layer", None)
    return (_is_class(module, MAXVIT_MODULE, "PartitionAttentionLayer")
            and isinstance(layers, nn.Sequential) and len(layers) > 1
            and is_relative_attention(layers[1]))


def is_head_attention(module: Any) -> bool:
    """A layer whose heads this module removes (Swin's attention, MaxViT's relative one)."""
    return is_window_attention(module) or is_relative_attention(module)


def handles(module: Any) -> bool:
    """Whether this module prunes `module`'s heads or keeps it as an opaque unit."""
    return is_head_attention(module) or is_partition_attention(module)


def heads_of(module: Any) -> int:
    return module.n_heads if is_relative_attention(module) else module.num_heads


def _set_heads(module: Any, count: int) -> None:
    if is_relative_attention(module):
        module.n_heads = count
    else:
        module.num_heads = count


def projections(module: Any) -> tuple[nn.Linear, nn.Linear]:
    """(the fused q/k/v Linear, the output Linear) of a head attention."""
    if is_relative_attention(module):
        return module.to_qkv, module.merge
    return module.qkv, module.proj


def head_layer(unit: Any) -> Any:
    """The layer holding the heads of an opaque unit (a Swin attention is its own)."""
    return unit.attn_layer[1] if is_partition_attention(unit) else unit


def is_v2(module: Any) -> bool:
    """V2: continuous position bias (cpb_mlp) and cosine attention (logit_scale)."""
    return isinstance(getattr(module, "cpb_mlp", None), nn.Sequential) and \
        isinstance(getattr(module, "logit_scale", None), nn.Parameter)


def head_dim_of(module: Any) -> int:
    """A head's width: kept after pruning (`head_dim`), else the input width // heads."""
    return int(getattr(module, "head_dim", None)
               or projections(module)[0].in_features // heads_of(module))


def window_layers(model: Any) -> list[tuple[str, Any]]:
    """The opaque units of `model`: Swin attentions and MaxViT PartitionAttentionLayers."""
    return [(name, m) for name, m in model.named_modules()
            if name and (is_window_attention(m) or is_partition_attention(m))]


def head_layers(model: Any) -> list[tuple[str, Any]]:
    """The layers whose heads are pruned: Swin attentions, MaxViT relative attentions."""
    return [(name, m) for name, m in model.named_modules() if name and is_head_attention(m)]


# ---------------------------------------------------------------- the head-aware forward
def window_attention(module: Any, input: torch.Tensor) -> torch.Tensor:
    """torchvision's `shifted_window_attention` (0.29) for `module` (a ShiftedWindowAttention or
    V2) with the heads' width num_heads × head_dim, which may be narrower than the input width C
    once heads are removed. Every other line is torchvision's."""
    import torch.nn.functional as F

    window_size, num_heads, head_dim = module.window_size, module.num_heads, module.head_dim
    qkv_bias, proj_bias = module.qkv.bias, module.proj.bias
    logit_scale = module.logit_scale if is_v2(module) else None
    training = module.training
    B, H, W, C = input.shape
    inner = num_heads * head_dim
    pad_r = (window_size[1] - W % window_size[1]) % window_size[1]
    pad_b = (window_size[0] - H % window_size[0]) % window_size[0]
    x = F.pad(input, (0, 0, 0, pad_r, 0, pad_b))
    _, pad_H, pad_W, _ = x.shape
    shift_size = list(module.shift_size)
    if window_size[0] >= pad_H:
        shift_size[0] = 0
    if window_size[1] >= pad_W:
        shift_size[1] = 0
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
    num_windows = (pad_H // window_size[0]) * (pad_W // window_size[1])
    x = x.view(B, pad_H // window_size[0], window_size[0], pad_W // window_size[1],
               window_size[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * num_windows, window_size[0] * window_size[1], C)
    if logit_scale is not None and qkv_bias is not None:
        qkv_bias = qkv_bias.clone()
        length = qkv_bias.numel() // 3
        qkv_bias[length:2 * length].zero_()
    qkv = F.linear(x, module.qkv.weight, qkv_bias)
    qkv = qkv.reshape(x.size(0), x.size(1), 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        logit_scale = torch.clamp(logit_scale, max=math.log(100.0)).exp()
        attn = attn * logit_scale
    else:
        q = q * head_dim ** -0.5
        attn = q.matmul(k.transpose(-2, -1))
    attn = attn + module.get_relative_position_bias()
    if sum(shift_size) > 0:
        attn_mask = _shift_mask(x, (pad_H, pad_W), window_size, shift_size, num_windows)
        attn = attn.view(x.size(0) // num_windows, num_windows, num_heads, x.size(1), x.size(1))
        attn = attn + attn_mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, num_heads, x.size(1), x.size(1))
    attn = F.softmax(attn, dim=-1)
    attn = F.dropout(attn, p=module.attention_dropout, training=training)
    x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), inner)
    x = F.linear(x, module.proj.weight, proj_bias)
    x = F.dropout(x, p=module.dropout, training=training)
    x = x.view(B, pad_H // window_size[0], pad_W // window_size[1], window_size[0],
               window_size[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, pad_H, pad_W, C)
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(shift_size[0], shift_size[1]), dims=(1, 2))
    return x[:, :H, :W, :].contiguous()


def _shift_mask(x: torch.Tensor, padded: tuple[int, int], window_size: list[int],
                shift_size: list[int], num_windows: int) -> torch.Tensor:
    """The shifted windows' attention mask, as torchvision builds it."""
    pad_H, pad_W = padded
    attn_mask = x.new_zeros((pad_H, pad_W))
    h_slices = ((0, -window_size[0]), (-window_size[0], -shift_size[0]), (-shift_size[0], None))
    w_slices = ((0, -window_size[1]), (-window_size[1], -shift_size[1]), (-shift_size[1], None))
    count = 0
    for h in h_slices:
        for w in w_slices:
            attn_mask[h[0]:h[1], w[0]:w[1]] = count
            count += 1
    attn_mask = attn_mask.view(pad_H // window_size[0], window_size[0],
                               pad_W // window_size[1], window_size[1])
    attn_mask = attn_mask.permute(0, 2, 1, 3).reshape(num_windows,
                                                      window_size[0] * window_size[1])
    attn_mask = attn_mask.unsqueeze(1) - attn_mask.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)


def relative_attention(module: Any, x: torch.Tensor) -> torch.Tensor:
    """torchvision's RelativePositionalMultiHeadAttention.forward (0.29) with the heads' output
    reshaped to n_heads × head_dim (narrower than the input width D once heads are removed)
    instead of D; the q·k scale stays the input width's, as built. Every other line is
    torchvision's."""
    B, G, P, D = x.shape
    H, DH = module.n_heads, module.head_dim
    qkv = module.to_qkv(x)
    q, k, v = torch.chunk(qkv, 3, dim=-1)
    q = q.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
    k = k.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
    v = v.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
    k = k * module.scale_factor
    dot_prod = torch.einsum("B G H I D, B G H J D -> B G H I J", q, k)
    pos_bias = module.get_relative_positional_bias()
    dot_prod = torch.nn.functional.softmax(dot_prod + pos_bias, dim=-1)
    out = torch.einsum("B G H I J, B G H J D -> B G H I D", dot_prod, v)
    out = out.permute(0, 1, 3, 2, 4).reshape(B, G, P, H * DH)
    return module.merge(out)


class HeadPrunedRelativeAttention:
    """Mixed into MaxViT's RelativePositionalMultiHeadAttention: `relative_attention`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relative_attention(self, x)


class HeadPrunedWindowAttention:
    """Mixed into a ShiftedWindowAttention(V2) whose heads may be fewer than its input width //
    head_dim: the same forward through `window_attention`, with `head_dim` kept."""

    head_dim: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return window_attention(self, x)


_CLASSES: dict[type, type] = {}


def make_head_aware(module: Any) -> None:
    """Give `module` (a ShiftedWindowAttention or V2, a MaxViT relative attention) the
    head-aware forward, in place: its class becomes a subclass with HeadPrunedWindowAttention's
    (HeadPrunedRelativeAttention's) forward (same name, parameters and state_dict keys) and it
    keeps its head width as `head_dim`."""
    base = type(module)
    mixin = HeadPrunedRelativeAttention if is_relative_attention(module) \
        else HeadPrunedWindowAttention
    if isinstance(module, mixin):
        return
    dim = head_dim_of(module)
    if base not in _CLASSES:
        _CLASSES[base] = type(base.__name__, (mixin, base),
                              {"__module__": __name__,
                               "__qualname__": f"{mixin.__name__}[{base.__name__}]"})
    module.__class__ = _CLASSES[base]
    module.head_dim = dim


# ---------------------------------------------------------------- choosing and removing heads
def head_scores(module: Any, importance: str) -> torch.Tensor:
    """One score per head from its q, k, v rows of qkv and its proj input columns: l1 Σ|w|,
    l2 Σw², taylor Σ|w·grad| (bn-scale: l1)."""
    h, d = heads_of(module), head_dim_of(module)
    qkv_linear, proj_linear = projections(module)

    def per_head(t: torch.Tensor) -> torch.Tensor:
        if importance == "l2":
            return t.pow(2)
        if importance == "taylor" and t.grad is not None:
            return (t * t.grad).abs()
        return t.abs()

    with torch.no_grad():
        qkv = per_head(qkv_linear.weight).sum(1).view(3, h, d).sum((0, 2))
        proj = per_head(proj_linear.weight).sum(0).view(h, d).sum(1)
    return qkv + proj


def remove_window_heads(module: Any, heads: list[int]) -> None:
    """Remove `heads` (indices) of one Swin or MaxViT attention layer in place: their q, k and
    v rows of qkv, their proj input columns, their bias (table column or cpb_mlp output,
    logit_scale); the head count follows, head_dim stays. Gradients (taylor) are cut alike."""
    from edgekit.passes.prune_graph import PruneError

    h, d = heads_of(module), head_dim_of(module)
    qkv, proj = projections(module)
    gone = sorted({int(i) for i in heads})
    if not gone:
        return
    if gone[0] < 0 or gone[-1] >= h or len(gone) >= h:
        raise PruneError(f"heads {heads} cannot be removed from {h} heads (at least one stays)",
                         hint="name head indices in [0, num_heads)")
    keep = torch.tensor([i for i in range(h) if i not in set(gone)])
    cols = (keep[:, None] * d + torch.arange(d)).flatten()
    rows = torch.cat([cols + part * h * d for part in range(3)])
    make_head_aware(module)

    def cut(owner: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
        old = getattr(owner, name)
        new = nn.Parameter(old.detach().index_select(dim, index).clone(),
                           requires_grad=old.requires_grad)
        if old.grad is not None:
            new.grad = old.grad.index_select(dim, index).clone()
        setattr(owner, name, new)

    cut(qkv, "weight", rows, 0)
    if qkv.bias is not None:
        cut(qkv, "bias", rows, 0)
    qkv.out_features = len(rows)
    cut(proj, "weight", cols, 1)
    proj.in_features = len(cols)
    if is_v2(module):
        last = module.cpb_mlp[-1]
        cut(last, "weight", keep, 0)
        if last.bias is not None:
            cut(last, "bias", keep, 0)
        last.out_features = len(keep)
        cut(module, "logit_scale", keep, 0)
    else:
        cut(module, "relative_position_bias_table", keep, 1)
    _set_heads(module, len(keep))


def prune_window_heads(model: Any, ratio: float, importance: str, ignored: set[Any],
                       notes: list[str]) -> list[HeadCut]:
    """Remove round(ratio × heads) heads of every Swin / MaxViT attention layer of `model` outside
    `ignored`, the least important by `importance`; returns {layer, type, before, after} rows
    of the layers that lost heads (and adds one note per rounding, naming its layers)."""
    from edgekit.passes.attn_prune import heads_to_remove

    rows: list[HeadCut] = []
    rounded: dict[str, list[str]] = {}  # a rounding note → the layers it applies to
    if importance == "bn-scale" and ratio > 0 and head_layers(model):
        notes.append("window attention heads have no BatchNorm: ranked by l1")
    for name, module in head_layers(model):
        if module in ignored or ratio <= 0:
            continue
        before = heads_of(module)
        n, note = heads_to_remove(before, ratio)
        if note:
            rounded.setdefault(note, []).append(name)
        if n == 0:
            continue
        scores = head_scores(module, importance)
        gone = torch.argsort(scores, stable=True)[:n].tolist()
        remove_window_heads(module, gone)
        rows.append({"layer": name, "type": f"{type(module).__name__} heads", "before": before,
                     "after": heads_of(module)})
    notes.extend(f"{', '.join(names)}: {note}" for note, names in rounded.items())
    return rows


# ---------------------------------------------------------------- the dependency graph
class _Opaque(torch.autograd.Function):
    """A Swin attention's output as one autograd node whose only input is the attention's
    input: the tracer sees neither the window reshapes nor the bias table."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:  # pragma: no cover - never called
        return None, None


@contextlib.contextmanager
def opaque(model: nn.Module) -> Iterator[list[Any]]:
    """While active, every Swin attention of `model` returns its output through _Opaque (enter
    it before Torch-Pruning registers its hooks: hooks run in registration order). Yields the
    layers."""
    layers = [m for _, m in window_layers(model)]

    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor):
            return None
        return _Opaque.apply(output.detach(), x)

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        yield layers
    finally:
        for h in handles:
            h.remove()


def pruners(model: nn.Module) -> dict[type, Any]:
    """customized_pruners for Torch-Pruning: each Swin attention class of `model` as one layer
    whose input and output are the residual width (never pruned: its groups are kept)."""
    import torch_pruning as tp

    classes = tuple({type(m) for _, m in window_layers(model)})
    if not classes:
        return {}

    class WindowAttentionPruner(tp.pruner.function.BasePruningFunc):
        TARGET_MODULES = classes

        def prune_out_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
            raise ValueError("a Swin attention's residual width is never pruned")

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer: nn.Module) -> int:
            return projections(head_layer(layer))[1].out_features

        def get_in_channels(self, layer: nn.Module) -> int:
            return projections(head_layer(layer))[0].in_features

    pruner = WindowAttentionPruner()
    return dict.fromkeys(classes, pruner)


KEPT_REASON = ("window attention {name} keeps its input and output width (the residual stream; "
               "its heads are pruned whole, before the channels)")
INSIDE_REASON = ("inside window attention {name}: its heads are pruned whole, its other "
                 "channels kept (the window partition hides them from the dependency graph)")


# ---------------------------------------------------------------- the surgery record
def surgery_record(num_heads: dict[str, int]) -> SwinSurgery:
    """What a checkpoint records of pruned Swin heads: layer name → heads left."""
    return {"op": "swin_prune", "num_heads": {str(k): int(v) for k, v in num_heads.items()}}


@register_surgery("swin_prune")
def replay_window_heads(model: Any, step: SwinSurgery) -> None:
    """On a freshly built architecture: the recorded layers get the head-aware forward and their
    head counts (their weights take the pruned sizes from the state_dict afterwards)."""
    from edgekit.passes.attn_prune import recorded_head_counts

    heads = recorded_head_counts(step, "swin_prune")
    for name, count in heads.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            module = None
        if not is_head_attention(module):
            raise ModelLoadError(f"the checkpoint pruned the attention heads of {name!r}, "
                                 "which this architecture does not have there",
                                 hint="pass the --arch the checkpoint was made from")
        make_head_aware(module)
        _set_heads(module, count)
