"""The gate scores the right classes (issue 25, item 4): an image folder's classes are matched to
the model's outputs by the model's recorded class names or by output-index prefixes, never by
position alone when they are not the model's; classes that name no output are refused (exit 2)
naming them; and an eval set on which the original itself scores at chance is refused with its
top-1, since every artifact's drop against it is ~0 and the gate would pass anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import DataError
from edgekit.spec import FASHION_MNIST_CLASSES
from tests.helpers import cli


# ------------------------------------------------------------------ the rule
def test_names_map_to_the_models_outputs_in_any_subset_and_order():
    from edgekit.data.dataset import class_indices

    model = ("c0", "c1", "c2", "c3")
    assert class_indices(("c0", "c1", "c2", "c3"), "f", model, 4).tolist() == [0, 1, 2, 3]
    assert class_indices(("c3",), "f", model, 4).tolist() == [3]
    assert class_indices(("c1", "c3"), "f", model, 4).tolist() == [1, 3]
    # sorted folders of Fashion-MNIST names ('Ankle boot' first) are the model's order again
    folders = tuple(sorted(n for n in FASHION_MNIST_CLASSES if "/" not in n))
    indices = class_indices(folders, "f", FASHION_MNIST_CLASSES, 10)
    assert [FASHION_MNIST_CLASSES[i] for i in indices] == list(folders)
    assert class_indices(("Bag",), "f", FASHION_MNIST_CLASSES, 10).tolist() == [8]
    # output-index prefixes, with or without the model's names
    assert class_indices(("0_T-shirt", "8_Bag"), "f", FASHION_MNIST_CLASSES, 10).tolist() == [0, 8]
    assert class_indices(("0_T-shirt", "8_Bag"), "f", (), 10).tolist() == [0, 8]
    assert class_indices(("3", "7"), "f", (), 10).tolist() == [3, 7]


def test_a_full_folder_without_recorded_names_is_read_in_sorted_order():
    from edgekit.data.dataset import class_indices

    assert class_indices(("bird", "cat", "dog"), "f", (), 3).tolist() == [0, 1, 2]
    # the number of outputs not known yet (a model that records no names, not run yet)
    assert class_indices(("bird", "cat", "dog"), "f", (), None) is None


def test_classes_that_name_no_output_are_refused_naming_them_with_the_rule():
    from edgekit.data.dataset import class_indices

    with pytest.raises(DataError) as err:
        class_indices(("bird", "cat", "dog"), "imgs", FASHION_MNIST_CLASSES, 10)
    assert err.value.message == ("imgs's class folders do not match the model's classes: 'bird', "
                                 "'cat', 'dog' are not among its 10 class names and not named "
                                 "by an output index")
    hint = err.value.hint
    # conventions that work, as names a folder can have (not 'T-shirt/top')
    assert "0_T-shirt-top, 1_Trouser" in hint and "8_Bag" in hint and "T-shirt/top" not in hint
    assert "sorted order = label order" in hint
    with pytest.raises(DataError, match=r"imgs has 3 classes \(bird, cat, dog\), fewer than the "
                       r"model's 10 outputs, and the model records no class names"):
        class_indices(("bird", "cat", "dog"), "imgs", (), 10)
    with pytest.raises(DataError, match="'12_x' names output 12, but the model has 10 outputs"):
        class_indices(("1_a", "12_x"), "imgs", (), 10)
    with pytest.raises(DataError, match="'3' and '3_c3' both stand for output 3"):
        class_indices(("3", "3_c3"), "imgs", ("c0", "c1", "c2", "c3"), 4)


# ------------------------------------------------------------------ the gate, end to end
def _images(root: Path, classes: dict[str, np.ndarray]) -> Path:
    """root/CLASS/i.png for each class's uint8 4×4 grey images."""
    from PIL import Image

    for name, images in classes.items():
        (root / name).mkdir(parents=True)
        for i, img in enumerate(images):
            Image.fromarray(img, "L").save(root / name / f"{i}.png")
    return root


def _predicted(folder: Path, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """n random 4×4 grey images and the reference model's top-1 class for each."""
    from edgekit.io.artifacts import spec_for
    from edgekit.runtimes.ort import OrtRunner

    spec = spec_for(folder / "model.onnx")
    images = np.random.default_rng(3).integers(0, 256, (n, 4, 4), dtype=np.uint8)
    pred = OrtRunner(folder / "model.onnx", spec, threads=1).infer(spec.preprocess(images)).argmax(1)
    return images, pred


def _validate(capsys, folder: Path, eval_source: Path, profile: str):
    return cli(capsys, "validate", str(folder), "--device", profile, "--eval", str(eval_source),
               "--json")


def test_folder_of_classes_the_model_does_not_have_is_refused(tiny_folder, quick_profile,
                                                              capsys, tmp_path):
    """{cat, dog, bird} for a 10-class model: top-1 0.0 for original and artifact alike and
    PASS, exit 0, before; now exit 2 naming the classes, whether or not the model records its
    class names."""
    rng = np.random.default_rng(0)
    imgs = _images(tmp_path / "animals", {c: rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)
                                          for c in ("cat", "dog", "bird")})
    for named, expected in ((True, "'bird', 'cat', 'dog' are not among its 10 class names"),
                            (False, "has 3 classes (bird, cat, dog), fewer than the model's 10 "
                             "outputs, and the model records no class names")):
        folder, _ = tiny_folder(classes=10, named=named)
        code, out, err = _validate(capsys, folder, imgs, quick_profile())
        assert code == 2, err
        assert expected in err and out == ""


@pytest.mark.parametrize("named", [True, False], ids=["by-name", "by-index-prefix"])
def test_a_one_class_folder_is_scored_as_that_class(named, tiny_folder, quick_profile, capsys,
                                                    tmp_path):
    """A folder with only `c2/` (a model with class names) or `2_whatever/` (a model without)
    holds images the original classifies as class 2: top-1 1.0. Before, the folder's only class
    was label 0 and the original scored 0.0 (and passed)."""
    folder, _ = tiny_folder(classes=4, named=named)
    images, pred = _predicted(folder)
    counts = np.bincount(pred, minlength=4)
    k = int(np.argmax(counts[1:]) + 1)  # the most predicted class other than 0
    assert counts[k] >= 5
    name = f"c{k}" if named else f"{k}_whatever"
    imgs = _images(tmp_path / "one", {name: images[pred == k]})
    code, out, err = _validate(capsys, folder, imgs, quick_profile())
    assert code == 0, err
    records = json.loads(out)["records"]
    assert {r["accuracy"]["reference_top1"] for r in records} == {1.0}
    assert {r["accuracy"]["top1"] for r in records} == {1.0}


def test_eval_set_where_the_original_scores_at_chance_is_refused(tiny_folder, quick_profile,
                                                                 capsys, tmp_path):
    """Labels that are not what the model predicts (here: random): the original scores ~1/4 on
    a 4-class model, every artifact's drop is ~0, and the gate passed. Now exit 2 with the
    original's top-1 and the binomial bound it missed."""
    folder, eval_npz = tiny_folder(classes=4)
    data = np.load(eval_npz)
    labels = np.random.default_rng(5).integers(0, 4, len(data["y"]))
    np.savez(tmp_path / "shuffled.npz", x=data["x"], y=labels)
    correct = int(np.sum(data["y"] == labels))  # data["y"] is the original's own top-1
    code, out, err = _validate(capsys, folder, tmp_path / "shuffled.npz", quick_profile())
    assert code == 2, err
    assert (f"the original (model.onnx) scores top-1 {correct / 200:.3f} ({correct} of 200)"
            in err)
    assert "not significantly above chance for its 4 outputs (0.250;" in err
    assert "--max-drop 100" in err
    # a budget that allows any drop (an untrained model timed and compared by agreement) is
    # not refused: it makes no claim about top-1
    code, out, err = cli(capsys, "validate", str(folder), "--device", quick_profile(), "--eval",
                         str(tmp_path / "shuffled.npz"), "--max-drop", "100", "--json")
    assert code == 0, err
    assert {r["accuracy"]["reference_top1"] for r in json.loads(out)["records"]} == {correct / 200}
    # the same model on its own labels: far above chance, validated as before
    code, out, err = _validate(capsys, folder, eval_npz, quick_profile())
    assert code == 0, err


def test_chance_bound_numbers():
    from math import comb

    from edgekit.validate.accuracy import binomial_tail, chance_check

    # P(X >= 5) for Binomial(20, 0.1), exactly
    exact = sum(comb(20, i) * 0.1 ** i * 0.9 ** (20 - i) for i in range(5, 21))
    assert binomial_tail(5, 20, 0.1) == pytest.approx(exact, rel=1e-9)
    labels = np.zeros(200, np.int64)
    logits = np.zeros((200, 10), np.float32)
    logits[:, 1] = 0.5  # wrong: class 1
    logits[:31, 0] = 1.0  # 31 of 200 right (0.155): the smallest count above chance at 1%
    assert chance_check(logits, labels)["above_chance"]
    assert chance_check(logits, labels)["critical_top1"] == pytest.approx(0.155)
    logits[30, 0] = 0.0  # 30 of 200 (0.150, 1.5 × chance): not significantly above it
    below = chance_check(logits, labels)
    assert not below["above_chance"] and below["p_value"] > 0.01


def test_a_permuted_folder_is_mapped_for_scoring_but_refused_for_training(tmp_path):
    """Eval data is relabelled by name; training data is labelled by sorted position, so its
    classes must be the model's in the model's order."""
    from edgekit.data import load_dataset
    from edgekit.data.dataset import check_classes, class_indices
    from edgekit.spec import InputSpec

    spec = InputSpec(shape=(1, 1, 4, 4), mean=(0.0,), std=(1.0,), class_names=("b", "a"))
    rng = np.random.default_rng(0)
    root = _images(tmp_path / "imgs", {"a": rng.integers(0, 256, (2, 4, 4), dtype=np.uint8),
                                       "b": rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)})
    ds = load_dataset(str(root), spec)
    assert ds.class_names == ("a", "b") and ds.y.tolist() == [1, 1, 0, 0, 0]
    ds.check_for(spec, need_labels=True, num_outputs=2)
    with pytest.raises(DataError, match="'a' is the model's output 1 but at position 0"):
        check_classes(("a", "b"), "train", spec, 2, in_order=True)
    check_classes(("a", "b"), "eval", spec, 2)
    # more than 10 classes: the hint's index prefixes are zero-padded, so they sort as numbers
    many = tuple(f"k{i}" for i in range(12))
    with pytest.raises(DataError) as err:
        class_indices(("zebra",), "eval", many, 12)
    assert "00_k0, 01_k1" in err.value.hint


def test_a_bag_folder_is_scored_as_bag_on_the_fashion_mnist_model(tmp_path, quick_profile,
                                                                  capsys):
    """The issue's case on the shipped LeNet-5 (it records the Fashion-MNIST class names): a
    folder holding only `Bag/` was scored as class 0 (T-shirt/top), top-1 ~0 for original and
    artifact alike, and passed. Now Bag is output 8 and the original scores as it does on Bag."""
    from PIL import Image

    from edgekit.data import load_raw
    from edgekit.zoo import shipped_checkpoint

    try:
        raw = load_raw("fashion-mnist:test")
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST not installed ({exc.message})")
    out = tmp_path / "out"
    code, _, err = cli(capsys, "export", str(shipped_checkpoint("lenet5")), "--target", "onnx",
                       "-o", str(out))
    assert code == 0, err
    (tmp_path / "imgs" / "Bag").mkdir(parents=True)
    bags = raw.images[raw.labels == 8][:60]
    for i, img in enumerate(bags):
        Image.fromarray(img, "L").save(tmp_path / "imgs" / "Bag" / f"{i}.png")
    code, out_json, err = _validate(capsys, out, tmp_path / "imgs", quick_profile())
    assert code == 0, err
    (record,) = json.loads(out_json)["records"]
    from edgekit.io.artifacts import spec_for
    from edgekit.runtimes.ort import OrtRunner

    spec = spec_for(out / "model.onnx")
    expected = float(np.mean(OrtRunner(out / "model.onnx", spec, threads=1)
                             .infer(spec.preprocess(bags)).argmax(1) == 8))
    assert record["accuracy"]["reference_top1"] == pytest.approx(expected)
    assert expected > 0.8


def test_compress_scores_an_index_named_eval_subset_as_those_outputs(tmp_path, capsys,
                                                                     monkeypatch):
    """compress --eval with a folder of one class named by output index (`k_shirt`) for a
    model that records no class names (a user's module:factory from a state_dict): the
    original's top-1 in the report is on output k (it was scored as label 0 before)."""
    torch = pytest.importorskip("torch")
    from edgekit.spec import InputSpec

    (tmp_path / "tinynet_gate.py").write_text(
        "import torch\n"
        "def make(num_classes=6):\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),\n"
        "        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import tinynet_gate

    torch.manual_seed(0)
    model = tinynet_gate.make().eval()
    torch.save(model.state_dict(), tmp_path / "random.pt")
    spec = InputSpec(shape=(1, 1, 8, 8), mean=(0.5,), std=(0.25,))
    images = np.random.default_rng(4).integers(0, 256, (300, 8, 8), dtype=np.uint8)
    with torch.no_grad():
        pred = model(torch.from_numpy(spec.preprocess(images))).argmax(1).numpy()
    counts = np.bincount(pred, minlength=6)
    k = int(np.argmax(counts[1:]) + 1)
    assert counts[k] >= 3
    root = _images(tmp_path / "imgs", {f"{k}_shirt": images[pred == k]})
    code, out, err = cli(capsys, "compress", tmp_path / "random.pt", "--arch",
                         "tinynet_gate:make", "--input-shape", "1,1,8,8", "--mean", "0.5",
                         "--std", "0.25", "--prune", "0.25", "--distill-epochs", "0",
                         "--eval", root, "--max-drop", "100", "-o", tmp_path / "out", "--json")
    assert code == 0, err
    rows = {r["step"]: r for r in json.loads(out)["rows"]}
    assert rows["original"]["top1"] == pytest.approx(1.0)
