"""Hardened readers for the YAML, JSON and TOML files users hand to aicc.

Every reader refuses what bites users of the usual loaders (see BAD_INPUTS.md 15-22): Python tags
(safe loading only), aliases (no alias bombs), duplicate keys (naming both lines), YAML 1.1 implicit
typing (``no`` stays a string, ``012`` is not octal, ``1e-3`` is a float), several documents in one
file, empty files, bytes that are not UTF-8, NaN/Infinity in JSON, files over a size cap, and
nesting too deep for the parsers (a RecursionError becomes a one-line error).
A UTF-8 byte-order mark is tolerated and dropped.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["read_text", "load_yaml", "load_json", "load_toml", "load_config", "resolve_relative",
           "MAX_CONFIG_BYTES"]

MAX_CONFIG_BYTES = 16 * 1024 * 1024


def read_text(path: str | Path, *, what: str = "file", max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """Read a regular, bounded, UTF-8 text file; the BOM, if any, is dropped."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", where=path) from None
    except OSError as e:
        raise ConfigError(f"cannot read {what}: {e.strerror}", where=path) from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} is not a regular file", where=path)
    if st.st_size > max_bytes:
        raise ConfigError(f"{what} is {st.st_size} bytes, over the {max_bytes}-byte limit",
                          where=path)
    data = path.read_bytes()[: max_bytes + 1]
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"byte {e.start} is not UTF-8", where=path, field=f"line {line}",
                          hint="save the file as UTF-8") from None
    if not text.strip():
        raise ConfigError(f"{what} is empty", where=path)
    return text


# libyaml's parser when PyYAML was built with it (about 10x faster on large files such as
# calibration profiles); the resolvers and constructors below are the same Python code either way.
_SafeBase = getattr(yaml, "CSafeLoader", None) if yaml.__with_libyaml__ else None
_SafeBase = _SafeBase or yaml.SafeLoader


class _StrictLoader(_SafeBase):  # type: ignore[misc, valid-type]
    """SafeLoader with YAML-1.2-like scalars, no aliases and duplicate-key detection."""


# Replace YAML 1.1's implicit resolvers with a small, predictable set.
_StrictLoader.yaml_implicit_resolvers = {}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"))
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?[0-9]+[eE][-+]?[0-9]+"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    value = loader.construct_scalar(node)
    return int(value, 16) if value.lower().startswith("0x") else int(value)


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    value = str(loader.construct_scalar(node)).lower()
    if value.endswith(".inf"):
        return float("-inf") if value.startswith("-") else float("inf")
    if value.endswith(".nan"):
        return float("nan")
    return float(value)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} on lines {seen[key]} and {line}",
                key_node.start_mark)
        seen[key] = line
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _refuse_aliases(path: Path, text: str) -> None:
    for event in yaml.parse(text, Loader=_StrictLoader):
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError("YAML aliases (*name) are not accepted",
                              where=path, field=f"line {event.start_mark.line + 1}",
                              hint="write the value out in full")


def load_yaml(path: str | Path, *, what: str = "YAML file") -> Any:
    """Parse one YAML document strictly; errors name the file and the line."""
    path = Path(path)
    text = read_text(path, what=what)
    try:
        _refuse_aliases(path, text)
        docs = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f"line {mark.line + 1}" if mark else None
        raise ConfigError(f"{e.problem or e.context}", where=path, field=line) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", where=path) from None
    except RecursionError:
        raise _too_deep(path) from None
    if len(docs) != 1:
        raise ConfigError(f"holds {len(docs)} YAML documents, expected one", where=path,
                          hint="remove the '---' separators")
    return docs[0]


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def load_json(path: str | Path, *, what: str = "JSON file") -> Any:
    """Parse JSON strictly: no duplicate keys, no NaN/Infinity; errors name file and line."""
    path = Path(path)
    text = read_text(path, what=what)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                lines = [_line_of(text, m.start())
                         for m in re.finditer(re.escape(json.dumps(key)) + r"\s*:", text)]
                where_lines = " and ".join(str(n) for n in lines[:2]) if lines else "?"
                raise ConfigError(f"duplicate key {key!r} (lines {where_lines})", where=path)
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise ConfigError(f"{name} is not a number JSON allows", where=path,
                          hint="use a finite number")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as e:
        raise ConfigError(f"not valid JSON: {e.msg}", where=path,
                          field=f"line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise _too_deep(path) from None


def _too_deep(path: Path) -> ConfigError:
    return ConfigError("nested too deeply to read", where=path,
                       hint="configuration files nest a few levels; is this the right file?")


def load_toml(path: str | Path, *, what: str = "TOML file") -> dict[str, Any]:
    """Parse TOML (tomllib already refuses duplicate keys); errors name file and line."""
    path = Path(path)
    text = read_text(path, what=what)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", where=path) from None
    except RecursionError:
        raise _too_deep(path) from None


def load_config(path: str | Path, *, what: str = "config file") -> Any:
    """Load YAML, JSON or TOML chosen by the file's suffix (YAML for anything else)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return load_json(path, what=what)
    if suffix == ".toml":
        return load_toml(path, what=what)
    return load_yaml(path, what=what)


def resolve_relative(base_file: str | Path, value: str) -> Path:
    """A path written inside a config file, resolved against that file's folder."""
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else Path(base_file).resolve().parent / p
