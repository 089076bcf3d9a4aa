"""Quantization flags of ``aicc compile`` (the vendor's profile-guided quantization) turned into
pipeline steps: ``calibrate`` and ``quantize`` at stage ``quantize``, ``quant-overrides`` and
``input-shape`` at stage ``bind``, ``int32-sandwich`` at stage ``precision``.

Modes, as in the vendor's flow:

- ``-dump-profile=FILE`` with ``-input-list-file`` (or ``-json-input-file`` with specializations):
  run the pipeline up to calibration over the samples and write the profile. Like the vendor tool,
  nothing is compiled and no container is written (``-aic-binary-dir`` is refused: it would be
  ignored); add ``-convert-to-quantize`` to dump the profile and also compile the quantized program.
- ``-load-profile=FILE[,FILE...]``: quantize with the stored statistics (several profiles, e.g. of
  dataset shards, are merged; a profile of another graph is refused).
- ``-convert-to-quantize``: calibrate and quantize in one run.
- ``-external-quantization=FILE``: AIMET encodings JSON (both forms); a full override needs no
  samples, a partial one calibrates the other tensors from ``-input-list-file`` or takes them from
  ``-load-profile``. INT32 entries add the ``int32-sandwich`` pass.

``-quantization-schema-activations/-constants``, ``-quantization-calibration``,
``-percentile-calibration-value``, ``-quantization-precision[-bias]``, ``-enable-channelwise`` and
``-enable-rowwise`` choose how to quantize and are refused when nothing is quantized (the profile
keeps histograms, so the calibration method is chosen when it is loaded); the template dump of
custom I/O (``-dump-custom-IO-config-template``) reads the activation schema and calibration too.
``--input-shape NAME=D0,D1,...`` binds an input's dynamic dimensions (``input-shape`` pass), e.g.
so that raw files of an input list have a known size.
"""

from __future__ import annotations

from typing import Any

from ..compiler import CompileRequest
from ..errors import UsageError
from ..quant import check_percentile, parse_calibration_method, parse_schema
from ..quant.profile import MAX_HISTOGRAM_BINS
from .flags import Flag, float_value, int_value

__all__ = ["FLAGS", "contribute", "PRECISIONS", "BIAS_PRECISIONS"]

#: -quantization-precision values -> (activation bitwidth, weight bitwidth)
PRECISIONS = {"int8": 8, "int16": 16}
#: -quantization-precision-bias values -> bias bitwidth
BIAS_PRECISIONS = {"int8": 8, "int32": 32}


FLAGS = [
    Flag(("-input-list-file", "--input-list-file"), "input_list_file",
         help="calibration samples: a QNN input list (one line per sample)", metavar="FILE"),
    Flag(("-dump-profile", "--dump-profile"), "dump_profile",
         help="calibrate over the samples and write the profile (no container is written "
              "unless -convert-to-quantize)", metavar="FILE"),
    Flag(("-load-profile", "--load-profile"), "load_profile",
         help="quantize with this profile (comma-separated profiles are merged)",
         metavar="FILE[,FILE]"),
    Flag(("-convert-to-quantize", "--convert-to-quantize"), "convert_to_quantize", "switch",
         help="calibrate over -input-list-file and quantize in one run"),
    Flag(("-quantization-schema-activations", "--quantization-schema-activations"),
         "schema_activations", help="asymmetric, symmetric, symmetric_with_uint8 (default), "
                                    "symmetric_with_power2_scale", metavar="SCHEMA"),
    Flag(("-quantization-schema-constants", "--quantization-schema-constants"),
         "schema_constants", help="schema of weights and constants (same values)",
         metavar="SCHEMA"),
    Flag(("-quantization-calibration", "--quantization-calibration"), "quantization_calibration",
         help="range method: None (min/max), Percentile, KLMinimization, KLMinimizationV2, MSE, "
              "SQNR", metavar="METHOD"),
    Flag(("-percentile-calibration-value", "--percentile-calibration-value"), "percentile_value",
         convert=float_value("-percentile-calibration-value"),
         help="percentile in [90, 100] for -quantization-calibration=Percentile", metavar="P"),
    Flag(("-num-histogram-bins", "--num-histogram-bins"), "num_histogram_bins",
         convert=int_value("-num-histogram-bins"),
         help="histogram bins per tensor in the profile (default 512)", metavar="N"),
    Flag(("-quantization-precision", "--quantization-precision"), "quantization_precision",
         help="Int8 (default) or Int16 activations and weights", metavar="Int8|Int16"),
    Flag(("-quantization-precision-bias", "--quantization-precision-bias"),
         "quantization_precision_bias", help="Int32 (default) or Int8 biases",
         metavar="Int8|Int32"),
    Flag(("-enable-channelwise", "--enable-channelwise"), "enable_channelwise", "switch",
         help="per-channel weights for Conv, ConvTranspose, Gemm and MatMul"),
    Flag(("-enable-rowwise", "--enable-rowwise"), "enable_rowwise", "switch",
         help="per-row weights for Gemm and MatMul"),
    Flag(("-external-quantization", "--external-quantization"), "external_quantization",
         help="AIMET encodings JSON to quantize with (full or partial)", metavar="FILE"),
    Flag(("--input-shape", "-input-shape"), "input_shape", "repeat",
         help="bind the dynamic dimensions of an input: NAME=D0,D1,... (repeatable)",
         metavar="NAME=DIMS"),
]

_HOW_FLAGS = (("schema_constants", "-quantization-schema-constants"),
              ("percentile_value", "-percentile-calibration-value"),
              ("quantization_precision", "-quantization-precision"),
              ("quantization_precision_bias", "-quantization-precision-bias"),
              ("enable_channelwise", "-enable-channelwise"),
              ("enable_rowwise", "-enable-rowwise"))
#: flags the custom I/O template dump also reads
_TEMPLATE_FLAGS = (("schema_activations", "-quantization-schema-activations"),
                   ("quantization_calibration", "-quantization-calibration"))
#: other features' flags that use -input-list-file samples (fp16 overflow report)
_OTHER_SAMPLE_USERS = ("convert_to_fp16", "node_precision_info", "execute_nodes_in_fp16")


def _choice(text: str, table: dict[str, int], flag: str) -> int:
    key = text.strip().lower()
    if key not in table:
        raise UsageError(f"unknown value {text!r}", where=flag,
                         hint="valid: " + ", ".join(k.capitalize() for k in table))
    return table[key]


def _quantize_options(args: dict[str, Any]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if args.get("schema_activations"):
        opts["activation_schema"] = parse_schema(args["schema_activations"],
                                                 field="-quantization-schema-activations")
    if args.get("schema_constants"):
        opts["constant_schema"] = parse_schema(args["schema_constants"],
                                               field="-quantization-schema-constants")
    method = "None"
    if args.get("quantization_calibration"):
        method = parse_calibration_method(args["quantization_calibration"],
                                          field="-quantization-calibration")
        opts["calibration"] = method
    if args.get("percentile_value") is not None:
        if method != "Percentile":
            raise UsageError("-percentile-calibration-value needs "
                             "-quantization-calibration=Percentile",
                             where="-percentile-calibration-value")
        opts["percentile"] = check_percentile(args["percentile_value"], field=None,
                                              where="-percentile-calibration-value")
    if args.get("quantization_precision"):
        bw = _choice(args["quantization_precision"], PRECISIONS, "-quantization-precision")
        opts["act_bitwidth"] = opts["weight_bitwidth"] = bw
    if args.get("quantization_precision_bias"):
        opts["bias_bitwidth"] = _choice(args["quantization_precision_bias"], BIAS_PRECISIONS,
                                        "-quantization-precision-bias")
    if args.get("enable_channelwise"):
        opts["per_channel"] = True
    if args.get("enable_rowwise"):
        opts["per_row"] = True
    return opts


def _given(args: dict[str, Any], flags: tuple[tuple[str, str], ...]) -> list[str]:
    return [spelling for dest, spelling in flags
            if args.get(dest) not in (None, False, [], "")]


def _input_list_without_calibration(args: dict[str, Any], req: CompileRequest, il: str,
                                    load: bool) -> None:
    """-input-list-file when nothing calibrates: with -load-profile (the vendor's PGQ step) the
    compiled program runs on the listed inputs; otherwise another feature must use the samples."""
    others = any(args.get(k) for k in _OTHER_SAMPLE_USERS)
    if load:
        if args.get("compile_only") and not others:
            raise UsageError("-input-list-file gives the inputs to run the compiled program on, "
                             "and -compile-only runs nothing", where="aicc compile",
                             hint="drop -compile-only to run on the listed inputs, or drop "
                                  "-input-list-file")
        req.run_input_list = il
    elif not others:
        raise UsageError("-input-list-file gives calibration samples, and nothing calibrates",
                         where="aicc compile", hint="add -dump-profile=FILE, "
                                                    "-convert-to-quantize or -load-profile=FILE")


def contribute(args: dict[str, Any], req: CompileRequest) -> None:
    """Check the quantization flags and add the steps they ask for."""
    where = "aicc compile"
    shapes = args.get("input_shape") or []
    if shapes:
        from ..passes.input_shape import parse_input_shapes
        parse_input_shapes(shapes)
        req.feature_steps.append(("bind", "input-shape", {"shapes": list(shapes)}))
    il = args.get("input_list_file")
    dump = args.get("dump_profile")
    load = args.get("load_profile")
    convert = bool(args.get("convert_to_quantize"))
    ext = args.get("external_quantization")
    json_in = args.get("json_input_file")
    bins = args.get("num_histogram_bins")
    if args.get("dump_custom_io_template"):
        extra = [f for f, v in (("-dump-profile", dump), ("-load-profile", load),
                                ("-convert-to-quantize", convert),
                                ("-external-quantization", ext), ("-input-list-file", il),
                                ("-num-histogram-bins", bins)) if v] + _given(args, _HOW_FLAGS)
        if extra:
            raise UsageError(f"-dump-custom-IO-config-template writes a template and exits "
                             f"without compiling; {extra[0]} would be ignored", where=where)
        return
    if dump and load:
        raise UsageError("-dump-profile and -load-profile both given", where=where,
                         hint="dump the profile in one run, load it in the next")
    if convert and load:
        raise UsageError("-convert-to-quantize calibrates; -load-profile gives the statistics "
                         "instead", where=where, hint="use one of them")
    quantizing = bool(convert or load or ext)
    samples = il or (json_in if (dump or convert or ext) else None)
    calibrating = bool(dump or convert or (ext and not load and samples))
    if calibrating and not samples:
        flag = "-dump-profile" if dump else "-convert-to-quantize"
        raise UsageError(f"{flag} needs calibration samples", where=where,
                         hint="add -input-list-file=FILE (or -json-input-file=FILE with "
                              "-network-specialization-config)")
    if il and not calibrating:
        _input_list_without_calibration(args, req, il, bool(load))
    if bins is not None:
        if not calibrating:
            raise UsageError("-num-histogram-bins sets the bins of a new profile, and nothing "
                             "calibrates", where="-num-histogram-bins")
        if not 1 <= bins <= MAX_HISTOGRAM_BINS:
            raise UsageError(f"{bins} bins is outside [1, {MAX_HISTOGRAM_BINS}]",
                             where="-num-histogram-bins")
    how = _given(args, _HOW_FLAGS + _TEMPLATE_FLAGS)
    if how and not quantizing:
        hint = ("the profile keeps histograms: choose these when loading it (-load-profile)"
                if dump else "add -convert-to-quantize, -load-profile or -external-quantization")
        raise UsageError(f"{how[0]} says how to quantize, and nothing is quantized",
                         where=how[0], hint=hint)
    opts = _quantize_options(args) if quantizing else {}
    if ext:
        from ..passes.quantization.quantize import load_overrides
        table = load_overrides(ext)     # a bad file fails before any work
        req.feature_steps.append(("bind", "quant-overrides", {"file": str(ext)}))
        if any(not e.is_float and e.bitwidth == 32 for e in table.activations.values()):
            req.feature_steps.append(("precision", "int32-sandwich", {"overrides": str(ext)}))
    if calibrating:
        cal: dict[str, Any] = {"input_list": str(il)} if il else {"json_input_file": str(json_in)}
        if dump:
            cal["dump_profile"] = str(dump)
        if bins is not None:
            cal["num_bins"] = bins
        req.feature_steps.append(("quantize", "calibrate", cal))
    if quantizing:
        keep = args.get("keep_original_precision")
        if keep:    # -keep-original-precision-for-nodes: those op types stay float (fp32)
            opts["keep_op_types"] = [t.strip() for t in str(keep).split(",") if t.strip()]
        if load:
            opts["profile"] = [p.strip() for p in str(load).split(",") if p.strip()]
            if not opts["profile"]:
                raise UsageError("no profile file given", where="-load-profile")
        req.feature_steps.append(("quantize", "quantize", opts))
    if dump and not quantizing:
        if req.output:
            raise UsageError("-dump-profile only writes the profile (as the vendor tool does); "
                             "-aic-binary-dir would be ignored", where=where,
                             hint="drop -aic-binary-dir, or add -convert-to-quantize to also "
                                  "compile the quantized program")
        req.pipeline_only = f"quantization profile is dumped at {dump}"
