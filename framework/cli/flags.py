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
        table = self._lookup()
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
        for f in self.flags:
            spell = ", ".join(n + ("" if f.kind == "switch" else f"={f.metavar}") for n in f.names)
            lines.append(f"  {spell}\n      {f.help}")
        if self.not_yet:
            lines.append("\nRecognised vendor flags not supported yet (refused):")
            lines.append("  " + " ".join(sorted(self.not_yet)))
        return "\n".join(lines)
