"""Loading YAML files into pydantic schemas (device profiles, recipes) with errors that name the
offending key, the file, and the closest valid key when it looks like a typo."""

from __future__ import annotations

import difflib
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from edgekit.errors import ConfigError, shown

M = TypeVar("M", bound=BaseModel)


def _unwrap(annotation: Any) -> Any:
    """Optional[X] / X | Y -> the first member that is a model or a container."""
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        for member in members:
            if (isinstance(member, type) and issubclass(member, BaseModel)) or get_origin(member):
                return member
        return members[0] if members else None
    return annotation


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Valid keys of the (nested) schema at `loc`, for 'did you mean'. Walks models by field
    name, dicts by key (to their value type) and lists by index (to their item type)."""
    current: Any = model
    for part in loc[:-1]:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) in (list, tuple, set):
            current = get_args(current)[0]
        else:
            return []
    current = _unwrap(current)
    return list(current.model_fields) if isinstance(current, type) and issubclass(
        current, BaseModel) else []


def explain(error: ValidationError, schema: type[BaseModel], where: str) -> ConfigError:
    first = error.errors()[0]
    loc = tuple(first["loc"])
    dotted = ".".join(str(p)[:100] for p in loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        valid = _fields_at(schema, loc)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys here: {', '.join(valid)}"
        return ConfigError(f"{where}: unknown key {shown(dotted)}", hint=hint)
    given = first.get("input")
    got = f" (got {shown(given, 60)})" if first["type"] != "missing" and isinstance(
        given, str | int | float | bool) else ""
    return ConfigError(f"{where}: {dotted}: {first['msg']}{got}",
                       hint=f"fix that value; {len(error.errors())} problem(s) in all")


# The most a YAML document may hold once its aliases are expanded: nodes, and characters of its
# scalars (keys and values). A recipe or a device profile has a few hundred nodes and a few
# kilobytes; an alias bomb ("billion laughs") has billions of nodes, and one long string aliased
# thousands of times passes any node count with gigabytes of text. The file itself may not be
# larger than the character bound either.
MAX_YAML_NODES = 100_000
MAX_YAML_CHARS = 4_000_000


class BoundedSafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a document whose aliases expand beyond MAX_YAML_NODES nodes
    or MAX_YAML_CHARS characters of scalars (or that refer to themselves), before anything is
    constructed from it."""

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node, {}, set())
        return node


def _expanded_size(node: yaml.Node, memo: dict[int, tuple[int, int]],
                   path: set[int]) -> tuple[int, int]:
    """(nodes, scalar characters) of `node` with every alias expanded, counted once per node
    object (memo), so the walk costs the document's size on disk, not its expanded size."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in path:
        raise yaml.YAMLError("an alias refers to the node that contains it (a recursive alias)")
    path.add(key)
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    nodes, chars = 1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0
    for child in children:
        n, c = _expanded_size(child, memo, path)
        nodes, chars = nodes + n, chars + c
    path.discard(key)
    if nodes > MAX_YAML_NODES:
        raise yaml.YAMLError(f"its aliases expand to more than {MAX_YAML_NODES:,} nodes "
                             "(an alias bomb?)")
    if chars > MAX_YAML_CHARS:
        raise yaml.YAMLError(f"its aliases expand to more than {MAX_YAML_CHARS:,} characters of "
                             "text (an alias bomb?)")
    memo[key] = (nodes, chars)
    return nodes, chars


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file with BoundedSafeLoader; every failure is a ConfigError (exit 2)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist", hint="check the path")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_CHARS:
            raise ConfigError(f"{path} is {size:,} bytes, over the {MAX_YAML_CHARS:,} a YAML "
                              "file edgekit reads may hold", hint="is it the file you meant?")
        return yaml.load(path.read_text(), Loader=BoundedSafeLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}",
                          hint="fix the file; anchors and aliases must stay small") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply", hint="flatten the file") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", hint="is it a text file?") from None
    except ValueError as exc:  # a scalar the loader cannot convert (an int of 5,000 digits)
        raise ConfigError(f"{path} holds a value edgekit cannot read: {str(exc)[:120]}",
                          hint="fix the file") from None


def load_yaml(schema: type[M], path: str | Path) -> M:
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    return parse_as(schema, data, str(path))


def parse_as(schema: type[M], data: dict, where: str) -> M:
    """`data` as a `schema` instance, or a ConfigError naming `where`, the key and the closest
    valid one (extra="forbid": a typo is an error, never ignored)."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, schema, where) from None
    except ConfigError as exc:  # a nested schema checked by a validator (runner options)
        raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from None


def group(name: str, value: Any, schema: type[M], example: str = "...") -> M:
    """A typed group of arguments (`schema`) from an instance, a mapping of its fields (checked:
    a typo names the key and the closest valid one) or None (its defaults); anything else is a
    ConfigError naming `name` and what it accepts."""
    from collections.abc import Mapping

    if value is None:
        return schema()
    if isinstance(value, schema):
        return value
    if isinstance(value, Mapping):
        return parse_as(schema, dict(value), name)
    raise ConfigError(f"{name}={shown(value)} is not a {schema.__name__}",
                      hint=f"pass {name}={schema.__name__}({example}) or a mapping of its keys: "
                           f"{', '.join(schema.model_fields)}")
