"""Quantization (the vendor's profile-guided quantization): the ``quantization`` options group
(``-load-profile``, ``-dump-profile``, ``-convert-to-quantize``, ``-external-quantization``, the
schema, calibration and precision flags) and the data options ``input_list``
(``-input-list-file``) and ``input_shapes`` (``--input-shape``), turned into the passes
``input-shape``, ``quant-overrides``, ``int32-sandwich``, ``calibrate``, ``bias-correction`` and
``quantize`` (placed by their declared order). ``bias_correction`` (``-bias-correction``) is
aicc's, not the vendor's: see ``passes/quantization/bias_correction.py``.

Modes, as in the vendor's flow:

- ``dump_profile=FILE`` with ``input_list`` (or ``json_input_file`` with specializations):
  calibrate over the samples and write the profile. Like the vendor tool nothing is compiled and
  no container is written (an output is refused: it would be ignored); add ``calibrate`` to also
  compile the quantized program.
- ``profile=[FILE, ...]``: quantize with stored statistics (several profiles are merged).
- ``calibrate``: calibrate and quantize in one run.
- ``encodings=FILE``: AIMET encodings JSON (both forms); a full override needs no samples, a
  partial one calibrates the other tensors from ``input_list`` or takes them from ``profile``.
  INT32 entries add ``int32-sandwich``.

The options saying *how* to quantize (schemas, calibration method, percentile, precisions,
per-channel/row) are refused when nothing is quantized; the profile keeps histograms, so the
calibration method is chosen when it is loaded. ``input_shapes`` (``NAME=D0,D1,...``) binds an
input's dynamic dimensions, e.g. so raw files of an input list have a known size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import Option
from ..errors import UsageError, option_ref
from ..hookspecs import hookimpl
from ..quant.aimet import EncodingsFile

__all__ = ["OPTIONS"]

G = "quantization"


def _schema(text: str) -> str:
    from ..quant import parse_schema
    return parse_schema(text, field=None)


def _method(text: str) -> str:
    from ..quant import parse_calibration_method
    return parse_calibration_method(text, field=None)


def _percentile(value: float) -> float:
    from ..quant import check_percentile
    return check_percentile(value, field=None)


def _shapes(items: list[str]) -> list[str]:
    from aicc.passes.input_shape import parse_input_shapes
    parse_input_shapes(items, where="")     # the configuration names the option as it was given
    return list(items)


def _max_bins() -> int:
    from ..quant.profile import MAX_HISTOGRAM_BINS
    return MAX_HISTOGRAM_BINS


#: -quantization-precision -> activation and weight bitwidth; -quantization-precision-bias
_BITS = {"Int8": 8, "Int16": 16, "Int32": 32}

OPTIONS = [
    Option("input_list", str, "samples: a QNN input list (one line per sample); calibration "
           "data, fp16 overflow report, or the inputs to run a loaded-profile program on",
           flags=("-input-list-file", "--input-list-file"), path=True, metavar="FILE"),
    Option("input_shapes", list[str], "bind the dynamic dimensions of an input: NAME=D0,D1,... "
           "(repeatable)", flags=("--input-shape", "-input-shape"), repeat=True, check=_shapes,
           metavar="NAME=DIMS"),
    Option("dump_profile", str, "calibrate over the samples and write the profile (nothing is "
           "compiled unless calibrate)", group=G, flags=("-dump-profile", "--dump-profile"),
           path=True, metavar="FILE"),
    Option("profile", list[str], "quantize with this profile (several are merged)", group=G,
           flags=("-load-profile", "--load-profile"), separator=",", metavar="FILE[,FILE]"),
    Option("calibrate", bool, "calibrate over input_list and quantize in one run", group=G,
           flags=("-convert-to-quantize", "--convert-to-quantize")),
    Option("activation_schema", str, "asymmetric, symmetric, symmetric_with_uint8 (default), "
           "symmetric_with_power2_scale", group=G, check=_schema,
           flags=("-quantization-schema-activations", "--quantization-schema-activations"),
           metavar="SCHEMA"),
    Option("constant_schema", str, "schema of weights and constants (same values)", group=G,
           check=_schema, flags=("-quantization-schema-constants",
                                 "--quantization-schema-constants"), metavar="SCHEMA"),
    Option("calibration", str, "range method: None (min/max), Percentile, KLMinimization, "
           "KLMinimizationV2, MSE, SQNR", group=G, check=_method,
           flags=("-quantization-calibration", "--quantization-calibration"), metavar="METHOD"),
    Option("percentile", float, "percentile in [90, 100] for calibration=Percentile", group=G,
           check=_percentile, flags=("-percentile-calibration-value",
                                     "--percentile-calibration-value"), metavar="P"),
    Option("num_bins", int, "histogram bins per tensor in the profile (default 512)", group=G,
           flags=("-num-histogram-bins", "--num-histogram-bins"), minimum=1, metavar="N"),
    Option("precision", str, "Int8 (default) or Int16 activations and weights", group=G,
           choices=("Int8", "Int16"), fold_case=True,
           flags=("-quantization-precision", "--quantization-precision"), metavar="Int8|Int16"),
    Option("bias_precision", str, "Int32 (default) or Int8 biases", group=G,
           choices=("Int8", "Int32"), fold_case=True,
           flags=("-quantization-precision-bias", "--quantization-precision-bias"),
           metavar="Int8|Int32"),
    Option("per_channel", bool, "per-channel weights for Conv, ConvTranspose, Gemm and MatMul",
           group=G, flags=("-enable-channelwise", "--enable-channelwise")),
    Option("per_row", bool, "per-row weights for Gemm and MatMul", group=G,
           flags=("-enable-rowwise", "--enable-rowwise")),
    Option("bias_correction", bool, "aicc's: shift each Conv/Gemm bias by the mean output "
           "error of its quantized weights on the input_list samples (pass bias-correction)",
           group=G, flags=("-bias-correction", "--bias-correction")),
    # read once here (a bad file fails before any work); the passes receive the instance
    Option("encodings", EncodingsFile, "AIMET encodings JSON to quantize with (full or "
           "partial)", group=G, flags=("-external-quantization", "--external-quantization"),
           path=True, metavar="FILE"),
]

#: options saying how to quantize: refused when nothing quantizes
_HOW = ("constant_schema", "percentile", "precision", "bias_precision", "per_channel",
        "per_row", "activation_schema", "calibration")


@hookimpl
def aicc_add_options(options):
    for option in OPTIONS:
        if option.name == "num_bins":
            option = dataclasses.replace(option, maximum=_max_bins())
        options.add(option)


def _q(config: Any, name: str) -> Any:
    return config.get(f"{G}.{name}")


def _check_modes(config: Any) -> tuple[bool, bool]:
    """(quantizing, calibrating) after refusing contradicting modes."""
    dump, load = _q(config, "dump_profile"), _q(config, "profile")
    convert, ext = _q(config, "calibrate"), _q(config, "encodings")
    if dump and load:
        raise UsageError(f"{option_ref(G + '.dump_profile')} and {option_ref(G + '.profile')} "
                         "both given", hint="dump the profile in one run, load it in the next")
    if convert and load:
        raise UsageError(f"{option_ref(G + '.calibrate')} calibrates; {option_ref(G + '.profile')}"
                         " gives the statistics instead", hint="use one of them")
    samples = _samples(config, bool(dump or convert or ext))
    calibrating = bool(dump or convert or (ext and not load and samples))
    if calibrating and not samples:
        key = G + (".dump_profile" if dump else ".calibrate")
        raise UsageError(f"{option_ref(key)} needs calibration samples",
                         hint=f"add {option_ref('input_list')} (or "
                              f"{option_ref('json_input_file')} with "
                              f"{option_ref('specializations')})")
    return bool(convert or load or ext), calibrating


def _samples(config: Any, wants: bool) -> str | None:
    il = config.get("input_list")
    return il or (config.get("json_input_file", None) if wants else None)


def _input_list_unused(config: Any, request: Any, loading: bool) -> None:
    """input_list when nothing calibrates: with a loaded profile (the vendor's PGQ step) the CLI
    runs the compiled program on the listed inputs; otherwise another feature must use them."""
    others = any(config.get(k, None) for k in ("fp16", "node_precision_info",
                                               "execute_nodes_in_fp16"))
    if loading:
        if config.get("compile_only", None) and not others:
            raise UsageError(f"{option_ref('input_list')} gives the inputs to run the compiled "
                             "program on, and -compile-only runs nothing",
                             hint="drop -compile-only to run on the listed inputs, or drop "
                                  f"{option_ref('input_list')}")
        request.run_input_list = config.get("input_list")
    elif not others:
        raise UsageError(f"{option_ref('input_list')} gives calibration samples, and nothing "
                         "calibrates", hint=f"add {option_ref(G + '.dump_profile')}, "
                                            f"{option_ref(G + '.calibrate')} or "
                                            f"{option_ref(G + '.profile')}")


def _quantize_options(config: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for name, key in (("activation_schema", "activation_schema"),
                      ("constant_schema", "constant_schema"), ("calibration", "calibration")):
        if config.given(f"{G}.{name}"):
            opts[key] = _q(config, name)
    if config.given(G + ".percentile"):
        if _q(config, "calibration") != "Percentile":
            raise UsageError(f"{option_ref(G + '.percentile')} needs "
                             f"{option_ref(G + '.calibration')}=Percentile")
        opts["percentile"] = _q(config, "percentile")
    if config.given(G + ".precision"):
        opts["act_bitwidth"] = opts["weight_bitwidth"] = _BITS[_q(config, "precision")]
    if config.given(G + ".bias_precision"):
        opts["bias_bitwidth"] = _BITS[_q(config, "bias_precision")]
    if _q(config, "per_channel"):
        opts["per_channel"] = True
    if _q(config, "per_row"):
        opts["per_row"] = True
    if config.get("keep_original_precision", None):   # those op types stay float (fp32)
        opts["keep_op_types"] = list(config.get("keep_original_precision"))
    profiles = [p.strip() for p in _q(config, "profile") or [] if p.strip()]
    if config.given(G + ".profile"):
        if not profiles:
            raise UsageError("no profile file given", where=option_ref(G + ".profile"))
        opts["profile"] = profiles
    return opts


def _calibrate_options(config: Any) -> dict[str, Any]:
    il, dump = config.get("input_list"), _q(config, "dump_profile")
    cal: dict[str, Any] = ({"input_list": str(il)} if il
                           else {"json_input_file": str(config.get("json_input_file"))})
    if dump:
        cal["dump_profile"] = str(dump)
    if config.given(G + ".num_bins"):
        cal["num_bins"] = _q(config, "num_bins")
    elif not dump and (_q(config, "calibration") or "None") == "None":
        cal["histograms"] = False   # min-max reads ranges only, and no profile is kept
    if config.given("dask"):        # calibration runs in shards on the same cluster
        cal["dask"] = config.get("dask")
        if config.get("dask_ship_data", None):
            cal["dask_ship_data"] = True
    return cal


def _add_bias_correction(config: Any, request: Any, calibrating: bool) -> None:
    """``bias-correction`` measures the layers' inputs on the input list that calibrates."""
    if not calibrating or not config.get("input_list"):
        raise UsageError(f"{option_ref(G + '.bias_correction')} measures the layers' inputs on "
                         f"the calibration samples of {option_ref('input_list')}, and nothing "
                         "is calibrated from them",
                         hint=f"add {option_ref('input_list')} and "
                              f"{option_ref(G + '.calibrate')}")
    opts: dict[str, Any] = {"input_list": str(config.get("input_list"))}
    request.add_pass("bias-correction", opts, by=G)


def _add_encodings(request: Any, ext: EncodingsFile) -> None:
    """The file was read once (the option's type); every pass gets that instance."""
    request.add_pass("quant-overrides", {"file": ext}, by=G)
    if any(not e.is_float and e.bitwidth == 32 for e in ext.value.activations.values()):
        request.add_pass("int32-sandwich", {"overrides": ext}, by=G)


@hookimpl
def aicc_configure(config, request):
    if config.given("input_shapes"):
        request.add_pass("input-shape", {"shapes": list(config.get("input_shapes"))}, by=G)
    if config.get("dump_custom_io_template", None):
        return                      # the custom I/O feature refuses what would be ignored
    quantizing, calibrating = _check_modes(config)
    if config.given("input_list") and not calibrating:
        _input_list_unused(config, request, bool(_q(config, "profile")))
    if config.given(G + ".num_bins") and not calibrating:
        raise UsageError(f"{option_ref(G + '.num_bins')} sets the bins of a new profile, and "
                         "nothing calibrates")
    how = [G + "." + k for k in _HOW if config.given(f"{G}.{k}")]
    if how and not quantizing:
        hint = (f"the profile keeps histograms: choose these when loading it "
                f"({option_ref(G + '.profile')})" if _q(config, "dump_profile") else
                f"add {option_ref(G + '.calibrate')}, {option_ref(G + '.profile')} or "
                f"{option_ref(G + '.encodings')}")
        raise UsageError(f"{option_ref(how[0])} says how to quantize, and nothing is quantized",
                         hint=hint)
    opts = _quantize_options(config) if quantizing else {}
    if _q(config, "encodings"):
        _add_encodings(request, _q(config, "encodings"))
    if calibrating:
        request.add_pass("calibrate", _calibrate_options(config), by=G)
    if _q(config, "bias_correction"):
        _add_bias_correction(config, request, quantizing and calibrating)
    if quantizing:
        request.add_pass("quantize", opts, by=G)
    dump = _q(config, "dump_profile")
    if dump and not quantizing:
        if config.given("output"):
            raise UsageError(f"{option_ref(G + '.dump_profile')} only writes the profile (as the "
                             f"vendor tool does); {option_ref('output')} would be ignored",
                             hint=f"drop {option_ref('output')}, or add "
                                  f"{option_ref(G + '.calibrate')} to also compile the "
                                  "quantized program")
        request.pipeline_only = f"quantization profile is dumped at {dump}"
