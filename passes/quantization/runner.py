"""The calibration runner: feed dicts in, a Profile (per-tensor min, max, histogram) out. (The
graph hash profiles carry and the readers of sample files, in ``graph_hash`` and ``samples``, are
re-exported here.)

Not a plugin (nothing registers here): the ``calibrate`` pass (``passes/quantization/calibrate.py``) and the
Python API (``calibrate_program``) use it. Engines are backends that observe, found by name in
the backend registry (``aicc.backend.Observers``): the numpy interpreter (the reference) or
onnxruntime (``engine=cpu``), or ``auto`` (onnxruntime where it runs the graph).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

import aicc
from aicc import ir
from aicc.backend import Observation, Observe, Observers
from aicc.errors import BackendError, ConfigError, DataError
from aicc.nonfinite import has_fp16
from aicc.program import Program
from aicc.quant import DEFAULT_NUM_BINS, Profile, TensorObserver
from aicc.quant.profile import MAX_HISTOGRAM_BINS

from aicc.passes.quantization.graph_hash import graph_hash, program_hash
from aicc.passes.quantization.progress import ProgressBar as _ProgressBar
from aicc.passes.quantization.samples import (host_conversion, input_list_samples,
                                              json_input_samples)

__all__ = ["calibrate_program", "Calibration", "profile_of", "BLOCK", "check_calibration_args",
           "graph_hash", "program_hash", "input_list_samples", "json_input_samples",
           "host_conversion", "write_text_atomic", "ENGINES", "engine_observation"]

logger = logging.getLogger(__name__)

#: Elements buffered per tensor before they are folded into its histogram.
_CHUNK_ELEMENTS = 1 << 16


# ------------------------------------------------------------------------------ the runner
class _Collector:
    """Observers by tensor name, fed in chunks of at least ``_CHUNK_ELEMENTS`` values (range-only
    observers, ``binned=False``, take each array as it comes: a range needs no buffering)."""

    def __init__(self, names: Iterable[str], num_bins: int, binned: bool = True):
        self.binned = binned
        self.observers = {n: TensorObserver(n, num_bins, binned=binned) for n in names}
        self.pending: dict[str, list[np.ndarray]] = {}
        self.pending_size: dict[str, int] = {}

    def __call__(self, name: str, array: np.ndarray) -> None:
        obs = self.observers.get(name)
        if obs is None or not isinstance(array, np.ndarray) or array.dtype.kind != "f":
            return
        if array.size >= _CHUNK_ELEMENTS or not self.binned:
            self._flush(name)
            obs.update(array)
            return
        self.pending.setdefault(name, []).append(array.ravel().copy())
        size = self.pending_size.get(name, 0) + array.size
        self.pending_size[name] = size
        if size >= _CHUNK_ELEMENTS:
            self._flush(name)

    def _flush(self, name: str) -> None:
        parts = self.pending.pop(name, None)
        self.pending_size.pop(name, None)
        if parts:
            self.observers[name].update(parts[0] if len(parts) == 1 else np.concatenate(parts))

    def finish(self) -> list[TensorObserver]:
        for name in list(self.pending):
            self._flush(name)
        return [o for o in self.observers.values() if o.seen or o.batches]


def _float_activations(graph: gs.Graph) -> list[str]:
    """Graph inputs and node outputs (not Constant nodes) that are, or may be, floating point."""
    names = []
    seen = set()
    candidates = list(graph.inputs) + [t for n in graph.nodes if n.op != "Constant"
                                       for t in n.outputs]
    for t in candidates:
        if not t.name or t.name in seen or isinstance(t, gs.Constant):
            continue
        dtype = ir.tensor_dtype(t)
        if dtype is not None and dtype.kind != "f":
            continue
        seen.add(t.name)
        names.append(t.name)
    return names


def _fits(graph: gs.Graph, feeds: Mapping[str, np.ndarray]) -> bool:
    for t in graph.inputs:
        value = feeds.get(t.name)
        if value is None:
            return False
        shape = t.shape
        if shape is None:
            continue
        arr_shape = np.shape(value)
        if len(arr_shape) != len(shape):
            return False
        if any(isinstance(d, int) and d >= 0 and d != a for d, a in zip(shape, arr_shape)):
            return False
    return True


def _batch_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (changed in place) with dimension 0 of every input and output made symbolic and
    intermediate shape information dropped, so that it takes several samples stacked along
    axis 0 (and single samples exactly as before: the nodes are untouched)."""
    del model.graph.value_info[:]
    for vi in list(model.graph.input) + list(model.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape") and len(tt.shape.dim):
            tt.shape.dim[0].Clear()
            tt.shape.dim[0].dim_param = "aicc_calibration_batch"
    return model


#: What runs calibration samples: a backend that observes (``interpreter``, ``cpu``), or
#: ``auto``: onnxruntime where the graph loads and runs there, else the interpreter.
ENGINES = ("auto", "interpreter", "cpu")


def _float32_only(graph: gs.Graph, model: onnx.ModelProto, names: Iterable[str]) -> bool:
    """False when the graph computes in fp16 (a Cast to it, an fp16 initializer) or an
    observed tensor is known to be of another float type than float32."""
    tensors = graph.tensors()
    for name in names:
        dtype = ir.tensor_dtype(tensors[name]) if name in tensors else None
        if dtype is not None and dtype != np.float32:
            return False
    return not has_fp16(model)


def engine_observation(backends: Observers, program: Program, gname: str, names: list[str],
                       engine: str) -> Observation:
    """An observation of ``names`` on graph ``gname`` by ``engine``: ``auto`` is onnxruntime
    where it runs the graph (float32 only), else the interpreter, as for calibration."""
    if engine != "auto":
        return backends.observation(engine, program.to_model(gname), names)
    model = program.to_model(gname)
    return _AutoObservation(backends, model, names,
                            _float32_only(program.graphs[gname], model, names))


class _AutoObservation(Observation):
    """The cpu backend's observation, falling back to the interpreter's (the reference) when
    onnxruntime cannot load the graph or fails on its first sample (custom ops, types
    onnxruntime lacks), and from the start for graphs that compute in another float type than
    float32 (onnxruntime runs most fp16 ops in float32: not the statistics the device will
    see). After one successful run the choice is final: a later failure is an error."""

    def __init__(self, observers: Observers, model: onnx.ModelProto, names: list[str],
                 float32: bool):
        self.observers, self.model, self.wanted = observers, model, names
        self.proven = False
        if not float32:
            self._fall_back("the graph computes in another float type than float32")
            return
        try:
            self.inner = observers.observation("cpu", model, names)
        except Exception as e:
            self._fall_back(_cannot(e))
        self.names = self.inner.names

    def _fall_back(self, why: str) -> None:
        logger.info("calibration runs on the interpreter: %s", why)
        self.inner = self.observers.observation("interpreter", self.model, self.wanted)
        self.names = self.inner.names
        self.proven = True
        self.model = None

    def run(self, feeds: Mapping[str, np.ndarray],
            observe: Observe | None = None) -> dict[str, np.ndarray]:
        if self.proven:
            return self.inner.run(feeds, observe)
        seen: list[tuple[str, np.ndarray]] = []
        try:     # held back until the run succeeded, so a fallback does not count twice
            out = self.inner.run(feeds, lambda n, a: seen.append((n, a)))
        except BackendError as e:
            self._fall_back(_cannot(e))
            return self.inner.run(feeds, observe)
        self.proven = True
        self.model = None
        if observe is not None:
            for n, a in seen:
                observe(n, a)
        return out


def _cannot(error: Exception) -> str:
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"onnxruntime cannot run this graph ({first})"


def _moments(arrays: list[np.ndarray]) -> np.ndarray:
    """min, max and the sums of x, x^2, x^3 (float64) over the finite values of ``arrays``."""
    v = np.concatenate([np.ravel(a) for a in arrays]).astype(np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.zeros(5)
    scale = float(np.max(np.abs(v))) or 1.0
    u = v / scale
    return np.array([v.min(), v.max(), v.sum(), float(np.dot(v, v)),
                     float(np.dot(u * u, u)) * scale ** 3])


class _GraphRunner:
    """Runs one graph's samples through the engine, several at a time when that is exact.

    Stacking samples along axis 0 turns many small runs into a few large ones. It is used only
    after a check on the first two samples: each alone, then both stacked, and every observed
    tensor of the stacked run must hold the values of the two single results (in any layout: a
    batch axis a Transpose moved is fine, since observers see values only), so a graph that mixes
    samples, or folded its batch size into a constant, runs one sample at a time. Statistics do
    not depend on how samples are grouped (up to histogram re-binning order). One engine serves
    both: its model only has dimension 0 of the graph I/O relaxed.
    """

    def __init__(self, program: Program, name: str, collector: _Collector, batch: int,
                 engine: str = "auto", engines: dict | None = None,
                 backends: Observers | None = None):
        key = (name, engine, batch != 1, tuple(collector.observers))
        cached = engines.get(key) if engines is not None else None
        if cached is None:
            backends = backends or Observers()
            graph = program.graphs[name]
            model = program.to_model(name)
            wanted = [n for n in _float_activations(graph) if n in collector.observers]
            if engine == "auto":
                float32 = _float32_only(graph, model, wanted)
            if batch != 1:
                model = _batch_model(model)
            if engine == "auto":
                built: Observation = _AutoObservation(backends, model, wanted, float32)
            else:
                built = backends.observation(engine, model, wanted)
            del model
            cached = (built, list(built.names))
            if engines is not None:
                engines[key] = cached
        self.engine, self.names = cached
        self.collector = collector
        self.batch = batch
        self.reset()

    def reset(self) -> None:
        """Forget the stacking decision (at a block boundary; pending samples must be flushed)."""
        self.max_batch = self.batch
        self.stacking = False
        self.first: list[tuple[dict, dict[str, np.ndarray]]] = []
        self.pending: list[Mapping[str, np.ndarray]] = []
        self.limit = 1

    def _run(self, feeds: Mapping[str, np.ndarray],
             keep: dict[str, np.ndarray] | None = None) -> None:
        if keep is None:
            self.engine.run(feeds, self.collector)
            return

        def observe(name: str, array: np.ndarray) -> None:
            keep[name] = array
            self.collector(name, array)
        self.engine.run(feeds, observe)

    def add(self, feeds: Mapping[str, np.ndarray]) -> None:
        if self.max_batch == 1:
            self._run(feeds)
            return
        if not self.stacking:
            if len(self.first) < 2:
                kept: dict[str, np.ndarray] = {}
                self._run(feeds, kept)
                if self._stack_limit(kept) < 2:     # one sample already fills a run: no check
                    self.first, self.max_batch = [], 1
                    return
                self.first.append((dict(feeds), kept))
                if len(self.first) == 2:
                    self._verify()
            else:
                self._run(feeds)
            return
        if self.pending and any(np.shape(v) != np.shape(self.pending[0].get(k))
                                for k, v in feeds.items()):
            self.flush()
        self.pending.append(feeds)
        if len(self.pending) >= self.limit:
            self.flush()

    def _stack_limit(self, observed: dict[str, np.ndarray]) -> int:
        """Samples per run: at most ``batch`` (256 when 0), and at most 2^23 observed values."""
        per_sample = sum(int(np.size(a)) for a in observed.values()) or 1
        return max(1, min(self.max_batch or 256, (1 << 23) // per_sample))

    def _verify(self) -> None:
        (f1, o1), (f2, o2) = self.first
        self.first = []
        why = None
        try:
            if set(f1) != set(f2) or any(np.ndim(v) == 0 or np.shape(v) != np.shape(f2[k])
                                         for k, v in f1.items()):
                raise ValueError("samples differ in shape or have rank-0 inputs")
            if all(np.array_equal(v, f2[k]) for k, v in f1.items()):
                # a graph mixing samples (a batch mean) gives equal samples unchanged: the check
                # would prove nothing, so nothing is stacked
                raise ValueError("the first two samples are identical")
            stacked = {k: np.concatenate([f1[k], f2[k]]) for k in f1}
            got: dict[str, np.ndarray] = {}
            self.engine.run(stacked, lambda n, a: got.__setitem__(n, a))
            for name, a in o1.items():
                b, c = o2.get(name), got.get(name)
                if b is None or c is None or np.size(c) != np.size(a) + np.size(b):
                    raise ValueError(f"tensor '{name}' does not grow with the samples stacked")
                # Observers see a tensor's values, not their layout: the stacked run must hold
                # the two samples' values (a batch axis moved by a Transpose is fine). Compared
                # by layout-free summaries (min, max, sum, sum of squares, sum of cubes), linear
                # in size; values mixed across samples (a batch reduction) change them.
                got_m, ref_m = _moments([c]), _moments([a, b])
                scale = max(abs(v) for v in ref_m) or 1.0
                if not np.allclose(got_m, ref_m, rtol=1e-4, atol=1e-6 * scale,
                                   equal_nan=True):
                    raise ValueError(f"tensor '{name}' differs when samples are stacked")
        except Exception as e:  # any failure just means: one sample at a time
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
        if why is not None:
            logger.debug("calibration runs one sample at a time: %s", why)
            self.max_batch = 1
            return
        self.limit = self._stack_limit(o1)
        if self.limit == 1:
            self.max_batch = 1
            return
        self.stacking = True
        logger.debug("calibration stacks up to %d samples per run", self.limit)

    def flush(self) -> None:
        if not self.pending:
            return
        group, self.pending = self.pending, []
        if len(group) == 1:
            self._run(group[0])
            return
        self._run({k: np.concatenate([g[k] for g in group]) for k in group[0]})


#: Samples per calibration block: stacking decisions and groups restart at each block, so a
#: block's computations do not depend on what came before it (see ``_GraphRunner``).
BLOCK = 64


def check_calibration_args(engine: str, num_bins: int) -> None:
    if engine not in ENGINES:
        raise ConfigError(f"unknown calibration engine {engine!r}", field="engine",
                          hint=f"valid: {', '.join(ENGINES)}")
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or \
            not 1 <= num_bins <= MAX_HISTOGRAM_BINS:
        raise ConfigError(f"number of histogram bins must be an integer in [1, "
                          f"{MAX_HISTOGRAM_BINS}], got {num_bins!r}",
                          field="num-histogram-bins")


class Calibration:
    """The observers of one calibration (or one shard of it): samples in, by global index.

    ``add(index, feeds)`` routes a sample to the first graph it fits and runs it; at every
    multiple of ``BLOCK`` the graph runners flush and reset, so a shard that starts at a block
    boundary computes exactly what one process computes for those samples. ``engines`` may be a
    cache kept across calibrations of the same program (a worker's shards); ``backends`` are
    the observing backends by name (``PassContext.observers``; default: the built-in ones).
    ``histograms=False`` keeps only each tensor's range (min-max calibration); ``observe``
    limits the observed tensors to those names (None: every float tensor), the others being
    recorded as skipped.
    """

    def __init__(self, program: Program, *, num_bins: int, batch: int, engine: str,
                 engines: dict | None = None, backends: Observers | None = None,
                 histograms: bool = True, observe: Iterable[str] | None = None):
        self.program = program
        names: list[str] = []
        for graph in program.graphs.values():
            names += [n for n in _float_activations(graph) if n not in names]
        wanted = None if observe is None else set(observe)
        self.names = [n for n in names if wanted is None or n in wanted]
        #: float tensors left unobserved (``observe``), recorded in the profile
        self.skipped = [n for n in names if wanted is not None and n not in wanted]
        self.collector = _Collector(self.names, num_bins, binned=histograms)
        self.runners: dict[str, _GraphRunner] = {}
        self.counts = dict.fromkeys(program.graphs, 0)
        self.batch, self.engine, self.engines = batch, engine, engines
        self.backends = backends
        self.seen = 0

    def add(self, index: int, feeds: Any) -> None:
        if index % BLOCK == 0:
            for runner in self.runners.values():
                runner.flush()
                runner.reset()
        if not isinstance(feeds, Mapping):
            raise DataError(f"calibration sample {index} is a {type(feeds).__name__}, "
                            "expected a dict of input name -> numpy array")
        graphs = self.program.graphs
        target = next((n for n, g in graphs.items() if _fits(g, feeds)), None)
        if target is None:
            shapes = ", ".join(f"{k}{list(np.shape(v))}" for k, v in feeds.items())
            have = "; ".join(f"{n}: " + ", ".join(f"{t.name}{t.shape}" for t in g.inputs)
                             for n, g in graphs.items())
            raise DataError(f"calibration sample {index} ({shapes}) fits no graph",
                            hint=f"graph inputs: {have}")
        runner = self.runners.get(target)
        if runner is None:
            runner = self.runners[target] = _GraphRunner(self.program, target, self.collector,
                                                         self.batch, self.engine, self.engines,
                                                         self.backends)
        runner.add(feeds)
        self.counts[target] += 1
        self.seen += 1

    def finish(self) -> list[TensorObserver]:
        """Flush every runner; the observers that saw values."""
        for runner in self.runners.values():
            runner.flush()
        return self.collector.finish()


def profile_of(program: Program, observers: Iterable[TensorObserver], counts: dict[str, int],
               seen: int, skipped: Iterable[str] = ()) -> Profile:
    """The profile of a finished calibration; refuses no samples or a graph left without one."""
    if seen == 0:
        raise DataError("no calibration samples", hint="give at least one sample")
    empty = [n for n, c in counts.items() if c == 0]
    if empty:
        raise DataError(f"graph(s) {', '.join(empty)} got no calibration sample",
                        hint="give at least one input per specialization (JSON input file)")
    observers = list(observers)
    logger.info("calibrated %d tensors over %d samples (%s)", len(observers), seen,
                ", ".join(f"{k}: {v}" for k, v in counts.items()))
    return Profile.from_observers(observers, graph_hash=program_hash(program),
                                  tools_version=aicc.__version__, skipped=skipped)


def calibrate_program(program: Program, samples: Iterable[Mapping[str, np.ndarray]], *,
                      num_bins: int = DEFAULT_NUM_BINS, total: int | None = None,
                      progress: bool = True, max_samples: int = 0, batch: int = 0,
                      engine: str = "auto", backends: Observers | None = None,
                      histograms: bool = True, observe: Iterable[str] | None = None) -> Profile:
    """Run ``samples`` (feed dicts) through every graph of ``program`` with observers on every
    float tensor and return the profile (the Python API of calibration).

    With several graphs each sample goes to the first graph whose input shapes it fits; a sample
    that fits none, or a graph that gets no sample, is an error. ``batch``: 0 stacks samples when
    that is exact (see ``_GraphRunner``), 1 never, N at most N per run. ``engine``: the numpy
    interpreter (the reference), ``cpu`` (onnxruntime with every observed tensor as an output), or
    ``auto`` (the default: ``cpu`` where onnxruntime loads and runs the graph, else the
    interpreter). Both engines give the same profile up to float rounding. ``backends`` finds the
    engines by name (a pass's ``ctx.observers``; default: the built-in backends).
    ``histograms=False``: ranges only (what min-max calibration reads; the profile says so);
    ``observe``: only these tensors (the profile lists the others as skipped).
    """
    check_calibration_args(engine, num_bins)
    cal = Calibration(program, num_bins=num_bins, batch=batch, engine=engine, backends=backends,
                      histograms=histograms, observe=observe)
    bar = _ProgressBar(total if not max_samples else min(total or max_samples, max_samples),
                       enabled=progress)
    try:
        for index, feeds in enumerate(samples):
            if max_samples and index >= max_samples:
                break
            cal.add(index, feeds)
            bar.step()
        observers = cal.finish()
    finally:
        bar.done()
    return profile_of(program, observers, cal.counts, cal.seen, cal.skipped)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` durably through a temporary sibling and a rename."""
    from aicc.fileio import write_text_atomic as durable
    return durable(path, text)
