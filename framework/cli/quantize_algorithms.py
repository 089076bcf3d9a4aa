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
from typing import Any

from ..errors import ConfigError, NotYetSupportedError, UsageError
from .flags import Flag, float_value
from .quantize_adaround import adaround_options

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
        out["adaround"] = adaround_options(section, cfg.path, args, opts)
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
