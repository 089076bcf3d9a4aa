"""Custom I/O: ``custom_io`` (``-custom-IO-list-file``), ``aic_preproc`` (``-aic-preproc``) and the
CLI action ``-dump-custom-IO-config-template``.

- ``custom_io=FILE`` adds the ``custom-io`` pass; with ``aic_preproc`` the conversions become
  nodes of the compiled graph (``conversions=device``), without it the Session does them on the
  host (``conversions=host``; see ``passes/custom_io.py``). ``aic_preproc`` without a custom I/O
  list has nothing to move and is refused. With ``quantization.encodings``, int8 entries take
  Scale/Offset from the encodings file. Each file is read once (the options' types) and checked
  whole before any work; the pass receives the read values and checks names against the model.
- ``-dump-custom-IO-config-template=FILE[,PROFILE]`` writes a template listing every model input
  and output and exits without compiling, like the vendor tool; with a calibration PROFILE the
  int8 Scale/Offset of float I/O are filled from the profile's statistics, using
  ``quantization.activation_schema`` and ``quantization.calibration`` when given (defaults
  ``symmetric_with_uint8`` / min-max).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Option
from ..errors import ConfigError, UsageError, option_ref, render_options
from ..hookspecs import hookimpl

__all__ = ["OPTIONS", "profile_qparams"]


def _template_arg(text: str) -> tuple[str, str | None]:
    parts = text.split(",")
    if len(parts) > 2 or not all(p.strip() for p in parts):
        raise UsageError(f"{text!r} is not FILE or FILE,PROFILE",
                         where=option_ref("dump_custom_io_template"))
    return parts[0].strip(), (parts[1].strip() if len(parts) == 2 else None)


def _custom_io_file() -> Any:
    from aicc.passes.custom_io import CustomIOFile
    return CustomIOFile


OPTIONS = [
    Option("aic_preproc", bool, "do the custom I/O conversions inside the compiled program "
           "instead of on the host", flags=("-aic-preproc", "--aic-preproc")),
    Option("dump_custom_io_template", str, "write a custom I/O template of every input and "
           "output (Scale/Offset from a calibration PROFILE if given) and exit",
           flags=("-dump-custom-IO-config-template", "--dump-custom-io-config-template"),
           cli_only=True, metavar="FILE[,PROFILE]"),
]


@hookimpl
def aicc_add_options(options):
    options.add(Option("custom_io", _custom_io_file(), "compile for the custom I/O layouts and "
                       "precisions of this YAML file",
                       flags=("-custom-IO-list-file", "--custom-io-list-file"), path=True,
                       metavar="FILE"))
    options.add(*OPTIONS)


#: options that compile something; the template dump compiles nothing, so they are refused with it
_COMPILING = ("custom_io", "aic_preproc", "fp16", "node_precision_info",
              "keep_original_precision", "execute_nodes_in_fp16", "quantization.dump_profile",
              "quantization.profile", "quantization.calibrate", "quantization.encodings",
              "input_list", "quantization.num_bins", "quantization.constant_schema",
              "quantization.percentile", "quantization.precision",
              "quantization.bias_precision", "quantization.per_channel",
              "quantization.per_row")


@hookimpl
def aicc_configure(config, request):
    template = config.get("dump_custom_io_template", None)
    if template:
        given = [k for k in _COMPILING if config.given(k)]
        if given:
            raise UsageError(f"{option_ref('dump_custom_io_template')} writes a template and "
                             f"exits without compiling; {option_ref(given[0])} would be ignored",
                             hint=f"dump the template first, edit it, then compile with "
                                  f"{option_ref('custom_io')}")
        _template_arg(template)
        request.standalone = lambda: _write_template(config, template)
        return
    cio = config.get("custom_io")
    if config.get("aic_preproc") and cio is None:
        raise UsageError(f"{option_ref('aic_preproc')} moves the custom I/O conversions onto the "
                         f"device, but no {option_ref('custom_io')} is given",
                         hint=f"add {option_ref('custom_io')}, or drop "
                              f"{option_ref('aic_preproc')}")
    if cio is None:
        return
    from ..customio import parse_custom_io
    external = config.get("quantization.encodings", None)
    # the whole file is checked now (Scale/Offset rules depend on the encodings); names later
    parse_custom_io(cio.value, cio.path, None, None, external_quantization=bool(external))
    options: dict[str, Any] = {"config": cio,
                               "conversions": "device" if config.get("aic_preproc") else "host"}
    if external:    # int8 Scale/Offset come from the encodings (read once), as documented
        options["encodings"] = external
    request.add_pass("custom-io", options, by="custom_io")


def _write_template(config: Any, template: str) -> int:
    """Write the template (no compile); return the exit code."""
    from .. import ir
    from ..customio import template_entries, write_template
    from ..program import Program

    path, profile = _template_arg(template)
    model = config.get("model")
    if not model:
        raise UsageError("no model given", hint=f"pass {option_ref('model')}")
    program = Program.from_model(ir.load_model(model))
    qparams = None
    if profile:
        qparams = profile_qparams(profile, program,
                                  schema=config.get("quantization.activation_schema", None),
                                  calibration=config.get("quantization.calibration", None))
    entries = template_entries(program.model_inputs, program.model_outputs, qparams)
    write_template(path, entries, model=Path(str(model)).name)
    print(render_options(f"wrote the custom I/O template {path} ({len(entries)} entries"
                         + (f", Scale/Offset from {profile}" if profile else "")
                         + "); edit it and compile with " + option_ref("custom_io")))
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

    schema = parse_schema(schema or DEFAULT_SCHEMA,
                          field=option_ref("quantization.activation_schema"))
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
                                                  f"(without {option_ref('custom_io')})")
        lo, hi = select_range(prof[desc.name], method, percentile=DEFAULT_PERCENTILE,
                              symmetric=schema != "asymmetric", name=desc.name)
        enc = schema_encoding(schema, lo, hi, 8, name=desc.name).with_storage(True)
        out[desc.name] = (float(enc.scale), int(enc.zero_point))
    return out
