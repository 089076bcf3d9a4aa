"""A test kit for pass authors: build graphs, run one pass, assert it kept its promise.

``check_pass`` runs a pass on a model and compares outputs before and after on seeded random
inputs (with the interpreter and with onnxruntime), within the pass's declared tolerance for
``preserving`` passes; the built-in passes are tested with it too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from . import ir
from .errors import PassError
from .instruments import compare_outputs, random_feeds
from .pipeline import Pipeline, run_pipeline
from .plugins import Registries, load_registries
from .program import Program

__all__ = ["run_pass", "check_pass", "run_model"]


def run_model(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *, backend: str = "cpu",
              registries: Registries | None = None) -> dict[str, np.ndarray]:
    """Outputs of ``model`` on ``feeds`` with a registered backend."""
    registries = registries or load_registries()
    exe = registries.backends.get(backend).cls().compile(model, program_meta={}, spec_options={})
    return exe.run(feeds)


def run_pass(model: onnx.ModelProto | Program, name: str, options: Mapping[str, Any] | None = None,
             *, registries: Registries | None = None) -> Program:
    """Apply one registered pass to a model (or Program) and return the resulting Program."""
    registries = registries or load_registries()
    program = model if isinstance(model, Program) else Program.from_model(
        ir.load_model(model.SerializeToString()))
    pipeline = Pipeline.build([(name, dict(options or {}))], registries.passes)
    return run_pipeline(pipeline, program, registries=registries)


def check_pass(model: onnx.ModelProto, name: str, options: Mapping[str, Any] | None = None, *,
               backends: Sequence[str] = ("interpreter", "cpu"), seeds: Sequence[int] = (0, 1),
               feeds: Sequence[Mapping[str, np.ndarray]] = (),
               registries: Registries | None = None) -> Program:
    """Run pass ``name`` and assert its semantics on random (and given) inputs.

    For a ``preserving`` pass, outputs after must equal outputs before within the pass's
    tolerance on every listed backend that is registered. Returns the transformed Program.
    """
    registries = registries or load_registries()
    before = Program.from_model(ir.load_model(model.SerializeToString()))
    after = run_pass(before.copy(), name, options, registries=registries)
    cls = registries.passes.get(name).cls
    if cls.semantics != "preserving":
        return after
    for backend in backends:
        if backend not in registries.backends:
            continue
        for graph_name in after.graphs:
            all_feeds = [random_feeds(after, graph_name, s) for s in seeds] + \
                [dict(f) for f in feeds]
            for feed in all_feeds:
                ref = run_model(before.to_model(), feed, backend=backend, registries=registries)
                got = run_model(after.to_model(graph_name), feed, backend=backend,
                                registries=registries)
                problem = compare_outputs(ref, got, cls.tolerance.rtol, cls.tolerance.atol)
                if problem:
                    raise PassError(f"pass '{name}' is not preserving on backend '{backend}' "
                                    f"(graph '{graph_name}'): {problem}")
    return after
