"""The one table of artifact kinds (edgekit/kinds.py) and what is derived from it: every runtime
and target it names has its class in the registry, each runner reads the formats the table says,
and the suffix rules of the artifact finder, the runner choice and the remote payload follow
the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit import kinds
from edgekit.errors import InputError
from edgekit.io.artifacts import RUNNABLE_SUFFIXES, _format_of
from edgekit.runtimes.base import RUNNERS, get_runner, runner_for_artifact, runner_names
from edgekit.targets.base import TARGETS, get_target


def test_every_runtime_and_target_of_the_table_is_registered() -> None:
    runner_names()
    shipped = sorted(n for n, c in RUNNERS.items() if c.__module__.startswith("edgekit."))
    assert shipped == sorted(kinds.RUNTIMES) == ["onnxruntime", "openvino", "tensorrt", "torch"]
    for name in kinds.TARGETS:
        assert get_target(name).name == name
    shipped = sorted(n for n, c in TARGETS.items() if c.__module__.startswith("edgekit."))
    assert shipped == sorted(kinds.TARGETS) == ["onnx", "openvino", "tensorrt"]


@pytest.mark.parametrize("kind", kinds.KINDS, ids=lambda k: k.format)
def test_runners_read_the_formats_of_their_rows(kind: kinds.Kind) -> None:
    for runtime in kind.runtimes:
        assert kind.format in get_runner(runtime).formats
    if kind.target:
        target = get_target(kind.target)
        assert set(target.precisions) <= set(kinds.PRECISIONS)


def test_suffix_rules_follow_the_table() -> None:
    assert RUNNABLE_SUFFIXES == (".onnx", ".xml", ".plan", ".engine")
    assert [_format_of(Path(f"m{s}")) for s in RUNNABLE_SUFFIXES] == \
        ["onnx", "openvino", "tensorrt", "tensorrt"]
    assert runner_for_artifact("a/model.xml") is RUNNERS["openvino"]
    assert runner_for_artifact("model.engine").name == "tensorrt"
    assert runner_for_artifact("model.xml", preferred="onnxruntime").name == "onnxruntime"
    with pytest.raises(InputError, match="no runtime runs model.pt"):
        runner_for_artifact("model.pt")  # a checkpoint is read by the torch runner only on request
    assert kinds.weights_file("out/model.int8.xml") == Path("out/model.int8.bin")
    # a large ONNX model's weights file; a small one keeps them inside (nothing is there)
    assert kinds.weights_file("out/model.onnx") == Path("out/model.onnx.data")
    assert kinds.weights_file("out/model.onnx", existing=True) is None
    assert kinds.weights_file("model.pt") is None
    assert [k.format for k in kinds.KINDS if not k.portable] == ["tensorrt"]


def test_an_unknown_name_suggests_the_close_one() -> None:
    with pytest.raises(InputError) as exc:
        get_runner("onnxrutime")
    assert exc.value.hint == "did you mean 'onnxruntime'?"
    with pytest.raises(InputError) as exc:
        get_target("tensort")
    assert exc.value.hint == "did you mean 'tensorrt'?"
