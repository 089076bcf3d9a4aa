"""A parser for the vendor's flag style (``-m=model.onnx``, ``-compile-only``) and GNU long options.

Each flag is declared once with all its spellings. ``-name=value``, ``-name value``,
``--name=value`` and ``--name value`` all work for flags that take a value. Unknown flags are
refused with the nearest valid spelling; vendor flags whose feature is not built yet are refused
naming that feature, never accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import NotYetSupportedError, UsageError, did_you_mean

__all__ = ["Flag", "FlagParser"]


@dataclass
class Flag:
    """One flag: its spellings, destination, kind (``value``, ``switch``, ``repeat``) and help."""

    names: tuple[str, ...]
    dest: str
    kind: str = "value"
    help: str = ""
    convert: Callable[[str], Any] | None = None
    metavar: str = "VALUE"
    optional_value: Any = None  # for switches that may also take =value (--verify-each=numeric)
    section: str = ""           # the help's heading (the plugin that declared the option)


def int_value(flag: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{text!r} is not an integer", where=flag) from None
    return convert


def float_value(flag: str) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{text!r} is not a number", where=flag) from None
    return convert


@dataclass
class FlagParser:
    command: str
    flags: list[Flag]
    positional: str | None = None
    not_yet: dict[str, str] = field(default_factory=dict)

    def _lookup(self) -> dict[str, Flag]:
        return {n: f for f in self.flags for n in f.names}

    def parse(self, argv: Sequence[str]) -> dict[str, Any]:
        """Values by dest; ``self.spelled`` records the spelling typed for each dest given."""
        table = self._lookup()
        self.spelled: dict[str, str] = {}
        values: dict[str, Any] = {f.dest: [] if f.kind == "repeat" else None for f in self.flags}
        rest: list[str] = []
        args = list(argv)
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if not arg.startswith("-") or arg == "-":
                rest.append(arg)
                continue
            name, eq, inline = arg.partition("=")
            if name in self.not_yet:
                raise NotYetSupportedError(f"flag {name} is not supported yet: "
                                           f"{self.not_yet[name]}", where=f"aicc {self.command}",
                                           hint="it is refused rather than ignored")
            flag = table.get(name)
            if flag is None:
                spellings = list(table) + list(self.not_yet)
                raise UsageError(f"unknown flag {name}", where=f"aicc {self.command}",
                                 hint=did_you_mean(name, spellings))
            self.spelled.setdefault(flag.dest, name)
            if flag.kind == "switch":
                if eq:
                    if flag.optional_value is None:
                        raise UsageError(f"flag {name} takes no value", where=f"aicc {self.command}")
                    values[flag.dest] = inline
                else:
                    values[flag.dest] = True
                continue
            if not eq:
                if i >= len(args):
                    raise UsageError(f"flag {name} needs a value ({flag.metavar})",
                                     where=f"aicc {self.command}")
                inline = args[i]
                i += 1
            value = flag.convert(inline) if flag.convert else inline
            if flag.kind == "repeat":
                values[flag.dest].append(value)
            else:
                values[flag.dest] = value
        if rest and not self.positional:
            raise UsageError(f"unexpected argument {rest[0]!r}", where=f"aicc {self.command}")
        if self.positional:
            values[self.positional] = rest
        return values

    def help_text(self) -> str:
        lines = [f"usage: aicc {self.command} [flags]", ""]
        section = ""
        for f in self.flags:
            if f.section != section:
                section = f.section
                lines += ([""] if lines[-1] else []) + [f"{section}:"]
            spell = ", ".join(n + ("" if f.kind == "switch" else f"={f.metavar}") for n in f.names)
            lines.append(f"  {spell}\n      {f.help}")
        if self.not_yet:
            lines.append("\nRecognised vendor flags not supported yet (refused):")
            lines.append("  " + " ".join(sorted(self.not_yet)))
        return "\n".join(lines)


# -- compile options as flags ---------------------------------------------------------------------

def option_flags(table: Any) -> list[Flag]:
    """The flags of every compile option with flag spellings (dest: the option key), and of every
    alias (dest ``=KEY=INDEX``)."""
    flags = []
    for key, option in table.options.items():
        if not option.flags:
            continue
        kind = "switch" if option.type is bool or option.optional_value is not _unset() \
            else "repeat" if option.repeat else "value"
        optional = None if option.optional_value is _unset() else option.optional_value
        flags.append(Flag(option.flags, key, kind, help=f"{option.help} [{key}]",
                          metavar=option.metavar, optional_value=optional,
                          section=f"options of {option.feature}"))
    for i, alias in enumerate(table.aliases):
        flags.append(Flag(alias.flags, f"={alias.key}={i}", "switch",
                          help=f"{alias.help} [{alias.key}={alias.value!r}]",
                          section=f"options of {alias.feature}"))
    return flags


def _unset() -> Any:
    from ..config import _UNSET
    return _UNSET


def config_from_args(table: Any, args: dict[str, Any], spelled: dict[str, str],
                     source: str = "aicc compile") -> Any:
    """The CompileConfig of parsed flags: each option's text converted to its type and checked,
    errors naming the flag as typed."""
    from ..config import CompileConfig, _typed, typed_from_text

    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    for dest, raw in args.items():
        if raw in (None, []) or dest not in spelled:
            continue
        if not dest.startswith("=") and dest not in table.options:
            continue            # the command's own flags (--config, --plugins, --help)
        if dest.startswith("="):
            _, key, index = dest.split("=")
            alias = table.aliases[int(index)]
            if key in values and values[key] != alias.value:
                raise UsageError(f"{spelled[dest]} sets '{key}' to {alias.value!r} but "
                                 f"{names[key]} says {values[key]!r}", where="aicc compile",
                                 hint="drop one of them")
            values[key], names[key] = alias.value, spelled[dest]
            continue
        option = table.options[dest]
        where = spelled[dest]
        if raw is True and option.type is not bool:
            value = option.optional_value
        elif option.repeat:
            value = [v for item in raw for v in _as_list(typed_from_text(option, item, where))]
        elif isinstance(raw, str):
            value = typed_from_text(option, raw, where)
        else:
            value = raw
        if dest in values and values[dest] != value:
            raise UsageError(f"{where} says {value!r} but {names[dest]} set {values[dest]!r}",
                             where="aicc compile", hint="drop one of them")
        values[dest], names[dest] = _typed(option, value, where=where), where
    vocabulary = {key: o.flags[0] for key, o in table.options.items() if o.flags}
    vocabulary.update(names)
    return CompileConfig(table, values, vocabulary, source)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
