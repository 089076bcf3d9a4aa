"""The ``aic100`` backend: each graph of a Program lowered into a plan for N simulated AI cores of a
Cloud AI 100 (partition, on-chip memory plan, cost) and executed with the device's numerics.

Modules: ``hardware`` (the TOML descriptions in ``hw/``, and the fitted constants in
``hw/fit/``), ``lower`` (a subpackage: graph -> fused steps, precision and op checks),
``transposed`` (ConvTranspose geometry and arithmetic), ``plan`` (partitioning), ``memory`` (the
memory plan), ``numerics`` (int8 and fp16 execution), ``cost`` (roofline per core, shared DDR,
pipelining), ``fit`` (fitting the cost model's free constants to published figures), ``profile``
(report, per-op stats, Chrome trace, latency percentiles), ``workloads`` and ``workloads_bert``
(ResNet-50, MobileNet and BERT-large shaped graphs for tests and the benchmarks).

Everything that can fail does so in ``compile``, before anything runs: symbolic shapes, ops the
device lacks, float32 computation (the vendor makes ``-convert-to-fp16`` mandatory; aicc refuses
rather than silently lowering precision), a core count above the card's, a plan that cannot fit.
The plan is saved as ``plan.json`` beside the graph; loading a container rebuilds the plan from the
graph and the recorded options and refuses a ``plan.json`` that does not match it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from aicc.backend import Backend, Executable
from aicc.configfile import load_json
from aicc.errors import BackendError, ConfigError, ContainerError
from aicc.fileio import write_text
from aicc.hookspecs import hookimpl
from aicc.options import option

from .hardware import Hardware, known_versions, load_hardware
from .lower import DTYPES, SUPPORTED_OPS, lower, unsupported_nodes
from .numerics import Runner
from .multicore import build_plan
from .plan import Plan, PlanOptions
from .profile import (latency_lines, numeric_lines, simulated_latencies, stats_lines,
                      summary_lines, trace_json)

__all__ = ["Aic100Backend", "Aic100Executable", "Aic100Options", "PLAN_FILE", "plan_json",
           "known_versions", "aicc_register_backends"]

logger = logging.getLogger(__name__)

PLAN_FILE = "plan.json"


@dataclasses.dataclass(frozen=True)
class Aic100Options:
    """Options of the aic100 backend (the vendor's compile flags map onto these)."""

    hw_version: str | float = option("2.0", "hardware version (-aic-hw-version); 2.0 is the "
                                            "AIC100 family")
    sku: str = option("standard", "card: standard (14 AI cores, 16 GB) or pro (16, 32 GB)",
                      choices=("standard", "pro"))
    num_cores: int = option(1, "AI cores of one activation (-aic-num-cores)", minimum=1,
                            maximum=64)
    ols: int = option(1, "split each operation into this many times more pieces (-ols); a "
                         "specialization's compile_opts -ols overrides it", minimum=1, maximum=64)
    mos: int = option(1, "effort to use less on-chip memory: resident VTCM divided by this "
                         "(-mos)", minimum=1, maximum=64)
    multicast_weights: bool = option(False, "read DDR tensors several cores need once and "
                                            "multicast them (-multicast-weights)")
    stats_batchsize: int = option(0, "samples per inference in reported throughput "
                                     "(-stats-batchsize; 0: the graph's batch)", minimum=0)
    size_split_granularity: int = option(1024, "tile size in KiB for streaming tensors through "
                                               "VTCM (-size-split-granularity)",
                                         minimum=512, maximum=2048)
    vtcm_working_set_limit_ratio: float = option(1.0, "fraction of each core's VTCM the plan "
                                                      "may use (-vtcm-working-set-limit-ratio)",
                                                 minimum=0.0, maximum=1.0)
    depth_first: bool = option(False, "run chains of row-split steps tile by tile so their "
                                      "intermediates stay on chip (-aic-enable-depth-first)")
    multicore: str = option("auto", "how -aic-num-cores are used: auto (the fastest for the "
                                    "batch), split (one program: ops split over the cores, or "
                                    "the batch over groups of them) or activations (copies of a "
                                    "program for fewer cores, each running whole inferences)",
                            choices=("auto", "split", "activations"))
    profiling: str = option("", "device profiling recorded in the plan: stats, trace or latency "
                                "(-aic-profiling-type)", choices=("", "stats", "trace", "latency"))
    activations: int = option(1, "copies of the program on their own cores, inferences dealt "
                                 "round robin (aicc run -a)", minimum=1, maximum=64)


def _version(value: str | float) -> str:
    return value if isinstance(value, str) else repr(float(value))


class Aic100Executable(Executable):
    """A planned graph: runs the device numerics and reports the simulated figures."""

    def __init__(self, plan: Plan, runner: Runner, options: Aic100Options, graph_inputs):
        self.plan = plan
        self.runner = runner
        self.options = options
        self.inputs = graph_inputs
        self.runs = 0
        self.wall_s: list[float] = []
        self.cost = plan.evaluate(options.activations)
        self._json = plan_json(plan, options)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in self.inputs:
            info = self.plan.low.tensors[name]
            arr = feeds.get(name)
            if arr is None:
                raise BackendError(f"missing input '{name}'", where="backend 'aic100'")
            if tuple(arr.shape) != info.shape or arr.dtype != info.dtype:
                raise BackendError(f"input '{name}' is {arr.dtype}{list(arr.shape)}, the plan "
                                   f"takes {info.dtype}{list(info.shape)}",
                                   where="backend 'aic100'")
        start = time.perf_counter()
        outputs = self.runner.run({n: feeds[n] for n in self.inputs})
        self.wall_s.append(time.perf_counter() - start)
        self.runs += 1
        return outputs

    @property
    def stats_batchsize(self) -> int:
        return self.options.stats_batchsize or max(1, self.plan.low.batch)

    def first_nonfinite(self) -> dict[str, Any] | None:
        """The first node whose fp16 output held inf/NaN so far (the simulator watches every
        node's fp16 results, as the device report counts them)."""
        first = self.runner.first_fp16
        return dict(first) if first is not None else None

    def plan_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._json))

    def trace(self, inferences: int | None = None) -> dict[str, Any]:
        """The Chrome trace of the runs so far (or of ``inferences`` simulated inferences)."""
        return trace_json(self.plan, self.cost, inferences if inferences is not None
                          else max(1, self.runs))

    def report(self, name: str = "") -> list[str]:
        """What ``aicc run`` prints: the summary, plus the profile the plan asks for."""
        lines = summary_lines(self.plan, self.cost, name=name,
                              stats_batchsize=self.stats_batchsize, wall_s=self.wall_s)
        lines += numeric_lines(self.runner.saturations, self.runner.fp16, self.runs)
        kind = self.options.profiling
        if kind == "stats":
            lines.append("  per-op statistics (simulated, one inference):")
            lines += stats_lines(self.plan, self.cost)
        elif kind == "latency":
            lines += latency_lines(simulated_latencies(self.cost, self.runs,
                                                       self.plan.hw.ddr_bytes_per_s),
                                   self.wall_s)
        elif kind == "trace":
            events = sum(1 for e in self.trace()["traceEvents"] if e["ph"] == "X")
            lines.append(f"  trace: {events} events over {max(1, self.runs)} inference(s), one "
                         "track per core (written by aicc run to --aic-profiling-out-dir or "
                         "--write-output-dir)")
        return lines

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "runs": self.runs,
            "simulated": {**self.cost.to_json(),
                          "samples_per_s": round(self.cost.inferences_per_s
                                                 * self.stats_batchsize, 3),
                          "stats_batchsize": self.stats_batchsize,
                          "expected_error": {"throughput": self.plan.hw.error_band,
                                             "latency": self.plan.hw.latency_error_band,
                                             "constants": self.plan.hw.constants_source},
                          "int32_saturations": self.runner.saturations,
                          "fp16_nonfinite": {k: dict(v) for k, v in
                                             sorted(self.runner.fp16.items())}},
            "plan": {"mode": self.plan.mode, "copies": self.plan.copies,
                     "groups": self.plan.groups,
                     "cores_per_group": self.plan.cores, **self.plan.memory},
            "wall_s_per_inference": float(np.mean(self.wall_s)) if self.wall_s else None,
            "report": self.report(),
        }
        if self.options.profiling == "trace":
            out["files"] = {"aic100-trace.json": self.trace()}
        return out

    def save(self, folder: Path) -> list[str]:
        text = json.dumps(self._json, indent=1, sort_keys=True) + "\n"
        write_text(Path(folder) / PLAN_FILE, text)
        return [PLAN_FILE]


def plan_json(plan: Plan, options: Aic100Options) -> dict[str, Any]:
    """The plan as saved in the container (run-time choices such as activations excluded)."""
    data = plan.to_json()
    data["profiling"] = options.profiling
    data["stats_batchsize"] = options.stats_batchsize
    return data


class Aic100Backend(Backend):
    """A simulated Cloud AI 100: partitions over AI cores, plans VTCM, emulates fp16/int8."""

    name = "aic100"
    description = ("simulated Cloud AI 100: partitions over -aic-num-cores cores, plans on-chip "
                   "memory, emulates fp16 and int8 numerics, estimates latency and throughput")
    Options = Aic100Options
    dtypes = DTYPES
    op_types = SUPPORTED_OPS

    def __init__(self, options: Any = None):
        super().__init__(options)
        opts = self.options
        self.hw: Hardware = load_hardware(_version(opts.hw_version), opts.sku)
        if opts.num_cores > self.hw.cores:
            raise ConfigError(f"{opts.num_cores} cores requested but {self.hw.name} has "
                              f"{self.hw.cores}", where="-aic-num-cores",
                              hint=f"use at most {self.hw.cores}" + (
                                  "" if self.hw.sku == "pro" else "; a Pro card (--backend-option "
                                  "sku=pro) has 16"))
        if opts.num_cores * opts.activations > self.hw.cores:
            raise ConfigError(f"{opts.activations} activations x {opts.num_cores} cores = "
                              f"{opts.activations * opts.num_cores} cores, but {self.hw.name} "
                              f"has {self.hw.cores}", where="-a",
                              hint=f"at most {self.hw.cores // opts.num_cores} activation(s) of "
                                   f"{opts.num_cores} core(s)")
        if opts.vtcm_working_set_limit_ratio <= 0:
            raise ConfigError("the VTCM working-set ratio must be above 0",
                              where="-vtcm-working-set-limit-ratio", hint="a value in (0, 1]")

    def unsupported_nodes(self, model: onnx.ModelProto) -> list[str]:
        return unsupported_nodes(model)

    def _plan_options(self, spec_options: Mapping[str, Any]) -> PlanOptions:
        o = self.options
        ols = spec_options.get("ols", o.ols) if spec_options else o.ols
        if isinstance(ols, bool) or not isinstance(ols, int) or not 1 <= ols <= 64:
            raise ConfigError(f"-ols={ols!r} is not an integer in 1..64",
                              where="specialization options")
        return PlanOptions(num_cores=o.num_cores, ols=ols, mos=o.mos,
                           multicast_weights=o.multicast_weights,
                           size_split_granularity_kib=o.size_split_granularity,
                           vtcm_working_set_limit_ratio=o.vtcm_working_set_limit_ratio,
                           depth_first=o.depth_first, multicore=o.multicore)

    def compile(self, model: onnx.ModelProto, *, program_meta: Mapping[str, Any],
                spec_options: Mapping[str, Any]) -> Aic100Executable:
        kept = frozenset(n for n, p in (program_meta.get("node_precision") or {}).items()
                         if p in ("float32", "original"))
        low = lower(model, kept)
        plan = build_plan(low, self.hw, self._plan_options(spec_options))
        runner = Runner(low, plan.splits(), plan.groups, plan.cores)
        return Aic100Executable(plan, runner, self.options, low.inputs)

    def load(self, folder: Path, model: onnx.ModelProto, *, program_meta: Mapping[str, Any],
             spec_options: Mapping[str, Any]) -> Aic100Executable:
        exe = self.compile(model, program_meta=program_meta, spec_options=spec_options)
        path = Path(folder) / PLAN_FILE
        if not path.exists():  # a container compiled for another backend: plan afresh
            return exe
        saved = load_json(path, what="aic100 plan")
        if saved != exe.plan_json():
            raise ContainerError(f"{PLAN_FILE} does not match the plan of this graph with the "
                                 "recorded options", where=path,
                                 hint="recompile the model with this aicc")
        return exe


@hookimpl
def aicc_register_backends(registry):
    """Register the aic100 backend."""
    registry.add(Aic100Backend)

