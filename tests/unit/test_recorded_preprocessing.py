"""--mean/--std/--resize/--crop/--channel-order on `edgekit bench` and `edgekit validate`: an
artifact is evaluated with the preprocessing it records (part of the model, set at export), so
the flags may repeat it and a different value is an error that names the artifact, the flag and
the recorded value, before anything is measured or stored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import InputError
from edgekit.io.onnxfile import save_onnx, set_spec
from edgekit.spec import InputSpec
from tests.helpers import cli

SPEC = InputSpec(shape=(1, 3, 8, 8), mean=(0.5, 0.4, 0.3), std=(0.25, 0.25, 0.25), resize=10,
                 class_names=("a-red", "b-green", "c-blue"))


@pytest.fixture
def rgb_model(tmp_path: Path) -> Path:
    """A 3-class linear model on 3×8×8 inputs that reads the mean colour (an edgekit-style ONNX
    file with its InputSpec in the metadata)."""
    w = np.zeros((3 * 8 * 8, 3), np.float32)
    for c in range(3):
        w[c * 64:(c + 1) * 64, c] = 1.0
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "W"], ["logits"])], "rgb",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    set_spec(model, SPEC)
    (tmp_path / "out").mkdir()
    return save_onnx(model, tmp_path / "out" / "model.onnx")


@pytest.fixture
def rgb_folder(tmp_path: Path) -> Path:
    from PIL import Image

    for k, name in enumerate(SPEC.class_names):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(3):
            img = np.full((12, 14, 3), 20, np.uint8)
            img[..., k] = 230
            Image.fromarray(img).save(tmp_path / "imgs" / name / f"{i}.png")
    return tmp_path / "imgs"


def test_conflicts_are_named_and_repeats_are_not() -> None:
    assert SPEC.preprocessing_conflicts(mean=(0.5, 0.4, 0.3), std=(0.25,), resize=10, crop=8,
                                        channel_order="rgb") == []
    assert SPEC.preprocessing_conflicts(mean=None, crop=None) == []
    conflicts = SPEC.preprocessing_conflicts(mean=(0.485, 0.456, 0.406), std=(0.25,), crop=224,
                                             resize=256, channel_order="BGR")
    assert conflicts == ["--mean 0.485,0.456,0.406 differs from its 0.5,0.4,0.3",
                         "--crop 224 differs from its 8x8 input",
                         "--resize 256 differs from its 10",
                         "--channel-order BGR differs from its RGB"]
    plain = SPEC.model_copy(update={"resize": None})
    assert plain.preprocessing_conflicts(resize=8) == \
        ["--resize 8 differs from its none (images are scaled to 8x8)"]
    with pytest.raises(InputError, match="--mean has 2 values; the model has 3 input channels"):
        SPEC.preprocessing_conflicts(mean=(0.5, 0.5))


def test_bench_and_validate_take_the_flags_that_agree(rgb_model: Path, rgb_folder: Path,
                                                      quick_profile, capsys) -> None:
    profile = quick_profile(runtimes={"onnxruntime": {"precisions": ["fp32"]}})
    same = ["--mean", "0.5,0.4,0.3", "--std", "0.25", "--resize", "10", "--crop", "8"]
    code, out, err = cli(capsys, "bench", rgb_model, "--eval", rgb_folder, "--device", profile,
                              *same, "--json")
    assert code == 0, err
    assert [r["accuracy"]["top1"] for r in json.loads(out)] == [1.0]
    code, out, err = cli(capsys, "validate", rgb_model.parent, "--eval", rgb_folder, "--device",
                              profile, *same, "--max-drop", "1", "--json")
    assert code == 0, err
    assert [r["accuracy"]["top1"] for r in json.loads(out)["records"]] == [1.0]


def test_a_flag_that_differs_from_the_artifact_is_exit_2_and_stores_nothing(
        rgb_model: Path, rgb_folder: Path, quick_profile, tmp_path: Path, capsys) -> None:
    profile = quick_profile(runtimes={"onnxruntime": {"precisions": ["fp32"]}})
    code, _, err = cli(capsys, "bench", rgb_model, "--eval", rgb_folder, "--device", profile,
                            "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225")
    assert code == 2
    assert "model.onnx records its own preprocessing, and --mean 0.485,0.456,0.406 differs " \
           "from its 0.5,0.4,0.3; --std 0.229,0.224,0.225 differs from its 0.25,0.25,0.25" in err
    assert "export the model again" in err and "Traceback" not in err
    store = tmp_path / "results.db"
    code, _, err = cli(capsys, "validate", rgb_model.parent, "--eval", rgb_folder, "--device",
                            profile, "--crop", "224", "--store", store)
    assert code == 2 and "--crop 224 differs from its 8x8 input" in err
    assert not store.exists() and not store.with_suffix(".jsonl").exists()
    code, _, err = cli(capsys, "validate", rgb_model.parent, "--eval", rgb_folder, "--device",
                            profile, "--std", "0.2,0.2")
    assert code == 2 and "--std has 2 values; the model has 3 input channels" in err


def test_the_api_applies_the_same_rule(rgb_model: Path, rgb_folder: Path, quick_profile) -> None:
    import edgekit

    profile = quick_profile(runtimes={"onnxruntime": {"precisions": ["fp32"]}})
    with pytest.raises(InputError, match="--resize 12 differs from its 10"):
        edgekit.validate(rgb_model.parent, device=profile,
                         data={"eval": str(rgb_folder), "preprocessing": {"resize": 12}})
    report = edgekit.validate(rgb_model.parent, device=profile,
                              data={"eval": str(rgb_folder),
                                    "preprocessing": {"resize": 10, "mean": None}},
                              budget={"max_drop": 1.0})
    assert report.passed and report.records[0]["accuracy"]["top1"] == 1.0
