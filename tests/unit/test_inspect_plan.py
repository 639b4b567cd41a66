"""inspect's prune dry run: the round_to 8 check (optimize's device profiles) runs a second dry
run, another dependency graph (~110 s each for densenet201, whose matrix row ran out of time),
only when some layer could empty under it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from edgekit.cli import inspect as inspect_cli  # noqa: E402
from edgekit.io.models import ModelBundle  # noqa: E402
from edgekit.spec import InputSpec  # noqa: E402

SPEC = InputSpec(shape=(1, 3, 16, 16), mean=(0.5,) * 3, std=(0.5,) * 3)


def _net(width: int):
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


@pytest.mark.parametrize(("width", "runs", "said"), [
    (32, 1, "prunes (every layer pruned keeps at least 16 channels before rounding)"),
    (8, 2, "prunes; keeps whole (too narrow for round_to 8): 0")])
def test_the_round_to_8_dry_run_runs_only_where_a_layer_could_empty(width, runs, said,
                                                                    monkeypatch):
    from edgekit.passes import prune as prune_module

    calls = []
    real = prune_module.prune_model

    def counted(*args, **kwargs):
        calls.append(kwargs["options"].round_to)
        return real(*args, **kwargs)

    monkeypatch.setattr(prune_module, "prune_model", counted)
    plan = inspect_cli._prune_plan(ModelBundle(_net(width), SPEC, None, {}))
    assert plan["applies"] and len(calls) == runs and plan["round_to_8"] == said
