"""Issue 26: "`validate` names a package, a function and four other things". It names the verb
only: `edgekit validate` (cli/validate.py), `edgekit.validate` (api.py), the package that does
it (edgekit/validate/), a job validated here (validate/validator.py) and an executor's method
that validates a job where the device is (executors/). Turning a mapping into a typed config is
`edgekit.config.parse_as`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edgekit
from edgekit.errors import ConfigError

VALIDATE_IS_THE_VERB = {
    "api.py:validate", "cli/validate.py:validate", "validate/validator.py:validate",
    "executors/base.py:Executor.validate", "executors/local.py:LocalExecutor.validate",
    "executors/ssh.py:SSHExecutor.validate", "executors/ray.py:RayExecutor.validate"}


def _definitions(name: str) -> set[str]:
    root = Path(edgekit.__file__).parent
    found = set()
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        where = path.relative_to(root).as_posix()
        for node in tree.body:
            bodies = [(f"{node.name}.", node.body)] if isinstance(node, ast.ClassDef) else \
                [("", [node])]
            for prefix, body in bodies:
                found |= {f"{where}:{prefix}{f.name}" for f in body
                          if isinstance(f, ast.FunctionDef) and f.name == name}
    return found


def test_validate_names_the_verb_only() -> None:
    assert _definitions("validate") == VALIDATE_IS_THE_VERB


def test_config_parses_a_mapping_into_its_schema_with_parse_as() -> None:
    from edgekit import config
    from edgekit.validate.gate import Budget

    assert not hasattr(config, "validate")
    assert config.parse_as(Budget, {"max_drop": 2.5}, "budget").max_drop == 2.5
    with pytest.raises(ConfigError, match="budget: unknown key 'max_dorp'") as err:
        config.parse_as(Budget, {"max_dorp": 2.5}, "budget")
    assert "max_drop" in str(err.value.hint) + err.value.message
