"""The model matrix (issue 27): every torchvision classification model and the timm models people
ship to the edge, random weights, each through the columns a user runs (benchmarks/
matrix_worker.py, one process per model): load (export to ONNX), inspect, prune 0.3, dwsep, int8
on ONNX Runtime, int8 on OpenVINO (NNCF), export to OpenVINO, validate. Each cell is PASS, refused
with the reason edgekit gave (exit 2), or a bug (a traceback, an undocumented exit, a crash or a
time-out); int8 cells carry the top-1 agreement with the fp32 original on structured images
whose labels are the original's own predictions and, since random weights leave near-tied
logits where top-1 agreement says little, the margin-aware agreement (near-ties not counted)
and the logits' SQNR against the fp32 ONNX model; cells under LOW_SQNR_DB are named.

Anchor: Torch-Pruning's own list prunes 73 torchvision classification models (pruning only, no
int8, export or validation).

Run: `.venv/bin/python benchmarks/run.py matrix` on a quiet machine. The whole list is about
105 models at 1-3 minutes each on 2 cores (hours): BENCH_MATRIX_MODELS=tv:resnet18,timm:... picks
models, BENCH_MATRIX_SOURCES=tv or timm one zoo, BENCH_MATRIX_TIMEOUT the seconds a model may
take (default 900), BENCH_MATRIX_KEEP=1 keeps each model's work folder (deleted once its row is
read otherwise), BENCH_MATRIX_MERGE=1 keeps the last results of the models not run again (a
list run in chunks). A partial run says how many of the list it ran. `--quick` runs three small
models. README section: matrix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import QUICK, RANDOM_WEIGHTS, ROOT, md_table, work_dir, write_results

WORK = work_dir("matrix")
WORKER = Path(__file__).resolve().parent / "matrix_worker.py"
# timm models people ship to the edge (the families), the smallest variant of each.
TIMM_MODELS = (
    "mobilenetv3_small_100", "mobilenetv3_large_100", "mobilenetv4_conv_small",
    "efficientnet_b0", "efficientnet_lite0", "tf_efficientnetv2_b0", "ghostnet_100",
    "ghostnetv2_100", "repvit_m1", "fastvit_t8", "mobilevit_xxs", "mobilevitv2_050",
    "efficientformer_l1", "efficientformerv2_s0", "levit_128s", "edgenext_xx_small",
    "mobileone_s0", "convnext_atto", "regnetx_002", "regnety_002", "resnet18", "resnet50",
    "mnasnet_100", "tinynet_a", "lcnet_050", "hardcorenas_a", "semnasnet_100", "rexnet_100",
    "deit_tiny_patch16_224", "vit_tiny_patch16_224")
QUICK_MODELS = ("tv:mobilenet_v3_small", "tv:resnet18", "timm:lcnet_050")
TIMEOUT = int(os.environ.get("BENCH_MATRIX_TIMEOUT", "900"))


def model_list() -> list[str]:
    chosen = os.environ.get("BENCH_MATRIX_MODELS")
    if chosen:
        return [m.strip() for m in chosen.split(",") if m.strip()]
    if QUICK:
        return list(QUICK_MODELS)
    import torchvision

    sources = os.environ.get("BENCH_MATRIX_SOURCES", "tv,timm").split(",")
    out = []
    if "tv" in sources:
        out += [f"tv:{n}" for n in sorted(torchvision.models.list_models(
            module=torchvision.models))]
    if "timm" in sources:
        out += [f"timm:{n}" for n in TIMM_MODELS]
    return out


def previous_results() -> dict[str, dict[str, Any]]:
    """{model: result} of the last matrix.json (BENCH_MATRIX_MERGE=1: the whole list takes hours
    on 2 cores, so it may be run in chunks; a model run again replaces its earlier result)."""
    from common import RESULTS

    path = RESULTS / "matrix.json"
    if not path.is_file():
        return {}
    return {r["model"]: r for r in json.loads(path.read_text()).get("results", [])}


def run_one(model_id: str) -> dict[str, Any]:
    """The worker's result for one model; a crash or a time-out is a bug in every column it
    did not reach. The model's work folder (checkpoint, exports, int8 models: 0.1-2 GB for the
    large ones) is deleted once its row is read, unless BENCH_MATRIX_KEEP=1."""
    work = WORK / model_id.replace(":", "-")
    shutil.rmtree(work, ignore_errors=True)  # a fresh run: an earlier run's folders are not ours
    try:
        return _run_worker(model_id, work)
    finally:
        if os.environ.get("BENCH_MATRIX_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


def _run_worker(model_id: str, work: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    began = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(WORKER), model_id, str(work)],
                              capture_output=True, text=True, timeout=TIMEOUT, env=env)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("MATRIX-RESULT ")),
                    None)
        if line is not None:
            return {**json.loads(line.removeprefix("MATRIX-RESULT ")), "timeout_s": TIMEOUT}
        why = f"worker exited {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}"
        if proc.returncode == -9:
            why += " (SIGKILL: the kernel's out-of-memory killer, where dmesg says so)"
    except subprocess.TimeoutExpired:
        why = f"timed out after {TIMEOUT} s"
    result = {"model": model_id, "columns": {}}
    partial = work / "partial.json"  # the columns it finished (matrix_worker.save_partial)
    if partial.is_file():  # a time-out or a crash: the columns before it keep their verdicts
        result = json.loads(partial.read_text())
    result.update(crash=why[:300], seconds=round(time.perf_counter() - began, 1),
                  timeout_s=TIMEOUT)
    return result


def verdict(result: dict[str, Any]) -> dict[str, str]:
    """Per column: pass / refused / bug / absent (a build that failed refuses every column); a
    model that ran out of BENCH_MATRIX_TIMEOUT is `timeout` in the columns it did not reach (not
    a verdict on edgekit: the machine may have been slow)."""
    from matrix_worker import COLUMNS

    out = {}
    for column in COLUMNS:
        cell = result.get("columns", {}).get(column)
        if cell is not None:
            out[column] = cell["status"]
        elif result.get("build_error"):
            out[column] = "refused"
        elif str(result.get("crash", "")).startswith("timed out"):
            out[column] = "timeout"
        else:
            out[column] = "bug"
    return out


def model_verdict(cells: dict[str, str]) -> str:
    """One word per model: pass (every column), bug (any column), refused (any column, no
    bug), timeout (out of BENCH_MATRIX_TIMEOUT before a bug or refusal)."""
    values = set(cells.values())
    if "bug" in values:
        return "bug"
    if "refused" in values:
        return "refused"
    if "timeout" in values:
        return "timeout"
    return "pass"


def cpu_label() -> str:
    """This machine's CPU as a row records it: its model and whether it has int8 dot products
    (VNNI), which decide how ONNX Runtime and OpenVINO run int8."""
    from edgekit.validate.env import cpu_info

    info = cpu_info()
    isa = "AVX-512" if info["flags"].get("avx512f") else "AVX2" if info["flags"].get("avx2") \
        else info["arch"]
    return f"{info['model']} ({isa}, {'VNNI' if info['vnni'] else 'no VNNI'})"


def section(data: dict[str, Any]) -> str:
    from matrix_worker import COLUMNS

    summary, rows = [], []
    for source, label in (("tv", "torchvision"), ("timm", "timm")):
        results = [r for r in data["results"] if r["model"].startswith(source + ":")]
        if not results:
            continue
        words = [model_verdict(verdict(r)) for r in results]
        summary.append([label, f"{len(results)} of {data['listed'][source]}",
                        *(words.count(w) for w in ("pass", "refused", "bug", "timeout"))])
        results = [r for r in results if not str(r.get("crash", "")).startswith("timed out")]
        if not results:
            continue
        cells = [verdict(r) for r in results]
        rows.append([f"{label} ({len(results)})",
                     *(f"{sum(c[k] == 'pass' for c in cells)}/"
                       f"{sum(c[k] == 'refused' for c in cells)}/"
                       f"{sum(c[k] == 'bug' for c in cells)}" for k in COLUMNS)])
    text = ("Random weights, 10 classes, the smallest resolution each model runs at "
            "(`python benchmarks/run.py matrix`, run in chunks with BENCH_MATRIX_MERGE=1). Models "
            "measured so far, each counted once: PASS every column, refused (a column exited 2 "
            "with edgekit's reason, no bug), bug (a traceback or crash in any column), out of "
            "the time a model may take:\n\n"
            + md_table(["zoo", "measured (of listed)", "PASS", "refused", "bug", "out of time"],
                       summary)
            + "\nPer column, pass/refused/bug (the models that finished):\n\n"
            + md_table(["models", *COLUMNS], rows))
    cpus: dict[str, int] = {}
    for r in data["results"]:
        label = r.get("cpu", "not recorded (rows measured before the field)")
        cpus[label] = cpus.get(label, 0) + 1
    text += "\nRows by the CPU that measured them: " + "; ".join(
        f"{label} {n}" for label, n in sorted(cpus.items(), key=lambda kv: -kv[1])) + ".\n"
    text += timing(data["results"])
    hinted = [f"`{r['model']}` ({' '.join(r['columns']['prune']['flags_from_inspect'])})"
              for r in data["results"]
              if r.get("columns", {}).get("prune", {}).get("flags_from_inspect")]
    if hinted:
        text += ("\n\nThe prune column adds the flags `edgekit inspect` names for the model, as "
                 f"its next command does: {', '.join(hinted)}.")
    late = [f"`{r['model']}` ({r['crash']}; {len(r.get('columns', {}))} of {len(COLUMNS)} "
            f"columns finished, {sum(c['status'] == 'pass' for c in r.get('columns', {}).values())}"
            " pass)" for r in data["results"] if str(r.get("crash", "")).startswith("timed out")]
    if late:
        text += ("\n\nOut of the time a model may take (BENCH_MATRIX_TIMEOUT, on a machine shared with other work; "
                 f"not counted as bugs): {', '.join(late)}.")
    problems = [f"- `{r['model']}` {k}: {v} — {r['columns'].get(k, {}).get('reason') or r.get('crash') or r.get('build_error', '')}"
                for r in data["results"] for k, v in verdict(r).items() if v in ("refused", "bug")]
    if problems:
        text += "\n\nRefused and bugs, with the reason:\n\n" + "\n".join(problems[:60])
        if len(problems) > 60:
            text += f"\n- … and {len(problems) - 60} more in benchmarks/results/matrix.json"
    agreements = [(r["model"], k, r["columns"][k].get("agreement"))
                  for r in data["results"] for k in ("int8_ort", "int8_openvino")
                  if r.get("columns", {}).get(k, {}).get("agreement") is not None]
    if agreements:
        values = sorted(a for *_, a in agreements)
        text += (f"\n\nint8 top-1 agreement with the fp32 original ({len(values)} artifacts, "
                 f"{data['images']} structured images, random weights): median "
                 f"{values[len(values) // 2]:.3f}, lowest {values[0]:.3f}.")
    text += fidelity_text(data)
    return text + "\n"


def timing(results: list[dict[str, Any]]) -> str:
    """Where a model's seconds go (the models whose worker recorded `setup` and per-column
    `phases`, matrix_worker.PhaseClock): the median seconds of each column, of the setup, and
    of each phase summed over a model's columns. Empty when no result records them (results
    of an older worker render as before)."""
    from matrix_worker import COLUMNS

    timed = [r for r in results if r.get("setup") and r.get("columns")]
    if not timed:
        return ""

    def median(values: list[float]) -> float:
        values = sorted(values)
        return values[len(values) // 2] if values else 0.0

    columns = {k: median([r["columns"][k]["seconds"] for r in timed
                          if r["columns"].get(k, {}).get("seconds") is not None])
               for k in COLUMNS}
    setup = median([sum(r["setup"].values()) for r in timed])
    phases: dict[str, list[float]] = {}
    for r in timed:
        per_model: dict[str, float] = {}
        for cell in r["columns"].values():
            for name, seconds in (cell.get("phases") or {}).items():
                per_model[name] = per_model.get(name, 0.0) + seconds
        for name, seconds in per_model.items():
            phases.setdefault(name, []).append(seconds)
    split = ", ".join(f"{name} {median(v):.0f} s" for name, v in
                      sorted(phases.items(), key=lambda kv: -median(kv[1])))
    return (f"\n\nSeconds per model, median of the {len(timed)} models that recorded them "
            "(setup: the imports, building the model and its data):\n\n"
            + md_table(["setup", *COLUMNS], [[f"{setup:.0f}",
                                               *(f"{columns[k]:.0f}" for k in COLUMNS)]])
            + f"\nand by phase over a model's columns: {split}.")


# An int8 cell whose logits' SQNR is under this is named in the README: its error is a third of
# the logits or more, a fidelity problem whatever its top-1 agreement (a report, not a verdict:
# the columns' pass/refused/bug are unchanged).
LOW_SQNR_DB = 10.0


def fidelity_text(data: dict[str, Any]) -> str:
    """What the int8 cells' logits say where top-1 agreement cannot (random weights leave
    near-tied logits): the margin-aware agreement (edgekit's parity rule) and the logits' SQNR
    against the fp32 ONNX model, the median and lowest of each, and the cells under
    LOW_SQNR_DB. Empty for results measured before the worker recorded them."""
    cells = [(r["model"], k, {**r["columns"][k], "step": (r.get("data") or {}).get("input_step")})
             for r in data["results"] for k in ("int8_ort", "int8_openvino")
             if r.get("columns", {}).get(k, {}).get("sqnr_db") is not None]
    if not cells:
        return ""
    sqnr = sorted(c["sqnr_db"] for *_, c in cells)
    decisive = sorted(c["decisive_agreement"] for *_, c in cells)
    text = (f" Against the fp32 ONNX model's logits ({len(cells)} artifacts): top-1 agreement "
            "on the images that are not near-ties (edgekit's parity rule) median "
            f"{decisive[len(decisive) // 2]:.3f}, lowest {decisive[0]:.3f}; the logits' SQNR "
            f"median {sqnr[len(sqnr) // 2]:.1f} dB, lowest {sqnr[0]:.1f} dB.")
    runtime = {"int8_ort": "ONNX Runtime", "int8_openvino": "OpenVINO"}
    steps = sorted({m: c["step"]["sqnr_db"] for m, _, c in cells if c["step"]}.values())
    if steps:
        text += (" The fp32 original itself, every pixel moved by one uint8 step: SQNR median "
                 f"{steps[len(steps) // 2]:.1f} dB, lowest {steps[0]:.1f} dB (a random-weight "
                 "network amplifies rounding; int8 cannot be closer than this floor).")
    low = sorted((c["sqnr_db"], m, k, c) for m, k, c in cells if c["sqnr_db"] < LOW_SQNR_DB)
    if low:
        text += (f"\n\nint8 cells under {LOW_SQNR_DB:g} dB SQNR (the logits' error a third of "
                 "the logits or more: a fidelity problem, not near-ties; in brackets the fp32 "
                 "original's own SQNR under a one-step input change): "
                 + ", ".join(f"`{m}` {runtime[k]} ({db:.1f} dB, agreement "
                             f"{c['agreement']:.3f}, {c['decisive_agreement']:.3f} on "
                             f"{c['decisive_images']} decisive images"
                             + (f"; [{c['step']['sqnr_db']:.1f} dB]" if c["step"] else "") + ")"
                             for db, m, k, c in low[:20])
                 + (f" and {len(low) - 20} more" if len(low) > 20 else "") + ".")
    return text


README_SECTIONS = {"matrix": ("matrix", section)}


def main() -> dict[str, Any]:
    import torchvision
    from matrix_worker import EVAL_IMAGES

    WORK.mkdir(parents=True, exist_ok=True)
    models = model_list()
    listed = {"tv": len(torchvision.models.list_models(module=torchvision.models)),
              "timm": len(TIMM_MODELS)}
    data: dict[str, Any] = {"listed": listed, "images": EVAL_IMAGES, "timeout_s": TIMEOUT,
                            "results": []}
    cpu = cpu_label()
    for i, model_id in enumerate(models, 1):
        began = time.perf_counter()
        result = {**run_one(model_id), "cpu": cpu}  # chunks may run on different machines
        data["results"].append(result)
        cells = verdict(result)
        print(f"   [{i}/{len(models)}] {model_id}: "
              + " ".join(f"{k}={v}" for k, v in cells.items())
              + f" ({time.perf_counter() - began:.0f} s)", flush=True)
    # the chunks run before, read now (not at the start): a chunk takes hours, and the file may
    # have changed meanwhile
    earlier = previous_results() if os.environ.get("BENCH_MATRIX_MERGE") else {}
    ran = {r["model"] for r in data["results"]}
    data["results"] = [r for m, r in earlier.items() if m not in ran] + data["results"]
    markdown = section(data)
    write_results("matrix", data, markdown,
                  checkpoints={r["model"]: RANDOM_WEIGHTS for r in data["results"]})
    data["readme"] = {"matrix": markdown}
    return data
