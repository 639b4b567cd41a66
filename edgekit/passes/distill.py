"""Knowledge distillation: the model before compression (ctx.original) teaches the compressed one.

Loss = alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha) · CE(student, y),
trained with the article's recipe (the zoo trainer: augmentation, cosine schedule with warm-up,
progress bar with loss and eval top-1 per epoch). The last epoch is kept: picking the best by
eval top-1 would select on the test data that top-1 is then reported on. A run of more than
patience + 1 epochs stops early when the top-1 on a held-out slice of the TRAINING data plateaus
(and keeps that slice's best epoch); the report row says how many epochs ran and why it ended."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edgekit.errors import ConfigError
from edgekit.passes.base import Pass, PassConfig, PassContext
from edgekit.zoo.records import History


class DistillConfig(PassConfig):
    """Defaults measured on the zoo models pruned to 1/3-1/2 of their MACs, 2 epochs on the
    Fashion-MNIST train split: T=2, alpha=0.5 ended 0.3-0.4 points (of test top-1) closer to
    the teacher than T=4, alpha=0.7 on lenet5, cnn_gru and cnn_lstm, and the zoo recipe's
    lr 3e-3 0.4 points closer than 1e-3 on lenet5."""

    epochs: int = Field(1, ge=1)
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the KL term; 1-alpha for CE")
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    warmup_epochs: float = Field(0.1, ge=0)
    limit: int | None = Field(None, ge=1, description="distill on a stratified subset of N images")
    seed: int = 0
    patience: int | None = Field(2, ge=1, description="stop when the top-1 on a held-out slice "
                                 "of the training data (never the eval set) has not risen by "
                                 "min_delta for this many epochs (runs of more than patience + 1 "
                                 "epochs); None: never stop early")
    min_delta: float = Field(0.002, ge=0, description="holdout top-1 rise (fraction) that counts")
    holdout: float = Field(0.1, gt=0, lt=0.5, description="fraction of the training images "
                           "held out for early stopping")


def distillation_loss(temperature: float, alpha: float):
    """loss_fn(student, x, y, teacher_logits) for the trainer, which gives it the teacher's
    logits of the batch (computed without gradients, or read from the teacher cache)."""
    import torch.nn.functional as F

    def loss_fn(student: Any, x: Any, y: Any, teacher_logits: Any) -> Any:
        logits = student(x)
        kl = F.kl_div(F.log_softmax(logits.float() / temperature, dim=1),
                      F.log_softmax(teacher_logits.float() / temperature, dim=1),
                      reduction="batchmean", log_target=True) * temperature**2
        return alpha * kl + (1 - alpha) * F.cross_entropy(logits, y)

    return loss_fn


def _nothing_changed(bundle: Any, ctx: PassContext) -> bool:
    """True when compression steps ran before this one (rows in the report) and the model still
    equals the original, weight for weight (e.g. dwsep found no conv to substitute). A distill
    run on its own (self-distillation, asked for explicitly) is not skipped."""
    import torch

    if not any(r.get("step") not in ("original", "distill") for r in ctx.report):
        return False
    mine, theirs = bundle.model.state_dict(), ctx.original.model.state_dict()
    return mine.keys() == theirs.keys() and all(
        mine[k].shape == theirs[k].shape and torch.equal(mine[k], theirs[k]) for k in mine)


class DistillPass(Pass):
    name = "distill"
    kind = "torch"
    order = 30  # after the passes that change the architecture (optimize: its own schedule)
    Config = DistillConfig

    def check(self, bundle: Any, ctx: PassContext) -> None:
        """Say what is missing before any step runs: distillation trains, so it needs --train."""
        if ctx.train_source is None:
            from edgekit.errors import DataError

            raise DataError("distillation needs training data and no --train was given",
                            hint="pass --train fashion-mnist:train (or your own source), or "
                                 "--distill-epochs 0 to compress without distilling")

    def apply(self, bundle: Any, ctx: PassContext) -> Any:
        from edgekit.passes.stats import model_cost
        from edgekit.zoo.train import FitOptions, TrainConfig, fit

        cfg: DistillConfig = self.config
        if ctx.original is None:
            raise ConfigError("distillation needs the original model as teacher",
                              hint="run distill after prune or dwsep in the same compress run")
        if _nothing_changed(bundle, ctx):
            ctx.add_row(step="distill", note="skipped: the compression steps left the model "
                        "unchanged, so there is nothing to distill")
            return bundle
        raw = ctx.train_images()
        eval_set = ctx.eval_set(bundle.spec, required=False)
        train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                warmup_epochs=cfg.warmup_epochs, limit=cfg.limit, seed=cfg.seed,
                                patience=cfg.patience, min_delta=cfg.min_delta,
                                holdout=cfg.holdout)
        from edgekit.zoo.accel import TrainSettings
        from edgekit.zoo.teacher import TeacherLogits

        teacher = TeacherLogits(ctx.original.model)
        options = FitOptions(loss_fn=distillation_loss(cfg.temperature, cfg.alpha),
                             train=ctx.train or TrainSettings(), teacher=teacher)
        history = fit(bundle.model, raw, bundle.spec, eval_set, train_cfg, options=options,
                      description=f"Distilling {bundle.name}")
        bundle.meta.setdefault("history", {})["distill"] = history
        ctx.add_row(step="distill", **model_cost(bundle.model, bundle.spec),
                    top1=history["epochs"][-1].get("top1"), **training_row(history))
        return bundle


def training_row(history: History) -> dict[str, Any]:
    """The report row's (and so the manifest's) account of a training run: where it ran, in
    what precision, and where the teacher's logits came from."""
    plan = history.get("training") or {}
    row: dict[str, Any] = {"train_device": plan.get("device"),
                           "train_precision": plan.get("precision")
                           + ("+channels_last" if plan.get("channels_last") else "")}
    stop = history.get("early_stop")
    if stop is not None:  # epochs run (of those planned) and why the run ended
        row.update(epochs=stop["epochs_run"], stopped=stop["stopped"])
    else:
        row["epochs"] = len(history.get("epochs", []))
    teacher = history.get("teacher")
    if teacher is not None:
        cached, built = teacher.get("cached_epochs") or [], teacher.get("built_epochs") or []
        row["teacher"] = ("cached" if cached and not built else "cached in part" if cached
                          else "computed, cached" if built else "on the fly")
        row["teacher_forwards"] = teacher.get("teacher_forwards", 0)
    return row
