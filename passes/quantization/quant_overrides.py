"""``quant-overrides``: an AIMET encodings file in, its validated table in ``Program.encodings`` out
(the graphs are not changed).

It runs early (stage ``bind`` of the default pipeline) so that passes before ``quantize`` can see
the overrides: ``int32-sandwich`` reads ``Program.encodings["int32"]``, and ``quantize`` applies the
rest. Shapes written (see ``passes/quantization/quantize.py`` for ``ENC``)::

    Program.encodings["overrides"] = {"file": PATH, "activations": {name: ENC},
                                      "params": {name: ENC}, "excluded_layers": [...]}
    Program.encodings["int32"] = [activation names with int 32-bit overrides]

``int32-sandwich`` (which reads the same file) marks the ops it moved to int32 in
``Program.node_precision`` (``"int32"``); ``quantize`` leaves INT32 entries to it, quantizes the
float tensors around each sandwich as usual, and refuses INT32 overrides when no op was moved.
Tensor names are checked against the graph by ``quantize``, which sees the graph it quantizes
(BatchNorm folding renames tensors in between).
"""

from __future__ import annotations

import dataclasses

from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext
from aicc.program import Program

from aicc.passes.quantization.quantize import load_overrides, table_to_json

__all__ = ["QuantOverrides"]


class QuantOverrides(Pass):
    name = "quant-overrides"
    description = "read AIMET encodings overrides into Program.encodings (graphs unchanged)"
    scope = "program"
    before = ("*",)     # reads the encodings by the model's own tensor names
    semantics = "preserving"

    @dataclasses.dataclass(frozen=True)
    class Options:
        file: str = option("", "the AIMET encodings JSON (-external-quantization, "
                               "--quantization_overrides)", path=True)

    def run(self, program: Program, ctx: PassContext) -> None:
        if not ctx.options.file:
            return
        table = load_overrides(ctx.options.file)
        program.encodings["overrides"] = table_to_json(table, str(ctx.options.file))
        int32 = [n for n, e in table.activations.items()
                 if not e.is_float and e.bitwidth == 32]
        program.encodings["int32"] = int32
        ctx.count("overrides read", len(table))
        ctx.count("INT32 overrides", len(int32))


@hookimpl
def aicc_register_passes(registry):
    registry.add(QuantOverrides)
