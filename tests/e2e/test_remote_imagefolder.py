"""An RGB image folder validated on a loopback SSH device (no torch there): the same top-1 and
agreement as a local validation, because both preprocess with the artifact's own InputSpec
(issue 16 part 2). Uses the sshd fixtures of test_remote_ssh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.test_remote_ssh import device_profile, device_python, remote, sshd  # noqa: F401
from tests.sshd import SKIP_REASON

pytestmark = [pytest.mark.ssh, pytest.mark.skipif(bool(SKIP_REASON), reason=SKIP_REASON or "n/a")]
torch = pytest.importorskip("torch")


def test_image_folder_remote_matches_local(sshd, device_python, tmp_path: Path) -> None:  # noqa: F811
    from PIL import Image

    from edgekit.data.given import DataSources
    from edgekit.executors import ValidationJob
    from edgekit.io.artifacts import spec_for
    from edgekit.io.models import build_arch
    from edgekit.validate.gate import Budget
    from edgekit.validate.validator import validate

    folder = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for k in range(3):
        (folder / f"class{k}").mkdir(parents=True)
        for i in range(8):
            img = rng.integers(0, 80, (50, 60, 3), dtype=np.uint8)
            img[..., k] += 150
            Image.fromarray(img).save(folder / f"class{k}" / f"{i}.jpg")
    torch.manual_seed(0)
    arch = "torchvision.models:mobilenet_v3_small"
    torch.save(build_arch(arch, {"num_classes": 3}).state_dict(), tmp_path / "m.pt")
    out = tmp_path / "out"
    # In a child process: after a long session of in-process torch/ONNX Runtime/OpenVINO tests
    # the quantizer has been seen to crash the test process (rc 139).
    proc = subprocess.run([sys.executable, "-m", "edgekit", "compress", str(tmp_path / "m.pt"),
                           "--arch", arch, "--arch-kwargs", json.dumps({"num_classes": 3}),
                           "--crop", "48", "--mean", "0.4,0.4,0.4", "--std", "0.3,0.3,0.3",
                           "--int8", "--calib", str(folder), "--eval", str(folder), "--max-drop", "100",
                           "-o", str(out)],
                          capture_output=True, text=True, env={**os.environ, "EDGEKIT_NO_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert spec_for(out / "model.onnx").mean == (0.4, 0.4, 0.4)
    profile = device_profile(sshd, device_python, tmp_path / "device")
    budget = Budget(max_drop=100.0)
    result = remote(out, profile, folder, budget=budget)
    assert result.device_report["edgekit"]["imports_torch"] is False
    local = validate(ValidationJob(target=out, device=profile.model_copy(update={"host": None}),
                     budget=budget, data=DataSources(eval=str(folder))))
    assert len(result.records) == len(local.records) == 2
    for mine, theirs in zip(result.records, local.records, strict=True):
        assert mine["accuracy"]["top1"] == theirs["accuracy"]["top1"]
        assert mine["accuracy"]["fidelity"]["top1_agreement"] == \
            theirs["accuracy"]["fidelity"]["top1_agreement"]
