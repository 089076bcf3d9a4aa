"""Typed, strict options for passes, backends and instruments, built from dataclasses.

An options class is a dataclass whose fields each have a default and a one-line description
(``option(default, "what it does")``). Values arrive from Python, YAML, TOML or command-line text;
``build_options`` checks names (unknown keys are errors with the nearest valid name), types and
ranges before any work starts, so a typo in a config file fails naming the owner and the field.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin

from .errors import ConfigError, did_you_mean

__all__ = ["option", "NoOptions", "FileValue", "files_read_once", "coerce_value", "type_name",
           "build_options", "describe_options", "options_to_dict",
           "format_value", "parse_text_value", "split_outside_quotes"]


def option(default: Any, description: str, *, minimum: float | None = None,
           maximum: float | None = None, choices: tuple | None = None,
           path: bool = False) -> Any:
    """Declare an option field: its default, a one-line description, and optional range/choices.
    ``path``: the value is a file path, which a pipeline file's entry gives relative to the
    pipeline file's folder."""
    meta = {"description": description, "minimum": minimum, "maximum": maximum, "choices": choices,
            "path": path}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """For passes and backends that take no options."""


class FileValue:
    """An option whose value is a file, read and checked once: ``path`` (what pipelines print
    and manifests record) and ``value`` (the parsed content the pass receives).

    A subclass says what the file is (``what``) and how to read it (``parse``). Options typed
    with it accept a path (read now, so a bad file fails before any work) or an instance (already
    read, e.g. by the feature that checked it): each input file is parsed once per compile.
    """

    what: ClassVar[str] = "file"

    def __init__(self, path: str | Path, value: Any):
        self.path = str(path)
        self.value = value

    @classmethod
    def read(cls, path: str | Path) -> "FileValue":
        return cls(path, cls.parse(path))

    @classmethod
    def parse(cls, path: str | Path) -> Any:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.path == self.path  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.path))

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


#: While ``files_read_once`` is active: the FileValue read for each (type, path text).
_READ: contextvars.ContextVar[dict | None] = contextvars.ContextVar("aicc_files_read",
                                                                   default=None)


@contextlib.contextmanager
def files_read_once() -> Iterator[None]:
    """Within the block, options naming the same file by the same path text share one read
    (e.g. the passes of a pipeline text that each name the encodings file). Nested blocks
    share the outermost one's reads."""
    if _READ.get() is not None:
        yield
        return
    token = _READ.set({})
    try:
        yield
    finally:
        _READ.reset(token)


def _read_file_value(tp: type, value: str | Path) -> FileValue:
    reads = _READ.get()
    if reads is None:
        return tp.read(value)
    key = (tp, str(value))
    if key not in reads:
        reads[key] = tp.read(value)
    return reads[key]


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        return f"list of {type_name(inner)}"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def split_outside_quotes(text: str, sep: str | None) -> list[str]:
    """Split ``text`` at ``sep`` (None: runs of whitespace) outside double quotes and brackets."""
    items, current, depth, quoted, escaped = [], "", 0, False, False
    for ch in text:
        if quoted:
            current += ch
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        at_sep = (ch.isspace() if sep is None else ch == sep) and depth == 0
        if at_sep:
            if current or sep is not None:
                items.append(current)
            current = ""
        else:
            current += ch
    if current or (sep is not None and items):
        items.append(current)
    return items


def parse_text_value(text: str) -> Any:
    """Turn command-line option text into a value: true/false, ints, floats, [a,b] lists,
    "double-quoted" strings (JSON escapes), else the text as a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    stripped = text.strip()
    if len(stripped) >= 2 and stripped.startswith('"') and stripped.endswith('"'):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as e:
            raise ConfigError(f"cannot read the quoted string {stripped}: {e.msg}") from None
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_text_value(p.strip()) for p in split_outside_quotes(inner, ",")] \
            if inner else []
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def coerce_value(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert only lossless int->float (and a
    path to the ``FileValue`` it names, read now). Errors name ``path`` as their field."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"got {value!r}, expected one of {type_name(tp)}", field=path)
    if origin in (typing.Union, types.UnionType):
        alts = get_args(tp)
        if value is None and type(None) in alts:
            return None
        files = [a for a in alts if isinstance(a, type) and issubclass(a, FileValue)]
        if files and isinstance(value, (str, Path)):
            return coerce_value(value, files[0], path)     # a bad file's own error, not "expected"
        errors = []
        for alt in alts:
            try:
                return coerce_value(value, alt, path)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"got {value!r} ({type(value).__name__}), expected {type_name(tp)}",
                          field=path)
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"got {value!r}, expected none", field=path)
    if isinstance(tp, type) and issubclass(tp, FileValue):
        if isinstance(value, tp):
            return value
        if isinstance(value, (str, Path)) and str(value):
            return _read_file_value(tp, value)
        raise ConfigError(f"got {value!r}, expected the path of a {tp.what}", field=path)
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"got {value!r} ({type(value).__name__}), expected {type_name(tp)}",
                              field=path)
        (inner,) = get_args(tp) or (Any,)
        return [coerce_value(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if math.isnan(value):
                raise ConfigError("got NaN, expected a number", field=path)
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"got {value!r} ({type(value).__name__}), expected {type_name(tp)}",
                      field=path)


def build_options(cls: type, values: Mapping[str, Any] | None, *, owner: str) -> Any:
    """Validate ``values`` against the options dataclass ``cls`` and return an instance.

    ``owner`` names what the options belong to (``pass 'cle'``) in every error.
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        name = key.replace("-", "_") if isinstance(key, str) else key
        if name not in fields:
            raise ConfigError(f"unknown option '{key}'", field=owner,
                              hint=did_you_mean(str(key), fields) if fields
                              else f"{owner} takes no options")
        f = fields[name]
        path = f"{owner}: option '{name}'"
        v = coerce_value(value, hints[name], path)
        meta = f.metadata
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if meta.get("minimum") is not None and v < meta["minimum"]:
                raise ConfigError(f"{v} is below the minimum {meta['minimum']}", field=path)
            if meta.get("maximum") is not None and v > meta["maximum"]:
                raise ConfigError(f"{v} is above the maximum {meta['maximum']}", field=path)
        if meta.get("choices") is not None:
            items = v if isinstance(v, list) else [v]
            for item in items:
                if item not in meta["choices"]:
                    raise ConfigError(f"got {item!r}, expected one of {list(meta['choices'])}",
                                      field=path)
        kwargs[name] = v
    return cls(**kwargs)


def options_to_dict(opts: Any, *, only_changed: bool = False) -> dict[str, Any]:
    """The options as a plain dict (for manifests, printing, round-trips)."""
    out = {}
    for f in dataclasses.fields(opts):
        value = getattr(opts, f.name)
        if only_changed:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if value == default:
                continue
        out[f.name] = value
    return out


def describe_options(cls: type) -> list[dict[str, Any]]:
    """Name, type, default and description of every option (for listings and schemas)."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append({"name": f.name, "type": type_name(hints[f.name]), "default": default,
                     "description": f.metadata.get("description", "")})
    return rows


def format_value(value: Any) -> str:
    """Render a value in the text form ``parse_text_value`` reads back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, FileValue):
        return format_value(value.path)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, str) and (not value or any(c in _SPECIAL or c.isspace() for c in value)
                                   or parse_text_value(value) != value):
        return json.dumps(value)     # read back by parse_text_value as the same string
    return str(value)


#: characters that make a string option need quotes in the pipeline text
_SPECIAL = frozenset(',[]{}"')
