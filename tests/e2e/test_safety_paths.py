"""Where edgekit writes (issue 25, items 1, 3, 5 and 10).

* 1: a device name is a plain folder name (letters, digits, '.', '_', '-'; no '..', no
  separator), refused where profiles and fleet files are parsed; `optimize` checks again that
  each OUT/<device>/ stays inside -o (io/outputs.check_inside), whoever built the profile.
* 3: `optimize -o` writes only into a folder edgekit owns (claim_output_folder: never a user's
  folder with their report.html, never the model's own folder), and a candidate an earlier run
  built and that was replaced since is refused by sha256 before it is reused.
* 5: `edgekit report -o FILE` replaces only a report edgekit wrote (suffix and marker).
* 10: `export` of another model into a folder holding a model's outputs (a compress folder) is
  refused, as `compress` refuses it.

Each refusal is exit 2 with a hint, and nothing under tmp_path changes (every file hashed before
and after, as tests/e2e/test_bad_outputs.py does); nothing is written outside it either (the
victims of the escaping names live in tmp_path)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_bad_outputs import CALIB, empty_store, owned_folder
from tests.helpers import RefusalCase as Case
from tests.helpers import check_refused_and_unchanged, cli, snapshot

# A search that is over in seconds: the original on ONNX Runtime fp32, 100 eval images.
TINY_SEARCH = ["--eval", "fashion-mnist:test", "--eval-limit", "100", "--prune", "0", "--dwsep",
               "off", "--runtimes", "onnxruntime", "--precisions", "fp32", "--trials", "1"]
QUICK_LATENCY = {"warmup_count": 2, "warmup_seconds": 0.0, "min_queries": 20,
                 "min_seconds": 0.02, "max_seconds": 1.0}


def profile(folder: Path, name: str, file: str = "dev.yaml") -> Path:
    path = folder / file
    path.write_text(yaml.safe_dump({
        "schema_version": 1, "name": name, "kind": "cpu", "threads": 1, "batch_sizes": [1],
        "runtimes": {"onnxruntime": {"precisions": ["fp32"]}}, "latency": QUICK_LATENCY}))
    return path


def fleet(folder: Path, name: str) -> Path:
    profile(folder, "quick-cpu", "quick-cpu.yaml")
    path = folder / "fleet-lab.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "name": "lab", "devices": [
        {"profile": "quick-cpu.yaml", "name": name}]}))
    return path


def victim(t: Path) -> Path:
    """A folder of the user's outside -o, which an escaping device name points at."""
    folder = t / "victim"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"the user's own model")
    (folder / "manifest.json").write_text('{"mine": true}')
    return folder


# ---------------------------------------------------------------- the corpus
def _optimize_profile_name(name_of: Callable[[Path], str]):
    def setup(t, m):
        return ["optimize", m, "--device", profile(t, name_of(t)), *TINY_SEARCH,
                "-o", t / "out" / "a" / "b"]
    return setup


def _optimize_fleet_name(t, m):
    return ["optimize", m, "--fleet", fleet(t, str(victim(t))), *TINY_SEARCH, "-o", t / "out"]


def _validate_fleet_store_name(t, m):
    out = owned_folder(t / "out")
    return ["validate", out, "--fleet", fleet(t, "../victim"), "--eval", "fashion-mnist:test",
            "--store", t / "results.db"]


def _optimize_into_users_folder(t, m):
    site = t / "site"
    site.mkdir()
    for name in ("report.html", "report.md", "optimize.json"):
        (site / name).write_text(f"the user's own {name}")
    return ["optimize", m, *TINY_SEARCH, "-o", site]


def _report_onto_checkpoint(t, m):
    return ["report", empty_store(t / "results.db"), "-o", m]


def _report_onto_users_page(t, m):
    (t / "index.html").write_text("<!doctype html><html><body>my own page</body></html>")
    return ["report", empty_store(t / "results.db"), "-o", t / "index.html"]


def _report_markdown_onto_users_notes(t, m):
    (t / "NOTES.md").write_text("### my notes\n")
    return ["report", empty_store(t / "results.db"), "-o", t / "r.html", "--markdown",
            t / "NOTES.md"]


def _export_into_another_models_compress_folder(t, m):
    from edgekit.io.manifest import Manifest

    out = owned_folder(t / "out")
    other = t / "other.pt"
    other.write_bytes(b"another model")
    (out / "model.onnx").write_bytes(b"another model's onnx")
    (out / "model.int8.onnx").write_bytes(b"another model's int8")
    Manifest(out).add_stage("compress", inputs={"model": other}, config={"key": "x", "steps": []})
    Manifest(out).add_stage("export-onnx-fp32", inputs={"source": other}, outputs=[
        {"path": "model.onnx", "format": "onnx", "precision": "fp32", "model": "other"}])
    Manifest(out).add_stage("quantize-onnxruntime", inputs={"source": out / "model.onnx"},
                            outputs=[{"path": "model.int8.onnx", "format": "onnx",
                                      "precision": "int8", "model": "other"}])
    return ["export", m, "-o", out]


CASES = [
    # item 1: a device name that is a path (absolute, `..`) never chooses where optimize writes
    Case("optimize-profile-name-absolute", _optimize_profile_name(lambda t: str(victim(t))),
         "is not a plain device name"),
    Case("optimize-profile-name-dotdot", _optimize_profile_name(lambda t: "../../x"),
         "is not a plain device name"),
    Case("optimize-profile-name-separator", _optimize_profile_name(lambda t: "lab/orin"),
         "is not a plain device name"),
    Case("optimize-fleet-name-absolute", _optimize_fleet_name, "is not a plain device name"),
    Case("validate-fleet-store-name-dotdot", _validate_fleet_store_name,
         "is not a plain device name"),
    # item 3: optimize -o owns its folder
    Case("optimize-into-users-folder", _optimize_into_users_folder, "edgekit did not write"),
    Case("optimize-into-the-models-folder",
         lambda t, m: ["optimize", m, *TINY_SEARCH, "-o", t], "edgekit did not write"),
    # item 5: report -o replaces only edgekit's own report
    Case("report-onto-checkpoint", _report_onto_checkpoint, "must end in .html"),
    Case("report-onto-users-page", _report_onto_users_page, "edgekit did not write it"),
    Case("report-markdown-onto-users-notes", _report_markdown_onto_users_notes,
         "edgekit did not write it"),
    # item 10: export refuses another model's folder
    Case("export-into-another-models-compress-folder",
         _export_into_another_models_compress_folder, "holds the outputs of another model"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_unsafe_output_is_refused_and_nothing_changes(case: Case, lenet5: Path, tmp_path: Path,
                                                      capsys) -> None:
    check_refused_and_unchanged(case, lenet5, tmp_path, capsys)


# ---------------------------------------------------------------- item 1: parse and derive
@pytest.mark.parametrize("name", ["/abs/path", "../../x", "..", ".", "a/b", "a\\b", "orin 1",
                                  "x..y", ""])
def test_a_device_name_that_is_not_a_plain_folder_name_is_refused_where_it_is_parsed(
        name: str, tmp_path: Path) -> None:
    from edgekit.config import parse_as
    from edgekit.devices import DeviceProfile, load_profile
    from edgekit.errors import ConfigError
    from edgekit.fleetfile import FleetFile, fleet_device

    with pytest.raises(ConfigError, match="is not a plain device name") as err:
        load_profile(profile(tmp_path, name))
    assert "dev.yaml" in err.value.message and "name: orin-1" in err.value.hint
    with pytest.raises(ConfigError, match="is not a plain device name"):
        parse_as(FleetFile, {"name": "lab", "devices": [{"profile": "local-cpu", "name": name}]},
                 "fleet-lab.yaml")
    good = load_profile(profile(tmp_path, "orin-1.v2_b"))
    assert good.name == "orin-1.v2_b"
    if name:  # fleet_device(name=...) renames a profile that has already passed validation
        with pytest.raises(ConfigError, match="is not a plain device name"):
            fleet_device(good, name=name)
    assert isinstance(good, DeviceProfile)


@pytest.mark.parametrize("name, fragment", [("../../escaped", "inside the output folder"),
                                            ("cache", "a file optimize writes"),
                                            ("report.html", "a file optimize writes")])
def test_optimize_checks_each_device_folder_stays_inside_o(name: str, fragment: str,
                                                           tmp_path: Path) -> None:
    """A profile built in Python whose name never went through the parser (model_copy skips
    validators): the folder derived from it is checked with io/outputs' resolver before any
    work, and nothing is created."""
    from edgekit.devices import load_profile
    from edgekit.errors import InputError
    from edgekit.optimize.search import Optimizer
    from edgekit.optimize.space import OptimizeSettings

    sneaky = load_profile(profile(tmp_path, "quick-cpu")).model_copy(update={"name": name})
    out = tmp_path / "deep" / "out"
    opt = Optimizer(tmp_path / "model.pt", [sneaky], OptimizeSettings(prune=[0.0],
                                                                      dwsep=["off"]),
                    out_dir=out, eval_source="fashion-mnist:test")
    with pytest.raises(InputError, match=fragment) as err:
        opt.check()
    assert "rename the device" in err.value.hint
    assert not (tmp_path / "deep").exists() and not (tmp_path / "escaped").exists()


# ---------------------------------------------------------------- item 3: reused candidates
@pytest.mark.slow
def test_optimize_claims_o_and_refuses_a_replaced_candidate(lenet5, tmp_path, capsys) -> None:
    """A real (tiny) search claims -o with an edgekit manifest and resumes from it; a candidate
    model replaced after it was built is refused by sha256 on the next run (exit 2, nothing
    written), instead of being measured as if it were the original."""
    pytest.importorskip("optuna")
    device = profile(tmp_path, "quick-cpu", "quick-cpu.yaml")
    out = tmp_path / "out"
    argv = ["optimize", lenet5, "--device", device, *TINY_SEARCH, "--json", "-o", out]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["format"] == "edgekit.manifest/1"
    winner = json.loads((out / "optimize.json").read_text())["devices"]["quick-cpu"]["winner"]
    assert winner["name"] == "original onnxruntime:fp32"
    assert (out / "quick-cpu" / "model.onnx").is_file()
    code, _, err = cli(capsys, *argv)  # the folder is edgekit's: a rerun resumes
    assert code == 0, err

    [original] = list((out / "candidates").glob("original-*/model.onnx"))
    from edgekit.io.onnxfile import load_onnx, save_onnx

    model = load_onnx(original)  # a valid model, one weight changed: loads and runs as before
    weight = model.graph.initializer[0]
    from onnx import numpy_helper

    changed = numpy_helper.to_array(weight).copy()
    changed.flat[0] += 1.0
    weight.CopyFrom(numpy_helper.from_array(changed, weight.name))
    save_onnx(model, original)
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, *argv)
    assert code == 2, err
    assert f"{original} changed since edgekit wrote it" in err, err
    assert "hint:" in err and "optimize into a new -o" in err
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- item 5: report's own files
def test_report_replaces_its_own_report(tmp_path, capsys) -> None:
    """A report edgekit wrote (the new marker, or an earlier edgekit's HTML) is replaced; the
    Markdown carries its marker too."""
    store = empty_store(tmp_path / "results.db")
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    for _ in range(2):
        code, _, err = cli(capsys, "report", store, "-o", html, "--markdown", md)
        assert code == 0, err
    assert '<meta name="generator" content="edgekit">' in html.read_text()
    assert md.read_text().startswith("<!-- written by edgekit report -->\n")
    html.write_text("<!doctype html><html lang=en><head><meta charset=utf-8><title>edgekit "
                    "report</title></head><body><p class=\"meta\">0 results from x · generated "
                    "2026-01-01 00:00 UTC by edgekit 0.9.0</p></body></html>")  # an older report
    code, _, err = cli(capsys, "report", store, "-o", html)
    assert code == 0, err
    assert "No records yet" in html.read_text()


# ---------------------------------------------------------------- item 10: export's folder
@pytest.fixture(scope="module")
def lenet5_int8(lenet5, tmp_path_factory) -> Path:
    from tests.helpers import edgekit

    out = tmp_path_factory.mktemp("int8") / "out"
    proc = edgekit("compress", lenet5, "--int8", "--calib", CALIB, "--calib-size", "32", "-o", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_export_refuses_another_model_into_a_compress_folder(lenet5, lenet5_int8, tmp_path,
                                                             capsys) -> None:
    """lenet5's int8 compress folder: exporting another checkpoint (lenet5 with one weight
    changed) into it is refused and leaves it as it was; the folder's own model, and its fp32
    ONNX model to OpenVINO, still export into it, and what it lists still chains by sha256."""
    import torch

    from edgekit.io.lineage import check_chain
    from edgekit.io.models import load_model, save_checkpoint

    out = tmp_path / "out"
    shutil.copytree(lenet5_int8, out)
    bundle = load_model(lenet5)
    with torch.no_grad():
        next(bundle.model.parameters()).flatten()[0] += 1.0
    other = save_checkpoint(bundle, tmp_path / "other.pt")
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "export", other, "-o", out)
    assert code == 2, err
    assert "holds the outputs of another model (lenet5: model.int8.onnx)" in err, err
    assert "hint: export into a new folder" in err
    assert snapshot(tmp_path) == before
    code, _, err = cli(capsys, "export", lenet5, "-o", out)  # the same model again
    assert code == 0, err
    check_chain(out)
