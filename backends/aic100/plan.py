"""Partitioning and memory planning: lowered steps, the hardware and the compile options into a
``Plan`` for ``-aic-num-cores`` simulated cores.

Partitioning. When every op keeps samples apart along dim 0 (``Lowered.batch_separable``), the
batch may be split over ``g`` data-parallel groups (g divides the batch); the ``num_cores // g``
cores of a group then split each step among themselves: a Conv/Gemm/MatMul by output rows (batch x
output height; every core needs all weights, and a halo of input rows) or by output channels
(every core needs the whole input, gathered over the NoC, and holds a slice of the weights),
whichever the cost model finds faster for that step; vector steps split their elements and keep
their input's layout. ``-ols=N`` cuts each split into N times more pieces (finer load balance and
more tiles to overlap memory with compute, at a cost per tile). ``search`` plans one number of
groups; ``multicore.build_plan`` costs every group count (and copies of smaller programs) and
keeps the fastest.

Memory plan (``memory``): per core, which operands stay resident in VTCM and which stream from
DDR in tiles, refusing a step whose working set cannot fit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from aicc.errors import BackendError

from .cost import Cost, Operand, StepWork, evaluate, step_cost, tensor_rate, tensor_util
from .hardware import Hardware
from .lower import Lowered, Step, ceil_div, pieces_of
from .memory import Allocation, MemoryOptions, plan_memory
from .numerics import StepSplit

__all__ = ["PlanOptions", "Plan", "StepPlan", "Allocation", "search", "group_counts", "mode_name",
           "PLAN_FORMAT",
           "PLAN_VERSION"]

logger = logging.getLogger(__name__)

PLAN_FORMAT = "aicc-aic100-plan"
PLAN_VERSION = 1
_KIB = 1024


@dataclass(frozen=True)
class PlanOptions:
    """The compile options that shape a plan."""

    num_cores: int = 1
    ols: int = 1
    mos: int = 1
    multicast_weights: bool = False
    size_split_granularity_kib: int = 1024
    vtcm_working_set_limit_ratio: float = 1.0
    depth_first: bool = False
    #: "auto" (the fastest), "split" (one program over all cores) or "activations" (copies)
    multicore: str = "auto"

    @property
    def granularity(self) -> int:
        return self.size_split_granularity_kib * _KIB

    def to_json(self) -> dict[str, Any]:
        return {"num_cores": self.num_cores, "ols": self.ols, "mos": self.mos,
                "multicast_weights": self.multicast_weights,
                "size_split_granularity_kib": self.size_split_granularity_kib,
                "vtcm_working_set_limit_ratio": self.vtcm_working_set_limit_ratio,
                "depth_first": self.depth_first, "multicore": self.multicore}


@dataclass
class StepPlan:
    """One step with its split over the cores of a group and its operands."""

    step: Step
    axis: str                  # "rows", "channels", "elements" or "none"
    pieces: int
    work: StepWork
    layout: str                # layout of the outputs: "rows", "channels" or "none"

    def to_json(self) -> dict[str, Any]:
        s = self.step
        return {"name": s.name, "op": s.op, "kind": s.kind, "unit": self.work.unit,
                "precision": s.precision, "integer": s.integer is not None, "fused": s.fused,
                "split": self.axis, "pieces": self.pieces, "macs": s.macs,
                "vector_ops": s.vector_ops,
                "operands": [{"name": o.name, "role": o.role, "placement": o.placement,
                              "bytes_per_core": max(o.per_core) if o.per_core else 0,
                              "readers": o.readers} for o in self.work.operands]}


@dataclass
class Plan:
    """A program for ``groups x cores`` simulated cores: splits, memory and its cost."""

    hw: Hardware
    options: PlanOptions
    low: Lowered
    groups: int
    cores: int
    steps: list[StepPlan]
    allocations: list[Allocation] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    cost: Cost | None = None
    #: every partition multicore.build_plan costed: groups, cores per group, mode, inferences/s (or why
    #: it could not fit), in the order tried
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    #: data-parallel activations: copies of this program, each on its own cores_per_copy cores
    copies: int = 1

    @property
    def cores_per_copy(self) -> int:
        return self.groups * self.cores

    @property
    def cores_used(self) -> int:
        return self.groups * self.cores * self.copies

    @property
    def mode(self) -> str:
        return mode_name(self.copies, self.groups, self.cores)

    def splits(self) -> list[StepSplit]:
        """How the runner cuts each step (tensor steps only; vector steps run whole)."""
        out = []
        for sp in self.steps:
            if sp.step.kind == "tensor" and sp.axis in ("rows", "channels"):
                out.append(StepSplit(sp.axis, sp.pieces))
            else:
                out.append(StepSplit("none", 1))
        return out

    def evaluate(self, activations: int = 1, hw: Hardware | None = None) -> Cost:
        """The cost with ``activations`` copies, under ``hw`` (default: the plan's hardware;
        the fit evaluates a fixed plan under other constants)."""
        return evaluate([sp.work for sp in self.steps], hw or self.hw, groups=self.groups,
                        cores=self.cores, activations=activations * self.copies,
                        multicast=self.options.multicast_weights,
                        granularity=self.options.granularity,
                        load_bytes=self.memory.get("load_bytes", 0),
                        macs=float(sum(sp.step.macs for sp in self.steps)),
                        host_bytes=float(sum(self.low.tensors[n].nbytes for n in
                                             dict.fromkeys(self.low.inputs + self.low.outputs)
                                             if n in self.low.tensors)))

    def to_json(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION,
                "hardware": self.hw.describe(), "options": self.options.to_json(),
                "partition": {"batch": self.low.batch,
                              "batch_separable": self.low.batch_separable,
                              "copies": self.copies,
                              "groups": self.groups, "cores_per_group": self.cores,
                              "cores_used": self.cores_used, "mode": self.mode,
                              "alternatives": self.alternatives},
                "steps": [sp.to_json() for sp in self.steps],
                "memory": self.memory,
                "tensors": [a.to_json() for a in self.allocations],
                "cost": self.cost.to_json() if self.cost else None}


# --- partitioning ------------------------------------------------------------------------------

def _shares(dim: int, pieces: int, cores: int) -> tuple[list[float], list[int], int]:
    """Fraction of ``dim`` and number of pieces per core (pieces dealt round robin)."""
    ranges = pieces_of(dim, pieces) if dim > 0 else []
    frac, count = [0.0] * cores, [0] * cores
    for i, (a, b) in enumerate(ranges):
        frac[i % cores] += (b - a) / dim
        count[i % cores] += 1
    return frac, count, len(ranges)


def _candidates(step: Step, cores: int, ols: int, elements: int) -> list[tuple[str, int]]:
    if cores == 1:
        return [("none", ols)]
    want = cores * ols
    if step.kind == "tensor":
        g = step.geometry
        out = [("rows", min(want, g["rows"]))]
        if g["channels"] > 1:
            out.append(("channels", min(want, g["channels"])))
        return out
    return [("elements", max(1, min(want, elements)))]


class _Builder:
    """Builds the plan for one number of data-parallel groups."""

    def __init__(self, low: Lowered, hw: Hardware, opts: PlanOptions, groups: int):
        self.low, self.hw, self.opts = low, hw, opts
        self.groups = groups
        self.cores = opts.num_cores // groups
        self.layout: dict[str, str] = {}
        #: placements from an earlier memory plan, used when choosing splits again
        self.hints: dict[str, str] = {}
        #: when set, splits are chosen assuming a core keeps this share of each weight resident
        self.weight_share: float | None = None
        #: the multicast setting split choices assume (plans are costed with the real one)
        self.assume_multicast = opts.multicast_weights
        #: tables read by Gather (embeddings): they stay in DDR, steps read only the rows used
        self.tables: set[str] = set()

    def bytes_of(self, name: str) -> int:
        info = self.low.tensors[name]
        if info.kind == "weight":
            return info.nbytes
        return ceil_div(info.nbytes, self.groups)

    def placement(self, name: str) -> str:
        info = self.low.tensors[name]
        if info.kind == "input" or name in self.low.outputs:
            return "host"
        return self.hints.get(name, "vtcm")

    def unit_bytes(self, name: str) -> int:
        info = self.low.tensors[name]
        return max(1, info.shape[-1] * info.dtype.itemsize if info.shape else info.dtype.itemsize)

    def work(self, step: Step, axis: str, pieces: int) -> StepWork:
        c, g, hw = self.cores, self.groups, self.hw
        geo = step.geometry
        if step.kind == "tensor":
            dim = ceil_div(geo["rows"], g) if axis in ("rows", "none") else geo["channels"]
        else:
            dim = max(1, ceil_div(geo.get("elements", 1), g))
        if axis == "none":
            frac, count = [1.0] + [0.0] * (c - 1), [pieces] + [0] * (c - 1)
            pieces = max(1, pieces)
        else:
            frac, count, pieces = _shares(dim, pieces, c)
        macs = [step.macs / g * f for f in frac]
        vec = [step.vector_ops / g * f for f in frac]
        prec = step.precision
        vrate = hw.vector_macs.get(prec, hw.vector_macs["fp32"])
        unit = "vector"
        rate, peak, util = 0.0, 0.0, 1.0
        if step.kind == "tensor":
            n = geo["n_per_group"]
            if axis == "channels" and geo["groups"] == 1:
                n = ceil_div(geo["channels"], max(1, pieces))
            trate = tensor_rate(hw, prec, geo["reduce"], n)
            if trate >= vrate:
                rate, unit = trate, "tensor"
                peak, util = hw.tensor_macs[prec], tensor_util(hw, prec, geo["reduce"], n)
            else:
                rate = vrate
        elif step.kind == "copy":
            unit = "dma"
        operands = self.operands(step, axis, frac, count)
        return StepWork(macs=macs, vector=vec, rate=rate, vector_rate=vrate, pieces=count,
                        unit=unit, operands=operands, peak_rate=peak, block_util=util)

    def operands(self, step: Step, axis: str, frac: list[float], count: list[int]
                 ) -> list[Operand]:
        c, g = self.cores, self.groups
        geo = step.geometry
        ops: list[Operand] = []
        main_in = self.low.resolve(self.low.nodes[step.nodes[0]].input[0]) \
            if step.kind == "tensor" else None
        b_operand = None
        if step.kind == "tensor" and geo["split"] == "gemm" and not geo.get("b_is_weight", True):
            b_operand = self.low.resolve(self.low.nodes[step.nodes[0]].input[1])
        for name in step.inputs:
            total = self.bytes_of(name)
            src = self.layout.get(name, "none")
            noc = [0] * c
            readers = 1
            if name == main_in:
                if axis == "channels":
                    per = [total if count[k] else 0 for k in range(c)]
                    readers = c
                    if src in ("rows", "channels") and c > 1:
                        # all-gather: each core multicasts its slice once over the NoC
                        noc = [total // c if count[k] else 0 for k in range(c)]
                elif axis == "rows":
                    halo = geo["halo_rows"] * geo["in_row_bytes"]
                    per = [min(total, int(total * frac[k]) + count[k] * halo) if count[k] else 0
                           for k in range(c)]
                    if src == "rows":
                        noc = [min(p, count[k] * halo) for k, p in enumerate(per)]
                    elif src == "channels" and c > 1:
                        noc = [int(p * (1 - 1 / c)) for p in per]
                else:
                    per = [total if count[k] else 0 for k in range(c)]
                unit = geo["in_unit_bytes"]
            elif name == b_operand:
                per = [int(total * frac[k]) if axis == "channels" else
                       (total if count[k] else 0) for k in range(c)]
                readers = 1 if axis == "channels" else c
                unit = geo["w_unit_bytes"]
            else:
                per = [int(total * frac[k]) if axis != "none" else (total if count[k] else 0)
                       for k in range(c)]
                unit = self.unit_bytes(name)
            ops.append(Operand(name, "in", per, readers, noc, min(unit, max(per) or unit),
                               self.placement(name)))
        table = self.low.resolve(self.low.nodes[step.nodes[0]].input[0]) \
            if step.op == "Gather" else None
        for name in step.weights:
            total = self.bytes_of(name)
            if name == table:  # an embedding lookup reads the rows it gathers, not the table
                out = self.low.tensors[self.low.nodes[step.nodes[0]].output[0]]
                total = min(total, ceil_div(out.size * self.low.tensors[name].dtype.itemsize,
                                            g))
                self.tables.add(name)
            if step.kind == "tensor" and axis == "channels":
                per = [int(math.ceil(total * frac[k])) for k in range(c)]
                readers = g
            else:
                per = [total if count[k] else 0 for k in range(c)]
                readers = g * sum(1 for k in range(c) if count[k])
            unit = geo.get("w_unit_bytes", total) if step.kind == "tensor" else \
                self.unit_bytes(name)
            if self.weight_share is not None:
                # capacity-aware guess: a core can keep this share of every weight resident
                place = "vtcm" if max(per) <= total * self.weight_share else "ddr"
            else:
                place = self.hints.get(name, "vtcm")
            ops.append(Operand(name, "weight", per, max(1, readers), [], min(unit, total),
                               place))
        for name in step.outputs:
            total = self.bytes_of(name)
            per = [int(total * frac[k]) if axis != "none" else (total if count[k] else 0)
                   for k in range(c)]
            unit = geo.get("out_row_bytes", self.unit_bytes(name)) if step.kind == "tensor" \
                else self.unit_bytes(name)
            ops.append(Operand(name, "out", per, 1, [], min(unit, max(per) or unit),
                               self.placement(name)))
        return ops

    def partition(self) -> list[StepPlan]:
        self.layout = {n: "none" for n in self.low.inputs}
        plans = []
        for step in self.low.steps:
            elements = ceil_div(step.geometry.get("elements", 1), self.groups)
            best = None
            for axis, pieces in _candidates(step, self.cores, self.opts.ols, elements):
                work = self.work(step, axis, pieces)
                cost = step_cost(work, self.hw, active_cores=self.groups * self.cores,
                                 multicast=self.assume_multicast,
                                 granularity=self.opts.granularity, cores=self.cores)
                if best is None or cost.time < best[0] - 1e-15:
                    best = (cost.time, axis, pieces, work)
            _, axis, pieces, work = best
            if step.kind == "tensor":
                layout = axis if axis in ("rows", "channels") else "none"
            else:
                first = step.inputs[0] if step.inputs else None
                layout = self.layout.get(first, "none") if first else "none"
                if layout == "none" and axis == "elements":
                    layout = "rows"
            for name in step.outputs:
                self.layout[name] = layout
            plans.append(StepPlan(step=step, axis=axis, pieces=pieces if axis != "none" else 1,
                                  work=work, layout=layout))
        return plans

    def memory(self, plans: list[StepPlan]) -> tuple[list[Allocation], dict[str, Any]]:
        """The memory plan of these splits (see ``memory.plan_memory``)."""
        o = self.opts
        return plan_memory(plans, self.low, self.hw,
                           MemoryOptions(o.granularity, o.vtcm_working_set_limit_ratio, o.mos,
                                         o.depth_first),
                           self.cores * self.groups, self.tables)


def group_counts(low: Lowered, cores: int) -> list[int]:
    if not low.batch_separable or low.batch <= 1:
        return [1]
    return [g for g in range(1, min(low.batch, cores) + 1) if low.batch % g == 0]


def mode_name(copies: int, groups: int, cores: int) -> str:
    inner = ("data-parallel + operator-split" if groups > 1 and cores > 1 else
             "data-parallel" if groups > 1 else "operator-split" if cores > 1 else "single-core")
    if copies == 1:
        return inner
    return f"data-parallel activations ({copies} copies" + (
        ")" if inner == "single-core" else f", each {inner})")


def search(low: Lowered, hw: Hardware, opts: PlanOptions, groups: int) -> Plan:
    """Local search over the splits for ``groups`` data-parallel groups.

    Splits are chosen step by step by the cost model under a guess of where the weights live:
    all on chip, all streamed, or each core keeping the share of every weight that half its VTCM
    allows; the guess is checked by planning memory, and splits are chosen again with the
    placements that plan produced, while that helps. Choices are also tried as if
    ``-multicast-weights`` were the other way (so the flag can only help). Every plan is costed
    with the real options; the fastest wins.
    """
    b = _Builder(low, hw, opts, groups)
    all_ddr = {n: "ddr" for n, t in low.tensors.items() if t.kind == "weight"}
    total_w = sum(t.nbytes for t in low.tensors.values() if t.kind == "weight") or 1
    share = min(1.0, hw.vtcm_bytes * opts.vtcm_working_set_limit_ratio / opts.mos / 2 / total_w)
    best: Plan | None = None
    errors: list[BackendError] = []
    for multicast in (opts.multicast_weights, not opts.multicast_weights):
        b.assume_multicast = multicast
        for hints, guess in (({}, None), (all_ddr, None), ({}, share)):
            b.hints, b.weight_share = dict(hints), guess
            previous: Plan | None = None
            for _ in range(3):
                steps = b.partition()
                try:
                    allocations, memory = b.memory(steps)
                except BackendError as e:  # these splits do not fit; others may
                    errors.append(e)
                    break
                plan = Plan(hw=hw, options=opts, low=low, groups=groups, cores=b.cores,
                            steps=steps, allocations=allocations, memory=memory)
                plan.cost = plan.evaluate(1)
                if previous is not None and plan.cost.interval_s >= previous.cost.interval_s:
                    break
                previous = plan
                placed = {a.name: a.placement for a in allocations if a.kind != "io"}
                if placed == b.hints or all(v == "vtcm" for v in placed.values()):
                    break
                b.hints, b.weight_share = placed, None
            if previous is not None and (best is None or previous.cost.interval_s
                                         < best.cost.interval_s * (1 - 1e-12)):
                best = previous
    if best is None:
        raise errors[0]
    return best

