"""Depthwise-separable substitution: a k×k convolution becomes a depthwise k×k convolution with
channel multiplier r followed by a 1×1 pointwise convolution (MobileNet's block), initialised from
the original weights rather than at random, and then distilled from the original model (the
pipeline's distill step).

Initialisation (edgekit/passes/dwsep_factor.py has the maths): a truncated SVD of each input
channel's slice W[:, i] (out × k²) gives the depthwise filters and the pointwise weights; with
r = min(out, k²) the substitution is exact, r = 1 is the MobileNet form. Stride, padding,
dilation and padding mode go to the depthwise conv, the bias to the pointwise one. When training
images are at hand (`--train`) the SVD factors are then refined by alternating least squares to
minimise the conv's *output* error on real inputs (init: svd+data, the default), which starts
distillation much closer to the original; `init: svd` keeps the plain SVD.

Which convs: nn.Conv2d with groups=1 and a kernel larger than 1×1, chosen by include/exclude
module-name patterns, replaced where the MACs drop: out·in·k² MACs per output pixel become
in·r·(k² + out), a saving of 1 − r(k² + out)/(out·k²). A conv with one input channel (a network's
first layer on grey images) is kept: it has nothing to separate. Its "separable" form would be a
rank-r bottleneck of the whole filter bank (rank ≤ r·in = r: at r = 1 every output channel is a
multiple of one feature map); the MACs formula says it would shrink, the accuracy says otherwise
(lenet5's conv1 forced to r = 1: that layer's MACs 9.8× fewer, top-1 0.9003 → 0.8587 after one
epoch of distillation). Pruning is the tool for such a layer.

Which rank: r = 1 saves the most and loses the most. `rank: auto` (the default when training
images are given) takes per layer the smallest r whose initialisation's output error on those
images is within `max_error` (relative RMS, 0.10), among the ranks that still save MACs. Measured
on the zoo models (benchmarks/results/compress.md): lenet5's conv2 at r = 1 has a 0.28 output
error and ends 1.46 points below the original after one epoch of distillation; auto picks r = 4
(error 0.098, 3.5× fewer MACs in that layer) and ends 0.34 below; r = 1 needs three epochs.

The structural edit is recorded in `bundle.surgery` ({"op": "dwsep", "layer": ..., sizes}) and
replayed by `load_model` on the freshly built architecture, so a substituted checkpoint reloads
with `weights_only=True`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from edgekit.errors import ConfigError, EdgekitError, ModelLoadError
from edgekit.events import emit
from edgekit.io.models import register_surgery
from edgekit.passes.base import Knob, Pass, PassConfig, PassContext
from edgekit.passes.dwsep_factor import (
    ACTIVATIONS,
    MAX_REFINE_FEATURES,
    DepthwiseSeparable,
    collect_moments,
    max_rank,
    rank_error,
    set_module,
)

__all__ = ["DepthwiseSeparable", "DwsepConfig", "DwsepPass", "plan_layers", "replay_dwsep"]
MAX_CHANNELS = 1 << 16


# ---------------------------------------------------------------- the surgery record
class DwsepSurgery(BaseModel):
    """One substituted layer as recorded in a checkpoint. Sizes are stored rather than read from
    the rebuilt conv, so the record also holds after pruning changed the layer's channels."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["dwsep"] = "dwsep"
    layer: str
    # bounds keep a crafted file from allocating absurd layers before the state_dict check
    in_channels: int = Field(ge=1, le=MAX_CHANNELS)
    out_channels: int = Field(ge=1, le=MAX_CHANNELS)
    kernel_size: tuple[Annotated[int, Field(ge=1, le=64)], Annotated[int, Field(ge=1, le=64)]]
    stride: tuple[int, int]
    padding: tuple[int, int] | Literal["same", "valid"]
    dilation: tuple[int, int]
    bias: bool
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros"
    rank: int = Field(ge=1, le=4096)
    bn: bool = False
    activation: Literal["none", "relu", "relu6", "hardswish"] = "none"

    def build(self) -> DepthwiseSeparable:
        return DepthwiseSeparable(**self.model_dump(exclude={"op", "layer"}))


def surgery_record(name: str, module: DepthwiseSeparable) -> dict[str, Any]:
    """The weights_only-safe dict (str, int, bool, list) that `replay_dwsep` rebuilds from."""
    dw, pw = module.depthwise, module.pointwise
    record = DwsepSurgery(
        layer=name, in_channels=dw.in_channels, out_channels=pw.out_channels,
        kernel_size=dw.kernel_size, stride=dw.stride,
        padding=dw.padding if isinstance(dw.padding, str) else tuple(dw.padding),
        dilation=dw.dilation, bias=pw.bias is not None, padding_mode=dw.padding_mode,
        rank=module.rank, bn=isinstance(module.norm, nn.BatchNorm2d),
        activation=next(k for k, v in ACTIVATIONS.items() if type(module.act) is v))
    data = record.model_dump(mode="json")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


@register_surgery("dwsep")
def replay_dwsep(model: nn.Module, step: dict[str, Any]) -> None:
    """Replace the recorded conv of a freshly built architecture by its DepthwiseSeparable shell
    (the state_dict loads into it afterwards)."""
    from pydantic import ValidationError

    try:
        record = DwsepSurgery.model_validate(step)
    except ValidationError as exc:
        raise ModelLoadError(f"the checkpoint's dwsep record is malformed: {exc.errors()[0]['msg']}",
                             hint="the file is damaged or was not written by edgekit") from None
    try:
        old = model.get_submodule(record.layer)
    except AttributeError:
        raise ModelLoadError(f"the checkpoint replaced layer {record.layer!r}, which the "
                             "architecture does not have",
                             hint="pass the --arch the checkpoint was made from") from None
    if not isinstance(old, nn.Conv2d | DepthwiseSeparable):
        raise ModelLoadError(f"the checkpoint replaced layer {record.layer!r} as a conv, but it is "
                             f"a {type(old).__name__} in this architecture",
                             hint="pass the --arch the checkpoint was made from")
    set_module(model, record.layer, record.build())


# ---------------------------------------------------------------- which layers
class DwsepConfig(PassConfig):
    rank: Annotated[int, Field(ge=1)] | Literal["full", "auto"] | None = Field(
        None, description="channel multiplier r of the depthwise conv; 1 is the MobileNet form, "
                          "'full' = min(out, k²) per layer (exact, but saves no MACs), 'auto' = "
                          "per layer the smallest r whose initialisation is within max_error "
                          "(needs --train); unset: auto with training images, else 1")
    max_error: float = Field(
        0.10, gt=0, lt=1, description="rank 'auto': the largest relative RMS output error of a "
                                      "layer's initialisation on training images")
    include: list[str] | None = Field(
        None, description="module-name glob patterns; only matching convs (or convs inside "
                          "matching modules) are considered")
    exclude: list[str] | None = Field(None, description="module-name glob patterns to skip")
    min_macs_saving: float = Field(
        0.0, ge=0, lt=1, description="replace a conv only where its MACs drop by at least this "
                                     "fraction (and always by more than zero)")
    bn: bool = Field(False, description="BatchNorm between depthwise and pointwise (MobileNet "
                                        "style), for longer training; it starts as the identity "
                                        "on the training data, the activation after it breaks "
                                        "the exact initialisation")
    activation: Literal["none", "relu", "relu6", "hardswish"] | None = Field(
        None, description="activation between depthwise and pointwise; default relu with bn, "
                          "none without")
    init: Literal["svd+data", "svd"] = Field(
        "svd+data", description="svd: truncated SVD of the weights; svd+data: then refined to "
                                "minimise the output error on training images (needs --train; "
                                "falls back to svd without, and with an activation in between)")
    init_images: int = Field(2048, ge=16, description="training images the refinement uses")
    init_iterations: int = Field(10, ge=0, description="alternating least-squares rounds")


@dataclass
class LayerPlan:
    """What the pass decided for one conv, and what it costs before and after (batch 1)."""

    name: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    out_pixels: int
    rank: int
    replace: bool
    reason: str | None = None

    @property
    def macs_before(self) -> int:
        return self.out_pixels * self.out_channels * self.in_channels * self.kernel[0] * self.kernel[1]

    @property
    def macs_after(self) -> int:
        k2 = self.kernel[0] * self.kernel[1]
        return self.out_pixels * self.in_channels * self.rank * (k2 + self.out_channels)


def _matches(name: str, pattern: str) -> bool:
    """A glob on the module name; a pattern naming a container matches the convs inside it."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def _check_patterns(model: nn.Module, convs: list[str], patterns: list[str], which: str) -> None:
    """A pattern that selects no conv is an error (a typo must not silently select nothing)."""
    modules = dict(model.named_modules())
    for pattern in patterns:
        if any(_matches(name, pattern) for name in convs):
            continue
        shown = ", ".join(convs[:12]) + (", ..." if len(convs) > 12 else "") or "(none)"
        if pattern in modules:
            raise ConfigError(f"dwsep {which} {pattern!r} names a {type(modules[pattern]).__name__}, "
                              "not a Conv2d", hint=f"conv layers in this model: {shown}")
        raise ConfigError(f"dwsep {which} pattern {pattern!r} matches no conv layer of this model",
                          hint=f"conv layers in this model: {shown}")


def _output_pixels(model: nn.Module, spec: Any, convs: dict[str, nn.Conv2d]) -> dict[str, int]:
    """Output H·W of each conv at the spec's input size (one forward pass on zeros)."""
    from edgekit.passes.stats import probe

    pixels: dict[str, int] = {}
    probe(model, spec, [(conv, lambda _m, _i, out, name=name: pixels.__setitem__(
        name, out.shape[-2] * out.shape[-1])) for name, conv in convs.items()])
    return pixels


def plan_layers(model: nn.Module, spec: Any, cfg: DwsepConfig) -> list[LayerPlan]:
    """Decide, conv by conv, whether to substitute it. Raises ConfigError for a pattern that
    matches nothing and for a rank that no selected layer can have."""
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    names = list(convs)
    _check_patterns(model, names, cfg.include or [], "include")
    _check_patterns(model, names, cfg.exclude or [], "exclude")
    selected = [n for n in names
                if (not cfg.include or any(_matches(n, p) for p in cfg.include))
                and not any(_matches(n, p) for p in cfg.exclude or [])]
    pixels = _output_pixels(model, spec, {n: convs[n] for n in selected})
    plans: list[LayerPlan] = []
    too_large: list[str] = []
    for name in selected:
        conv = convs[name]
        # 'auto' (and unset) is planned at r = 1, the largest saving; apply picks the rank
        rank = {"full": max_rank(conv), "auto": 1, None: 1}.get(cfg.rank, cfg.rank)
        plan = LayerPlan(name, conv.in_channels, conv.out_channels, tuple(conv.kernel_size),
                         pixels.get(name, 0), rank, replace=False)
        if conv.groups != 1:
            plan.reason = f"already grouped (groups={conv.groups})"
        elif conv.kernel_size == (1, 1):
            plan.reason = "1×1: already pointwise"
        elif name not in pixels:
            plan.reason = "not used in the forward pass"
        elif conv.in_channels == 1:
            plan.reason = ("one input channel: nothing to separate (its separable form is a "
                           f"rank-{rank} bottleneck of the whole filter bank)")
        elif rank > max_rank(conv):
            too_large.append(f"{name} (max {max_rank(conv)})")
            continue
        else:
            saving = 1 - plan.macs_after / plan.macs_before
            if saving <= 0 or saving < cfg.min_macs_saving:
                plan.reason = (f"MACs would not drop enough ({plan.macs_before:,} → "
                               f"{plan.macs_after:,}, {saving:+.0%}; min_macs_saving "
                               f"{cfg.min_macs_saving:.0%})")
            else:
                plan.replace = True
        plans.append(plan)
    if too_large:
        raise ConfigError(f"dwsep rank {cfg.rank} is larger than possible for "
                          f"{', '.join(too_large[:5])}: the rank is at most min(out, k_h·k_w)",
                          hint="lower --dwsep-rank, use rank 'full' in a recipe, or exclude "
                               "those layers")
    return plans


# ---------------------------------------------------------------- the pass
class DwsepPass(Pass):
    """Substitute depthwise-separable convs (see the module docstring); the pipeline's distill
    step then trains the result against the original model."""

    name = "dwsep"
    kind = "torch"
    order = 20
    search = (Knob("dwsep", "rank", ("off", "auto"), off="off", help="off | auto | a channel "
                   "multiplier r", settings={"dwsep_max_error": "max_error"},
                   keyed=lambda rank: ("dwsep_max_error",) if rank == "auto" else (),
                   label=lambda rank: str(rank) if rank in ("off", "auto") else f"r{rank}",
                   parse=lambda text: int(text) if str(text).isdigit() else text,
                   unchanged="substitutes no conv of this model"),)
    Config = DwsepConfig

    @classmethod
    def inapplicable(cls, bundle: Any, config: PassConfig) -> str | None:
        """Why the pass would substitute no conv of the model at this rank, from its plan
        (cheap: no training data, no rank search), else None. `auto` can still choose no layer
        within its error bound; optimize's builder finds that at its first candidate
        (UnchangedError) and the search drops the choice then, once."""
        from collections import Counter

        try:
            plans = plan_layers(bundle.model, bundle.spec, config)
        except EdgekitError as exc:
            return exc.message
        if any(p.replace for p in plans):
            return None
        reasons = Counter((p.reason or "").split(" (")[0].split(":")[0] for p in plans)
        listed = "; ".join(f"{n} {why}" for why, n in reasons.most_common(3))
        return (f"dwsep {cls.search[0].label(config.rank)} substitutes no conv of this model"
                + (f" ({listed})" if listed else " (it has no conv)")
                + ": the candidate would be the original")

    def _resolve_rank(self, ctx: PassContext) -> None:
        """An unset rank becomes 'auto' when training images are at hand, else 1 (recorded so
        in the config the manifest keeps)."""
        if self.config.rank is None:
            rank = "auto" if ctx.train_source is not None else 1
            self.config = self.config.model_copy(update={"rank": rank})

    def check(self, bundle: Any, ctx: PassContext) -> None:
        self._resolve_rank(ctx)
        plan_layers(bundle.model, bundle.spec, self.config)
        if self.config.rank == "auto" and ctx.train_source is None:
            raise ConfigError("dwsep rank 'auto' measures each layer's output error on training "
                              "images, and no --train was given",
                              hint="pass --train fashion-mnist:train (or your own source), or a "
                                   "fixed --dwsep-rank (1 is the MobileNet form)")

    def apply(self, bundle: Any, ctx: PassContext) -> Any:
        from edgekit.passes.stats import model_cost

        self._resolve_rank(ctx)
        cfg: DwsepConfig = self.config
        model = bundle.model
        activation = cfg.activation or ("relu" if cfg.bn else "none")
        plans = plan_layers(model, bundle.spec, cfg)
        for plan in plans:
            if not plan.replace and (cfg.include or not plan.reason.startswith(("1×1", "already"))):
                ctx.add_row(step="dwsep", layer=plan.name, note=f"kept: {plan.reason}")
        chosen = [p for p in plans if p.replace]
        refine_init = cfg.init == "svd+data" and activation == "none"
        moments = self._moments(model, bundle.spec, chosen, ctx) if chosen else {}
        if cfg.rank == "auto" and chosen:
            chosen = self._choose_ranks(model, chosen, moments, refine_init, ctx)
        if not chosen:
            note = ("no conv to substitute: nothing changed" if plans else
                    "no conv layer selected: nothing changed")
            emit(f"dwsep: {note}")
            ctx.add_row(step="dwsep", **model_cost(model, bundle.spec), replaced=0, note=note)
            return bundle
        init_moments = moments if refine_init else {}
        macs_before = macs_after = 0
        for plan in chosen:
            conv = model.get_submodule(plan.name)
            module, info = DepthwiseSeparable.from_conv(
                conv, plan.rank, bn=cfg.bn, activation=activation,
                moments=init_moments.get(plan.name), iterations=cfg.init_iterations)
            set_module(model, plan.name, module)
            bundle.surgery.append(surgery_record(plan.name, module))
            macs_before += plan.macs_before
            macs_after += plan.macs_after
            ctx.add_row(step="dwsep", layer=plan.name, r=plan.rank,
                        macs_before=plan.macs_before, macs_after=plan.macs_after,
                        params_before=sum(p.numel() for p in conv.parameters()),
                        params_after=sum(p.numel() for p in module.parameters()),
                        init=info["init"], init_error=round(info["init_error"], 4),
                        output_error=None if info["output_error"] is None
                        else round(info["output_error"], 4))
        top1 = None
        eval_set = ctx.eval_set(bundle.spec, required=False)
        if eval_set is not None:
            from edgekit.metrics import torch_top1
            from edgekit.progress import progress

            with progress("Evaluating the dwsep model", total=len(eval_set)) as advance:
                top1 = torch_top1(model, eval_set, advance=advance)
        ctx.add_row(step="dwsep", **model_cost(model, bundle.spec), top1=top1,
                    replaced=len(chosen),
                    note=f"top-1 before distillation; the replaced convs' MACs "
                         f"{macs_before / max(macs_after, 1):.1f}× fewer")
        return bundle

    def _choose_ranks(self, model: nn.Module, plans: list[LayerPlan], moments: dict[str, Any],
                      refine_init: bool, ctx: PassContext) -> list[LayerPlan]:
        """Rank 'auto': per layer the smallest r (among those that save MACs) whose
        initialisation error is at most max_error; a layer no such r fits is kept, and said so.
        The error is the output error on training images where the conv's moments fit in
        memory (in·k² ≤ MAX_REFINE_FEATURES), else the SVD's weight error."""
        from edgekit.progress import progress

        kept: list[LayerPlan] = []
        with progress(f"Choosing the rank of {len(plans)} conv(s)", total=len(plans)) as advance:
            for plan in plans:
                fits = self._choose_rank(model, plan, moments.get(plan.name), refine_init, ctx)
                if fits:
                    kept.append(plan)
                advance(1, layer=plan.name, r=plan.rank if fits else "kept")
        return kept

    def _choose_rank(self, model: nn.Module, plan: LayerPlan, layer_moments: Any,
                     refine_init: bool, ctx: PassContext) -> bool:
        """Set plan.rank to the smallest fitting rank and say so in the report; False (and the
        errors tried in the report) when none fits."""
        cfg: DwsepConfig = self.config
        conv = model.get_submodule(plan.name)
        weight = conv.weight.detach().to(torch.float64)
        bias = conv.bias.detach().to(torch.float64) if conv.bias is not None else None
        measure = "output error" if layer_moments is not None else "weight error"
        tried: list[str] = []
        for rank in range(1, max_rank(conv) + 1):
            plan.rank = rank
            saving = 1 - plan.macs_after / plan.macs_before
            if saving <= 0 or saving < cfg.min_macs_saving:
                break
            error = rank_error(weight, bias, rank, layer_moments, refine_init=refine_init,
                               iterations=cfg.init_iterations)
            tried.append(f"r={rank} {error:.3f}")
            if error <= cfg.max_error:
                ctx.add_row(step="dwsep", layer=plan.name,
                            note=f"rank auto: r={rank} ({measure} {', '.join(tried)}; "
                                 f"max_error {cfg.max_error})")
                return True
        ctx.add_row(step="dwsep", layer=plan.name,
                    note=f"kept: no rank that saves MACs has its {measure} within max_error "
                         f"{cfg.max_error} ({', '.join(tried) or 'none tried'})")
        return False

    def _moments(self, model: nn.Module, spec: Any, chosen: list[LayerPlan],
                 ctx: PassContext) -> dict[str, Any]:
        """Input-patch moments of the chosen convs on training images, for the svd+data init and
        rank 'auto' ({} when neither applies or there is no --train)."""
        cfg: DwsepConfig = self.config
        activation = cfg.activation or ("relu" if cfg.bn else "none")
        wanted = cfg.rank == "auto" or (cfg.init == "svd+data" and activation == "none")
        if not wanted or ctx.train_source is None:
            return {}
        convs = {p.name: model.get_submodule(p.name) for p in chosen
                 if p.in_channels * p.kernel[0] * p.kernel[1] <= MAX_REFINE_FEATURES}
        if not convs:
            return {}
        from edgekit.data.dataset import stratified_indices

        raw = ctx.train_images()
        keep = stratified_indices(raw.labels, min(cfg.init_images, len(raw)), 0)
        x = raw.model_inputs(spec, keep)
        return collect_moments(model, convs, x)
