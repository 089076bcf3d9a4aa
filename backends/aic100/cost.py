"""The cost model: a partitioned, memory-planned program into per-core step times, latency,
pipelined throughput and traffic.

Per step and core (a roofline with overlap):

    compute  = (max(tensor MACs / (MACs per clock x utilization x tensor efficiency),
                    vector work / (lanes x vector efficiency),
                    VTCM bytes / VTCM bytes per clock)
                + step overhead + tiles x tile overhead) / clock
    transfer = DDR bytes / (DDR bandwidth x DDR efficiency / active cores)
               + NoC bytes / (NoC bandwidth x NoC efficiency / active cores)
    time     = max(compute, transfer) + min(compute, transfer) / tiles

(the units stream their operands from VTCM as they compute, so on-chip traffic overlaps with the
arithmetic; DMA transfers from DDR and over the NoC overlap tile by tile).

The tensor unit multiplies a K-block by an N-block per clock; its utilization is
``u = K / (ceil(K / Kb) Kb) x N / (ceil(N / Nb) Nb)`` for the reduction K and the core's output
channels N (thin or split layers waste MACs), and the rate ``peak x u ** block exponent``. A step runs on the tensor or the vector unit, whichever is
faster (depthwise convolutions go to the vector unit). Tiles: a step's work on a core is cut into
pieces (``-ols``) and each piece into tiles of ``-size-split-granularity`` bytes; more tiles hide
more of the smaller of compute and memory time behind the larger, at a fixed cost per tile.
DDR and NoC bandwidth are shared by every active core (of every activation). A DDR operand several
cores read (weights under row splitting or data parallelism, a full input under channel
splitting) is read once and multicast with ``-multicast-weights``, else once per reader. The
NoC multicasts on its own (the vendor documents it): gathering a channel-split input costs each
core one send of its slice; regathering rows from channel slices is an all-to-all.

The step time is the slowest core's time plus a barrier when several cores split it; latency is
the sum of step times. Successive inferences pipeline: one activation completes an inference every

    interval = max(latency / pipeline depth, busiest core's busy time, DDR bytes / DDR bandwidth,
                   NoC bytes / NoC bandwidth)

and ``A`` activations (``aicc run -a``) each on their own cores complete ``A`` inferences per
``max(interval, A x DDR bytes / DDR bandwidth, A x NoC bytes / NoC bandwidth)`` (bandwidths
times their efficiencies). The end-to-end latency a host sees adds the graph inputs and outputs
crossing the host link (PCIe) to the device latency (the host overlaps those transfers with
computation when it streams inferences, so they do not limit the interval here).

The efficiencies, overheads and pipeline depth are the model's free constants (``Hardware``):
fitted to published figures by ``fit.py``, ASSUMED otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .hardware import Hardware

__all__ = ["Operand", "StepWork", "StepCost", "Cost", "step_cost", "evaluate", "tensor_rate",
           "tensor_util"]


@dataclass
class Operand:
    """One tensor a step reads or writes, per core of a group."""

    name: str
    role: str                 # "in", "weight" or "out"
    per_core: list[int]       # bytes each core of the group touches
    readers: int = 1          # cores (over all groups) reading the very same bytes
    noc: list[int] = field(default_factory=list)  # bytes each core receives over the NoC
    unit: int = 1             # the smallest tile the op can work on (bytes)
    placement: str = "vtcm"   # "vtcm", "ddr" or "host" (graph I/O buffers in DDR)


@dataclass
class StepWork:
    """What one step asks of each core of a group."""

    macs: list[float]         # tensor-unit MACs per core
    vector: list[float]       # vector-unit work per core
    rate: float               # MACs per clock of the chosen unit (utilization included)
    vector_rate: float        # vector lanes for this precision
    pieces: list[int]         # pieces per core
    unit: str                 # "tensor", "vector" or "dma"
    operands: list[Operand]
    peak_rate: float = 0.0    # tensor-unit MACs per clock at full blocks (tensor steps)
    block_util: float = 1.0   # the share of the block this step fills (see tensor_util)


@dataclass
class StepCost:
    """Times (seconds) of one step per core, and its traffic (bytes, one group)."""

    per_core: list[float]
    compute: list[float]
    memory: list[float]       # DDR and NoC transfer time
    time: float
    ddr: float                # DDR bytes actually moved, all cores of the group
    noc: float
    vtcm: float
    tiles: list[int]


@dataclass
class Cost:
    """Whole-program figures for ``activations`` copies of the program."""

    activations: int
    latency_s: float
    interval_s: float
    inferences_per_s: float
    busy_s: list[float]       # per core of one activation (groups x cores)
    ddr_bytes: float          # per inference (one activation)
    noc_bytes: float
    load_bytes: float         # resident weights loaded once, when the program is loaded
    bound: str                # what limits the interval
    steps: list[StepCost]
    macs: float
    host_s: float = 0.0       # graph inputs and outputs over the host link, one inference

    @property
    def e2e_latency_s(self) -> float:
        """Device latency plus the host transfers of one inference."""
        return self.latency_s + self.host_s

    def to_json(self) -> dict[str, Any]:
        return {"activations": self.activations, "latency_us": round(self.latency_s * 1e6, 3),
                "interval_us": round(self.interval_s * 1e6, 3),
                "inferences_per_s": round(self.inferences_per_s, 3),
                "ddr_bytes_per_inference": round(self.ddr_bytes),
                "noc_bytes_per_inference": round(self.noc_bytes),
                "load_bytes": round(self.load_bytes), "bound": self.bound,
                "host_transfer_us": round(self.host_s * 1e6, 3),
                "busy_us": [round(b * 1e6, 3) for b in self.busy_s]}


def tensor_util(hw: Hardware, precision: str, reduce: int, n: int) -> float:
    """The share of the tensor unit's K x N block a reduction K and N output channels fill."""
    if precision not in hw.tensor_macs:
        return 0.0
    kb, nb = hw.tensor_block[precision]
    return (reduce / (math.ceil(reduce / kb) * kb)) * (n / (math.ceil(n / nb) * nb))


def tensor_rate(hw: Hardware, precision: str, reduce: int, n: int) -> float:
    """Tensor-unit MACs per clock for a K x N block structure (0 for fp32), before the unit's
    efficiency: peak x utilization ** block exponent (1: a partly filled block wastes all its
    idle MACs; below 1 the hardware recovers some of them, e.g. by packing two thin blocks)."""
    util = tensor_util(hw, precision, reduce, n)
    return hw.tensor_macs[precision] * util ** hw.block_exponent if util else 0.0


def step_cost(work: StepWork, hw: Hardware, *, active_cores: int, multicast: bool,
              granularity: int, cores: int) -> StepCost:
    """The time of one step on each core of a group (see the module docstring)."""
    f = hw.clock_hz
    ddr_share = hw.ddr_bytes_per_s * hw.ddr_efficiency / max(1, active_cores)
    noc_share = hw.noc_bytes_per_s * hw.noc_efficiency / max(1, active_cores)
    if work.unit == "tensor" and work.peak_rate:
        t_rate = work.peak_rate * work.block_util ** hw.block_exponent * hw.tensor_efficiency
    else:
        t_rate = work.rate * (hw.tensor_efficiency if work.unit == "tensor" else
                              hw.vector_efficiency)
    v_rate = work.vector_rate * hw.vector_efficiency
    n = len(work.macs)
    per_core, comp, mem, tiles = [0.0] * n, [0.0] * n, [0.0] * n, [1] * n
    ddr_total = noc_total = vtcm_total = 0.0
    for k in range(n):
        if work.pieces[k] == 0:
            continue
        ddr = noc = vtcm = 0.0
        biggest = 0
        for op in work.operands:
            b = op.per_core[k]
            if b <= 0:
                continue
            if op.placement in ("ddr", "host"):
                ddr += b / op.readers if multicast and op.readers > 1 else b
                biggest = max(biggest, b / max(1, work.pieces[k]))
            else:
                vtcm += b
                if op.noc:
                    noc += op.noc[k]
        tensor = work.macs[k] / t_rate if t_rate > 0 else 0.0
        vector = work.vector[k] / v_rate if v_rate > 0 else 0.0
        t = max(1, work.pieces[k]) * max(1, math.ceil(biggest / granularity))
        cycles = max(tensor, vector, vtcm / hw.vtcm_bytes_per_clock)
        c_s = (cycles + hw.step_overhead_cycles + t * hw.tile_overhead_cycles) / f
        m_s = ddr / ddr_share + noc / noc_share
        per_core[k] = max(c_s, m_s) + min(c_s, m_s) / t
        comp[k], mem[k], tiles[k] = c_s, m_s, t
        ddr_total += ddr
        noc_total += noc
        vtcm_total += vtcm
    time = max(per_core) + (hw.sync_cycles / f if cores > 1 and sum(
        1 for p in work.pieces if p) > 1 else 0.0)
    return StepCost(per_core=per_core, compute=comp, memory=mem, time=time, ddr=ddr_total,
                    noc=noc_total, vtcm=vtcm_total, tiles=tiles)


def evaluate(works: Sequence[StepWork], hw: Hardware, *, groups: int, cores: int,
             activations: int, multicast: bool, granularity: int, load_bytes: float,
             macs: float, host_bytes: float = 0.0) -> Cost:
    """Latency, interval and throughput of the program with ``activations`` copies;
    ``host_bytes`` are the graph inputs and outputs of one inference."""
    active = groups * cores * activations
    steps = [step_cost(w, hw, active_cores=active, multicast=multicast,
                       granularity=granularity, cores=cores) for w in works]
    latency = sum(s.time for s in steps)
    busy = [sum(s.per_core[k] for s in steps) for k in range(cores)] if steps else [0.0]
    # groups run the same program on their own batch slices
    ddr = _multicast_ddr(works, groups) if multicast else sum(s.ddr for s in steps) * groups
    noc = sum(s.noc for s in steps) * groups
    limits = {"latency / pipeline depth": latency / hw.pipeline_depth,
              "core busy time": max(busy),
              "DDR bandwidth": activations * ddr / (hw.ddr_bytes_per_s * hw.ddr_efficiency),
              "NoC bandwidth": activations * noc / (hw.noc_bytes_per_s * hw.noc_efficiency)}
    bound = max(limits, key=lambda k: limits[k])
    interval = max(limits[bound], hw.step_overhead_cycles / hw.clock_hz)  # never free
    if bound == "core busy time" and steps:
        k = max(range(cores), key=lambda i: busy[i])
        transfer = sum(s.memory[k] for s in steps)
        bound += " (mostly DDR/NoC transfers)" if transfer > sum(s.compute[k] for s in steps) \
            else " (mostly compute)"
    ips = activations / interval
    return Cost(activations=activations, latency_s=latency, interval_s=interval,
                inferences_per_s=ips, busy_s=busy * groups, ddr_bytes=ddr, noc_bytes=noc,
                load_bytes=load_bytes, bound=bound, steps=steps, macs=macs,
                host_s=host_bytes / hw.host_bytes_per_s)


def _multicast_ddr(works: Sequence[StepWork], groups: int) -> float:
    """DDR bytes per inference when every shared DDR operand is read once and multicast."""
    total = 0.0
    for w in works:
        for op in w.operands:
            if op.placement not in ("ddr", "host"):
                continue
            b = sum(op.per_core)
            if op.readers > 1:
                # each of `readers` cores (over all groups) gets the same bytes
                total += b * groups / op.readers
            else:
                total += b * groups
    return total
