"""The compile driver shared by the Python API and the CLI: model -> pipeline -> backend -> QPC.

Everything that can be checked before work starts is checked first (plugins, pipeline, pass and
backend options, instruments, the model, ops the backend cannot run); the container is written
atomically only once every specialization compiled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from . import ir
from .container import ContainerWriter
from .errors import BackendError, ConfigError
from .options import build_options, options_to_dict
from .pipeline import Instrument, Pipeline, run_pipeline
from .plugins import Registries, load_registries
from .program import Program, describe_tensor

__all__ = ["CompileRequest", "STAGES", "default_pipeline", "compile_model", "build_instruments",
           "prepare"]

logger = logging.getLogger(__name__)


#: Stages of the default pipeline. Features (flags such as -convert-to-fp16) add their passes
#: at a stage; passes of one stage keep the order in which they were added.
STAGES = {
    "bind": 10,         # bind-symbols
    "specialize": 20,   # specialize (one graph per network specialization)
    "simplify": 30,     # fold-constants, fold-batchnorm
    "equalize": 40,     # cle
    "interface": 50,    # custom-io
    "precision": 60,    # fp16 marking, keep-original-precision, int32 sandwich
    "quantize": 70,     # calibrate, quantize
    "cleanup": 90,      # cleanup
}


def default_pipeline(*, symbols: Sequence[str] = (), batchsize: int = 0,
                     feature_steps: Sequence[tuple[str, str, Mapping[str, Any]]] = ()
                     ) -> list[Any]:
    """The passes ``aicc compile`` runs when no pipeline is given.

    ``feature_steps`` are ``(stage, pass name, options)`` triples contributed by feature flags;
    see ``STAGES`` for where each stage runs.
    """
    staged: list[tuple[int, str, Mapping[str, Any]]] = []
    if symbols or batchsize:
        staged.append((STAGES["bind"], "bind-symbols",
                       {"symbols": list(symbols), "batchsize": batchsize}))
    staged += [(STAGES["simplify"], "fold-constants", {}), (STAGES["simplify"], "fold-batchnorm", {})]
    for stage, name, options in feature_steps:
        if stage not in STAGES:
            raise ConfigError(f"unknown pipeline stage '{stage}' for pass '{name}'",
                              hint=f"stages: {', '.join(STAGES)}")
        staged.append((STAGES[stage], name, dict(options)))
    staged.append((STAGES["cleanup"], "cleanup", {}))
    staged.sort(key=lambda item: item[0])  # stable: same-stage passes keep their order
    return [(name, options) for _, name, options in staged]


@dataclass
class CompileRequest:
    """Everything one compile needs, as the API or the CLI received it."""

    model: str | Path | bytes | onnx.ModelProto
    backend: str = "cpu"
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    pipeline: str | Path | list[Any] | None = None
    pipeline_text: str | None = None
    output: str | Path | None = None
    symbols: Sequence[str] = ()
    batchsize: int = 0
    instruments: Sequence[tuple[str, Mapping[str, Any]]] = ()
    plugins: Sequence[str | Path] = ()
    #: (stage, pass, options) added to the default pipeline by feature flags (see STAGES)
    feature_steps: list[tuple[str, str, Mapping[str, Any]]] = field(default_factory=list)


def build_instruments(specs: Iterable[tuple[str, Mapping[str, Any]]],
                      registries: Registries) -> list[Instrument]:
    out = []
    for name, raw in specs:
        entry = registries.instruments.get(name)
        opts = build_options(entry.cls.Options, raw, owner=f"instrument '{name}'")
        out.append(entry.cls(opts, registries))
    return out


def _load(model: Any) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return ir.load_model(model.SerializeToString(), check_shapes=True)
    return ir.load_model(model)


def prepare(req: CompileRequest, registries: Registries | None = None
            ) -> tuple[Registries, Pipeline, Any, list[Instrument]]:
    """Validate plugins, pipeline, backend and instruments: everything but the model."""
    registries = registries or load_registries(req.plugins)
    if req.pipeline_text is not None:
        pipeline = Pipeline.from_text(req.pipeline_text, registries.passes)
    elif isinstance(req.pipeline, (str, Path)):
        pipeline = Pipeline.from_file(req.pipeline, registries.passes)
    elif req.pipeline is not None:
        pipeline = Pipeline.build(req.pipeline, registries.passes)
    else:
        pipeline = Pipeline.build(default_pipeline(symbols=req.symbols, batchsize=req.batchsize,
                                                   feature_steps=req.feature_steps),
                                  registries.passes, source="default pipeline")
    if req.feature_steps and (req.pipeline_text is not None or req.pipeline is not None):
        flags = ", ".join(sorted({name for _, name, _ in req.feature_steps}))
        raise ConfigError(f"feature flags add passes ({flags}) but an explicit pipeline was "
                          "given", where=pipeline.source,
                          hint="put those passes in the pipeline, or drop --pipeline/--passes")
    if (req.symbols or req.batchsize) and "bind-symbols" not in pipeline.names():
        raise ConfigError("-onnx-define-symbol/-batchsize given, but the pipeline has no "
                          "'bind-symbols' pass", where=pipeline.source,
                          hint="add bind-symbols to the pipeline, or drop the flags")
    entry = registries.backends.get(req.backend)
    backend = entry.cls(build_options(entry.cls.Options, req.backend_options,
                                      owner=f"backend '{req.backend}'"))
    inst_specs = list(req.instruments) + [(n, {}) for n in pipeline.instruments]
    instruments = build_instruments(inst_specs, registries)
    return registries, pipeline, backend, instruments


def compile_model(req: CompileRequest, registries: Registries | None = None
                  ) -> tuple[Path | None, Program, dict[str, Any]]:
    """Compile ``req``; returns (container path or None, final Program, executables by graph)."""
    registries, pipeline, backend, instruments = prepare(req, registries)
    model = _load(req.model)
    # Ops introduced by passes are checked again below; this catches the common case early.
    _check_supported(backend, model, "the model")
    program = Program.from_model(model)
    program.compile_options = {"backend": backend.name, "pipeline": pipeline.to_text()}
    writer = ContainerWriter(req.output) if req.output is not None else None
    try:
        program = run_pipeline(pipeline, program, registries=registries,
                               instruments=instruments, backend=backend.name)
        executables, lowered = {}, {}
        for name in program.graphs:
            lowered[name] = program.to_model(name)
            _check_supported(backend, lowered[name], f"graph '{name}'")
            executables[name] = backend.compile(lowered[name], program_meta=program.meta(),
                                                spec_options=program.spec_options.get(name, {}))
        if writer is None:
            return None, program, executables
        specs = []
        for name, graph in program.graphs.items():
            folder = ir.safe_file_name(name)
            writer.add_model(folder, lowered[name])
            writer.add_files(folder, executables[name].save(writer.folder(folder)))
            specs.append({"name": name, "folder": folder,
                          "symbols": {**program.symbols, **program.spec_symbols.get(name, {})},
                          "options": program.spec_options.get(name, {}),
                          "inputs": [describe_tensor(t).to_json() for t in graph.inputs],
                          "outputs": [describe_tensor(t).to_json() for t in graph.outputs]})
        path = writer.commit({"backend": backend.name,
                              "backend_options": options_to_dict(backend.options),
                              "pipeline": pipeline.to_text(),
                              "program": program.meta(),
                              "specializations": specs})
        return path, program, executables
    finally:
        if writer is not None:
            writer.abort()


def _check_supported(backend: Any, model: onnx.ModelProto, what: str) -> None:
    problems = backend.unsupported_nodes(model)
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more"
                                            if len(problems) > 10 else "")
        raise BackendError(f"{what} has {len(problems)} node(s) backend '{backend.name}' cannot "
                           f"run: {shown}", hint="choose another backend with --backend")
