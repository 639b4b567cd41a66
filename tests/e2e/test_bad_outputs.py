"""Outputs never destroy inputs (issue 13, items 2, 3 and 6).

* A corpus of bad output cases, generated at test time: each sets up its inputs in tmp_path, runs
  the CLI, and expects exit 2 with a message fragment; nothing under tmp_path may change (every
  file hashed before and after: inputs, stores, foreign files) and no temporary file may remain.
* A reused output folder cannot mix two models: lenet5 then cnn_gru into one -o is refused (and
  with --overwrite the old stages are forgotten first); a folder mixed the old way is refused by
  `validate`, as is an artifact changed after edgekit recorded it.
* kill -9 in the middle of quantizing leaves `.quantize-*`/`.part` debris that the rerun removes;
  the rerun's artifacts chain by sha256. The sweep never takes a live run's files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import RefusalCase as Case
from tests.helpers import check_refused_and_unchanged, cli, debris, snapshot

ROOT = Path(__file__).resolve().parents[2]
CALIB = ROOT / "calibration" / "fashion-mnist-512.npz"


# ---------------------------------------------------------------- helpers
def edgekit_proc(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "EDGEKIT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "edgekit", *map(str, argv)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def owned_folder(path: Path) -> Path:
    """An output folder edgekit made (an empty manifest)."""
    from edgekit.io.manifest import Manifest

    path.mkdir(parents=True, exist_ok=True)
    Manifest(path).save()
    return path


def empty_store(path: Path) -> Path:
    from edgekit.results.store import open_store

    open_store(path).close()
    return path


def recipe(tmp: Path, ckpt: Path, **report) -> Path:
    data = {"recipe_version": 1, "name": "r", "model": {"path": str(ckpt)},
            "data": {"eval": "fashion-mnist:test", "eval_limit": 100, "calib": str(CALIB)},
            "steps": [{"quantize": {"calib_size": 32}}],
            "devices": [{"profile": "local-cpu", "threads": 1, "batch_sizes": [1]}],
            "budget": {"max_drop": 10.0}}
    if report:
        data["report"] = report
    path = tmp / "r.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def image_folder(path: Path) -> Path:
    from PIL import Image

    for cls in ("a", "b"):
        (path / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(path / cls / f"{i}.png")
    return path


# ---------------------------------------------------------------- the corpus
def _report_onto_store(t, m):
    return ["report", empty_store(t / "results.db"), "-o", t / "results.db"]


def _markdown_onto_store(t, m):
    return ["report", empty_store(t / "results.db"), "-o", t / "r.html", "--markdown",
            t / "results.db"]


def _report_through_symlink(t, m):
    empty_store(t / "results.db")
    (t / "link.html").symlink_to(t / "results.db")
    return ["report", t / "results.db", "-o", t / "link.html"]


def _report_onto_jsonl(t, m):
    empty_store(t / "results.db")
    (t / "results.jsonl").write_text("{}\n")
    return ["report", t / "results.db", "-o", t / "results.jsonl"]


def _report_onto_hardlink(t, m):
    empty_store(t / "results.db")
    os.link(t / "results.db", t / "copy.html")
    return ["report", t / "results.db", "-o", t / "copy.html"]


def _recipe_html(value, **more):
    def setup(t, m):
        return ["run", recipe(t, m, html=value, **more), "-o", t / "out"]
    return setup


def _recipe_model_in_out(t, m):
    out = owned_folder(t / "out")
    shutil.copy(m, out / "model.pt")
    return ["run", recipe(t, out / "model.pt"), "-o", out]


def _compress_into_model_folder(t, m):
    return ["compress", m, "--int8", "--calib", CALIB, "-o", t]


def _compress_onto_own_checkpoint(t, m):
    out = owned_folder(t / "out")
    shutil.copy(m, out / "model.pt")
    return ["compress", out / "model.pt", "--prune", "0.2", "--distill-epochs", "0", "-o", out]


def _compress_onto_hardlinked_checkpoint(t, m):
    out = owned_folder(t / "out")
    os.link(m, out / "model.pt")
    return ["compress", m, "--prune", "0.2", "--distill-epochs", "0", "-o", out]


def _compress_onnx_onto_itself(t, m):
    out = owned_folder(t / "out")
    (out / "model.onnx").write_bytes(b"not really onnx")
    return ["compress", out / "model.onnx", "--int8", "--calib", CALIB, "-o", out]


def _compress_into_eval_images(t, m):
    return ["compress", m, "--int8", "--calib", CALIB, "--eval", image_folder(t / "imgs"),
            "-o", t / "imgs" / "out"]


def _compress_onto_calib(t, m):
    out = owned_folder(t / "out")
    shutil.copy(CALIB, out / "model.int8.onnx")
    return ["compress", m, "--int8", "--calib", out / "model.int8.onnx", "-o", out]


def _export_foreign_manifest(t, m):
    (t / "theirs").mkdir()
    (t / "theirs" / "manifest.json").write_text(json.dumps({"name": "my app", "version": 3}))
    (t / "theirs" / "model.onnx").write_bytes(b"the user's own model")
    return ["export", m, "-o", t / "theirs"]


def _export_foreign_folder(t, m):
    (t / "theirs").mkdir()
    (t / "theirs" / "model.onnx").write_bytes(b"the user's own model")
    return ["export", m, "-o", t / "theirs"]


def _compress_foreign_folder(t, m):
    (t / "docs").mkdir()
    (t / "docs" / "notes.txt").write_text("mine")
    return ["compress", m, "--int8", "--calib", CALIB, "-o", t / "docs"]


def _compress_another_model(t, m):
    from edgekit.io.manifest import Manifest

    out = owned_folder(t / "out")
    other = t / "other.pt"
    other.write_bytes(b"another model")
    (out / "model.onnx").write_bytes(b"another model's onnx")
    Manifest(out).add_stage("compress", inputs={"model": other}, config={"key": "x", "steps": []})
    Manifest(out).add_stage("export-onnx-fp32", inputs={"source": other}, outputs=[
        {"path": "model.onnx", "format": "onnx", "precision": "fp32", "model": "other"}])
    return ["compress", m, "--int8", "--calib", CALIB, "-o", out]


def _calib_onto_source(t, m):
    shutil.copy(CALIB, t / "set.npz")
    return ["calib", "build", t / "set.npz", "-n", "8", "-o", t / "set.npz"]


def _validate_store_onto_artifact(t, m):
    from edgekit.io.manifest import Manifest

    folder = owned_folder(t / "out")
    (folder / "model.onnx").write_bytes(b"an artifact")
    Manifest(folder).add_stage("export-onnx-fp32", outputs=[
        {"path": "model.onnx", "format": "onnx", "precision": "fp32"}])
    return ["validate", folder, "--eval", "fashion-mnist:test", "--store", folder / "model.onnx"]


CASES = [
    Case("report-o-store", _report_onto_store, "destroy an input"),
    Case("report-markdown-store", _markdown_onto_store, "destroy an input"),
    Case("report-symlink-to-store", _report_through_symlink, "destroy an input"),
    Case("report-onto-store-jsonl", _report_onto_jsonl, "destroy an input"),
    Case("report-hardlink-to-store", _report_onto_hardlink, "destroy an input"),
    Case("recipe-html-is-recipe", _recipe_html("../r.yaml"), "inside the output folder"),
    Case("recipe-html-absolute-model", lambda t, m: _recipe_html(str(m))(t, m),
         "inside the output folder"),
    Case("recipe-html-manifest", _recipe_html("manifest.json"), "must end in .html"),
    Case("recipe-html-model-onnx", _recipe_html("model.onnx"), "must end in .html"),
    Case("recipe-markdown-eval-data", _recipe_html("r.html", markdown="../../data.npz"),
         "inside the output folder"),
    Case("recipe-store-outside", _recipe_html("r.html", store="../results.db"),
         "inside the output folder"),
    Case("recipe-model-in-out", _recipe_model_in_out, "model.path"),
    Case("compress-into-model-folder", _compress_into_model_folder, "edgekit did not write"),
    Case("compress-onto-own-checkpoint", _compress_onto_own_checkpoint, "destroy an input"),
    Case("compress-onto-hardlinked-checkpoint", _compress_onto_hardlinked_checkpoint,
         "destroy an input"),
    Case("compress-onnx-onto-itself", _compress_onnx_onto_itself, "destroy an input"),
    Case("compress-into-eval-images", _compress_into_eval_images, "lies inside --eval data"),
    Case("compress-onto-calib-set", _compress_onto_calib, "destroy an input"),
    Case("export-foreign-manifest", _export_foreign_manifest, "not an edgekit manifest"),
    Case("export-foreign-folder", _export_foreign_folder, "edgekit did not write"),
    Case("compress-foreign-folder", _compress_foreign_folder, "edgekit did not write"),
    Case("compress-another-model", _compress_another_model, "outputs of another model"),
    Case("calib-build-onto-source", _calib_onto_source, "destroy an input"),
    Case("validate-store-onto-artifact", _validate_store_onto_artifact, "destroy an input"),
    # item 6: every input exists before the first step (not after minutes of pruning)
    Case("missing-train-before-pruning",
         lambda t, m: ["compress", m, "--prune", "0.3", "--distill-epochs", "1", "--train",
                       t / "missing.npz", "-o", t / "out"], "--train data"),
    Case("missing-calib", lambda t, m: ["compress", m, "--int8", "--calib", t / "nope.npz",
                                        "-o", t / "out"], "nope.npz does not exist"),
    Case("unknown-train-split",
         lambda t, m: ["compress", m, "--prune", "0.3", "--train", "fashion-mnist:valid",
                       "-o", t / "out"], "unknown split"),
    Case("missing-eval-folder",
         lambda t, m: ["compress", m, "--prune", "0.3", "--distill-epochs", "0", "--eval",
                       t / "imgs", "-o", t / "out"], "--eval data"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_output_is_refused_and_nothing_changes(case: Case, lenet5: Path, tmp_path: Path,
                                                   capsys) -> None:
    check_refused_and_unchanged(case, lenet5, tmp_path, capsys)


# ---------------------------------------------------------------- two models, one folder
def _compress(*argv) -> subprocess.CompletedProcess:
    proc = edgekit_proc("compress", *argv)
    out, err = proc.communicate(timeout=900)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _stages(out: Path) -> list[dict]:
    return json.loads((out / "manifest.json").read_text())["stages"]


@pytest.fixture(scope="module")
def lenet5_int8(lenet5, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mix") / "out"
    proc = _compress(lenet5, "--int8", "--calib", CALIB, "--calib-size", "64", "-o", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_second_model_into_the_same_folder_is_refused_then_replaced(lenet5_int8, zoo_checkpoint,
                                                                    tmp_path, capsys) -> None:
    from edgekit.io.files import sha256_file
    from edgekit.io.lineage import check_chain

    out = tmp_path / "out"
    shutil.copytree(lenet5_int8, out)
    gru = zoo_checkpoint("cnn_gru")
    before = snapshot(out)
    proc = _compress(gru, "--prune", "0.2", "--distill-epochs", "0", "-o", out)
    assert proc.returncode == 2, proc.stderr
    assert "outputs of another model (model lenet5" in proc.stderr and "--overwrite" in proc.stderr
    assert snapshot(out) == before
    # The same model with other settings is refused too.
    proc = _compress(zoo_checkpoint("lenet5"), "--int8", "--calib", CALIB, "--calib-size", "32", "-o", out)
    assert proc.returncode == 2 and "outputs of other settings" in proc.stderr, proc.stderr
    assert snapshot(out) == before

    proc = _compress(gru, "--prune", "0.2", "--distill-epochs", "0", "-o", out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    stages = _stages(out)
    assert [s["stage"] for s in stages] == ["compress", "prune", "checkpoint", "export-onnx-fp32"]
    listed = {o["path"]: o for s in stages for o in s["outputs"]}
    assert set(listed) == {"model.pt", "model.onnx"}  # lenet5's int8 is no longer vouched for
    assert {o["model"] for o in listed.values()} == {"cnn_gru"}
    assert stages[0]["inputs"]["model"]["sha256"] == sha256_file(gru)
    check_chain(out)  # what is listed chains: model.onnx <- model.pt <- the cnn_gru checkpoint
    # validating lenet5's leftover int8 file against cnn_gru's reference is refused
    code, _, err = cli(capsys, "validate", out / "model.int8.onnx", "--eval", "fashion-mnist:test")
    assert code == 2 and "not recorded" in err, err


def test_validate_refuses_a_folder_mixed_the_old_way(lenet5_int8, zoo_checkpoint, tmp_path,
                                                     capsys) -> None:
    """What edgekit before this check left behind: cnn_gru's fp32 export recorded over lenet5's,
    lenet5's int8 stage still listed. Validate used to report +75 points and pass."""
    from edgekit.io.manifest import Manifest

    out = tmp_path / "out"
    shutil.copytree(lenet5_int8, out)
    gru = tmp_path / "gru"
    code, _, err = cli(capsys, "export", zoo_checkpoint("cnn_gru"), "-o", gru)
    assert code == 0, err
    shutil.copy(gru / "model.onnx", out / "model.onnx")
    manifest = Manifest(out)
    manifest.forget(lambda s: s["stage"] != "export-onnx-fp32", save=False)
    manifest.data["stages"].append(Manifest(gru).stage("export-onnx-fp32"))
    manifest.save()
    before = snapshot(out)
    code, _, err = cli(capsys, "validate", out, "--eval", "fashion-mnist:test", "--limit", "100")
    assert code == 2, err
    assert "model.int8.onnx does not chain by sha256 to the reference model.onnx" in err
    assert "(lenet5 against cnn_gru)" in err
    # bench --eval reports the drop against the same reference: refused alike
    code, _, err = cli(capsys, "bench", out, "--eval", "fashion-mnist:test", "--limit", "100")
    assert code == 2 and "does not chain by sha256" in err, err
    assert snapshot(out) == before


def test_validate_refuses_an_artifact_changed_after_it_was_recorded(lenet5_int8, tmp_path,
                                                                    capsys) -> None:
    out = tmp_path / "out"
    shutil.copytree(lenet5_int8, out)
    shutil.copy(out / "model.onnx", out / "model.int8.onnx")  # a swapped file, same name
    code, _, err = cli(capsys, "validate", out, "--eval", "fashion-mnist:test", "--limit", "100")
    assert code == 2 and "model.int8.onnx changed since edgekit wrote it" in err, err


def test_validate_accepts_a_chained_folder(lenet5_int8) -> None:
    from edgekit.io.lineage import ancestry, check_chain, recorded_parents
    from edgekit.io.manifest import Manifest

    check_chain(lenet5_int8)
    manifest = Manifest(lenet5_int8)
    int8 = manifest.find(precision="int8")
    fp32 = manifest.find(format="onnx", precision="fp32")
    assert fp32["sha256"] in ancestry(int8["sha256"], recorded_parents(manifest))


# ---------------------------------------------------------------- kill -9 and debris
def _wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, timeout: float = 600) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_kill_9_mid_quantize_then_rerun_leaves_no_debris_and_chains(lenet5, tmp_path) -> None:
    from edgekit.io.lineage import check_chain
    from edgekit.io.manifest import Manifest

    out = tmp_path / "out"
    argv = [lenet5, "--int8", "--calib", CALIB, "--calib-size", "512", "--calib-method",
            "entropy", "-o", out]
    proc = edgekit_proc("compress", *argv)
    in_quantize = _wait_for(lambda: out.is_dir() and any(
        p.name.startswith(".quantize-") for p in out.iterdir()), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert in_quantize, "compress finished before it could be killed mid-quantize"
    left = debris(out)
    assert any(name.startswith(".quantize-pid") for name in left), left
    assert not (out / "model.int8.onnx").exists()
    assert [s["stage"] for s in Manifest(out).stages] == ["compress", "export-onnx-fp32"]

    rerun = _compress(*argv)
    assert rerun.returncode == 0, rerun.stderr
    assert debris(out) == [] and not any(p.name.startswith(".") for p in out.iterdir())
    stages = {s["stage"]: s for s in Manifest(out).stages}
    assert stages["quantize-int8"]["inputs"]["source"]["sha256"] == \
        stages["export-onnx-fp32"]["outputs"][0]["sha256"]
    check_chain(out)


def test_killed_rerun_with_new_settings_lists_no_old_artifacts(lenet5_int8, tmp_path) -> None:
    """A finished int8 folder, rerun with other settings (--overwrite) and killed as soon as it
    started: the manifest no longer lists the old int8 model under the new settings."""
    from edgekit.io.manifest import Manifest

    out = tmp_path / "out"
    shutil.copytree(lenet5_int8, out)
    proc = edgekit_proc("compress", Manifest(out).stage("compress")["inputs"]["model"]["path"],
                        "--int8", "--calib", CALIB, "--calib-size", "128", "--overwrite",
                        "-o", out)
    started = _wait_for(lambda: any(s["stage"] == "compress" and s["config"]["steps"][0][1].get(
        "calib_size") == 128 for s in _safe_stages(out)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert started
    listed = [o["path"] for s in Manifest(out).stages for o in s["outputs"]]
    assert "model.int8.onnx" not in listed


def _safe_stages(out: Path) -> list[dict]:
    try:
        return _stages(out)
    except (json.JSONDecodeError, OSError, KeyError):
        return []


def test_sweep_removes_dead_runs_files_and_keeps_live_ones(tmp_path) -> None:
    from edgekit.io.debris import sweep

    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.05)
        names = {
            "dead_part": f".model.onnx.pid{dead.pid}.abc123.part",
            "dead_raw": f".model.onnx.pid{dead.pid}.abc123.raw.onnx",
            "dead_quant": f".quantize-pid{dead.pid}-xyz",
            "dead_export_quant": f".export-pid{dead.pid}-xyz",  # a large model's export folder
            "dead_data_backup": f".model.onnx.data.pid{dead.pid}.old",
            "live_part": f".model.onnx.pid{live.pid}.abc123.part",
            "live_quant": f".quantize-pid{live.pid}-xyz",
            "reused_pid": f".model.int8.onnx.pid{live.pid}.old999.part",
            "mine": f".model.onnx.pid{os.getpid()}.k.part",
            "user_hidden": ".my-notes",
        }
        for key, name in names.items():
            path = tmp_path / name
            if "quant" in key:
                path.mkdir()
                (path / "work.onnx").write_bytes(b"x")
            else:
                path.write_bytes(b"x")
        old = time.time() - 3600  # written before the live process started: its pid was reused
        os.utime(tmp_path / names["reused_pid"], (old, old))
        removed = set(sweep(tmp_path))
        assert removed == {names["dead_part"], names["dead_raw"], names["dead_quant"],
                           names["dead_export_quant"], names["dead_data_backup"],
                           names["reused_pid"]}
        assert {p.name for p in tmp_path.iterdir()} == {names["live_part"], names["live_quant"],
                                                        names["mine"], names["user_hidden"]}
    finally:
        live.kill()
        live.wait()


def test_ssh_control_folders_of_killed_runs_are_swept(tmp_path, monkeypatch) -> None:
    import tempfile

    from edgekit.devices import DeviceProfile
    from edgekit.remote import SSHTransport

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"edgekit-ssh-pid{dead.pid}-abcdefgh"
    stale.mkdir()
    (stale / "socket").write_bytes(b"")
    other = tmp_path / "edgekit-ssh-unrelated"
    other.mkdir()
    profile = DeviceProfile.model_validate({"name": "dev", "kind": "cpu", "host": "u@127.0.0.1",
                                            "runtimes": {"onnxruntime": {"precisions": ["fp32"]}}})
    with SSHTransport(profile) as transport:
        control = Path(transport.control_dir)
        assert control.parent == tmp_path and control.name.startswith(f"edgekit-ssh-pid{os.getpid()}-")
        assert not stale.exists() and other.exists()
    assert not control.exists()
