"""Image folders and CSV lists as data for every step: streamed, checked, preprocessed once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.data import load_dataset, load_raw
from edgekit.data.dataset import check_same_classes
from edgekit.data.folders import skipping_bad_images
from edgekit.errors import DataError
from edgekit.spec import InputSpec

RGB = InputSpec(shape=(1, 3, 32, 32), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), resize=36)


def _folder(root: Path, classes=("cat", "dog"), n: int = 4, mode: str = "RGB") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (40, 50, 3) if mode == "RGB" else (40, 50)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")
    return root


def test_folder_streams_the_same_inputs_as_preprocess(tmp_path: Path) -> None:
    from PIL import Image

    root = _folder(tmp_path / "imgs")
    ds = load_dataset(str(root), RGB)
    assert ds.streamed and ds.x.shape == (8, 3, 32, 32) and ds.class_names == ("cat", "dog")
    assert ds.y.tolist() == [0] * 4 + [1] * 4
    raw = np.stack([np.asarray(Image.open(f)) for f in sorted((root / "cat").iterdir())]
                   + [np.asarray(Image.open(f)) for f in sorted((root / "dog").iterdir())])
    expected = RGB.preprocess(raw)
    np.testing.assert_array_equal(ds.x[2:7], expected[2:7])
    np.testing.assert_array_equal(np.asarray(ds.x), expected)
    # resize 36 on the shorter side (40 → 36, 50 → 45) then the centre 32×32
    sample = RGB.prepare_image(raw[0])
    assert sample.shape == (32, 32, 3)
    sub = ds.sample(4, seed=1)
    assert sub.streamed and len(sub) == 4 and sorted(sub.y.tolist()) == [0, 0, 1, 1]


def test_bgr_and_grey_conversion(tmp_path: Path) -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 255
    bgr = RGB.model_copy(update={"channel_order": "BGR", "resize": None})
    assert RGB.model_copy(update={"resize": None}).prepare_image(img)[0, 0].tolist() == [255, 0, 0]
    assert bgr.prepare_image(img)[0, 0].tolist() == [0, 0, 255]
    grey_root = _folder(tmp_path / "grey", mode="L")
    ds = load_dataset(str(grey_root), RGB)
    x = ds.x[:1]
    assert x.shape == (1, 3, 32, 32)
    # grey repeated to three channels: equal before normalisation
    raw = x * np.array(RGB.std, np.float32).reshape(1, 3, 1, 1) + np.array(RGB.mean, np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(raw[:, 0], raw[:, 1], atol=1e-6)


def test_csv_list_and_missing_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    rows = ["path,label"] + [f"imgs/{c}/{i}.png,{c}" for c in ("cat", "dog") for i in range(4)]
    (tmp_path / "list.csv").write_text("\n".join(rows))
    ds = load_dataset(str(tmp_path / "list.csv"), RGB)
    np.testing.assert_array_equal(np.asarray(ds.x), np.asarray(load_dataset(str(root), RGB).x))
    assert ds.class_names == ("cat", "dog")
    (tmp_path / "bad.csv").write_text("imgs/cat/0.png,cat\nimgs/cat/nope.png,cat\n")
    with pytest.raises(DataError, match="nope.png"):
        load_dataset(str(tmp_path / "bad.csv"), RGB)


def test_bad_file_named_or_skipped_and_counted(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    (root / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="notes.txt") as err:
        load_dataset(str(root), RGB)
    assert "--skip-bad-images" in err.value.hint
    with skipping_bad_images():
        ds = load_dataset(str(root), RGB)
    assert len(ds) == 8 and len(ds.skipped) == 1


def test_class_checks(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", classes=("a", "b", "c"), n=1)
    ds = load_dataset(str(root), RGB)
    with pytest.raises(DataError, match="3 classes, more than the model's 2 outputs"):
        ds.check_for(RGB, num_outputs=2)
    named = RGB.model_copy(update={"class_names": ("a", "b", "x")})
    with pytest.raises(DataError, match="do not match"):
        ds.check_for(named)
    with pytest.raises(DataError, match="only in eval: d"):
        check_same_classes(("a", "b", "c"), "train", ("a", "b", "d"), "eval")
    (root / "d").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(str(root), RGB)


def test_training_streams_a_folder_through_dataloader(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from edgekit.zoo.train import TrainConfig, fit

    root = _folder(tmp_path / "imgs", n=6)
    raw = load_raw(str(root))
    assert len(raw) == 12 and raw.class_names == ("cat", "dog")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    history = fit(model, raw, RGB, load_dataset(str(root), RGB),
                  TrainConfig(epochs=1, batch_size=4, lr=0.01, warmup_epochs=0))
    assert history["train_images"] == 12 and 0.0 <= history["epochs"][0]["top1"] <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_training_from_model_ready_floats(tmp_path: Path, capsys) -> None:
    torch = pytest.importorskip("torch")
    from edgekit.zoo.train import TrainConfig, fit

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "f.npz", x=rng.standard_normal((16, 3, 32, 32)).astype(np.float32),
             y=np.arange(16) % 2)
    raw = load_raw(str(tmp_path / "f.npz"))
    assert raw.model_ready
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 2))
    history = fit(model, raw, RGB, None, TrainConfig(epochs=1, batch_size=8, warmup_epochs=0))
    assert history["train_images"] == 16
    assert "tensor space" in capsys.readouterr().err


def test_resize_shorter_side_then_centre_crop() -> None:
    from PIL import Image

    spec = InputSpec(shape=(1, 3, 4, 4), mean=(0.0,), std=(1.0,), resize=6)
    img = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)
    # shorter side 10 → 6, so 20 → 12; the centre 4×4 of the 6×12 image
    expected = np.asarray(Image.fromarray(img).resize((12, 6), Image.BILINEAR))[1:5, 4:8]
    np.testing.assert_array_equal(spec.prepare_image(img), expected)
    # a new input size keeps the crop's share of the image; --crop sets H and W
    assert spec.with_shape((1, 3, 8, 8)).resize == 12
    cropped = InputSpec(shape=(1, 3, 224, 224), mean=(0.5,), std=(0.5,), resize=256) \
        .with_preprocessing(crop=64, mean=(0.1, 0.2, 0.3), std=(0.5,))
    assert cropped.shape == (1, 3, 64, 64) and cropped.resize == 73 and cropped.mean == (0.1, 0.2, 0.3)
    from edgekit.errors import InputError

    with pytest.raises(InputError, match="--resize 32 is smaller than the 64x64 crop"):
        cropped.with_preprocessing(resize=32)
