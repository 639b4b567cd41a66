"""(issue 28, parts 0 and 4) `edgekit optimize`'s distillation schedule end to end, on a small
trained LeNet-5 and 1,200 Fashion-MNIST training images: a pruned candidate that the short rung
leaves far under the accuracy budget is still carried to the full rung when time is left (no
fixed margin cuts it), the plan is said before the trials, and every candidate says at which
rung it stopped and why, in the JSON and in the report."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from tests.helpers import ROOT, edgekit, fashion_train_subset

pytestmark = pytest.mark.slow
CALIB = str(ROOT / "calibration" / "fashion-mnist-512.npz")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, zoo_checkpoint):
    """A LeNet-5, 1,200 training images, a CPU profile timed at batch 64 (where pruning half the
    channels is clearly faster), and a space whose short rung is 64 images and whose in-trial
    promotion margin is 0 points (so only the promotions after the trials can carry it)."""
    pytest.importorskip("optuna")
    folder = tmp_path_factory.mktemp("schedule")
    profile = {"schema_version": 1, "name": "batch-cpu", "kind": "cpu", "threads": 1,
               "batch_sizes": [64], "round_to": 8,
               "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"]}},
               "latency": {"warmup_count": 5, "warmup_seconds": 0.0, "min_queries": 60,
                           "min_seconds": 0.3, "max_seconds": 3.0}}
    (folder / "batch-cpu.yaml").write_text(yaml.safe_dump(profile))
    space = {"prune": [0, 0.5], "dwsep": ["off"], "int8_fallback": ["none"], "calib_size": 64,
             "distill": {"short_limit": 64, "promote_margin": 0.0}}
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    return {"model": str(zoo_checkpoint("lenet5")), "folder": folder,
            "train": str(fashion_train_subset(folder, 1200)),
            "device": str(folder / "batch-cpu.yaml"), "space": str(folder / "space.yaml")}


def optimize(setup, out, *extra: str):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKIT_NO_PROGRESS": "1"}
    return edgekit("optimize", setup["model"], "--device", setup["device"], "--train",
                   setup["train"], "--eval", "fashion-mnist:test", "--eval-limit", "320",
                   "--calib", CALIB, "--space", setup["space"], "-o", out, "--json", *extra,
                   env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def searched(setup):
    out = setup["folder"] / "out"
    proc = optimize(setup, out)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return out, json.loads(proc.stdout), proc.stderr


def test_a_pruned_candidate_left_under_by_the_short_rung_is_promoted_with_time_left(searched):
    _, summary, _ = searched
    result = summary["devices"]["batch-cpu"]
    pruned = [c for c in result["candidates"] if c["params"]["prune"] == 0.5]
    distilled = [c for c in pruned if c["status"] in ("short", "full")]
    assert distilled, [(c["name"], c["status"], c["why"]) for c in pruned]
    promoted = [c for c in distilled if c["status"] == "full"]
    # the fastest pruned candidate was faster than every original, so it is promoted (no time
    # limit: budget is left), although its short result is far under the budget and the
    # in-trial margin (0 points) would never have carried it
    fastest = min(distilled, key=lambda c: c["p50_ms"])
    assert fastest in promoted, (fastest["name"], fastest["status"], fastest["why"])
    assert fastest["rung"] == "full" and fastest["cut"] is None
    stages = [s["stage"] for s in fastest["steps"]]
    assert stages == ["init", "short", "full"]
    short, full = (100 * s["top1"] for s in fastest["steps"][1:])
    reference = 100 * result["reference_top1"]
    assert short < reference - summary["max_drop"]  # the short rung left it under the budget
    assert full > short + 2  # and the full one recovers points
    assert "after the trials" in fastest["why"]


def test_every_candidate_says_where_it_stopped_and_why(searched):
    out, summary, _ = searched
    result = summary["devices"]["batch-cpu"]
    rungs = {c["name"]: (c["rung"], c["cut"]) for c in result["candidates"]}
    assert len(rungs) == 4  # 2 architectures × (onnxruntime fp32, int8)
    for c in result["candidates"]:
        if c["params"]["prune"] == 0 and c["status"] == "measured":
            assert (c["rung"], c["cut"]) == ("original", None), c
        elif c["status"] in ("too slow", "tie", "dominated"):  # the original's int8 too
            assert c["rung"] == "screen" and c["cut"] == c["why"], c
        elif c["status"] == "short":  # not carried: it says why (here: not faster than the
            # winner, which the full rung cannot change)
            assert c["rung"] == "short" and c["cut"], c
    cut = [c for c in result["candidates"] if c["cut"]]
    report = (out / "report.md").read_text()
    for c in cut:  # the report names each cut candidate, its rung and the reason
        assert f"{c['name']}: {c['status']}, cut at the {c['rung']} rung: {c['cut']}" in report


def test_the_plan_is_said_before_the_trials(searched, setup):
    _, summary, stderr = searched
    plans = [line for line in stderr.splitlines() if "plan:" in line]
    assert plans, stderr[-2000:]
    # the full rung is the whole training set (1,200 images), the short one the space's 64
    assert re.search(r"plan: 4 candidates × short rung of 64 images, up to \d+ full "
                     r"distillations? of 1,200 images", plans[0]), plans
    assert "ETA once one distillation is timed" in plans[0]
    # re-planned once the first distillation was timed: with its seconds and an ETA
    assert any(re.search(r"\(short \d+ s, full ~\d+ s each\), ETA \d+", p) for p in plans[1:]), \
        plans
    assert stderr.index(plans[0]) < stderr.index("promoting ")


def test_with_a_time_budget_the_search_samples_past_the_trials_until_the_space_is_exhausted(
        setup):
    """--trials 2 (the two originals) with 10 minutes: the time left pays for more, so the two
    pruned candidates are sampled too, and the search says why it stops (the space of 4 is
    exhausted), not at --trials."""
    proc = optimize(setup, setup["folder"] / "more", "--trials", "2", "--time-budget", "10m")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    result = json.loads(proc.stdout)["devices"]["batch-cpu"]
    assert sorted(c["name"] for c in result["candidates"]) == [
        "original onnxruntime:fp32", "original onnxruntime:int8", "prune 0.5 onnxruntime:fp32",
        "prune 0.5 onnxruntime:int8"], [c["name"] for c in result["candidates"]]
    assert "plan: 2 candidates (then more of the 4 while the time left pays for one)" in \
        proc.stderr, proc.stderr[-2000:]
    assert "sampling on while the budget lasts" in proc.stderr
    assert "sampling stopped: the space is exhausted (4 candidates tried)" in proc.stderr
