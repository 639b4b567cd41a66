"""The article's training recipe, shared by `edgekit zoo train` and the distillation pass.

Recipe: AdamW (or SGD with momentum), linear warm-up then cosine decay of the learning rate per
step, augmentation by random crop with padding and horizontal flip applied to model-ready tensors,
evaluation after every epoch (the last epoch is kept unless keep_best). The loss is pluggable
(`loss_fn(model, x, y) -> loss`), so distillation can pass KL + cross-entropy and keep the rest.
Everything random draws from generators seeded by `TrainConfig.seed`, so a run is repeatable.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgekit.data import Dataset, RawImages
from edgekit.errors import DataError, MissingLabelsError
from edgekit.events import emit
from edgekit.metrics import torch_top1
from edgekit.spec import InputSpec
from edgekit.zoo.records import EarlyStop, EpochRecord, History, RunKey, ZooSummary

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from edgekit.io.models import ModelBundle
    from edgekit.zoo.accel import TrainPlan, TrainSettings
    from edgekit.zoo.teacher import TeacherLogits

LossFn = Callable[["nn.Module", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


class TrainConfig(BaseModel):
    """Hyperparameters of the recipe. Unknown keys are errors, so a typo is never a silent default."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(0.1, ge=0, description="linear warm-up length; fractions allowed")
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    # 1 pixel, not the usual 2-4: in a 3-epoch budget wider shifts cost accuracy (3 epochs, seed 0:
    # lenet5 0.895 at 1 vs 0.888 at 2 and 0.880 at 3; cnn_lstm 0.902 at 1 vs 0.894 at 2).
    crop_padding: int = Field(1, ge=0, le=8, description="pixels of padding for the random crop")
    hflip: bool = True
    seed: int = 0
    num_threads: int | None = Field(None, ge=1, description="torch threads; None leaves torch's")
    limit: int | None = Field(None, ge=1, description="train on a stratified subset of N images")
    # Off by default: choosing the epoch by its eval (test) top-1 would make that number an
    # optimistic estimate. The cosine schedule ends at a small learning rate; the last epoch stays.
    keep_best: bool = Field(False, description="restore the epoch with the best eval top-1 "
                                               "(selects on the eval set)")
    # Early stopping decides on a held-out slice of the training data, never on the eval set.
    patience: int | None = Field(None, ge=1, description="stop when the holdout top-1 has not "
                                 "risen by min_delta for this many epochs; None: never")
    min_delta: float = Field(0.002, ge=0, description="the rise in holdout top-1 (a fraction) "
                                                      "that counts as progress")
    holdout: float = Field(0.1, gt=0, lt=0.5, description="fraction of the training images "
                                                          "held out to decide early stopping")


# ---------------------------------------------------------------- augmentation and schedule
def augment(x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator,
            pad_value: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Random crop with `cfg.crop_padding` pixels of padding, then a random horizontal flip
    (p=0.5), per image, on a model-ready (B, C, H, W) batch.

    `pad_value` is what black becomes after normalisation ((0 - mean) / std): a scalar or a
    per-channel tensor, so the padding looks like the images' own background.
    """
    import torch

    b, c, h, w = x.shape
    p = cfg.crop_padding
    if p > 0:
        fill = torch.as_tensor(pad_value, dtype=x.dtype).reshape(1, -1, 1, 1)
        padded = fill.expand(b, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p:p + h, p:p + w] = x
        oy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        rows = (oy[:, None] + torch.arange(h))[:, :, None]  # (B, H, 1)
        cols = (ox[:, None] + torch.arange(w))[:, None, :]  # (B, 1, W)
        batch = torch.arange(b)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
    if cfg.hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def black_value(spec: InputSpec) -> torch.Tensor:
    """Per-channel value of a black pixel after the spec's normalisation."""
    import torch

    mean = torch.tensor(spec.mean, dtype=torch.float32)
    std = torch.tensor(spec.std, dtype=torch.float32)
    return (0.0 - mean) / std


def cosine_warmup_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                           warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LR multiplier: rises linearly from ~0 to 1 over `warmup_steps`, then follows a
    half cosine from 1 down to 0 at `total_steps`."""
    import torch

    total_steps = max(1, int(total_steps))
    warmup_steps = max(0, min(int(warmup_steps), total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        decay_steps = max(1, total_steps - warmup_steps)
        progress_ = min(1.0, (step - warmup_steps) / decay_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress_))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default loss: cross-entropy of the model's logits against the labels."""
    import torch.nn.functional as F

    return F.cross_entropy(model(x), y)


# ---------------------------------------------------------------- the loop
@dataclass(frozen=True)
class FitOptions:
    """How fit trains beyond the recipe: `loss_fn` (default cross-entropy), `train` where and in
    what precision (edgekit.zoo.accel; None: CPU, fp32), `teacher` the teacher's logits per batch
    (edgekit.zoo.teacher), with which loss_fn is called as loss_fn(model, x, y, teacher_logits)."""

    loss_fn: LossFn | None = None
    train: TrainSettings | TrainPlan | None = None
    teacher: TeacherLogits | None = None


def fit(model: nn.Module, raw_train: RawImages | Any, spec: InputSpec, eval_set: Dataset | None,
        cfg: TrainConfig, *, options: FitOptions | None = None,
        description: str = "Training") -> History:
    """Train `model` in place with the recipe and return its history.

    Preprocesses `raw_train` with `spec` once, then every step augments a shuffled batch, applies
    the loss, steps the optimizer and the warm-up/cosine schedule. After each epoch it measures
    top-1 on `eval_set` (when given) and, with `cfg.keep_best`, restores the best epoch's
    weights at the end. The model is left in eval mode, on the CPU.

    Early stopping (`cfg.patience`, when the run has more than patience + 1 epochs): a stratified
    `cfg.holdout` slice of the TRAINING data (never `eval_set`) is held out of training; after
    each epoch its top-1 is measured, and when it has not risen by `cfg.min_delta` for
    `cfg.patience` epochs the run stops and the weights of its best holdout epoch are restored.

    `options` (FitOptions): the loss, the teacher, and where and in what precision: the model
    and each batch move there, forward passes run under its autocast.
    Returns its History (edgekit/zoo/records.py): every epoch, the best one, the images, the
    time, where it trained, how it ended (and with a teacher where its logits came from)."""
    import torch

    options = options or FitOptions()
    train, teacher = options.train, options.teacher
    data = _TrainData(raw_train, spec, cfg)
    from edgekit.zoo.accel import TrainPlan, TrainSettings, plan_training, release_model

    settings = train if isinstance(train, TrainSettings) else None
    if settings is not None:
        train = plan_training(model, tuple(spec.shape), cfg.batch_size, settings)
    plan = train or TrainPlan()
    plan.place_model(model)
    if teacher is not None:
        # the teacher's own plan (its model's measured choice, not the student's): every
        # student of one teacher reads the same cached logits whatever layout or precision
        # each one trains in (a pruned student's own plan can differ from its sibling's)
        teacher_plan = plan if settings is None else \
            plan_training(teacher.teacher, tuple(spec.shape), cfg.batch_size, settings)
        teacher.start(teacher_plan, data.teacher_key(spec, cfg), len(data.rows), cfg.epochs)
    previous_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    loop = _Loop(model, data, cfg, plan, options.loss_fn or cross_entropy_loss, teacher)
    history: History = {"epochs": [], "best_epoch": None, "best_top1": None,
                               "train_images": len(data.rows), "training": plan.record()}
    started = time.perf_counter()
    try:
        loop.run(history, eval_set, description)
    finally:
        data.close()
        release_model(model)
        if teacher is not None:
            teacher.finish()
            history["teacher"] = teacher.record()
        if cfg.num_threads:
            torch.set_num_threads(previous_threads)
    model.eval()
    history["seconds"] = time.perf_counter() - started
    return history


def split_holdout(labels: np.ndarray, rows: np.ndarray, fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows): `fraction` of `rows`' count (at least one per class),
    stratified, drawn from the images outside `rows` when there are enough of them (a `limit`
    left them unused), else carved out of `rows`."""
    from edgekit.data.dataset import stratified_indices

    classes = len(np.unique(labels[rows]))
    n = max(classes, math.ceil(fraction * len(rows)))
    unused = np.setdiff1d(np.arange(len(labels)), rows)
    if len(unused) >= n:
        return rows, unused[stratified_indices(labels[unused], n, seed + 1)]
    n = min(n, len(rows) - 1)
    held = rows[stratified_indices(labels[rows], n, seed + 1)]
    return np.setdiff1d(rows, held), held


class _TrainData:
    """The rows trained on (and held out), as preprocessed tensors or a streamed folder."""

    def __init__(self, raw_train: RawImages | Any, spec: InputSpec, cfg: TrainConfig) -> None:
        import torch

        from edgekit.data.dataset import stratified_indices
        from edgekit.data.folders import FolderTrainSet

        if raw_train.labels is None:
            raise MissingLabelsError(f"{raw_train.source} has no labels; training needs them")
        self.raw = raw_train
        self.streamed = isinstance(raw_train, FolderTrainSet)  # decoded per batch by workers
        labels = np.asarray(raw_train.labels, np.int64)
        rows = np.arange(len(labels))
        if cfg.limit is not None and cfg.limit < len(rows):
            rows = stratified_indices(labels, cfg.limit, cfg.seed)
        if len(rows) == 0:
            raise DataError(f"{raw_train.source} holds no images to train on")
        self.holdout = np.zeros(0, np.int64)
        if early_stopping(cfg) and len(rows) > 1:
            rows, self.holdout = split_holdout(labels, rows, cfg.holdout, cfg.seed)
        self.rows = rows
        if raw_train.model_ready:
            _note_model_ready(raw_train.source, cfg)
        self.x_all = None if self.streamed else torch.from_numpy(raw_train.model_inputs(spec, rows))
        self.y_all = torch.from_numpy(labels[rows])
        self.x_held = None if self.streamed or not len(self.holdout) else \
            torch.from_numpy(raw_train.model_inputs(spec, self.holdout))
        self.y_held = torch.from_numpy(labels[self.holdout])
        self.folder = None
        if self.streamed:
            from edgekit.data.loader import FolderLoader

            self.folder = FolderLoader(raw_train.index, spec, cfg.batch_size)
        self.pad_value = black_value(spec)

    def teacher_key(self, spec: InputSpec, cfg: TrainConfig) -> RunKey:
        from edgekit.zoo.teacher import run_key_for

        return run_key_for(None if self.x_all is None else self.x_all.numpy(),
                           list(self.raw.index.files) if self.streamed else None, spec, cfg,
                           self.rows)

    def batches(self, order: torch.Tensor, batch_size: int):
        return _batches(self.folder, self.rows, self.x_all, self.y_all, order, batch_size)

    def holdout_batches(self, batch_size: int):
        """The held-out images in a fixed order, unaugmented."""
        import torch

        if self.streamed:
            yield from self.folder.epoch(self.holdout)
            return
        yield from _batches(None, self.holdout, self.x_held, self.y_held,
                            torch.arange(len(self.holdout)), batch_size)

    def close(self) -> None:
        if self.folder is not None:
            self.folder.close()


def early_stopping(cfg: TrainConfig) -> bool:
    """Whether the run can stop early: a patience, and more epochs than patience + 1."""
    return cfg.patience is not None and cfg.epochs > cfg.patience + 1


def _note_model_ready(source: str, cfg: TrainConfig) -> None:
    kinds = [k for k, on in ((f"random crop with {cfg.crop_padding} px padding",
                              cfg.crop_padding > 0), ("horizontal flip", cfg.hflip)) if on]
    how = f"in tensor space only ({', '.join(kinds)})" if kinds else "not at all"
    emit(f"note: {source} holds model-ready float inputs: training augments them {how}; "
         "nothing is resized or normalised")


class _Loop:
    """The epochs of one run: optimizer, schedule, the steps, evaluation and early stopping."""

    def __init__(self, model: nn.Module, data: _TrainData, cfg: TrainConfig, plan: TrainPlan,
                 loss_fn: LossFn, teacher: TeacherLogits | None) -> None:
        import torch

        self.model, self.data, self.cfg, self.plan = model, data, cfg, plan
        self.loss_fn, self.teacher = loss_fn, teacher
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.steps_per_epoch = math.ceil(len(data.rows) / cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.optimizer = _make_optimizer(model, cfg)
        self.scheduler = cosine_warmup_schedule(self.optimizer, self.total_steps,
                                                round(cfg.warmup_epochs * self.steps_per_epoch))
        self.stopper = _EarlyStop(cfg, len(data.holdout)) if early_stopping(cfg) else None

    def run(self, history: History, eval_set: Dataset | None, description: str) -> None:
        from edgekit.progress import progress

        cfg = self.cfg
        best_state: dict[str, torch.Tensor] | None = None
        with progress(description, total=self.total_steps) as advance:
            for epoch in range(1, cfg.epochs + 1):
                epoch_start = time.perf_counter()
                record = self.epoch(epoch, advance)
                if self.stopper is not None:
                    record["holdout_top1"] = self.holdout_top1()
                if eval_set is not None:
                    record["top1"] = torch_top1(self.model, eval_set)
                    advance(0, epoch=f"{epoch}/{cfg.epochs}", loss=f"{record['loss']:.3f}",
                            top1=f"{record['top1']:.4f}")
                    if history["best_top1"] is None or record["top1"] > history["best_top1"]:
                        history["best_top1"], history["best_epoch"] = record["top1"], epoch
                        if cfg.keep_best:  # None: the final weights are the best ones
                            best_state = copy.deepcopy(self.model.state_dict()) \
                                if epoch < cfg.epochs else None
                record["seconds"] = time.perf_counter() - epoch_start
                history["epochs"].append(record)
                if self.stopper is not None and self.stopper.update(epoch, record, self.model):
                    advance(self.total_steps - epoch * self.steps_per_epoch)
                    break
        if self.stopper is not None:
            history["early_stop"] = self.stopper.finish(self.model, len(history["epochs"]))
        elif cfg.keep_best and best_state is not None:
            self.model.load_state_dict(best_state)
        if "early_stop" not in history:
            history["early_stop"] = {"epochs_run": len(history["epochs"]),
                                     "stopped": "all epochs ran (no early stopping)"}

    def epoch(self, epoch: int, advance: Any) -> EpochRecord:
        """One pass over the shuffled, augmented training rows; its record."""
        import torch

        model, plan, teacher, cfg = self.model, self.plan, self.teacher, self.cfg
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(self.data.rows), generator=self.generator)
        loss_sum, seen = 0.0, 0
        if teacher is not None:
            teacher.begin_epoch(epoch)
        for x_batch, y in self.data.batches(order, cfg.batch_size):
            x = plan.place_inputs(augment(x_batch, cfg, self.generator, self.data.pad_value))
            y = y.to(plan.device, non_blocking=True)
            # the teacher's logits under its own plan, outside the student's autocast
            taught = None if teacher is None else teacher.logits(epoch, seen, x)
            with plan.autocast():
                loss = self.loss_fn(model, x, y) if taught is None else \
                    self.loss_fn(model, x, y, taught)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
            advance(1, epoch=f"{epoch}/{cfg.epochs}", loss=f"{loss_sum / seen:.3f}")
        if teacher is not None:
            teacher.end_epoch(epoch)
        return {"epoch": epoch, "loss": loss_sum / seen, "lr": self.optimizer.param_groups[0]["lr"],
                "images_per_s": round(seen / (time.perf_counter() - start), 1)}

    def holdout_top1(self) -> float:
        """Top-1 on the held-out training images (unaugmented), on the training device."""
        import torch

        self.model.eval()
        right = total = 0
        with torch.no_grad(), self.plan.autocast():
            for x, y in self.data.holdout_batches(max(self.cfg.batch_size, 256)):
                pred = self.model(self.plan.place_inputs(x)).argmax(1).cpu()
                right += int((pred == y).sum())
                total += len(y)
        return right / max(total, 1)


class _EarlyStop:
    """Stop when the holdout top-1 has not risen by `min_delta` for `patience` epochs; keep the
    weights of the best holdout epoch."""

    def __init__(self, cfg: TrainConfig, holdout_images: int) -> None:
        self.cfg, self.holdout_images = cfg, holdout_images
        self.best: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, Any] | None = None
        self.since = 0
        self.stopped: str | None = None

    def update(self, epoch: int, record: dict[str, Any], model: nn.Module) -> bool:
        """After an epoch: True when the run should stop now."""
        top1 = record["holdout_top1"]
        if self.best is None or top1 >= self.best + self.cfg.min_delta:
            self.best, self.best_epoch, self.since = top1, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict()) if epoch < self.cfg.epochs else None
            return False
        self.since += 1
        if self.since >= self.cfg.patience and epoch < self.cfg.epochs:
            self.stopped = (f"plateau: holdout top-1 {top1:.4f} has not risen by "
                            f"{self.cfg.min_delta:g} over {self.best:.4f} (epoch "
                            f"{self.best_epoch}) for {self.since} epochs")
            return True
        return False

    def finish(self, model: nn.Module, epochs_run: int) -> EarlyStop:
        """Restore the best holdout epoch's weights; what the manifest records."""
        if self.best_state is not None and self.best_epoch != epochs_run:
            model.load_state_dict(self.best_state)
        return {"epochs_run": epochs_run, "epochs_planned": self.cfg.epochs,
                "stopped": self.stopped or "all epochs ran", "kept_epoch": self.best_epoch,
                "holdout_images": self.holdout_images, "holdout_top1": self.best,
                "patience": self.cfg.patience, "min_delta": self.cfg.min_delta}


def _batches(folder: Any, rows: np.ndarray, x_all: torch.Tensor | None,
             y_all: torch.Tensor, order: torch.Tensor, batch_size: int):
    """(x, y) batches in `order`: slices of the preprocessed tensor, or an image folder streamed
    through torch's DataLoader with worker processes (edgekit.data.loader.FolderLoader)."""
    if x_all is None:
        yield from folder.epoch(rows[order.numpy()])
        return
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield x_all[idx], y_all[idx]


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on biases and normalisation parameters (1-d tensors)."""
    import torch

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


# ---------------------------------------------------------------- zoo training
def train_zoo_model(name: str, cfg: TrainConfig | None = None, *,
                    data_dir: str | Path | None = None, eval_limit: int | None = None,
                    model_kwargs: dict[str, Any] | None = None) -> tuple[ModelBundle, ZooSummary]:
    """Build zoo model `name`, train it on Fashion-MNIST train, measure top-1 on the test split.

    `cfg` defaults to the registry's per-model settings. Returns the trained bundle (its meta
    holds name, train config, test top-1 and history, ready for save_checkpoint) and a summary.
    """
    import torch

    from edgekit.data import load_dataset, load_raw
    from edgekit.zoo import build, default_spec, get_entry

    entry = get_entry(name)
    if cfg is None:
        cfg = TrainConfig(**{"epochs": entry.epochs, **entry.train})
    spec = default_spec(name)
    raw_train = load_raw("fashion-mnist:train", data_dir=data_dir)
    test_set = load_dataset("fashion-mnist:test", spec, data_dir=data_dir, limit=eval_limit,
                            seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    bundle = build(name, **(model_kwargs or {}))
    history = fit(bundle.model, raw_train, spec, test_set, cfg,
                  description=f"Training {name}")
    test_top1 = torch_top1(bundle.model, test_set)
    summary: ZooSummary = {
        "name": name,
        "test_top1": test_top1,
        "test_images": len(test_set),
        "target_top1": entry.target_top1,
        "meets_target": test_top1 >= entry.target_top1,
        "parameters": sum(p.numel() for p in bundle.model.parameters()),
        "train_config": cfg.model_dump(mode="json"),
        "history": history,
    }
    bundle.meta.update({"name": name, "train_config": summary["train_config"],
                        "test_top1": test_top1, "test_images": len(test_set),
                        "history": history})
    return bundle, summary
