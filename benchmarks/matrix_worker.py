"""One model of the model matrix (benchmarks/bench_matrix.py), run in its own process:

    python benchmarks/matrix_worker.py tv:mobilenet_v3_small WORK_DIR [--profile FILE]

builds the architecture with random weights (torch.manual_seed(0), 10 classes; BatchNorm statistics
from the images, recalibrate_norms) at the smallest
resolution it runs at (64, 96, 128, 160 or 224; ViTs at their own grid through image_size /
img_size), saves its state_dict, makes structured RGB images (gradients, gratings, shapes) whose
labels are the original's own predictions, and takes it through the columns below with the
`edgekit` CLI in this process, each as a user types it. Prints one JSON object: per column its
status (pass / refused / bug), the seconds, the reason (the first line of the error) and, for
int8, the top-1 agreement with the fp32 original and, against its fp32 ONNX model, the
margin-aware agreement, the logits' SQNR and cosine (`agreement`).

A column "refused" exited 2 with an edgekit error (bad input it names); "bug" is a traceback, an
exit code edgekit does not document, or an exception escaping; "pass" exited 0, or 1 for a gate
or budget that was not met (the command ran and said so).

What a model costs (issue 27): torch.onnx's dynamo export is most of it (mobilenet_v3_small under
cProfile: 141 of 229 s in 6 exports), so the fp32 ONNX model is exported once, by `load`, and the
columns that start from it take it as a user who exported would: `int8_ort` and `int8_openvino`
compress load's model.onnx (`edgekit compress model.onnx --int8`), `export_openvino` exports
load's folder. Their PASS still means the model reaches that artifact from the checkpoint (load
is the same export `compress MODEL.pt --int8` runs first, and prune/dwsep run the PyTorch compress
path); a model whose `load` did not pass runs them from the checkpoint, as before, so each
column keeps its own verdict. Every export's parity check runs on the matrix's eval images (96,
the model's own inputs, labelled by it) rather than the built-in fashion-mnist default (256
grey digits stretched to RGB). Each cell records `phases`: its seconds in the ONNX export, torch
forward passes (eval and parity), OpenVINO conversion, NNCF and the prune plan, each counted
once (a phase inside another is not counted in the outer one), and `other`; the record's `setup`
holds the seconds of the imports, the build and the data before the first column."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekit.preprocessing import PRESETS  # noqa: E402 - the checkout's edgekit, put on the path above

RESOLUTIONS = (64, 96, 128, 160, 224)
IMAGENET = PRESETS["imagenet"]  # the models' normalisation, passed as --mean/--std
MEAN, STD = ",".join(map(str, IMAGENET.mean)), ",".join(map(str, IMAGENET.std))
EVAL_IMAGES, CALIB_IMAGES = 96, 32
COLUMNS = ("load", "inspect", "prune", "dwsep", "int8_ort", "int8_openvino", "export_openvino",
           "validate")
PROFILE = """
name: matrix-cpu
kind: cpu
threads: 2
batch_sizes: [1]
runtimes:
  onnxruntime: {precisions: [fp32, int8]}
  openvino: {precisions: [fp32, int8]}
latency: {warmup_count: 2, warmup_seconds: 0.0, min_queries: 10, min_seconds: 0.0, max_seconds: 5}
"""


def arch_of(model_id: str) -> str:
    source, _, name = model_id.partition(":")
    return f"torchvision.models:{name}" if source == "tv" else f"timm:{name}"


def build(model_id: str) -> tuple[Any, int, dict[str, Any]]:
    """(model in eval mode, resolution, arch kwargs): the smallest resolution it runs at."""
    import torch

    from edgekit.io.models import build_arch

    source = model_id.partition(":")[0]
    size_key = "image_size" if source == "tv" else "img_size"
    last: Exception | None = None
    for res in RESOLUTIONS:
        for extra in ({}, {size_key: res}):
            kwargs = {"num_classes": 10, **extra}
            try:
                torch.manual_seed(0)
                model = build_arch(arch_of(model_id), kwargs).eval()
                with torch.no_grad():
                    out = model(torch.zeros(1, 3, res, res))
                if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, 10):
                    raise ValueError(f"output {getattr(out, 'shape', type(out))}")
            except Exception as exc:  # noqa: BLE001 - try the next size
                last = exc
                continue
            randomize_zero_heads(model)
            recalibrate_norms(model, res)
            return model, res, kwargs
    raise RuntimeError(f"no resolution in {RESOLUTIONS} runs: {last}")


def randomize_zero_heads(model: Any) -> None:
    """A zero-initialised classifier (torchvision's ViT head) gets random weights: with every
    logit 0 there is no prediction to agree with."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and not module.weight.detach().any():
            torch.nn.init.normal_(module.weight, std=0.02)


def structured_images(n: int, res: int, seed: int) -> Any:
    """uint8 N,H,W,3 images with structure a classifier reacts to: colour gradients, gratings
    of random frequency and angle, and filled rectangles and discs on them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:res, 0:res].astype(np.float32) / res
    out = np.empty((n, res, res, 3), np.float32)
    for i in range(n):
        base = rng.uniform(0, 1, 3)[None, None] + rng.uniform(-1, 1, 3)[None, None] * \
            (xx[..., None] * rng.uniform(-1, 1) + yy[..., None] * rng.uniform(-1, 1))
        angle, freq = rng.uniform(0, np.pi), rng.uniform(2, 12)
        grating = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        img = base + 0.3 * grating[..., None] * rng.uniform(-1, 1, 3)[None, None]
        for _ in range(rng.integers(1, 4)):
            colour = rng.uniform(0, 1, 3)
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.3)
            mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2) if rng.random() < 0.5 else \
                ((abs(xx - cx) < r) & (abs(yy - cy) < r * rng.uniform(0.3, 1.5)))
            img[mask] = colour
        out[i] = img
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def normalized(x: Any) -> Any:
    """uint8 N,H,W,3 images as the model's float N,3,H,W input (ImageNet mean/std)."""
    import numpy as np
    import torch

    mean = np.array(IMAGENET.mean, np.float32)[:, None, None]
    std = np.array(IMAGENET.std, np.float32)[:, None, None]
    return torch.from_numpy((x.transpose(0, 3, 1, 2).astype(np.float32) / 255 - mean) / std)


def recalibrate_norms(model: Any, res: int) -> None:
    """BatchNorm running statistics from the structured images (a random-weight model's
    defaults, mean 0 and variance 1, let activations shrink layer by layer: mobilenet_v3_small's
    logits were 1e-9 at random init, where every prediction is a tie). A user's trained model
    has real statistics; this makes a random one behave like one, without changing a weight."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    def collect() -> None:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        with torch.no_grad():
            for seed in range(4):
                model(normalized(structured_images(32, res, 100 + seed)))

    try:
        model.train()
        collect()
    except RuntimeError:
        # a branch that runs in training only and not at this size (inception_v3's auxiliary
        # classifier below 299x299): the model in eval mode, its norm layers in training mode
        model.eval()
        for m in norms:
            m.train()
        collect()
    model.eval()


def make_data(model: Any, res: int, work: Path) -> dict[str, Any]:
    """eval.npz (images, labels = the original's predictions) and calib.npz."""
    import numpy as np
    import torch

    x = structured_images(EVAL_IMAGES, res, 0)
    with torch.no_grad():
        logits = model(normalized(x)).numpy()
    np.savez(work / "eval.npz", x=x, y=logits.argmax(1).astype(np.int64))
    np.savez(work / "calib.npz", x=structured_images(CALIB_IMAGES, res, 1))
    return {"logit_scale": float(np.abs(logits).max()),
            "classes_predicted": int(len(np.unique(logits.argmax(1)))),
            "input_step": input_step(model, x, logits)}


def input_step(model: Any, x: Any, logits: Any) -> dict[str, float]:
    """How far the fp32 original itself moves when every pixel moves by one uint8 step (±1 at
    random, clipped): its logits' SQNR and top-1 agreement against the unmoved ones. A
    random-weight network can amplify any rounding (efficientnet_b0 and mobileone_s0 lose
    10-30 % of their top-1s and most of their SQNR to it): int8, whose rounding is coarser, is
    judged against this floor, not against a trained model's."""
    import numpy as np
    import torch

    from edgekit.metrics import fidelity

    rng = np.random.default_rng(2)
    moved = np.clip(x.astype(np.int16) + rng.choice(np.array([-1, 1], np.int16), x.shape),
                    0, 255).astype(np.uint8)
    with torch.no_grad():
        measured = fidelity(logits, model(normalized(moved)).numpy())
    return {"sqnr_db": round(measured["sqnr_db"], 2),
            "agreement": round(measured["top1_agreement"], 4)}


# (phase, the module attributes it times): each is looked up as a module global at call time
PHASES = (
    ("onnx_export", ("edgekit.targets.onnx:_torch_export",)),
    ("torch_forward", ("edgekit.metrics:torch_logits", "edgekit.targets.onnx:torch_logits")),
    ("openvino_convert", ("edgekit.targets.openvino:convert_onnx",)),
    ("nncf_quantize", ("edgekit.targets.openvino:quantize_openvino",)),
    ("prune_plan", ("edgekit.passes.channel_pruning:prune_model",
                    "edgekit.passes.prune:prune_model")),
)


class PhaseClock:
    """Seconds per phase, each second counted once: while a timed function calls another timed
    one (NNCF converting to OpenVINO first), the inner phase gets those seconds, not the outer."""

    def __init__(self, clock: Any = time.perf_counter) -> None:
        self.clock = clock
        self.totals: dict[str, float] = {}
        self.stack: list[list[Any]] = []  # [phase, since]

    def _charge(self, now: float) -> None:
        if self.stack:
            name, since = self.stack[-1]
            self.totals[name] = self.totals.get(name, 0.0) + now - since
            self.stack[-1][1] = now

    def wrap(self, name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            now = self.clock()
            self._charge(now)
            self.stack.append([name, now])
            try:
                return fn(*args, **kwargs)
            finally:
                now = self.clock()
                self._charge(now)
                self.stack.pop()
                if self.stack:
                    self.stack[-1][1] = now
        return timed

    def install(self) -> None:
        """Wrap every PHASES attribute (once per process)."""
        import importlib

        for name, targets in PHASES:
            for target in targets:
                module_name, _, attr = target.partition(":")
                module = importlib.import_module(module_name)
                fn = getattr(module, attr)
                if not getattr(fn, "_matrix_phase", None):
                    timed = self.wrap(name, fn)
                    timed._matrix_phase = name  # type: ignore[attr-defined]
                    setattr(module, attr, timed)

    def take(self, seconds: float) -> dict[str, float]:
        """The phases since the last take (rounded), with `other`: the rest of `seconds`."""
        out = {k: round(v, 1) for k, v in self.totals.items()}
        out["other"] = round(max(0.0, seconds - sum(self.totals.values())), 1)
        self.totals = {}
        return out


CLOCK = PhaseClock()


def run_cli(args: list[str]) -> dict[str, Any]:
    """`edgekit ARGS` in this process: status, seconds, the error's first line, stdout."""
    from edgekit.cli import main

    CLOCK.take(0.0)  # what ran between columns (the agreement measurement) is no column's
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        except BaseException:  # noqa: BLE001 - escaping the CLI is a bug, recorded as one
            code = "exception"
            err.write(traceback.format_exc())
    text = err.getvalue()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if code == "exception" or "Traceback (most recent call last)" in text or code not in (0, 1, 2):
        status = "bug"
        reason = (lines[-1] if lines else f"exit {code}")[:300]
    elif code == 2:
        status = "refused"
        reason = next((ln for ln in lines if ln.lower().startswith("error")), lines[0] if lines
                      else "exit 2")[:300]
    elif code == 1 and str(args[0]) == "export":
        # an export's own check failed (its parity): no artifact, a reason given, no bug
        status = "refused"
        reason = next((ln for ln in lines if ln.lower().startswith("error")), "exit 1")[:300]
    else:
        status, reason = "pass", ("budget or gate not met (exit 1)" if code == 1 else "")
    seconds = time.perf_counter() - started
    return {"status": status, "exit": code, "seconds": round(seconds, 1),
            "phases": CLOCK.take(seconds), "reason": reason, "stdout": out.getvalue()}


def logits_of(path: Path, data_path: Path) -> tuple[Any, Any]:
    """(logits on the eval images as the artifact records its preprocessing, the labels)."""
    import numpy as np

    from edgekit.data import load_dataset
    from edgekit.io.artifacts import spec_for
    from edgekit.runtimes.base import runner_for_artifact

    spec = spec_for(path)
    data = load_dataset(str(data_path), spec)
    runner = runner_for_artifact(path)(path, spec, threads=2)
    try:
        return runner.predict(data.x), np.asarray(data.y)
    finally:
        close = getattr(runner, "close", None)
        if close:
            close()


def margin_agreement(reference: Any, candidate: Any) -> tuple[float, int]:
    """Top-1 agreement on the images whose reference top-1 margin exceeds that image's own
    largest logit difference (a flip there is not rounding at the top two), and how many such
    images there are (1.0 when none)."""
    import numpy as np

    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > np.abs(ref - cand).max(axis=1)
    same = ref.argmax(1) == cand.argmax(1)
    return (float(same[clear].mean()) if clear.any() else 1.0), int(clear.sum())


def agreement(work: Path, folder: Path) -> dict[str, Any]:
    """The folder's int8 artifact against the fp32 original: top-1 agreement on the eval images
    (labels = the original's predictions), the same for the folder's fp32 ONNX model (what the
    export itself keeps), the logits' cosine to the fp32 ONNX model's, and the agreement a guess
    drawn from the labels' shares would reach (`chance`). Random weights leave many near-tied
    logits, where top-1 agreement says little, so against the fp32 ONNX model's logits also:
    edgekit's margin-aware agreement (edgekit.metrics.decisive_agreement, the parity rule's:
    images whose margin exceeds the median largest logit difference, none excused when that
    error is as large as the logits), the agreement on images whose margin exceeds their own
    largest difference (`margin_agreement`), and the logits' SQNR in dB."""
    import numpy as np

    from edgekit.io.artifacts import list_artifacts
    from edgekit.metrics import fidelity

    entries = list_artifacts(folder)
    int8 = next(Path(e["path"]) for e in entries if e.get("precision") == "int8")
    fp32 = next(Path(e["path"]) for e in entries
                if e.get("precision", "fp32") == "fp32" and Path(e["path"]).suffix == ".onnx")
    q, labels = logits_of(int8, work / "eval.npz")
    f, _ = logits_of(fp32, work / "eval.npz")
    cosine = (q * f).sum(1) / np.maximum(np.linalg.norm(q, axis=1) * np.linalg.norm(f, axis=1),
                                         1e-12)
    share = np.bincount(labels, minlength=int(labels.max()) + 1) / len(labels)
    measured = fidelity(f, q)
    clear_agreement, clear_images = margin_agreement(f, q)
    return {"agreement": round(float((q.argmax(1) == labels).mean()), 4),
            "fp32_onnx_agreement": round(float((f.argmax(1) == labels).mean()), 4),
            "int8_vs_fp32_onnx_agreement": round(float((q.argmax(1) == f.argmax(1)).mean()), 4),
            "decisive_agreement": round(measured["decisive_agreement"], 4),
            "decisive_images": measured["decisive_samples"],
            "ties_excused": measured["ties_excused"],
            "margin_agreement": round(clear_agreement, 4), "margin_images": clear_images,
            "sqnr_db": round(measured["sqnr_db"], 2),
            "cosine_mean": round(float(cosine.mean()), 4),
            "cosine_min": round(float(cosine.min()), 4),
            "chance": round(float((share ** 2).sum()), 4),
            "images": int(len(labels)), "artifact": int8.name}


def commands_for(model_id: str, work: Path, res: int, kwargs: dict[str, Any],
                 load_passed: bool) -> dict[str, list[Any]]:
    """Each column's `edgekit` arguments. With `load_passed` (load wrote WORK/onnx/model.onnx)
    int8_ort, int8_openvino and export_openvino start from load's fp32 ONNX model, as a user who
    exported does; without it, from the checkpoint (each column still gets its own verdict)."""
    ckpt = work / "model.pt"
    common = ["--arch", arch_of(model_id), "--arch-kwargs", json.dumps(kwargs),
              "--input-shape", f"1,3,{res},{res}", "--resize", str(res), "--crop", str(res),
              "--mean", MEAN, "--std", STD]
    evalset, calib = str(work / "eval.npz"), str(work / "calib.npz")
    onnx = work / "onnx" / "model.onnx"
    reuse = load_passed and onnx.is_file()
    # int8 from the fp32 ONNX model reads its InputSpec from the file: no model flags
    int8_source, int8_flags = (onnx, []) if reuse else (ckpt, common)
    return {
        "load": ["export", ckpt, "--target", "onnx", "-o", work / "onnx",
                 "--parity-data", evalset, *common],
        "inspect": ["inspect", ckpt, *common, "--json"],
        "prune": ["compress", ckpt, "--prune", "0.3", "--distill-epochs", "0", "--eval", evalset, "--max-drop", "100",
                  "-o", work / "prune", "--json", *common],
        "dwsep": ["compress", ckpt, "--dwsep", "--distill-epochs", "0", "--eval", evalset, "--max-drop", "100",
                  "-o", work / "dwsep", "--json", *common],
        # random weights leave small margins: int8 is measured below, not gated here
        "int8_ort": ["compress", int8_source, "--int8", "--calib", calib, "--eval", evalset,
                     "--max-drop", "100", "--min-agreement", "0", "-o", work / "int8", "--json",
                     *int8_flags],
        "int8_openvino": ["compress", int8_source, "--int8", "--for", "openvino", "--calib",
                          calib, "--eval", evalset, "--max-drop", "100", "--min-agreement", "0",
                          "-o", work / "int8-ov", "--json", *int8_flags],
        "export_openvino": ["export", work / "onnx", "--target", "openvino", "-o", work / "ov",
                            "--parity-data", evalset] if reuse else
                           ["export", ckpt, "--target", "openvino", "-o", work / "ov",
                            "--parity-data", evalset, *common],
        "validate": ["validate", work / "int8", "--eval", evalset, "--device",
                     work / "profile.yaml", "--json"],
    }


def prune_flags_from_inspect(stdout: str) -> list[str]:
    """The flags `edgekit inspect --json` says the prune step needs on this model (e.g.
    `--prune-heads 0` for attention whose heads cannot be removed): the prune column adds them,
    as a user reading inspect's next command would. [] when inspect said none or failed."""
    try:
        report = json.loads(stdout)
    except (TypeError, ValueError):
        return []
    prune = (report.get("passes") or {}).get("prune") or {} if isinstance(report, dict) else {}
    flags = prune.get("flags") if prune.get("applies") else None
    return [str(f) for f in flags] if isinstance(flags, list) else []


def run_model(model_id: str, work: Path) -> dict[str, Any]:
    started = time.perf_counter()
    import torch

    import edgekit.cli  # noqa: F401 - the imports every column needs, timed as setup

    CLOCK.install()
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"model": model_id, "columns": {}}
    setup = result["setup"] = {"import": round(time.perf_counter() - started, 1)}
    began = time.perf_counter()
    try:
        model, res, kwargs = build(model_id)
    except Exception as exc:  # noqa: BLE001
        result["build_error"] = f"{type(exc).__name__}: {exc}"[:300]
        return result
    setup["build"] = round(time.perf_counter() - began, 1)
    result.update(resolution=res, arch_kwargs=kwargs,
                  params=sum(p.numel() for p in model.parameters()))
    began = time.perf_counter()
    ckpt = work / "model.pt"
    torch.save(model.state_dict(), ckpt)
    data = make_data(model, res, work)
    setup["data"] = round(time.perf_counter() - began, 1)
    CLOCK.take(0.0)  # build and data are setup, not a column
    result["data"] = data
    del model
    (work / "profile.yaml").write_text(PROFILE)
    from edgekit.cli import COMMANDS

    inspect_flags: list[str] = []
    for column in COLUMNS:
        if column == "inspect" and "inspect" not in COMMANDS:
            result["columns"][column] = {"status": "absent", "reason": "no inspect command"}
            continue
        load = result["columns"].get("load", {})
        commands = commands_for(model_id, work, res, kwargs,
                                load.get("status") == "pass" and load.get("exit") == 0)
        if column == "prune" and inspect_flags:  # what inspect told the user to add
            commands[column] += inspect_flags
        cell = run_cli(commands[column])
        stdout = cell.pop("stdout")
        if column == "inspect":
            inspect_flags = prune_flags_from_inspect(stdout)
        elif column == "prune" and inspect_flags:
            cell["flags_from_inspect"] = inspect_flags
        if column in ("int8_ort", "int8_openvino") and cell["status"] == "pass":
            try:
                folder = work / ("int8" if column == "int8_ort" else "int8-ov")
                cell.update(agreement(work, folder))
            except Exception as exc:  # noqa: BLE001 - the measurement, not the column
                cell["agreement_error"] = f"{type(exc).__name__}: {exc}"[:300]
        result["columns"][column] = cell
        result["seconds"] = round(time.perf_counter() - started, 1)
        save_partial(work, result)
    return result


def save_partial(work: Path, result: dict[str, Any]) -> None:
    """The columns so far, in WORK/partial.json (replaced whole): a model that runs out of
    its time keeps the columns it finished (bench_matrix.run_one reads it)."""
    tmp = work / "partial.json.tmp"
    tmp.write_text(json.dumps(result))
    tmp.replace(work / "partial.json")


def main(argv: list[str]) -> int:
    model_id, work = argv[0], Path(argv[1])
    print("MATRIX-RESULT " + json.dumps(run_model(model_id, work)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
