"""Data sources and their refusals."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from edgekit.data import load_dataset, load_raw
from edgekit.data.calibration import build_calibration_set
from edgekit.data.dataset import stratified_indices
from edgekit.errors import DataError
from edgekit.spec import InputSpec

from ..conftest import requires_data

SPEC = InputSpec()


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


def test_stratified_indices_balance_classes() -> None:
    labels = np.repeat(np.arange(10), 100)
    idx = stratified_indices(labels, 50, seed=1)
    assert len(idx) == 50 and len(set(idx)) == 50
    assert np.all(np.bincount(labels[idx]) == 5)
    skewed = np.array([0] * 3 + [1] * 100)
    assert np.bincount(skewed[stratified_indices(skewed, 20)]).tolist() == [3, 17]


def test_preprocess_normalises_and_resizes() -> None:
    images = np.full((2, 28, 28), 255, np.uint8)
    x = SPEC.preprocess(images)
    assert x.shape == (2, 1, 28, 28) and x.dtype == np.float32
    assert np.allclose(x, (1 - 0.2860) / 0.3530)
    rgb = InputSpec(shape=(1, 3, 64, 64), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)).preprocess(images)
    assert rgb.shape == (2, 3, 64, 64) and np.allclose(rgb, 1.0)


def test_idx_pair_gz_and_plain(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 255, (20, 28, 28)).astype(np.uint8)
    labels = np.arange(20) % 10
    _write_idx(tmp_path / "my-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "my-labels-idx1-ubyte", labels)
    raw = load_raw(f"{tmp_path}/my-images-idx3-ubyte.gz,{tmp_path}/my-labels-idx1-ubyte")
    assert np.array_equal(raw.images, images) and np.array_equal(raw.labels, labels)
    ds = load_dataset(str(tmp_path), SPEC)
    assert len(ds) == 20 and ds.y is not None


def test_truncated_idx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x-images-idx3-ubyte"
    _write_idx(path, np.zeros((10, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_raw(str(path))


def test_npz_uint8_float_and_refusals(tmp_path: Path) -> None:
    ok = tmp_path / "ok.npz"
    np.savez(ok, x=np.zeros((5, 28, 28), np.uint8), y=np.arange(5))
    assert load_dataset(str(ok), SPEC).x.shape == (5, 1, 28, 28)
    flt = tmp_path / "f.npz"
    np.savez(flt, x=np.zeros((5, 1, 28, 28), np.float32))
    assert load_dataset(str(flt), SPEC).y is None
    cases = {
        "obj.npz": dict(x=np.array([{"a": 1}], dtype=object)),
        "nan.npz": dict(x=np.full((2, 1, 28, 28), np.nan, np.float32)),
        "rank.npz": dict(x=np.zeros((5, 28), np.float32)),
        "count.npz": dict(x=np.zeros((5, 28, 28), np.uint8), y=np.arange(4)),
        "noX.npz": dict(images=np.zeros((5, 28, 28), np.uint8)),
    }
    for name, arrays in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(DataError):
            load_dataset(str(tmp_path / name), SPEC)
    shape = tmp_path / "shape.npz"
    np.savez(shape, x=np.zeros((5, 3, 32, 32), np.float32))
    with pytest.raises(DataError, match=r"\(3, 32, 32\).*\(1, 28, 28\)"):
        load_dataset(str(shape), SPEC)


def test_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((40, 30, 3), 50 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = load_dataset(str(tmp_path), SPEC)
    assert ds.x.shape == (6, 1, 28, 28) and ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    (tmp_path / "dog" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="bad.jpg"):
        load_dataset(str(tmp_path), SPEC)
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_dataset(str(empty), SPEC)


def test_unknown_source_lists_builtins() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("mnist-fancy:train", SPEC)
    assert "fashion-mnist:test" in err.value.hint
    with pytest.raises(DataError, match="split"):
        load_dataset("fashion-mnist:valid", SPEC)


def test_missing_data_package_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    import edgekit.data.sources as sources

    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", tmp_path / "none")
    monkeypatch.delenv("EDGEKIT_DATA", raising=False)
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist:test", SPEC)
    assert "apt-get install dataset-fashion-mnist" in err.value.hint


@requires_data
def test_fashion_mnist_and_calibration_set(tmp_path: Path) -> None:
    test = load_dataset("fashion-mnist:test", SPEC)
    assert test.x.shape == (10000, 1, 28, 28) and np.bincount(test.y).tolist() == [1000] * 10
    assert abs(float(test.x.mean())) < 0.05 and abs(float(test.x.std()) - 1) < 0.05
    manifest = build_calibration_set("fashion-mnist:train", tmp_path / "c.npz", count=100)
    assert manifest["count"] == 100 and sum(manifest["per_class"].values()) == 100
    assert set(manifest["per_class"].values()) == {10}
    calib = load_dataset(str(tmp_path / "c.npz"), SPEC)
    assert calib.x.shape == (100, 1, 28, 28)
    with pytest.raises(DataError, match="fewer"):
        build_calibration_set("fashion-mnist:test", tmp_path / "big.npz", count=20000)
    assert not (tmp_path / "big.npz").exists()


def test_embedded_calibration_set_matches_its_manifest() -> None:
    import json

    from edgekit.io.files import sha256_file

    root = Path(__file__).resolve().parents[2] / "calibration"
    manifest = json.loads((root / "fashion-mnist-512.json").read_text())
    assert manifest["sha256"] == sha256_file(root / "fashion-mnist-512.npz")
    assert manifest["count"] == 512
    ds = load_dataset(str(root / "fashion-mnist-512.npz"), SPEC)
    assert len(ds) == 512 and np.bincount(ds.y).min() >= 51
