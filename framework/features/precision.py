"""Mixed precision: ``fp16`` (``-convert-to-fp16``), ``node_precision_info``
(``-node-precision-info``), ``keep_original_precision`` (``-keep-original-precision-for-nodes``)
and ``execute_nodes_in_fp16`` (``-execute-nodes-in-fp16``), turned into one ``convert-fp16`` step.

``convert-fp16`` picks nodes by the model's own output names and Conv/BatchNormalization pairs, so
it declares it runs before ``fold-constants`` and ``fold-batchnorm`` merge them (see
``passes/precision/convert_fp16.py``). ``keep_original_precision`` keeps its op types in the model's
precision while the rest is lowered: to fp16 (with ``fp16``; with ``node_precision_info`` named
instances still run in fp16, as the mixed-precision seed combines them) and/or to int8 (when
quantizing: the quantization feature passes it to ``quantize{keep_op_types}``); without either it
is refused. Input data (``json_input_file`` or ``input_list``) feeds the fp16 overflow report
and the accuracy check: ``fp16_tolerance`` (``-fp16-tolerance``, default 0.02, ``off`` to skip)
is the largest output error, ``max |fp16 - fp32| / max |fp32|`` per output over the samples, before
``convert-fp16`` keeps nodes in fp32 for accuracy (``passes/precision/accuracy.py``).
Files and op-type lists are checked before any work; names are checked against the model by the
pass.
"""

from __future__ import annotations

import math
from typing import Any

from ..config import Option
from ..errors import UsageError, option_ref
from ..hookspecs import hookimpl

__all__ = ["QUANTIZING"]

#: options that quantize (keep_original_precision then also keeps those op types out of it)
QUANTIZING = ("quantization.profile", "quantization.calibrate", "quantization.encodings")


def _tolerance(value: Any) -> str:
    """A checked ``fp16_tolerance``: ``off``, or a number in (0, 1) (kept as text: the pass
    option reads it through ``_tolerance_value``)."""
    text = str(value).strip()
    if text.lower() == "off":
        return "off"
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not 0.0 < number < 1.0:
        raise UsageError(f"expected a relative error in (0, 1) or 'off', got {text!r}",
                         hint="e.g. 0.02 (the default) or 5e-2; 'off' skips the accuracy check")
    return repr(number)


def _tolerance_value(text: str) -> float:
    """The pass's ``tolerance`` for a checked ``fp16_tolerance``: 0.0 for ``off``."""
    return 0.0 if text == "off" else float(text)


def _op_types(items: list[str]) -> list[str]:
    from aicc.passes.precision.convert_fp16 import check_op_types
    return check_op_types(items, where=None)


@hookimpl
def aicc_add_options(options):
    from aicc.passes.precision.convert_fp16 import DEFAULT_TOLERANCE, NodePrecisionFile

    options.add(Option("fp16", bool, "run all floating-point computation in fp16 (program I/O "
                       "stay as declared)", flags=("-convert-to-fp16", "--convert-to-fp16")))
    options.add(Option("node_precision_info", NodePrecisionFile, "YAML file whose "
                       "FP16NodeInstanceNames (first output names) run in fp16",
                       flags=("-node-precision-info", "--node-precision-info"), path=True,
                       metavar="FILE"))
    options.add(Option("keep_original_precision", list[str], "op types that keep their "
                       "original precision (with fp16 or quantization)",
                       flags=("-keep-original-precision-for-nodes",
                              "--keep-original-precision-for-nodes"),
                       separator=",", check=_op_types, metavar="OP[,OP]"))
    options.add(Option("execute_nodes_in_fp16", list[str], "op types whose every node runs in "
                       "fp16", flags=("-execute-nodes-in-fp16", "--execute-nodes-in-fp16"),
                       separator=",", check=_op_types, metavar="OP[,OP]"))
    options.add(Option("fp16_tolerance", float | str, "with fp16 and input data: the largest "
                       "output error (max |fp16 - fp32| / max |fp32| per output, over the samples) "
                       f"before nodes stay in fp32 for accuracy; default {DEFAULT_TOLERANCE}, "
                       "'off' skips the check", flags=("-fp16-tolerance", "--fp16-tolerance"),
                       check=_tolerance, metavar="ERROR|off"))


def _check_tolerance_use(config, converting: bool) -> None:
    """``fp16_tolerance`` acts on an fp16 program compiled with input data; refuse it anywhere
    else rather than ignore it."""
    if not config.given("fp16_tolerance"):
        return
    if not converting:
        raise UsageError(f"{option_ref('fp16_tolerance')} bounds the error of an fp16 program, "
                         "and nothing runs in fp16",
                         hint=f"add {option_ref('fp16')} or {option_ref('node_precision_info')}")
    if not (config.get("json_input_file", None) or config.get("input_list", None)):
        raise UsageError(f"{option_ref('fp16_tolerance')} is measured on sample inputs, and "
                         "none were given",
                         hint=f"add {option_ref('input_list')} or {option_ref('json_input_file')}")


@hookimpl
def aicc_configure(config, request):
    fp16, npi = config.get("fp16"), config.get("node_precision_info")
    keep, exe16 = config.get("keep_original_precision"), config.get("execute_nodes_in_fp16")
    quantizing = any(config.given(k) for k in QUANTIZING if k in config.table.options)
    if keep and not (fp16 or npi or exe16 or quantizing):
        raise UsageError(f"{option_ref('keep_original_precision')} keeps op types in their "
                         "original precision while the rest is lowered, and nothing is lowered",
                         hint=f"add {option_ref('fp16')} or {option_ref('node_precision_info')} "
                              f"(fp16), or quantize")
    _check_tolerance_use(config, bool(fp16 or npi or exe16))
    if not (fp16 or npi or exe16):
        return
    options: dict[str, Any] = {"all": bool(fp16)}
    if npi is not None:
        options["node_precision_info"] = npi
    if exe16:
        options["op_types"] = list(exe16)
    if keep:
        options["keep_op_types"] = list(keep)
    samples = config.get("json_input_file", None) or config.get("input_list", None)
    if samples:
        options["sample_inputs"] = str(samples)
        if config.get("custom_io", None) is not None:
            options["sample_custom_io"] = config.get("custom_io")
        if config.given("fp16_tolerance"):
            options["tolerance"] = _tolerance_value(config.get("fp16_tolerance"))
    request.add_pass("convert-fp16", options, by="fp16")
