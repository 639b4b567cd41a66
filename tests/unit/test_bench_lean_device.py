"""`edgekit bench` on a lean device (issue 27): a copied output folder is measured for what this
machine's runtimes run, and each artifact it cannot run is skipped with the reason, as `validate`
does; a runtime forced with --runtime never reads a format it does not read (an OpenVINO IR was
called "truncated" by ONNX Runtime)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import cli
from tests.unit.test_lean_imports import PROFILE, small_onnx

# A device without OpenVINO: the module cannot be found (importlib's find_spec returns None).
NO_OPENVINO = """
import json, sys
sys.modules["openvino"] = None
from edgekit.cli import main
try:
    main(["bench", sys.argv[2], "--device", sys.argv[1], "--json"])
except SystemExit as exc:
    assert not exc.code, f"exit {exc.code}"
"""


@pytest.fixture()
def folder(tmp_path: Path) -> tuple[Path, Path]:
    ov = pytest.importorskip("openvino", reason="the IR is made by OpenVINO's converter")
    out = tmp_path / "copied"
    out.mkdir()
    model = small_onnx(out / "model.onnx")
    ov.save_model(ov.convert_model(str(model)), str(out / "model.xml"))
    profile = tmp_path / "lean.yaml"
    profile.write_text(PROFILE)
    return out, profile


def test_a_folder_on_a_device_without_openvino_measures_the_onnx_and_skips_the_ir(folder) -> None:
    out, profile = folder
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(NO_OPENVINO), str(profile),
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads(proc.stdout)
    measured = [r for r in records if not r.get("skipped")]
    skipped = [r for r in records if r.get("skipped")]
    assert [Path(r["artifact"]).name for r in measured] == ["model.onnx"]
    assert measured[0]["runtime"] == "onnxruntime" and measured[0]["latency"]["p50_ms"] > 0
    assert [Path(r["artifact"]).name for r in skipped] == ["model.xml"]
    assert "needs openvino" in skipped[0]["skipped"]
    assert "openvino is not installed" in skipped[0]["skipped"]


def test_a_forced_runtime_skips_what_it_does_not_read(folder, capsys) -> None:
    out, profile = folder
    code, stdout, err = cli(capsys, "bench", str(out), "--device", str(profile),
                            "--runtime", "onnxruntime")
    assert code == 0, err
    assert "skipped model.xml: onnxruntime does not read openvino files" in err
    assert "truncated" not in err


def test_one_ir_with_a_runtime_that_cannot_read_it_is_refused_with_the_reason(folder,
                                                                              capsys) -> None:
    out, profile = folder
    code, _, err = cli(capsys, "bench", str(out / "model.xml"), "--device", str(profile),
                       "--runtime", "onnxruntime")
    assert code == 2
    assert "onnxruntime does not read openvino files (model.xml)" in err
    assert "truncated" not in err and "Traceback" not in err
