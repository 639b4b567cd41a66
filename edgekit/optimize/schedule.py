"""The distillation schedule of `edgekit optimize` (successive halving) and its plan.

Two rungs: every candidate that changes the architecture and can still enter the front gets the
short distillation; the full one goes to the candidates that can still change the winner, as many
as the time budget pays for. The rungs are a function of the model, the data and the budget:

- the short rung's images (`short_limit: auto`) are a fraction of the training set
  (`short_fraction`, 10 %), at least 2,000 images and at least one image per 2,000 weights of the
  model (a ResNet-18's 11 M weights: 5,600 images), never more than the training set. On the
  ResNet-18 for Fashion-MNIST of issue 28, 2,000 images left prune 0.5 8.5 points under the
  original, and 6,000 images (the README's hand-set schedule) found the win;
- the number of full distillations is what the budget left pays for, once one short
  distillation has been timed (`Plan`): the full rung costs the short one's seconds per image
  times its images;
- when the budget cannot pay for the short rung on the architectures still planned (and one
  full distillation after them), the short rung is shrunk once to what it pays for, never under
  SHORT_FLOOR images (`Plan.short_fit`), and the plan line says so;
- with a time budget, the trials go on past `--trials` while the time left pays for one more
  candidate, until the space is exhausted or STALE_TRIALS in a row add nothing to the front
  (`Plan.keep_sampling`).

Torch-free (the space is read by recipes and the CLI before anything heavy is imported).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgekit.optimize.records import Measurement

MIN_SHORT_IMAGES = 2000
SHORT_FLOOR = 512  # a short rung the budget shrinks never goes under this many images
STALE_TRIALS = 5  # trials past --trials stop after this many in a row add nothing to the front
WEIGHTS_PER_IMAGE = 2000  # the short rung has at least one image per this many weights
# A distillation's seconds over its images at the training steps' measured speed: the ResNet-18
# of issue 28 on a 2-core AVX2 CPU distilled 6,000 images in 171 s (49 s of them the teacher's
# forwards) where its steps' micro-benchmark said 56.8 images/s (106 s): 1.6
PRICE_OVERHEAD = 1.6
_ALL = 10**12  # "the whole training set" when comparing rungs


class DistillSchedule(BaseModel):
    """Successive halving of distillation: every candidate that can still enter the front gets
    the short schedule; after the trials, while the time budget lasts, the best short-only
    candidate of each architecture that is faster than the winner gets the full one, fastest
    first, whatever its short result: once a faster one meets the budget, the slower ones can
    no longer change the winner and are not trained again. A `promote_margin` (points) also
    promotes during the trials the ones whose short result is within it of entering the front
    (and of the budget): a full front sooner, at the cost of distilling architectures that a
    faster one would have made moot. A candidate whose architecture's full distillation exists
    already is carried to the full rung at once (an export and a timing).

    Measured on the README's ResNet-18 search (benchmarks/bench_resnet_cost.py, 2-core AVX2
    CPU): with `promote_margin` 5 the first pruned candidate sampled (prune 0.25) was fully
    distilled during the trials (1,456 s of the search's 2,843); the winner was the faster
    prune 0.5, which meets the budget distilled from the original too (+0.12 points in the
    run of the code before issue 28). By default the same search fully distilled prune 0.5
    alone: the same winner, one full distillation instead of two (2,393 s on a machine that ran
    the fp32 original 1.52× as long)."""

    model_config = ConfigDict(extra="forbid")

    short_epochs: int = Field(1, ge=1)
    short_limit: int | Literal["auto"] | None = Field(
        "auto", description="images of the short distillation (auto: `short_fraction` of the "
        f"training set, at least {MIN_SHORT_IMAGES:,} and one per {WEIGHTS_PER_IMAGE:,} weights "
        "of the model; none: the whole training set)")
    short_fraction: float = Field(0.1, gt=0, le=1, description="the training set's share of "
                                  "the short rung when short_limit is auto")
    full_epochs: int = Field(1, ge=1)
    full_limit: int | None = Field(None, ge=1, description="images of the full distillation "
                                   "(none: the whole training set)")
    promote_margin: float | None = Field(None, ge=0, description="points a full distillation "
                                         "may still gain over the short one, for promotion "
                                         "during the trials (none: only after them, fastest "
                                         "first, as the budget allows)")
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    inherit: bool | None = Field(None, description="start a candidate pruned further than an "
                                 "already distilled one from its distilled weights "
                                 "(edgekit.optimize.inherit; None: INHERIT_DEFAULT, measured)")

    @property
    def has_full(self) -> bool:
        return (self.full_epochs, self.full_limit) != (self.short_epochs, self.short_limit)

    @model_validator(mode="after")
    def _short_is_shorter(self) -> DistillSchedule:
        if self.short_limit == "auto":  # checked when resolved against the training set
            return self
        if isinstance(self.short_limit, int) and self.short_limit < 1:
            raise ValueError(f"short_limit must be at least 1 image, got {self.short_limit}")
        short = self.short_epochs * (self.short_limit or _ALL)
        full = self.full_epochs * (self.full_limit or _ALL)
        if short > full:
            raise ValueError("the short distillation is longer than the full one "
                             f"({self.short_epochs} epochs × {self.short_limit or 'all'} images "
                             f"against {self.full_epochs} × {self.full_limit or 'all'})")
        return self

    def resolve(self, train_size: int, weights: int) -> DistillSchedule:
        """The schedule with `short_limit: auto` made a number of images for this training set
        (`train_size` images) and this model (`weights` parameters)."""
        if self.short_limit != "auto":
            return self
        full = min(train_size, (self.full_limit or _ALL)) * self.full_epochs
        wanted = max(MIN_SHORT_IMAGES, math.ceil(self.short_fraction * train_size),
                     math.ceil(weights / WEIGHTS_PER_IMAGE))
        images = max(1, min(wanted, train_size, full // self.short_epochs))
        if images * self.short_epochs >= full:  # the short rung would be the full one: one rung
            return self.model_copy(update={"short_epochs": self.full_epochs,
                                           "short_limit": self.full_limit})
        return self.model_copy(update={"short_limit": images})

    def images(self, rung: str, train_size: int | None) -> int | None:
        """Images one distillation of `rung` ('short' | 'full') trains on, all epochs counted
        (None: unknown, the training set's size is not known)."""
        epochs, limit = (self.short_epochs, self.short_limit) if rung == "short" else \
            (self.full_epochs, self.full_limit)
        if limit == "auto":
            return None
        if limit is None:
            return None if train_size is None else epochs * train_size
        return epochs * (limit if train_size is None else min(limit, train_size))


def training_size(source: str, spec: Any, data_dir: str | None = None) -> int:
    """How many images a training source holds (image folders are indexed, not read)."""
    from pathlib import Path

    from edgekit.data.sources import _is_images, load_dataset, load_raw

    path = Path(source)
    if path.suffix == ".npz" or _is_images(path):
        return len(load_dataset(source, spec, data_dir=data_dir))
    return len(load_raw(source, data_dir=data_dir))


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class Plan:
    """One device's plan: how many candidates, the rungs' images, how many full distillations
    the budget pays for, and the ETA, re-planned as the costs are measured (the first short
    distillation's seconds per image prices the full rung)."""

    trials: int  # candidates to try
    short_images: int | None  # per short distillation (epochs counted)
    full_images: int | None  # per full distillation
    budget: float | None  # seconds for the whole search (None: no limit)
    archs: int = 1  # architectures that change (each distilled once per rung)
    short_s: float | None = None  # measured: one short distillation
    full_s: float | None = None  # measured: one full distillation
    trial_s: list[float] = field(default_factory=list)  # measured: each trial's seconds
    full_done: int = 0  # full distillations made
    short_done: int = 0  # short distillations made
    space: int | None = None  # candidates in the space (past `trials` while the budget lasts)
    short_was: int | None = None  # the short rung's images before the budget shrank it
    short_priced: bool = False  # short_s is a price (from the training speed), not a timing

    def note_costs(self, cost: dict[str, float], steps: list[Measurement]) -> None:
        """What one trial cost: its seconds, and each distillation it made (a step's
        `distill_s`: 0 when the rung's model was made before)."""
        self.trial_s.append(float(cost.get("total_s") or 0.0))
        for step in steps:
            seconds = float(step.get("distill_s") or 0.0)
            if seconds <= 0:
                continue
            if step.get("stage") == "full":
                self.full_done += 1
                self.full_s = seconds if self.full_s is None else self.full_s
            elif step.get("stage") == "short":
                self.short_done += 1
                if self.short_s is None or self.short_priced:
                    self.short_s, self.short_priced = seconds, False

    def price_short(self, images_per_s: float) -> None:
        """The short rung's seconds before one was timed: its images at `images_per_s` (the
        training steps' speed measured here) times PRICE_OVERHEAD (the teacher's forwards, data,
        the epoch's end)."""
        if self.short_s is None and self.short_images:
            self.short_s = self.short_s_at(images_per_s)
            self.short_priced = True

    def short_s_at(self, images_per_s: float) -> float:
        """The price of one short distillation whose training steps run at `images_per_s`."""
        return PRICE_OVERHEAD * (self.short_images or 0) / max(images_per_s, 1e-9)

    @property
    def typical_trial_s(self) -> float:
        return sorted(self.trial_s)[len(self.trial_s) // 2] if self.trial_s else 0.0

    def full_cost(self) -> float | None:
        """Seconds of one full distillation: measured, or priced from the short one."""
        if self.full_s is not None:
            return self.full_s
        if self.short_s is None:
            return None
        if self.short_images and self.full_images:
            return self.short_s * self.full_images / self.short_images
        return None

    def full_allowed(self, left: float | None) -> int:
        """Full distillations the time `left` pays for (all the architectures with no limit;
        before any distillation was timed, one)."""
        if left is None:
            return self.archs
        cost = self.full_cost()
        if cost is None:
            return 1 if left > 0 else 0
        return max(0, min(self.archs, int(left // max(cost, 1e-3))))

    def short_fit(self, left: float | None) -> int | None:
        """The short rung's images (epochs counted) that the time `left` pays for on the short
        distillations still planned (one per architecture, within the trials) and the full one
        after them, at the measured seconds per image; None when it pays for the rung as it
        is (or nothing was timed yet, or there is no limit). Never under SHORT_FLOOR images
        (nor over the rung as it is); shrunk once, not again at every trial."""
        if left is None or self.short_s is None or not self.short_images or self.short_was:
            return None
        planned = max(0, min(self.archs, self.trials) - self.short_done)
        if planned == 0 or self.short_images <= SHORT_FLOOR:
            return None
        per_image = self.short_s / self.short_images
        full = (self.full_cost() or 0.0) if self.full_images else 0.0
        if planned * self.short_s + full <= left:
            return None
        images = int(max(0.0, left - full) / (planned * max(per_image, 1e-9)))
        images = max(SHORT_FLOOR, images)
        return images if images < self.short_images else None

    def shrink_short(self, images: int) -> None:
        """The short rung is now `images` (epochs counted): its seconds are priced again at the
        measured seconds per image (the full rung's price stays), and the line says from how
        many it was shrunk."""
        if self.short_s is not None and self.short_images:
            self.short_s = self.short_s * images / self.short_images
        self.short_was = self.short_was or self.short_images
        self.short_images = images

    def keep_sampling(self, tried: int, left: float | None, reserve: float,
                      stale: int) -> str | None:
        """Past `trials` distinct candidates: None to sample one more, else why the search
        stops there. More are sampled with a time budget only, while the space has untried
        candidates, the time left pays for one more (the typical trial's seconds, beyond the
        promotions' `reserve`) and fewer than STALE_TRIALS in a row added nothing to the
        front."""
        if left is None:
            return f"{tried} candidates tried (--trials; no --time-budget to spend on more)"
        if self.space is not None and tried >= self.space:
            return f"the space is exhausted ({self.space} candidates tried)"
        cost = self.typical_trial_s
        if left < cost + reserve or left <= 0:
            return (f"{max(0.0, left):.0f} s left does not pay for another candidate "
                    f"(~{cost:.0f} s" + (f", {reserve:.0f} s kept for full distillations)"
                                         if reserve else ")"))
        if stale >= STALE_TRIALS:
            return f"{stale} candidates in a row added no point to the front"
        return None

    def eta(self, done: int, left: float | None) -> float | None:
        """Seconds until the search ends: the trials left at the typical trial's cost, and the
        full distillations planned, capped by the budget left."""
        if not self.trial_s:
            return left
        cost = self.full_cost() or 0.0
        remaining = max(0, self.trials - done) * self.typical_trial_s + \
            max(0, self.full_allowed(left) - self.full_done) * cost
        return remaining if left is None else min(remaining, left)

    def line(self, done: int, left: float | None) -> str:
        """'plan: N candidates × short rung of X images, up to M full distillations of Y images,
        ETA …' (the ETA once one distillation was timed)."""
        short = f"{self.short_images:,}" if self.short_images else "all the"
        full = f"{self.full_images:,}" if self.full_images else "all the"
        allowed = self.full_allowed(left)
        cost = self.full_cost()
        text = f"plan: {self.trials} candidates"
        if left is not None and self.space is not None and self.space > self.trials:
            text += f" (then more of the {self.space} while the time left pays for one)"
        text += f" × short rung of {short} images"
        if self.short_was:
            text += f" (shrunk from {self.short_was:,} so the budget pays for it)"
        text += (f", up to {allowed} full distillation{'s' if allowed != 1 else ''} of {full} "
                 "images")
        if self.short_s is not None:
            short_s = f"~{self.short_s:.0f} s priced" if self.short_priced \
                else f"{self.short_s:.0f} s"
            text += f" (short {short_s}, full ~{cost:.0f} s each)" if cost \
                else f" (short {short_s} each)"
        eta = self.eta(done, left)
        if self.trial_s and eta is not None:
            text += f", ETA {_duration(eta)}"
        elif left is not None:
            text += f", within {_duration(left)} (ETA once one distillation is timed)"
        else:
            text += ", no time limit (ETA once one distillation is timed)"
        return text
