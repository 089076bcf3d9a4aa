"""``aicc quantize --apply_algorithms amp --config FILE`` and ``--auto_precision SQNR_DB``: run AMP
(``aicc.quant.amp``) on aicc's quantization flow and write what it chose.

Next to ``--output_model M.onnx`` (the QDQ model of the chosen assignment) goes a folder
``M_amp/`` with ``pareto.txt`` (the front, also printed), ``pareto.png`` (when matplotlib, the
``plot`` extra, is installed), ``node_precision.yaml`` and ``encodings.json`` (for ``aicc compile
-node-precision-info=... -external-quantization=...``) and ``phase1_cache.json`` (phase 1
results, reused by the next run with the same model, options, candidates and samples unless
``clean_start``).

Metrics: ``--auto_precision X`` keeps the output SQNR on the ``--input_list`` samples at X dB or
more, choosing between the quantize options' precision and fp16. With a config, phase 1 uses
``eval_callback_for_phase1(model)`` (it receives the QDQ ``onnx.ModelProto``) or, without one,
output SQNR on the dataset's inputs; phase 2 uses ``eval_callback_for_phase2(outputs, labels)``
averaged over the dataset's ``(inputs, labels)`` items and must stay within
``allowed_accuracy_drop`` of the float model's value. aicc limits no candidate by supported kernels,
so ``use_all_amp_candidates`` true or false both use every candidate.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NotYetSupportedError

__all__ = ["amp_from_config", "amp_auto_precision", "run_amp_flow"]


def _folder(output_model: str) -> Path:
    out = Path(output_model)
    return out.with_name(out.stem + "_amp")


def amp_auto_precision(sqnr_db: float) -> dict[str, Any]:
    if not math.isfinite(sqnr_db) or sqnr_db <= 0:
        raise ConfigError(f"expected a positive number of dB, got {sqnr_db}",
                          where="--auto_precision")
    return {"mode": "sqnr", "target": float(sqnr_db), "algo": "Binary", "reverse": False,
            "clean": False, "candidates": None}


def amp_from_config(cfg: Any, inputs: list[tuple[str, tuple]]) -> dict[str, Any]:
    from ..quant.algo_config import import_callback, labeled_batches
    from ..quant.amp import parse_candidates
    sec = cfg.section("amp")
    if sec is None:
        raise ConfigError("no 'amp' section for --apply_algorithms amp", where=cfg.path)
    opt = sec.get("optional_amp_args", {})
    if "forward_pass_callback" in opt:
        raise NotYetSupportedError("aicc calibrates on the --input_list samples, not with a "
                                   "forward-pass callback", where=cfg.path,
                                   field="amp.optional_amp_args.forward_pass_callback",
                                   hint="remove the key")
    plan = {"mode": "callback", "algo": opt.get("amp_search_algo", "Binary"),
            "reverse": bool(opt.get("phase2_reverse", False)),
            "clean": bool(opt.get("clean_start", False)), "drop": sec["allowed_accuracy_drop"],
            "candidates": parse_candidates(sec["candidates"], where=cfg.path,
                                           field="amp.candidates"),
            "where": cfg.path}
    plan["phase2"] = import_callback(sec["eval_callback_for_phase2"], config=cfg.path,
                                     key="amp.eval_callback_for_phase2")
    if "eval_callback_for_phase1" in opt:
        plan["phase1"] = import_callback(opt["eval_callback_for_phase1"], config=cfg.path,
                                         key="amp.optional_amp_args.eval_callback_for_phase1")
    plan["batches"] = labeled_batches(cfg, sec["dataset"], "amp.dataset", inputs)
    return plan


def _samples_digest(feeds: list[dict]) -> str:
    h = hashlib.sha256()
    for f in feeds:
        for k in sorted(f):
            h.update(k.encode() + f[k].tobytes())
    return h.hexdigest()


def run_amp_flow(plan: dict[str, Any], output_model: str, **quantize_kwargs: Any):
    """Run AMP; returns (model, program, report lines)."""
    from ..quant.amp import Candidate, front_table, run_amp
    from ..quant.amp_flow import OrtScorer, QuantizedVariants, labeled_metric, write_bridge
    start = time.perf_counter()
    if not Path(output_model).resolve().parent.is_dir():
        raise ConfigError(f"folder '{Path(output_model).parent}' does not exist",
                          where=output_model)
    wide = any(c.wide for c in plan["candidates"] or ())
    variants = QuantizedVariants(quantize_kwargs.pop("input_model"), wide=wide,
                                 **quantize_kwargs)
    base = Candidate(variants.act_bw, "int", variants.weight_bw, "int")
    cands = plan["candidates"] or [Candidate(16, "float", 16, "float"), base]
    if plan["mode"] == "sqnr":
        from aicc.passes.quantization.calibrate import input_list_samples
        from ..data import program_input_descs
        _, factory = input_list_samples(quantize_kwargs["input_list"],
                                        program_input_descs(variants.program, interface=True))
        feeds = list(factory())
    else:
        feeds = [f for fs, _ in plan["batches"] for f in fs]
    scorer = OrtScorer(feeds, variants.float_model)
    n1 = plan.get("phase1_samples") or 0
    scorer1 = OrtScorer(feeds[:n1], variants.float_model) if n1 else scorer

    def sqnr(choice):
        return scorer1.sqnr(variants.build(choice)[0])
    if plan["mode"] == "sqnr":
        phase1 = phase2 = sqnr
        target, baseline = plan["target"], math.inf
    else:
        def phase2(choice):
            return labeled_metric(variants.build(choice)[0], plan["batches"], plan["phase2"],
                                  scorer, where=plan["where"], key="amp.eval_callback_for_phase2")
        phase1 = sqnr
        if "phase1" in plan:
            def phase1(choice):
                from ..quant.amp_flow import _as_float
                return _as_float(plan["phase1"](variants.build(choice)[0]), plan["where"],
                                 "amp.optional_amp_args.eval_callback_for_phase1")
        baseline = labeled_metric(variants.float_model, plan["batches"], plan["phase2"], scorer,
                                  where=plan["where"], key="amp.eval_callback_for_phase2")
        target = baseline - plan["drop"]
    folder = _folder(output_model)
    plain = {k: v for k, v in quantize_kwargs.items()
             if isinstance(v, (str, int, float, bool, list, tuple, dict, type(None)))}
    members = {g: [n.name for n in group.nodes] + group.activations()
               for g, group in variants.groups.items()}
    key = "|".join([repr(sorted(plain.items())), plan["mode"], json.dumps(members),
                    _samples_digest(feeds),
                    hashlib.sha256(variants.float_model.SerializeToString()).hexdigest()])
    result = run_amp(phase1, phase2, groups=list(variants.groups), macs=variants.macs(),
                     candidates=cands, target=target, baseline=baseline, algo=plan["algo"],
                     reverse=plan["reverse"],
                     cache=folder / f"{plan.get('cache_name') or 'phase1_cache'}.json",
                     cache_key=key, clean_start=plan["clean"])
    model, program = variants.build(result.choice)
    table = front_table(result)
    lines = [f"amp: {len(variants.groups)} groups ({len(variants.layers)} weighted layers), "
             f"candidates {', '.join(c.label for c in cands)}; target metric {target:.4f}"
             + (f" (float {baseline:.4f})" if math.isfinite(baseline) else "")
             + ("; phase 1 from cache" if result.cached else ""), table]
    if not result.met:
        raise ConfigError(f"even every group at {cands[0].label} gives {result.metric:.4f}, "
                          f"below the target {target:.4f}", field="amp",
                          hint="lower the target or raise the candidates")
    folder.mkdir(parents=True, exist_ok=True)
    from aicc.passes.quantization.calibrate import write_text_atomic
    write_text_atomic(folder / "pareto.txt", table + "\n")
    fp16 = [variants.groups[g] for g, c in result.choice.items()
            if c.is_float and c.act_bw == 16]
    files, names = write_bridge(folder, fp16, program, variants.original,
                                variants.fp16_interior(fp16))
    lines.append(_plot(result, folder))
    lines.append(_summary(variants, result, cands, names) +
                 f", {time.perf_counter() - start:.1f}s; wrote {', '.join(map(str, files))}")
    lines.extend(_compile_lines(quantize_kwargs, files))
    return model, program, lines


def _summary(variants: Any, result: Any, cands: list, names: list[str]) -> str:
    """What the choice raised: groups, weighted layers (Conv/Gemm/MatMul with weights) and the
    other nodes of those groups, counted apart; the names listed for the node-precision file."""
    raised = sorted(g for g, c in result.choice.items() if c != cands[-1])
    layers = [g for g in raised if variants.groups[g].layer is not None]
    others = sum(len(variants.groups[g].nodes) - (variants.groups[g].layer is not None)
                 for g in raised)
    per = {c.label: sum(1 for g, x in result.choice.items() if x == c
                        and variants.groups[g].layer is not None) for c in cands}
    return (f"amp: chose {len(raised)} of {len(result.choice)} groups above {cands[-1].label} "
            f"({', '.join(raised) or 'none'}): {len(layers)} of {len(variants.layers)} weighted "
            f"layers and {others} other nodes; weighted layers per candidate: "
            + ", ".join(f"{k} {v}" for k, v in per.items())
            + f"; {len(names)} nodes in the node-precision file; "
            f"relative bit-ops {result.cost:.3f}, metric {result.metric:.4f}")


def _compile_lines(kw: dict[str, Any], files: list[Path]) -> list[str]:
    """The report's lines on compiling the choice: the command, and what it cannot carry."""
    lines = ["amp: to compile this choice: " + _compile_command(kw, files)]
    if kw.get("bias_correction") not in (None, False):
        lines.append("amp: note: the encodings file carries no biases; the compiled program "
                     "has the original ones, not the bias-corrected ones of this model")
    if kw.get("act_quantizer") == "enhanced" and any(f.suffix == ".yaml" for f in files):
        lines.append("amp: note: compile has no 'enhanced' range method; it calibrates the "
                     "fp16 -> integer conversions with its own (add "
                     "-quantization-calibration=SQNR for the closest)")
    return lines


def _compile_command(kw: dict[str, Any], files: list[Path]) -> str:
    """The ``aicc compile`` flags that reproduce the choice. fp16 -> integer conversions are
    calibrated again there (AIMET JSON holds one encoding per tensor, the float one), so the
    command names the quantize run's range method: compile's default, min/max, gave PP-OCRv4
    rec's five fp16 groups conversions up to 1.5x wider than AMP's ``Auto`` ones, and the
    compiled program kept 54 % of the strings where AMP's model kept 85 %
    (``benchmarks/amp_budget.py``)."""
    parts = ["aicc compile -m=MODEL"]
    parts += [f"-node-precision-info={f}" for f in files if f.suffix == ".yaml"]
    parts += [f"-external-quantization={f}" for f in files if f.suffix == ".json"]
    parts.append(f"-input-list-file={kw['input_list']}")
    if kw.get("calibration"):
        parts.append(f"-quantization-calibration={kw['calibration']}")
    if kw.get("percentile") is not None:
        parts.append(f"-percentile-calibration-value={kw['percentile']:g}")
    if kw.get("num_bins"):
        parts.append(f"-num-histogram-bins={kw['num_bins']}")
    parts += [f"--input-shape={s}" for s in kw.get("input_shapes") or ()]
    # the weights' layout (an opset-12 model is raised to opset 13 for per-channel scales)
    if kw.get("per_channel"):
        parts.append("-enable-channelwise")
    if kw.get("per_row"):
        parts.append("-enable-rowwise")
    if kw.get("act_quantizer", "tf") in ("tf", ""):
        parts.append("-quantization-schema-activations=asymmetric")
    return " ".join(parts)


def _plot(result: Any, folder: Path) -> str:
    try:
        import matplotlib
    except ImportError:
        return "amp: pareto.png not written: matplotlib is not installed (pip install aicc[plot])"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = sorted(result.front, key=lambda p: p["cost"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([p["cost"] for p in pts], [p["metric"] for p in pts], "o-")
    ax.axhline(result.target, color="gray", linestyle="--")
    ax.set_xlabel("relative bit-ops")
    ax.set_ylabel("metric")
    fig.tight_layout()
    fig.savefig(folder / "pareto.png")
    plt.close(fig)
    return f"amp: wrote {folder / 'pareto.png'}"
