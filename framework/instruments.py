"""Built-in pass instruments: ``time-passes``, ``dump-ir`` and ``verify-each``.

They register through ``aicc_register_instruments`` like any plugin's. Each takes an Options
dataclass, so the CLI flags (``--time-passes``, ``--dump-ir-after=all|NAME[,NAME]``,
``--verify-each[=numeric]``) and pipeline files enable them the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import ir
from .backend import Observers
from .errors import AiccError, DataError, PassError, UsageError
from .fileio import unique_file_names
from .hookspecs import hookimpl
from .options import option
from .pass_base import PassContext
from .pipeline import Instrument, Step
from .program import Program

__all__ = ["TimePasses", "DumpIR", "VerifyEach", "random_feeds", "compare_outputs"]

logger = logging.getLogger(__name__)

#: values of the graph before a pass kept to find where a broken promise starts (verify-each)
_DIAGNOSIS_BYTES = 1 << 30


class TimePasses(Instrument):
    """Print a table of wall time and counters per pass when the pipeline ends."""

    name = "time-passes"
    description = "table of time per pass, with the counters each pass reports"

    @dataclasses.dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, options: Any = None, registries: Any = None):
        self.stream: TextIO = sys.stderr
        self.rows: list[tuple[int, str, float, dict[str, int]]] = []
        self._start = 0.0

    def before_pass(self, index: int, step: Step, program: Program) -> None:
        self._start = time.perf_counter()

    def after_pass(self, index: int, step: Step, program: Program, ctx: PassContext) -> None:
        self.rows.append((index + 1, step.name, time.perf_counter() - self._start,
                          dict(ctx.counters)))

    def after_pipeline(self, program: Program) -> None:
        # passes run by another pass (``lower/fold-if``) are inside their runner's time
        total = sum(r[2] for r in self.rows if "/" not in r[1]) or 1e-12
        print(f"{'#':>3}  {'pass':<22} {'ms':>10} {'%':>6}  counters", file=self.stream)
        for index, name, secs, counters in self.rows:
            text = ", ".join(f"{k}={v}" for k, v in sorted(counters.items()))
            print(f"{index:>3}  {name:<22} {secs * 1e3:>10.2f} {100 * secs / total:>6.1f}  {text}",
                  file=self.stream)
        print(f"{'':>3}  {'total':<22} {total * 1e3:>10.2f}", file=self.stream)


class DumpIR(Instrument):
    """Write each graph as numbered ``.onnx`` files after the chosen passes (and the input)."""

    name = "dump-ir"
    description = "write the ONNX of every graph after the chosen passes"

    @dataclasses.dataclass(frozen=True)
    class Options:
        after: list[str] = option(["all"], "pass names after which to dump, or 'all'")
        dir: str = option("aicc-ir", "folder that receives the numbered .onnx files")

    def __init__(self, options: Any, registries: Any = None):
        self.options = options
        self.folder = Path(options.dir)
        if self.folder.exists() and not self.folder.is_dir():
            raise UsageError("exists and is not a folder", where=self.folder,
                             hint="--dump-ir-dir names the folder that receives the dumps")

    def _dump(self, tag: str, program: Program) -> None:
        stems = unique_file_names(program.graphs)
        for name in program.graphs:
            path = self.folder / f"{tag}-{stems[name]}.onnx"
            ir.save_model(program.to_model(name), path)

    def before_pipeline(self, program: Program, steps: Sequence[Step]) -> None:
        known = {s.name for s in steps}
        for wanted in self.options.after:
            if wanted != "all" and wanted not in known:
                raise PassError(f"--dump-ir-after names pass '{wanted}', which is not in the "
                                f"pipeline ({', '.join(s.name for s in steps)})")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create the folder: {e.strerror}", where=self.folder,
                             hint="check --dump-ir-dir") from None
        self._dump("00-input", program)

    def after_pass(self, index: int, step: Step, program: Program, ctx: PassContext) -> None:
        if not ctx.modified:     # nothing changed: the previous dump shows this program
            return
        if "all" in self.options.after or step.name in self.options.after:
            self._dump(f"{index + 1:02d}-{ir.safe_file_name(step.name)}", program)


def random_feeds(program: Program, graph_name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs for one graph; unbound symbols take the value 1."""
    rng = np.random.default_rng(seed)
    graph = program.graphs[graph_name]
    symbols = {**program.symbols, **program.spec_symbols.get(graph_name, {})}
    shapes = {}
    for t in graph.inputs:
        shapes[t.name] = [d if isinstance(d, int) and d >= 0 else symbols.get(d, 1)
                          if isinstance(d, str) else 1 for d in (t.shape or [])]
    _check_fits_in_memory(graph, shapes, graph_name)
    feeds = {}
    for t in graph.inputs:
        dtype = ir.tensor_dtype(t) or np.dtype(np.float32)
        shape = shapes[t.name]
        if dtype.kind == "f":
            feeds[t.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[t.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[t.name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def _check_fits_in_memory(graph: Any, shapes: dict[str, list[int]], graph_name: str) -> None:
    """Refuse, before allocating, random inputs larger than the machine's memory (a symbol bound
    to a huge value would otherwise end in MemoryError)."""
    import math
    import os

    total = 0
    for t in graph.inputs:
        dtype = ir.tensor_dtype(t) or np.dtype(np.float32)
        total += math.prod(shapes[t.name]) * max(dtype.itemsize, 8)  # drawn as 64-bit first
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        import resource
        for limit in (resource.RLIMIT_AS, resource.RLIMIT_DATA):  # ulimit -v / -d
            soft = resource.getrlimit(limit)[0]
            if soft != resource.RLIM_INFINITY:
                memory = min(memory, soft)
    except (ImportError, AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return
    if total > memory:
        raise DataError(f"random inputs for graph '{graph_name}' would take "
                        f"{total / 2**30:.1f} GiB, more than the {memory / 2**30:.1f} GiB of "
                        "memory this process may use",
                        where="aicc compile",
                        hint="check the symbol values and batch size, or pass -compile-only")


def compare_outputs(before: dict[str, np.ndarray], after: dict[str, np.ndarray], rtol: float,
                    atol: float) -> str | None:
    """None if every output agrees within the tolerance of ``aicc.Tolerance``, else what differs
    first: |a - b| <= atol + rtol * max(|b|, the output's largest finite |b|)."""
    for name, ref in before.items():
        if name not in after:
            return f"output '{name}' disappeared"
        got = after[name]
        if got.shape != ref.shape:
            return f"output '{name}' changed shape {list(ref.shape)} -> {list(got.shape)}"
        if ref.dtype.kind in "fc" or got.dtype.kind in "fc":
            a, b = got.astype(np.float64), ref.astype(np.float64)
            if not np.array_equal(np.isnan(a), np.isnan(b)):
                return f"output '{name}' gained or lost NaNs"
            finite = np.isfinite(b) & np.isfinite(a)
            err = np.abs(a - b)
            scale = float(np.abs(b[finite]).max()) if finite.any() else 0.0
            bad = finite & (err > atol + rtol * np.maximum(np.abs(b), scale))
            if bad.any() or not np.array_equal(a[~finite], b[~finite]):
                worst = float(err[finite].max()) if finite.any() else float("inf")
                return (f"output '{name}' differs: max abs error {worst:.3g} "
                        f"(tolerance rtol={rtol:g}, atol={atol:g})")
        elif not np.array_equal(got, ref):
            return f"output '{name}' differs ({int((got != ref).sum())} elements)"
    return None


class VerifyEach(Instrument):
    """After every pass: structural checks (ONNX checker); with ``numeric``, outputs on seeded
    random inputs before vs after every ``preserving`` pass, naming the first that breaks them.

    When the backend observes (``aicc.backend.Observation``), a broken promise also names the
    first tensor, in execution order, that both graphs compute and that differs: where the pass
    went wrong, not only where it shows."""

    name = "verify-each"
    description = "check every graph after each pass; numeric=true also compares outputs"

    @dataclasses.dataclass(frozen=True)
    class Options:
        numeric: bool = option(False, "compare outputs before/after each preserving pass")
        backend: str = option("", "backend that runs the graphs (default: interpreter if "
                                  "registered, else cpu)")
        seed: int = option(0, "seed of the random inputs")

    def __init__(self, options: Any, registries: Any = None):
        self.options = options
        self.registries = registries
        self._reference: dict[str, dict[str, np.ndarray]] | None = None
        self._before: dict[str, Any] = {}
        self._models: dict[str, Any] = {}       # the graphs self._reference was computed on
        self._last_models: dict[str, Any] = {}  # the graphs of the last _run_all

    def _backend_name(self) -> str:
        return self.options.backend or ("interpreter" if "interpreter" in self.registries.backends
                                        else "cpu")

    def _backend(self) -> Any:
        return self.registries.backends.get(self._backend_name()).cls()

    def _run_all(self, program: Program) -> dict[str, dict[str, np.ndarray]]:
        backend = self._backend()
        results = {}
        self._last_models = {}
        for name in program.graphs:
            model = self._last_models[name] = program.to_model(name)
            exe = backend.compile(model, program_meta=program.meta(),
                                  spec_options=program.spec_options.get(name, {}))
            results[name] = exe.run(random_feeds(program, name, self.options.seed))
        return results

    def _first_difference(self, program: Program, name: str, tol: Any) -> str:
        """``; ...`` naming the first tensor, in execution order, that graph ``name`` computes
        before and after the pass and that differs; "" when the backend cannot observe, or the
        first such tensor is a graph output (already reported). Values of the graph before are
        kept up to ``_DIAGNOSIS_BYTES``; later tensors are not compared."""
        before, after = self._models.get(name), self._last_models.get(name)
        observers = Observers(self.registries.backends)
        if before is None or after is None or not observers.can_observe(self._backend_name()):
            return ""
        feeds = random_feeds(program, name, self.options.seed)
        kept: dict[str, np.ndarray] = {}
        budget = [_DIAGNOSIS_BYTES]

        def keep(tensor: str, array: np.ndarray) -> None:
            if isinstance(array, np.ndarray) and array.nbytes <= budget[0]:
                budget[0] -= array.nbytes
                kept[tensor] = array        # observers never modify: no copy needed
        found: list[str] = []
        outputs = {o.name for o in after.graph.output}

        def compare(tensor: str, array: np.ndarray) -> None:
            ref = kept.get(tensor)
            if found or ref is None or not isinstance(array, np.ndarray):
                return
            problem = compare_outputs({tensor: ref}, {tensor: array}, tol.rtol, tol.atol)
            if problem:
                found.append("" if tensor in outputs else problem.replace("output ", "tensor ", 1))
        try:
            observers.observation(self._backend_name(), before).run(feeds, keep)
            after_run = observers.observation(self._backend_name(), after)
            if not after_run.in_order:      # shown after the run: compare in graph order
                shown: dict[str, np.ndarray] = {}
                after_run.run(feeds, shown.__setitem__)
                for tensor in (o for n in after.graph.node for o in n.output if o in shown):
                    compare(tensor, shown[tensor])
            else:
                after_run.run(feeds, compare)
        except AiccError:       # the outputs already tell what broke
            return ""
        if not found or not found[0]:
            return ""
        return ("; of the tensors both graphs compute, the first to differ (in execution order; "
                f"a pass may rescale intermediates on purpose) is {found[0]}")

    def before_pass(self, index: int, step: Step, program: Program) -> None:
        if self.options.numeric and step.cls.semantics == "preserving" and self._reference is None:
            self._reference = self._run_all(program)
            self._models = self._last_models
        # A program-scoped pass may replace graphs (specialize: one graph -> one per
        # specialization); new graphs are then compared with the graph they came from.
        self._before = ({n: program.to_model(n) for n in program.graphs}
                        if self.options.numeric and step.cls.scope == "program"
                        and step.cls.semantics == "preserving" else {})

    def after_pass(self, index: int, step: Step, program: Program, ctx: PassContext) -> None:
        if not ctx.modified:     # the pass says the program is exactly as before
            return
        for name, graph in program.graphs.items():
            ir.verify_graph(graph, full=True, where=f"after pass '{step.name}': graph '{name}'",
                            allowed_repeated_outputs=frozenset(program.repeated_outputs))
        if not self.options.numeric:
            return
        if step.cls.semantics != "preserving":
            self._reference = None
            return
        now = self._run_all(program)
        tol = step.cls.tolerance
        reference = dict(self._reference or {})
        if len(self._before) == 1:
            (origin,) = self._before.values()
            exe = None
            for name in now:
                if name not in reference:
                    exe = exe or self._backend().compile(origin, program_meta=program.meta(),
                                                         spec_options={})
                    reference[name] = exe.run(random_feeds(program, name, self.options.seed))
        for name, before in reference.items():
            if name not in now and set(now) - set(self._reference or {}):
                continue  # replaced by the new graphs compared above
            problem = compare_outputs(before, now.get(name, {}), tol.rtol, tol.atol)
            if problem:
                problem += self._first_difference(program, name, tol)
                raise PassError(f"pass '{step.name}' (plugin '{step.plugin}') broke its "
                                f"'preserving' promise on graph '{name}': {problem}",
                                hint="rerun with --dump-ir-after to inspect the graphs")
        self._reference = now
        self._models = self._last_models


@hookimpl
def aicc_register_instruments(registry):
    registry.add(TimePasses)
    registry.add(DumpIR)
    registry.add(VerifyEach)
