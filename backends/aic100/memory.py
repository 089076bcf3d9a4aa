"""The memory plan: a partitioned program's operands into places per core, VTCM (with an offset)
or DDR, and the memory figures the cost model and the report read.

Every core runs the same program on its slice, so one core is planned. Each step streams the
operands it does not hold on chip through VTCM in tiles of ``-size-split-granularity`` bytes (at
least the op's smallest unit: a few input rows, one weight column), plus one prefetch tile; that
working set must fit in the VTCM budget (``8 MiB x -vtcm-working-set-limit-ratio``), else the plan
cannot fit and the error names the tensor and the shortfall. What VTCM is left at each step,
divided by ``-mos`` (effort to use less on-chip memory), holds resident tensors: small constants
in a pool at the bottom, then activations (first fit, by liveness over the schedule: a buffer
lives from the step that writes it to the last step that reads it), then weights (live for the
whole program, loaded once when the program is loaded). Everything else lives in DDR:
activations are written and read back, weights streamed every inference. With
``-aic-enable-depth-first``, a buffer passed from a row-split step straight to the next row-split
step needs only a band of two tiles on chip (the steps run tile by tile, depth first). Graph
inputs and outputs are host buffers in DDR. A table a Gather reads (an embedding) stays in DDR.

The steps, in order: ``_tiles`` (each step's streaming working set, refusing one that cannot
fit), ``_lifetimes`` (an ``Allocation`` per tensor), ``_bands`` (depth-first), ``_pool``
(small constants), ``_place`` (first fit of the resident tensors), ``_check_ddr`` and
``_summary``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from aicc.errors import BackendError

from .cost import Operand, StepWork
from .hardware import Hardware
from .lower import Lowered, Step

__all__ = ["Allocation", "MemoryOptions", "plan_memory"]

#: constants up to this size share one resident pool instead of being allocated one by one
_POOL_ITEM = 1024


class StepPlan(Protocol):
    """What the memory plan reads of a step's plan (``plan.StepPlan``)."""

    step: Step
    axis: str
    work: StepWork


@dataclass(frozen=True)
class MemoryOptions:
    """The compile options the memory plan follows (from ``plan.PlanOptions``)."""

    granularity: int                  # streaming tile, bytes (-size-split-granularity)
    vtcm_working_set_limit_ratio: float
    mos: int
    depth_first: bool


@dataclass
class Allocation:
    """A tensor's place: VTCM (with offset) or DDR, and its lifetime in steps."""

    name: str
    kind: str                  # "activation", "weight" or "io"
    bytes_per_core: int
    first: int
    last: int
    placement: str = "ddr"
    offset: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "bytes_per_core": self.bytes_per_core,
                "first_step": self.first, "last_step": self.last, "placement": self.placement,
                "offset": self.offset}


def plan_memory(plans: Sequence[StepPlan], low: Lowered, hw: Hardware, opts: MemoryOptions,
                cores_total: int, tables: set[str]) -> tuple[list[Allocation], dict[str, Any]]:
    """Place every operand of ``plans`` (VTCM or DDR) on one core of ``cores_total``; ``tables``
    are the Gather tables that stay in DDR. Sets each operand's placement; returns the
    allocations (by first step) and the memory figures. Raises when a step's working set does
    not fit in VTCM or the program does not fit in DDR."""
    budget = int(hw.vtcm_bytes * opts.vtcm_working_set_limit_ratio)
    tiles = _tiles(plans, opts.granularity, budget)
    life = _lifetimes(plans, low.outputs)
    band = _bands(plans, life, tiles) if opts.depth_first else {}
    pool = _pool(life.allocs, tables, budget)
    for t in tiles:
        for name in [n for n in t if life.allocs[n].placement == "vtcm"]:
            del t[name]
    top, staging = _place(life, tiles, band, pool, tables, budget, budget // opts.mos)
    for a in life.allocs.values():
        if a.kind == "io":
            a.placement = "host"
    for sp in plans:
        for op in sp.work.operands:
            op.placement = life.allocs[op.name].placement
    weights = [a for a in life.allocs.values() if a.kind == "weight"]
    ddr_used = _check_ddr(life.allocs, weights, low, hw)
    memory = _summary(life.allocs, weights, band, low, top, staging, budget, ddr_used,
                      cores_total)
    allocations = sorted(life.allocs.values(), key=lambda a: (a.first, a.kind, a.name))
    return allocations, memory


def _tile(op: Operand, gran: int) -> int:
    """The bytes of ``op`` a streamed tile holds: the granularity, at least the op's unit."""
    peak = max(op.per_core) if op.per_core else 0
    return min(peak, max(gran, op.unit))


def _staging(t: dict[str, int]) -> int:
    """VTCM that streaming these tiles needs: the tiles plus one prefetch of the largest."""
    return sum(t.values()) + (max(t.values()) if t else 0)


def _tiles(plans: Sequence[StepPlan], gran: int, budget: int) -> list[dict[str, int]]:
    """Per step, the tile each operand needs while it is streamed (by tensor name); refuses a
    step whose smallest working set exceeds the budget."""
    tiles: list[dict[str, int]] = []
    for sp in plans:
        t: dict[str, int] = {}
        for o in sp.work.operands:
            if max(o.per_core or [0]) > 0:
                t[o.name] = max(t.get(o.name, 0), _tile(o, gran))
        need = _staging(t)
        if need > budget:
            name = max(t, key=lambda n: t[n])
            raise BackendError(
                f"step '{sp.step.name}' ({sp.step.op}) cannot fit: its smallest working set "
                f"is {_kib(need)} (largest: tensor '{name}', tile {_kib(t[name])}) but the "
                f"VTCM budget is {_kib(budget)}; short by {_kib(need - budget)}",
                where="backend 'aic100'",
                hint="raise -vtcm-working-set-limit-ratio, lower -size-split-granularity, "
                     "or split the op over more cores")
        tiles.append(t)
    return tiles


@dataclass
class _Lifetimes:
    """Which steps read each tensor, its largest share per core, its kind and allocation."""

    uses: dict[str, list[int]]
    peak: dict[str, int]
    kind: dict[str, str]
    allocs: dict[str, Allocation]


def _lifetimes(plans: Sequence[StepPlan], outputs: list[str]) -> _Lifetimes:
    """A buffer lives from the step writing it to the last step reading it (graph outputs to
    the end); weights live for the whole program."""
    nsteps = len(plans)
    uses: dict[str, list[int]] = {}
    peak: dict[str, int] = {}
    first: dict[str, int] = {}
    kind: dict[str, str] = {}
    for s_, sp in enumerate(plans):
        for op in sp.work.operands:
            p_ = max(op.per_core) if op.per_core else 0
            peak[op.name] = max(peak.get(op.name, 0), p_)
            if op.role == "out":
                first.setdefault(op.name, s_)
            else:
                uses.setdefault(op.name, []).append(s_)
                first.setdefault(op.name, 0)
            if op.name not in kind:
                kind[op.name] = "weight" if op.role == "weight" else (
                    "io" if op.placement == "host" else "activation")
    allocs: dict[str, Allocation] = {}
    for name, k in kind.items():
        if k == "weight":
            allocs[name] = Allocation(name, k, peak[name], 0, nsteps - 1)
        else:
            last = max(uses.get(name, []) + [first[name]])
            if name in outputs:
                last = nsteps - 1
            allocs[name] = Allocation(name, k, peak[name], first[name], last)
    return _Lifetimes(uses, peak, kind, allocs)


def _bands(plans: Sequence[StepPlan], life: _Lifetimes, tiles: list[dict[str, int]]
           ) -> dict[str, int]:
    """Depth first: an activation passed from a step to the next only, neither split by
    channels, needs a band of two tiles on chip instead of the whole buffer."""
    band: dict[str, int] = {}
    for s_, sp in enumerate(plans[:-1]):
        nxt = plans[s_ + 1]
        if "channels" in (sp.axis, nxt.axis):
            continue
        for name in sp.step.outputs:
            if life.kind.get(name) == "activation" and life.uses.get(name) == [s_ + 1]:
                band[name] = min(life.peak[name], 2 * tiles[s_].get(name, 0))
    return band


def _pool(allocs: dict[str, Allocation], tables: set[str], budget: int) -> int:
    """Small constants (scales, zero points, small biases) placed in a pool at the bottom of
    VTCM; returns its size."""
    pool = 0
    for a in sorted(allocs.values(), key=lambda a: a.name):
        if a.kind == "weight" and a.bytes_per_core <= _POOL_ITEM and a.name not in tables:
            a.placement, a.offset = "vtcm", pool
            pool += a.bytes_per_core
    return min(pool, budget)


def _place(life: _Lifetimes, tiles: list[dict[str, int]], band: dict[str, int], pool: int,
           tables: set[str], budget: int, resident_limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Resident tensors, first fit: activations by first step, then weights by first use. A
    tensor placed on chip no longer needs its streaming tile; it is placed only if resident
    bytes plus what still streams stay within the budget at every step of its life. Returns,
    per step, the top of the resident blocks and the streaming bytes."""
    nsteps = len(tiles)
    allocs, uses = life.allocs, life.uses
    streamed = [dict(t) for t in tiles]
    staging = np.array([_staging(t) for t in streamed], dtype=np.int64)
    top = np.full(nsteps, pool, dtype=np.int64)
    streamed_at: dict[str, list[int]] = {}
    for s_, t in enumerate(streamed):
        for name in t:
            streamed_at.setdefault(name, []).append(s_)
    placed = _Placed()
    if pool:
        placed.add(0, nsteps - 1, 0, pool)
    order = sorted((a for a in allocs.values() if a.kind == "activation"),
                   key=lambda a: (a.first, a.name))
    order += sorted((a for a in allocs.values() if a.kind == "weight"
                     and a.placement != "vtcm" and a.name not in tables),
                    key=lambda a: (min(uses.get(a.name, [0])), a.name))
    for a in order:
        size = band.get(a.name, a.bytes_per_core)
        off = placed.first_fit(a.first, a.last, size, resident_limit)
        if off is None:
            continue
        # staging left at each step of its life once this tensor no longer streams
        span = slice(a.first, a.last + 1)
        after = staging[span].copy()
        changed = {}
        for s_ in streamed_at.get(a.name, ()):
            if a.first <= s_ <= a.last and a.name in streamed[s_]:
                changed[s_] = _staging({n: v for n, v in streamed[s_].items() if n != a.name})
                after[s_ - a.first] = changed[s_]
        if np.any(np.maximum(top[span], off + size) + after > budget):
            continue
        placed.add(a.first, a.last, off, size)
        a.placement, a.offset = "vtcm", off
        if a.name in band:
            a.bytes_per_core = size
        for s_ in changed:
            streamed[s_].pop(a.name, None)
        staging[span] = after
        top[span] = np.maximum(top[span], off + size)
    return top, staging


def _check_ddr(allocs: dict[str, Allocation], weights: list[Allocation], low: Lowered,
               hw: Hardware) -> int:
    """DDR the program uses (every weight, and the activations off chip once per pipeline
    stage); refuses a program that does not fit."""
    ddr_used = sum(low.tensors[a.name].nbytes for a in weights)
    ddr_act = [(low.tensors[a.name].nbytes, a.name) for a in allocs.values()
               if a.kind in ("activation", "io") and a.placement != "vtcm"]
    ddr_used += sum(b for b, _ in ddr_act) * math.ceil(hw.pipeline_depth)
    if ddr_used > hw.ddr_bytes:
        big = max(ddr_act + [(low.tensors[a.name].nbytes, a.name) for a in weights])
        raise BackendError(f"the program needs {ddr_used / 2**30:.2f} GiB of DDR but "
                           f"{hw.name} has {hw.ddr_bytes / 2**30:.0f} GiB (largest: tensor "
                           f"'{big[1]}', {big[0] / 2**20:.1f} MiB); short by "
                           f"{(ddr_used - hw.ddr_bytes) / 2**20:.1f} MiB",
                           where="backend 'aic100'",
                           hint="use sku=pro (more DDR) or a smaller batch")
    return ddr_used


def _summary(allocs: dict[str, Allocation], weights: list[Allocation], band: dict[str, int],
             low: Lowered, top: np.ndarray, staging: np.ndarray, budget: int, ddr_used: int,
             cores_total: int) -> dict[str, Any]:
    """The memory figures of the plan (``Plan.memory``)."""
    nsteps = len(top)
    peak_vtcm = int((top + staging).max()) if nsteps else 0
    resident = sum(a.bytes_per_core for a in weights if a.placement == "vtcm")
    return {
        "vtcm_budget_bytes": budget, "vtcm_peak_bytes": int(peak_vtcm),
        "vtcm_resident_peak_bytes": int(top.max()) if nsteps else 0,
        "staging_peak_bytes": int(staging.max()) if nsteps else 0,
        "resident_weight_bytes_per_core": int(resident),
        "streamed_weight_bytes": int(sum(low.tensors[a.name].nbytes for a in weights
                                         if a.placement != "vtcm")),
        "ddr_activation_buffers": sum(1 for a in allocs.values()
                                      if a.kind == "activation" and a.placement == "ddr"),
        "depth_first_bands": len([n for n in band if allocs[n].placement == "vtcm"]),
        "ddr_used_bytes": int(ddr_used),
        "load_bytes": int(resident * cores_total),
    }


class _Placed:
    """Resident VTCM blocks (first step, last step, offset, end) and first-fit queries on them
    (arrays: a large graph places thousands of blocks and asks tens of thousands of times)."""

    def __init__(self) -> None:
        self.rows = np.zeros((0, 4), dtype=np.int64)

    def add(self, first: int, last: int, off: int, size: int) -> None:
        self.rows = np.vstack([self.rows, np.array([[first, last, off, off + size]], np.int64)])

    def first_fit(self, first: int, last: int, size: int, limit: int) -> int | None:
        """The lowest offset where ``size`` bytes fit below ``limit`` for steps first..last."""
        if size > limit:
            return None
        r = self.rows
        live = r[(r[:, 1] >= first) & (r[:, 0] <= last)]
        live = live[np.lexsort((live[:, 3], live[:, 2]))]
        off = 0
        for lo, hi in live[:, 2:].tolist():
            if off + size <= lo:
                break
            off = max(off, hi)
        return off if off + size <= limit else None


def _kib(n: int) -> str:
    return f"{n / 1024:.0f} KiB"
