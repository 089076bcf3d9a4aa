"""``aicc passes`` / ``aicc backends`` / ``aicc options``: what is registered, by which plugin,
with which options; ``aicc options`` lists the compile options with their Python name (keyword of
``aicc.compile``, key of a compile config file) next to their flags."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import describe_type
from ..options import describe_options
from ..plugins import load_registries
from .flags import Flag, FlagParser

__all__ = ["run_list"]


def run_list(command: str, argv: Sequence[str]) -> int:
    parser = FlagParser(command, [
        Flag(("--plugins",), "plugins", "repeat", "a TOML file of extra plugin modules",
             metavar="FILE"),
        Flag(("-h", "--help"), "help", "switch", "show this help"),
    ])
    args = parser.parse(argv)
    if args["help"]:
        print(parser.help_text())
        return 0
    regs = load_registries(args["plugins"])
    if command == "options":
        _print_options(regs.options)
        return 0
    registry = regs.passes if command == "passes" else regs.backends
    for entry in registry.entries():
        cls = entry.cls
        if command == "passes":
            print(f"{entry.name}  [plugin {entry.plugin}; scope {cls.scope}; "
                  f"semantics {cls.semantics}]")
        else:
            print(f"{entry.name}  [plugin {entry.plugin}]")
        if cls.description:
            print(f"    {cls.description}")
        if command == "backends":
            print(f"    fp16 programs: {cls.fp16_compute}")
        elif getattr(cls, "lowers", None):
            print(f"    lowers: {', '.join(sorted(cls.lowers))} (into ops backends lacking them run)")
        for row in describe_options(cls.Options):
            print(f"    --{row['name']}: {row['type']} = {row['default']!r}  {row['description']}")
    return 0


def _print_options(table: Any) -> None:
    """One line per compile option: Python key, flags, type, plugin; then its help."""
    aliases = {}
    for alias in table.aliases:
        aliases.setdefault(alias.key, []).append(f"{'/'.join(alias.flags)} (= {alias.value!r})")
    for key, option in table.options.items():
        spell = ", ".join(option.flags) or "(Python and config files only)"
        if option.cli_only:
            spell += "  (command line only)"
        print(f"{key}  [{describe_type(option)}; plugin {option.feature}]  {spell}")
        for text in aliases.get(key, []):
            print(f"    also {text}")
        print(f"    {option.help}")
