"""``quantize``: a float graph plus calibration statistics and/or encodings overrides in, a QDQ
graph out (int8 by default; 4/16-bit, per-channel and mixed float/integer on request).

Where encodings come from, per tensor:

1. an override (AIMET encodings JSON, both forms: ``overrides`` here, or the table the
   ``quant-overrides`` pass left in ``Program.encodings["overrides"]``): a complete encoding is used
   as given; ``{"bitwidth": b, "dtype": "int"}`` asks for that bitwidth with a calibrated range;
   ``dtype: float`` keeps the producing op in float (bitwidth 32, or 16 through ``convert-fp16``'s
   Cast lowering). Tensors the file does not name are quantized as usual (partial override);
2. otherwise calibration statistics: the profile ``calibrate`` left in the analysis cache, or
   ``profile`` files (several are merged; a profile of another graph is refused) and the range
   method (``calibration``, ``percentile``) with a vendor schema (``activation_schema``,
   ``constant_schema``) or a QNN mode (``act_quantizer``, ``param_quantizer``).

Rules: data-movement ops (Reshape, Transpose, Flatten, Squeeze/Unsqueeze, MaxPool, Concat when its
inputs feed nothing else, ...) share their input's encoding instead of re-quantizing; the output of
a Conv/ConvTranspose/Gemm/MatMul/Add read only by a Relu or Clip is not quantized
(``fuse_activations``: the pair is one integer kernel, only the activation's output, on its
non-negative range, is quantized; an override on that tensor keeps it quantized); a tensor made
and read only by elementwise ops (the inside of a HardSwish, Swish, GELU or LayerNorm spelled out
in elementary ops) is not quantized either (``fuse_elementwise``: the expression is one fused op,
as the vendor's converter makes it; ``passes/quantization/fusion.py`` says why); biases of
Conv/ConvTranspose/Gemm are int32 with scale = input scale x weight scale (``bias_bitwidth`` 8/16
encode them on their own range instead); weights of Conv/ConvTranspose (``per_channel``) and of
Gemm/MatMul (``per_channel`` or ``per_row``) are encoded per output channel. For Conv,
ConvTranspose, Gemm and MatMul a float output, weight or bias makes all three float (QNN's rule);
the bias of such an op takes ``float_bias_bitwidth`` when it has no override of its own. Ops listed
in the overrides' ``excluded_layers`` (node names or first output names) stay float at
``float_bitwidth``. INT32 activation overrides are left to ``int32-sandwich``. Tensors computed
from shapes only (Shape -> Cast -> Mul -> Reshape chains), scalar or integer-valued helper
constants of elementwise ops, and float tensors a Cast reads as integers (byte values or ids
feeding ``Cast(int32) -> OneHot``: Cast truncates, so a quantized 65.0 read back as 64.78 is byte
64) stay exact.

What was used is recorded in ``Program.encodings`` (JSON-able; goes into the container manifest)::

    {"format": "aicc-encodings", "version": 1,
     "activations": {tensor: ENC}, "params": {initializer: ENC},
     "conversions": {float tensor: ENC},        # float -> integer readers of a float op
     "float_ops": {node name: 16 | 32},
     "settings": {...the options used...},
     "overrides": {"file", "activations", "params", "excluded_layers"},  # quant-overrides
     "int32": [tensor names],                                             # quant-overrides
     "rounding": {"method": "adaround", "layers": {node: errors, time}}}  # adaround

``ENC`` is ``{"dtype": "int", "bitwidth", "signed", "symmetric", "scale", "zero_point", "min",
"max", "axis"}`` in ONNX's convention (``real = (q - zero_point) * scale``; lists per channel) or
``{"dtype": "float", "bitwidth": 16 | 32}``. A parameter quantized differently for several readers
is recorded as ``NAME@NODE``. ``export_encodings`` writes the table as AIMET JSON.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aicc import ir
from aicc.configfile import load_yaml
from aicc.errors import ConfigError, option_ref
from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext
from aicc.program import Program
from aicc.quant import (CALIBRATION_METHODS, DEFAULT_PERCENTILE, MODES, SCHEMAS, Encoding,
                        EncodingsFile, EncodingsTable, Profile, export_aimet_encodings,
                        load_aimet_file, merge_profiles)
from aicc.quant.profile import parse_profile

from aicc.passes.quantization.opset import prepare_opset
from aicc.passes.quantization.plan import GraphQuantizer, QuantSettings
from aicc.passes.quantization.analyses import (ADAROUND_ROUNDING, BIAS_CORRECTION,
                                               CALIBRATION_PROFILE)
from aicc.passes.quantization.calibrate import program_hash, write_text_atomic

__all__ = ["Quantize", "QuantSettings", "encoding_to_json", "encoding_from_json",
           "load_overrides", "table_to_json", "table_from_json", "load_profiles",
           "encodings_table", "ENCODINGS_FORMAT"]

logger = logging.getLogger(__name__)

ENCODINGS_FORMAT = "aicc-encodings"


# ------------------------------------------------------------------------------ JSON forms
def encoding_to_json(enc: Encoding) -> dict[str, Any]:
    """An Encoding as plain JSON data (ONNX convention; tuples become lists)."""
    if enc.is_float:
        return {"dtype": "float", "bitwidth": enc.bitwidth}
    out: dict[str, Any] = {"dtype": "int", "bitwidth": enc.bitwidth, "signed": enc.signed,
                           "symmetric": enc.symmetric}
    for key in ("scale", "zero_point", "min", "max"):
        value = getattr(enc, key)
        if value is not None:
            out[key] = list(value) if isinstance(value, tuple) else value
    out["axis"] = enc.axis
    return out


def encoding_from_json(data: Mapping[str, Any]) -> Encoding:
    """Inverse of ``encoding_to_json``."""
    if data.get("dtype") == "float":
        return Encoding.float_(int(data["bitwidth"]))
    conv = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()
            if k in ("scale", "zero_point", "min", "max")}
    return Encoding(bitwidth=int(data["bitwidth"]), signed=bool(data.get("signed", False)),
                    symmetric=bool(data.get("symmetric", False)), axis=data.get("axis"), **conv)


def table_to_json(table: EncodingsTable, source: str | None = None) -> dict[str, Any]:
    return {"file": source,
            "activations": {n: encoding_to_json(e) for n, e in table.activations.items()},
            "params": {n: encoding_to_json(e) for n, e in table.params.items()},
            "excluded_layers": list(table.excluded_layers)}


def table_from_json(data: Mapping[str, Any]) -> EncodingsTable:
    return EncodingsTable(
        activations={n: encoding_from_json(e) for n, e in data.get("activations", {}).items()},
        params={n: encoding_from_json(e) for n, e in data.get("params", {}).items()},
        excluded_layers=list(data.get("excluded_layers", [])))


def load_overrides(path: str | Path) -> EncodingsTable:
    """An AIMET encodings file read and validated (``aicc.quant.load_aimet_file``); options take
    an ``EncodingsFile`` so that the file is read once per compile."""
    return load_aimet_file(path)


def load_profiles(paths: list[str], expected_hash: str) -> Profile:
    """Profile YAML files (hardened loader), each checked against ``expected_hash``, merged."""
    profiles = [parse_profile(load_yaml(p, what="quantization profile"), where=str(p),
                              expected_graph_hash=expected_hash) for p in paths]
    return profiles[0] if len(profiles) == 1 else merge_profiles(profiles, where=",".join(paths))


def encodings_table(encodings: Mapping[str, Any]) -> EncodingsTable:
    """The encodings a quantized Program used (``Program.encodings``) as an AIMET table."""
    return EncodingsTable(
        activations={n: encoding_from_json(e) for n, e in encodings.get("activations", {}).items()},
        params={n: encoding_from_json(e) for n, e in encodings.get("params", {}).items()})


# ------------------------------------------------------------------------------ the pass
class Quantize(Pass):
    name = "quantize"
    description = "lower a float graph to QDQ with calibrated or given encodings"
    scope = "program"
    after = ("calibrate", "adaround", "bias-correction", "int32-sandwich", "custom-io",
             "convert-fp16", "cle")
    semantics = "approximating"

    @dataclasses.dataclass(frozen=True)
    class Options:
        profile: list[str] = option([], "calibration profile file(s) to quantize with "
                                        "(-load-profile; several are merged)")
        overrides: EncodingsFile | None = option(None, "AIMET encodings JSON: full or partial "
                                                       "overrides (--quantization_overrides)",
                                                 path=True)
        activation_schema: str = option("symmetric_with_uint8", "vendor schema for activations",
                                        choices=tuple(SCHEMAS))
        constant_schema: str = option("symmetric_with_uint8", "vendor schema for weights and "
                                      "constants", choices=tuple(SCHEMAS))
        act_quantizer: str = option("", "QNN mode for activations (replaces the schema)",
                                    choices=("",) + MODES)
        param_quantizer: str = option("", "QNN mode for weights (replaces the schema)",
                                      choices=("",) + MODES)
        calibration: str = option("None", "range method", choices=tuple(CALIBRATION_METHODS))
        percentile: float = option(DEFAULT_PERCENTILE, "percentile for calibration=Percentile",
                                   minimum=90.0, maximum=100.0)
        act_bitwidth: int = option(8, "activation bitwidth", choices=(4, 8, 16))
        weight_bitwidth: int = option(8, "weight and constant bitwidth", choices=(4, 8, 16))
        bias_bitwidth: int = option(32, "bias bitwidth (32: scale = input x weight scale)",
                                    choices=(8, 16, 32))
        per_channel: bool = option(False, "per-channel weights for Conv/ConvTranspose/Gemm/MatMul")
        per_row: bool = option(False, "per-row weights for Gemm/MatMul")
        pack_4bit: bool = option(False, "store 4-bit weights packed (ONNX INT4/UINT4)")
        float_bitwidth: int = option(32, "float bitwidth of excluded layers", choices=(16, 32))
        float_bias_bitwidth: int = option(0, "bitwidth of float biases without an override "
                                             "(0: the op's)", choices=(0, 16, 32))
        fuse_activations: bool = option(True, "leave a Conv/Gemm/MatMul/Add output read only by "
                                              "a Relu/Clip unquantized (one fused kernel)")
        fuse_elementwise: bool = option(True, "leave tensors made and read only by elementwise "
                                              "ops (HardSwish, Swish, LayerNorm spelled out) "
                                              "unquantized: one fused expression")
        float_fallback: bool = option(False, "quantize only what the overrides cover (activations "
                                             "propagate through data-movement ops); every other "
                                             "tensor stays float; needs no calibration "
                                             "(--enable_float_fallback)")
        keep_op_types: list[str] = option([], "op types whose nodes keep their original float "
                                              "precision (-keep-original-precision-for-nodes)")
        export_encodings: str = option("", "write the encodings used as AIMET JSON here", path=True)
        export_form: str = option("0.6.1", "AIMET form of export_encodings",
                                  choices=("0.6.1", "1.0.0"))

    def run(self, program: Program, ctx: PassContext) -> None:
        s = QuantSettings.from_options(ctx.options)
        opts = ctx.options
        expected = program_hash(program)
        profile = ctx.analyses.peek(CALIBRATION_PROFILE)
        if opts.profile:
            if profile is not None:
                raise ConfigError("a profile was both calibrated in this run and given",
                                  field="pass 'quantize': option 'profile'",
                                  hint=f"use {option_ref('quantization.profile')} or calibration, not both")
            profile = load_profiles(opts.profile, expected)
        elif profile is not None and profile.graph_hash != expected:
            raise ConfigError("the calibration profile belongs to another graph (a pass between "
                              "calibrate and quantize changed it)", field="pass 'quantize'",
                              hint="run calibrate right before quantize")
        stored = program.encodings.get("overrides")
        if opts.overrides:
            table, where = opts.overrides.value, opts.overrides.path
        elif stored:
            table, where = table_from_json(stored), stored.get("file") or "overrides"
        else:
            table, where = None, None
        _check_modes(opts, program, profile, table)
        int32 = list(program.encodings.get("int32") or [])
        if table is not None and not int32:
            int32 = [n for n, e in table.activations.items() if not e.is_float and e.bitwidth == 32]
        if int32 and "int32" not in program.node_precision.values():
            raise ConfigError(f"INT32 overrides ({', '.join(int32[:5])}) need the int32-sandwich "
                              "pass before quantize", where=where,
                              hint="add int32-sandwich{overrides=FILE} before quantize, or drop "
                                   "the INT32 entries")
        record: dict[str, Any] = {"activations": {}, "params": {}, "conversions": {}}
        float_ops: dict[str, int] = {}
        raised = False
        # per-channel encodings given in the overrides need DequantizeLinear's axis as much as
        # per-channel weights computed here (quantized as given: only the opset follows them)
        given = table is not None and not (s.per_channel or s.per_row) and \
            any(e.per_channel for e in table.params.values())
        s_opset = dataclasses.replace(s, per_channel=True) if given else s
        for gname in list(program.graphs):
            where_g = f"graph '{gname}'"
            graph, s_g = prepare_opset(program.graphs[gname], s_opset, where=where_g,
                                       ir_version=program.ir_version)
            s_g = s if given else s_g
            program.graphs[gname] = graph
            if any(ir.tensor_dtype(t) is None for n in graph.nodes for t in n.outputs
                   if t.name):
                ir.infer_shapes(graph, where=where_g)
            q = GraphQuantizer(graph, s_g, profile, table, where, set(int32), ctx, where_g)
            q.run()
            raised = raised or q.opset21
            for key in record:
                record[key].update({n: encoding_to_json(e) for n, e in q.record[key].items()})
            float_ops.update(q.float_names)
        if raised:
            program.ir_version = max(program.ir_version, 10)
        program.encodings.update({"format": ENCODINGS_FORMAT, "version": 1, **record,
                                  "float_ops": float_ops,
                                  "settings": {k: v for k, v in dataclasses.asdict(s).items()}})
        rounder = ctx.analyses.peek(ADAROUND_ROUNDING)
        if rounder is not None:    # learned rounding (passes/quantization/adaround.py): what it gave
            program.encodings["rounding"] = {"method": "adaround",
                                             "layers": dict(rounder.report)}
        corrector = ctx.analyses.peek(BIAS_CORRECTION)
        if corrector is not None:  # passes/quantization/bias_correction.py: the shifts applied
            program.encodings["bias_correction"] = {"layers": dict(corrector.report)}
        ctx.count("activations quantized", len(record["activations"]))
        ctx.count("parameters quantized", len(record["params"]))
        if opts.export_encodings:
            data = export_aimet_encodings(encodings_table(program.encodings),
                                          form=opts.export_form)
            write_text_atomic(opts.export_encodings, json.dumps(data, indent=2) + "\n")


def _check_modes(opts: Any, program: Program, profile: Profile | None,
                 table: EncodingsTable | None) -> None:
    """float_fallback quantizes from overrides alone; keep_op_types must name present ops."""
    where = "pass 'quantize'"
    if opts.float_fallback:
        if table is None:
            raise ConfigError("float_fallback quantizes what the overrides cover, and no "
                              "overrides were given", field=f"{where}: option 'float_fallback'")
        if profile is not None:
            raise ConfigError("float_fallback takes no calibration statistics (the tensors the "
                              "overrides do not cover stay float)",
                              field=f"{where}: option 'float_fallback'",
                              hint="drop the profile/calibration, or drop float_fallback")
    present = {n.op for g in program.graphs.values() for n in g.nodes}
    for op in opts.keep_op_types:
        if op not in present:
            raise ConfigError(f"the model has no {op} node",
                              field=f"{where}: option 'keep_op_types' "
                                    "(-keep-original-precision-for-nodes)",
                              hint=f"its op types: {', '.join(sorted(present))}")


@hookimpl
def aicc_register_passes(registry):
    registry.add(Quantize)
