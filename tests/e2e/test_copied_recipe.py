"""A shipped recipe copied into another folder still runs (issue 16 part 5): run from a third
folder, its `calibration/fashion-mnist-512.npz` comes from the package and its `zoo: lenet5` is
the checkpoint shipped with edgekit (no training). Only the copy's measuring is made quick."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from edgekit.resources import shipped_dir
from tests.conftest import ROOT, requires_data

pytestmark = [pytest.mark.slow, requires_data]


def test_a_copied_shipped_recipe_runs_from_another_folder(tmp_path):
    data = yaml.safe_load((shipped_dir("recipes") / "lenet5-fashion-mnist.yaml").read_text())
    assert data["data"]["calib"] == "calibration/fashion-mnist-512.npz"  # relative, as shipped
    data["data"]["eval_limit"] = 300
    data["exports"] = []
    data["devices"] = [{"profile": "local-cpu", "threads": 1, "batch_sizes": [1],
                        "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"]}},
                        "latency": {"warmup_count": 2, "warmup_seconds": 0.0, "min_queries": 30,
                                    "min_seconds": 0.1, "max_seconds": 5.0}}]
    data["budget"] = {"max_drop": 5.0, "min_speedup": None}
    mine = tmp_path / "mine" / "lenet5.yaml"
    mine.parent.mkdir()
    mine.write_text(yaml.safe_dump(data, sort_keys=False))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "EDGEKIT_NO_PROGRESS": "1", "EDGEKIT_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "edgekit", "run", str(mine), "-o",
                           str(tmp_path / "out"), "--json"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shipped with edgekit" in proc.stderr and "training" not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["passed"] is True
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    stages = {s["stage"]: s for s in manifest["stages"]}
    assert "model.int8.onnx" in [o["path"] for o in stages["quantize-int8"]["outputs"]]
    model = stages["run:model"]
    assert str(shipped_dir("zoo") / "lenet5.pt") in json.dumps(model)
    assert not (tmp_path / "cache" / "zoo").exists() and not any(cwd.iterdir())
