"""Bad user data (issue 16): image folders and CSV lists with unreadable files, empty classes,
classes that disagree, greyscale/RGB mismatches, preprocessing flags of the wrong size. Each bad
case exits 2 with the fix and writes nothing (checked as tests/e2e/test_bad_inputs.py does)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.e2e.test_bad_inputs import Case, _profile, _run_cli, run_case

RGB_CLASSES = ("a", "b", "c")


def _rgb_onnx_folder(d: Path) -> Path:
    """An edgekit output folder with a linear classifier on 3×4×4 RGB inputs, 3 classes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.io.manifest import Manifest
    from edgekit.spec import ONNX_METADATA_KEY, InputSpec

    w = np.random.default_rng(0).standard_normal((48, 3)).astype(np.float32)
    shape = numpy_helper.from_array(np.array([-1, 48], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "W"], ["logits"])], "rgb",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W"), shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key = ONNX_METADATA_KEY
    entry.value = InputSpec(shape=(1, 3, 4, 4), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                            class_names=RGB_CLASSES).to_json()
    out = d / "rgb"
    out.mkdir(parents=True)
    onnx.save(model, str(out / "model.onnx"))
    Manifest(out).add_stage("export-onnx-fp32", outputs=[
        {"path": "model.onnx", "format": "onnx", "precision": "fp32", "model": "rgb"}])
    return out


def _images(root: Path, classes=RGB_CLASSES, n: int = 2, mode: str = "RGB", size=(9, 8)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (*size, 3) if mode == "RGB" else size
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")
    return root


def _bench(make_eval: Callable[[Path], Path], *extra: str) -> Callable[[Path], list[str]]:
    return lambda d: ["bench", str(_rgb_onnx_folder(d)), "--device", str(_profile(d)),
                      "--eval", str(make_eval(d)), *extra]


def _with_text_file(d: Path) -> Path:
    root = _images(d / "imgs")
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def _with_corrupt_png(d: Path) -> Path:
    root = _images(d / "imgs")
    (root / "c" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return root


def _empty_class(d: Path) -> Path:
    root = _images(d / "imgs")
    (root / "empty-class").mkdir()
    return root


def _truncated_png(d: Path) -> Path:
    """A PNG whose header reads but whose data is cut short: found only when it is decoded."""
    root = _images(d / "train", size=(12, 12))
    broken = root / "b" / "1.png"
    broken.write_bytes(broken.read_bytes()[:60])
    return root


def _missing_in_csv(d: Path) -> Path:
    _images(d / "imgs")
    (d / "list.csv").write_text("path,label\nimgs/a/0.png,a\nimgs/b/7.png,b\n")
    return d / "list.csv"


def _tiny_model(d: Path, num_classes: int = 3) -> list[str]:
    """A user's own RGB model (module:factory on sys.path) as a state_dict, and its flags."""
    (d / "tinynet.py").write_text(
        "import torch\n"
        "def make(num_classes=3):\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),\n"
        "        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),\n"
        "        torch.nn.Flatten(), torch.nn.Linear(8, num_classes))\n")
    torch.manual_seed(0)
    sys.path.insert(0, str(d))
    try:
        import importlib

        model = importlib.import_module("tinynet").make(num_classes)
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("tinynet", None)
    torch.save(model.state_dict(), d / "tiny.pt")
    return [str(d / "tiny.pt"), "--arch", "tinynet:make", "--arch-kwargs",
            json.dumps({"num_classes": num_classes}), "--input-shape", "1,3,8,8"]


def _compress(d: Path, *extra: str, num_classes: int = 3, train=None, evaluation=None) -> list[str]:
    args = ["compress", *_tiny_model(d, num_classes), "--prune", "0.25", "-o", str(d / "out")]
    if train:
        args += ["--train", str(train), "--distill-epochs", "1"]
    else:
        args += ["--distill-epochs", "0"]
    if evaluation:
        args += ["--eval", str(evaluation), "--max-drop", "100"]
    return args + list(extra)


NORM = ("--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25")

CASES = [
    Case("folder-non-image-file", _bench(_with_text_file), 2, "notes.txt"),
    Case("folder-corrupt-png", _bench(_with_corrupt_png), 2, "broken.png"),
    Case("folder-empty-class", _bench(_empty_class), 2, "empty-class holds no images"),
    Case("folder-more-classes-than-outputs",
         _bench(lambda d: _images(d / "imgs", classes=("a", "b", "c", "d"))), 2,
         "4 classes, more than the model's 3 outputs"),
    Case("folder-classes-not-the-models",
         _bench(lambda d: _images(d / "imgs", classes=("a", "b", "x"))), 2, "do not match"),
    Case("csv-missing-file", _bench(_missing_in_csv), 2, "imgs/b/7.png"),
    Case("compress-train-eval-different-classes", lambda d: _compress(
        d, *NORM, train=_images(d / "train"), evaluation=_images(d / "val", classes=("a", "b", "z"))),
        2, "only in eval: z"),
    Case("compress-train-non-image-file", lambda d: _compress(
        d, *NORM, train=_with_text_file(d), evaluation=_images(d / "val")), 2, "notes.txt"),
    Case("compress-train-image-cut-short", lambda d: _compress(
        d, *NORM, train=_truncated_png(d), evaluation=_images(d / "val")), 2,
        "cannot decode image"),
    Case("compress-more-classes-than-outputs", lambda d: _compress(
        d, *NORM, num_classes=2, evaluation=_images(d / "val")), 2,
        "3 classes, more than the model's 2 outputs"),
    Case("compress-no-normalisation", lambda d: _compress(d, evaluation=_images(d / "val")), 2,
         "--mean"),
    Case("compress-mean-wrong-channels", lambda d: _compress(
        d, "--mean", "0.5,0.5", "--std", "0.2,0.2,0.2", evaluation=_images(d / "val")), 2,
        "--mean has 2 values; the model has 3 input channels"),
    Case("export-std-wrong-channels", lambda d: ["export", *_tiny_model(d), "--mean", "0.5",
                                                 "--std", "0.1,0.2,0.3,0.4", "-o", str(d / "out")],
         2, "--std has 4 values"),
]


@pytest.fixture(autouse=True)
def _no_bytecode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path / "in"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_data(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  capsys: pytest.CaptureFixture) -> None:
    output = run_case(case, tmp_path, monkeypatch, capsys)
    assert "hint:" in output, output


def _good_run(tmp_path: Path, monkeypatch, capsys, argv_of: Callable[[Path], list[str]]):
    d, cwd, tmp = tmp_path / "in", tmp_path / "cwd", tmp_path / "tmp"
    for folder in (d, cwd, tmp):
        folder.mkdir()
    return _run_cli(argv_of(d), cwd, tmp, monkeypatch, capsys)


def test_skip_bad_images_counts_them_in_the_record(tmp_path: Path, monkeypatch, capsys) -> None:
    code, output = _good_run(tmp_path, monkeypatch, capsys,
                             _bench(_with_text_file, "--skip-bad-images", "--json"))
    assert code == 0, output
    assert '"skipped_images": 1' in output
    assert output.count("skipped 1 unreadable file") == 1


@pytest.mark.parametrize("mode,note", [("L", "6 greyscale images are converted to RGB"),
                                       ("RGB", "colour images are converted to greyscale")])
def test_grey_and_rgb_are_converted_and_said_once(mode: str, note: str, tmp_path: Path,
                                                  monkeypatch, capsys) -> None:
    from edgekit import events

    monkeypatch.setattr(events, "_ONCE", set())
    if mode == "L":
        make = _bench(lambda d: _images(d / "imgs", mode="L"), "--json")
    else:  # an RGB folder for test_bad_inputs' 1×4×4 grey model (4 classes)
        from tests.e2e.test_bad_inputs import _folder

        make = lambda d: ["bench", str(_folder(d)), "--device", str(_profile(d)),  # noqa: E731
                          "--eval", str(_images(d / "imgs", classes=("a", "b", "c", "d"))), "--json"]
    code, output = _good_run(tmp_path, monkeypatch, capsys, make)
    assert code == 0, output
    assert output.count(note) == 1, output
    assert '"top1"' in output
