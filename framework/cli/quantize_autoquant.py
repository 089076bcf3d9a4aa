"""``aicc quantize --apply_algorithms autoquant --config FILE``: AIMET's AutoQuant order on aicc's
flow, stopping at the first step whose model is within ``allowed_accuracy_drop`` of the float
model on the evaluation dataset. As in AIMET, each step builds on the best step before it: a CLE
that lowers the metric is not carried into AdaRound and AMP.

1. BatchNorm folding (always part of aicc's quantization pipeline) and plain quantization;
2. + cross-layer equalization (the ``cle`` pass);
3. + AdaRound on ``dataset`` (``optional_adaround_args.num_batches`` loader items, default 1);
4. + AMP over ``amp_candidates`` (phase 1 by output SQNR on the evaluation inputs, phase 2 by
   ``eval_callback``), which picks the cheapest assignment within the drop.

The metric is ``eval_callback(outputs, labels)`` averaged over ``eval_dataset``'s ``(inputs,
labels)`` items (``optional_amp_args.num_samples_for_phase_2`` items at most; phase 1 uses the
first ``num_samples_for_phase_1`` samples). Each step's metric
and time are reported. ``optional_autoquant_args``: ``param_bw`` / ``output_bw`` set the weight and
activation bitwidths, ``quant_scheme`` (``post_training_tf`` / ``_enhanced``) the quantizers,
``rounding_mode`` must be ``nearest`` (AdaRound is step 3), ``cache_id`` names the AMP cache
folder; ``strict_validation: false`` lets a step that fails (e.g. CLE on a model without a pattern
to equalize) be reported and skipped instead of stopping the run.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ..errors import AiccError, ConfigError, NotYetSupportedError
from .quantize_adaround import SCHEMES, adaround_options, set_option

__all__ = ["autoquant_plan", "run_autoquant"]


def autoquant_plan(cfg: Any, inputs: list, args: dict[str, Any], opts: dict[str, Any]
                   ) -> dict[str, Any]:
    from ..quant.algo_config import dataset_samples, import_callback, labeled_batches
    from ..quant.amp import parse_candidates
    sec = cfg.section("autoquant")
    if sec is None:
        raise ConfigError("no 'autoquant' section for --apply_algorithms autoquant",
                          where=cfg.path)
    aq = sec.get("optional_autoquant_args", {})
    for key, hint in (("config_file", "AIMET quantsim config files are not read"),):
        if key in aq:
            raise NotYetSupportedError(hint, where=cfg.path,
                                       field=f"autoquant.optional_autoquant_args.{key}")
    if aq.get("rounding_mode", "nearest") != "nearest":
        raise ConfigError(f"unknown rounding mode {aq['rounding_mode']!r}", where=cfg.path,
                          field="autoquant.optional_autoquant_args.rounding_mode",
                          hint="nearest (AdaRound is AutoQuant's own step 3)")
    from ..quant import check_bitwidth
    for key, opt, dest, flag in (("param_bw", "weight_bitwidth", "weight_bw", "--weight_bw"),
                                 ("output_bw", "act_bitwidth", "act_bw", "--act_bw")):
        if key in aq:
            field = f"autoquant.optional_autoquant_args.{key}"
            bw = check_bitwidth(aq[key], where=f"{cfg.path}: {field}")
            set_option(opts, args, opt, dest, bw, cfg.path, field, flag)
    if "quant_scheme" in aq:
        field = "autoquant.optional_autoquant_args.quant_scheme"
        if aq["quant_scheme"] not in SCHEMES:
            raise ConfigError(f"unknown scheme {aq['quant_scheme']!r}", where=cfg.path,
                              field=field, hint="post_training_tf or post_training_tf_enhanced")
        set_option(opts, args, "param_quantizer", "param_quantizer",
                   SCHEMES[aq["quant_scheme"]], cfg.path, field, "--param_quantizer")
    cache_id = aq.get("cache_id")
    if cache_id is not None and not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}", cache_id):
        raise ConfigError(f"{cache_id!r} cannot name a cache file", where=cfg.path,
                          field="autoquant.optional_autoquant_args.cache_id",
                          hint="letters, digits, '_', '-', '.' (64 at most)")
    amp_opt = sec.get("optional_amp_args", {})
    if "forward_fn" in amp_opt:
        raise NotYetSupportedError("aicc runs the model itself", where=cfg.path,
                                   field="autoquant.optional_amp_args.forward_fn",
                                   hint="remove the key")
    ada_section = {"num_batches": 1, **sec.get("optional_adaround_args", {})}
    ada_section["num_batches"] = ada_section.get("num_batches", 1)
    adaround = adaround_options(ada_section, cfg.path, args, opts)
    limit = amp_opt.get("num_samples_for_phase_2", 0)
    return {"where": cfg.path, "drop": sec["allowed_accuracy_drop"],
            "candidates": parse_candidates(sec["amp_candidates"], where=cfg.path,
                                           field="autoquant.amp_candidates"),
            "eval": import_callback(sec["eval_callback"], config=cfg.path,
                                    key="autoquant.eval_callback"),
            "batches": labeled_batches(cfg, sec["eval_dataset"], "autoquant.eval_dataset",
                                       inputs, limit=limit),
            "adaround": adaround,
            "adaround_samples": lambda: dataset_samples(cfg, sec["dataset"], "autoquant.dataset",
                                                        inputs, limit=ada_section["num_batches"]),
            "strict": aq.get("strict_validation", True), "cache_id": aq.get("cache_id"),
            "phase1_samples": amp_opt.get("num_samples_for_phase_1", 0)}


def run_autoquant(plan: dict[str, Any], output_model: str, **kw: Any):
    """Returns (model, program, report lines)."""
    from ..quant.amp_flow import OrtScorer, labeled_metric
    from ..quantization import quantize_model
    from .quantize_amp import run_amp_flow
    feeds = [f for fs, _ in plan["batches"] for f in fs]
    import onnx
    model_path = kw.pop("input_model")
    scorer = OrtScorer(feeds, onnx.load(model_path))

    def metric(model):
        return labeled_metric(model, plan["batches"], plan["eval"], scorer, where=plan["where"],
                              key="autoquant.eval_callback")
    from .. import ir
    baseline = metric(ir.load_model(model_path))
    target = baseline - plan["drop"]
    lines = [f"autoquant: float metric {baseline:.4f}, target {target:.4f}"]
    steps = [("BN folding + quantization", {}),
             ("+ CLE", {"algorithms": list(kw.get("algorithms") or []) + ["cle"]}),
             ("+ AdaRound", {"adaround": plan["adaround"]})]
    best = None  # (model, program, metric, label, the step's settings)
    for label, add in steps:
        start = time.perf_counter()
        extra = {**(best[4] if best else {}), **add}  # each step builds on the best one so far
        if "adaround" in add:
            extra["adaround_samples"] = plan["adaround_samples"]()
        try:
            model, program = quantize_model(model_path, **{**kw, **extra})
        except AiccError as e:
            if plan["strict"]:
                raise
            lines.append(f"autoquant: {label}: failed ({e}); skipped")
            continue
        value = metric(model)
        lines.append(f"autoquant: {label}: metric {value:.4f} "
                     f"({time.perf_counter() - start:.1f}s)")
        if best is None or value > best[2]:
            best = (model, program, value, label, extra)
        else:
            lines.append(f"autoquant: {label} is not kept (no better than '{best[3]}'); "
                         "the next steps build on that one")
        if value >= target:
            lines.append(f"autoquant: target met after '{label}'")
            return model, program, lines
    extra = dict(best[4]) if best else {}
    if "adaround" in extra:  # a loader may be read once: AMP gets the samples afresh
        extra["adaround_samples"] = plan["adaround_samples"]()
    start = time.perf_counter()
    amp = {"mode": "callback", "algo": "Binary", "reverse": False, "clean": False,
           "drop": plan["drop"], "candidates": plan["candidates"], "where": plan["where"],
           "phase2": plan["eval"], "batches": plan["batches"],
           "phase1_samples": plan["phase1_samples"],
           "cache_name": f"phase1_cache_{plan['cache_id']}" if plan["cache_id"] else None}
    try:
        model, program, amp_lines = run_amp_flow(amp, output_model, input_model=model_path,
                                                 **{**kw, **extra})
    except AiccError as e:
        if plan["strict"] or best is None:
            raise
        lines.append(f"autoquant: + AMP: failed ({e})")
        lines.append(f"autoquant: target NOT met; keeping the best step's model "
                     f"('{best[3]}', metric {best[2]:.4f})")
        return best[0], best[1], lines
    lines += amp_lines
    lines.append(f"autoquant: + AMP: done ({time.perf_counter() - start:.1f}s)")
    return model, program, lines
