"""One channel-pruning run on a torch model (edgekit.passes.prune is the pass around it):
`prune_model` at a ratio, phase by phase (trace the graph, teach it the RNNs, prune the channel
groups, the RNN hidden units and the attention heads, check a forward pass, report every layer
kept with its reason), and `prune_to_target`, which bisects the ratio for a MACs budget."""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass, field
from typing import Any

from edgekit.passes.prune_graph import (
    PruneError,
    RecordingImportance,
    WipeoutError,
    bounded_groups,
    bounded_index_mapping,
    channel_width,
    copy_with_grads,
    failing_module,
    find_classifier,
    ignore_hint,
    importance_scorer,
    module_in_traceback,
    producers,
    prunable_layers,
    why_unchanged,
)
from edgekit.passes.prune_step import ChannelStep


@dataclass
class PruneResult:
    ratio: float
    pruned: list[dict[str, Any]] = field(default_factory=list)   # {layer, type, before, after}
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {layer, type, channels, reason}
    notes: list[str] = field(default_factory=list)
    # torch.nn.MultiheadAttention layers converted to the fused-qkv layout before pruning
    fused_attention: list[str] = field(default_factory=list)
    # Swin attention layers whose heads were removed (edgekit.passes.swin_prune): heads left
    window_heads: dict[str, int] = field(default_factory=dict)

    def to_meta(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "pruned": self.pruned, "skipped": self.skipped,
                "notes": self.notes, "fused_attention": self.fused_attention,
                "window_heads": self.window_heads}


@dataclass(frozen=True)
class PruneOptions:
    """How prune_model prunes (PruneConfig's fields of the same names): the importance
    criterion, global or per-layer, channel counts rounded to `round_to`, layers kept whole,
    whether LSTM/GRU hidden units go too, and the attention heads' ratio (default the ratio)."""

    importance: str = "l1"
    global_pruning: bool = False
    round_to: int | None = None
    ignore: list[str] | tuple[str, ...] = ()
    rnn_hidden: bool = True
    head_ratio: float | None = None


def prune_model(model: Any, spec: Any, *, ratio: float,
                options: PruneOptions | None = None) -> PruneResult:
    """Prune `model` in place at channel `ratio` as `options` say and return what was pruned
    and what was not (with reasons). Attention heads go whole at `options.head_ratio` (default
    `ratio`; see edgekit.passes.attn_prune). For taylor importance the parameters must already
    hold gradients (compute_gradients). Raises PruneError subclasses for impossible requests."""
    o = options or PruneOptions()
    if not 0 < ratio < 1:
        raise PruneError(f"pruning ratio {ratio} is outside (0, 1)",
                         hint="--prune 0.5 removes half the channels of each layer")
    run = _Pruning(model, spec, ratio=ratio, importance=o.importance,
                   global_pruning=o.global_pruning, round_to=o.round_to, ignore=o.ignore,
                   head_ratio=ratio if o.head_ratio is None else o.head_ratio)
    with bounded_index_mapping(model), bounded_groups(model):
        run.build_graph()
        run.teach_rnns(o.rnn_hidden)
        run.prune_channels()
        run.prune_rnn_hidden()
        run.sync_attention()
        run.verify()
        return run.report()


IGNORED = "which is in the ignore list"


class _Pruning:
    """One pruning run, phase by phase; `reasons` collects why each kept layer was kept."""

    def __init__(self, model: Any, spec: Any, *, ratio: float, importance: str,
                 global_pruning: bool, round_to: int | None, ignore: Any,
                 head_ratio: float = 0.0) -> None:
        import torch

        from edgekit.passes import attn_prune, channel_slices, swin_prune

        self.model, self.ratio, self.importance = model, ratio, importance
        self.global_pruning, self.round_to = global_pruning, round_to
        self.example = torch.zeros((1, *spec.shape[1:]))
        self.result = PruneResult(ratio=ratio)
        # torch.nn.MultiheadAttention → the fused-qkv layout whose heads go whole (same outputs)
        self.result.fused_attention = attn_prune.fuse_multihead_attention(
            model, torch.randn((2, *spec.shape[1:]), generator=torch.Generator().manual_seed(0)),
            ignore)
        if self.result.fused_attention:
            self.result.notes.append(
                "converted torch.nn.MultiheadAttention to the fused-qkv layout (same outputs): "
                + ", ".join(self.result.fused_attention))
        self.names: dict[Any, str] = {m: n for n, m in model.named_modules()}
        self.names.update({p: n for n, p in model.named_parameters()})
        self.before = {n: channel_width(m) for n, m in prunable_layers(model).items()}
        self.reasons: dict[Any, str] = {}
        classifier = find_classifier(model, self.example)
        if classifier is not None:
            self.reasons[classifier] = "final classifier (never pruned)"
        for module, reason in channel_slices.unmappable_producers(
                model, self.example, lambda m: channel_width(m) is not None).items():
            self.reasons.setdefault(module, reason)  # ReXNet's x[:, :C] + s, MobileViTv2's split
        # Ignored standard layers (Conv/Linear/RNN) keep their output width; their inputs follow
        # the layers before them, as Torch-Pruning's ignored layers do. Ignored custom modules
        # (whose channels the graph cannot see) stay exactly as they are: no group that touches
        # them, their own parameters or their outputs is pruned.
        self.blocked: dict[Any, str] = {}
        self.blocked_outputs: dict[Any, str] = {}  # grad_fn of an ignored module's output
        self.blocked_why: dict[str, str] = {}  # blocked name -> why, when not the ignore list
        self.kept_layers: dict[Any, str] = {}  # opaque layers whose width stays (shuffles)
        ignored_modules = self.block_ignored(ignore)
        self.block_channel_multipliers()
        if importance == "taylor":
            missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            if missing:
                raise PruneError(f"taylor importance needs gradients, {missing[0]} has none",
                                 hint="call compute_gradients(model, x, y) first")
        self.rnn_skip: dict[Any, str] = {}
        # Swin attention: its heads go whole first, by edgekit (edgekit.passes.swin_prune); in
        # the graph it is one opaque layer whose width (the residual stream) is kept.
        rows = swin_prune.prune_window_heads(model, head_ratio, importance, ignored_modules,
                                             self.result.notes)
        self.result.pruned.extend(rows)
        self.result.window_heads = {r["layer"]: r["after"] for r in rows}
        for name, window in swin_prune.window_layers(model):
            self.kept_layers[window] = swin_prune.KEPT_REASON.format(name=name)
            for inner in window.modules():
                if inner is not window and channel_width(inner) is not None:
                    self.reasons.setdefault(inner, swin_prune.INSIDE_REASON.format(name=name))
        # Attention: heads go whole, the residual width stays (edgekit.passes.attn_prune).
        self.attention = attn_prune.find_attention(model, ignored_modules)
        self.attention_options = {
            **attn_prune.torch_pruning_options(self.attention, head_ratio, self.result.notes),
            **attn_prune.torch_pruning_extras(model, self.attention)} if self.attention else {}
        for proj in attn_prune.residual_outputs(self.attention):
            self.reasons.setdefault(proj, "attention output: the residual width is kept "
                                          "(heads are pruned whole)")

    def block_ignored(self, ignore: Any) -> set[Any]:
        """The modules the ignore globs name (and everything inside them), each with its reason;
        custom ones (and their own parameters) are blocked: no group that touches them prunes."""
        ignored_modules: set[Any] = set()
        for name, m in self.model.named_modules():
            if name and any(fnmatch.fnmatchcase(name, pat) for pat in ignore):
                for sub_name, sub in m.named_modules(prefix=name):
                    ignored_modules.add(sub)
                    self.reasons.setdefault(sub, "in the prune step's ignore list")
                    if channel_width(sub) is None:
                        self.blocked[sub] = sub_name
                        for p_name, p in sub.named_parameters(prefix=sub_name, recurse=False):
                            self.blocked[p] = p_name
        return ignored_modules

    def block_channel_multipliers(self) -> None:
        """A depthwise conv with a channel multiplier (groups == in_channels, out = k × in,
        k > 1: timm FastViT's final_conv and downsampling) stays exactly as it is: Torch-Pruning
        1.6 maps its output channels onto its inputs 1:1 and indexes past its weight
        (IndexError in final_conv.conv_kxk). No group that touches it is pruned."""
        from torch import nn

        for name, m in self.model.named_modules():
            if isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups == m.in_channels \
                    and m.out_channels != m.in_channels:
                self.blocked[m] = name
                self.blocked_why[name] = "a depthwise conv with a channel multiplier, kept as it is"
                for p_name, p in m.named_parameters(prefix=name, recurse=False):
                    self.blocked[p] = p_name
                    self.blocked_why[p_name] = self.blocked_why[name]
                self.reasons.setdefault(
                    m, f"depthwise conv with a channel multiplier ({m.in_channels} → "
                       f"{m.out_channels}, groups {m.groups}): Torch-Pruning cannot prune it, "
                       "so it and the channels it reads and writes stay")

    # ------------------------------------------------------------ phases
    def build_graph(self) -> None:
        """Trace the model into Torch-Pruning's dependency graph, RNNs as opaque layers."""
        import torch
        import torch_pruning as tp
        from torch import nn

        from edgekit.passes import rnn_prune, shuffle_prune, swin_prune

        self.rnns = [m for m in self.model.modules() if isinstance(m, nn.RNNBase)]
        self.rnn_fn = rnn_prune.rnn_pruner()
        # a group that reaches a blocked layer is never scored (a multiplier conv's weight
        # does not index like its inputs: the importance itself would fail)
        self.scorer = RecordingImportance(importance_scorer(self.importance),
                                          skip=self.blocked_group)

        def remember_output(module: Any, _inputs: Any, output: Any) -> None:
            first = output[0] if isinstance(output, tuple) else output
            if isinstance(first, torch.Tensor) and first.grad_fn is not None:
                self.blocked_outputs[first.grad_fn] = self.blocked[module]

        hooks = [m.register_forward_hook(remember_output) for m in self.blocked
                 if isinstance(m, nn.Module)]
        caught: list[Any] = []
        try:
            with rnn_prune.opaque_rnns(self.model), swin_prune.opaque(self.model), \
                    shuffle_prune.opaque_channel_shuffles(self.model, self.kept_layers), \
                    warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.pruner = tp.pruner.BasePruner(
                    self.model, self.example, self.scorer, global_pruning=self.global_pruning,
                    pruning_ratio=self.ratio, round_to=self.round_to,
                    ignored_layers=[m for m in self.reasons if channel_width(m) is not None],
                    customized_pruners={nn.LSTM: self.rnn_fn, nn.GRU: self.rnn_fn,
                                        nn.RNN: self.rnn_fn, **shuffle_prune.pruners(),
                                        **swin_prune.pruners(self.model)},
                    root_module_types=[nn.modules.conv._ConvNd, nn.Linear],
                    **self.attention_options)
        except Exception as exc:  # noqa: BLE001 - Torch-Pruning's tracer failed on this model
            culprit = module_in_traceback(exc, self.names)
            where = f" at {culprit}" if culprit else ""
            raise PruneError(f"Torch-Pruning cannot trace this model{where}: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                             hint=ignore_hint(culprit)) from None
        finally:
            for h in hooks:
                h.remove()
        for w in caught:  # e.g. parameters outside standard layers, whose channel axis TP guesses
            self.result.notes.append("Torch-Pruning: " + " ".join(str(w.message).split()))
        self.graph = self.pruner.DG
        if self.kept_layers:  # before Torch-Pruning scores them: their groups never map right
            self.pruner.ignored_layers.extend(shuffle_prune.groups_reaching(
                self.graph, self.kept_layers, self.pruner.ignored_layers, self.reasons))
        self.model.eval()

    def teach_rnns(self, rnn_hidden: bool) -> None:
        """Teach the graph the hybrids' channel → RNN-column mapping; where it cannot be taught,
        the layers feeding the RNN keep their channels. Decide which RNNs keep their hidden size."""
        from edgekit.passes import rnn_prune

        for rnn in self.rnns:
            problem = rnn_prune.teach_sequence_mapping(self.graph, rnn)
            if problem:
                for producer in producers(self.graph, rnn):
                    if producer not in self.reasons:
                        self.reasons[producer] = f"feeds {self.names[rnn]}: {problem}"
                        self.pruner.ignored_layers.append(producer)
            if rnn in self.reasons:
                self.rnn_skip[rnn] = self.reasons[rnn]
            elif not rnn_hidden:
                self.rnn_skip[rnn] = "RNN hidden-unit pruning switched off (rnn_hidden: false)"
            else:
                out_problem = rnn_prune.output_problem(self.graph, rnn)
                if out_problem:
                    self.rnn_skip[rnn] = out_problem
        self.reasons.update(self.rnn_skip)

    def blocked_group(self, group: Any) -> bool:
        """Whether `group` reaches a blocked layer; its root's reason says which."""
        hit = self.touches_blocked(group)
        if hit:
            self.reasons.setdefault(group[0].dep.target.module,
                                    f"coupled to {hit}, {self.blocked_why.get(hit, IGNORED)}")
        return bool(hit)

    def touches_blocked(self, group: Any) -> str | None:
        """The ignored custom module (or its parameter/output) a group would change, if any."""
        from torch import nn

        for dep, _ in group:
            target = dep.target
            hit = self.blocked.get(target.module) \
                if isinstance(target.module, nn.Module | nn.Parameter) else None
            hit = hit or self.blocked_outputs.get(target.grad_fn)
            if hit:
                return hit
        return None

    def prune_channels(self) -> None:
        """Torch-Pruning's step over the Conv/Linear groups (edgekit.passes.prune_step). It
        silently skips a group whose pruning would empty one of its layers: refuse instead. When
        the layer that runs out is not the group's own (a parameter or layer of another size
        coupled to it), the graph mis-traced the model: say where."""
        step = ChannelStep(self)
        step.prune()
        step.refuse_rejected()
        if self.importance == "bn-scale":
            if self.scorer.scored == 0 and self.scorer.unscored:
                raise PruneError("bn-scale importance needs BatchNorm layers after the pruned "
                                 "convs; this model has none",
                                 hint="use --importance l1 (or l2, taylor)")
            for module in self.scorer.unscored:
                self.reasons.setdefault(module,
                                        "no BatchNorm in its group to score (bn-scale importance)")

    def prune_rnn_hidden(self) -> None:
        """RNN hidden units: the same ratio, gate-aware, per (layer, direction); the graph
        shrinks the layers that read the RNN's output."""
        from edgekit.passes import rnn_prune

        for rnn in self.rnns:
            if rnn in self.rnn_skip:
                continue
            name = self.names[rnn]
            hidden0 = self.before[name]
            keep = int(hidden0 * (1 - self.ratio))
            if self.round_to and keep >= 1:
                wanted = keep
                keep -= keep % self.round_to
                if keep < 1:  # round_to never empties a layer: one multiple, or all it has
                    keep = min(hidden0, self.round_to)
                    self.result.notes.append(
                        f"{name} keeps {keep} of {hidden0} hidden units: round_to "
                        f"{self.round_to}: {wanted} would remain at ratio {self.ratio:g}, which "
                        "rounds down to 0")
            if keep < 1:
                raise WipeoutError(
                    f"pruning at ratio {self.ratio:g}{self.rounding_note()} would remove every "
                    f"hidden unit of {name} ({hidden0} units)",
                    hint=f"lower the ratio or --round-to, or ignore it with --prune-ignore '{name}'")
            if keep >= rnn.hidden_size:
                continue
            kind = self.importance
            if kind == "bn-scale":
                kind = "l1"
                self.result.notes.append(f"{name}: no BatchNorm in an RNN; hidden units ranked "
                                         "by l1")
            plan = rnn_prune.plan_hidden_pruning(rnn, keep, kind)
            try:
                group = self.graph.get_pruning_group(rnn, self.rnn_fn.prune_out_channels,
                                                     rnn_prune.output_indices(rnn, plan))
                hit = self.touches_blocked(group)
                if hit:
                    self.reasons[rnn] = f"its output feeds {hit}, {self.blocked_why.get(hit, IGNORED)}"
                    continue
                self.rnn_fn.pending[rnn] = plan
                group.prune()
            except Exception as exc:  # noqa: BLE001
                raise PruneError(f"pruning the hidden units of {name} failed: {exc}",
                                 hint=ignore_hint(name)) from None

    def sync_attention(self) -> None:
        """Attention layers take their new head counts from their cut qkv/proj."""
        from edgekit.passes import attn_prune

        self.result.pruned.extend(attn_prune.sync_head_counts(self.attention))

    def verify(self) -> None:
        """One forward pass on the pruned model; a failure names the module to ignore."""
        culprit, exc = failing_module(self.model, self.example)
        if exc is not None and culprit in {a.name for a in self.attention}:
            raise PruneError(f"after removing heads, the forward pass fails at {culprit} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0]}): its forward "
                             "does not follow num_heads × head_dim (timm's Attention reshapes "
                             "the heads' output to the input width)",
                             hint=f"keep its heads with --prune-heads 0 (MLP channels are still "
                                  f"pruned), or --prune-ignore '{culprit}'")
        if exc is not None:
            raise PruneError(f"after pruning, the forward pass fails at {culprit or 'the model'} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0]}): "
                             "Torch-Pruning could not trace how its channels connect",
                             hint=ignore_hint(culprit))
        for p in self.model.parameters():
            p.grad = None

    def report(self) -> PruneResult:
        """Every prunable layer, pruned (before/after) or kept (with the reason)."""
        from torch import nn

        layers = prunable_layers(self.model)
        for name, width in self.before.items():
            module = layers[name]
            kind = type(module).__name__
            if channel_width(module) != width:
                self.result.pruned.append({"layer": name, "type": kind, "before": width,
                                           "after": channel_width(module)})
                continue
            reason = self.reasons.get(module) or why_unchanged(
                self.graph, module, self.reasons, self.names, self.global_pruning, self.ratio,
                width)
            self.result.skipped.append({"layer": name, "type": kind, "channels": width,
                                        "reason": reason})
        for module, name in self.blocked.items():  # ignored custom layers with own weights
            if isinstance(module, nn.Module) and channel_width(module) is None and \
                    any(True for _ in module.parameters(recurse=False)):
                self.result.skipped.append({"layer": name, "type": type(module).__name__,
                                            "channels": None, "reason": self.reasons[module]})
        return self.result

    def rounding_note(self) -> str:
        return f" with round_to {self.round_to}" if self.round_to else ""


def prune_to_target(model: Any, spec: Any, target: float, *, max_ratio: float = 0.95,
                    steps: int = 14, **options: Any) -> tuple[Any, PruneResult, float]:
    """Bisect the channel ratio so that MACs fall to at most `target` × the original (closest
    from below). Returns (pruned copy, result, MACs fraction reached). `model` is not changed;
    its .grad (taylor) is copied into every trial."""
    from edgekit.passes.stats import model_cost

    base = model_cost(model, spec)["macs"]
    lo, hi = 0.0, max_ratio
    best: tuple[Any, PruneResult, float] | None = None
    closest: tuple[float, float] | None = None  # (ratio, fraction) of the deepest legal trial
    wipe: WipeoutError | None = None
    ratio = max_ratio
    for _ in range(steps):
        trial = copy_with_grads(model)
        try:
            result = prune_model(trial, spec, ratio=ratio, options=PruneOptions(**options))
        except WipeoutError as exc:
            wipe, hi = exc, ratio
            ratio = (lo + hi) / 2
            continue
        fraction = model_cost(trial, spec)["macs"] / base
        if closest is None or ratio > closest[0]:
            closest = (ratio, fraction)
        if fraction <= target:
            best, hi = (trial, result, fraction), ratio
            if fraction >= target * 0.98:
                break
        else:
            lo = ratio
        ratio = (lo + hi) / 2
    if best is None:
        if wipe is not None:
            raise WipeoutError(f"target_macs {target:g} cannot be reached: {wipe.message}",
                               hint="ask for a larger --target-macs, use --global, or ignore "
                                    "the layer with --prune-ignore NAME")
        reached = f"{closest[1]:.3f}" if closest else "?"
        raise PruneError(f"target_macs {target:g} cannot be reached: at ratio {max_ratio:g} MACs "
                         f"are still {reached} of the original",
                         hint="ask for a larger --target-macs, or prune layers now ignored")
    best[1].notes.append(f"ratio {best[1].ratio:.4f} found for target_macs {target:g}")
    return best
