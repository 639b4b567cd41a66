"""The zoo's attention models: a small ViT and a conv + attention hybrid (the attention counterpart
of cnn_gru), built from one pre-norm transformer block.

The attention layer has timm's layout (one fused `qkv` Linear producing q, k, v for every head,
`num_heads` and `head_dim` attributes, an output `proj` Linear), written out as MatMul → Softmax
→ MatMul so that the exported ONNX graph shows it plainly. Why not nn.MultiheadAttention: its
heads cannot be removed (it requires embed_dim == num_heads × head_dim, the residual width), and
Torch-Pruning's support for it shrinks the embedding width and with it every head's dimension,
re-slicing channels across heads. With the fused `qkv` Linear, Torch-Pruning removes heads whole
(`num_heads={qkv: H}`, `prune_num_heads=True`): edgekit.passes.attn_prune.
Forward passes have no data-dependent Python, so both export with a dynamic batch dimension.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekit.zoo.models import conv_stem


class Attention(nn.Module):
    """Multi-head self-attention over (B, N, dim) tokens (timm's layout: qkv → heads → proj).

    qkv's output columns are [q | k | v], each `num_heads` blocks of `head_dim` columns: head h
    owns columns h·head_dim:(h+1)·head_dim of each third, and proj's input columns of the same
    range. Removing a head removes those rows of qkv and those columns of proj.
    """

    def __init__(self, dim: int, num_heads: int = 4, head_dim: int | None = None) -> None:
        super().__init__()
        self.num_heads = int(num_heads)
        self.head_dim = int(head_dim or dim // num_heads)
        self.scale = self.head_dim ** -0.5
        inner = self.num_heads * self.head_dim
        self.qkv = nn.Linear(dim, 3 * inner)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                              # each (B, heads, N, head_dim)
        weights = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj(out)


class Mlp(nn.Module):
    """fc1 → GELU → fc2; fc1's outputs are the MLP hidden channels the pruner removes."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer encoder block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _Encoder(nn.Module):
    """Tokens (B, N, dim) + learned positions → blocks → LayerNorm → mean over tokens → head."""

    def __init__(self, tokens: int, dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 num_classes: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*(Block(dim, num_heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.blocks(tokens + self.pos_embed))
        return self.head(x.mean(dim=1))


class ViTTiny(_Encoder):
    """A small ViT for 28×28 images: 4×4 patches (a stride-4 conv) → 49 tokens of `dim`, learned
    positions, `depth` pre-norm blocks of `num_heads` heads, mean-pooled tokens, linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 patch_size: int = 4, dim: int = 64, depth: int = 3, num_heads: int = 4,
                 mlp_ratio: float = 2.0) -> None:
        side = image_size // patch_size
        super().__init__(side * side, dim, depth, num_heads, mlp_ratio, num_classes)
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(self.patch_embed(x).flatten(2).transpose(1, 2))


class ConvAttn(_Encoder):
    """Hybrid: cnn_gru's conv stem (conv 3×3 + BN + ReLU + pool, twice: 28→7), its 7×7 map read
    as 7 rows, each row's C·W features projected to `dim` (`embed`, a (1, W) conv), then a small
    transformer encoder instead of the GRU; mean over rows, linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1,
                 channels: tuple[int, int] | list[int] = (16, 32), image_size: int = 28,
                 dim: int = 64, depth: int = 2, num_heads: int = 4, mlp_ratio: float = 2.0) -> None:
        c1, c2 = (int(c) for c in channels)
        side = image_size // 4
        super().__init__(side, dim, depth, num_heads, mlp_ratio, num_classes)
        self.features = conv_stem(in_channels, c1, c2)
        # A Linear over each row's C·W features (SEQUENCE_LAYOUT), written as a (1, W) conv:
        # the same map, and Torch-Pruning follows conv → conv channels without a reshape.
        self.embed = nn.Conv2d(c2, dim, kernel_size=(1, side))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(self.embed(self.features(x)).flatten(2).transpose(1, 2))


class FusedSelfAttention(Attention):
    """A `torch.nn.MultiheadAttention` used as self-attention (query, key and value the same
    tensor, no masks), rewritten in the fused-qkv layout above with the same weights and the
    same outputs, so that its heads can be pruned whole (edgekit.passes.attn_prune).

    It keeps MultiheadAttention's call signature and returns `(output, None)` (no attention
    weights), as torchvision's ViT and `nn.TransformerEncoderLayer` call it with
    `need_weights=False`. `_qkv_same_embed_dim = False` keeps `nn.TransformerEncoderLayer` off
    its fused inference kernel, which reads MultiheadAttention's own parameters; the layer then
    runs its ordinary path, through this module. Dropout on the attention weights is not kept
    (it is inactive in eval mode, and distillation trains without it)."""

    _qkv_same_embed_dim = False

    def __init__(self, dim: int, num_heads: int, batch_first: bool = True) -> None:
        super().__init__(dim, num_heads)
        self.batch_first = bool(batch_first)

    @staticmethod
    def cannot_convert(mha: nn.MultiheadAttention) -> str | None:
        """Why this MultiheadAttention has no fused-qkv equivalent, or None."""
        if not mha._qkv_same_embed_dim:
            return "its key/value widths differ from the embedding width (kdim/vdim)"
        if mha.bias_k is not None or mha.bias_v is not None:
            return "it adds bias_k/bias_v to the sequence"
        if mha.add_zero_attn:
            return "it adds a zero attention position (add_zero_attn)"
        return None

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> FusedSelfAttention:
        """The same attention with MultiheadAttention's weights (no bias becomes a zero bias)."""
        fused = cls(mha.embed_dim, mha.num_heads, batch_first=mha.batch_first)
        weight = mha.in_proj_weight
        fused = fused.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            fused.qkv.weight.copy_(weight)
            fused.qkv.bias.copy_(mha.in_proj_bias if mha.in_proj_bias is not None
                                 else torch.zeros_like(fused.qkv.bias))
            fused.proj.weight.copy_(mha.out_proj.weight)
            fused.proj.bias.copy_(mha.out_proj.bias if mha.out_proj.bias is not None
                                  else torch.zeros_like(fused.proj.bias))
        return fused.train(mha.training)

    # What nn.TransformerEncoder(Layer) reads of its self_attn before choosing a path.
    @property
    def in_proj_weight(self) -> torch.Tensor:
        return self.qkv.weight

    @property
    def in_proj_bias(self) -> torch.Tensor:
        return self.qkv.bias

    @property
    def out_proj(self) -> nn.Linear:
        return self.proj

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None,  # type: ignore[override]
                value: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None,
                need_weights: bool = True, attn_mask: torch.Tensor | None = None,
                average_attn_weights: bool = True, is_causal: bool = False
                ) -> tuple[torch.Tensor, None]:
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise RuntimeError("FusedSelfAttention is self-attention: key and value must be the "
                               "query tensor itself")
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise RuntimeError("FusedSelfAttention takes no attention or padding mask")
        x = query if query.dim() == 3 else query.unsqueeze(1 if not self.batch_first else 0)
        if not self.batch_first:
            x = x.transpose(0, 1)
        out = super().forward(x)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if query.dim() != 3:
            out = out.squeeze(1 if not self.batch_first else 0)
        return out, None
