"""``aicc ops [--backend NAME]`` and ``aicc compile -operators-supported=onnx``: every operator
each backend runs, with its opsets and element types, and the passes that lower operators a
backend lacks (see ``aicc.opsupport``, which derives the listing from the backends' own checks).

``-operators-supported`` is the vendor's way to dump supported operators; aicc reads ONNX only, so
``onnx`` is the one framework it accepts. It lists the backend the other flags choose (``-aic-hw``:
aic100, ``--backend``, else cpu) and writes nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import UsageError
from ..plugins import load_registries
from .flags import Flag, FlagParser

__all__ = ["run_ops", "FLAGS", "contribute", "standalone"]

#: feature flags of ``aicc compile`` (see compile_cmd.FEATURE_MODULES)
FLAGS = [
    Flag(("-operators-supported", "--operators-supported"), "operators_supported",
         help="list the operators the chosen backend runs (opsets, element types) and exit; "
              "FRAMEWORK must be onnx", metavar="FRAMEWORK"),
]


#: what the listing reads; any other flag given with it is refused
_LISTING_ARGS = frozenset({"operators_supported", "aic_hw", "backend", "plugins", "debug"})


def contribute(args: dict[str, Any], req: Any) -> None:
    """Nothing to add to a compile: the flag replaces compiling (see ``standalone``)."""


def standalone(args: dict[str, Any]) -> int | None:
    framework = args.get("operators_supported")
    if framework is None:
        return None
    if framework.lower() != "onnx":
        raise UsageError(f"unknown framework {framework!r}", where="-operators-supported",
                         hint="aicc compiles ONNX models: use -operators-supported=onnx")
    ignored = sorted(k for k, v in args.items()
                     if k not in _LISTING_ARGS and v not in (None, False, "", [], ()))
    if ignored:  # a flag is never ignored: the listing compiles nothing
        raise UsageError(f"-operators-supported lists operators and compiles nothing, so "
                         f"'{ignored[0]}' would do nothing", where="-operators-supported",
                         hint="run the listing alone (with -aic-hw or --backend), then compile")
    backend = "aic100" if args.get("aic_hw") else (args.get("backend") or "cpu")
    _print(backend, args.get("plugins") or [])
    return 0


def run_ops(argv: Sequence[str]) -> int:
    parser = FlagParser("ops", [
        Flag(("--backend",), "backend", help="list this backend only (default: every backend)",
             metavar="NAME"),
        Flag(("--plugins",), "plugins", "repeat", help="a TOML file of extra plugin modules",
             metavar="FILE"),
        Flag(("-h", "--help"), "help", "switch", help="show this help"),
    ])
    args = parser.parse(argv)
    if args["help"]:
        print(parser.help_text())
        return 0
    _print(args["backend"], args["plugins"])
    return 0


def _print(backend: str | None, plugins: list[str]) -> None:
    from ..opsupport import format_listing, lowering_passes

    regs = load_registries(plugins)
    names = [backend] if backend else [e.name for e in regs.backends.entries()]
    chosen = {}
    for name in names:
        entry = regs.backends.get(name)   # an unknown name is refused with the known ones
        chosen[name] = entry.cls()
    for line in format_listing(chosen, lowering_passes(regs.passes)):
        print(line)
