"""optimize's space fitted to the model before any candidate is built (edgekit/optimize/adapt.py):
knobs that cannot apply are dropped once with their reason, round_to never empties a layer, a
no-op pass yields no candidate, and only runtime × precision pairs edgekit can make are tried."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from edgekit.data.given import DataSources  # noqa: E402
from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.optimize.adapt import buildable_targets, fit_space  # noqa: E402
from edgekit.optimize.build import Arch, Builder, UnchangedError  # noqa: E402
from edgekit.optimize.space import SearchSpace  # noqa: E402
from tests.helpers import tiny_se_model  # noqa: E402


def _builder(tmp_path, space: SearchSpace) -> Builder:
    from edgekit.api import as_bundle

    torch.manual_seed(0)
    bundle = as_bundle(tiny_se_model().eval(), input_shape=(1, 3, 16, 16),
                       arch="tests.helpers:tiny_se_model",
                       preprocessing={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
    return Builder(bundle, "0" * 64, tmp_path, space, data=DataSources(),
                   parity_x=torch.randn(8, 3, 16, 16).numpy())


def test_knobs_that_cannot_apply_are_dropped_with_their_reason(tmp_path):
    """Under round_to 8 the squeeze (8 channels) is kept whole, not refused; prune 0.25 gives
    the channel counts of prune 0.2 (16 → 12 → 8, 32 → 24), so it is dropped as the same
    architecture; dwsep has no conv to substitute (1×1 and depthwise only), so both of its
    choices are dropped. What is left is what the candidates are built from."""
    space = SearchSpace(prune=[0, 0.2, 0.25, 0.5], dwsep=["off", 1, 2])
    fitted = fit_space(space, _builder(tmp_path, space), round_to=8)
    assert fitted.space.prune == [0.0, 0.2, 0.5]
    assert fitted.space.dwsep == ["off"]
    dropped = {(d["knob"], d["value"]): d["why"] for d in fitted.dropped}
    assert set(dropped) == {("prune", 0.25), ("dwsep", 1), ("dwsep", 2)}
    assert dropped[("prune", 0.25)] == ("the same architecture as prune 0.2 with round_to 8 "
                                        "(the same channel counts)")
    assert dropped[("dwsep", 1)] == ("dwsep r1 substitutes no conv of this model (4 1×1; 1 "
                                     "already grouped): the candidate would be the original")
    assert any(n.startswith("prune 0.2: round_to 8 keeps") and "5.fc1 (8)" in n
               for n in fitted.notes), fitted.notes
    # the pruned models are the builder's init stage, made once: the search reuses them
    pruned = fitted.space.prune[1:]
    widths = [[m.out_channels for m in _builder_bundle(tmp_path, space, r).modules()
               if isinstance(m, torch.nn.Conv2d)] for r in pruned]
    assert widths == [[8, 8, 8, 8, 24], [8, 8, 8, 8, 16]]


def _builder_bundle(tmp_path, space, ratio):
    from edgekit.io.models import load_model

    folder = _builder(tmp_path, space).model_dir(Arch(ratio, "off"), "init", 8)
    return load_model(folder / "model.pt", arch="tests.helpers:tiny_se_model").model


def test_a_no_op_pass_yields_no_candidate(tmp_path):
    space = SearchSpace(prune=[0.5], dwsep=[1])
    builder = _builder(tmp_path, space)
    with pytest.raises(UnchangedError, match="dwsep r1 substitutes no conv of this model"):
        builder.bundle(Arch(0.5, 1), "init", 8)
    assert isinstance(UnchangedError("x"), EdgekitError)


def test_only_pairs_edgekit_can_make_become_candidates():
    from edgekit.kinds import PRECISIONS, RUNTIMES

    pairs = [f"{r}:{p}" for r in RUNTIMES for p in PRECISIONS]
    ok, why = buildable_targets(pairs)
    assert set(ok) == {f"{r}:{p}" for r in ("onnxruntime", "openvino", "tensorrt")
                       for p in PRECISIONS}
    assert why == {f"torch:{p}": "no edgekit export target writes what torch reads"
                   for p in PRECISIONS}


def test_onnxruntime_fp16_candidate_is_built_by_the_onnx_target(tmp_path):
    """The fp16 model ONNX Runtime runs comes from the ONNX target (it once asked for a target
    named after the runtime: "unknown target 'onnxruntime'")."""
    pytest.importorskip("onnxruntime")
    space = SearchSpace(prune=[0], dwsep=["off"])
    entry = _builder(tmp_path, space).artifact(Arch(0.0, "off"), "original",
                                               "onnxruntime:fp16", "none", None)
    assert entry["path"].name.endswith(".onnx") and entry["path"].is_file()
    assert entry["precision"] == "fp16" and entry["format"] == "onnx"


def test_a_choice_its_plan_lets_through_but_that_changes_nothing_is_dropped_before_the_trials(
        tmp_path):
    """dwsep auto plans the 3×3 conv of a random-weight model, then keeps it (its output error
    is over dwsep_max_error): the choice is made once on the original and dropped with the
    reason, instead of each dwsep trial being skipped one by one (mobilenet_v3_small and
    efficientnet_b0 at 64×64 skipped 10-11 trials so)."""
    import numpy as np

    from edgekit.api import as_bundle

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
                                torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    bundle = as_bundle(model, input_shape=(1, 3, 16, 16),
                       preprocessing={"mean": (0.5,) * 3, "std": (0.25,) * 3})
    x = np.random.default_rng(0).standard_normal((64, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x, y=np.arange(64) % 4)
    space = SearchSpace(prune=[0], dwsep=["off", "auto"])
    builder = Builder(bundle, "0" * 64, tmp_path / "out", space,
                      data=DataSources(train=str(tmp_path / "train.npz")), parity_x=x[:8])
    fitted = fit_space(space, builder, round_to=8)
    assert fitted.space.dwsep == ["off"]
    assert fitted.dropped == [{"knob": "dwsep", "value": "auto", "why": "dwsep auto substitutes "
                               "no conv of this model: nothing changed"}]
