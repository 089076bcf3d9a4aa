"""AdaRound's options from an AIMET-style config section (``adaround``, or the one AutoQuant runs),
and the rule both algorithms share: a config value that a quantizer flag also sets must agree
with the flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, NotYetSupportedError

__all__ = ["SCHEMES", "set_option", "adaround_options"]

#: AIMET quant scheme names -> aicc's quantizer modes
SCHEMES = {"post_training_tf": "tf", "post_training_tf_enhanced": "enhanced"}
_UNSUPPORTED = {
    "param_bw_override_list": "give per-layer weight bitwidths in --quantization_overrides "
                              "(param_encodings with a bitwidth)",
    "ignore_quant_ops_list": "aicc's AdaRound feeds each layer the float model's activations, "
                             "so there are no other quantizers to skip; remove the key",
    "default_config_file": "AIMET quantsim config files are not read; use the quantizer flags",
}


def set_option(opts: dict[str, Any], args: dict[str, Any], key: str, flag_dest: str,
               value: Any, cfg: Path, field: str, flag: str) -> None:
    """A config value that a quantizer flag also sets: they must agree."""
    if args.get(flag_dest) is not None and args[flag_dest] != value:
        raise ConfigError(f"{value!r} contradicts {flag} {args[flag_dest]}", where=cfg,
                          field=field, hint="give the value in one place")
    opts[key] = value


def adaround_options(section: dict[str, Any], cfg: Path, args: dict[str, Any],
                     opts: dict[str, Any]) -> dict[str, Any]:
    """The ``adaround`` pass options of a config section (``optional_adaround_args``); the
    bitwidth and quant scheme it names go into ``opts``, the quantize options."""
    from ..quant import check_bitwidth
    ada: dict[str, Any] = {}
    optional = section.get("optional_adaround_args", {})
    for key, hint in _UNSUPPORTED.items():
        if key in optional:
            raise NotYetSupportedError("not supported by aicc's AdaRound", where=cfg,
                                       field=f"adaround.optional_adaround_args.{key}", hint=hint)
    if "num_batches" in optional and optional["num_batches"] != section["num_batches"]:
        raise ConfigError("contradicts adaround.num_batches", where=cfg,
                          field="adaround.optional_adaround_args.num_batches")
    if "default_param_bw" in optional:
        field = "adaround.optional_adaround_args.default_param_bw"
        bw = check_bitwidth(optional["default_param_bw"], role="weight", where=str(cfg))
        set_option(opts, args, "weight_bitwidth", "weight_bw", bw, cfg, field, "--weight_bw")
    if "default_quant_scheme" in optional:
        field = "adaround.optional_adaround_args.default_quant_scheme"
        scheme = optional["default_quant_scheme"]
        if scheme not in SCHEMES:
            from ..errors import did_you_mean
            raise ConfigError(f"unknown scheme {scheme!r}", where=cfg, field=field,
                              hint=did_you_mean(scheme, SCHEMES))
        set_option(opts, args, "param_quantizer", "param_quantizer", SCHEMES[scheme], cfg,
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
