"""Custom I/O and precision flags of ``aicc compile`` turned into pipeline steps:
``-custom-IO-list-file``, ``-aic-preproc``, ``-dump-custom-IO-config-template``,
``-convert-to-fp16``, ``-node-precision-info``, ``-keep-original-precision-for-nodes`` and
``-execute-nodes-in-fp16``.

- ``-custom-IO-list-file=FILE`` adds ``custom-io{config=FILE}`` at stage ``interface``; with
  ``-aic-preproc`` the conversions become nodes of the compiled graph (``conversions=device``),
  without it the Session does them on the host (``conversions=host``; see ``passes/custom_io.py``).
  ``-aic-preproc`` without a custom I/O list has nothing to move and is refused. With
  ``-external-quantization``, int8 entries take Scale/Offset from the encodings file.
- ``-dump-custom-IO-config-template=FILE[,PROFILE]`` writes a template listing every model input
  and output and exits without compiling, like the vendor tool; with a calibration PROFILE the
  int8 Scale/Offset of float I/O are filled from the profile's statistics, using the
  ``-quantization-schema-activations`` and ``-quantization-calibration`` flags when the
  quantization feature provides them (defaults ``symmetric_with_uint8`` / min-max otherwise).
- The fp16 flags add one ``convert-fp16`` step at stage ``bind``: it must see the model's own node
  names and its Conv/BatchNormalization pairs before ``fold-batchnorm`` (stage ``simplify``)
  merges them (see ``passes/convert_fp16.py``). ``-keep-original-precision-for-nodes`` keeps
  its op types in the model's precision while the rest is lowered: to fp16 (with
  ``-convert-to-fp16``; with ``-node-precision-info`` named instances still run in fp16, as the
  mixed-precision seed combines them) and/or to int8 (with ``-load-profile``,
  ``-convert-to-quantize`` or ``-external-quantization``: the quantization feature passes it to
  ``quantize{keep_op_types}``). Without either it is refused. Input data given with
  ``-json-input-file`` or ``-input-list-file`` feeds the fp16 overflow report.

Files and op-type lists are checked here, before any work; names are checked against the model
by the passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..compiler import CompileRequest
from ..errors import ConfigError, UsageError
from .flags import Flag

__all__ = ["FLAGS", "contribute", "standalone"]

FLAGS = [
    Flag(("-custom-IO-list-file", "--custom-io-list-file"), "custom_io_list_file",
         help="compile for the custom I/O layouts and precisions of this YAML file",
         metavar="FILE"),
    Flag(("-aic-preproc", "--aic-preproc"), "aic_preproc", "switch",
         help="do the custom I/O conversions inside the compiled program instead of on the host"),
    Flag(("-dump-custom-IO-config-template", "--dump-custom-io-config-template"),
         "dump_custom_io_template",
         help="write a custom I/O template of every input and output (Scale/Offset from a "
              "calibration PROFILE if given) and exit", metavar="FILE[,PROFILE]"),
    Flag(("-convert-to-fp16", "--convert-to-fp16"), "convert_to_fp16", "switch",
         help="run all floating-point computation in fp16 (program I/O stay as declared)"),
    Flag(("-node-precision-info", "--node-precision-info"), "node_precision_info",
         help="YAML file whose FP16NodeInstanceNames (first output names) run in fp16",
         metavar="FILE"),
    Flag(("-keep-original-precision-for-nodes", "--keep-original-precision-for-nodes"),
         "keep_original_precision", help="op types that keep their original precision "
                                         "(with -convert-to-fp16)", metavar="OP[,OP]"),
    Flag(("-execute-nodes-in-fp16", "--execute-nodes-in-fp16"), "execute_nodes_in_fp16",
         help="op types whose every node runs in fp16", metavar="OP[,OP]"),
]

#: flags of the quantization feature that quantize (keep-original-precision then also keeps
#: those op types out of quantization; the quantization feature passes it to ``quantize``)
_QUANTIZING_FLAGS = ("-load-profile", "-convert-to-quantize", "-external-quantization")
_FP16_FLAGS = ("-convert-to-fp16", "-node-precision-info", "-execute-nodes-in-fp16",
               "-keep-original-precision-for-nodes")


def _flag_value(args: dict[str, Any], spelling: str) -> Any:
    """The value of a flag another feature module may define (found by its vendor spelling, so
    its dest name does not matter); None when no module defines it."""
    from .compile_cmd import COMPILE_FLAGS, _features

    for flag in COMPILE_FLAGS + [f for m in _features() for f in m.FLAGS]:
        if spelling in flag.names:
            return args.get(flag.dest)
    return None


def _op_list(text: str, flag: str) -> list[str]:
    from ..passes.convert_fp16 import check_op_types

    items = [t.strip() for t in text.split(",")]
    return check_op_types(items, where=flag)


def _template_arg(text: str) -> tuple[str, str | None]:
    parts = text.split(",")
    if len(parts) > 2 or not all(p.strip() for p in parts):
        raise UsageError(f"{text!r} is not FILE or FILE,PROFILE",
                         where="-dump-custom-IO-config-template")
    return parts[0].strip(), (parts[1].strip() if len(parts) == 2 else None)


def contribute(args: dict[str, Any], req: CompileRequest) -> None:
    """Check the flags and add the custom-io / convert-fp16 steps they ask for."""
    from ..customio import parse_custom_io
    from ..configfile import load_yaml

    cio = args.get("custom_io_list_file")
    template = args.get("dump_custom_io_template")
    preproc = args.get("aic_preproc")
    fp16 = args.get("convert_to_fp16")
    npi = args.get("node_precision_info")
    keep = args.get("keep_original_precision")
    exe16 = args.get("execute_nodes_in_fp16")
    if template:
        given = [f for f, v in (("-custom-IO-list-file", cio), ("-aic-preproc", preproc),
                                ("-convert-to-fp16", fp16), ("-node-precision-info", npi),
                                ("-keep-original-precision-for-nodes", keep),
                                ("-execute-nodes-in-fp16", exe16)) if v]
        if given:
            raise UsageError(f"-dump-custom-IO-config-template writes a template and exits "
                             f"without compiling; {given[0]} would be ignored",
                             where="aicc compile", hint="dump the template first, edit it, then "
                                                        "compile with -custom-IO-list-file")
        _template_arg(template)
        return
    if preproc and not cio:
        raise UsageError("-aic-preproc moves the custom I/O conversions onto the device, but no "
                         "-custom-IO-list-file is given", where="aicc compile",
                         hint="add -custom-IO-list-file=FILE, or drop -aic-preproc")
    if cio:
        # the file itself (keys, types, values) is checked now; names against the model later
        parse_custom_io(load_yaml(cio, what="custom I/O list file"), cio, None, None,
                        external_quantization=bool(_flag_value(args, "-external-quantization")))
        options = {"config": str(cio), "conversions": "device" if preproc else "host"}
        external = _flag_value(args, "-external-quantization")
        if external:    # int8 Scale/Offset come from the encodings, as the vendor documents
            options["encodings"] = str(external)
        req.feature_steps.append(("interface", "custom-io", options))
    quantizing = any(_flag_value(args, f) for f in _QUANTIZING_FLAGS)
    if keep and not (fp16 or npi or exe16 or quantizing):
        raise UsageError("-keep-original-precision-for-nodes keeps op types in their original "
                         "precision while the rest is lowered, and nothing is lowered",
                         where="aicc compile",
                         hint="add -convert-to-fp16 or -node-precision-info (fp16), or quantize "
                              "(-load-profile, -convert-to-quantize, -external-quantization)")
    if keep:
        _op_list(keep, "-keep-original-precision-for-nodes")  # checked before any work
    if not (fp16 or npi or exe16):
        return
    from ..passes.convert_fp16 import load_node_precision_info

    options: dict[str, Any] = {"all": bool(fp16)}
    if npi:
        load_node_precision_info(npi)
        options["node_precision_info"] = str(npi)
    if exe16:
        options["op_types"] = _op_list(exe16, "-execute-nodes-in-fp16")
    if keep:
        options["keep_op_types"] = _op_list(keep, "-keep-original-precision-for-nodes")
    samples = args.get("json_input_file") or _flag_value(args, "-input-list-file")
    if samples:
        options["sample_inputs"] = str(samples)
        if cio:
            options["sample_custom_io"] = str(cio)
    # stage "select": before fold-batchnorm, which renames outputs and merges Conv/BN pairs
    req.feature_steps.append(("select", "convert-fp16", options))


def standalone(args: dict[str, Any]) -> int | None:
    """``-dump-custom-IO-config-template``: write the template and return 0 (no compile)."""
    template = args.get("dump_custom_io_template")
    if not template:
        return None
    from .. import ir
    from ..customio import template_entries, write_template
    from ..program import Program

    path, profile = _template_arg(template)
    if not args.get("model"):
        raise UsageError("no model given", where="aicc compile", hint="pass -m=model.onnx")
    program = Program.from_model(ir.load_model(args["model"]))
    qparams = None
    if profile:
        qparams = profile_qparams(profile, program,
                                  schema=_flag_value(args, "-quantization-schema-activations"),
                                  calibration=_flag_value(args, "-quantization-calibration"))
    entries = template_entries(program.model_inputs, program.model_outputs, qparams)
    write_template(path, entries, model=Path(args["model"]).name)
    print(f"wrote the custom I/O template {path} ({len(entries)} entries"
          + (f", Scale/Offset from {profile}" if profile else "") + "); edit it and compile with "
          "-custom-IO-list-file")
    return 0


def profile_qparams(profile: str | Path, program: Any, *, schema: str | None = None,
                    calibration: str | None = None) -> dict[str, tuple[float, int]]:
    """int8 (Scale, Offset) of every float model input and output from a calibration profile.

    The profile must hold statistics for those tensors (a profile dumped with the model's own
    I/O, as the vendor says). Its graph hash is not compared: a profile hashes the graph as the
    compile pipeline had transformed it, which a template dump does not build; the tensor names
    must match instead. The range comes from ``calibration`` (default min/max), the encoding from
    the activation ``schema`` (default ``symmetric_with_uint8``), stored as int8 (a uint8 grid
    becomes offset -128), in the vendor convention real = (q - Offset) * Scale.
    """
    from ..configfile import load_yaml
    from ..quant import (DEFAULT_PERCENTILE, DEFAULT_SCHEMA, parse_calibration_method,
                         parse_profile, parse_schema, schema_encoding, select_range)

    schema = parse_schema(schema or DEFAULT_SCHEMA, field="-quantization-schema-activations")
    method = parse_calibration_method(calibration or "None")
    data = load_yaml(profile, what="calibration profile")
    prof = parse_profile(data, where=str(profile))
    out: dict[str, tuple[float, int]] = {}
    for desc in list(program.model_inputs) + list(program.model_outputs):
        if desc.dtype not in ("float32", "float16"):
            continue
        if desc.name not in prof:
            raise ConfigError(f"the profile has no statistics for model {desc.name!r}",
                              where=profile, hint="dump the profile on the model's own I/O "
                                                  "(without -custom-IO-list-file)")
        lo, hi = select_range(prof[desc.name], method, percentile=DEFAULT_PERCENTILE,
                              symmetric=schema != "asymmetric", name=desc.name)
        enc = schema_encoding(schema, lo, hi, 8, name=desc.name).with_storage(True)
        out[desc.name] = (float(enc.scale), int(enc.zero_point))
    return out
