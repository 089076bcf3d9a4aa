"""The compile driver shared by the Python API and the CLI: model -> pipeline -> backend -> QPC.

Everything that can be checked before work starts is checked first (plugins, pipeline, pass and
backend options, instruments, the model, ops the backend cannot run); the container is written
atomically only once every specialization compiled. With the default pipeline, ops of the model
that the backend's op table lacks are rewritten by the passes that declare them in
``Pass.lowers`` (``lowering_steps``, stage ``lower``); an explicit pipeline gets nothing added.
"""

from __future__ import annotations

import gc
import logging
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from . import ir
from .container import ContainerWriter
from .errors import BackendError, ConfigError, ModelError
from .fileio import unique_file_names
from .options import build_options, options_to_dict
from .output_shapes import correct_output_shapes
from .pipeline import Instrument, Pipeline, run_pipeline
from .pipeline_flags import canonical_symbols, configure_explicit_pipeline
from .plugins import Registries, load_registries
from .program import Program, describe_tensor

__all__ = ["CompileRequest", "STAGES", "default_pipeline", "compile_model", "build_instruments",
           "prepare", "retained_state_pairs", "RETAINED_SUFFIX", "lowering_steps", "model_op_types"]

logger = logging.getLogger(__name__)


#: Stages of the default pipeline. Features (flags such as -convert-to-fp16) add their passes
#: at a stage; passes of one stage keep the order in which they were added.
STAGES = {
    "bind": 10,         # bind-symbols
    "specialize": 20,   # specialize (one graph per network specialization)
    "lower": 22,        # passes that rewrite ops the backend lacks (fold-if, unroll-loops,
                        # lower-rnn; added by the driver, see lowering_steps), so that later
                        # passes (fp16 selection, quantization) see the ops that will run
    "select": 25,       # passes that pick nodes by their original output names (convert-fp16),
                        # before fold-batchnorm hands a Conv its BatchNormalization's output
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
        staged.append((STAGES["bind"], "bind-symbols", _symbol_options(symbols, batchsize)))
    staged += [(STAGES["simplify"], "fold-constants", {}), (STAGES["simplify"], "fold-batchnorm", {})]
    for stage, name, options in feature_steps:
        if stage not in STAGES:
            raise ConfigError(f"unknown pipeline stage '{stage}' for pass '{name}'",
                              hint=f"stages: {', '.join(STAGES)}")
        staged.append((STAGES[stage], name, dict(options)))
    staged.append((STAGES["cleanup"], "cleanup", {}))
    staged.sort(key=lambda item: item[0])  # stable: same-stage passes keep their order
    return [(name, options) for _, name, options in staged]


def _symbol_options(symbols: Sequence[str], batchsize: int) -> dict[str, Any]:
    """bind-symbols options of the flags, symbols in the canonical NAME=VALUE form."""
    options: dict[str, Any] = {}
    if symbols:
        options["symbols"] = canonical_symbols(symbols)
    if batchsize:
        options["batchsize"] = batchsize
    return options


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
    #: -retained-state: keep X_RetainedState outputs and feed them back as input X
    retained_state: bool = False
    #: -json-input-file: inference inputs, checked against the program's specializations
    json_input_file: str | Path | None = None
    #: -input-list-file with -load-profile: inference inputs (a QNN input list) the CLI runs the
    #: compiled program on, as the vendor tool does, instead of random data
    run_input_list: str | Path | None = None
    #: run the pipeline only (no backend compile, no container), e.g. -dump-profile; the text
    #: says what the run produced
    pipeline_only: str | None = None
    #: -dask: compile the specializations in parallel on Dask (local[:N] or a scheduler
    #: address; see ``aicc._parallel_compile``); the container is the same bytes
    dask: Any = None


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
    if req.pipeline_text is not None or req.pipeline is not None:
        # one rule: a flag configures its pass inside the given pipeline, or is refused
        flag_steps = [(name, opts, "feature flags") for _, name, opts in req.feature_steps]
        if req.symbols or req.batchsize:
            flag_steps.insert(0, ("bind-symbols", _symbol_options(req.symbols, req.batchsize),
                                  "-onnx-define-symbol/-batchsize"))
        pipeline = configure_explicit_pipeline(pipeline, flag_steps)
    entry = registries.backends.get(req.backend)
    backend = entry.cls(build_options(entry.cls.Options, req.backend_options,
                                      owner=f"backend '{req.backend}'"))
    inst_specs = list(req.instruments) + [(n, {}) for n in pipeline.instruments]
    instruments = build_instruments(inst_specs, registries)
    return registries, pipeline, backend, instruments


def compile_model(req: CompileRequest, registries: Registries | None = None
                  ) -> tuple[Path | None, Program, dict[str, Any]]:
    """Compile ``req``; returns (container path or None, final Program, executables by graph)."""
    # Graph IRs are large acyclic object graphs: cyclic GC passes over them cost time that grows
    # with graph size (about 30 ms per 1k nodes at 50k) and free nothing, so compiling runs
    # with the collector paused; memory is still freed by reference counting.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _compile(req, registries)
    finally:
        if gc_was_enabled:
            gc.enable()


def model_op_types(model: onnx.ModelProto) -> set[str]:
    """Op types of the default domain in ``model``, inside If/Loop/Scan bodies too."""
    found: set[str] = set()
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        for node in graph.node:
            if node.domain in ("", "ai.onnx"):
                found.add(node.op_type)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                stack.extend(attr.graphs)
    return found


_CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})


def lowering_steps(backend: Any, model: onnx.ModelProto, registries: Registries
                   ) -> list[tuple[str, str, Mapping[str, Any]]]:
    """The ``(stage, pass, options)`` steps that rewrite the model's ops the backend lacks.

    A backend with no op table (``op_types`` None, e.g. onnxruntime) lacks nothing. Passes
    declare what they rewrite in ``Pass.lowers``. Passes that remove control flow come first (a
    body's ops surface in the graph), then the others, each group by name; a ``fold-constants``
    leads, so that weights computed from constants and conditions and trip counts computed
    from bound shapes are constants by then.
    """
    table = getattr(backend, "op_types", None)
    if table is None:
        return []
    missing = frozenset(model_op_types(model) - set(table))
    chosen = sorted((not set(e.cls.lowers) & _CONTROL_FLOW, e.name, e.cls)
                    for e in registries.passes.entries()
                    if e.cls.lowers and missing & set(e.cls.lowers))
    steps: list[tuple[str, str, Mapping[str, Any]]] = [
        ("lower", name, cls.lowering_options(missing & frozenset(cls.lowers)))
        for _, name, cls in chosen]
    if steps:  # constants (weights built by Constant/Unsqueeze chains, trip counts) first
        steps.insert(0, ("lower", "fold-constants", {}))
        names = [name for _, name, _ in steps]
        if "If" in missing and "unroll-loops" in names and "fold-if" in names:
            # an If inside a loop body surfaces once unrolled; its condition often depends on
            # the iteration number, a constant after folding: fold again after unrolling
            at = names.index("unroll-loops") + 1
            first = names.index("fold-if")
            steps[first] = ("lower", "fold-if", {"strict": False})
            steps[at:at] = [("lower", "fold-constants", {}), ("lower", "fold-if",
                                                             {"strict": True})]
    return steps


def _lowered_by(pipeline: Pipeline) -> frozenset[str]:
    return frozenset(op for step in pipeline.steps for op in step.cls.lowers)


def _compile(req: CompileRequest, registries: Registries | None
             ) -> tuple[Path | None, Program, dict[str, Any]]:
    registries, pipeline, backend, instruments = prepare(req, registries)
    model = _load(req.model)
    _check_io_types(model, req.model)
    if req.pipeline is None and req.pipeline_text is None:
        lowering = lowering_steps(backend, model, registries)
        if lowering:
            pipeline = Pipeline.build(default_pipeline(
                symbols=req.symbols, batchsize=req.batchsize,
                feature_steps=list(req.feature_steps) + lowering),
                registries.passes, source="default pipeline")
            logger.info("backend '%s' lacks ops of the model; lowering with %s", backend.name,
                        ", ".join(name for _, name, _ in lowering))
    # Ops introduced by passes are checked again below; this catches the common case early
    # (ops a lowering pass of the pipeline rewrites are left to that pass).
    _check_supported(backend, model, "the model", skip=_lowered_by(pipeline))
    program = Program.from_model(model)
    program.compile_options = {"backend": backend.name, "pipeline": pipeline.to_text()}
    writer = ContainerWriter(req.output) if req.output is not None else None
    try:
        program = run_pipeline(pipeline, program, registries=registries,
                               instruments=instruments, backend=backend.name)
        if req.pipeline_only:
            return None, program, {}
        for name, graph in program.graphs.items():
            correct_output_shapes(graph, where=f"graph '{name}'", ir_version=program.ir_version)
        retained = retained_state_pairs(program) if req.retained_state else []
        if retained:
            program.compile_options["retained_state"] = True
        if req.json_input_file is not None:
            from .data import parse_json_input_file, program_input_descs, spec_input_shapes
            parse_json_input_file(req.json_input_file, program_input_descs(program,
                                                                           interface=True),
                                  shapes=spec_input_shapes(program, interface=True),
                                  optional=[p["input"] for p in retained])
        # Several specializations store weights they share once, at the container root.
        shared = len(program.graphs) > 1
        executables, specs = {}, []
        progress = _Progress(len(program.graphs))
        folders = unique_file_names(program.graphs)  # 'a/b' and 'a_b' get two folders
        remote = _compile_remotely(req, backend, program, writer)
        for name, graph in program.graphs.items():
            progress.step(name)
            if remote is not None:
                lowered = remote[name][0]
            else:
                lowered = program.to_model(name)
                _check_supported(backend, lowered, f"graph '{name}'")
                executables[name] = backend.compile(
                    lowered, program_meta=program.meta(),
                    spec_options=program.spec_options.get(name, {}))
            if writer is None:
                continue
            folder = folders[name]
            writer.add_model(folder, lowered, shared_weights=shared)
            if remote is not None:
                _write_artifacts(writer, folder, remote[name][1])
            else:
                writer.add_files(folder, executables[name].save(writer.folder(folder)))
            specs.append({"name": name, "folder": folder,
                          "external_data": "container" if shared else "folder",
                          "symbols": {**program.symbols, **program.spec_symbols.get(name, {})},
                          "options": program.spec_options.get(name, {}),
                          "inputs": [describe_tensor(t).to_json() for t in graph.inputs],
                          "outputs": [describe_tensor(t).to_json() for t in graph.outputs]})
        progress.done()
        if writer is None:
            return None, program, executables
        path = writer.commit({"backend": backend.name,
                              "backend_options": options_to_dict(backend.options),
                              "pipeline": pipeline.to_text(),
                              "program": program.meta(),
                              "retained_state": retained,
                              "specializations": specs})
        if remote is not None:
            from ._parallel_compile import LazyExecutables
            executables = LazyExecutables(backend, path, program, folders)
        return path, program, executables
    finally:
        if writer is not None:
            writer.abort()


def _compile_remotely(req: CompileRequest, backend: Any, program: Program, writer: Any
                      ) -> dict[str, tuple[onnx.ModelProto, dict[str, bytes]]] | None:
    """With ``req.dask``, a container to write and several graphs: every graph lowered and
    checked here, then compiled on Dask; (lowered model, artifacts) by graph. Else None."""
    if not req.dask or writer is None or len(program.graphs) < 2:
        return None
    from ._parallel_compile import compile_on_dask
    models = {}
    for name in program.graphs:
        models[name] = program.to_model(name)
        _check_supported(backend, models[name], f"graph '{name}'")
    files = compile_on_dask(req.dask, backend, req.plugins, models, program.meta(),
                            program.spec_options)
    return {name: (models[name], files[name]) for name in program.graphs}


def _write_artifacts(writer: Any, folder: str, files: Mapping[str, bytes]) -> None:
    target = writer.folder(folder)
    for name, data in files.items():
        (target / name).write_bytes(data)
    writer.add_files(folder, list(files))


#: Suffix of the outputs that ``-retained-state`` keeps and feeds back (``past_key.0`` ->
#: ``past_key.0_RetainedState``), as the vendor's LLM flow names them.
RETAINED_SUFFIX = "_RetainedState"


def retained_state_pairs(program: Program) -> list[dict[str, str]]:
    """``-retained-state``: the (input X, output X_RetainedState) pairs of the program, checked.

    Each output named ``X_RetainedState`` must have an input ``X`` of the same dtype and shape in
    every graph, so the runtime can feed it back; a program with no such output is refused.
    """
    where = "-retained-state"
    pairs: list[dict[str, str]] | None = None
    for name, graph in program.graphs.items():
        inputs = {t.name: describe_tensor(t) for t in graph.inputs}
        found = []
        for t in graph.outputs:
            if not t.name.endswith(RETAINED_SUFFIX):
                continue
            state = t.name[: -len(RETAINED_SUFFIX)]
            out = describe_tensor(t)
            if state not in inputs:
                raise ConfigError(f"output '{t.name}' has no input '{state}' to feed back",
                                  where=where, field=f"graph '{name}'",
                                  hint="retained-state outputs are named after their input "
                                       f"plus '{RETAINED_SUFFIX}'")
            inp = inputs[state]
            if (inp.dtype, inp.shape) != (out.dtype, out.shape):
                raise ConfigError(f"output '{t.name}' is {out.dtype} {out.shape} but input "
                                  f"'{state}' is {inp.dtype} {inp.shape}", where=where,
                                  field=f"graph '{name}'",
                                  hint="a retained state must keep its dtype and shape")
            found.append({"input": state, "output": t.name})
        if pairs is not None and found != pairs:
            raise ConfigError("the specializations retain different states", where=where,
                              field=f"graph '{name}'")
        pairs = found
    if not pairs:
        outs = ", ".join(t.name for g in program.graphs.values() for t in g.outputs[:8])
        raise ConfigError(f"no output is named '*{RETAINED_SUFFIX}' (outputs: {outs})",
                          where=where, hint="drop -retained-state, or export the model with "
                                            "retained-state outputs")
    return pairs


class _Progress:
    """``compiling specialization 3/16: name`` on a terminal; silent in pipes and for one graph."""

    def __init__(self, total: int):
        self.total = total
        self.index = 0
        self.active = total > 1 and sys.stderr.isatty()

    def step(self, name: str) -> None:
        self.index += 1
        logger.info("compiling graph %d/%d: %s", self.index, self.total, name)
        if self.active:
            sys.stderr.write(f"\rcompiling specialization {self.index}/{self.total}: "
                             f"{name[:40]:<40}")
            sys.stderr.flush()

    def done(self) -> None:
        if self.active:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


def _type_text(tp: onnx.TypeProto) -> str:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({onnx.TensorProto.DataType.Name(tp.tensor_type.elem_type).lower()})"
    if kind == "optional_type":
        return f"optional({_type_text(tp.optional_type.elem_type)})"
    if kind == "sequence_type":
        return f"seq({_type_text(tp.sequence_type.elem_type)})"
    if kind == "map_type":
        return f"map({_type_text(tp.map_type.value_type)})"
    return kind or "no type"


def _check_io_types(model: onnx.ModelProto, source: Any) -> None:
    """Refuse graph inputs and outputs that are not tensors (optional, sequence, map, sparse):
    the IR, the container's I/O descriptors and ``Session.run`` carry tensors only."""
    where = str(source) if isinstance(source, (str, Path)) else "<model>"
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in values:
            if vi.type.WhichOneof("value") in (None, "tensor_type"):
                continue
            raise ModelError(f"graph {kind} '{vi.name}' has type {_type_text(vi.type)}; aicc "
                             "compiles models whose inputs and outputs are tensors",
                             where=where, hint="unwrap it in the model (e.g. export the tensor "
                                               "itself), or run the model on onnxruntime")


def _check_supported(backend: Any, model: onnx.ModelProto, what: str,
                     skip: frozenset[str] = frozenset()) -> None:
    problems = [p for p in backend.unsupported_nodes(model)
                if not any(p.endswith(f"({op})") for op in skip)]
    if problems:
        # nodes of another domain (onnxruntime's com.microsoft ops) first: they are the reason
        problems.sort(key=lambda p: _domain_of(p) is None)
        hint = "choose another backend with --backend"
        foreign = sorted({d for d in map(_domain_of, problems) if d})
        if foreign:
            hint = (f"ops of domain {', '.join(foreign)} are onnxruntime's own (contrib) ops, "
                    "not ONNX: only --backend cpu runs them; or " + hint)
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more"
                                            if len(problems) > 10 else "")
        raise BackendError(f"{what} has {len(problems)} node(s) backend '{backend.name}' cannot "
                           f"run: {shown}", hint=hint)


#: the domain in a problem text: ``(com.microsoft.DynamicQuantizeLSTM)`` (interpreter, aic100)
#: or ``(DynamicQuantizeLSTM, domain com.microsoft)`` (cpu)
_FOREIGN = re.compile(r"\((?:\w+, domain ([\w.]+)|([a-z]\w*(?:\.[a-z]\w*)*)\.[A-Z]\w*)\)")


def _domain_of(problem: str) -> str | None:
    m = _FOREIGN.search(problem)
    return (m.group(1) or m.group(2)) if m else None
