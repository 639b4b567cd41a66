"""Issue 26, "`dict[str, Any]` at module boundaries replaced by typed records": the count of
untyped mappings that cross a module boundary may only fall.

A module boundary, here: a parameter or the return annotation of a PUBLIC function of an edgekit
module — a module-level function or a method of a module-level class (nested classes too), whose
name and whose class's name do not start with an underscore (dunders included: they start with
one); functions nested in functions are not boundaries. Counted: every `dict[str, Any]` in such
an annotation (`list[dict[str, Any]]` and `dict[str, dict[str, Any]]` count one per mapping), and
every name defined in edgekit as an alias of it (`Section = dict[str, Any]`), so an alias does not
hide one.

Not counted, because the value there genuinely is free-form JSON (or free-form keywords):
- what a `to_json` method returns: the JSON form itself, handed to json.dumps by `--json`;
- the keyword arguments of a model factory (a parameter named `kwargs` or `*_kwargs`): the
  user's `**kwargs`, stored as JSON in the checkpoint;
- the JSON exchanged with the device agent over SSH and the raw option mappings a pydantic model
  parses (JSON_PAYLOADS below, each with its reason).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import edgekit

ROOT = Path(edgekit.__file__).resolve().parent
# `python3 tests/unit/test_typed_boundaries.py` (or this test's failure) prints the list.
# 260 on main before the typed records (issue 26, round 2). Lower it when you type more.
CEILING = 68

JSON_PAYLOADS = {
    # the device agent's wire format: JSON in, JSON out (remote/agent*.py reads and writes it)
    "remote/ssh.py:SSHTransport.agent(payload)": "base64 JSON sent to the agent",
    "remote/ssh.py:SSHTransport.agent->": "the agent's JSON answer",
    "remote/payload.py:program_argv(args)": "json.dumps'd into the device program's argv",
    "remote/payload.py:with_run_id(task)": "a task of the agent's job file (JSON)",
    "remote/payload.py:with_run_id->": "a task of the agent's job file (JSON)",
    "remote/payload.py:job_identity(tasks)": "the agent's tasks, hashed as JSON",
    "remote/device.py:build_report(probe)": "the agent's probe answer (JSON)",
    "remote/job.py:run_prepared->": "the agent's result answer (JSON)",
    "remote/alternate.py:collect_timed(answer)": "the agent's result answer (JSON)",
    # raw mappings from YAML/JSON that a pydantic model with extra="forbid" parses (a device
    # profile's runner options go to Runner.parse_options wherever they are passed on)
    "runtimes/base.py:Runner.parse_options(options)": "a device profile's raw runner options",
    "runtimes/base.py:Runner.usable_with(options)": "raw runner options, parsed there",
    "runtimes/ort.py:OrtRunner.usable_with(options)": "raw runner options, parsed there",
    "runtimes/base.py:Runner.profile_layers(options)": "raw runner options for the runner",
    "runtimes/profile.py:profile_onnxruntime(options)": "raw runner options for the runner",
    "runtimes/profile.py:profile_openvino(options)": "raw runner options for the runner",
    "runtimes/profile.py:profile_tensorrt(options)": "raw runner options for the runner",
    "devices.py:DeviceProfile.runner_options->": "a device profile's raw runner options",
    "targets/base.py:Target.parse_options(options)": "a recipe's raw export options",
    "zoo/accel.py:train_settings(training)": "a recipe's raw training mapping (TrainSettings)",
}

ANY_DICT = re.compile(r"\bdict\[str,\s*Any\]")


def _aliases(root: Path) -> set[str]:
    """Module-level names bound to dict[str, Any] anywhere in edgekit."""
    names = set()
    for path in root.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            if value is not None and ANY_DICT.fullmatch(ast.unparse(value).strip("'\"")):
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _excluded(name: str, where: str, arg: str | None) -> bool:
    """Whether this annotation holds JSON (or factory keywords), as the docstring says."""
    if arg is None:
        return name == "to_json" or f"{where}->" in JSON_PAYLOADS
    return arg == "kwargs" or arg.endswith("_kwargs") or f"{where}({arg})" in JSON_PAYLOADS


def boundary_dicts(root: Path = ROOT, *, exclude: bool = True) -> list[str]:
    """One 'module:Class.function(param)' or 'module:function->' per untyped mapping at a
    module boundary (see the module's docstring), JSON payloads left out unless not `exclude`."""
    pattern = re.compile("|".join([ANY_DICT.pattern]
                                  + [rf"\b{re.escape(a)}\b" for a in sorted(_aliases(root))]))
    found: list[str] = []

    def count(annotation: ast.expr | None) -> int:
        return 0 if annotation is None else len(pattern.findall(ast.unparse(annotation)))

    def visit(body: list[ast.stmt], rel: str, prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, rel, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) \
                    and not node.name.startswith("_"):
                where = f"{rel}:{prefix}{node.name}"
                a = node.args
                for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs,
                            *(x for x in (a.vararg, a.kwarg) if x)]:
                    if not (exclude and _excluded(node.name, where, arg.arg)):
                        found.extend([f"{where}({arg.arg})"] * count(arg.annotation))
                if not (exclude and _excluded(node.name, where, None)):
                    found.extend([f"{where}->"] * count(node.returns))

    for path in sorted(root.rglob("*.py")):
        visit(ast.parse(path.read_text()).body, path.relative_to(root).as_posix(), "")
    return found


def test_untyped_mappings_at_module_boundaries_only_fall():
    found = boundary_dicts()
    listing = "\n".join(found)
    assert len(found) <= CEILING, (
        f"{len(found)} dict[str, Any] at module boundaries (ceiling {CEILING}): use a typed "
        f"record (a dataclass, or a TypedDict for a JSON record written to disk):\n{listing}")


def test_the_json_exclusions_name_real_boundaries():
    """Every JSON_PAYLOADS entry names an untyped boundary that is there: a stale entry would
    let a later function of that name escape the count."""
    everything = set(boundary_dicts(exclude=False))
    assert set(JSON_PAYLOADS) <= everything, set(JSON_PAYLOADS) - everything


def test_the_count_sees_a_new_untyped_boundary(tmp_path):
    """The counter counts what the definition says: a public function's parameters and return,
    a public method, an alias; not a private function, a nested one or a to_json."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text(
        "from typing import Any\n"
        "Blob = dict[str, Any]\n"
        "def f(a: dict[str, Any], b: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:\n"
        "    def inner(x: dict[str, Any]) -> None: ...\n"
        "def g(c: Blob, **kwargs: dict[str, Any]) -> None: ...\n"
        "def _private(d: dict[str, Any]) -> dict[str, Any]: ...\n"
        "class C:\n"
        "    def m(self, e: 'dict[str, Any]') -> None: ...\n"
        "    def to_json(self) -> dict[str, Any]: ...\n"
        "    def _p(self) -> dict[str, Any]: ...\n"
        "class _Hidden:\n"
        "    def m(self) -> dict[str, Any]: ...\n")
    assert boundary_dicts(pkg) == ["m.py:f(a)", "m.py:f(b)", "m.py:f->", "m.py:g(c)",
                                   "m.py:C.m(e)"]


if __name__ == "__main__":
    rows = boundary_dicts()
    print("\n".join(rows))
    print(len(rows), "dict[str, Any] at module boundaries")
