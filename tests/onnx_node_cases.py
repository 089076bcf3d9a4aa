"""onnx's generated node test cases, run through aicc's public path (compile -> load -> run).

Shared by the node-test modules: the cases are generated once per process, and a case's feeds
and expected outputs are plain numpy arrays. Which cases count ("the op list") and which backends
run them come from the backends' own declared op tables, so an op a backend gains is picked up
without editing any test.
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

import aicc
from aicc.compiler import CompileRequest, compile_model, default_pipeline
from aicc.pass_order import Requested
from aicc.plugins import load_registries
from aicc.plugins import load_registries

__all__ = ["Case", "cases", "raw_cases", "op_list_cases", "backend_op_types", "run_public", "FP16_PIPELINE",
           "fp16_close"]

#: the default pipeline plus what ``-convert-to-fp16`` adds (the CLI's feature step)
FP16_PIPELINE = default_pipeline(load_registries(), requested=[Requested("convert-fp16", {"all": True})])


@dataclass(frozen=True)
class Case:
    name: str
    model: onnx.ModelProto
    data_sets: tuple[tuple[list[Any], list[np.ndarray]], ...]
    rtol: float
    atol: float

    @functools.cached_property
    def ops(self) -> frozenset[str]:
        return frozenset({n.op_type for n in self.model.graph.node} |
                         {n.op_type for f in self.model.functions for n in f.node})

    @functools.cached_property
    def default_domain_only(self) -> bool:
        return {n.domain for n in self.model.graph.node} <= {"", "ai.onnx"}


def _array(x: Any) -> Any:
    if isinstance(x, TensorProto):
        return numpy_helper.to_array(x)
    if isinstance(x, np.generic):
        return np.asarray(x)
    return x


@functools.cache
def raw_cases() -> tuple[Any, ...]:
    """onnx's node test cases as its loader gives them (generating them takes seconds: every
    module that needs them shares this one copy per process; treat them as read-only)."""
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(load_model_tests(kind="node"))


@functools.cache
def cases() -> dict[str, Case]:
    """Every node case onnx generates, by name."""
    return {c.name: Case(c.name, c.model,
                         tuple(([_array(x) for x in i], [_array(x) for x in o])
                               for i, o in c.data_sets), c.rtol, c.atol)
            for c in raw_cases()}


@functools.cache
def registries():
    return load_registries()


def backend_op_types(backend: str) -> frozenset[str]:
    """The op types a backend declares (its class's ``op_types`` table; for ``cpu``, the ops
    onnxruntime's CPU provider has kernels for in the default domain)."""
    cls = registries().backends.get(backend).cls
    if hasattr(cls, "op_types"):
        return frozenset(cls.op_types)
    from aicc.backends.cpu import _cpu_kernels

    return frozenset(op for domain, op in _cpu_kernels() if domain == "")


def op_list_cases(backend: str = "interpreter") -> dict[str, Case]:
    """Default-domain cases whose ops all appear in ``backend``'s op table."""
    ops = backend_op_types(backend)
    return {n: c for n, c in sorted(cases().items()) if c.default_domain_only and c.ops <= ops}


#: per backend, options that make compiling hundreds of tiny graphs cheap without changing
#: results: one intra-op thread (no thread pool per onnxruntime session)
FAST_OPTIONS: dict[str, dict[str, Any]] = {"cpu": {"threads": 1, "allow_spinning": False}}


def run_public(case: Case, backend: str, *, pipeline: Any = None,
               compare: Callable[[Case, list[np.ndarray], list[np.ndarray]], None] | None = None,
               folder: Path | None = None) -> None:
    """Compile ``case`` for ``backend`` once, load the container, run every data set, compare.

    Compiles as ``aicc.compile`` does (same request, same pipeline) with the registries loaded
    once per process; loads with ``aicc.load``.
    """
    folder = Path(folder or tempfile.mkdtemp(prefix="aicc-node-"))
    req = CompileRequest(model=case.model, backend=backend, pipeline=pipeline,
                         backend_options=FAST_OPTIONS.get(backend, {}),
                         output=folder / f"{case.name}.qpc")
    path, _, _ = compile_model(req, registries())
    session = aicc.load(path, registries=registries())
    names = [vi.name for vi in case.model.graph.input
             if vi.name not in {t.name for t in case.model.graph.initializer}]
    for inputs, expected in case.data_sets:
        outputs = session.run(dict(zip(names, inputs)))
        got = [outputs[vi.name] for vi in case.model.graph.output]
        (compare or _onnx_compare)(case, expected, got)


def _onnx_compare(case: Case, expected: list[np.ndarray], got: list[np.ndarray]) -> None:
    from onnx.backend.test.runner import Runner

    Runner.assert_similar_outputs(expected, got, rtol=case.rtol, atol=case.atol)


#: fp16 tolerance: 8 units in the last place of fp16 (2**-10 each) relative to the value, plus
#: the same relative to the output's largest magnitude (sums and differences of rounded terms)
FP16_RTOL = 8 * 2.0**-10


def fp16_close(case: Case, expected: list[np.ndarray], got: list[np.ndarray]) -> None:
    """Outputs of a model run in fp16 against the fp32 reference (see ``FP16_RTOL``)."""
    assert len(expected) == len(got)
    for i, (ref, out) in enumerate(zip(expected, got)):
        ref, out = np.asarray(ref), np.asarray(out)
        assert ref.shape == out.shape, f"output {i}: shape {out.shape}, expected {ref.shape}"
        assert ref.dtype == out.dtype, f"output {i}: dtype {out.dtype}, expected {ref.dtype}"
        if ref.dtype.kind not in "fc":
            np.testing.assert_array_equal(out, ref, err_msg=f"output {i}")
            continue
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        finite = np.isfinite(ref64)
        np.testing.assert_array_equal(np.isnan(out64), np.isnan(ref64), err_msg=f"output {i}")
        infinite = np.isinf(ref64)
        np.testing.assert_array_equal(out64[infinite], ref64[infinite], err_msg=f"output {i}")
        scale = float(np.max(np.abs(ref64[finite]), initial=0.0))
        bound = FP16_RTOL * (np.abs(ref64) + scale) + case.atol
        err = np.abs(out64 - ref64)
        bad = finite & ~(err <= bound)
        assert not bad.any(), (f"output {i}: {int(bad.sum())} of {ref.size} values beyond the "
                               f"fp16 tolerance; worst {float(err[bad].max())} at scale {scale}")


def mapping_text(items: Mapping[str, str]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in sorted(items.items()))
