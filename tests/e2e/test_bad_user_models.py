"""A user's own model, wrong for edgekit in one of the ways issue 27 lists ("Bad input"): two
inputs or symbolic spatial dims, a normalisation for another channel count, image folders smaller
than the model's input, a state_dict that does not fit the named arch. Each ends as exit 2 with a
message naming what is wrong and a hint saying what to do, nothing written, no traceback (the
checks of tests/e2e/test_bad_inputs.py's run_case); the user's own architectures are built with a
trusted `--arch tests.e2e.user_archs_bad:NAME`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.e2e.test_bad_inputs import Case, _profile, run_case

GREY = "tests.e2e.user_archs_bad:grey"
TWO = "tests.e2e.user_archs_bad:two_inputs"
IMAGENET = ("--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225")


# ---------------------------------------------------------------- input makers
def _state_dict(d: Path, arch: str, name: str = "model.pt", **kwargs) -> Path:
    from edgekit.io.models import build_arch

    torch.manual_seed(0)
    torch.save(build_arch(arch, kwargs, trusted=True).state_dict(), d / name)
    return d / name


def _checkpoint(d: Path, arch: str, spec, name: str = "ckpt.pt") -> Path:
    """An edgekit checkpoint of a user's arch recording `spec` (loading it needs --arch)."""
    from edgekit.io.models import ModelBundle, build_arch, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(ModelBundle(build_arch(arch, {}, trusted=True), spec, arch), d / name)


def _imagenet_spec(channels: int = 3, size: int = 28):
    from edgekit.spec import InputSpec

    return InputSpec(shape=(1, channels, size, size), mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225))


def _grey_npz(d: Path, n: int = 16, size: int = 16) -> Path:
    rng = np.random.default_rng(1)
    np.savez(d / "grey.npz", x=rng.integers(0, 255, (n, size, size), dtype=np.uint8),
             y=(np.arange(n) % 4).astype(np.int64))
    return d / "grey.npz"


def _dynamic_onnx(d: Path) -> Path:
    """The one-channel conv net exported with symbolic batch, height and width, no metadata."""
    from tests.e2e.user_archs_bad import grey

    path = d / "dyn.onnx"
    torch.onnx.export(grey().eval(), (torch.zeros(1, 1, 16, 16),), str(path), dynamo=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}})
    return path


def _dynamic_onnx_case(cmd: str, *extra: str) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        path = _dynamic_onnx(d)
        if cmd == "compress":
            return ["compress", str(path), "--int8", "--calib", str(_grey_npz(d)), "--eval",
                    str(_grey_npz(d)), "-o", str(d / "out"), *extra]
        argv = [cmd, str(path), "--device", str(_profile(d))]
        return argv + (["--eval", str(_grey_npz(d))] if cmd == "validate" else [])
    return make


def _two_input_onnx_validate(d: Path) -> list[str]:
    from tests.e2e.test_bad_inputs import _eval, _onnx

    return ["validate", str(_onnx(d / "m.onnx", two_inputs=True)), "--device", str(_profile(d)),
            "--eval", str(_eval(d))]


def _small_images(root: Path, side: int = 20, per_class: int = 3) -> Path:
    """4 classes × `per_class` RGB PNGs of side×side (one 12×20 image in the first class)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(4):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(per_class):
            shape = (12, side, 3) if (k, i) == (0, 0) else (side, side, 3)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(
                root / f"c{k}" / f"{i}.png")
    return root


def _small_images_compress(d: Path) -> list[str]:
    model = _state_dict(d, "torchvision.models:mobilenet_v3_small", num_classes=4)
    return ["compress", str(model), "--arch", "torchvision.models:mobilenet_v3_small",
            "--arch-kwargs", '{"num_classes": 4}', "--crop", "64", "--preprocessing", "imagenet", "--int8", "--calib",
            str(_small_images(d / "imgs")), "--calib-size", "8", "-o", str(d / "out")]


def _small_images_validate(d: Path) -> list[str]:
    """An edgekit output folder of the grey net at 1×32×32, evaluated on 20×20 images."""
    from edgekit.io.manifest import Manifest
    from edgekit.io.onnxfile import load_onnx, save_onnx, set_spec
    from edgekit.spec import InputSpec

    out = d / "ref"
    out.mkdir()
    model = load_onnx(_dynamic_onnx(d))
    set_spec(model, InputSpec(shape=(1, 1, 32, 32), mean=(0.5,), std=(0.5,),
                              class_names=("c0", "c1", "c2", "c3")))
    save_onnx(model, out / "model.onnx")
    (d / "dyn.onnx").unlink()
    Manifest(out).add_stage("export-onnx-fp32", outputs=[
        {"path": "model.onnx", "format": "onnx", "precision": "fp32", "model": "grey"}])
    return ["validate", str(out), "--device", str(_profile(d)), "--eval",
            str(_small_images(d / "imgs"))]


def _renamed_state_dict(d: Path, rename: Callable[[str], str]) -> Path:
    """The grey net's state_dict with its keys renamed."""
    torch.manual_seed(0)
    weights = torch.load(_state_dict(d, GREY, name="orig.pt"))
    (d / "orig.pt").unlink()
    torch.save({rename(k): v for k, v in weights.items()}, d / "model.pt")
    return d / "model.pt"


MNV3_4 = ("model: {path: m.pt, arch: 'torchvision.models:mobilenet_v3_small', "
          "arch_kwargs: {num_classes: 4}}\n")
IMAGENET_64 = ("input: {shape: [1, 3, 64, 64], mean: [0.485, 0.456, 0.406], "
               "std: [0.229, 0.224, 0.225]}\n")


def _recipe(d: Path, body: str) -> list[str]:
    path = d / "recipe.yaml"
    path.write_text("recipe_version: 1\nname: user\n" + body)
    return ["run", str(path), "-o", str(d / "out"), "--trust-recipe"]


# ---------------------------------------------------------------- the cases
CASES = [
    # 1. two inputs, symbolic spatial dims
    Case("two-inputs-state-dict-export", lambda d: [
        "export", str(_state_dict(d, TWO)), "--arch", TWO, "--input-shape", "1,3,32,32",
        "--mean", "0.5", "--std", "0.5", "-o", str(d / "out")], 2,
         "forward(image, mask) takes 2 inputs", absent="--input-shape N,C,H,W"),
    Case("two-inputs-checkpoint-compress", lambda d: [
        "compress", str(_checkpoint(d, TWO, _imagenet_spec(3, 32))), "--arch", TWO, "--int8",
        "-o", str(d / "out")], 2, "forward(image, mask) takes 2 inputs"),
    *[Case(f"onnx-symbolic-hw-{cmd}", _dynamic_onnx_case(cmd), 2,
           "'input' is [batch, 1, height, width] with symbolic H (height), W (width)")
      for cmd in ("bench", "validate", "compress")],
    Case("onnx-input-shape-against-fixed-channels", _dynamic_onnx_case(
        "compress", "--input-shape", "1,3,16,16", *IMAGENET), 2,
         "is [batch, 1, height, width], fixed at C=1, but the input shape is 1,3,16,16"),
    Case("onnx-two-inputs-validate", _two_input_onnx_validate, 2, "takes 2 inputs"),
    # 2. a normalisation for another channel count
    Case("grey-model-rgb-input-shape", lambda d: [
        "export", str(_state_dict(d, GREY)), "--arch", GREY, "--input-shape", "1,3,28,28",
        *IMAGENET, "-o", str(d / "out")], 2,
         "its first layer features.0 takes 1 channel but the input spec has 3"),
    Case("grey-model-imagenet-mean-flag", lambda d: [
        "export", str(_state_dict(d, GREY)), "--arch", GREY, "--input-shape", "1,1,28,28",
        *IMAGENET, "-o", str(d / "out")], 2,
         "--mean has 3 values; the model has 1 input channel (0.485,0.456,0.406 is a 3-channel"),
    Case("recorded-imagenet-spec-reshaped-to-grey", lambda d: [
        "export", str(_checkpoint(d, GREY, _imagenet_spec())), "--arch", GREY,
        "--input-shape", "1,1,28,28", "-o", str(d / "out")], 2,
         "its normalisation is for 3 channels (mean 0.485,0.456,0.406; std 0.229,0.224,0.225) "
         "but the input shape asks for 1 channel"),
    Case("recipe-imagenet-spec-reshaped-to-grey", lambda d: (
        _checkpoint(d, GREY, _imagenet_spec()), _grey_npz(d), _recipe(
            d, f"model: {{path: ckpt.pt, arch: '{GREY}'}}\ninput: {{shape: [1, 1, 28, 28]}}\n"
               "data: {eval: grey.npz}\n"))[-1], 2,
         "its normalisation is for 3 channels"),
    Case("recipe-arch-imagenet-mean-grey-shape", lambda d: (_grey_npz(d), _recipe(
        d, f"model: {{arch: '{GREY}', train: {{epochs: 1}}}}\n"
           "input: {shape: [1, 1, 16, 16], mean: [0.485, 0.456, 0.406], std: [0.2, 0.2, 0.2]}\n"
           "data: {train: grey.npz, eval: grey.npz}\n"))[-1], 2,
         "mean has 3 values; the model has 1 input channel"),
    # 3. images smaller than the model's input
    Case("image-folder-smaller-than-crop-compress", _small_images_compress, 2,
         "12 of 12 images are smaller than the model's 64×64 input (the smallest, "),
    Case("image-folder-smaller-than-input-validate", _small_images_validate, 2,
         "12 of 12 images are smaller than the model's 32×32 input"),
    # 4. a state_dict that does not fit the named arch
    Case("state-dict-of-another-arch", lambda d: [
        "export", str(_state_dict(d, "torchvision.models:mobilenet_v3_small", num_classes=4)),
        "--arch", "torchvision.models:resnet18", "--crop", "64", "--preprocessing", "imagenet", "-o", str(d / "out")], 2,
         "(0 of its 122 keys found; 122 missing: conv1.weight (64×3×7×7)"),
    Case("state-dict-num-classes", lambda d: [
        "compress", str(_state_dict(d, "torchvision.models:mobilenet_v3_small", num_classes=4)),
        "--arch", "torchvision.models:mobilenet_v3_small", "--crop", "64", "--preprocessing",
        "imagenet", "--int8",
        "-o", str(d / "out")], 2, """pass --arch-kwargs '{"num_classes": 4}'"""),
    Case("state-dict-of-another-arch-names-it", lambda d: [
        "export", str(_state_dict(d, "torchvision.models:mobilenet_v3_small", num_classes=4)),
        "--arch", "torchvision.models:resnet18", "--crop", "64", "--preprocessing", "imagenet",
        "-o", str(d / "out")], 2,
         "these weights were saved from torchvision.models:mobilenet_v3_small, not "
         "torchvision.models:resnet18: pass --arch torchvision.models:mobilenet_v3_small "
         """--arch-kwargs '{"num_classes": 4}'"""),
    Case("recipe-state-dict-of-another-arch-names-it", lambda d: (
        _state_dict(d, "torchvision.models:mobilenet_v3_small", name="m.pt", num_classes=4),
        _small_images(d / "imgs", side=80), _recipe(
            d, MNV3_4.replace("mobilenet_v3_small", "resnet18").replace(
                ", arch_kwargs: {num_classes: 4}", "") + IMAGENET_64
            + "data: {eval: imgs}\nexports: [{target: onnx}]\n"))[-1], 2,
         "these weights were saved from torchvision.models:mobilenet_v3_small, not "
         "torchvision.models:resnet18"),
    Case("state-dict-in-a-wrapper", lambda d: [
        "export", str(_renamed_state_dict(d, lambda k: "model." + k)), "--arch", GREY,
        "--input-shape", "1,1,16,16", "--mean", "0.5", "--std", "0.5", "-o", str(d / "out")],
         2, "the keys carry a 'model.' prefix (the model was saved inside a wrapper)"),
    Case("state-dict-renamed-layer", lambda d: [
        "export", str(_renamed_state_dict(d, lambda k: k.replace("fc.", "fc1."))), "--arch",
        GREY, "--input-shape", "1,1,16,16", "--mean", "0.5", "--std", "0.5", "-o",
        str(d / "out")], 2,
         "the closest names differ: saved fc1.weight where grey has fc.weight, saved fc1.bias "
         "where grey has fc.bias"),
    # the same cases through a recipe
    Case("recipe-two-inputs", lambda d: (_state_dict(d, TWO, name="two.pt"), _grey_npz(d), _recipe(
        d, f"model: {{path: two.pt, arch: '{TWO}'}}\n"
           "input: {shape: [1, 3, 32, 32], mean: [0.5], std: [0.5]}\n"
           "data: {eval: grey.npz}\nexports: [{target: onnx}]\n"))[-1], 2,
         "forward(image, mask) takes 2 inputs"),
    Case("recipe-onnx-model", lambda d: (_dynamic_onnx(d), _grey_npz(d), _recipe(
        d, "model: {path: dyn.onnx}\ndata: {calib: grey.npz, eval: grey.npz}\n"
           "steps: [{quantize: {}}]\n"))[-1], 2,
         "dyn.onnx is an ONNX model; this needs the PyTorch model it was exported from"),
    Case("inspect-onnx-model", lambda d: ["inspect", str(_dynamic_onnx(d))], 2,
         "dyn.onnx is an ONNX model; this needs the PyTorch model it was exported from"),
    Case("recipe-preset-for-other-channels", lambda d: (
        _state_dict(d, GREY, name="grey.pt"), _grey_npz(d), _recipe(
            d, f"model: {{path: grey.pt, arch: '{GREY}'}}\ninput: {{preprocessing: imagenet}}\n"
               "data: {eval: grey.npz}\nexports: [{target: onnx}]\n"))[-1], 2,
         "preset imagenet is for 3-channel inputs"),
    Case("recipe-image-folder-smaller-than-input", lambda d: (
        _state_dict(d, "torchvision.models:mobilenet_v3_small", name="m.pt", num_classes=4),
        _small_images(d / "imgs"), _recipe(
            d, MNV3_4 + IMAGENET_64 + "data: {calib: imgs, eval: imgs}\n"
               "steps: [{quantize: {calib_size: 8}}]\n"))[-1], 2,
         "12 of 12 images are smaller than the model's 64×64 input"),
    Case("state-dict-num-classes-resnet18-32px", lambda d: [
        "export", str(_state_dict(d, "torchvision.models:resnet18", num_classes=7)),
        "--arch", "torchvision.models:resnet18", "--arch-kwargs", '{"num_classes": 10}',
        "--crop", "32", "-o", str(d / "out")], 2,
         "fc.weight saved 7×512, resnet18 has 10×512"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_user_model(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture) -> None:
    output = run_case(case, tmp_path, monkeypatch, capsys)
    assert "hint:" in output, output
    if case.absent:
        assert case.absent not in output, output


def test_hints_are_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """What each hint says to pass is what makes the command work: the state_dict's num_classes,
    the ONNX file's --input-shape, --allow-upscale (or an explicit --resize) for small images."""
    from tests.helpers import cli

    model = _state_dict(tmp_path, "torchvision.models:mobilenet_v3_small", num_classes=4)
    code, _, err = cli(capsys, "export", model, "--arch", "torchvision.models:mobilenet_v3_small",
                       "--crop", "32", "--preprocessing", "imagenet", "-o", tmp_path / "a")
    assert code == 2 and "num_classes" in err
    kwargs = json.loads(err.split("--arch-kwargs '")[1].split("'")[0])
    assert kwargs == {"num_classes": 4}
    code, _, err = cli(capsys, "export", model, "--arch", "torchvision.models:mobilenet_v3_small",
                       "--arch-kwargs", json.dumps(kwargs), "--crop", "32", "--preprocessing", "imagenet", "-o", tmp_path / "a")
    assert code == 0, err

    dyn = _dynamic_onnx(tmp_path)
    data = _grey_npz(tmp_path)
    code, _, err = cli(capsys, "compress", dyn, "--int8", "--calib", data, "-o", tmp_path / "b")
    assert code == 2 and "--input-shape 1,1,H,W" in err
    code, _, err = cli(capsys, "compress", dyn, "--int8", "--calib", data, "-o", tmp_path / "b",
                       "--input-shape", "1,1,16,16", "--mean", "0.5", "--std", "0.5")
    assert code == 0, err
    from edgekit.io.artifacts import spec_for

    assert spec_for(tmp_path / "b" / "model.int8.onnx").shape == (1, 1, 16, 16)

    imgs = _small_images(tmp_path / "imgs")
    base = ["export", model, "--arch", "torchvision.models:mobilenet_v3_small", "--arch-kwargs",
            json.dumps(kwargs), "--crop", "32", "--preprocessing", "imagenet", "--parity-data",
            imgs]
    code, _, err = cli(capsys, *base, "-o", tmp_path / "c")
    assert code == 2 and "smaller than the model's 32×32 input" in err and "is 20×12" in err, err
    assert not (tmp_path / "c").exists()
    for allow, out in ((["--allow-upscale"], "d"), (["--resize", "36"], "e")):
        code, _, err = cli(capsys, *base, *allow, "-o", tmp_path / out)
        assert code == 0, err
        assert (tmp_path / out / "model.onnx").is_file()


def test_api_raises_the_same_errors(tmp_path: Path) -> None:
    """Through the Python API: the same checks, as EdgekitError subclasses."""
    import edgekit
    from edgekit.errors import EdgekitError, ModelLoadError
    from edgekit.io.models import load_model

    model = _state_dict(tmp_path, "torchvision.models:resnet18", num_classes=7)
    with pytest.raises(ModelLoadError) as err:
        load_model(model, arch="torchvision.models:resnet18", preprocessing={"crop": 32})
    assert '--arch-kwargs \'{"num_classes": 7}\'' in err.value.hint
    two = _state_dict(tmp_path, TWO, name="two.pt")
    with pytest.raises(ModelLoadError, match=r"forward\(image, mask\) takes 2 inputs"):
        load_model(two, arch=TWO, input_shape=(1, 3, 32, 32),
                   preprocessing={"mean": (0.5,), "std": (0.5,)})
    with pytest.raises(EdgekitError, match="symbolic H"):
        edgekit.compress(_dynamic_onnx(tmp_path), tmp_path / "o", steps=["quantize"],
                         data={"calib": str(_grey_npz(tmp_path))})
    assert not (tmp_path / "o").exists()


def test_small_images_refused_by_every_reader_unless_allowed(tmp_path: Path) -> None:
    """load_dataset (bench, validate, the remote payload) and the compress preflight refuse
    images smaller than the input; inside allowing_upscale() they are scaled up to it; images
    at least the input's size are never refused (80×72 for a 64×64 crop after a resize)."""
    from edgekit.data import load_dataset
    from edgekit.data.folders import allowing_upscale, preflight
    from edgekit.errors import DataError
    from edgekit.spec import InputSpec

    imgs = _small_images(tmp_path / "imgs")
    spec = InputSpec(shape=(1, 3, 24, 24), mean=(0.5,), std=(0.5,))
    with pytest.raises(DataError, match=r"12 of 12 images are smaller than the model's 24×24 "
                       r"input \(the smallest, .*c0/0.png, is 20×12\)") as err:
        load_dataset(str(imgs), spec)
    assert "--allow-upscale" in err.value.hint
    with pytest.raises(DataError, match="smaller than the model's 24×24"):
        preflight({"eval": str(imgs)}, spec, 4)
    with allowing_upscale():
        data = load_dataset(str(imgs), spec)
        assert np.asarray(data.x).shape == (12, 3, 24, 24)
    fits = InputSpec(shape=(1, 3, 12, 12), mean=(0.5,), std=(0.5,))
    assert np.asarray(load_dataset(str(imgs), fits).x).shape == (12, 3, 12, 12)
    with pytest.raises(DataError, match="1 of 12 images are smaller than the model's 16×16"):
        load_dataset(str(imgs), InputSpec(shape=(1, 3, 16, 16), mean=(0.5,), std=(0.5,)))


def test_api_names_the_arch_and_the_onnx_model(tmp_path: Path) -> None:
    """Through the Python API: a state_dict of another architecture is refused with the arch it
    was saved from; an ONNX model where a PyTorch one is needed says so; a preset for another
    channel count is refused by compress before anything is written."""
    import edgekit
    from edgekit.errors import EdgekitError, ModelLoadError
    from edgekit.io.models import load_model

    model = _state_dict(tmp_path, "torchvision.models:mobilenet_v3_small", num_classes=4)
    with pytest.raises(ModelLoadError) as err:
        load_model(model, arch="torchvision.models:resnet18", input_shape=(1, 3, 64, 64),
                   preprocessing={"preset": "imagenet"})
    assert err.value.hint.startswith(
        "these weights were saved from torchvision.models:mobilenet_v3_small, not "
        "torchvision.models:resnet18: pass --arch torchvision.models:mobilenet_v3_small "
        """--arch-kwargs '{"num_classes": 4}'""")
    with pytest.raises(ModelLoadError, match="is an ONNX model; this needs the PyTorch model"):
        load_model(_dynamic_onnx(tmp_path))
    grey = _state_dict(tmp_path, GREY, name="grey.pt")
    with pytest.raises(EdgekitError, match="preset imagenet is for 3-channel inputs"):
        edgekit.compress(grey, tmp_path / "o", steps=["quantize"],
                         data={"calib": str(_grey_npz(tmp_path))},
                         model_input={"arch": GREY, "preprocessing": "imagenet"})
    assert not (tmp_path / "o").exists()


def test_a_fixed_size_model_says_which_dims_are_fixed(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """A ViT runs at its one image size: at 64×64 it is refused (exit 2, nothing written) with
    the dims that are fixed and the --input-shape that works; a ViT trained at 64×64 loads with
    the --arch-kwargs the hint gives (its other kwargs kept)."""
    timm = pytest.importorskip("timm", reason="timm is not installed (edgekit[timm])")
    from edgekit.errors import ModelLoadError
    from edgekit.io.models import load_model
    from tests.helpers import cli

    torch.manual_seed(0)
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=3).state_dict(),
               tmp_path / "vit.pt")
    arch = ("--arch", "timm:vit_tiny_patch16_224", "--arch-kwargs", '{"num_classes": 3}')
    code, _, err = cli(capsys, "export", tmp_path / "vit.pt", *arch, "--input-shape",
                       "1,3,64,64", "--mean", "0.5", "--std", "0.5", "-o", tmp_path / "out")
    assert code == 2, err
    assert "rejects input shape 1,3,64,64: its height and width are fixed at 224×224" in err
    assert "pass --input-shape 1,3,224,224" in err
    assert not (tmp_path / "out").exists()
    load = dict(arch="timm:vit_tiny_patch16_224", arch_kwargs={"num_classes": 3},
                preprocessing={"mean": (0.5,), "std": (0.5,)})
    with pytest.raises(ModelLoadError) as refused:
        load_model(tmp_path / "vit.pt", input_shape=(1, 3, 64, 64), **load)
    hint = refused.value.hint
    assert hint.endswith("""--arch-kwargs '{"num_classes": 3, "img_size": 64}'"""), hint
    assert load_model(tmp_path / "vit.pt", input_shape=(1, 3, 224, 224), **load).spec.shape \
        == (1, 3, 224, 224)
    small = timm.create_model("vit_tiny_patch16_224", num_classes=3, img_size=64)
    torch.save(small.state_dict(), tmp_path / "vit64.pt")
    load["arch_kwargs"] = json.loads(hint.split("--arch-kwargs '")[1].rstrip("'"))
    bundle = load_model(tmp_path / "vit64.pt", input_shape=(1, 3, 64, 64), **load)
    assert bundle.spec.shape == (1, 3, 64, 64)
    assert bundle.model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


def test_api_compress_refuses_two_inputs_and_small_images(tmp_path: Path) -> None:
    """edgekit.compress: an ONNX model with two inputs, and a calibration folder of images
    smaller than the model's input, are refused as on the CLI, before anything is written."""
    import edgekit
    from edgekit.errors import DataError, ModelLoadError
    from tests.e2e.test_bad_inputs import _onnx

    two = _onnx(tmp_path / "two.onnx", two_inputs=True)
    with pytest.raises(ModelLoadError, match=r"two.onnx takes 2 inputs \(input, mask\)"):
        edgekit.compress(two, tmp_path / "o1", steps=["quantize"],
                         data={"calib": str(_grey_npz(tmp_path))})
    model = _state_dict(tmp_path, "torchvision.models:mobilenet_v3_small", num_classes=4)
    with pytest.raises(DataError, match="12 of 12 images are smaller than the model's 64×64"):
        edgekit.compress(model, tmp_path / "o2", steps=["quantize"],
                         data={"calib": str(_small_images(tmp_path / "imgs"))},
                         model_input={"arch": "torchvision.models:mobilenet_v3_small",
                                      "arch_kwargs": {"num_classes": 4},
                                      "input_shape": (1, 3, 64, 64),
                                      "preprocessing": "imagenet"})
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
