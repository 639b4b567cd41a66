"""MACs and parameters, counted one way everywhere (before and after every pass).

MACs are multiply-accumulates of one forward pass at batch 1 with the spec's input shape:
Conv2d: out_h·out_w·out_c·(in_c/groups)·k_h·k_w; Linear: in·out per row; LSTM/GRU: per step and
direction, gates·hidden·(input + hidden) (projections included); attention (edgekit's fused
qkv, torch.nn.MultiheadAttention, Swin's window attention): its projections and q·kᵀ, weights·v
(per window for Swin, over the padded map). Pooling, activations, BatchNorm
and element-wise ops are not counted (they fold away or are memory-bound)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def forward_hooks(hooks: Iterable[tuple[Any, Callable[..., Any]]]) -> Iterator[None]:
    """Forward hooks `(module, hook)` registered for the duration of the block."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def probe(model: Any, spec: Any, hooks: Iterable[tuple[Any, Callable[..., Any]]]) -> None:
    """One forward pass of a zero sample of `spec`'s shape (batch 1) in eval mode, without
    gradients, with `hooks` attached; the model's train/eval mode is restored after."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with forward_hooks(hooks), torch.no_grad():
            model(torch.zeros(1, *spec.shape[1:]))
    finally:
        model.train(was_training)


def _rnn_macs(mod: Any, x: Any) -> int:
    """An RNN/LSTM/GRU's multiply-accumulates over its input's steps (one sample)."""
    steps = x.shape[1] if mod.batch_first else x.shape[0]
    if x.dim() == 2:
        steps = x.shape[0]
    gates = {"LSTM": 4, "GRU": 3}.get(mod.mode, 1)
    dirs = 2 if mod.bidirectional else 1
    out_size = mod.proj_size or mod.hidden_size
    total = 0
    for layer in range(mod.num_layers):
        in_size = mod.input_size if layer == 0 else out_size * dirs
        per_step = gates * mod.hidden_size * (in_size + out_size)
        if mod.proj_size:
            per_step += mod.hidden_size * mod.proj_size
        total += per_step * dirs
    return total * steps


def _mha_macs(mod: Any, inp: tuple) -> int:
    """torch's MultiheadAttention calls its projections' weights, not its Linears: the q/k/v and
    output projections, with q·kᵀ and weights·v (one sample)."""
    if not inp:
        return 0
    seq_dim = 1 if mod.batch_first and inp[0].dim() == 3 else 0
    tokens = inp[0].shape[seq_dim]
    sources = inp[1].shape[seq_dim] if len(inp) > 1 else tokens
    e = mod.embed_dim
    return 2 * tokens * e * e + sources * (mod.kdim + mod.vdim) * e + 2 * tokens * sources * e


def _window_macs(mod: Any, inp: tuple) -> int:
    """Swin's attention calls its qkv/proj weights, not its Linears: those, with q·kᵀ and
    weights·v in each window, over the padded feature map (one sample)."""
    if not inp or inp[0].dim() != 4:
        return 0
    (wh, ww), (h, w) = mod.window_size, inp[0].shape[1:3]
    tokens = -(-h // wh) * wh * -(-w // ww) * ww
    inner = mod.qkv.out_features // 3
    return (tokens * mod.qkv.in_features * mod.qkv.out_features
            + tokens * inner * mod.proj.out_features + 2 * tokens * wh * ww * inner)


def model_cost(model: Any, spec: Any) -> dict[str, int]:
    """{'macs': int, 'params': int, 'conv_macs': int} for one sample of `spec`'s shape."""
    import torch
    from torch import nn

    counts = {"macs": 0, "conv_macs": 0}

    def conv_hook(mod: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        k = mod.kernel_size[0] * mod.kernel_size[1]
        macs = out[0].numel() * (mod.in_channels // mod.groups) * k
        counts["macs"] += macs
        counts["conv_macs"] += macs

    def linear_hook(mod: nn.Linear, inp: tuple, _out: Any) -> None:
        rows = inp[0][0].numel() // mod.in_features
        counts["macs"] += rows * mod.in_features * mod.out_features

    def rnn_hook(mod: nn.RNNBase, inp: tuple, _out: Any) -> None:
        counts["macs"] += _rnn_macs(mod, inp[0])

    def attention_hook(mod: Any, inp: tuple, _out: Any) -> None:
        # q·kᵀ and weights·v: 2 × tokens² × heads × head_dim (the projections are Linears)
        tokens = inp[0].shape[-2]
        counts["macs"] += 2 * tokens * tokens * mod.num_heads * mod.head_dim

    def mha_hook(mod: nn.MultiheadAttention, inp: tuple, _out: Any) -> None:
        counts["macs"] += _mha_macs(mod, inp)

    def window_hook(mod: Any, inp: tuple, _out: Any) -> None:
        counts["macs"] += _window_macs(mod, inp)

    from edgekit.passes.attn_prune import is_supported
    from edgekit.passes.swin_prune import is_window_attention

    hooks = []
    for m in model.modules():
        if is_supported(m):
            hooks.append((m, attention_hook))
        if is_window_attention(m):
            hooks.append((m, window_hook))
        if isinstance(m, nn.MultiheadAttention):
            hooks.append((m, mha_hook))
        if isinstance(m, nn.Conv2d):
            hooks.append((m, conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append((m, linear_hook))
        elif isinstance(m, nn.RNNBase):
            hooks.append((m, rnn_hook))
    probe(model, spec, hooks)
    params = sum(p.numel() for p in model.parameters())
    return {"macs": int(counts["macs"]), "conv_macs": int(counts["conv_macs"]), "params": int(params)}
