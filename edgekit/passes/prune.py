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

import fnmatch
from typing import Any, Literal

from pydantic import Field

from edgekit.errors import ConfigError, DataError, MissingLabelsError
from edgekit.events import emit
from edgekit.passes.base import Knob, Pass, PassConfig, PassContext
from edgekit.passes.channel_pruning import (
    PruneOptions,
    PruneResult,
    prune_model,
    prune_to_target,
)
from edgekit.passes.prune_graph import (
    PruneError,
    WipeoutError,
    channel_width,
    compute_gradients,
    copy_with_grads,
    find_classifier,
)

# What callers import from the pass's module (the run itself lives in channel_pruning.py).
__all__ = ["IMPORTANCES", "PruneConfig", "PruneError", "PrunePass", "PruneResult", "WipeoutError",
           "compute_gradients", "find_classifier", "prune_model", "prune_to_target"]

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
                layers = [n for n, m in bundle.model.named_modules() if channel_width(m) is not None]
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

        cfg: PruneConfig = self.config
        self.check(bundle, ctx)
        model = copy_with_grads(bundle.model)
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
            result = prune_model(model, bundle.spec, ratio=cfg.ratio,
                                 options=PruneOptions(**options))
        for p in model.parameters():
            p.grad = None
        model.eval()
        bundle.model = model
        heads = {r["layer"]: r["after"] for r in result.pruned if r["type"].endswith(" heads")
                 and r["layer"] not in result.window_heads}
        if result.fused_attention:  # replayed on load, before the head counts
            from edgekit.passes.attn_prune import fused_surgery_record

            bundle.surgery.append(fused_surgery_record(result.fused_attention))
        if heads:  # replayed on load: the state_dict does not hold head counts
            from edgekit.passes.attn_prune import surgery_record

            bundle.surgery.append(surgery_record(heads))
        if result.window_heads:  # Swin: the head-aware forward and the head counts, on load
            from edgekit.passes import swin_prune

            bundle.surgery.append(swin_prune.surgery_record(result.window_heads))
        bundle.meta["pruning"] = {**result.to_meta(), "importance": cfg.importance,
                                  "global": cfg.global_pruning, "round_to": cfg.round_to}
        eval_set = ctx.eval_set(bundle.spec, required=False)
        top1 = None
        if eval_set is not None:
            from edgekit.metrics import torch_top1

            top1 = torch_top1(model, eval_set)
        ctx.add_row(step="prune", **model_cost(model, bundle.spec), top1=top1,
                    ratio=round(result.ratio, 4), importance=cfg.importance,
                    pruned=len(result.pruned),
                    skipped=[f"{s['layer']}: {s['reason']}" for s in result.skipped])
        for s in result.skipped:
            emit(f"prune: kept {s['layer']} ({s['type']}, {s['channels']}): {s['reason']}")
        for note in result.notes:
            emit(f"prune: {note}")
        return bundle
