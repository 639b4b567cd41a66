"""(issue 27) `edgekit validate OUT/<device>` on the folder optimize writes for a winner: the
folder holds the optimized artifact alone, so validate checked only that its outputs are finite.
Its manifest records the original checkpoint (path + sha256): while that file is there with the
same sha256, it is the reference of the drop (and validate says so); when it is gone or changed,
validate says it has no reference. The winner folder is written here as decide.py writes it (an
optimize stage naming the checkpoint, the artifact copied in), around a real fp16 export of the
zoo's lenet5, so the test does not run a whole optimize."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import requires_data
from tests.helpers import cli

pytestmark = requires_data


def _winner_folder(tmp_path: Path, checkpoint: Path, capsys) -> Path:
    from edgekit.io.artifacts import manifest_entries
    from edgekit.io.manifest import Manifest

    code, _, err = cli(capsys, "export", checkpoint, "--target", "onnx", "--precision", "fp16",
                       "-o", tmp_path / "exp")
    assert code == 0, err
    winner = tmp_path / "out" / "local-cpu"
    winner.mkdir(parents=True)
    shutil.copyfile(tmp_path / "exp" / "model.fp16.onnx", winner / "model.fp16.onnx")
    entry = dict(manifest_entries(tmp_path / "exp" / "model.fp16.onnx")[-1])
    entry.update(path="model.fp16.onnx", role="optimized", model="lenet5")
    Manifest(winner).add_stage("optimize", inputs={"checkpoint": checkpoint},
                               config={"arch": None, "arch_kwargs": {}}, outputs=[entry])
    return winner


def _validate(capsys, winner: Path, *extra: str):
    code, out, err = cli(capsys, "validate", winner, "--eval", "fashion-mnist:test", "--limit",
                         "300", "--batch", "1", "--max-drop", "1", *extra)
    return code, out, err


def test_a_winner_folder_is_gated_against_its_recorded_original(lenet5, tmp_path, capsys):
    checkpoint = tmp_path / "model.pt"
    shutil.copyfile(lenet5, checkpoint)
    winner = _winner_folder(tmp_path, checkpoint, capsys)

    code, out, err = _validate(capsys, winner, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["reference_note"].startswith(f"reference for the drop: the original "
                                               f"{checkpoint} (sha256 ")
    acc = result["records"][0]["accuracy"]
    # fp16 of lenet5 against its own fp32 PyTorch original: a real drop, measured
    assert acc["reference_top1"] > 0.6 and abs(acc["top1_drop_points"]) <= 1.0, acc
    assert acc["top1_drop_points"] == pytest.approx(100 * (acc["reference_top1"] - acc["top1"]))
    assert acc["fidelity"]["top1_agreement"] >= 0.98
    checks = {c["check"]: c for c in result["records"][0]["gate"]["checks"]}
    assert checks["top1_drop_points"]["passed"] and checks["top1_drop_points"]["value"] == \
        pytest.approx(acc["top1_drop_points"])
    code, out, _ = _validate(capsys, winner)  # the table says which reference it used
    assert code == 0 and f"reference for the drop: the original {checkpoint}" in out

    # changed since: no reference, said so, and the drop budget cannot pass
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")
    code, out, err = _validate(capsys, winner)
    assert code == 1
    assert f"no reference for the drop: the original this folder was optimized from, " \
           f"{checkpoint}, has changed since" in out
    assert "no top-1" in err
    checkpoint.unlink()
    code, out, _ = _validate(capsys, winner)
    assert code == 1 and f"{checkpoint}, is not there any more" in out
