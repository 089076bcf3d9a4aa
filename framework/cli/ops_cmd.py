"""``aicc ops [--backend NAME]`` and ``aicc compile -operators-supported=onnx``: every operator
each backend runs, with its opsets and element types, and the passes that lower operators a
backend lacks (see ``aicc.opsupport``, which derives the listing from the backends' own checks).

``-operators-supported`` is the vendor's way to dump supported operators; aicc reads ONNX only, so
``onnx`` is the one framework it accepts. It lists the backend the other flags choose (``-aic-hw``:
aic100, ``--backend``, else cpu) and writes nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..plugins import load_registries
from .flags import Flag, FlagParser

__all__ = ["run_ops", "print_listing"]


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
    print_listing(args["backend"], args["plugins"])
    return 0


def print_listing(backend: str | None, plugins: list[str]) -> None:
    """Print the operator listing of ``backend`` (every backend when None)."""
    from ..opsupport import format_listing, lowering_passes

    regs = load_registries(plugins)
    names = [backend] if backend else [e.name for e in regs.backends.entries()]
    chosen = {}
    for name in names:
        entry = regs.backends.get(name)   # an unknown name is refused with the known ones
        chosen[name] = entry.cls()
    for line in format_listing(chosen, lowering_passes(regs.passes)):
        print(line)
