"""Compile-time scaling: CNN-like ONNX graphs of growing size -> ms per 1k nodes, vs onnxruntime.

Builds Conv -> BatchNormalization -> Relu/Clip chains with residual Adds and small constant
subgraphs that fold (a Reshape whose target shape is computed from constants, another whose shape
is ``Shape`` of a statically shaped tensor, a clipped per-channel scale computed from constants
that reads the same clip bounds as half the activations), at about 1k, 10k and 50k nodes. For
each size it compiles the model through ``compile_model`` with the default pipeline
(fold-constants, fold-batchnorm, cleanup) on the ``cpu`` backend, timing the stages: load
(request checks, onnx checker, strict shape inference, import), each pass, lowering (export of
the final graph, support check) and the onnxruntime session the backend creates. In the same run
it times onnxruntime's own session creation (ORT_ENABLE_ALL) on the original model.

Passes must be linear (or n log n) in graph size (DESIGN.md section 3): aicc's own per-node cost
(everything but the backend's onnxruntime session) at the largest size should stay within 1.5x of
that at the smallest. The ratios use CPU time of this process, which other work on a shared
machine disturbs far less than wall time; the table shows both. Run::

    python benchmarks/compile_scaling.py            # ~1k, 10k, 50k nodes (about 2-3 minutes)
    python benchmarks/compile_scaling.py --quick    # ~1k, 5k nodes (smoke use)

With ``--check`` the exit status is 1 when aicc's own per-node cost misses that target.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

os.environ.setdefault("AICC_DISABLE_PLUGIN_AUTOLOAD", "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import aicc  # noqa: E402
from aicc.backends.cpu import CpuBackend  # noqa: E402
from aicc.compiler import CompileRequest, compile_model  # noqa: E402
from aicc.plugins import load_registries  # noqa: E402

__all__ = ["build_cnn", "NODES_PER_BLOCK", "bench_registries", "time_aicc", "time_ort", "main"]

#: ONNX nodes in one residual block of :func:`build_cnn`.
NODES_PER_BLOCK = 16
#: Largest per-node cost at the largest size, relative to the smallest, that counts as scaling.
TARGET_RATIO = 1.5
OPSET = 17


def build_cnn(target_nodes: int, *, channels: int = 4, spatial: int = 4,
              seed: int = 0) -> onnx.ModelProto:
    """A checked CNN-like model of about ``target_nodes`` nodes (a multiple of 16, at least 16).

    Each residual block (16 nodes) computes, from its input x of shape [1, C, S, S]::

        y = Clip(BN(Conv(Relu(BN(Conv(x))))) + x, 0, 6)
        y = Reshape(Reshape(y, Concat([1], [C] * [S*S])), Shape(y)) * Clip(g / Sqrt(v), 0, 6)

    where the shape computations and the scale (``g``, ``v`` initializers) fold to constants and
    both BatchNormalizations fold into their Convs, leaving 8 nodes per block. The second activation
    is ``Clip`` in even blocks and ``Relu`` in odd ones. Weights are distinct per block but tiny,
    so the model stays a few MB even at 50k nodes.
    """
    rng = np.random.default_rng(seed)
    blocks = max(1, round(target_nodes / NODES_PER_BLOCK))
    c, s = channels, spatial
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = [
        numpy_helper.from_array(np.array(0.0, np.float32), "clip_min"),
        numpy_helper.from_array(np.array(6.0, np.float32), "clip_max"),
    ]

    def init(name: str, values: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(values.astype(np.float32), name))
        return name

    def ints(name: str, values: list[int]) -> str:
        inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    def bn(p: str, x: str, out: str) -> onnx.NodeProto:
        names = [init(f"{p}_{k}", v) for k, v in (
            ("gamma", rng.uniform(0.5, 1.5, c)), ("beta", rng.normal(0.0, 0.1, c)),
            ("mean", rng.normal(0.0, 0.1, c)), ("var", rng.uniform(0.5, 1.5, c)))]
        return helper.make_node("BatchNormalization", [x, *names], [out], name=f"{p}_bn",
                                epsilon=1e-5)

    x = "input"
    scale = 1.0 / np.sqrt(c * 9)
    for b in range(blocks):
        p = f"b{b}"
        w1 = init(f"{p}_w1", rng.normal(0.0, scale, (c, c, 3, 3)))
        b1 = init(f"{p}_b1", rng.normal(0.0, 0.1, c))
        w2 = init(f"{p}_w2", rng.normal(0.0, scale, (c, c, 1, 1)))
        act2 = (helper.make_node("Relu", [f"{p}_add"], [f"{p}_act"], name=f"{p}_relu2")
                if b % 2 else
                helper.make_node("Clip", [f"{p}_add", "clip_min", "clip_max"], [f"{p}_act"],
                                 name=f"{p}_clip"))
        nodes += [
            helper.make_node("Conv", [x, w1, b1], [f"{p}_c1"], name=f"{p}_conv1",
                             pads=[1, 1, 1, 1]),
            bn(f"{p}_bn1", f"{p}_c1", f"{p}_n1"),
            helper.make_node("Relu", [f"{p}_n1"], [f"{p}_r1"], name=f"{p}_relu1"),
            helper.make_node("Conv", [f"{p}_r1", w2], [f"{p}_c2"], name=f"{p}_conv2"),
            bn(f"{p}_bn2", f"{p}_c2", f"{p}_n2"),
            helper.make_node("Add", [f"{p}_n2", x], [f"{p}_add"], name=f"{p}_add"),
            act2,
            # [1] ++ ([C] * [S*S]) -> [1, C*S*S]: two nodes that fold to one constant.
            helper.make_node("Mul", [ints(f"{p}_k_c", [c]), ints(f"{p}_k_hw", [s * s])],
                             [f"{p}_k_chw"], name=f"{p}_kmul"),
            helper.make_node("Concat", [ints(f"{p}_k_one", [1]), f"{p}_k_chw"],
                             [f"{p}_flat_shape"], name=f"{p}_kcat", axis=0),
            helper.make_node("Reshape", [f"{p}_act", f"{p}_flat_shape"], [f"{p}_flat"],
                             name=f"{p}_flatten"),
            # Shape of a statically shaped tensor: folded by fold-constants' shape folding.
            helper.make_node("Shape", [f"{p}_act"], [f"{p}_shape"], name=f"{p}_shape"),
            helper.make_node("Reshape", [f"{p}_flat", f"{p}_shape"], [f"{p}_unflat"],
                             name=f"{p}_unflatten"),
            # A per-channel scale computed from constants: Sqrt, Div and Clip fold, Mul stays.
            # The Clip reads the clip bounds that every even block's activation reads too, so
            # folding drops some readers of a widely shared tensor but not others.
            helper.make_node("Sqrt", [init(f"{p}_sv", rng.uniform(0.8, 1.2, (1, c, 1, 1)))],
                             [f"{p}_sroot"], name=f"{p}_ssqrt"),
            helper.make_node("Div", [init(f"{p}_sg", rng.uniform(0.8, 1.2, (1, c, 1, 1))),
                                     f"{p}_sroot"], [f"{p}_sraw"], name=f"{p}_sdiv"),
            helper.make_node("Clip", [f"{p}_sraw", "clip_min", "clip_max"], [f"{p}_scale"],
                             name=f"{p}_sclip"),
            helper.make_node("Mul", [f"{p}_unflat", f"{p}_scale"], [f"{p}_out"],
                             name=f"{p}_smul"),
        ]
        x = f"{p}_out"
    graph = helper.make_graph(
        nodes, "compile_scaling",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, s, s])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, c, s, s])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="aicc-benchmark")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# -- timing ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Span:
    """A duration in seconds of wall time and of CPU time (all threads of this process)."""

    wall: float = 0.0
    cpu: float = 0.0

    @staticmethod
    def now() -> "Span":
        return Span(time.perf_counter(), time.process_time())

    def __add__(self, other: "Span") -> "Span":
        return Span(self.wall + other.wall, self.cpu + other.cpu)

    def __sub__(self, other: "Span") -> "Span":
        return Span(self.wall - other.wall, self.cpu - other.cpu)


@dataclass
class Timing:
    """One compile of one model, split into stages."""

    load: Span = Span()  # request checks, onnx checker, strict shape inference, import
    passes: dict[str, Span] = field(default_factory=dict)
    lower: Span = Span()  # export of the final graph, backend support check
    backend_ort: Span = Span()  # onnxruntime session creation inside the cpu backend
    total: Span = Span()
    gc: Span = Span()  # Python's garbage collector, wherever it ran during the compile
    nodes_after: int = 0

    @property
    def pipeline(self) -> Span:
        return sum(self.passes.values(), Span())

    @property
    def own(self) -> Span:
        """Everything aicc itself does: the total without the backend's onnxruntime session."""
        return self.total - self.backend_ort


class _Clock:
    """Where the instrument, the backend and the GC callback below leave their readings."""

    timing: Timing = Timing()
    marks: dict[str, Span] = {}
    active = False

    @staticmethod
    def on_gc(phase: str, info: dict) -> None:
        if not _Clock.active:
            return
        if phase == "start":
            _Clock.marks["gc_start"] = Span.now()
        else:
            _Clock.timing.gc += Span.now() - _Clock.marks["gc_start"]


class _StageClock(aicc.Instrument):
    """Records when the pipeline starts and ends and how long each pass takes."""

    name = "bench-stage-clock"
    description = "benchmark stage timing (benchmarks/compile_scaling.py)"

    @dataclasses.dataclass(frozen=True)
    class Options:
        pass

    def before_pipeline(self, program, steps) -> None:
        _Clock.marks["pipeline_start"] = Span.now()

    def before_pass(self, index, step, program) -> None:
        _Clock.marks["pass_start"] = Span.now()

    def after_pass(self, index, step, program, ctx) -> None:
        passes = _Clock.timing.passes
        passes[step.name] = passes.get(step.name, Span()) + (Span.now()
                                                             - _Clock.marks["pass_start"])

    def after_pipeline(self, program) -> None:
        _Clock.marks["pipeline_end"] = Span.now()
        _Clock.timing.nodes_after = sum(len(g.nodes) for g in program.graphs.values())


class _TimedCpuBackend(CpuBackend):
    """The ``cpu`` backend, unchanged, with its onnxruntime session creation timed."""

    name = "bench-cpu"
    description = "the cpu backend, timed (benchmarks/compile_scaling.py)"

    def compile(self, model, **kwargs):
        start = Span.now()
        try:
            return super().compile(model, **kwargs)
        finally:
            _Clock.timing.backend_ort += Span.now() - start


class _BenchPlugin:
    @aicc.hookimpl
    def aicc_register_instruments(self, registry):
        registry.add(_StageClock)

    @aicc.hookimpl
    def aicc_register_backends(self, registry):
        registry.add(_TimedCpuBackend)


def bench_registries():
    """The built-in plugins plus the benchmark's timing instrument and timed cpu backend."""
    return load_registries(extra_plugins=[_BenchPlugin()])


def time_aicc(model_bytes: bytes, registries) -> Timing:
    """Compile once through ``compile_model`` (default pipeline, no container written)."""
    timing = _Clock.timing = Timing()
    req = CompileRequest(model=model_bytes, backend=_TimedCpuBackend.name,
                         instruments=[(_StageClock.name, {})])
    gc.collect()
    if _Clock.on_gc not in gc.callbacks:
        gc.callbacks.append(_Clock.on_gc)
    _Clock.active = True
    start = Span.now()
    try:
        compile_model(req, registries)
    finally:
        end = Span.now()
        _Clock.active = False
    timing.total = end - start
    timing.load = _Clock.marks["pipeline_start"] - start
    timing.lower = end - _Clock.marks["pipeline_end"] - timing.backend_ort
    return timing


def time_ort(model_bytes: bytes) -> Span:
    """How long onnxruntime takes to create a session (ORT_ENABLE_ALL) on the model."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    gc.collect()
    start = Span.now()
    ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return Span.now() - start


@dataclass
class Row:
    nodes: int
    aicc: Timing
    ort: Span
    repeats: tuple[int, int]


def measure(target: int, aicc_repeats: int, ort_repeats: int, registries, *,
            budget: float = 0.0) -> Row:
    """The best (least CPU time) of at least ``aicc_repeats`` compiles and ``ort_repeats``
    onnxruntime sessions, and of more of both while ``budget`` seconds have not passed: a
    short run is easily disturbed by other work on the machine, so small models get many."""
    model = build_cnn(target)
    data = model.SerializeToString()
    aicc_runs: list[Timing] = []
    ort_runs: list[Span] = []
    start = time.perf_counter()
    while True:
        required = len(aicc_runs) < aicc_repeats or len(ort_runs) < ort_repeats
        if not required and (time.perf_counter() - start >= budget or len(aicc_runs) >= 50):
            break
        if not required or len(ort_runs) < ort_repeats:
            ort_runs.append(time_ort(data))
        if not required or len(aicc_runs) < aicc_repeats:
            aicc_runs.append(time_aicc(data, registries))
    return Row(len(model.graph.node), min(aicc_runs, key=lambda t: t.total.cpu),
               min(ort_runs, key=lambda s: s.cpu), (len(aicc_runs), len(ort_runs)))


# -- report ---------------------------------------------------------------------------------------

def _per_k(seconds: float, nodes: int) -> float:
    return seconds * 1e6 / nodes


def print_report(rows: Sequence[Row], out=sys.stdout) -> float:
    """Print the tables; return the CPU-time scaling ratio of aicc's own work."""
    pass_names = list(rows[0].aicc.passes)
    stages: list[tuple[str, Callable[[Row], Span]]] = [("load", lambda r: r.aicc.load)]
    stages += [(n, lambda r, n=n: r.aicc.passes.get(n, Span())) for n in pass_names]
    stages += [("pipeline", lambda r: r.aicc.pipeline), ("lower", lambda r: r.aicc.lower),
               ("aicc-own", lambda r: r.aicc.own), ("(gc)", lambda r: r.aicc.gc),
               ("be-ort", lambda r: r.aicc.backend_ort),
               ("total", lambda r: r.aicc.total), ("ort-ref", lambda r: r.ort)]
    widths = [max(8, len(name)) for name, _ in stages]
    for kind in ("cpu", "wall"):
        print(f"\naicc compile, {kind} time in ms per 1k nodes (default pipeline, cpu backend; "
              "best of repeats)", file=out)
        head = f"{'nodes':>6} {'after':>6} " + " ".join(
            f"{name:>{w}}" for (name, _), w in zip(stages, widths))
        head += f" {'total/ort':>9} {'own/ort':>8}"
        print(head, file=out)
        print("-" * len(head), file=out)
        for r in rows:
            cells = [f"{r.nodes:>6}", f"{r.aicc.nodes_after:>6}"]
            cells += [f"{_per_k(getattr(get(r), kind), r.nodes):>{w}.1f}"
                      for (_, get), w in zip(stages, widths)]
            cells += [f"{getattr(r.aicc.total, kind) / getattr(r.ort, kind):>9.2f}",
                      f"{getattr(r.aicc.own, kind) / getattr(r.ort, kind):>8.2f}"]
            print(" ".join(cells), file=out)
    print("\nload: request checks, onnx checker, strict shape inference, import. lower: export of "
          "the final graph, support check.\naicc-own = total - be-ort, the onnxruntime session "
          "the cpu backend creates on the folded graph; (gc): the part of the total spent in "
          "Python's\ngarbage collector. ort-ref: onnxruntime session creation (ORT_ENABLE_ALL) "
          "on the original model, in the same run.", file=out)
    first, last = rows[0], rows[-1]

    def ratio(get: Callable[[Row], Span], kind: str) -> float:
        return (_per_k(getattr(get(last), kind), last.nodes)
                / max(_per_k(getattr(get(first), kind), first.nodes), 1e-12))

    print(f"\nscaling ratio = ms per 1k nodes at {last.nodes} nodes / at {first.nodes} nodes",
          file=out)
    print(f"  {'stage':<22} {'cpu':>6} {'wall':>6}", file=out)
    ratios = list(stages)
    ratios.insert(ratios.index(next(st for st in stages if st[0] == "(gc)")) + 1,
                  ("aicc-own without gc", lambda r: r.aicc.own - r.aicc.gc))
    for name, get in ratios:
        indent = ("    " if name in pass_names else
                  "  " if name in ("load", "pipeline", "lower", "(gc)") else "")
        print(f"  {indent + name:<22} {ratio(get, 'cpu'):6.2f} {ratio(get, 'wall'):6.2f}",
              file=out)
    print("aicc total / onnxruntime session creation (wall): "
          + ", ".join(f"{r.nodes} nodes {r.aicc.total.wall / r.ort.wall:.2f}x" for r in rows),
          file=out)
    own = ratio(lambda r: r.aicc.own, "cpu")
    verdict = "OK" if own <= TARGET_RATIO else "DOES NOT SCALE"
    print(f"verdict: {verdict}: aicc's own per-node CPU cost at {last.nodes} nodes is {own:.2f}x "
          f"that at {first.nodes} (target <= {TARGET_RATIO}); onnxruntime's session creation "
          f"alone: {ratio(lambda r: r.ort, 'cpu'):.2f}x", file=out, flush=True)
    return own


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only ~1k and ~5k nodes (smoke use)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        help="comma-separated node counts (overrides the defaults)")
    parser.add_argument("--check", action="store_true",
                        help=f"exit with status 1 if aicc's own per-node cost at the largest size "
                             f"is more than {TARGET_RATIO}x that at the smallest")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([1000, 5000] if args.quick else [1000, 10000, 50000])
    registries = bench_registries()
    # Warm up imports, kernel tables and onnxruntime once, so the smallest size is not charged.
    warm = build_cnn(NODES_PER_BLOCK * 4).SerializeToString()
    time_ort(warm)
    time_aicc(warm, registries)
    rows = []
    for size in sizes:
        aicc_repeats, ort_repeats = (3, 3) if size <= 10000 else (2, 1)
        budget = 6.0 if size <= 5000 else 0.0
        start = time.perf_counter()
        row = measure(size, aicc_repeats, ort_repeats, registries, budget=budget)
        rows.append(row)
        print(f"measured {row.nodes} nodes: aicc x{row.repeats[0]}, onnxruntime x{row.repeats[1]}"
              f" in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    ratio = print_report(rows)
    return 1 if args.check and ratio > TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
