"""Safe model loading: every format, every refusal, and the malicious-pickle proof."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekit.errors import ModelLoadError, UnsafeModelError
from edgekit.io.models import ModelBundle, load_model, save_checkpoint
from edgekit.spec import InputSpec
from tests.helpers import tiny_torch_model


class _Payload:
    """Unpickling this runs `touch marker`: what a malicious model file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))

NORM = {"mean": (0.5,), "std": (0.5,)}


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": _Payload(marker)}, bad)
    with pytest.raises(UnsafeModelError) as err:
        load_model(bad, arch="torchvision.models:resnet18")
    assert "--trust-model" in str(err.value)
    assert not marker.exists()


def test_malicious_pickle_via_cli_exits_2_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save(_Payload(marker), bad)
    proc = subprocess.run([sys.executable, "-m", "edgekit", "export", str(bad), "-o",
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--trust-model" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_checkpoint_naming_foreign_arch_needs_trust(tmp_path: Path) -> None:
    """A checkpoint cannot make edgekit call an arbitrary factory (e.g. os:system)."""
    marker = tmp_path / "pwned"
    payload = {"format": "edgekit.checkpoint/1", "arch": "os:system",
               "arch_kwargs": {"command": f"touch {marker}"}, "surgery": [], "state_dict": {},
               "input_spec": InputSpec().model_dump(mode="json"), "meta": {}}
    path = tmp_path / "ckpt.pt"
    torch.save(payload, path)
    with pytest.raises(UnsafeModelError):
        load_model(path)
    assert not marker.exists()


def test_full_module_loads_only_with_trust(tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    torch.save(tiny_torch_model(), path)
    with pytest.raises(UnsafeModelError):
        load_model(path, input_shape=(1, 1, 28, 28))
    bundle = load_model(path, input_shape=(1, 1, 28, 28), trust_model=True,
                        preprocessing=NORM)
    assert isinstance(bundle.model, nn.Sequential)


def test_torchscript_needs_trust(tmp_path: Path) -> None:
    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(tiny_torch_model()), path)
    with pytest.raises(UnsafeModelError, match="TorchScript"):
        load_model(path, input_shape=(1, 1, 28, 28))
    assert load_model(path, input_shape=(1, 1, 28, 28), trust_model=True,
                        preprocessing=NORM).model is not None


def test_state_dict_with_arch(tmp_path: Path) -> None:
    import torchvision

    path = tmp_path / "sd.pt"
    model = torchvision.models.resnet18(num_classes=10)
    torch.save(model.state_dict(), path)
    bundle = load_model(path, arch="torchvision.models:resnet18", arch_kwargs='{"num_classes": 10}',
                        preprocessing={"preset": "imagenet"})
    assert bundle.spec.shape == (1, 3, 224, 224)
    assert bundle.provenance["mean"] == "preset imagenet"
    x = torch.randn(1, 3, 224, 224)
    model.eval()
    assert torch.allclose(bundle.model(x), model(x))


def test_state_dict_without_arch_says_so(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save(tiny_torch_model().state_dict(), path)
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(path)


def test_arch_mismatch_names_first_keys(tmp_path: Path) -> None:
    import torchvision

    path = tmp_path / "sd.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    with pytest.raises(ModelLoadError) as err:
        load_model(path, arch="torchvision.models:resnet18")  # 1000 classes: fc mismatch
    assert "fc.weight" in str(err.value)
    with pytest.raises(ModelLoadError, match="cannot import"):
        load_model(path, arch="no_such_module:net")


@pytest.mark.parametrize("content", [b"", b"garbage that is not torch"])
def test_empty_or_foreign_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError):
        load_model(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(ModelLoadError, match="directory"):
        load_model(tmp_path)


def test_truncated_zip(tmp_path: Path) -> None:
    full = tmp_path / "full.pt"
    torch.save(tiny_torch_model().state_dict(), full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        load_model(cut, arch="torch.nn:Identity")
    assert zipfile.is_zipfile(full)


def test_input_shape_rejected_by_model(tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    torch.save(tiny_torch_model(), path)
    with pytest.raises(ModelLoadError, match="rejects input shape 1,1,32,32"):
        load_model(path, input_shape=(1, 1, 32, 32), trust_model=True, preprocessing=NORM)


def test_checkpoint_round_trip_is_weights_only(tmp_path: Path) -> None:
    from edgekit.zoo import build

    bundle = build("lenet5")
    path = save_checkpoint(bundle, tmp_path / "lenet5.pt")
    raw = torch.load(path, weights_only=True)  # must not need unsafe loading
    assert raw["arch"] == "edgekit.zoo:lenet5"
    again = load_model(path)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(again.model(x), bundle.model.eval()(x))
    assert again.spec == bundle.spec
    assert isinstance(again, ModelBundle)


def test_normalisation_never_silently_defaulted(tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    torch.save(tiny_torch_model(), path)
    with pytest.raises(ModelLoadError, match="normalised") as err:
        load_model(path, input_shape=(1, 1, 28, 28), trust_model=True)
    assert "--mean" in err.value.hint and "--std" in err.value.hint
    spec = load_model(path, input_shape=(1, 1, 28, 28), trust_model=True,
                      preprocessing={"mean": (0.3,), "std": (0.2,)}).spec
    assert spec.mean == (0.3,) and spec.std == (0.2,)
    from edgekit.errors import InputError

    with pytest.raises(InputError, match="--mean has 3 values; the model has 1 input channel"):
        load_model(path, input_shape=(1, 1, 28, 28), trust_model=True,
                   preprocessing={"mean": (0.3, 0.3, 0.3), "std": (0.2,)})


def test_torchvision_and_timm_preprocessing_only_when_named(tmp_path: Path) -> None:
    """The architecture's documented preprocessing is a preset the user names (imagenet, arch),
    never a silent default: a torchvision state_dict alone is refused with the flags to pass."""
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r.pt")
    with pytest.raises(ModelLoadError, match="does not record its preprocessing") as err:
        load_model(tmp_path / "r.pt", arch="torchvision.models:resnet18",
                   arch_kwargs={"num_classes": 3}, input_shape=(1, 3, 64, 64))
    assert "--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225" in err.value.hint
    assert "--preprocessing imagenet" in err.value.hint
    bundle = load_model(tmp_path / "r.pt", arch="torchvision.models:resnet18",
                        arch_kwargs={"num_classes": 3}, input_shape=(1, 3, 64, 64),
                        preprocessing={"preset": "imagenet"})
    spec = bundle.spec
    assert spec.mean == (0.485, 0.456, 0.406) and spec.resize == 73 and spec.shape[2:] == (64, 64)
    assert bundle.provenance == {"shape": "--input-shape",
                                 "resize": "preset imagenet, scaled to the new input size",
                                 "mean": "preset imagenet", "std": "preset imagenet",
                                 "channel_order": "preset imagenet"}
    timm = pytest.importorskip("timm", reason="timm is an optional extra")
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    torch.save(model.state_dict(), tmp_path / "t.pt")
    spec = load_model(tmp_path / "t.pt", arch="timm:resnet10t", arch_kwargs={"num_classes": 3},
                      preprocessing={"crop": 64, "preset": "arch"}).spec
    cfg = model.pretrained_cfg
    assert spec.mean == tuple(cfg["mean"]) and spec.shape[2:] == (64, 64)
    assert spec.resize == round(64 * round(cfg["input_size"][1] / cfg["crop_pct"]) / cfg["input_size"][1])


def test_a_factory_error_never_holds_an_unbounded_value():
    """Issue 25 item 6: a value from a file (kwargs a YAML alias repeats) is cut short in the
    message, never formatted whole (one 2 MB string aliased 40,000 times once expanded into an
    80 GB message)."""
    from edgekit.errors import ModelLoadError
    from edgekit.io.models import build_arch

    big = "y" * 100_000
    with pytest.raises(ModelLoadError, match="check --arch-kwargs") as info:
        build_arch("edgekit.zoo:lenet5", {"bogus": [big] * 100}, trusted=True)
    assert "edgekit.zoo:lenet5(**{'bogus': ['yyy" in info.value.message
    assert len(str(info.value)) < 1000
