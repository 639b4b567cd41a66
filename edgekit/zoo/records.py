"""The trainer's records, typed: what a training run reports (fit's history) and what the
manifest and the report keep of it. They stay JSON mappings (saved in the checkpoint's meta and
the manifest); the TypedDicts name their keys."""

from __future__ import annotations

from typing import Any, TypedDict


class TrainingRecord(TypedDict, total=False):
    """Where a training run ran and in what precision and layout, and why (TrainPlan.record)."""

    device: str
    precision: str
    channels_last: bool
    chosen_by: str
    images_per_s: dict[str, float]


class TeacherRecord(TypedDict, total=False):
    """Where a distillation's teacher logits came from (TeacherLogits.record)."""

    teacher_forwards: int
    teacher_s: float  # seconds the teacher's forward passes took
    teacher_precision: str  # what the teacher ran in (its own plan: fp32 | bf16, +channels_last)
    teacher_engine: str  # torch or onnxruntime fp32, and why (teacher_engine.choose)
    teacher_cache: str | None
    cached_epochs: list[int]
    built_epochs: list[int]
    teacher_cache_note: str


class RunKey(TypedDict):
    """What, besides the teacher and precision, decides the images the teacher sees
    (teacher.run_key_for): part of the teacher cache's key."""

    inputs: str | None
    rows: int
    rows_digest: str
    spec: str
    seed: int
    batch_size: int
    crop_padding: int
    hflip: bool


class EpochRecord(TypedDict, total=False):
    """One epoch of a training run."""

    epoch: int
    loss: float
    lr: float
    images_per_s: float
    top1: float
    holdout_top1: float
    seconds: float


class EarlyStop(TypedDict, total=False):
    """How a training run ended: epochs run (of those planned), why, and the holdout's verdict."""

    epochs_run: int
    epochs_planned: int
    stopped: str
    kept_epoch: int | None
    holdout_images: int
    holdout_top1: float | None
    patience: int | None
    min_delta: float


class History(TypedDict, total=False):
    """What fit returns: every epoch, the best one, the images trained on, the time, where it
    trained, how it ended, and with a teacher where its logits came from."""

    epochs: list[EpochRecord]
    best_epoch: int | None
    best_top1: float | None
    train_images: int
    seconds: float
    training: TrainingRecord
    early_stop: EarlyStop
    teacher: TeacherRecord


class ZooSummary(TypedDict):
    """What `edgekit zoo train` reports of one model (train_zoo_model)."""

    name: str
    test_top1: float
    test_images: int
    target_top1: float
    meets_target: bool
    parameters: int
    train_config: dict[str, Any]  # TrainConfig.model_dump(mode="json")
    history: History


class ShippedRecord(TypedDict, total=False):
    """NAME.json beside a checkpoint edgekit ships (edgekit/_data/zoo/): how it was made, its
    sha256 and size, its test top-1, and its training (config and epochs)."""

    name: str
    sha256: str
    bytes: int
    command: str
    test_top1: float
    test_images: int
    parameters: int
    train_config: dict[str, Any]  # TrainConfig.model_dump(mode="json")
    history: list[EpochRecord]
