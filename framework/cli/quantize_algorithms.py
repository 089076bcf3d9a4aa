"""``aicc quantize``'s advanced algorithms, the qairt-quantizer way: ``--apply_algorithms``,
``--config`` (the AIMET YAML templates) and ``--use_aimet_quantizer``. Every flag of the feature
is declared here (``ALGORITHM_FLAGS``) and turned into ``quantize_model`` arguments by
``algorithm_arguments``, so the feature can move into a plugin as one piece.

Available: ``adaround`` (with a config's ``adaround`` section and its dataset, or without a config
on the ``--input_list`` samples) and ``amp`` (a config's ``amp`` section, or ``--auto_precision``
without one; see ``quantize_amp``) and ``autoquant`` (a config's ``autoquant`` section; see
``quantize_autoquant``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NotYetSupportedError, UsageError
from .flags import Flag, float_value

__all__ = ["ALGORITHM_FLAGS", "algorithm_arguments", "run_algorithms", "AIMET_NOTE"]

ALGORITHM_FLAGS = [
    Flag(("--apply_algorithms",), "apply_algorithms", "repeat",
         help="advanced algorithms: adaround, amp, autoquant", metavar="NAME"),
    Flag(("--config",), "algo_config",
         help="YAML config of --apply_algorithms (datasets, adaround, amp, autoquant)",
         metavar="FILE"),
    Flag(("--use_aimet_quantizer",), "use_aimet_quantizer", "switch",
         help="accepted for qairt-quantizer compatibility: aicc itself runs the algorithms"),
    Flag(("--auto_precision",), "auto_precision", convert=float_value("--auto_precision"),
         help="AMP without callbacks: keep layers in fp16 until the output SQNR on the "
              "--input_list samples reaches this many dB", metavar="SQNR_DB"),
]

AIMET_NOTE = ("note: --use_aimet_quantizer: aicc is the quantizer; AdaRound runs natively "
              "(numpy on aicc's IR), AIMET is not used")

_AVAILABLE = ("adaround", "amp", "autoquant")
_KNOWN = ("adaround", "amp", "autoquant")
_SCHEMES = {"post_training_tf": "tf", "post_training_tf_enhanced": "enhanced"}
_UNSUPPORTED_ADAROUND = {
    "param_bw_override_list": "give per-layer weight bitwidths in --quantization_overrides "
                              "(param_encodings with a bitwidth)",
    "ignore_quant_ops_list": "aicc's AdaRound feeds each layer the float model's activations, "
                             "so there are no other quantizers to skip; remove the key",
    "default_config_file": "AIMET quantsim config files are not read; use the quantizer flags",
}


def _names(args: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for item in args["apply_algorithms"]:
        for name in (a.strip() for a in item.split(",") if a.strip()):
            if name not in _KNOWN:
                from ..errors import did_you_mean
                raise UsageError(f"unknown algorithm {name!r}", where="--apply_algorithms",
                                 hint=did_you_mean(name, _KNOWN))
            if name not in _AVAILABLE:
                raise NotYetSupportedError(f"'{name}' is not implemented in aicc yet",
                                           where="--apply_algorithms",
                                           hint="available: " + ", ".join(_AVAILABLE))
            if name not in names:
                names.append(name)
    return names


def _set_option(opts: dict[str, Any], args: dict[str, Any], key: str, flag_dest: str,
                value: Any, cfg: Path, field: str, flag: str) -> None:
    """A config value that a quantizer flag also sets: they must agree."""
    if args.get(flag_dest) is not None and args[flag_dest] != value:
        raise ConfigError(f"{value!r} contradicts {flag} {args[flag_dest]}", where=cfg,
                          field=field, hint="give the value in one place")
    opts[key] = value


def _adaround_options(section: dict[str, Any], cfg: Path, args: dict[str, Any],
                      opts: dict[str, Any]) -> dict[str, Any]:
    from ..quant import check_bitwidth
    ada: dict[str, Any] = {}
    optional = section.get("optional_adaround_args", {})
    for key, hint in _UNSUPPORTED_ADAROUND.items():
        if key in optional:
            raise NotYetSupportedError("not supported by aicc's AdaRound", where=cfg,
                                       field=f"adaround.optional_adaround_args.{key}", hint=hint)
    if "num_batches" in optional and optional["num_batches"] != section["num_batches"]:
        raise ConfigError("contradicts adaround.num_batches", where=cfg,
                          field="adaround.optional_adaround_args.num_batches")
    if "default_param_bw" in optional:
        field = "adaround.optional_adaround_args.default_param_bw"
        bw = check_bitwidth(optional["default_param_bw"], role="weight", where=str(cfg))
        _set_option(opts, args, "weight_bitwidth", "weight_bw", bw, cfg, field, "--weight_bw")
    if "default_quant_scheme" in optional:
        field = "adaround.optional_adaround_args.default_quant_scheme"
        scheme = optional["default_quant_scheme"]
        if scheme not in _SCHEMES:
            from ..errors import did_you_mean
            raise ConfigError(f"unknown scheme {scheme!r}", where=cfg, field=field,
                              hint=did_you_mean(scheme, _SCHEMES))
        _set_option(opts, args, "param_quantizer", "param_quantizer", _SCHEMES[scheme], cfg,
                    field, "--param_quantizer")
    for key, option in (("default_num_iterations", "iterations"),
                        ("default_reg_param", "reg_param"), ("default_warm_start", "warm_start")):
        if key in optional:
            ada[option] = optional[key]
    if "default_beta_range" in optional:
        beta = optional["default_beta_range"]
        if len(beta) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                     for b in beta):
            raise ConfigError(f"expected [start, end], got {beta!r}", where=cfg,
                              field="adaround.optional_adaround_args.default_beta_range")
        ada["beta_start"], ada["beta_end"] = float(beta[0]), float(beta[1])
    return ada


def _model_inputs(model: str, input_dims: Sequence[str]) -> list[tuple[str, tuple]]:
    from .. import ir
    loaded = ir.load_model(model)
    shapes = {}
    for item in input_dims:
        name, _, dims = item.partition("=")
        shapes[name] = tuple(int(d) for d in dims.split(",") if d.strip())
    out = []
    for vi in loaded.graph.input:
        if vi.name in {i.name for i in loaded.graph.initializer}:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                     for d in vi.type.tensor_type.shape.dim)
        out.append((vi.name, shapes.get(vi.name, dims)))
    return out


def algorithm_arguments(args: dict[str, Any], opts: dict[str, Any],
                        input_shapes: Sequence[str]) -> dict[str, Any]:
    """Extra ``quantize_model`` keyword arguments for the algorithm flags (``opts``, the
    quantize options, may be updated from the config); ``{}`` when none was given."""
    if args["use_aimet_quantizer"]:
        print(AIMET_NOTE)
    names = _names(args)
    if args["algo_config"] and not names:
        raise UsageError("--config configures --apply_algorithms, and none was given",
                         where="--config", hint="add --apply_algorithms adaround")
    if args["auto_precision"] is not None and "amp" in names:
        raise UsageError("--auto_precision is AMP without a config; give one or the other",
                         where="--auto_precision")
    if not names and args["auto_precision"] is None:
        return {}
    if not args["input_list"]:
        flag = "--apply_algorithms" if names else "--auto_precision"
        raise UsageError(f"{flag} needs --input_list (calibration samples)", where=flag)
    if "autoquant" in names and (len(names) > 1 or args["auto_precision"] is not None):
        raise UsageError("autoquant runs CLE, AdaRound and AMP itself; give it alone",
                         where="--apply_algorithms")
    out: dict[str, Any] = {}
    from .quantize_amp import amp_auto_precision, amp_from_config
    if args["auto_precision"] is not None:
        out["amp"] = amp_auto_precision(args["auto_precision"])
    if not args["algo_config"]:
        if "amp" in names:
            raise UsageError("--apply_algorithms amp needs --config (its candidates, dataset "
                             "and evaluation callback)", where="--apply_algorithms",
                             hint="or use --auto_precision SQNR_DB")
        if "autoquant" in names:
            raise UsageError("--apply_algorithms autoquant needs --config (its datasets, "
                             "evaluation callback and candidates)", where="--apply_algorithms")
        if "adaround" in names:
            out["adaround"] = {}
        return out
    from ..quant.algo_config import dataset_samples, load_algorithm_config
    cfg = load_algorithm_config(args["algo_config"])
    inputs = _model_inputs(args["input_model"], input_shapes)
    if "adaround" in names:
        section = cfg.section("adaround")
        if section is None:
            raise ConfigError("no 'adaround' section for --apply_algorithms adaround",
                              where=cfg.path, hint="add one, or drop --config to run AdaRound "
                                                   "on the --input_list samples")
        out["adaround"] = _adaround_options(section, cfg.path, args, opts)
        out["adaround_samples"] = dataset_samples(cfg, section["dataset"], "adaround.dataset",
                                                  inputs, limit=section["num_batches"])
    if "amp" in names:
        out["amp"] = amp_from_config(cfg, inputs)
    if "autoquant" in names:
        from .quantize_autoquant import autoquant_plan
        out["autoquant"] = autoquant_plan(cfg, inputs, args, opts)
    return out


def run_algorithms(extra: dict[str, Any], input_model: str, output_model: str, **kw: Any):
    """Quantize with what ``algorithm_arguments`` asked for; (model, program, report lines)."""
    amp, autoquant = extra.pop("amp", None), extra.pop("autoquant", None)
    if autoquant is not None:
        from .quantize_autoquant import run_autoquant
        return run_autoquant(autoquant, output_model, input_model=input_model, **kw)
    if amp is not None:
        from .quantize_amp import run_amp_flow
        return run_amp_flow(amp, output_model, input_model=input_model, **extra, **kw)
    from ..quantization import quantize_model
    model, program = quantize_model(input_model, **extra, **kw)
    return model, program, []
