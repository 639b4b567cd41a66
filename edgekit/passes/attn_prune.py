"""Attention-head pruning with Torch-Pruning's multi-head support: heads removed whole.

What edgekit prunes in a transformer block: whole attention heads (the head's rows of q, k and v
in the fused `qkv` Linear and its input columns of the output `proj`; `num_heads` follows) and
the MLP's hidden channels (fc1 outputs / fc2 inputs, by the ordinary channel ratio). The residual
width (every attention `proj` and MLP `fc2` output, the patch/row embedding, LayerNorms and
positions) is kept: it is shared by every block, and a head keeps its `head_dim`.

Supported layout (edgekit.zoo.attention.Attention, timm's `Attention`): a module with a fused
`qkv` nn.Linear (out = 3 × num_heads × head_dim, columns [q | k | v], head h at h·head_dim of each
third), an output `proj` nn.Linear and int attributes `num_heads` and `head_dim`, whose forward
reshapes the heads' output to num_heads × head_dim. timm's Attention (timm 1.0) reshapes it to
the input width instead, so its heads cannot go without the residual width: the forward check
after pruning says so and points to --prune-heads 0, which still prunes the MLPs. Torch-Pruning is
told `num_heads={qkv: H}`, `prune_num_heads=True`, `prune_head_dims=False`; it maps a head's
`proj` columns to its q, k and v rows through the reshape/unbind it traces.

torch.nn.MultiheadAttention (torchvision's ViT, `nn.TransformerEncoderLayer`) is converted
first: its heads cannot be removed as it is (it requires embed_dim = num_heads × head_dim, and
Torch-Pruning's support for it narrows every head and re-slices channels across heads), so each
one used as self-attention becomes edgekit.zoo.attention.FusedSelfAttention, the same weights in
the fused-qkv layout, checked to give the same outputs (fuse_multihead_attention); the checkpoint
records the conversion ({"op": "mha_fuse", "layers": [...]}) and load replays it.

Not supported, and said so with the module's name (bad input, unless the module is in the ignore
list): a MultiheadAttention that is not plain self-attention (cross-attention, masks, kdim/vdim,
bias_k/bias_v), and any other module that carries a head count without the fused layout
(separate q/k/v projections, a functional attention), whose heads the graph cannot see.
torchvision's Swin attention (ShiftedWindowAttention, V2), which splits its heads inside a function,
and MaxViT's (RelativePositionalMultiHeadAttention in a PartitionAttentionLayer) have their own
step: edgekit.passes.swin_prune removes their heads before the channels are pruned.

A head ratio that does not give a whole number of heads is rounded to the nearest (at least one
head stays) and the rounding is reported as a note.

A pruned checkpoint records the new head counts as a structural edit ({"op": "attn_prune",
"num_heads": {layer: heads}}, replayed on load before the state_dict resizes qkv and proj).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgekit.errors import InputError, ModelLoadError
from edgekit.io.models import register_surgery

SUPPORTED = ("attention with a fused `qkv` nn.Linear, an output `proj` nn.Linear and int "
             "`num_heads`/`head_dim` attributes (edgekit.zoo.attention.Attention; timm's "
             "Attention for MLP pruning with --prune-heads 0)")
_HEAD_COUNT_ATTRS = ("num_heads", "n_heads", "n_head", "num_attention_heads", "heads")


def is_supported(module: Any) -> bool:
    """Whether `module` has the fused-qkv layout whose heads Torch-Pruning removes whole (Swin's
    window attention has its own step, edgekit.passes.swin_prune)."""
    from torch import nn

    from edgekit.passes.swin_prune import handles

    if handles(module):
        return False
    qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
    heads, head_dim = getattr(module, "num_heads", None), getattr(module, "head_dim", None)
    return (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)
            and isinstance(heads, int) and isinstance(head_dim, int) and heads >= 1
            and qkv.out_features == 3 * heads * head_dim and proj.in_features == heads * head_dim)


def _unsupported_reason(module: Any) -> str | None:
    """Why an attention-like module's heads cannot be pruned, or None when it is not one."""
    from torch import nn

    from edgekit.passes.swin_prune import handles

    if isinstance(module, nn.MultiheadAttention):  # not converted: it was in the ignore list
        return None
    if is_supported(module) or handles(module):  # Swin, MaxViT: edgekit.passes.swin_prune
        return None
    # A head count marks multi-head attention; a class name alone does not (a CNN's channel
    # "attention", squeeze-excitation, has no heads and prunes as ordinary layers).
    count = next((a for a in _HEAD_COUNT_ATTRS if isinstance(getattr(module, a, None), int)
                  and not isinstance(getattr(module, a), bool)), None)
    if count is None:
        return None
    what = f"{type(module).__name__} ({count}={getattr(module, count)})"
    return (f"{what} splits its projections into heads in code the dependency graph cannot "
            "see (no fused `qkv`/`proj` Linears with num_heads/head_dim)")


def fuse_multihead_attention(model: Any, example: Any, ignore: Any = ()) -> list[str]:
    """Replace, in place, every torch.nn.MultiheadAttention of `model` (outside the `ignore`
    name patterns) by FusedSelfAttention with the same weights, and check on `example` that the
    model's output is unchanged (to 1e-5). Returns the names converted. A MultiheadAttention
    that cannot be converted, or is not called as self-attention, is put back and named in a
    PruneError with the way to keep it whole."""
    import fnmatch

    import torch
    from torch import nn

    from edgekit.passes.prune import PruneError
    from edgekit.zoo.attention import FusedSelfAttention

    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.MultiheadAttention)
             and not any(fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(name, pat + ".*")
                         for pat in ignore)]
    if not found:
        return []

    def refuse(name: str, why: str) -> PruneError:
        return PruneError(f"the pruner cannot trace the attention in {name}: "
                          f"torch.nn.MultiheadAttention that {why}; edgekit converts plain "
                          "self-attention to its fused-qkv layout, and it supports " + SUPPORTED,
                          hint=f"keep it whole with --prune-ignore '{name}'")

    for name, mha in found:
        why = FusedSelfAttention.cannot_convert(mha)
        if why:
            raise refuse(name, why.removeprefix("it "))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        before = model(example)
    swapped = []
    for name, mha in found:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, FusedSelfAttention.from_mha(mha))
        swapped.append((parent, attr, mha))
    for m in model.modules():  # nested tensors would bypass the converted layers
        if isinstance(m, nn.TransformerEncoder):
            m.use_nested_tensor = False
    try:
        with torch.no_grad():
            after = model(example)
        if not (isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor)
                and torch.allclose(before, after, atol=1e-5, rtol=1e-4)):
            raise RuntimeError("the model's outputs changed")
    except Exception as exc:  # noqa: BLE001 - any failure of the converted forward: put it back
        for parent, attr, mha in swapped:
            setattr(parent, attr, mha)
        raise refuse(found[0][0] if len(found) == 1 else ", ".join(n for n, _ in found),
                     f"is not called as plain self-attention ({exc})") from None
    finally:
        model.train(was_training)
    return [name for name, _ in found]


@register_surgery("mha_fuse")
def replay_fused_attention(model: Any, step: dict[str, Any]) -> None:
    """Convert the recorded MultiheadAttention layers on a freshly built architecture (their
    fused qkv/proj weights come from the state_dict afterwards)."""
    from torch import nn

    from edgekit.zoo.attention import FusedSelfAttention

    layers = step.get("layers")
    if not isinstance(layers, list) or not all(isinstance(n, str) and n for n in layers):
        raise ModelLoadError("the checkpoint's mha_fuse record is malformed (layers must be a "
                             "list of layer names)",
                             hint="the file is damaged or was not written by edgekit")
    for name in layers:
        try:
            mha = model.get_submodule(name)
        except AttributeError:
            mha = None
        if not isinstance(mha, nn.MultiheadAttention):
            raise ModelLoadError(f"the checkpoint converted {name!r} from MultiheadAttention, "
                                 "which this architecture does not have there",
                                 hint="pass the --arch the checkpoint was made from")
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, FusedSelfAttention.from_mha(mha))
    for m in model.modules():
        if isinstance(m, nn.TransformerEncoder):
            m.use_nested_tensor = False


def fused_surgery_record(layers: list[str]) -> dict[str, Any]:
    """What a checkpoint records of converted MultiheadAttention layers."""
    return {"op": "mha_fuse", "layers": list(layers)}


@dataclass(frozen=True)
class AttentionLayer:
    name: str
    module: Any
    heads_before: int


def find_attention(model: Any, ignored: set[Any]) -> list[AttentionLayer]:
    """The supported attention layers of `model`; raises PruneError naming the first attention
    module that is neither supported nor in `ignored` (a module or one of its parents)."""
    from edgekit.passes.prune import PruneError

    found: list[AttentionLayer] = []
    for name, module in model.named_modules():
        if module in ignored or not name:
            continue
        if not is_supported(module) and any(is_supported(m) for m in module.modules()):
            continue  # a block or model holding supported attention
        if is_supported(module):
            found.append(AttentionLayer(name, module, module.num_heads))
            continue
        reason = _unsupported_reason(module)
        if reason:
            raise PruneError(f"the pruner cannot trace the attention in {name}: {reason}; "
                             f"it supports {SUPPORTED}",
                             hint=f"keep it whole with --prune-ignore '{name}', or write it with "
                                  "edgekit.zoo.attention.Attention (timm's layout)")
    return found


def heads_to_remove(heads: int, ratio: float) -> tuple[int, str | None]:
    """How many of `heads` a head ratio removes: ratio × heads rounded to the nearest whole
    head, at least one kept; and a note when that is not exactly ratio × heads."""
    exact = heads * ratio
    n = min(heads - 1, max(0, math.floor(exact + 0.5)))
    if math.isclose(exact, n, abs_tol=1e-9):
        return n, None
    return n, (f"{heads} heads × head ratio {ratio:g} = {exact:g} is not a whole number of "
               f"heads: removing {n}, keeping {heads - n}")


def torch_pruning_options(layers: list[AttentionLayer], ratio: float,
                          notes: list[str]) -> dict[str, Any]:
    """BasePruner keyword arguments that remove round(ratio × H) heads of every layer.

    Torch-Pruning removes ceil(ratio × H) heads per layer (local pruning): each layer gets the
    ratio (n - 0.5) / H, whose ceiling is exactly n whatever the float rounding of n / H."""
    num_heads, ratios = {}, {}
    for layer in layers:
        qkv = layer.module.qkv
        num_heads[qkv] = layer.module.num_heads
        n, note = heads_to_remove(layer.module.num_heads, ratio)
        if note:
            notes.append(f"{layer.name}: {note}")
        ratios[qkv] = (n - 0.5) / layer.module.num_heads if n else 0.0
    return {"num_heads": num_heads, "prune_num_heads": True, "prune_head_dims": False,
            "head_pruning_ratio_dict": ratios}


def torch_pruning_extras(model: Any, layers: list[AttentionLayer]) -> dict[str, Any]:
    """unwrapped_parameters for an attention model (none otherwise)."""
    found = unwrapped_parameters(model) if layers else []
    return {"unwrapped_parameters": found} if found else {}


def unwrapped_parameters(model: Any) -> list[tuple[Any, int]]:
    """Parameters outside standard layers (positions, class tokens), with their channel axis:
    the last, the residual width (which attention pruning keeps). Said explicitly, so
    Torch-Pruning does not warn that it guessed."""
    from torch import nn

    standard = (nn.modules.conv._ConvNd, nn.Linear, nn.LayerNorm, nn.modules.batchnorm._BatchNorm,
                nn.GroupNorm, nn.Embedding, nn.RNNBase, nn.MultiheadAttention, nn.PReLU)
    return [(p, p.dim() - 1) for m in model.modules() if not isinstance(m, standard)
            for p in m.parameters(recurse=False) if p.dim() > 1]


def residual_outputs(layers: list[AttentionLayer]) -> list[Any]:
    """The layers that write the residual stream from inside attention (`proj`): kept, so
    Torch-Pruning leaves the residual width (and each head's head_dim) alone."""
    return [layer.module.proj for layer in layers]


def sync_head_counts(layers: list[AttentionLayer]) -> list[dict[str, Any]]:
    """After Torch-Pruning cut qkv/proj: set each layer's num_heads from its qkv width and return
    {layer, type, before, after} rows for the layers that lost heads."""
    from edgekit.passes.prune import PruneError

    rows = []
    for layer in layers:
        module = layer.module
        heads, rest = divmod(module.qkv.out_features, 3 * module.head_dim)
        if rest or heads < 1 or module.proj.in_features != heads * module.head_dim:
            raise PruneError(f"after pruning, {layer.name} has qkv {module.qkv.out_features} and "
                             f"proj {module.proj.in_features} wide, not whole heads of "
                             f"{module.head_dim}", hint=f"--prune-ignore '{layer.name}'")
        module.num_heads = heads
        if heads != layer.heads_before:
            rows.append({"layer": layer.name, "type": f"{type(module).__name__} heads",
                         "before": layer.heads_before, "after": heads})
    return rows


def remove_heads(model: Any, example: Any, attention: Any, heads: list[int]) -> None:
    """Remove the given heads of one supported attention layer in place, through Torch-Pruning's
    dependency graph (the same index mapping the pruner uses): the heads' q, k, v rows of qkv
    and their proj input columns go, num_heads follows. For choosing heads by hand (tests,
    experiments); `prune_model` chooses them by importance."""
    import torch
    import torch_pruning as tp

    if not is_supported(attention):
        raise InputError(f"{type(attention).__name__} is not {SUPPORTED}")
    h, d = attention.num_heads, attention.head_dim
    gone = sorted({int(i) for i in heads})
    if not gone or gone[0] < 0 or gone[-1] >= h or len(gone) >= h:
        raise InputError(f"heads {heads} cannot be removed from {h} heads (at least one stays)")
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=example, unwrapped_parameters=unwrapped_parameters(model) or None)
    columns = [i for head in gone for i in range(head * d, (head + 1) * d)]
    group = graph.get_pruning_group(attention.proj, tp.prune_linear_in_channels, columns)
    group.prune()
    attention.num_heads = h - len(gone)
    with torch.no_grad():
        model(example)


# ---------------------------------------------------------------- the surgery record
def surgery_record(num_heads: dict[str, int]) -> dict[str, Any]:
    """What a checkpoint records of pruned heads: layer name → heads left."""
    return {"op": "attn_prune", "num_heads": {str(k): int(v) for k, v in num_heads.items()}}


def recorded_head_counts(step: Any, op: str) -> dict[str, int]:
    """A checkpoint's recorded head counts (`num_heads`: layer name -> heads left), checked."""
    heads = step.get("num_heads")
    if not isinstance(heads, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
            for k, v in heads.items()):
        raise ModelLoadError(f"the checkpoint's {op} record is malformed (num_heads must "
                             "map layer names to positive head counts)",
                             hint="the file is damaged or was not written by edgekit")
    return heads


@register_surgery("attn_prune")
def replay_head_counts(model: Any, step: dict[str, Any]) -> None:
    """Set the recorded head counts on a freshly built architecture (qkv and proj take their
    pruned sizes from the state_dict afterwards)."""
    from torch import nn

    heads = recorded_head_counts(step, "attn_prune")
    for name, count in heads.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ModelLoadError(f"the checkpoint pruned heads of {name!r}, which the "
                                 "architecture does not have",
                                 hint="pass the --arch the checkpoint was made from") from None
        if not (isinstance(getattr(module, "qkv", None), nn.Linear)
                and isinstance(getattr(module, "num_heads", None), int)):
            raise ModelLoadError(f"the checkpoint pruned heads of {name!r}, which is a "
                                 f"{type(module).__name__} without a fused qkv in this "
                                 "architecture", hint="pass the --arch the checkpoint was made from")
        module.num_heads = count
