"""Structured (channel) pruning with Torch-Pruning's dependency graph, hybrids and RNNs included.

What a user gets: `--prune 0.5` removes half the channels of every prunable layer group (local) or
the least important half across the model (`--global`), scored by L1, L2, Taylor (|w·∂L/∂w| on a
few labelled batches) or BatchNorm scale; `--round-to 8` keeps channel counts multiples of 8;
`--target-macs 0.33` searches the ratio that brings MACs (edgekit.passes.stats.model_cost) to a
third of the original. The final classifier keeps its outputs. LSTM/GRU hidden sizes shrink by the
same ratio, gate-aware (edgekit.passes.rnn_prune), and a conv feature map that feeds an RNN as a
row sequence loses the RNN input columns of each channel it drops.

Nothing is skipped silently: every Conv/Linear/RNN whose output size did not change is reported
with the reason (ctx report row `skipped`, the checkpoint's meta, and a line on stderr).

Why Torch-Pruning: its DepGraph finds which layers must lose the same channels (residual adds,
depthwise convs, concats); we add what it lacks: RNN layers as opaque graph nodes, the
sequence-layout index mapping, and checks that turn its silent skips and crashes into errors
that name the layer.
"""

from __future__ import annotations

import copy
import fnmatch
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from edgekit.errors import ConfigError, DataError, InputError, MissingLabelsError
from edgekit.passes.base import Knob, Pass, PassConfig, PassContext

IMPORTANCES = ("l1", "l2", "taylor", "bn-scale")


class PruneConfig(PassConfig):
    ratio: float | None = Field(None, gt=0, lt=1, description="fraction of channels to remove")
    target_macs: float | None = Field(None, gt=0, lt=1,
                                      description="prune until MACs are this fraction of the original")
    importance: Literal["l1", "l2", "taylor", "bn-scale"] = "l1"
    global_pruning: bool = False
    round_to: int | None = Field(None, ge=1, description="keep channel counts multiples of this")
    ignore: list[str] = Field(default_factory=list,
                              description="module names (globs) whose outputs are never pruned")
    rnn_hidden: bool = Field(True, description="also prune LSTM/GRU hidden units")
    head_ratio: float | None = Field(None, ge=0, lt=1,
                                     description="fraction of attention heads to remove per layer "
                                                 "(rounded to whole heads); default: the ratio")
    taylor_batches: int = Field(4, ge=1, description="batches of gradients for taylor importance")
    taylor_batch_size: int = Field(32, ge=1)
    max_ratio: float = Field(0.95, gt=0, lt=1, description="upper bound of the target_macs search")
    search_steps: int = Field(14, ge=1, description="bisection steps of the target_macs search")


class PruneError(InputError):
    """The pruning asked for cannot be done on this model (exit 2, with a hint)."""


class WipeoutError(PruneError):
    """The ratio would remove every channel of a layer."""


@dataclass
class PruneResult:
    ratio: float
    pruned: list[dict[str, Any]] = field(default_factory=list)   # {layer, type, before, after}
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {layer, type, channels, reason}
    notes: list[str] = field(default_factory=list)
    # torch.nn.MultiheadAttention layers converted to the fused-qkv layout before pruning
    fused_attention: list[str] = field(default_factory=list)

    def to_meta(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "pruned": self.pruned, "skipped": self.skipped,
                "notes": self.notes, "fused_attention": self.fused_attention}


# ---------------------------------------------------------------- helpers
def _width(module: Any) -> int | None:
    """Output size of a prunable layer: conv channels, linear features, RNN hidden units."""
    from torch import nn

    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.RNNBase):
        return module.hidden_size
    return None


def _prunable_layers(model: Any) -> dict[str, Any]:
    return {name: m for name, m in model.named_modules() if _width(m) is not None}


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


def _module_in_traceback(exc: BaseException, names: dict[Any, str]) -> str | None:
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


def _failing_module(model: Any, example: Any) -> tuple[str | None, BaseException | None]:
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
        if failing is not None and _width(failing) is not None and upstream is not None \
                and _width(upstream) is None and any(True for _ in upstream.children()) is False:
            failing = upstream
        return (names[failing] if failing is not None else None), exc
    finally:
        for h in handles:
            h.remove()


def _name_of(obj: Any, names: dict[Any, str]) -> str:
    """A module's name, or for a bare parameter its dotted name (owner.weight)."""
    return names.get(obj) or type(obj).__name__


def _ignore_hint(name: str | None) -> str:
    if not name:
        return "exclude the offending layer with --prune-ignore NAME (recipe: ignore: [NAME])"
    return f"ignore it: --prune-ignore '{name}' (recipe: prune: {{ignore: ['{name}']}})"


def _importance(kind: str) -> Any:
    import torch_pruning as tp

    if kind == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.BNScaleImportance()


class _RecordingImportance:
    """Wraps an importance; remembers the groups it cannot score (e.g. no BN for bn-scale)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.unscored: list[Any] = []
        self.scored = 0

    def __call__(self, group: Any) -> Any:
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


def _copy_with_grads(model: Any) -> Any:
    clone = copy.deepcopy(model)
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        q.grad = None if p.grad is None else p.grad.detach().clone()
    return clone


# ---------------------------------------------------------------- the core
def prune_model(model: Any, spec: Any, *, ratio: float, importance: str = "l1",
                global_pruning: bool = False, round_to: int | None = None,
                ignore: list[str] | tuple[str, ...] = (), rnn_hidden: bool = True,
                head_ratio: float | None = None) -> PruneResult:
    """Prune `model` in place at channel `ratio` and return what was pruned and what was not
    (with reasons). Attention heads go whole at `head_ratio` (default `ratio`; see
    edgekit.passes.attn_prune). For taylor importance the parameters must already hold gradients
    (compute_gradients). Raises PruneError subclasses for impossible requests."""
    if not 0 < ratio < 1:
        raise PruneError(f"pruning ratio {ratio} is outside (0, 1)",
                         hint="--prune 0.5 removes half the channels of each layer")
    run = _Pruning(model, spec, ratio=ratio, importance=importance,
                   global_pruning=global_pruning, round_to=round_to, ignore=ignore,
                   head_ratio=ratio if head_ratio is None else head_ratio)
    run.build_graph()
    run.teach_rnns(rnn_hidden)
    run.prune_channels()
    run.prune_rnn_hidden()
    run.sync_attention()
    run.verify()
    return run.report()


class _Pruning:
    """One pruning run, phase by phase; `reasons` collects why each kept layer was kept."""

    def __init__(self, model: Any, spec: Any, *, ratio: float, importance: str,
                 global_pruning: bool, round_to: int | None, ignore: Any,
                 head_ratio: float = 0.0) -> None:
        import torch

        from edgekit.passes import attn_prune

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
        self.before = {n: _width(m) for n, m in _prunable_layers(model).items()}
        self.reasons: dict[Any, str] = {}
        classifier = find_classifier(model, self.example)
        if classifier is not None:
            self.reasons[classifier] = "final classifier (never pruned)"
        # Ignored standard layers (Conv/Linear/RNN) keep their output width; their inputs follow
        # the layers before them, as Torch-Pruning's ignored layers do. Ignored custom modules
        # (whose channels the graph cannot see) stay exactly as they are: no group that touches
        # them, their own parameters or their outputs is pruned.
        self.blocked: dict[Any, str] = {}
        self.blocked_outputs: dict[Any, str] = {}  # grad_fn of an ignored module's output
        ignored_modules: set[Any] = set()
        for name, m in model.named_modules():
            if name and any(fnmatch.fnmatchcase(name, pat) for pat in ignore):
                for sub_name, sub in m.named_modules(prefix=name):
                    ignored_modules.add(sub)
                    self.reasons.setdefault(sub, "in the prune step's ignore list")
                    if _width(sub) is None:
                        self.blocked[sub] = sub_name
                        for p_name, p in sub.named_parameters(prefix=sub_name, recurse=False):
                            self.blocked[p] = p_name
        if importance == "taylor":
            missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            if missing:
                raise PruneError(f"taylor importance needs gradients, {missing[0]} has none",
                                 hint="call compute_gradients(model, x, y) first")
        self.rnn_skip: dict[Any, str] = {}
        # Attention: heads go whole, the residual width stays (edgekit.passes.attn_prune).
        self.attention = attn_prune.find_attention(model, ignored_modules)
        self.attention_options = {
            **attn_prune.torch_pruning_options(self.attention, head_ratio, self.result.notes),
            **attn_prune.torch_pruning_extras(model, self.attention)} if self.attention else {}
        for proj in attn_prune.residual_outputs(self.attention):
            self.reasons.setdefault(proj, "attention output: the residual width is kept "
                                          "(heads are pruned whole)")

    # ------------------------------------------------------------ phases
    def build_graph(self) -> None:
        """Trace the model into Torch-Pruning's dependency graph, RNNs as opaque layers."""
        import torch
        import torch_pruning as tp
        from torch import nn

        from edgekit.passes import rnn_prune

        self.rnns = [m for m in self.model.modules() if isinstance(m, nn.RNNBase)]
        self.rnn_fn = rnn_prune.rnn_pruner()
        self.scorer = _RecordingImportance(_importance(self.importance))

        def remember_output(module: Any, _inputs: Any, output: Any) -> None:
            first = output[0] if isinstance(output, tuple) else output
            if isinstance(first, torch.Tensor) and first.grad_fn is not None:
                self.blocked_outputs[first.grad_fn] = self.blocked[module]

        hooks = [m.register_forward_hook(remember_output) for m in self.blocked
                 if isinstance(m, nn.Module)]
        caught: list[Any] = []
        try:
            with rnn_prune.opaque_rnns(self.model), \
                    warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.pruner = tp.pruner.BasePruner(
                    self.model, self.example, self.scorer, global_pruning=self.global_pruning,
                    pruning_ratio=self.ratio, round_to=self.round_to,
                    ignored_layers=[m for m in self.reasons if _width(m) is not None],
                    customized_pruners={nn.LSTM: self.rnn_fn, nn.GRU: self.rnn_fn,
                                        nn.RNN: self.rnn_fn},
                    root_module_types=[nn.modules.conv._ConvNd, nn.Linear],
                    **self.attention_options)
        except Exception as exc:  # noqa: BLE001 - Torch-Pruning's tracer failed on this model
            culprit = _module_in_traceback(exc, self.names)
            where = f" at {culprit}" if culprit else ""
            raise PruneError(f"Torch-Pruning cannot trace this model{where}: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                             hint=_ignore_hint(culprit)) from None
        finally:
            for h in hooks:
                h.remove()
        for w in caught:  # e.g. parameters outside standard layers, whose channel axis TP guesses
            self.result.notes.append("Torch-Pruning: " + " ".join(str(w.message).split()))
        self.graph = self.pruner.DG
        self.model.eval()

    def teach_rnns(self, rnn_hidden: bool) -> None:
        """Teach the graph the hybrids' channel → RNN-column mapping; where it cannot be taught,
        the layers feeding the RNN keep their channels. Decide which RNNs keep their hidden size."""
        from edgekit.passes import rnn_prune

        for rnn in self.rnns:
            problem = rnn_prune.teach_sequence_mapping(self.graph, rnn)
            if problem:
                for producer in _producers(self.graph, rnn):
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
        """Torch-Pruning's step over the Conv/Linear groups. It silently skips a group whose
        pruning would empty one of its layers: refuse instead. When the layer that runs out is
        not the group's own (a parameter or layer of another size coupled to it), the graph
        mis-traced the model: say where."""
        graph, names = self.graph, self.names
        wiped: list[str] = []
        mistraced: list[tuple[str, str]] = []
        check = graph.check_pruning_group  # the library's own (bound) method

        def checked(group: Any) -> bool:
            root = group[0].dep.target.module
            hit = self.touches_blocked(group)
            if hit:
                self.reasons.setdefault(root, f"coupled to {hit}, which is in the ignore list")
                return False
            ok = check(group)
            if ok:
                return ok
            root_channels = graph.get_out_channels(root)
            for dep, idxs in group:
                out = graph.is_out_channel_pruning_fn(dep.handler)
                if not out and not graph.is_in_channel_pruning_fn(dep.handler):
                    continue
                size = (graph.get_out_channels if out else graph.get_in_channels)(
                    dep.target.module)
                if size is None or size > len(idxs):
                    continue
                if size == root_channels:
                    wiped.append(f"{_name_of(root, names)} ({root_channels} channels)")
                else:
                    mistraced.append((_name_of(root, names), _name_of(dep.target.module, names)))
                break
            return ok

        # Torch-Pruning 1.6 drops a group that fails check_pruning_group without a word, and
        # has no hook that shows the rejected groups; the only way to see them (to refuse a
        # wipe-out and to name a mistraced layer) is to wrap that method. The wrapper is set on
        # this pruner's own DependencyGraph instance, never on the class, for the length of
        # this one step, and removed after. Pruning itself goes through the supported
        # interactive step: Torch-Pruning yields each accepted group and edgekit prunes it, so
        # a failure there names the group's layer for certain.
        # round_to never empties a layer: Torch-Pruning rounds the channels a layer keeps down
        # to a multiple of round_to, which is 0 for a layer narrower than round_to after
        # pruning (a squeeze-excite squeeze of 8 at ratio 0.25 keeps 6 → 0). Such a layer keeps
        # one multiple of round_to (its whole width when it has no more), and the report says
        # which layers and why. `_round_to` is Torch-Pruning 1.6's one place that rounds; it is
        # wrapped on this pruner instance, for this step only, like check_pruning_group.
        rounded: list[tuple[int, int, int]] = []  # (width, kept before rounding, kept)
        library_round = self.pruner._round_to

        def round_kept(n_pruned: int, current: int, round_to: int) -> int:
            n = library_round(n_pruned, current, round_to)
            if n >= current and n_pruned < current:
                keep = min(current, round_to)
                rounded.append((current, current - n_pruned, keep))
                return current - keep
            rounded.append((0, 0, 0))
            return n

        plain_checked = checked

        def checked_rounding(group: Any) -> bool:
            root = group[0].dep.target.module
            note = rounded.pop() if rounded else (0, 0, 0)
            rounded.clear()
            width, wanted, keep = note
            if width:
                why = (f"round_to {self.round_to}: {wanted} of its {width} channels would "
                       f"remain at ratio {self.ratio:g}, which rounds down to 0")
                if keep >= width:
                    self.reasons.setdefault(root, f"{why}; kept whole")
                    return False
                self.result.notes.append(f"{_name_of(root, names)} keeps {keep} of {width} "
                                         f"channels: {why}")
            return plain_checked(group)

        if self.round_to:
            self.pruner._round_to = round_kept
        graph.check_pruning_group = checked_rounding if self.round_to else checked
        try:
            for group in self.pruner.step(interactive=True):
                try:
                    group.prune()
                except Exception as exc:  # noqa: BLE001
                    layer = _name_of(group[0].dep.target.module, names)
                    raise PruneError(f"Torch-Pruning failed to prune {layer}: "
                                     f"{type(exc).__name__}: {exc}",
                                     hint=_ignore_hint(layer)) from None
        except PruneError:
            raise
        except Exception as exc:  # noqa: BLE001 - raised while Torch-Pruning chose a group
            culprit = _module_in_traceback(exc, names)
            raise PruneError(f"Torch-Pruning failed to prune{' ' + culprit if culprit else ''}: "
                             f"{type(exc).__name__}: {exc}", hint=_ignore_hint(culprit)) from None
        finally:
            vars(graph).pop("check_pruning_group", None)
            vars(self.pruner).pop("_round_to", None)
        if mistraced:
            root, other = mistraced[0]
            owner = other.rsplit(".", 1)[0] if other.endswith((".weight", ".bias")) else other
            raise PruneError(f"Torch-Pruning cannot trace {other}: it couples its sizes to the "
                             f"channels of {root}, which do not match", hint=_ignore_hint(owner))
        if wiped:
            raise WipeoutError(
                f"pruning at ratio {self.ratio:g}{self._rounding()} would remove every channel "
                f"of {', '.join(wiped[:3])}",
                hint="lower the ratio (or --target-macs), lower --round-to, use --local, or "
                     "ignore that layer with --prune-ignore NAME")
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
                    f"pruning at ratio {self.ratio:g}{self._rounding()} would remove every "
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
                    self.reasons[rnn] = f"its output feeds {hit}, which is in the ignore list"
                    continue
                self.rnn_fn.pending[rnn] = plan
                group.prune()
            except Exception as exc:  # noqa: BLE001
                raise PruneError(f"pruning the hidden units of {name} failed: {exc}",
                                 hint=_ignore_hint(name)) from None

    def sync_attention(self) -> None:
        """Attention layers take their new head counts from their cut qkv/proj."""
        from edgekit.passes import attn_prune

        self.result.pruned.extend(attn_prune.sync_head_counts(self.attention))

    def verify(self) -> None:
        """One forward pass on the pruned model; a failure names the module to ignore."""
        culprit, exc = _failing_module(self.model, self.example)
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
                             hint=_ignore_hint(culprit))
        for p in self.model.parameters():
            p.grad = None

    def report(self) -> PruneResult:
        """Every prunable layer, pruned (before/after) or kept (with the reason)."""
        from torch import nn

        layers = _prunable_layers(self.model)
        for name, width in self.before.items():
            module = layers[name]
            kind = type(module).__name__
            if _width(module) != width:
                self.result.pruned.append({"layer": name, "type": kind, "before": width,
                                           "after": _width(module)})
                continue
            reason = self.reasons.get(module) or _why_unchanged(
                self.graph, module, self.reasons, self.names, self.global_pruning, self.ratio,
                width)
            self.result.skipped.append({"layer": name, "type": kind, "channels": width,
                                        "reason": reason})
        for module, name in self.blocked.items():  # ignored custom layers with own weights
            if isinstance(module, nn.Module) and _width(module) is None and \
                    any(True for _ in module.parameters(recurse=False)):
                self.result.skipped.append({"layer": name, "type": type(module).__name__,
                                            "channels": None, "reason": self.reasons[module]})
        return self.result

    def _rounding(self) -> str:
        return f" with round_to {self.round_to}" if self.round_to else ""


def _producers(graph: Any, rnn: Any) -> list[Any]:
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


def _why_unchanged(graph: Any, module: Any, reasons: dict[Any, str], names: dict[Any, str],
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
        trial = _copy_with_grads(model)
        try:
            result = prune_model(trial, spec, ratio=ratio, **options)
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


# ---------------------------------------------------------------- the pass
class PrunePass(Pass):
    name = "prune"
    kind = "torch"
    Config = PruneConfig
    order = 10
    runs_before = ("dwsep",)
    order_hint = ("prune first, then dwsep: Torch-Pruning cannot prune the depthwise convs "
                  "dwsep makes (rank > 1); reorder the steps")
    search = (Knob("prune", "ratio", (0.0, 0.25, 0.5), off=0.0, parse=float, sort=True,
                   help="channel ratios to remove, in [0, 1); 0 = no pruning",
                   settings={"importance": "importance"}, device={"round_to": "round_to"},
                   label=lambda ratio: f"{float(ratio):g}"),)

    def __init__(self, config: PruneConfig | dict[str, Any] | None = None) -> None:
        if isinstance(config, dict) or config is None:
            raw = dict(config or {})
            ratio, target = raw.get("ratio"), raw.get("target_macs")
            if ratio is None and target is None:
                raise ConfigError("the prune step needs a ratio or a target_macs",
                                  hint="--prune 0.5 (half the channels) or --target-macs 0.33")
            if ratio is not None and target is not None:
                raise ConfigError("give the prune step a ratio or a target_macs, not both",
                                  hint="--prune sets channels; --target-macs sets the MACs budget")
            for key, flag, example in (("ratio", "--prune", "0.5 removes half the channels"),
                                       ("target_macs", "--target-macs",
                                        "0.33 keeps a third of the MACs")):
                value = raw.get(key)
                if value is not None and (not isinstance(value, int | float) or
                                          not 0 < float(value) < 1):
                    raise ConfigError(f"{flag} {value} is outside (0, 1)",
                                      hint=f"a fraction between 0 and 1: {flag} {example}")
            if raw.get("importance") is not None and raw["importance"] not in IMPORTANCES:
                raise ConfigError(f"unknown importance {raw['importance']!r}",
                                  hint=f"choose one of: {', '.join(IMPORTANCES)}")
        super().__init__(config)

    def check(self, bundle: Any, ctx: PassContext) -> None:
        """Fail before any work when the data this step needs is missing or an ignore pattern
        names no layer (a typo would otherwise prune the layer it meant to protect)."""
        names = [n for n, _ in bundle.model.named_modules() if n]
        for pattern in self.config.ignore:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                layers = [n for n, m in bundle.model.named_modules() if _width(m) is not None]
                raise ConfigError(f"--prune-ignore {pattern!r} matches no layer of {bundle.name}",
                                  hint=f"layers are: {', '.join(layers[:12])}"
                                       f"{' …' if len(layers) > 12 else ''}")
        if self.config.importance == "taylor" and not (ctx.train_source or ctx.eval_source):
            raise DataError("taylor importance needs labelled data for its gradients, and neither "
                            "--train nor --eval was given",
                            hint="pass --train fashion-mnist:train (or --eval), or use "
                                 "--importance l1")

    def _taylor_data(self, bundle: Any, ctx: PassContext) -> tuple[Any, Any]:
        from edgekit.data import load_dataset

        cfg: PruneConfig = self.config
        n = cfg.taylor_batches * cfg.taylor_batch_size
        if ctx.train_source:
            data = load_dataset(ctx.train_source, bundle.spec, data_dir=ctx.data_dir, limit=n)
        else:
            data = ctx.eval_set(bundle.spec)
            if len(data) > n:
                data = data.sample(n)
        if data.y is None:
            raise MissingLabelsError(f"{data.source} has no labels; taylor importance needs them",
                            hint="use a labelled source or --importance l1")
        return data.x, data.y

    def apply(self, bundle: Any, ctx: PassContext) -> Any:
        from edgekit.passes.stats import model_cost
        from edgekit.progress import stderr_console

        cfg: PruneConfig = self.config
        self.check(bundle, ctx)
        model = _copy_with_grads(bundle.model)
        if cfg.importance == "taylor":
            x, y = self._taylor_data(bundle, ctx)
            compute_gradients(model, x, y, cfg.taylor_batch_size)
        options = {"importance": cfg.importance, "global_pruning": cfg.global_pruning,
                   "round_to": cfg.round_to, "ignore": cfg.ignore, "rnn_hidden": cfg.rnn_hidden,
                   "head_ratio": cfg.head_ratio}
        if cfg.target_macs is not None:
            model, result, _ = prune_to_target(model, bundle.spec, cfg.target_macs,
                                               max_ratio=cfg.max_ratio, steps=cfg.search_steps,
                                               **options)
        else:
            result = prune_model(model, bundle.spec, ratio=cfg.ratio, **options)
        for p in model.parameters():
            p.grad = None
        model.eval()
        bundle.model = model
        heads = {r["layer"]: r["after"] for r in result.pruned if r["type"].endswith(" heads")}
        if result.fused_attention:  # replayed on load, before the head counts
            from edgekit.passes.attn_prune import fused_surgery_record

            bundle.surgery.append(fused_surgery_record(result.fused_attention))
        if heads:  # replayed on load: the state_dict does not hold head counts
            from edgekit.passes.attn_prune import surgery_record

            bundle.surgery.append(surgery_record(heads))
        bundle.meta["pruning"] = {**result.to_meta(), "importance": cfg.importance,
                                  "global": cfg.global_pruning, "round_to": cfg.round_to}
        eval_set = ctx.eval_set(bundle.spec, required=False)
        top1 = None
        if eval_set is not None:
            from edgekit.validate.torch_eval import torch_top1

            top1 = torch_top1(model, eval_set)
        ctx.add_row(step="prune", **model_cost(model, bundle.spec), top1=top1,
                    ratio=round(result.ratio, 4), importance=cfg.importance,
                    pruned=len(result.pruned),
                    skipped=[f"{s['layer']}: {s['reason']}" for s in result.skipped])
        for s in result.skipped:
            stderr_console.print(f"[dim]prune: kept {s['layer']} ({s['type']}, {s['channels']}): "
                                 f"{s['reason']}[/dim]", highlight=False)
        for note in result.notes:
            stderr_console.print(f"[dim]prune: {note}[/dim]", highlight=False)
        return bundle
