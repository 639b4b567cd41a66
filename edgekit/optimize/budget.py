"""The time budget's prices in `edgekit optimize` (a part of edgekit.optimize.search.Optimizer,
through StudyRunner): the short rung priced before any distillation from the training speed
measured here, shrunk when the budget cannot pay for it, and no distillation started that the
time left cannot pay for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.optimize.build import Arch
    from edgekit.optimize.study import Run


class BudgetSteps:
    """The Optimizer's budget steps (its builder, bundle and the run's plan)."""

    def _price_short(self, run: Run) -> None:
        """With a time budget, the short rung is priced before any distillation runs, from the
        training speed measured on this machine on the original (`_train_speed`): the short
        rung is shrunk at once when the budget cannot pay for it (Plan.short_fit). The first
        timed distillation replaces the price."""
        plan = run.plan
        if run.deadline is None or not plan.short_images or plan.short_s is not None:
            return
        speed = self._train_speed(run, self.bundle.model)
        if speed:
            plan.price_short(speed)
            self._shrink_short(run)

    def _train_speed(self, run: Run, model: Any) -> float | None:
        """Images/s of `model`'s training steps here in the layout it would train in
        (accel.plan_training's micro-benchmark, cached per machine and kind of model)."""
        from edgekit.zoo.accel import plan_training

        train = plan_training(model, tuple(self.bundle.spec.shape),
                              run.search.space.distill.batch_size, self.builder.train)
        return train.images_per_s.get(train.label)

    def _unpaid(self, run: Run, arch: Arch) -> str | None:
        """Why a candidate that passed the screen is not distilled: its architecture still
        needs the short distillation and the time left does not pay for it; None to go on.
        Its price is the larger of the rung's (measured, or priced on the original) and its
        own training speed's (measured per kind of model: a student with other layers may
        train slower than the model the rung was priced or timed on)."""
        left, plan = run.left(), run.plan
        if left is None or plan.short_s is None:
            return None
        prices = [plan.short_s]
        if plan.short_images:
            speed = self._train_speed(run, self.builder.bundle(arch, "init",
                                                               run.search.device.round_to).model)
            if speed:
                prices.append(plan.short_s_at(speed))
        if max(prices) <= left:
            return None
        return (f"its short distillation (~{max(prices):.0f} s) does not fit in the "
                f"{max(0.0, left):.0f} s left: not started")

    def _shrink_short(self, run: Run) -> bool:
        """When the time left cannot pay for the short rung on the architectures still to
        distil (Plan.short_fit), the short rung is shrunk for the rest of the search (the
        builder's schedule: a new cache key, so nothing made at the old size is reused as
        the new one). True when it was."""
        images = run.plan.short_fit(run.left())
        if images is None:
            return False
        distill = self.builder.space.distill
        limit = max(1, images // distill.short_epochs)
        self.builder.space = self.builder.space.model_copy(
            update={"distill": distill.model_copy(update={"short_limit": limit})})
        run.plan.shrink_short(limit * distill.short_epochs)
        return True
