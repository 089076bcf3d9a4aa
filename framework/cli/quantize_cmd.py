"""``aicc quantize``: a float ONNX model and calibration inputs in, a QDQ ONNX model out, with the
flags of the QNN quantizer (``qnn-onnx-converter`` / ``qairt-quantizer``) for users coming from it.

The output runs on onnxruntime (QuantizeLinear/DequantizeLinear only, opset 21 when 4- or 16-bit
types need it) and is written atomically. Each written model is loaded once with onnxruntime's
default settings; when onnxruntime refuses it (4-bit activations: its Clip/Relu->QuantizeLinear
fusion does not read 4-bit zero points), a warning says why and how to load it. Defaults follow
QNN: 8-bit activations, weights and biases, ``tf`` quantizers; activation ranges default to
``auto`` (aicc's, not QNN's min-max: per tensor, the min-max, percentile or MSE range with the
least expected quantization noise on its histogram, see ``aicc.quant.calibration.auto_range``),
which holds on real models where min-max loses to outliers and MSE clips too much.
``--input_dim NAME DIMS`` takes two values (QNN's
spelling); ``--algorithms cle`` runs the ``cle`` pass first (``cle-activations``: with
``objective=activations``, for per-channel weights). Flags that only matter together with
another one (``--pack_4_bit_weights`` without 4-bit weights, ``--float_bw`` without float layers in
the overrides, ...) are refused rather than silently ignored.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError
from ..quant import MODES, check_bitwidth, check_percentile
from .flags import Flag, FlagParser, float_value, int_value
from .quantize_algorithms import ALGORITHM_FLAGS, algorithm_arguments, run_algorithms

__all__ = ["run_quantize", "QUANTIZE_FLAGS", "CALIBRATIONS", "onnxruntime_load_note"]

#: QNN's ``--act_quantizer_calibration`` values -> aicc's calibration methods.
CALIBRATIONS = {"auto": "Auto", "min-max": "None", "minmax": "None", "percentile": "Percentile",
                "kl": "KLMinimization", "entropy": "KLMinimization", "mse": "MSE",
                "sqnr": "SQNR"}


QUANTIZE_FLAGS = [
    Flag(("--input_model", "-i"), "input_model", help="the float ONNX model", metavar="PATH"),
    Flag(("--output_model", "-o"), "output_model", help="where to write the QDQ ONNX model",
         metavar="PATH"),
    Flag(("--input_list",), "input_list", help="calibration inputs: a QNN input list",
         metavar="FILE"),
    Flag(("--input_dim",), "input_dim", "repeat",
         help="NAME DIMS: bind input NAME to DIMS (comma-separated), e.g. --input_dim x 1,3,8,8",
         metavar="NAME DIMS"),
    Flag(("--act_bw",), "act_bw", convert=int_value("--act_bw"),
         help="activation bitwidth: 4, 8 (default) or 16", metavar="BW"),
    Flag(("--weight_bw",), "weight_bw", convert=int_value("--weight_bw"),
         help="weight bitwidth: 4, 8 (default) or 16", metavar="BW"),
    Flag(("--bias_bw",), "bias_bw", convert=int_value("--bias_bw"),
         help="bias bitwidth: 8, 16 or 32 (default: int32 with scale = input scale x weight "
              "scale, where biases lose nothing; qairt-quantizer's default is 8)",
         metavar="BW"),
    Flag(("--float_bw",), "float_bw", convert=int_value("--float_bw"),
         help="bitwidth (16 or 32) of layers the overrides exclude from quantization",
         metavar="BW"),
    Flag(("--float_bias_bw",), "float_bias_bw", convert=int_value("--float_bias_bw"),
         help="bitwidth (16 or 32) of float biases the overrides do not give", metavar="BW"),
    Flag(("--param_quantizer",), "param_quantizer",
         help="weights: tf (default), symmetric, enhanced, adjusted", metavar="MODE"),
    Flag(("--act_quantizer",), "act_quantizer",
         help="activations: tf (default), symmetric, enhanced, adjusted", metavar="MODE"),
    Flag(("--act_quantizer_calibration",), "act_calibration",
         help="activation range: auto (default: per tensor the best of min-max, percentile and "
              "mse), min-max, percentile, kl, mse, sqnr", metavar="METHOD"),
    Flag(("--percentile_calibration_value",), "percentile",
         convert=float_value("--percentile_calibration_value"),
         help="percentile in [90, 100] (default 99.99) of percentile (and auto's percentile "
              "candidate)", metavar="P"),
    Flag(("--use_per_channel_quantization",), "per_channel", "switch",
         help="per-channel weights (Conv, ConvTranspose, Gemm, MatMul)"),
    Flag(("--use_per_row_quantization",), "per_row", "switch",
         help="per-row weights of Gemm/MatMul"),
    Flag(("--pack_4_bit_weights",), "pack_4bit", "switch",
         help="store 4-bit weights two per byte (ONNX INT4/UINT4)"),
    Flag(("--quantization_overrides",), "overrides",
         help="AIMET encodings JSON: full or partial overrides", metavar="FILE"),
    Flag(("--enable_float_fallback", "--float_fallback"), "float_fallback", "switch",
         help="no calibration data: quantize only what --quantization_overrides covers "
              "(encodings spread through data-movement ops), every other tensor stays float"),
    Flag(("--ignore_quantization_overrides", "--ignore_encodings"), "ignore_overrides",
         "switch", help="calibrate every tensor from --input_list, taking no encodings from "
                        "anywhere else (aicc's default; refused with --quantization_overrides)"),
    Flag(("--export_encodings",), "export_encodings",
         help="write the encodings used as AIMET JSON (0.6.1 form)", metavar="FILE"),
    Flag(("--algorithms",), "algorithms", "repeat",
         help="pre-quantization algorithms: cle (weight ranges), cle-activations (the "
              "activations between layers; per-channel weights)", metavar="NAME"),
    Flag(("--bias_correction",), "bias_correction", "switch",
         help="aicc's (not QNN's): shift each Conv/Gemm bias by the mean output error its "
              "quantized weights make on the --input_list samples (after AdaRound's rounding "
              "with --apply_algorithms adaround)"),
    Flag(("--calibration_engine",), "engine",
         help="what runs the calibration samples: auto (default: onnxruntime where it runs the "
              "model, else the interpreter), interpreter (the numpy reference) or cpu "
              "(onnxruntime)", metavar="auto|interpreter|cpu"),
    Flag(("--num_histogram_bins",), "num_bins", convert=int_value("--num_histogram_bins"),
         help="histogram bins per tensor for histogram methods (default 512)", metavar="N"),
    *ALGORITHM_FLAGS,
    Flag(("-h", "--help"), "help", "switch", help="show this help"),
]


def _split_input_dims(argv: Sequence[str]) -> list[str]:
    """``--input_dim NAME DIMS`` (two values) -> ``--input_dim=NAME=DIMS`` for the flag parser."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] != "--input_dim":
            out.append(args[i])
            i += 1
            continue
        values = args[i + 1:i + 3]
        if len(values) != 2 or any(v.startswith("-") for v in values):
            raise UsageError("--input_dim takes two values: NAME DIMS", where="aicc quantize",
                             hint="e.g. --input_dim image 1,1,8,8")
        out.append(f"--input_dim={values[0]}={values[1]}")
        i += 3
    return out


def _check_mode(value: str | None, flag: str) -> str:
    if value is None:
        return "tf"
    if value not in MODES:
        raise UsageError(f"unknown quantizer {value!r}", where=flag,
                         hint=f"valid: {', '.join(MODES)}")
    return value


def _options(args: dict[str, Any]) -> dict[str, Any]:
    """The ``quantize`` pass options the flags ask for (QNN defaults), checked."""
    act_bw = check_bitwidth(args["act_bw"] if args["act_bw"] is not None else 8,
                            role="activation", where="--act_bw")
    weight_bw = check_bitwidth(args["weight_bw"] if args["weight_bw"] is not None else 8,
                               role="weight", where="--weight_bw")
    # int32 biases by default (the quantize pass's default too), not qairt-quantizer's 8: an
    # 8-bit bias on its own range shifts every channel of a BatchNorm-folded layer by up to half
    # a step, a systematic error that cost PP-OCRv4's recognizer 3 dB of output SQNR and 15% of
    # its decoded strings (benchmarks/calibration.py, ppocr-rec-64)
    bias_bw = check_bitwidth(args["bias_bw"] if args["bias_bw"] is not None else 32,
                             role="bias", where="--bias_bw")
    opts: dict[str, Any] = {
        "act_quantizer": _check_mode(args["act_quantizer"], "--act_quantizer"),
        "param_quantizer": _check_mode(args["param_quantizer"], "--param_quantizer"),
        "act_bitwidth": act_bw, "weight_bitwidth": weight_bw, "bias_bitwidth": bias_bw,
        "per_channel": bool(args["per_channel"]), "per_row": bool(args["per_row"]),
    }
    method = args["act_calibration"]
    if method is not None:
        key = method.strip().lower()
        if key not in CALIBRATIONS:
            raise UsageError(f"unknown calibration {method!r}",
                             where="--act_quantizer_calibration",
                             hint="valid: auto, min-max, percentile, kl, mse, sqnr")
        opts["calibration"] = CALIBRATIONS[key]
        if opts["act_quantizer"] == "enhanced" and opts["calibration"] != "None":
            raise UsageError("--act_quantizer enhanced chooses its own range",
                             where="--act_quantizer_calibration",
                             hint="drop --act_quantizer_calibration or use another quantizer")
    elif opts["act_quantizer"] != "enhanced":
        opts["calibration"] = "Auto"
    if args["percentile"] is not None:
        if opts.get("calibration") not in ("Percentile", "Auto"):
            raise UsageError("--percentile_calibration_value needs "
                             "--act_quantizer_calibration percentile (or auto)",
                             where="--percentile_calibration_value")
        opts["percentile"] = check_percentile(args["percentile"],
                                              where="--percentile_calibration_value", field=None)
    if args["pack_4bit"]:
        if weight_bw != 4:
            raise UsageError("--pack_4_bit_weights packs 4-bit weights; the weights are "
                             f"{weight_bw}-bit", where="--pack_4_bit_weights",
                             hint="add --weight_bw 4")
        opts["pack_4bit"] = True
    if args["export_encodings"]:
        opts["export_encodings"] = args["export_encodings"]
    return opts


def _float_flags(args: dict[str, Any], opts: dict[str, Any]) -> None:
    """--float_bw / --float_bias_bw act on float layers of the overrides: refuse them without."""
    for flag, dest, key in (("--float_bw", "float_bw", "float_bitwidth"),
                            ("--float_bias_bw", "float_bias_bw", "float_bias_bitwidth")):
        value = args[dest]
        if value is None:
            continue
        check_bitwidth(value, dtype="float", where=flag)
        if not args["overrides"]:
            raise UsageError(f"{flag} sets the precision of layers that --quantization_overrides "
                             "keeps in float, and no overrides file was given", where=flag)
        table = args["overrides"].value
        has_float = any(e.is_float for e in list(table.activations.values())
                        + list(table.params.values()))
        if dest == "float_bw" and not table.excluded_layers:
            raise UsageError(f"{flag} applies to the overrides' excluded_layers, and "
                             f"{args['overrides']} lists none", where=flag)
        if dest == "float_bias_bw" and not (has_float or table.excluded_layers):
            raise UsageError(f"{flag} applies to float Conv/Gemm/MatMul layers, and "
                             f"{args['overrides']} keeps none in float", where=flag)
        opts[key] = value


def _save_loadable(model: Any, path: str) -> str | None:
    """Write the quantized model; returns why onnxruntime cannot load it, or None.

    With ``--input_dim`` bound, a model with control flow may hold a branch that is dead for the
    bound shapes and no longer type-checks, which onnxruntime refuses although it runs the graph
    (see ``aicc.ort_free_shapes``). Then the model is written with its input and output dims free
    (what it computes does not depend on them), said on stderr, if onnxruntime loads that."""
    from ..ort_free_shapes import has_subgraphs, with_free_shapes
    from ..quantization import save_model_atomic

    save_model_atomic(model, path)
    note = onnxruntime_load_note(path)
    if note is None or not has_subgraphs(model):
        return note
    save_model_atomic(with_free_shapes(model), path)
    if onnxruntime_load_note(path) is not None:
        save_model_atomic(model, path)              # no better: keep the bound model
        return note
    print(f"note: {path}: written with free input and output dims: with the --input_dim shapes "
          "a branch the data never takes does not type-check, and onnxruntime refuses that "
          "graph", file=sys.stderr)
    return None


def onnxruntime_load_note(path: str) -> str | None:
    """None when onnxruntime loads the written model with its default settings; else why not and
    what to do (the model is valid ONNX either way; aicc's backends run it)."""
    import onnxruntime as ort

    def first_line(e: Exception) -> str:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return text.split(" : ")[-1][:300]

    quiet = ort.SessionOptions()
    quiet.log_severity_level = 4
    try:
        ort.InferenceSession(path, quiet, providers=["CPUExecutionProvider"])
        return None
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        why = first_line(e)
    basic = ort.SessionOptions()
    basic.log_severity_level = 4
    basic.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        ort.InferenceSession(path, basic, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        return (f"onnxruntime {ort.__version__} cannot load it ({first_line(e)}); it is valid "
                "ONNX: run it with aicc's interpreter (aicc compile --backend interpreter)")
    return (f"onnxruntime {ort.__version__} refuses it with its default graph optimizations "
            f"({why}), an onnxruntime limitation; load it with "
            "SessionOptions.graph_optimization_level = ORT_ENABLE_BASIC, or quantize "
            "activations to 8 or 16 bits (--act_bw)")


def _check_sources(args: dict[str, Any], opts: dict[str, Any]) -> None:
    """Where encodings come from: --input_list, --quantization_overrides, or both; with
    --enable_float_fallback the overrides alone (the seed: it and --input_list exclude each
    other); --ignore_quantization_overrides states that only --input_list counts."""
    where = "aicc quantize"
    if args["float_fallback"]:
        if args["input_list"]:
            raise UsageError("--enable_float_fallback and --input_list exclude each other",
                             where=where, hint="float fallback quantizes only what the "
                                               "overrides cover, without calibration data")
        if not args["overrides"]:
            raise UsageError("--enable_float_fallback quantizes what --quantization_overrides "
                             "covers, and no overrides file was given", where=where)
        opts["float_fallback"] = True
    if args["ignore_overrides"]:
        if args["overrides"]:
            raise UsageError("--ignore_quantization_overrides and --quantization_overrides "
                             "both given", where=where, hint="drop one of them")
        if not args["input_list"]:
            raise UsageError("--ignore_quantization_overrides calibrates every tensor, and no "
                             "--input_list was given", where=where)
    if not args["input_list"] and not args["overrides"]:
        raise UsageError("nothing to quantize with: give --input_list (calibration) or "
                         "--quantization_overrides (encodings)", where=where)


#: compile options as this command spells them (errors of shared code name options by key)
_SPELLINGS = {"input_list": "--input_list", "input_shapes": "--input_dim",
              "symbols": "--input_dim", "dask": "--dask", "dask_ship_data": "--dask-ship-data"}


def _spell_options() -> None:
    from ..errors import VOCABULARY
    vocabulary = VOCABULARY.get(None)
    if vocabulary is not None:
        vocabulary.update(_SPELLINGS)


def _summary(args: dict[str, Any], enc: dict[str, Any], amp_lines: list[str]) -> None:
    """What was quantized (and what AMP and AdaRound did), one line each."""
    ints = sum(1 for e in enc.get("activations", {}).values() if e.get("dtype") == "int")
    floats = len(enc.get("activations", {})) - ints
    print(f"quantized {args['input_model']} -> {args['output_model']}: "
          f"{ints} activations, {len(enc.get('params', {}))} parameters, "
          f"{len(enc.get('float_ops', {}))} float ops"
          + (f", {floats} tensors left in float" if floats else ""))
    for line in amp_lines:
        print(line)
    corrected = enc.get("bias_correction")
    if corrected is not None:
        layers = corrected["layers"].values()
        print(f"bias correction: {len(layers)} layers, largest shift "
              f"{max((r['max_shift'] for r in layers), default=0.0):.3g}")
    rounding = enc.get("rounding")
    if rounding:
        layers = rounding["layers"].values()
        gain = [10 * math.log10(r["nearest_error"] / r["error"]) for r in layers
                if r["improved"] and r["error"] > 0]
        print(f"adaround: {len(layers)} layers in {sum(r['seconds'] for r in layers):.2f}s, "
              f"{len(gain)} improved (reconstruction error {min(gain, default=0):.1f} to "
              f"{max(gain, default=0):.1f} dB lower than nearest rounding)")


def _algorithms(args: dict[str, Any], opts: dict[str, Any], registries: Any) -> list[str]:
    """The ``--algorithms`` names, checked (``cle``, ``cle-activations``)."""
    algorithms = []
    for algo in args["algorithms"]:
        for name in (a.strip() for a in algo.split(",") if a.strip()):
            if name not in ("cle", "cle-activations"):
                raise UsageError(f"unknown algorithm {name!r}", where="--algorithms",
                                 hint="supported: cle, cle-activations")
            if "cle" not in registries.passes:
                raise UsageError(f"--algorithms {name} needs the 'cle' pass, which is not "
                                 "registered", where="--algorithms")
            if name == "cle-activations" and not opts["per_channel"]:
                raise UsageError("cle-activations is for per-channel weights (per-tensor "
                                 "weights: use cle)", where="--algorithms",
                                 hint="add --use_per_channel_quantization, or use cle")
            if name == "cle-activations" and not args["input_list"]:
                raise UsageError("cle-activations measures the activations on --input_list, "
                                 "and none was given", where="--algorithms")
            algorithms.append(name)
    return algorithms


def run_quantize(argv: Sequence[str]) -> int:
    from . import quantize_dask
    _spell_options()
    parser = FlagParser("quantize", QUANTIZE_FLAGS + quantize_dask.FLAGS)
    args = parser.parse(_split_input_dims(argv))
    if args["help"]:
        print(parser.help_text())
        return 0
    for dest, flag in (("input_model", "--input_model"), ("output_model", "--output_model")):
        if not args[dest]:
            raise UsageError(f"{flag} is required", where="aicc quantize")
    opts = _options(args)
    if args["overrides"]:     # read once; every check and pass below gets the read file
        from ..quant import EncodingsFile
        args["overrides"] = EncodingsFile.read(args["overrides"])
    _float_flags(args, opts)
    from ..plugins import load_registries
    registries = load_registries()
    algorithms = _algorithms(args, opts, registries)
    input_shapes = []
    for item in args["input_dim"]:
        name, _, dims = item.partition("=")
        input_shapes.append(f"{name}={dims}")
    if args["num_bins"] is not None:
        if opts.get("calibration", "None") == "None" and opts["act_quantizer"] != "enhanced":
            raise UsageError("--num_histogram_bins only matters for histogram calibrations",
                             where="--num_histogram_bins",
                             hint="add --act_quantizer_calibration percentile|kl|mse|sqnr")
        if not args["input_list"]:
            raise UsageError("--num_histogram_bins needs --input_list", where="aicc quantize")
    engine = args["engine"] or "auto"
    if engine not in ("auto", "interpreter", "cpu"):
        raise UsageError(f"unknown engine {engine!r}", where="--calibration_engine",
                         hint="auto, interpreter or cpu")
    if args["engine"] and not args["input_list"]:
        raise UsageError("--calibration_engine runs calibration samples; give --input_list",
                         where="--calibration_engine")
    if args["bias_correction"] and not args["input_list"]:
        raise UsageError("--bias_correction measures the layers' inputs on --input_list, and "
                         "none was given", where="--bias_correction")
    _check_sources(args, opts)
    dask = quantize_dask.calibrate_options(args, "aicc quantize")
    if dask and not args["input_list"]:
        raise UsageError("--dask runs calibration; give --input_list", where="--dask")
    extra = algorithm_arguments(args, opts, input_shapes)
    if args["bias_correction"]:
        if "autoquant" in extra:
            raise UsageError("autoquant chooses its own steps; --bias_correction is not one of "
                             "them", where="--bias_correction", hint="drop one of the two")
        extra["bias_correction"] = {}
    if dask and set(extra) - {"adaround", "bias_correction"}:
        raise UsageError("--dask calibrates one model; AMP and AutoQuant re-quantize many",
                         where="--dask", hint="drop --dask, or use --apply_algorithms adaround")
    model, program, amp_lines = run_algorithms(
        extra, args["input_model"], args["output_model"], input_list=args["input_list"],
        overrides=args["overrides"], input_shapes=input_shapes, algorithms=algorithms,
        num_bins=args["num_bins"], engine=engine, registries=registries, **dask, **opts)
    note = _save_loadable(model, args["output_model"])
    if note:
        print(f"warning: {args['output_model']}: {note}", file=sys.stderr)
    _summary(args, program.encodings, amp_lines)
    if args["export_encodings"]:
        print(f"encodings written to {args['export_encodings']}")
    sys.stdout.flush()
    return 0
