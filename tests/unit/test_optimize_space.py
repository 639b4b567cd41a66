"""The search space of `edgekit optimize`, its recipe section, the winner rule and the cache keys."""

from __future__ import annotations

import pytest

from edgekit.config import parse_as
from edgekit.devices import DeviceProfile
from edgekit.errors import ConfigError
from edgekit.optimize.space import OptimizeSettings, SearchSpace, parse_duration


def profile(**runtimes) -> DeviceProfile:
    return DeviceProfile(name="d", kind="cpu", runtimes=runtimes or {
        "onnxruntime": {"precisions": ["fp32", "int8"]},
        "openvino": {"precisions": ["fp32", "fp16", "int8"]}}, batch_sizes=[4, 1])


def test_defaults_cover_every_runtime_and_precision_the_profile_lists():
    space = SearchSpace()
    assert space.prune == [0.0, 0.25, 0.5] and space.dwsep == ["off", "auto"]
    assert space.targets(profile()) == ["onnxruntime:fp32", "onnxruntime:int8", "openvino:fp32",
                                        "openvino:fp16", "openvino:int8"]
    # fp16 only where the device has it; int8 once per fallback set
    assert space.size(space.targets(profile())) == 3 * 2 * (3 + 2 * 3)
    assert space.needs_training()
    assert not SearchSpace(prune=[0], dwsep=["off"]).needs_training()


def test_runtimes_and_precisions_restrict_the_targets():
    space = SearchSpace(runtimes=["openvino"], precisions=["int8", "fp32"])
    assert space.targets(profile()) == ["openvino:int8", "openvino:fp32"]
    # a runtime the profile does not list gives nothing
    assert SearchSpace(runtimes=["tensorrt"]).targets(profile()) == []


def test_typos_and_bad_values_are_errors_with_the_closest_name():
    with pytest.raises(ConfigError, match="(?s)prune_ratio.*did you mean 'prune'"):
        parse_as(SearchSpace, {"prune_ratio": [0.5]}, "space")
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        parse_as(SearchSpace, {"prune": [0, 1.2]}, "space")
    with pytest.raises(ConfigError, match="did you mean 'first-conv'"):
        parse_as(SearchSpace, {"int8_fallback": ["first_conv"]}, "space")
    with pytest.raises(ConfigError, match="dwsep"):
        parse_as(SearchSpace, {"dwsep": ["sometimes"]}, "space")
    with pytest.raises(ConfigError, match="short distillation is longer"):
        parse_as(SearchSpace, {"distill": {"short_epochs": 3, "short_limit": None, "full_epochs": 1}}, "space")


def test_ratios_are_sorted_and_deduplicated_and_ranks_accepted():
    space = SearchSpace(prune=[0.5, 0, 0.5], dwsep=["off", 2, "auto"])
    assert space.prune == [0.0, 0.5] and space.dwsep == ["off", 2, "auto"]
    assert space.fallback_names() == ["none", "first-conv", "depthwise"]
    assert SearchSpace(int8_fallback=[["conv1", "conv2"]]).fallback_names() == ["conv1,conv2"]


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("1h30m", 5400),
                                          ("45", 45), ("0.5m", 30)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "30x", "m30", ""])
def test_bad_durations(text):
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration(text)


def test_settings_split_into_the_space_and_the_search():
    settings = OptimizeSettings(prune=[0, 0.3], trials=5, time_budget="10m", min_speedup=1.2)
    assert settings.space() == SearchSpace(prune=[0, 0.3])
    with pytest.raises(ValueError, match="not a duration"):
        OptimizeSettings(time_budget="ten minutes")


def test_recipe_optimize_section_is_checked(tmp_path):
    from edgekit.recipe import load_recipe

    text = ("recipe_version: 1\nname: r\nmodel: {zoo: lenet5}\ndata: {eval: fashion-mnist:test}\n"
            "optimize: {prune: [0, 0.3], dwsep: ['off'], trials: 6}\n")
    (tmp_path / "r.yaml").write_text(text)
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.optimize.trials == 6 and recipe.optimize.prune == [0.0, 0.3]
    (tmp_path / "bad.yaml").write_text(text.replace("trials", "trails"))
    with pytest.raises(ConfigError, match="did you mean .trials."):
        load_recipe(tmp_path / "bad.yaml")


def test_device_profiles_carry_round_to():
    from edgekit.devices import load_profile

    assert load_profile("local-cpu").round_to == 8
    assert load_profile("jetson-orin-nano").round_to == 8
    with pytest.raises(ConfigError):
        parse_as(DeviceProfile, {"name": "x", "kind": "cpu", "runtimes": {}, "round_to": 0}, "p")


# ------------------------------------------------------------------ the winner rule
def cand(trial, p50, top1, ref=90.0, fastest=1.0, measured=True):
    return {"trial": trial, "name": f"c{trial}", "values": [p50, top1] if measured else None,
            "p50_ms": p50, "top1": top1, "drop_points": ref - top1, "speedup": fastest / p50}


def test_choose_takes_the_fastest_within_budget_that_is_never_slower():
    from edgekit.optimize.trials import choose

    candidates = [cand(0, 1.0, 90.0),       # the original on its fastest runtime
                  cand(1, 0.5, 85.0),       # fast, but 5 points under
                  cand(2, 0.8, 89.4),       # within 1 point, faster: the winner
                  cand(3, 0.7, 95.0, measured=False),  # not measured (pruned trial)
                  cand(4, 0.9, 89.9)]
    winner, why = choose(candidates, max_drop=1.0, min_speedup=1.0)
    assert winner["trial"] == 2 and "0.800 ms" in why and "1.25×" in why
    # a stricter budget leaves the original
    winner, _ = choose(candidates, max_drop=0.0, min_speedup=1.0)
    assert winner["trial"] == 0
    # a minimum speed-up nothing reaches: no winner, and the reason says so
    winner, why = choose(candidates, max_drop=1.0, min_speedup=2.0)
    assert winner is None and "2×" in why


def test_choose_never_picks_a_candidate_slower_than_the_original():
    from edgekit.optimize.trials import choose

    winner, why = choose([cand(0, 1.2, 91.0, fastest=1.0)], max_drop=1.0, min_speedup=1.0)
    assert winner is None and "as fast as the fp32 original" in why
    winner, why = choose([cand(0, 0.5, 80.0)], max_drop=1.0, min_speedup=1.0)
    assert winner is None and "within 1 points" in why


def test_noise_neither_fails_nor_passes_a_candidate_and_ties_go_to_the_simpler():
    from edgekit.optimize.trials import choose, complexity, prefer_simpler

    # 1.02 ms against 1.00: slower by the p50s, but within the noise (its interval reaches 1)
    near = {**cand(1, 1.02, 90.0), "speed_verdict": "indistinguishable",
            "speedup_ci": [0.95, 1.08],
            "params": {"prune": 0.0, "dwsep": "off", "target": "onnxruntime:int8",
                       "fallback": "none"}}
    slow = {**cand(2, 0.99, 90.0), "speed_verdict": "slower", "speedup_ci": [0.9, 0.97],
            "params": {"prune": 0.5, "dwsep": "off", "target": "openvino:fp32"}}
    original = {**cand(0, 1.0, 90.0), "speed_verdict": "meets", "speedup_ci": [1.0, 1.0],
                "params": {"prune": 0.0, "dwsep": "off", "target": "openvino:fp32"}}
    winner, why = choose([near, slow], max_drop=1.0, min_speedup=1.0)
    assert winner is near and "0.95–1.08" in why  # not failed by noise, not chosen by it either
    # a candidate slower beyond the noise never wins, even with the smaller p50
    assert choose([slow], max_drop=1.0, min_speedup=1.0)[0] is None
    assert complexity(original["params"]) == (0, 0) < complexity(near["params"]) == (1, 2)
    assert complexity(slow["params"]) == (1, 0)
    fast = {**cand(3, 0.90, 90.0), "speed_verdict": "meets",
            "params": {"prune": 0.25, "dwsep": "auto", "target": "onnxruntime:int8",
                       "fallback": "first-conv"}}
    pool = [original, near, slow, fast]
    tie = {"speedup": 1.11, "ci_low": 0.97, "ci_high": 1.27, "confidence": 0.99}
    chosen, why = prefer_simpler(fast, pool, 1.0, 1.0, lambda a, b: tie)
    assert chosen is original and "simpler" in why and "0.97–1.27" in why
    clear = {"speedup": 1.11, "ci_low": 1.05, "ci_high": 1.18, "confidence": 0.99}
    assert prefer_simpler(fast, pool, 1.0, 1.0, lambda a, b: clear) == (fast, None)
    # the simpler one must qualify itself: outside the accuracy budget it does not take over
    assert prefer_simpler(fast, [{**original, "drop_points": 3.0}, fast], 1.0, 1.0,
                          lambda a, b: tie) == (fast, None)


# ------------------------------------------------------------------ fallback sets and cache keys
def test_fallback_sets_resolve_on_the_graph(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.optimize.build import fallback_nodes

    w1 = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w1")
    w2 = numpy_helper.from_array(np.ones((8, 2, 3, 3), np.float32), "w2")  # group 2: depthwise-ish
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "w2"], ["y"], name="dw", group=2, pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 1, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 8, 8, 8])], [w1, w2])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), path)
    assert fallback_nodes(path, "none") == []
    assert fallback_nodes(path, "first-conv") == ["stem"]
    assert fallback_nodes(path, "depthwise") == ["dw"]
    assert fallback_nodes(path, "first-conv+depthwise") == ["stem", "dw"]
    assert fallback_nodes(path, "a,b") == ["a", "b"]


def test_measurement_keys_follow_the_artifact_and_the_device_state(tmp_path):
    from edgekit.optimize.cache import CandidateCache, device_state

    art = tmp_path / "a.onnx"
    art.write_bytes(b"one")
    cache = CandidateCache(tmp_path / "cache")
    base = device_state(profile())
    key = cache.measurement_key(art, base, "onnxruntime", 1, "eval")
    assert key == cache.measurement_key(art, device_state(profile()), "onnxruntime", 1, "eval")
    other_threads = device_state(profile().model_copy(update={"threads": 4}))
    assert key != cache.measurement_key(art, other_threads, "onnxruntime", 1, "eval")
    assert key != cache.measurement_key(art, base, "onnxruntime", 8, "eval")
    assert "versions" in base  # local devices: runtime versions are part of the state
    art.write_bytes(b"two")
    assert key != cache.measurement_key(art, base, "onnxruntime", 1, "eval")
    assert cache.get(key) is None
    cache.put(key, {"p50": 1})
    assert cache.get(key) == {"p50": 1} and cache.summary()["hits"] == 1
    assert cache.keys() == {key}
