"""The depthwise-separable module and the maths that initialises it from a k×k conv.

At each output pixel a conv computes y = W·p + b, where p stacks the k² input values of every
input channel under the kernel (in·k² values) and W is out × in·k². The substitute computes
y = P·(D_blk·p) + b: D_blk is block-diagonal (input channel i's r depthwise filters D_i act on
its own k² values only) and P is the pointwise conv. So Ŵ = P·D_blk, and per input channel the
slice W[:, i] (out × k²) is approximated by P_i·D_i, a rank-r product.

1. `factorize`: truncated SVD of every slice (Eckart–Young: the best rank-r fit in weight space),
   split U√S | √S·Vᵀ so both factors start at the same scale. Exact at r = min(out, k²).
2. `refine` (when training images are available): what matters is the output, not the weights.
   With C the covariance and μ the mean of real input patches, the output error of Ŵ is
   tr((W − Ŵ) C (W − Ŵ)ᵀ) once the bias absorbs the mean error, b̂ = b + (W − Ŵ)μ. Alternating
   least squares lowers it from the SVD start: P given D is a linear regression; D given P is one
   too (its normal matrix is (PᵀP)_{ij,i'j'}·C_{ik,i'k'}). Each step is an exact minimiser, so
   the error never rises; at full rank the SVD is already exact and stays so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekit.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "none": nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish,
}
# Refinement works on (in·k²)² moment matrices; above this size only the SVD is used.
MAX_REFINE_FEATURES = 2304


class ConvGeometry(TypedDict):
    """The constructor arguments of a DepthwiseSeparable that replaces a conv (rank aside)."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: str | tuple[int, ...]
    dilation: tuple[int, ...]
    bias: bool
    padding_mode: str


class FactorInit(TypedDict, total=False):
    """How a substitute was initialised (DepthwiseSeparable.from_conv): SVD, or SVD refined on
    data; its relative weight error, and its relative output error on the data (None without)."""

    init: str
    init_error: float
    output_error: float | None


class DepthwiseSeparable(nn.Module):
    """depthwise k×k (groups=in, in → in·r) → [BatchNorm → activation] → pointwise 1×1 (in·r → out).

    Without BatchNorm and activation (the default) it is a linear factorisation of a k×k conv and
    can reproduce one exactly. Exports to ONNX as two Conv nodes, the first with group=in.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, rank: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", bn: bool = False, activation: str = "none") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.rank = rank
        mid = in_channels * rank
        self.depthwise = nn.Conv2d(in_channels, mid, kernel_size, stride=stride, padding=padding,
                                   dilation=dilation, groups=in_channels, bias=False,
                                   padding_mode=padding_mode)
        self.norm = nn.BatchNorm2d(mid) if bn else nn.Identity()
        self.act = ACTIVATIONS[activation]()
        self.pointwise = nn.Conv2d(mid, out_channels, 1, bias=bias)

    @property
    def in_channels(self) -> int:
        return self.depthwise.in_channels

    @property
    def out_channels(self) -> int:
        return self.pointwise.out_channels

    @property
    def linear(self) -> bool:
        """True when nothing non-linear sits between the two convs (refinement applies)."""
        return isinstance(self.act, nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.act(self.norm(self.depthwise(x))))

    def extra_repr(self) -> str:
        return f"rank={self.rank}"

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank: int, *, bn: bool = False, activation: str = "none",
                  moments: PatchMoments | None = None,
                  iterations: int = 10) -> tuple[DepthwiseSeparable, FactorInit]:
        """The substitute for `conv`, initialised from its weights (SVD, then refined on
        `moments` of real inputs when given). Returns it and {'init', 'init_error' (relative
        Frobenius weight error), 'output_error' (relative RMS output error on the moments'
        data, None without them)}."""
        check_rank(conv, rank)
        refine_here = moments is not None and activation == "none"
        geometry = conv_geometry(conv)
        if refine_here:
            geometry["bias"] = True  # the bias absorbs the mean of the output error
        module = cls(**geometry, rank=rank, bn=bn, activation=activation)
        module.to(device=conv.weight.device, dtype=conv.weight.dtype)
        weight = conv.weight.detach().to(torch.float64)
        bias = conv.bias.detach().to(torch.float64) if conv.bias is not None else None
        depthwise, pointwise, _ = factorize(weight, rank)
        new_bias = bias
        info: FactorInit = {"init": "svd"}
        if refine_here:
            depthwise, pointwise, new_bias = refine(weight, bias, depthwise, pointwise, moments,
                                                    iterations)
            info["init"] = f"svd+data ({moments.count:,} patches)"
        with torch.no_grad():
            module.depthwise.weight.copy_(depthwise)
            module.pointwise.weight.copy_(pointwise)
            if module.pointwise.bias is not None:
                module.pointwise.bias.copy_(new_bias if new_bias is not None else 0.0)
            if bn and moments is not None:
                _identity_batchnorm(module.norm, depthwise, moments)
        approx = compose(module.depthwise.weight.detach().double(),
                         module.pointwise.weight.detach().double(), weight.shape)
        info["init_error"] = float((approx - weight).norm() / weight.norm()) \
            if weight.norm() > 0 else 0.0
        info["output_error"] = None
        if moments is not None and module.linear:
            fitted_bias = module.pointwise.bias.detach().double() \
                if module.pointwise.bias is not None else None
            info["output_error"] = output_error(weight, bias, approx, fitted_bias, moments)
        module.train(conv.training)
        return module, info


def _identity_batchnorm(norm: nn.BatchNorm2d, depthwise: torch.Tensor,
                        moments: PatchMoments) -> None:
    """Start the BatchNorm as the identity on real data: running statistics are the depthwise
    outputs' mean and variance, and the affine parameters undo the normalisation. Eval mode is
    then exactly the linear init, and train mode (batch statistics) close to it."""
    mid, _, kh, kw = depthwise.shape
    in_c = moments.mean.shape[0] // (kh * kw)
    rank = mid // in_c
    d = depthwise.reshape(in_c, rank, kh * kw).to(torch.float64)
    mean = torch.einsum("irk,ik->ir", d, moments.mean.reshape(in_c, kh * kw)).reshape(-1)
    cov = moments.cov.reshape(in_c, kh * kw, in_c, kh * kw)
    diag = cov[torch.arange(in_c), :, torch.arange(in_c), :]  # (in, k², k²): C_ii blocks
    var = torch.einsum("irk,ikl,irl->ir", d, diag, d).reshape(-1).clamp_min(0)
    norm.running_mean.copy_(mean)
    norm.running_var.copy_(var)
    norm.weight.copy_((var + norm.eps).sqrt())
    norm.bias.copy_(mean)


def conv_geometry(conv: nn.Conv2d) -> ConvGeometry:
    """The constructor arguments of a DepthwiseSeparable that replaces `conv` (rank aside)."""
    padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
    return {"in_channels": conv.in_channels, "out_channels": conv.out_channels,
            "kernel_size": tuple(conv.kernel_size), "stride": tuple(conv.stride),
            "padding": padding, "dilation": tuple(conv.dilation), "bias": conv.bias is not None,
            "padding_mode": conv.padding_mode}


def max_rank(conv: nn.Conv2d) -> int:
    """The rank at which the substitution is exact: min(out, k_h·k_w)."""
    return min(conv.out_channels, conv.kernel_size[0] * conv.kernel_size[1])


def check_rank(conv: nn.Conv2d, rank: int, name: str = "this conv") -> None:
    if not 1 <= rank <= max_rank(conv):
        k2 = conv.kernel_size[0] * conv.kernel_size[1]
        raise ConfigError(
            f"dwsep rank {rank} is not possible for {name}: it must lie in "
            f"1..min(out={conv.out_channels}, k²={k2}) = {max_rank(conv)}",
            hint=f"use a rank of at most {max_rank(conv)} (rank 'full' in a recipe is exact per "
                 "layer), or exclude the layer")


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at dotted `name` inside `model` (works for Sequential children too)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


# ---------------------------------------------------------------- weight-space factorisation
def factorize(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Truncated SVD of each input channel's slice W[:, i] (out × k²).

    Returns (depthwise weight (in·r, 1, kh, kw), pointwise weight (out, in·r, 1, 1), relative
    Frobenius error). Depthwise output channel i·r + j is input channel i's j-th singular filter,
    which is how PyTorch orders the outputs of a grouped conv with groups=in.
    """
    out_c, in_c, kh, kw = weight.shape
    w = weight.detach().to(torch.float64).permute(1, 0, 2, 3).reshape(in_c, out_c, kh * kw)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (in, out, m), (in, m), (in, m, k²)
    root = s[:, :rank].sqrt()
    pointwise = u[:, :, :rank] * root[:, None, :]          # (in, out, r)
    depthwise = root[:, :, None] * vh[:, :rank, :]          # (in, r, k²)
    total = float(s.pow(2).sum())
    error = (float(s[:, rank:].pow(2).sum()) / total) ** 0.5 if total > 0 else 0.0
    depthwise = depthwise.reshape(in_c * rank, 1, kh, kw)
    pointwise = pointwise.permute(1, 0, 2).reshape(out_c, in_c * rank, 1, 1)
    return depthwise.to(weight.dtype), pointwise.to(weight.dtype), error


def compose(depthwise: torch.Tensor, pointwise: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The k×k weight (out, in, kh, kw) that depthwise-then-pointwise computes."""
    out_c, in_c, kh, kw = shape
    rank = depthwise.shape[0] // in_c
    d = depthwise.reshape(in_c, rank, kh * kw)
    p = pointwise.reshape(out_c, in_c, rank)
    return torch.einsum("oir,irk->oik", p, d).reshape(out_c, in_c, kh, kw)


# ---------------------------------------------------------------- data-aware refinement
@dataclass
class PatchMoments:
    """Mean and covariance of a conv's input patches (in·k² features), in float64."""

    mean: torch.Tensor
    cov: torch.Tensor
    count: int


def conv_patches(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Every input patch the conv sees, as rows of in·k² values (channel-major, like W's rows),
    with the conv's own padding (zeros, reflect, ..., 'same')."""
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    padded = F.pad(x, list(conv._reversed_padding_repeated_twice), mode=mode)
    cols = F.unfold(padded, conv.kernel_size, dilation=conv.dilation, stride=conv.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


# Per batch and conv, the patch rows whose outer products are summed are capped twice: by count,
# and so that rows·features² (the multiply-adds of rowsᵀ·rows) stays under a budget. The second
# cap only bites on wide convs (a ResNet's 256-channel 3×3: 2304 features, 1618 rows a batch),
# where it (and unfolding only the images those rows come from) cut resnet18's dwsep --train on
# 2048 images from 340 s to 112 s, most of it now the forward passes;
# small convs (LeNet's conv2: 400 features) keep every row up to the count cap.
# Each batch's rowsᵀ·rows is a float32 product (twice float64's speed on AVX2),
# of rows shifted by the first batch's mean, summed across batches in float64.
MOMENT_MACS_PER_BATCH = 1 << 33


def collect_moments(model: nn.Module, convs: dict[str, nn.Conv2d], x: np.ndarray, *,
                    batch_size: int = 128, max_rows_per_batch: int = 32768,
                    seed: int = 0) -> dict[str, PatchMoments]:
    """Patch moments at the input of each conv in `convs`, from the model-ready images `x`
    (one pass with a progress bar; per batch and conv at most `max_rows_per_batch` randomly
    chosen patches, fewer for wide convs: MOMENT_MACS_PER_BATCH)."""
    from edgekit.progress import progress

    generator = torch.Generator().manual_seed(seed)
    sums: dict[str, list[Any]] = {}

    def hook(name: str, conv: nn.Conv2d):
        features = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        cap = max(1, min(max_rows_per_batch, MOMENT_MACS_PER_BATCH // features**2))

        def record(_module: nn.Module, inputs: tuple, output: Any) -> None:
            x = inputs[0].detach()
            images = -(-cap // max(1, output.shape[-2] * output.shape[-1]))  # enough for `cap`
            if images < len(x):  # unfold only as many images as the rows kept need
                x = x[torch.randperm(len(x), generator=generator)[:images]]
            rows = conv_patches(conv, x)
            if len(rows) > cap:
                rows = rows[torch.randperm(len(rows), generator=generator)[:cap]]
            rows = rows.to(torch.float32)
            if name not in sums:  # the shift: the first batch's mean, [Σ(x−s), Σ(x−s)(x−s)ᵀ, n]
                sums[name] = [rows.mean(0), 0.0, 0.0, 0]
            acc = sums[name]
            rows = rows - acc[0]
            acc[1] = acc[1] + rows.sum(0, dtype=torch.float64)
            acc[2] = acc[2] + (rows.T @ rows).to(torch.float64)
            acc[3] += len(rows)
        return record

    from edgekit.passes.stats import forward_hooks

    was_training = model.training
    model.eval()
    try:
        with forward_hooks((conv, hook(name, conv)) for name, conv in convs.items()), \
                torch.no_grad(), progress(f"Patch statistics of {len(convs)} conv(s)",
                                          total=len(x)) as advance:
            for start in range(0, len(x), batch_size):
                batch = x[start:start + batch_size]
                model(torch.from_numpy(np.ascontiguousarray(batch)))
                advance(len(batch))
    finally:
        model.train(was_training)
    moments = {}
    for name, (shift, total, outer, count) in sums.items():
        offset = total / count  # the mean of x − s: the covariance loses nothing to cancellation
        moments[name] = PatchMoments(shift.to(torch.float64) + offset,
                                     outer / count - torch.outer(offset, offset), count)
    return moments


def _block_diag(d: torch.Tensor) -> torch.Tensor:
    """(in, r, k²) depthwise filters → the (in·r × in·k²) block-diagonal matrix D_blk."""
    in_c, rank, k2 = d.shape
    eye = torch.eye(in_c, dtype=d.dtype)
    return (eye[:, None, :, None] * d[:, :, None, :]).reshape(in_c * rank, in_c * k2)


def _solve_spd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    try:
        return torch.cholesky_solve(b, torch.linalg.cholesky(a))
    except RuntimeError:  # numerically singular: least squares instead
        return torch.linalg.lstsq(a, b).solution


def refine(weight: torch.Tensor, bias: torch.Tensor | None, depthwise: torch.Tensor,
           pointwise: torch.Tensor, moments: PatchMoments, iterations: int = 10,
           ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alternating least squares on the output error (module docstring), from the SVD factors.

    Returns (depthwise, pointwise, bias) in float64. The D step needs an (in·r·k²)² system and
    runs only up to MAX_REFINE_FEATURES unknowns; the P step and the bias always run. A tiny
    ridge (relative to the patch variance) keeps directions the data never excites near the
    SVD's weight-space fit."""
    out_c, in_c, kh, kw = weight.shape
    k2 = kh * kw
    rank = depthwise.shape[0] // in_c
    w = weight.reshape(out_c, in_c * k2)
    n = in_c * k2
    cov = moments.cov + ridge * (float(torch.trace(moments.cov)) / n + 1e-12) * torch.eye(
        n, dtype=torch.float64)
    d = depthwise.reshape(in_c, rank, k2).to(torch.float64)
    p = pointwise.reshape(out_c, in_c * rank).to(torch.float64)
    wc = w @ cov
    cov4 = cov.reshape(in_c, k2, in_c, k2)
    d_step = in_c * rank * k2 <= MAX_REFINE_FEATURES
    for _ in range(max(iterations, 0) if d_step else 1):
        blk = _block_diag(d)
        p = _solve_spd(blk @ cov @ blk.T, (wc @ blk.T).T).T  # P = W C Dᵀ (D C Dᵀ)⁻¹
        if not d_step:
            break
        ptp = (p.T @ p).reshape(in_c, rank, in_c, rank)
        normal = (ptp[:, :, None, :, :, None] * cov4[:, None, :, :, None, :]).reshape(
            in_c * rank * k2, in_c * rank * k2)
        rhs = torch.einsum("oij,oik->ijk", p.reshape(out_c, in_c, rank), wc.reshape(out_c, in_c, k2))
        d = _solve_spd(normal, rhs.reshape(-1, 1)).reshape(in_c, rank, k2)
    blk = _block_diag(d)
    p = _solve_spd(blk @ cov @ blk.T, (wc @ blk.T).T).T
    approx = p @ blk
    new_bias = (bias if bias is not None else torch.zeros(out_c, dtype=torch.float64)) \
        + (w - approx) @ moments.mean
    return (d.reshape(in_c * rank, 1, kh, kw), p.reshape(out_c, in_c * rank, 1, 1), new_bias)


def rank_error(weight: torch.Tensor, bias: torch.Tensor | None, rank: int,
               moments: PatchMoments | None, *, refine_init: bool = True,
               iterations: int = 10) -> float:
    """How far the rank-r initialisation of a conv (weight, bias in float64) is from it: the
    relative RMS output error on the moments' data, after refinement when `refine_init`, or,
    without moments, the truncated SVD's relative weight error."""
    depthwise, pointwise, svd_error = factorize(weight, rank)
    if moments is None:
        return svd_error
    new_bias = bias
    if refine_init:
        depthwise, pointwise, new_bias = refine(weight, bias, depthwise, pointwise, moments,
                                                iterations)
    approx = compose(depthwise.to(torch.float64), pointwise.to(torch.float64), weight.shape)
    return output_error(weight, bias, approx, new_bias, moments)


def output_error(weight: torch.Tensor, bias: torch.Tensor | None, approx: torch.Tensor,
                 approx_bias: torch.Tensor | None, moments: PatchMoments) -> float:
    """Relative RMS error of the substitute's output against the conv's, over the patches the
    moments describe: sqrt(E‖ŷ − y‖² / E‖y‖²)."""
    out_c = weight.shape[0]
    zeros = torch.zeros(out_c, dtype=torch.float64)
    w, a = weight.reshape(out_c, -1), approx.reshape(out_c, -1)
    b = bias if bias is not None else zeros
    bh = approx_bias if approx_bias is not None else zeros
    second = moments.cov + torch.outer(moments.mean, moments.mean)

    def energy(m: torch.Tensor, v: torch.Tensor) -> float:  # E‖m·p + v‖²
        return float(torch.trace(m @ second @ m.T) + 2 * v @ (m @ moments.mean) + v @ v)

    reference = energy(w, b)
    return (energy(a - w, bh - b) / reference) ** 0.5 if reference > 0 else 0.0
