"""``quant-overrides``: an AIMET encodings file in, its validated table in ``Program.encodings`` out
(the graphs are not changed).

It runs early (stage ``bind`` of the default pipeline) so that passes before ``quantize`` can see
the overrides: ``int32-sandwich`` reads ``Program.encodings["int32"]``, and ``quantize`` applies the
rest. Shapes written (see ``passes/quantization/quantize.py`` for ``ENC``)::

    Program.encodings["overrides"] = {"file": PATH, "activations": {name: ENC},
                                      "params": {name: ENC}, "excluded_layers": [...]}
    Program.encodings["int32"] = [activation names with int 32-bit overrides]

``int32-sandwich`` (given the same ``EncodingsFile``: the file is read once) marks the ops it
moved to int32 in ``Program.node_precision`` (``"int32"``); ``quantize`` leaves INT32 entries to
it, quantizes the float tensors around each sandwich as usual, and refuses INT32 overrides when no
op was moved. Tensor names are checked against the graph by ``quantize``, which sees the graph it
quantizes (BatchNorm folding renames tensors in between; an INT32 tensor between two chained
int32 ops is gone, and was checked by ``int32-sandwich``).
"""

from __future__ import annotations

import dataclasses

from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext
from aicc.program import Program
from aicc.quant import EncodingsFile

from aicc.passes.quantization.quantize import table_to_json

__all__ = ["QuantOverrides"]


class QuantOverrides(Pass):
    name = "quant-overrides"
    description = "read AIMET encodings overrides into Program.encodings (graphs unchanged)"
    scope = "program"
    before = ("*",)     # reads the encodings by the model's own tensor names
    semantics = "preserving"

    @dataclasses.dataclass(frozen=True)
    class Options:
        file: EncodingsFile | None = option(None, "the AIMET encodings JSON "
                                                  "(quantization.encodings)", path=True)

    def run(self, program: Program, ctx: PassContext) -> None:
        if ctx.options.file is None:
            return
        table = ctx.options.file.value
        program.encodings["overrides"] = table_to_json(table, ctx.options.file.path)
        int32 = [n for n, e in table.activations.items()
                 if not e.is_float and e.bitwidth == 32]
        program.encodings["int32"] = int32
        ctx.count("overrides read", len(table))
        ctx.count("INT32 overrides", len(int32))


@hookimpl
def aicc_register_passes(registry):
    registry.add(QuantOverrides)
