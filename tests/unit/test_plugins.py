"""A pass is one file and a runtime is one file (issue 26): tests/plugins/toy_pass.py (`round`)
and tests/plugins/toy_runtime.py (`onnx-reference`, ONNX's numpy reference evaluator) are
imported, with no other edit anywhere, and appear in `compress`, the recipe check (its ordering
constraint), `edgekit optimize`'s space, flags and builder, device profiles, `edgekit profile`,
validation and the report."""

from __future__ import annotations

import ast
import importlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from edgekit.errors import ConfigError  # noqa: E402
from tests.helpers import cli, tiny_onnx, tiny_se_model  # noqa: E402

TOY = "onnx-reference"


@pytest.fixture(scope="module")
def plugins():
    """Import (or re-import) the two plugin files; afterwards take them out of the registries,
    so that the tests that follow see edgekit as shipped."""
    from edgekit import kinds
    from edgekit.passes.base import PASSES
    from edgekit.runtimes.base import RUNNERS

    modules = []
    for name in ("tests.plugins.toy_pass", "tests.plugins.toy_runtime"):
        module = sys.modules.get(name)
        modules.append(importlib.reload(module) if module else importlib.import_module(name))
    yield modules
    PASSES.pop("round", None)
    RUNNERS.pop(TOY, None)
    kinds.remove_reader(TOY)


def _bundle():
    from edgekit.api import as_bundle

    torch.manual_seed(0)
    return as_bundle(tiny_se_model().eval(), input_shape=(1, 3, 16, 16),
                     arch="tests.helpers:tiny_se_model",
                     preprocessing={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})


def _rounded(values: np.ndarray, decimals: int) -> bool:
    scaled = np.asarray(values, dtype=np.float64) * 10 ** decimals
    return bool(np.allclose(scaled, np.round(scaled), atol=1e-3))


def _profile(tmp_path, runtimes: dict) -> str:
    path = tmp_path / "toy-cpu.yaml"
    path.write_text(yaml.safe_dump({
        "schema_version": 1, "name": "toy-cpu", "kind": "cpu", "threads": 1, "batch_sizes": [1],
        "runtimes": runtimes, "latency": {"warmup_count": 2, "warmup_seconds": 0.0,
                                          "min_queries": 10, "min_seconds": 0.02,
                                          "max_seconds": 2.0}}))
    return str(path)


def test_the_toy_pass_runs_in_compress_and_the_recipe_check(plugins, tmp_path):
    import onnx
    from onnx import numpy_helper

    import edgekit
    from edgekit.io.manifest import Manifest
    from edgekit.passes import pass_names
    from edgekit.recipe import load_recipe

    assert pass_names() == ("prune", "dwsep", "round", "distill", "quantize")
    bundle = _bundle()
    assert not _rounded(next(bundle.model.parameters()).detach().numpy(), 1)
    result = edgekit.compress(bundle, tmp_path / "out", steps=[("round", {"decimals": 1})])
    assert [r["step"] for r in result.rows] == ["original", "round"]
    stage = Manifest(tmp_path / "out").stage("round")
    assert stage["config"] == {"decimals": 1}
    weights = [numpy_helper.to_array(t) for t in
               onnx.load(str(tmp_path / "out" / "model.onnx")).graph.initializer]
    convs = [w for w in weights if w.ndim == 4]  # (its fresh BatchNorm folds as the identity)
    assert len(convs) == 5 and all(_rounded(w, 1) for w in convs)
    with pytest.raises(ConfigError, match="decimals"):  # its Config checks a step's keys
        edgekit.compress(_bundle(), tmp_path / "bad", steps=[("round", {"decimals": 12})])

    recipe = {"recipe_version": 1, "name": "t", "model": {"zoo": "lenet5"},
              "data": {"train": "fashion-mnist:train", "eval": "fashion-mnist:test"},
              "steps": [{"distill": {"epochs": 1}}, {"round": {"decimals": 2}}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError) as exc:  # its ordering constraint, from its declaration
        load_recipe(tmp_path / "r.yaml")
    assert "round comes after distill" in exc.value.message
    assert exc.value.hint == "round first, then distill: distillation trains the rounded weights back"
    recipe["steps"].reverse()
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert load_recipe(tmp_path / "r.yaml").step_list()[0] == ("round", {"decimals": 2})


def test_the_toy_pass_and_runtime_are_in_optimizes_space(plugins, tmp_path, capsys):
    from edgekit.config import parse_as
    from edgekit.data.given import DataSources
    from edgekit.devices import load_profile
    from edgekit.optimize.adapt import buildable_targets
    from edgekit.optimize.build import Arch, Builder
    from edgekit.optimize.space import SearchSpace
    from edgekit.optimize.trials import candidate_name, complexity

    space = SearchSpace()
    assert space.round == ["off", 1] and space.prune == [0.0, 0.25, 0.5]
    assert SearchSpace(round=["off", 1, 3]).size(["onnxruntime:fp32"]) == 3 * 2 * 3
    with pytest.raises(ConfigError, match="round: 12 is not a choice of the round pass's decimals"):
        parse_as(SearchSpace, {"round": ["off", 12]}, "space")
    device = load_profile(_profile(tmp_path, {"onnxruntime": {"precisions": ["fp32"]},
                                              TOY: {"precisions": ["fp32", "int8"]}}))
    assert sorted(SearchSpace(precisions=["fp32"]).targets(device)) == [f"{TOY}:fp32",
                                                                       "onnxruntime:fp32"]
    ok, why = buildable_targets([f"{TOY}:fp32", f"{TOY}:int8"])
    assert ok == [f"{TOY}:fp32"] and "no onnx-reference flavour" in why[f"{TOY}:int8"]
    params = {"prune": 0.0, "dwsep": "off", "round": "1", "target": f"{TOY}:fp32"}
    assert candidate_name(params) == f"round 1 {TOY}:fp32"
    assert complexity(params) == (1, 0)

    # the builder makes the candidate with the pass (through compress's loop) ...
    builder = Builder(_bundle(), "0" * 64, tmp_path, SearchSpace(round=["off", 1]),
                      data=DataSources(), parity_x=torch.randn(4, 3, 16, 16).numpy())
    arch = Arch.of(params)
    assert arch.round == 1 and arch.label == "round 1"
    assert builder.steps(arch, None) == [("round", {"decimals": 1})]
    rounded = builder.bundle(arch, "init", None)
    assert all(_rounded(p.detach().numpy(), 1) for p in rounded.model.parameters())
    # ... and the toy runtime runs what the ONNX target writes: the fp32 model itself
    entry = builder.artifact(arch, "init", f"{TOY}:fp32", "none", None)
    assert entry["path"].name == "model.onnx" and entry["format"] == "onnx"

    # `edgekit optimize` has a flag for the knob (added from the registry)
    code, out, _ = cli(capsys, "optimize", "--help")
    assert code == 0 and "--round" in out and "round pass's decimals" in out


def test_the_toy_runtime_profiles_validates_and_is_reported(plugins, tmp_path, capsys,
                                                            tiny_folder):
    from edgekit.devices import load_profile
    from edgekit.results.report import render_html, render_markdown, runtime_styles
    from edgekit.runtimes.base import get_runner
    from edgekit.spec import InputSpec
    from edgekit.validate.gate import Budget
    from edgekit.validate.validator import validate

    spec = InputSpec(shape=(1, 1, 8, 8), mean=(0.0,), std=(1.0,))
    path = tiny_onnx(tmp_path / "model.onnx", spec)
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    with get_runner(TOY)(path, spec) as toy, get_runner("onnxruntime")(path, spec) as ort:
        assert np.allclose(toy.infer(x), ort.infer(x), atol=1e-4)  # it really runs the model

    profile = _profile(tmp_path, {TOY: {"precisions": ["fp32", "int8"]}})
    code, out, err = cli(capsys, "profile", str(path), "--device", profile, "--runtime", TOY,
                         "--runs", "5", "--json")
    assert code == 0, err
    record = json.loads(out)
    layers = record["profile"]["layers"]
    assert record["runtime"] == TOY and [row["layer"] for row in layers] == ["(graph)"]
    assert layers[0]["ms"] > 0 and layers[0]["share"] == 1.0 and record["profile"]["runs"] == 5

    folder, eval_path = tiny_folder()
    from edgekit.data.given import DataSources
    from edgekit.executors import ValidationJob

    result = validate(ValidationJob(target=folder, device=load_profile(profile),
                                    data=DataSources(eval=str(eval_path)),
                                    budget=Budget(max_drop=1.0)))
    assert {r["runtime"] for r in result.records} == {TOY}
    assert len(result.records) == 2 and all(r["accuracy"]["top1"] > 0.9 for r in result.records)
    assert "onnx" in result.records[0]["environment"]["versions"]
    assert runtime_styles()[TOY] == ("#8c564b", "ref")
    assert TOY in render_markdown(result.records) and TOY in render_html(result.records)


def test_the_toy_runtimes_dists_reach_optimizes_cache_key(plugins, tmp_path, monkeypatch):
    """A measurement's cache key holds the versions of the runtimes the device names, read from
    their runners' `dists`: the toy runtime's (`onnx`) with no edit of edgekit/optimize/."""
    from importlib import metadata

    import edgekit
    from edgekit.devices import load_profile
    from edgekit.optimize.cache import CandidateCache, device_state, runtime_dists
    from edgekit.runtimes.base import get_runner

    device = load_profile(_profile(tmp_path, {TOY: {"precisions": ["fp32"]}}))
    state = device_state(device)
    assert state["versions"] == {"edgekit": edgekit.__version__, "onnx": metadata.version("onnx")}
    # measured elsewhere (over SSH, on a Ray node): the device's own job records its versions
    assert "versions" not in device_state(device, here=False)
    assert runtime_dists([TOY, "onnxruntime"]) == sorted({"onnx", "onnxruntime",
                                                          "onnxruntime-gpu"})
    art = tmp_path / "a.onnx"
    art.write_bytes(b"model")
    cache = CandidateCache(tmp_path / "cache")
    key = cache.measurement_key(art, state, TOY, 1, "eval")
    # another distribution behind the runtime (e.g. an accelerator package) is another key
    monkeypatch.setattr(get_runner(TOY), "dists", ("onnx", "numpy"))
    other = device_state(device)
    assert other["versions"]["numpy"] == metadata.version("numpy")
    assert cache.measurement_key(art, other, TOY, 1, "eval") != key


# Where edgekit/optimize/ may still name a runtime in a string (not a docstring), "file" -> why.
# None does: what a runtime needs in a search is declared on its Runner (dists, device_build).
OPTIMIZE_NAMES_A_RUNTIME: dict[str, str] = {}


def test_optimize_names_no_runtime():
    import edgekit

    root = Path(edgekit.__file__).parent
    names = re.compile(r"onnxruntime|openvino|tensorrt|nncf", re.IGNORECASE)
    found: set[str] = set()
    for path in sorted((root / "optimize").rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                    | ast.AsyncFunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)}
        found |= {f"{path.name}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and id(node) not in docstrings and names.search(node.value)}
    assert sorted(found) == sorted(OPTIMIZE_NAMES_A_RUNTIME), found
