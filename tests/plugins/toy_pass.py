"""A toy compression pass in one file: `round` keeps `decimals` decimal places of every weight.

Importing this module is all it takes: the class registers itself, `compress` and recipes take
`- round: {decimals: 2}`, the recipe check refuses it after `distill` (its `runs_before`), and
`edgekit optimize` searches its `decimals` (`--round off,1`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edgekit.passes.base import Knob, Pass, PassConfig, PassContext


class RoundConfig(PassConfig):
    decimals: int = Field(2, ge=0, le=8, description="decimal places every weight keeps")


class RoundPass(Pass):
    name = "round"
    kind = "torch"
    Config = RoundConfig
    order = 25  # after the architecture passes, before distillation
    runs_before = ("distill",)
    order_hint = "round first, then distill: distillation trains the rounded weights back"
    search = (Knob("round", "decimals", ("off", 1), off="off",
                   help="decimal places kept, or off",
                   parse=lambda text: int(text) if str(text).isdigit() else text),)

    def apply(self, bundle: Any, ctx: PassContext) -> Any:
        import torch

        scale = 10.0 ** self.config.decimals
        with torch.no_grad():
            for param in bundle.model.parameters():
                param.copy_(torch.round(param * scale) / scale)
        ctx.add_row(step="round", decimals=self.config.decimals)
        return bundle
