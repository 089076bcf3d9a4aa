"""Compile options declared by plugins, and the one typed configuration every entrance builds.

A feature plugin declares its options once, in the spirit of pytest's ``pytest_addoption``
(hook ``aicc_add_options``): the Python name, the vendor flag spellings, the type, choices, range,
help and a check. The CLI's flags, a compile config file (YAML/TOML/JSON) and the keyword
arguments of ``aicc.compile`` are three spellings of the same options, and all three build one
``CompileConfig``, validated the same way before any work; the features then turn it into passes
and backend options (hook ``aicc_configure``, see ``aicc.compiler.CompileRequest``).

Options live at the top level (``num_cores=4``) or in a group (``quantization=dict(per_channel=
True)``, ``quantization: {per_channel: true}`` in a file); their key is ``group.name``. Errors name
an option by ``aicc.errors.option_ref(key)``, which each caller reads in its own vocabulary: the
flag spelling typed on the command line, the key in a file, the keyword in Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

from .configfile import load_config, resolve_relative
from .errors import AiccError, ConfigError, UsageError, did_you_mean
from .options import coerce_value, type_name

__all__ = ["Option", "OptionTable", "CompileConfig", "option_flags"]

_UNSET: Any = object()


@dataclasses.dataclass(frozen=True)
class Option:
    """One compile option. ``type`` is an annotation (``bool``, ``int``, ``str``, ``list[str]``,
    ``Literal[...]``); a ``bool`` option's flags are switches.

    ``separator``: a list option read from one flag value split there (``-load-profile=a,b``);
    ``repeat``: each use of a flag adds an item (``-onnx-define-symbol``). ``path``: a file, which
    a config file gives relative to its own folder. ``check`` normalizes a typed value (or raises
    an AiccError); ``fold_case`` accepts choices in any case and keeps the declared spelling.
    ``cli_only`` options (actions that replace compiling, such as writing a template) have no
    Python or config-file spelling.
    """

    name: str
    type: Any = str
    help: str = ""
    flags: tuple[str, ...] = ()
    group: str | None = None
    default: Any = None
    choices: tuple | None = None
    fold_case: bool = False
    minimum: float | None = None
    maximum: float | None = None
    path: bool = False
    repeat: bool = False
    separator: str | None = None
    optional_value: Any = _UNSET
    metavar: str = "VALUE"
    check: Callable[[Any], Any] | None = None
    cli_only: bool = False
    feature: str = ""

    @property
    def key(self) -> str:
        return f"{self.group}.{self.name}" if self.group else self.name


@dataclasses.dataclass(frozen=True)
class FlagAlias:
    """A flag that sets an option to a constant (``-aic-hw`` sets ``target`` to ``aic100``)."""

    key: str
    flags: tuple[str, ...]
    value: Any
    help: str
    feature: str


class OptionTable:
    """Every compile option the loaded plugins declared, by key; refuses a key or a flag
    spelling declared twice, naming both plugins."""

    def __init__(self) -> None:
        self.options: dict[str, Option] = {}
        self.aliases: list[FlagAlias] = []
        self._flag_owner: dict[str, str] = {}
        self.current_plugin = "<python>"

    def add(self, *options: Option) -> None:
        """Declare ``options`` (from the hook ``aicc_add_options``)."""
        for option in options:
            self._add(option)

    def _add(self, option: Option) -> None:
        if not isinstance(option, Option):
            raise ConfigError(f"expected an aicc.config.Option, got {type(option).__name__}",
                              where=f"plugin '{self.current_plugin}'")
        option = dataclasses.replace(option, feature=self.current_plugin)
        if option.key in self.options:
            first = self.options[option.key].feature
            raise ConfigError(f"option '{option.key}' is declared twice: by plugin '{first}' "
                              f"and by plugin '{self.current_plugin}'",
                              hint="rename one of them or remove one plugin from the list")
        if option.group and option.group in self.options:
            raise ConfigError(f"option group '{option.group}' is also an option",
                              where=f"plugin '{self.current_plugin}'")
        self._claim(option.flags, option.key)
        self.options[option.key] = option

    def alias(self, key: str, flags: Iterable[str], value: Any, help: str) -> None:
        """A flag that sets the option ``key`` to ``value`` (declared by any plugin)."""
        flags = tuple(flags)
        self._claim(flags, key)
        self.aliases.append(FlagAlias(key, flags, value, help, self.current_plugin))

    def _claim(self, flags: tuple[str, ...], key: str) -> None:
        for flag in flags:
            if flag in self._flag_owner:
                raise ConfigError(f"flag {flag} is declared twice: for '{self._flag_owner[flag]}' "
                                  f"and for '{key}' (plugin '{self.current_plugin}')",
                                  hint="give the option another spelling")
            self._flag_owner[flag] = key

    def get(self, key: str) -> Option:
        return self.options[key]

    def groups(self) -> set[str]:
        return {o.group for o in self.options.values() if o.group}


def option_flags(option: Option) -> str:
    """The first flag spelling of an option, or its key when it has none."""
    return option.flags[0] if option.flags else option.key


class CompileConfig:
    """The validated value of every compile option one compile was given, with how the caller
    spelled each (for errors). Read it as ``config.get("quantization.per_channel")``,
    ``config.given("num_cores")`` or ``config.spelling("custom_io")``."""

    def __init__(self, table: OptionTable, values: Mapping[str, Any],
                 spelled: Mapping[str, str], source: str):
        self.table = table
        self._values = dict(values)
        self._spelled = dict(spelled)
        self.source = source

    def get(self, key: str, default: Any = _UNSET) -> Any:
        """The value given for ``key``, else the option's declared default (``default`` for
        options no loaded plugin declares)."""
        if key in self._values:
            return self._values[key]
        if key in self.table.options:
            return self.table.options[key].default
        if default is _UNSET:
            raise KeyError(f"no compile option '{key}' is declared")
        return default

    def given(self, key: str) -> bool:
        """Whether the caller set ``key`` (to anything but False/empty)."""
        return self._values.get(key) not in (None, False, "", [], ())

    def spelling(self, key: str) -> str:
        """How the caller named ``key``: the flag typed, ``FILE: key``, or the key."""
        return self._spelled.get(key, key)

    def given_keys(self) -> list[str]:
        return [k for k in self._values if self.given(k)]

    def vocabulary(self) -> dict[str, str]:
        """key -> spelling for every option (the first flag for options not given, on the CLI)."""
        return dict(self._spelled)

    def as_dict(self) -> dict[str, Any]:
        """The given values, grouped as ``aicc.compile`` takes them (for printing and tests)."""
        out: dict[str, Any] = {}
        for key, value in self._values.items():
            group, _, name = key.rpartition(".")
            (out.setdefault(group, {}) if group else out)[name or key] = value
        return out

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def from_python(cls, table: OptionTable, values: Mapping[str, Any], *,
                    source: str = "aicc.compile", base_file: str | Path | None = None
                    ) -> "CompileConfig":
        """From keyword arguments (``source`` aicc.compile) or a config file's mapping (with
        ``base_file``: relative paths resolve against its folder, errors name the file)."""
        flat = _flatten(table, values, source, base_file)
        typed, spelled = {}, {}
        for key, value in flat.items():
            option = table.options[key]
            spelled[key] = f"{source}: {key}" if base_file is not None else key
            if option.path and isinstance(value, (str, Path)) and base_file is not None:
                value = str(resolve_relative(base_file, str(value)))
            typed[key] = _typed(option, value, where=spelled[key])
        return cls(table, typed, spelled, source)

    @classmethod
    def from_file(cls, table: OptionTable, path: str | Path) -> "CompileConfig":
        """A compile config file: a mapping of options (the keys ``aicc.compile`` takes)."""
        data = load_config(path, what="compile config file")
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a mapping of options, got {type(data).__name__}",
                              where=path, hint="write 'model: model.onnx' style lines")
        return cls.from_python(table, data, source=str(path), base_file=path)

    def merged(self, other: "CompileConfig") -> "CompileConfig":
        """This config with ``other``'s options added; an option both set is refused."""
        both = sorted(set(self._values) & set(other._values))
        if both:
            key = both[0]
            raise UsageError(f"{self.spelling(key)} and {other.spelling(key)} both set "
                             f"'{key}'", hint="give it once")
        return CompileConfig(self.table, {**self._values, **other._values},
                             {**self._spelled, **other._spelled}, self.source)


def _flatten(table: OptionTable, values: Mapping[str, Any], source: str,
             base_file: Any) -> dict[str, Any]:
    """``{group: {name: v}, name: v}`` -> ``{"group.name": v, "name": v}``, unknown keys refused."""
    groups = table.groups()
    known = [k for k, o in table.options.items() if not o.cli_only and not o.group] + list(groups)
    where = source if base_file is not None else None
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if name in groups:
            if not isinstance(value, Mapping):
                raise ConfigError(f"'{name}' takes a mapping of its options, got {value!r}",
                                  where=where, field=name if where else None,
                                  hint=f"e.g. {name}=dict(...)")
            members = [o.name for o in table.options.values() if o.group == name]
            for sub, v in value.items():
                key = f"{name}.{sub}"
                if key not in table.options or table.options[key].cli_only:
                    raise ConfigError(f"unknown option '{key}'", where=where,
                                      hint=did_you_mean(str(sub), members))
                flat[key] = v
            continue
        if name not in table.options or table.options[name].cli_only:
            hint = did_you_mean(str(name), known)
            if name in table.options:
                hint = f"'{name}' is a command-line action: {option_flags(table.options[name])}"
            raise ConfigError(f"unknown option '{name}'", where=where, hint=hint)
        flat[name] = value
    return flat


def _typed(option: Option, value: Any, *, where: str) -> Any:
    """Check a Python/file value against the option's type, choices, range and check."""
    if option.path and isinstance(value, Path):
        value = str(value)
    if option.separator and isinstance(value, str) and _is_list(option.type):
        value = [v.strip() for v in value.split(option.separator) if v.strip()]
    try:
        value = coerce_value(value, option.type, option.key)
    except ConfigError as e:
        if not (e.field or "").startswith(option.key):
            raise           # a file's own error (a FileValue read), naming the file
        raise ConfigError(e.message, where=where) from None
    return _checked(option, value, where)


def typed_from_text(option: Option, text: str, spelling: str) -> Any:
    """A flag's text as the option's value (``-aic-num-cores=4`` -> 4)."""
    tp = option.type
    inner = get_args(tp)[0] if _is_list(tp) and get_args(tp) else str
    if _is_list(tp):
        items = [t.strip() for t in text.split(option.separator)] if option.separator else [text]
        return [_scalar_from_text(inner, item, spelling) for item in items]
    return _scalar_from_text(tp, text, spelling)


def _scalar_from_text(tp: Any, text: str, spelling: str) -> Any:
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{text!r} is not an integer", where=spelling) from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{text!r} is not a number", where=spelling) from None
    if tp is bool:
        low = text.strip().lower()
        if low in ("true", "false", "1", "0", "yes", "no"):
            return low in ("true", "1", "yes")
        raise UsageError(f"{text!r} is not true or false", where=spelling)
    return text


def _checked(option: Option, value: Any, where: str) -> Any:
    if option.choices is not None:
        value = _choice(option, value, where)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if option.minimum is not None and value < option.minimum:
            raise UsageError(f"{value} is below the minimum {option.minimum}", where=where)
        if option.maximum is not None and value > option.maximum:
            raise UsageError(f"{value} is above the maximum {option.maximum}", where=where)
    if option.check is not None and value not in (None, False, "", []):
        try:
            value = option.check(value)
        except AiccError as e:
            if not e.where or e.where == option.key:
                e.where = where
            raise
    return value


def _choice(option: Option, value: Any, where: str) -> Any:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        match = [c for c in option.choices if c == item or (
            option.fold_case and isinstance(item, str) and str(c).lower() == item.lower())]
        if not match:
            raise UsageError(f"unknown value {item!r}", where=where,
                             hint="valid: " + ", ".join(str(c) for c in option.choices))
        out.append(match[0])
    return out if isinstance(value, list) else out[0]


def _is_list(tp: Any) -> bool:
    return tp is list or get_origin(tp) is list


def describe_type(option: Option) -> str:
    """The option's type in words (``aicc compile --help``, README tables)."""
    if option.choices:
        return " | ".join(map(str, option.choices))
    return type_name(option.type)
