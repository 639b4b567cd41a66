"""A corpus of bad inputs, generated at test time (issue 13): model files, ONNX files, data,
calibration sets, image folders, recipes and device profiles, results stores, CLI values.

Each case builds its input under tmp_path/"in", runs the CLI with its working directory and TMPDIR
set to empty folders, and checks: the exit code (2: bad input, with a hint, never a traceback),
the message, that no file anywhere under tmp_path changed or appeared (inputs, stores, foreign
files; output folders hold no `.part` files and no half manifest) and that nothing was left in
the working directory or TMPDIR. The payload test proves a checkpoint cannot make edgekit fetch
and unpickle a file of its choosing, through export, compress and run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

# onnxruntime's native library writes a `.ses` file into TMPDIR when it is first loaded; load it
# now, so that the cases' empty TMPDIR shows only what edgekit leaves there.
import onnxruntime  # noqa: E402, F401


# ---------------------------------------------------------------- input makers
def _checkpoint(d: Path, name: str = "model.pt", **changes) -> Path:
    """An untrained lenet5 edgekit checkpoint with fields replaced (... removes a field)."""
    from edgekit.io.models import save_checkpoint
    from edgekit.zoo import build

    torch.manual_seed(0)
    path = save_checkpoint(build("lenet5"), d / name)
    if changes:
        obj = torch.load(path, weights_only=True)
        for key, value in changes.items():
            if value is ...:
                obj.pop(key)
            else:
                obj[key] = value(obj) if callable(value) else value
        torch.save(obj, path)
    return path


def _state_dict_with(update: Callable[[dict], None]) -> Callable[[dict], dict]:
    def change(obj: dict) -> dict:
        sd = {k: v.clone() for k, v in obj["state_dict"].items()}
        update(sd)
        return sd
    return change


def _onnx(path: Path, *, op: str = "MatMul", domain: str = "", two_inputs: bool = False,
          meta: str | None = "spec", dims: tuple[int, int, int] = (1, 4, 4)) -> Path:
    """A linear classifier on 1×4×4 inputs (4 classes) made with onnx.helper; variants for the
    corpus: an unknown op, two inputs, fixed input dims, metadata text of the test's choosing."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.spec import ONNX_METADATA_KEY, InputSpec

    w = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *dims])]
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 4]))
    shape = numpy_helper.from_array(np.array([-1, 16], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["input", "shape"], ["flat"]),
             helper.make_node(op, ["flat", "W"], ["logits"], domain=domain)]
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    graph = helper.make_graph(nodes, "tiny", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                             ["batch", 4])],
                              [numpy_helper.from_array(w, "W"), shape])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    if meta is not None:
        entry = model.metadata_props.add()
        entry.key = ONNX_METADATA_KEY
        entry.value = InputSpec(shape=(1, 1, 4, 4), mean=(0.0,), std=(1.0,),
                                class_names=("a", "b", "c", "d")).to_json() \
            if meta == "spec" else meta
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _folder(d: Path) -> Path:
    """An edgekit output folder holding the tiny fp32 ONNX model."""
    from edgekit.io.manifest import Manifest

    out = d / "ref"
    _onnx(out / "model.onnx")
    Manifest(out).add_stage("export-onnx-fp32", outputs=[
        {"path": "model.onnx", "format": "onnx", "precision": "fp32", "model": "tiny"}])
    return out


def _eval(d: Path, n: int = 40, name: str = "eval.npz") -> Path:
    rng = np.random.default_rng(1)
    np.savez(d / name, x=rng.standard_normal((n, 1, 4, 4)).astype(np.float32),
             y=(np.arange(n) % 4).astype(np.int64))
    return d / name


def _profile(d: Path, text: str | None = None) -> Path:
    path = d / "quick.yaml"
    path.write_text(text or """
name: quick-cpu
kind: cpu
threads: 1
batch_sizes: [1]
runtimes: {onnxruntime: {precisions: [fp32, int8]}}
latency: {warmup_count: 2, warmup_seconds: 0.0, min_queries: 10, min_seconds: 0.01, max_seconds: 1}
""")
    return path


def _alias_bomb(indent: str) -> str:
    """Nine levels of ten aliases each: 10^9 nodes once expanded, 1 kB on disk."""
    lines = [f"{indent}a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"{indent}a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines)


def _png_bomb(path: Path, width: int = 30000, height: int = 30000) -> None:
    """A PNG whose header declares 900 megapixels (PIL refuses past 179 M), a few bytes long."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                       1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------- the cases
@dataclass
class Case:
    id: str
    make: Callable[[Path], list[str]]  # builds the inputs in d, returns the CLI argv
    code: int
    fragment: str
    absent: str | None = None  # a fragment the message must NOT hold


def _ckpt_case(**changes) -> Callable[[Path], list[str]]:
    return lambda d: ["export", str(_checkpoint(d, **changes)), "-o", str(d / "out")]


def _plain_module(d: Path) -> list[str]:
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), d / "m.pt")
    return ["export", str(d / "m.pt"), "-o", str(d / "out")]


def _torchscript(d: Path) -> list[str]:
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), str(d / "m.pt"))
    return ["export", str(d / "m.pt"), "-o", str(d / "out")]


def _pt2(d: Path) -> list[str]:
    program = torch.export.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),))
    torch.export.save(program, str(d / "m.pt2"))
    return ["export", str(d / "m.pt2"), "-o", str(d / "out")]


def _external_data_outside(d: Path) -> list[str]:
    import onnx

    path = _onnx(d / "model" / "m.onnx")
    model = onnx.load(str(path))
    tensor = model.graph.initializer[0]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    tensor.ClearField("raw_data")
    (d / "secret.bin").write_bytes(b"\0" * 256)
    onnx.save(model, str(path))
    return ["bench", str(path)]


def _onnx_case(cmd: str, **kw) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        path = _onnx(d / "m.onnx", **kw)
        if cmd == "bench":
            return ["bench", str(path), "--device", str(_profile(d))]
        if cmd == "compress":
            return ["compress", str(path), "--int8", "--calib", str(_eval(d, 16, "calib.npz")),
                    "--eval", str(_eval(d)), "-o", str(d / "out")]
        return ["export", str(path), "--target", "openvino", "-o", str(d / "out")]
    return make


def _bench_eval(make_eval: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda d: ["bench", str(_folder(d)), "--device", str(_profile(d)), "--eval",
                      str(make_eval(d))]


def _empty_npz(d: Path) -> Path:
    np.savez(d / "e.npz", x=np.zeros((0, 1, 4, 4), np.float32), y=np.zeros(0, np.int64))
    return d / "e.npz"


def _truncated_npz(d: Path) -> Path:
    data = _eval(d, name="full.npz").read_bytes()
    (d / "t.npz").write_bytes(data[: len(data) // 2])
    return d / "t.npz"


def _npy_renamed(d: Path) -> Path:
    np.save(d / "a.npy", np.zeros((4, 1, 4, 4), np.float32))
    (d / "a.npy").rename(d / "a.npz")
    return d / "a.npz"


def _random_npz(d: Path) -> Path:
    (d / "r.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    return d / "r.npz"


def _object_npz(d: Path) -> Path:
    np.savez(d / "o.npz", x=np.array([{"a": 1}, None], dtype=object))
    return d / "o.npz"


def _lying_npz(d: Path) -> Path:
    """A .npz whose x declares 100000×100000 float32 (40 GB) over a few bytes."""
    import zipfile

    header = {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000)}
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(d / "l.npz", "w") as zf:
        zf.writestr("x.npy", buf.getvalue() + b"\0" * 64)
    return d / "l.npz"


def _image_bomb(d: Path) -> Path:
    from PIL import Image

    (d / "imgs" / "a").mkdir(parents=True)
    Image.new("L", (4, 4)).save(d / "imgs" / "a" / "ok.png")
    _png_bomb(d / "imgs" / "b" / "bomb.png")
    return d / "imgs"


def _broken_sidecar(d: Path) -> list[str]:
    calib = d / "calib.npz"
    np.savez(calib, x=np.zeros((16, 28, 28), np.uint8), y=(np.arange(16) % 10).astype(np.int64))
    (d / "calib.json").write_text("{broken")
    return ["compress", str(_checkpoint(d)), "--int8", "--calib", str(calib), "-o", str(d / "out")]


def _corrupt_store(d: Path) -> list[str]:
    from edgekit.results.store import open_store

    store = d / "results.db"
    with open_store(store) as s:
        s.add([{"model": "m", "device": "x", "notes": "n" * 3000} for _ in range(50)])
    data = bytearray(store.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = b"Z" * 4096
    store.write_bytes(bytes(data))
    return ["validate", str(_folder(d)), "--device", str(_profile(d)), "--eval", str(_eval(d)),
            "--store", str(store)]


def _long_alias(chars: int = 100_000, aliases: int = 200) -> str:
    """One string aliased `aliases` times: 20 MB of text expanded, 200 nodes (under any node
    count a recipe could need)."""
    return f"big: &s {'x' * chars}\nmany: [" + ", ".join(["*s"] * aliases) + "]"


def _optimize_space(d: Path, text: str) -> list[str]:
    (d / "space.yaml").write_text(text)
    return ["optimize", str(_checkpoint(d)), "-o", str(d / "out"), "--space",
            str(d / "space.yaml"), "--eval", str(_eval(d))]


def _corrupt_study(d: Path) -> list[str]:
    """Issue 25 item 9: an output folder whose optuna.db is damaged in the middle (its header
    intact), as a crash or a full disk leaves it; optimize is rerun into it."""
    import optuna

    out = d / "out"
    out.mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{out / 'optuna.db'}", study_name="s",
                                directions=["minimize", "maximize"])
    for i in range(30):
        trial = study.ask()
        trial.set_user_attr("notes", "n" * 2000)
        study.tell(trial, [float(i), float(-i)])
    data = bytearray((out / "optuna.db").read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = b"Z" * 4096
    (out / "optuna.db").write_bytes(bytes(data))
    rng = np.random.default_rng(1)  # inputs lenet5 takes: the run would get to the study
    np.savez(d / "eval28.npz", x=rng.random((40, 1, 28, 28), np.float32),
             y=(np.arange(40) % 10).astype(np.int64))
    return ["optimize", str(_checkpoint(d)), "-o", str(out), "--device", str(_profile(d)),
            "--eval", str(d / "eval28.npz"), "--prune", "0", "--dwsep", "off",
            "--precisions", "fp32", "--trials", "2"]


def _recipe(d: Path, body: str) -> list[str]:
    _checkpoint(d)
    path = d / "recipe.yaml"
    path.write_text("recipe_version: 1\nname: bomb\n" + body)
    return ["run", str(path), "-o", str(d / "out")]


CASES = [
    # model files: what held before issue 13 keeps holding
    Case("plain-pickle-module", _plain_module, 2, "--trust-model"),
    Case("torchscript", _torchscript, 2, "--trust-model"),
    Case("torch-export-pt2", _pt2, 2, "--trust-model"),
    Case("arch-os-system", _ckpt_case(arch="os:system", arch_kwargs={"command": "true"}), 2,
         "not a model factory"),
    # item 1: a file names only listed factories, with no kwargs that fetch
    Case("arch-get-model", _ckpt_case(arch="torchvision.models:get_model",
                                      arch_kwargs={"name": "resnet18"}), 2, "not a model factory"),
    Case("arch-hub-url", _ckpt_case(arch="torchvision.models._api:load_state_dict_from_url",
                                    arch_kwargs={"url": "file:///x"}), 2, "not a model factory"),
    Case("arch-weights-kwarg", _ckpt_case(arch="torchvision.models:resnet18",
                                          arch_kwargs={"weights": "IMAGENET1K_V1"}), 2,
         "may not choose weights"),
    Case("arch-pretrained-kwarg", _ckpt_case(arch="torchvision.models:alexnet",
                                             arch_kwargs={"pretrained": True}), 2,
         "may not choose weights"),
    # item 5: malformed checkpoints, checked before anything is built or allocated
    Case("ckpt-no-state-dict", _ckpt_case(state_dict=...), 2, "no state_dict"),
    Case("ckpt-no-arch", _ckpt_case(arch=...), 2, "no arch"),
    Case("ckpt-arch-not-string", _ckpt_case(arch=5), 2, "not a 'module:factory' string"),
    Case("ckpt-kwargs-list", _ckpt_case(arch_kwargs=[1, 2]), 2, "arch_kwargs is a list"),
    Case("ckpt-bad-input-spec", _ckpt_case(input_spec={"shape": [1, 1, -3, 28]}), 2,
         "input_spec.shape"),
    Case("ckpt-input-spec-not-mapping", _ckpt_case(input_spec="1,1,28,28"), 2,
         "no input_spec mapping"),
    Case("ckpt-huge-input-spec", _ckpt_case(input_spec={"shape": [1, 1, 100000, 100000]}), 2,
         "absurdly large"),
    Case("ckpt-tensor-200000x200000", _ckpt_case(state_dict=_state_dict_with(
        lambda sd: sd.__setitem__("fc3.weight", torch.zeros(1).expand(200000, 200000)))), 2,
        "200000×200000"),
    Case("ckpt-state-dict-not-tensors", _ckpt_case(state_dict={"conv1.weight": [1, 2]}), 2,
         "not a named tensor"),
    Case("ckpt-num-classes-float", _ckpt_case(arch_kwargs={"num_classes": 1e8}), 2,
         "check --arch-kwargs"),
    Case("ckpt-num-classes-1e8", _ckpt_case(arch_kwargs={"num_classes": 10**8}), 2,
         "over edgekit's limit"),
    Case("ckpt-surgery-not-list", _ckpt_case(surgery={"op": "dwsep"}), 2, "surgery is a dict"),
    # item 7: NaN weights are named
    Case("ckpt-nan-weights", _ckpt_case(state_dict=_state_dict_with(
        lambda sd: sd["conv2.weight"].view(-1)[3:5].fill_(float("nan")))), 2,
        "conv2.weight holds NaN values (2 of", absent="report the model"),
    Case("arch-kwargs-list", lambda d: [
        "export", str(_checkpoint(d)), "--arch", "edgekit.zoo:lenet5", "--arch-kwargs", "[1,2]",
        "-o", str(d / "out")], 2, "must be a JSON object"),
    Case("input-shape-empty", lambda d: ["export", str(_checkpoint(d)), "--input-shape=",
                                         "-o", str(d / "out")], 2, "cannot read input shape"),
    Case("input-shape-absurd", lambda d: ["export", str(_checkpoint(d)), "--input-shape",
                                          "1,1,100000,100000", "-o", str(d / "out")], 2,
         "absurdly large"),
    # ONNX files (item 5), through bench, compress (nothing written) and export
    *[Case(f"onnx-unknown-op-{cmd}", _onnx_case(cmd, op="Explode", domain="com.evil"), 2,
           "com.evil:Explode") for cmd in ("bench", "compress", "export")],
    *[Case(f"onnx-two-inputs-{cmd}", _onnx_case(cmd, two_inputs=True), 2, "takes 2 inputs")
      for cmd in ("bench", "compress", "export")],
    *[Case(f"onnx-absurd-dims-{cmd}", _onnx_case(cmd, meta=None, dims=(1, 100000, 100000)), 2,
           "absurdly large") for cmd in ("bench", "compress", "export")],
    *[Case(f"onnx-metadata-not-json-{cmd}", _onnx_case(cmd, meta="{not json"), 2,
           "metadata is not a valid InputSpec") for cmd in ("bench", "compress", "export")],
    *[Case(f"onnx-metadata-invalid-{cmd}", _onnx_case(cmd, meta='{"shape": [1, 1, -4, 4]}'), 2,
           "metadata is not a valid InputSpec") for cmd in ("bench", "compress", "export")],
    Case("onnx-external-data-outside", _external_data_outside, 2, "outside the model's folder"),
    # item 7: bench's hint names no flag bench lacks
    Case("bench-no-input-spec", _onnx_case("bench", meta=None), 2, "does not say what input",
         absent="or pass --input-shape"),
    # data (item 5 and 7)
    Case("eval-empty", _bench_eval(_empty_npz), 2, "holds no samples"),
    Case("eval-truncated-npz", _bench_eval(_truncated_npz), 2, "not a valid .npz"),
    Case("eval-npy-renamed-npz", _bench_eval(_npy_renamed), 2, "single .npy array renamed"),
    Case("eval-random-bytes-npz", _bench_eval(_random_npz), 2, "not a valid .npz",
         absent="object arrays"),
    Case("eval-object-array-npz", _bench_eval(_object_npz), 2, "refuses to unpickle"),
    Case("eval-npz-declares-40gb", _bench_eval(_lying_npz), 2, "declares (100000, 100000)"),
    Case("eval-image-folder-png-bomb", _bench_eval(_image_bomb), 2, "too large to decode"),
    Case("calib-broken-sidecar", _broken_sidecar, 2, "calib.json is not valid JSON"),
    Case("calib-build-n-0", lambda d: ["calib", "build", str(_eval(d)), "-n", "0", "-o",
                                       str(d / "out" / "set.npz")], 2, "0 is not in the range"),
    Case("bench-threads-0", lambda d: ["bench", str(_folder(d)), "--threads", "0"], 2,
         "0 is not in the range"),
    Case("bench-limit-0", lambda d: ["bench", str(_folder(d)), "--limit", "0"], 2,
         "0 is not in the range"),
    # results store damaged in the middle: refused before measuring, left as it was
    Case("store-corrupt-mid-file", _corrupt_store, 2, "malformed"),
    # item 4: YAML alias bombs
    Case("recipe-alias-bomb-arch-kwargs", lambda d: _recipe(
        d, f"model:\n  path: model.pt\n  arch: edgekit.zoo:lenet5\n  arch_kwargs:\n"
           f"{_alias_bomb('    ')}\ndata: {{eval: eval.npz}}\nsteps: []\ndevices: [local-cpu]\n"),
        2, "alias"),
    Case("recipe-alias-bomb-device-options", lambda d: _recipe(
        d, "model: {path: model.pt}\ndata: {eval: eval.npz}\nsteps: []\ndevices:\n"
           "  - profile: local-cpu\n    runtimes:\n      onnxruntime:\n        options:\n"
           f"{_alias_bomb('          ')}\n"), 2, "alias"),
    Case("profile-alias-bomb", lambda d: ["bench", str(_folder(d)), "--device", str(_profile(
        d, "name: bomb\n" + _alias_bomb("")))], 2, "alias"),
    Case("recipe-recursive-alias", lambda d: _recipe(d, "model: &m {path: [*m]}\n"), 2,
         "recursive alias"),
    Case("output-under-a-file", lambda d: ["export", str(_checkpoint(d)), "-o",
                                           str(_eval(d)) + "/out"], 2, "Not a directory"),
    # issue 25 item 2: a recipe names only listed archs and cannot trust its own model file
    # (the snapshot check sees the marker the command would touch)
    Case("recipe-arch-os-system", lambda d: _recipe(
        d, f"model: {{arch: 'os:system', arch_kwargs: {{command: 'touch {d}/pwned'}}, "
           "train: {epochs: 1}}\ninput: {shape: [1, 1, 28, 28], mean: [0.5], std: [0.5]}\n"
           "data: {train: fashion-mnist:train, eval: eval.npz}\n"), 2, "not a model factory"),
    Case("recipe-arch-hub-url", lambda d: _recipe(
        d, "model: {path: model.pt, arch: 'torchvision.models._api:load_state_dict_from_url', "
           f"arch_kwargs: {{url: 'file://{d}/x.pt', model_dir: '{d}/hub'}}}}\n"
           "data: {eval: eval.npz}\n"), 2, "--trust-recipe"),
    Case("recipe-trust-model", lambda d: _recipe(
        d, "model: {path: model.pt, trust_model: true}\ndata: {eval: eval.npz}\n"), 2,
         "cannot trust its own model file"),
    # issue 25 item 6: one long string aliased many times is bounded in characters
    Case("recipe-alias-long-string", lambda d: _recipe(
        d, _long_alias() + "\nmodel: {path: model.pt}\ndata: {eval: eval.npz}\n"), 2,
         "characters of text"),
    Case("optimize-space-alias-long-string", lambda d: _optimize_space(d, _long_alias()), 2,
         "characters of text"),
    Case("optimize-space-invalid-yaml", lambda d: _optimize_space(d, "prune: [0, 0.3\n"), 2,
         "is not valid YAML"),
    # issue 25 item 8: values are finite and within bounds, named in the error
    *[Case(f"export{flag}-{value}", lambda d, flag=flag, value=value: [
        "export", str(_checkpoint(d)), flag, value, "-o", str(d / "out")], 2, message)
      for flag, value, message in (
          ("--mean", "nan", "--mean nan: nan is not a finite number"),
          ("--std", "inf", "--std inf: inf is not a finite number"),
          ("--std", "1e-45", "--std 1e-45: 1e-45 is outside"),
          ("--resize", "99999999999", "99999999999 is not in the range"))],
    Case("bench-std-inf", lambda d: ["bench", str(_folder(d)), "--std", "inf"], 2,
         "--std inf: inf is not a finite number"),
    Case("recipe-std-nan", lambda d: _recipe(
        d, "model: {path: model.pt}\ninput: {std: [.nan]}\ndata: {eval: eval.npz}\n"), 2,
         "input.std: Value error, nan is not a finite number"),
    Case("recipe-resize-huge", lambda d: _recipe(
        d, "model: {path: model.pt}\ninput: {resize: 99999999999}\ndata: {eval: eval.npz}\n"),
         2, "99999999999 is over edgekit's limit"),
    Case("optimize-max-drop-nan", lambda d: [
        "optimize", str(_checkpoint(d)), "-o", str(d / "out"), "--max-drop", "nan",
        "--eval", str(_eval(d))], 2, "'--max-drop': nan is not a finite number"),
    Case("validate-max-drop-rel-inf", lambda d: [
        "validate", str(_folder(d)), "--eval", str(_eval(d)), "--max-drop-rel", "inf"], 2,
         "'--max-drop-rel': inf is not a finite number"),
    Case("compress-max-drop-nan", lambda d: [
        "compress", str(_checkpoint(d)), "--int8", "--max-drop", "nan", "-o", str(d / "out")],
         2, "'--max-drop': nan is not a finite number"),
    # issue 25 item 9: a damaged study is bad input with the way out, not "budget not met"
    Case("optimize-corrupt-study", _corrupt_study, 2, "move it aside", absent="max-drop"),
    Case("validate-store-under-a-file", lambda d: [
        "validate", str(_folder(d)), "--device", str(_profile(d)), "--eval", str(_eval(d)),
        "--store", str(_eval(d)) + "/results.db"], 2,
         "cannot open the results store", absent="Traceback"),
]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


def _run_cli(argv: list[str], cwd: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """The CLI in-process (one torch import for the whole corpus), with its working directory
    and TMPDIR pointed at empty folders so that anything it leaves there is seen."""
    from edgekit.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def run_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture) -> str:
    """Build the case's inputs, run the CLI, check its exit code and message, and that no file
    under tmp_path changed or appeared (inputs, store, working directory, TMPDIR). Its output."""
    d, cwd, tmp = tmp_path / "in", tmp_path / "cwd", tmp_path / "tmp"
    for folder in (d, cwd, tmp):
        folder.mkdir()
    argv = case.make(d)
    before = _snapshot(tmp_path)
    code, output = _run_cli(argv, cwd, tmp, monkeypatch, capsys)
    assert code == case.code, output
    assert case.fragment in output, output
    assert "Traceback" not in output
    after = _snapshot(tmp_path)
    changed = sorted(k for k in before if after.get(k) != before[k])
    appeared = sorted(set(after) - set(before))
    assert not changed, f"inputs changed: {changed}"
    assert not appeared, f"left behind: {appeared}"
    return output


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture) -> None:
    output = run_case(case, tmp_path, monkeypatch, capsys)
    if case.code == 2:
        assert "hint:" in output or "Usage:" in output or "Error: Invalid value" in output, output
    if case.absent:
        assert case.absent not in output, output


def test_read_only_output_folder(tmp_path: Path) -> None:
    """A folder edgekit cannot write into is exit 2 with a hint, and nothing is left in it.
    root ignores permission bits, so as root the folder is made a read-only bind mount in a
    private mount namespace (unshare -m), which refuses root too (EROFS)."""
    base = tmp_path / "base"
    base.mkdir()
    np.savez(base / "eval.npz", x=np.zeros((16, 28, 28), np.uint8),
             y=(np.arange(16) % 4).astype(np.int64))
    ro = base / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    cmd = [sys.executable, "-m", "edgekit", "calib", "build", str(base / "eval.npz"), "-n",
           "8", "-o", str(ro / "set.npz")]
    if os.geteuid() == 0:
        assert shutil.which("unshare"), "util-linux's unshare is needed to test as root"
        cmd = ["unshare", "-m", "sh", "-c",
               'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && shift && exec "$@"',
               str(ro), "--", *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(base)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=base, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert f"cannot write in {ro}" in proc.stderr and "hint:" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_store_in_a_read_only_folder(tmp_path: Path) -> None:
    """Issue 25 item 8: `validate --store` in a folder that cannot be written is exit 2 naming
    the store, before anything is measured (it was an sqlite3 traceback). As root, as above, the
    folder is a read-only bind mount in a private mount namespace."""
    d = tmp_path / "in"
    d.mkdir()
    folder, eval_npz, profile = _folder(d), _eval(d), _profile(d)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    cmd = [sys.executable, "-m", "edgekit", "validate", str(folder), "--device", str(profile),
           "--eval", str(eval_npz), "--store", str(ro / "results.db")]
    if os.geteuid() == 0:
        assert shutil.which("unshare"), "util-linux's unshare is needed to test as root"
        cmd = ["unshare", "-m", "sh", "-c",
               'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && shift && exec "$@"',
               str(ro), "--", *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert f"cannot open the results store {ro / 'results.db'}" in proc.stderr
        assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_damaged_study_is_refused_and_the_cache_serves_the_rerun(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Issue 25 item 9, the way out the error gives: a search, its optuna.db damaged, the rerun
    refused at open (exit 2, the file untouched), the file moved aside as the hint says, and
    the next rerun measures nothing again: every candidate comes from the measurement cache."""
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(1)
    np.savez(d / "eval28.npz", x=rng.random((40, 1, 28, 28), np.float32),
             y=(np.arange(40) % 10).astype(np.int64))
    out = d / "out"
    argv = ["optimize", str(_checkpoint(d)), "-o", str(out), "--device", str(_profile(d)),
            "--eval", str(d / "eval28.npz"), "--prune", "0", "--dwsep", "off",
            "--precisions", "fp32,int8", "--calib", str(d / "eval28.npz"), "--trials", "2"]
    (tmp_path / "tmp").mkdir()

    def optimize() -> tuple[int, str]:
        return _run_cli(argv, tmp_path, tmp_path / "tmp", monkeypatch, capsys)

    code, output = optimize()
    assert code in (0, 1) and "Traceback" not in output, output
    first = json.loads((out / "optimize.json").read_text())["cache"]
    assert first["measured"] > 0
    study = out / "optuna.db"
    data = bytearray(study.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = b"Z" * 4096
    study.write_bytes(bytes(data))
    code, output = optimize()
    assert code == 2, output
    assert "is damaged" in output and f"mv {study} {study}.damaged" in output
    assert "max-drop" not in output and "Traceback" not in output
    assert study.read_bytes() == bytes(data)
    study.rename(f"{study}.damaged")
    code, output = optimize()
    assert code in (0, 1) and "Traceback" not in output, output
    again = json.loads((out / "optimize.json").read_text())["cache"]
    assert again["measured"] == 0 and again["hits"] >= first["measured"], (first, again)


def test_checkpoint_cannot_fetch_and_unpickle_a_payload(tmp_path: Path) -> None:
    """The exploit the adversarial pass found: a weights_only-loadable checkpoint naming
    torchvision.models._api:load_state_dict_from_url with a file:// URL of its choosing and a
    model_dir. Through export, compress, run and `export OUT/`: exit 2, the payload never
    unpickled (no marker), nothing fetched into model_dir."""
    marker, model_dir = tmp_path / "pwned", tmp_path / "hub"
    payload = tmp_path / "payload.pt"
    torch.save({"state_dict": _Payload(marker)}, payload, _use_new_zipfile_serialization=False)
    evil = _checkpoint(tmp_path, "evil.pt",
                       arch="torchvision.models._api:load_state_dict_from_url",
                       arch_kwargs={"url": payload.as_uri(), "model_dir": str(model_dir),
                                    "weights_only": False, "check_hash": False})
    from edgekit.io.manifest import Manifest

    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(evil, folder / "model.pt")
    Manifest(folder).add_stage("checkpoint", outputs=[{"path": "model.pt", "format": "checkpoint",
                                                       "precision": "fp32", "model": "evil"}])
    _eval(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"recipe_version: 1\nname: evil\nmodel: {{path: {evil}}}\n"
                      f"data: {{eval: {tmp_path / 'eval.npz'}}}\nsteps: [{{quantize: {{}}}}]\n"
                      "devices: [local-cpu]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for argv in (["export", str(evil), "-o", str(tmp_path / "o1")],
                 ["compress", str(evil), "--int8", "-o", str(tmp_path / "o2")],
                 ["run", str(recipe), "-o", str(tmp_path / "o3")],
                 ["export", str(folder), "--target", "onnx"]):
        proc = subprocess.run([sys.executable, "-m", "edgekit", *argv], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=300)
        assert not marker.exists(), f"the payload ran through {argv[0]}"
        assert not model_dir.exists(), f"{argv[0]} fetched into model_dir"
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "not a model factory" in proc.stderr and "Traceback" not in proc.stderr
    # The payload is real: loading it the unsafe way does run it.
    torch.load(payload, weights_only=False)
    assert marker.exists()
