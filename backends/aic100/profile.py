"""Profiling output of the simulated device: a plan, its cost and the runs so far into what a
qaic-runner user reads (inferences per second, latency, per-core utilization, DDR traffic), a
per-op statistics table (``-aic-profiling-type=stats``), a Chrome trace with one track per core
(``trace``; loads in Perfetto and chrome://tracing) and latency percentiles (``latency``).

Simulated figures come from the cost model; the simulator's own wall time per inference (the
numpy execution) is reported beside them and never mixed in. The trace lays inferences end to end
at the simulated latency (each inference's schedule, not the overlap of pipelined inferences that
the interval in the summary accounts for).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .cost import Cost
from .multicore import partition_reason
from .plan import Plan

__all__ = ["summary_lines", "band_text", "numeric_lines", "stats_lines", "latency_lines", "trace_json", "simulated_latencies",
           "PROFILING_TYPES", "MAX_TRACE_INFERENCES"]

PROFILING_TYPES = ("stats", "trace", "latency")
MAX_TRACE_INFERENCES = 64


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def band_text(hw, kind: str = "throughput") -> str:
    """The expected error of a simulated figure, from the held-out check of the fit."""
    band = hw.error_band if kind == "throughput" else hw.latency_error_band
    if band is None:
        return "(error unknown: cost-model constants not fitted)"
    return f"(±{band * 100:.0f}% expected, held-out check)"


def summary_lines(plan: Plan, cost: Cost, *, name: str, stats_batchsize: int,
                  wall_s: Sequence[float]) -> list[str]:
    """The headline figures, one per line."""
    hw = plan.hw
    used = plan.cores_per_copy
    precisions = sorted({sp.step.precision for sp in plan.steps if sp.step.kind == "tensor"})
    lines = [f"aic100{' ' + repr(name) if name else ''}: {hw.name}, {used} core(s) x {cost.activations} "
             f"activation(s): {plan.mode} ({plan.groups} group(s) x {plan.cores} core(s)), "
             f"tensor steps in {', '.join(precisions) or 'none'}"]
    samples = cost.inferences_per_s * stats_batchsize
    band = band_text(hw)
    lines.append(f"  Inf/Sec {cost.inferences_per_s:.1f} {band} (simulated; {samples:.1f} "
                 f"samples/s {band} at stats batch size {stats_batchsize})")
    lat_band = band_text(hw, "latency")
    lines.append(f"  latency per inference {cost.latency_s * 1e3:.3f} ms {lat_band} (+ "
                 f"{cost.host_s * 1e3:.3f} ms of I/O over PCIe), one inference every "
                 f"{cost.interval_s * 1e3 / cost.activations:.3f} ms (bound: {cost.bound})")
    o = plan.options
    lines.append(f"  partition: {partition_reason(plan)}; -ols={o.ols} (each split op in "
                 f"{o.ols} x cores pieces), -mos={o.mos} (1/{o.mos} of free VTCM for resident "
                 f"tensors), multicore={o.multicore}")
    util = [b / cost.interval_s * 100 if cost.interval_s else 0.0 for b in cost.busy_s]
    shown = ", ".join(f"c{k} {u:.0f}%" for k, u in enumerate(util[:16]))
    more = f", ... ({len(util)} cores)" if len(util) > 16 else ""
    lines.append(f"  core utilization (busy / interval): {shown}{more}")
    peak = used * cost.activations * hw.tensor_macs["int8"] * hw.clock_hz
    if "fp16" in precisions and "int8" not in precisions:
        peak = used * cost.activations * hw.tensor_macs["fp16"] * hw.clock_hz
    eff = cost.macs * cost.inferences_per_s / peak * 100 if peak else 0.0
    lines.append(f"  tensor-unit efficiency {eff:.1f}% of peak "
                 f"({cost.macs * cost.inferences_per_s / 1e12:.2f} TMAC/s)")
    lines.append(f"  DDR traffic {_bytes(cost.ddr_bytes)} per inference, "
                 f"{cost.ddr_bytes * cost.inferences_per_s / 1e9:.2f} GB/s of "
                 f"{hw.ddr_bytes_per_s / 1e9:.1f}; NoC {_bytes(cost.noc_bytes)} per inference")
    mem = plan.memory
    lines.append(f"  VTCM per core: peak {_mib(mem['vtcm_peak_bytes'])} of "
                 f"{_mib(mem['vtcm_budget_bytes'])} budget; weights resident "
                 f"{_mib(mem['resident_weight_bytes_per_core'])}/core, streamed "
                 f"{_bytes(mem['streamed_weight_bytes'])}; "
                 f"{mem['ddr_activation_buffers']} activation buffer(s) in DDR")
    if wall_s:
        lines.append(f"  simulator wall time {np.mean(wall_s) * 1e3:.3f} ms per inference "
                     f"({len(wall_s)} run(s), numpy numerics)")
    return lines


def numeric_lines(saturations: int, fp16: dict[str, dict[str, int]], runs: int) -> list[str]:
    """What went out of range in the runs so far: int32 accumulators that saturated, and fp16
    results that are inf or nan, by node (the first nodes listed in schedule order)."""
    if not runs:
        return []
    lines = [f"  numerics over {runs} run(s): {saturations} int32 accumulator saturation(s)"]
    if not fp16:
        lines[0] += "; every fp16 result finite"
        return lines
    total = sum(v["nonfinite"] for v in fp16.values())
    made = {k: v for k, v in fp16.items() if v["overflow"]}
    lines[0] += (f"; {total} fp16 value(s) inf or nan in {len(fp16)} node(s), "
                 f"{len(made)} of them overflowing from finite inputs")
    for name, v in list(fp16.items())[:8]:
        lines.append(f"    node '{name}': {v['nonfinite']} non-finite, {v['overflow']} overflowed "
                     "(beyond fp16's 65504)" if v["overflow"] else
                     f"    node '{name}': {v['nonfinite']} non-finite (from its inputs)")
    if len(fp16) > 8:
        lines.append(f"    ... and {len(fp16) - 8} more node(s)")
    return lines


def stats_lines(plan: Plan, cost: Cost) -> list[str]:
    """One row per step: what ran where, for how long, and what it moved."""
    rows = [("step", "op", "unit", "prec", "split", "MACs", "time us", "%", "DDR kB", "out")]
    total = cost.latency_s or 1.0
    for sp, sc in zip(plan.steps, cost.steps):
        s = sp.step
        op = s.op + ("+" + "+".join(f for f in s.fused if f not in ("QuantizeLinear",
                                                                   "DequantizeLinear"))
                     if any(f not in ("QuantizeLinear", "DequantizeLinear") for f in s.fused)
                     else "")
        outs = [o.placement for o in sp.work.operands if o.role == "out"]
        rows.append((s.name[:28], op[:28], sp.work.unit, s.precision,
                     f"{sp.axis}x{sp.pieces}" if sp.axis != "none" else "-",
                     f"{s.macs:,}", f"{sc.time * 1e6:.2f}", f"{sc.time / total * 100:.1f}",
                     f"{sc.ddr * plan.groups / 1e3:.1f}", "/".join(sorted(set(outs))) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) if i < 5 or i == 9 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths))) for r in rows]


def simulated_latencies(cost: Cost, runs: int, hw_ddr: float) -> list[float]:
    """Simulated latency of each run so far: the first inference of each activation also loads
    the resident weights into VTCM."""
    load = cost.load_bytes / hw_ddr
    return [cost.latency_s + (load if i < cost.activations else 0.0) for i in range(runs)]


def latency_lines(simulated: Sequence[float], wall: Sequence[float]) -> list[str]:
    if not simulated:
        return ["  latency: no inference has run yet"]
    qs = (50, 90, 95, 99)

    def pct(values: Sequence[float]) -> str:
        arr = np.asarray(values) * 1e3
        parts = [f"p{q} {np.percentile(arr, q):.3f}" for q in qs]
        return ", ".join(parts + [f"max {arr.max():.3f} ms"])

    lines = [f"  latency percentiles over {len(simulated)} inference(s), simulated: "
             f"{pct(simulated)}"]
    if wall:
        lines.append(f"  latency percentiles, simulator wall time: {pct(wall)}")
    return lines


def trace_json(plan: Plan, cost: Cost, inferences: int) -> dict[str, Any]:
    """Chrome trace events: one process per activation, one thread (track) per core."""
    events: list[dict[str, Any]] = []
    per_act = plan.cores_per_copy
    acts = cost.activations
    for a in range(acts):
        events.append({"name": "process_name", "ph": "M", "pid": a, "tid": 0,
                       "args": {"name": f"activation {a}"}})
        for core in range(per_act):
            events.append({"name": "thread_name", "ph": "M", "pid": a, "tid": core,
                           "args": {"name": f"core {a * per_act + core}"}})
    shown = min(inferences, MAX_TRACE_INFERENCES)
    for i in range(shown):
        a = i % acts
        t = (i // acts) * cost.latency_s
        for sp, sc in zip(plan.steps, cost.steps):
            for g in range(plan.groups):
                for k, dur in enumerate(sc.per_core):
                    if dur <= 0:
                        continue
                    events.append({
                        "name": sp.step.name, "cat": sp.work.unit, "ph": "X",
                        "ts": round(t * 1e6, 3), "dur": round(dur * 1e6, 3), "pid": a,
                        "tid": g * plan.cores + k,
                        "args": {"op": sp.step.op, "inference": i, "precision":
                                 sp.step.precision, "split": sp.axis,
                                 "macs": round(sp.work.macs[k]),
                                 "compute_us": round(sc.compute[k] * 1e6, 3),
                                 "memory_us": round(sc.memory[k] * 1e6, 3)}})
            t += sc.time
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"backend": "aic100", "hardware": plan.hw.name,
                          "inferences": inferences, "shown": shown,
                          "latency_us": round(cost.latency_s * 1e6, 3)}}
