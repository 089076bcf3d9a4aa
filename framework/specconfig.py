"""Network specialization config (``-network-specialization-config``): a JSON file in, a checked
list of specializations (name, symbol values, per-specialization options) out.

Two entry forms are accepted inside ``{"specializations": [...]}``:

- the vendor's classic form, a map of symbol values plus an optional ``compile_opts`` string::

      {"batch": "1", "height": "56", "width": "56", "compile_opts": "-ols=2"}

- the named form, ``{"name": "decode", "symbols": {...}, "compile_opts": "-ols=1"}``.

Symbol values are positive integers, written as JSON integers or as decimal strings (the vendor
writes strings). ``compile_opts`` accepts ``-ols=N`` only: the vendor allows no other option per
specialization. Errors name the file and the entry (``spec.json: entry 2 ('decode'): ...``).
Whether every symbol exists in the model, and whether each entry binds all of them, is checked by
the ``specialize`` pass, which knows the model.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ir
from .configfile import load_json
from .errors import ConfigError, did_you_mean
from .options import FileValue

__all__ = ["SpecEntry", "SpecializationFile", "parse_specialization_config", "parse_compile_opts",
           "default_spec_name",
           "MAX_SYMBOL_VALUE", "MAX_SPECIALIZATIONS"]

#: Largest symbol value accepted (dimensions must fit in int32 on the device side).
MAX_SYMBOL_VALUE = 2**31 - 1
#: Most specializations one config may declare (each one is a full compile of the graph).
MAX_SPECIALIZATIONS = 1024
#: Options a specialization may set, as ``compile_opts`` flags -> Program.spec_options key.
SPEC_FLAGS = {"-ols": "ols"}

_TOP_KEYS = ("specializations",)
_NAMED_KEYS = ("name", "symbols", "compile_opts")
_POSITIVE = re.compile(r"[1-9][0-9]*")
_RESERVED = ("manifest.json", "weights.bin")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass
class SpecEntry:
    """One specialization: its name, symbol values and options (e.g. ``{"ols": 2}``)."""

    name: str
    symbols: dict[str, int]
    options: dict[str, Any] = field(default_factory=dict)
    index: int = 0  # 1-based position in the config file
    named: bool = False  # given by its "name" (named form)

    def label(self) -> str:
        """``entry 2`` or ``entry 2 ('decode')``: how errors refer to this entry."""
        return f"entry {self.index}" + (f" ({self.name!r})" if self.named else "")


def default_spec_name(index: int, symbols: dict[str, int]) -> str:
    """``spec0-batch1-height56-width56``: a stable name from the 0-based position and values."""
    parts = [f"spec{index}"] + [f"{ir.safe_file_name(k)}{v}" for k, v in symbols.items()]
    return "-".join(parts)


def _symbol_value(value: Any, *, where: Path, label: str, symbol: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"symbol '{symbol}' has value {value!r}; expected a positive integer "
                          "(a JSON integer or a string of digits)", where=where, field=label)
    text = str(value)
    if not _POSITIVE.fullmatch(text) or int(text) > MAX_SYMBOL_VALUE:
        raise ConfigError(f"symbol '{symbol}' has value {value!r}; expected a positive integer "
                          f"up to {MAX_SYMBOL_VALUE}", where=where, field=label)
    return int(text)


def parse_compile_opts(text: Any, *, where: str | Path, label: str) -> dict[str, Any]:
    """``"-ols=2"`` -> ``{"ols": 2}``; only the flags in ``SPEC_FLAGS`` are accepted."""
    if not isinstance(text, str):
        raise ConfigError(f"compile_opts is {type(text).__name__}, expected a string such as "
                          "\"-ols=2\"", where=where, field=label)
    try:
        tokens = shlex.split(text)
    except ValueError as e:
        raise ConfigError(f"cannot read compile_opts {text!r} ({e})", where=where,
                          field=label) from None
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        flag, eq, value = tokens[i].partition("=")
        i += 1
        if flag not in SPEC_FLAGS:
            raise ConfigError(f"compile_opts: {tokens[i - 1]!r} cannot be set per "
                              "specialization", where=where, field=label,
                              hint=f"only {', '.join(f + '=N' for f in SPEC_FLAGS)} can; give "
                                   "other flags on the command line")
        if not eq:
            if i >= len(tokens):
                raise ConfigError(f"compile_opts: {flag} needs a value", where=where, field=label)
            value = tokens[i]
            i += 1
        key = SPEC_FLAGS[flag]
        if key in out:
            raise ConfigError(f"compile_opts: {flag} is given twice", where=where, field=label)
        if not _POSITIVE.fullmatch(value) or int(value) > 1024:
            raise ConfigError(f"compile_opts: {flag}={value} is not an integer in 1..1024",
                              where=where, field=label)
        out[key] = int(value)
    return out


def _entry(raw: Any, index: int, path: Path) -> SpecEntry:
    label = f"entry {index}"
    if not isinstance(raw, dict):
        raise ConfigError(f"is {type(raw).__name__}, expected an object of symbol values",
                          where=path, field=label)
    if "symbols" in raw or "name" in raw:
        extra = [k for k in raw if k not in _NAMED_KEYS]
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"name {name!r} is not a valid specialization name", where=path,
                              field=label, hint="1-64 letters, digits, '_', '.', '-', starting "
                                                "with a letter or digit")
        label = f"entry {index} ({name!r})"
        if extra:
            raise ConfigError(f"unknown key '{extra[0]}'", where=path, field=label,
                              hint=did_you_mean(extra[0], _NAMED_KEYS))
        symbols_raw = raw.get("symbols")
        if not isinstance(symbols_raw, dict):
            raise ConfigError("'symbols' must be an object of symbol values", where=path,
                              field=label)
        named = True
    else:
        symbols_raw = {k: v for k, v in raw.items() if k != "compile_opts"}
        name, named = "", False
    if not symbols_raw:
        raise ConfigError("binds no symbol", where=path, field=label,
                          hint='write e.g. {"batch": "1"}')
    symbols = {}
    for key, value in symbols_raw.items():
        if not key:
            raise ConfigError("a symbol name is empty", where=path, field=label)
        symbols[key] = _symbol_value(value, where=path, label=label, symbol=key)
    options = (parse_compile_opts(raw["compile_opts"], where=path, label=label)
               if "compile_opts" in raw else {})
    return SpecEntry(name=name or default_spec_name(index - 1, symbols), symbols=symbols,
                     options=options, index=index, named=named)


class SpecializationFile(FileValue):
    """A network specialization config, read once: ``value`` is its list of SpecEntry."""

    what = "network specialization config"

    @classmethod
    def parse(cls, path: str | Path) -> list[SpecEntry]:
        return parse_specialization_config(path)


def parse_specialization_config(path: str | Path) -> list[SpecEntry]:
    """Read and check a specialization config; entries keep the file's order."""
    path = Path(path)
    data = load_json(path, what="network specialization config")
    if not isinstance(data, dict):
        raise ConfigError(f"is a JSON {type(data).__name__}, expected an object with "
                          "\"specializations\"", where=path,
                          hint='write {"specializations": [{"batch": "1"}, ...]}')
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"unknown key '{key}'", where=path,
                              hint=did_you_mean(key, _TOP_KEYS))
    if "specializations" not in data:
        raise ConfigError("has no \"specializations\" list", where=path)
    raw = data["specializations"]
    if not isinstance(raw, list):
        raise ConfigError(f"\"specializations\" is a {type(raw).__name__}, expected a list",
                          where=path)
    if not raw:
        raise ConfigError("\"specializations\" is empty", where=path,
                          hint="list at least one specialization")
    if len(raw) > MAX_SPECIALIZATIONS:
        raise ConfigError(f"declares {len(raw)} specializations, more than "
                          f"{MAX_SPECIALIZATIONS}", where=path)
    entries = [_entry(item, i, path) for i, item in enumerate(raw, start=1)]
    by_name: dict[str, SpecEntry] = {}
    by_folder: dict[str, SpecEntry] = {}
    by_values: dict[tuple, SpecEntry] = {}
    for e in entries:
        if e.name in by_name:
            raise ConfigError(f"name '{e.name}' is also used by {by_name[e.name].label()}",
                              where=path, field=e.label(), hint="names must be unique")
        folder = ir.safe_file_name(e.name).lower()
        if folder in _RESERVED:
            raise ConfigError(f"name '{e.name}' is reserved for a container file", where=path,
                              field=e.label(), hint="choose another name")
        if folder in by_folder:
            raise ConfigError(f"name '{e.name}' gives the same container folder as "
                              f"{by_folder[folder].label()}", where=path, field=e.label(),
                              hint="names must differ in more than case")
        key = tuple(sorted(e.symbols.items()))
        if key in by_values:
            raise ConfigError(f"repeats the symbol values of {by_values[key].label()}",
                              where=path, field=e.label(),
                              hint="two specializations with the same shapes cannot be told "
                                   "apart at run time; remove one")
        by_name[e.name] = by_folder[folder] = by_values[key] = e
    return entries
