"""The compile driver shared by the Python API and the CLI: model -> pipeline -> backend -> QPC.

Everything that can be checked before work starts is checked first (plugins, pipeline, pass and
backend options, instruments, the model, ops the backend cannot run); the container is written
atomically only once every specialization compiled. With the default pipeline, ops of the model
that the backend's op table lacks are rewritten by the passes that declare them in
``Pass.lowers`` (the ``lower`` pass, see ``lowering_request``); an explicit pipeline gets nothing
added.
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
from .errors import BackendError, ConfigError, ModelError, UsageError, option_ref
from .fileio import unique_file_names
from .options import build_options, options_to_dict
from .pass_order import Requested, order_steps
from .output_shapes import correct_output_shapes
from .pipeline import Instrument, Pipeline, run_pipeline
from .pipeline_flags import canonical_symbols, configure_explicit_pipeline
from .plugins import Registries, load_registries
from .program import Program, describe_tensor

__all__ = ["CompileRequest", "CORE_PASSES", "configure", "default_pipeline", "compile_model",
           "build_instruments", "prepare", "retained_state_pairs", "RETAINED_SUFFIX",
           "lowering_request", "model_op_types"]

logger = logging.getLogger(__name__)


#: Passes every generated pipeline runs; features add theirs (``CompileRequest.add_pass``) and
#: the declared ``after``/``before`` of each pass places it (``aicc.pass_order``).
CORE_PASSES = ("fold-constants", "fold-batchnorm", "cleanup")


def default_pipeline(registries: Registries, *, symbols: Sequence[str] = (), batchsize: int = 0,
                     requested: Sequence[Requested] = ()) -> list[tuple[str, dict[str, Any]]]:
    """The passes ``aicc compile`` runs when no pipeline is given: the core passes, the passes
    features requested and ``bind-symbols`` for bound symbols, in their declared order."""
    steps: list[Requested] = []
    if symbols or batchsize:
        steps.append(Requested("bind-symbols", _symbol_options(symbols, batchsize)))
    steps += [Requested(name) for name in CORE_PASSES]
    steps += list(requested)
    classes = [registries.passes.get(s.name).cls for s in steps]
    return [(s.name, dict(s.options)) for s in order_steps(steps, classes)]


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
    #: passes the features asked for (placed by their declared order, see default_pipeline)
    passes: list[Requested] = field(default_factory=list)
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
    #: the validated options this request was configured from (None: built directly)
    config: Any = None
    #: an action that replaces compiling (e.g. writing a custom I/O template); returns the exit
    #: code (CLI only)
    standalone: Any = None
    #: ``(option key, backend option)`` pairs set by features, for contradiction errors
    _backend_option_keys: dict[str, str] = field(default_factory=dict, repr=False)

    def add_pass(self, name: str, options: Mapping[str, Any] | None = None, *,
                 after: Sequence[str] = (), before: Sequence[str] = (), by: str = "aicc"
                 ) -> dict[str, Any]:
        """Ask for pass ``name`` in the generated pipeline; returns its options (still open to
        other features, e.g. ``-dask`` adding to ``calibrate``'s)."""
        step = Requested(name, dict(options or {}), tuple(after), tuple(before), by)
        self.passes.append(step)
        return step.options  # type: ignore[return-value]

    def pass_options(self, name: str) -> dict[str, Any] | None:
        """The options of the requested pass ``name`` (the first), or None if none asked."""
        for step in self.passes:
            if step.name == name:
                return step.options  # type: ignore[return-value]
        return None

    def set_backend_option(self, name: str, value: Any, *, key: str) -> None:
        """Set backend option ``name`` from compile option ``key``; a second setter of the same
        backend option (another option, or ``backend_options``) is refused."""
        if name in self.backend_options:
            other = self._backend_option_keys.get(name, "backend_options")
            raise UsageError(f"{option_ref(key)} and {option_ref(other)} both set the backend "
                             f"option '{name}'", hint="give it once")
        self.backend_options = {**self.backend_options, name: value}
        self._backend_option_keys[name] = key


def configure(config: Any, registries: Registries, plugins: Sequence[str | Path] = ()
              ) -> CompileRequest:
    """The request a validated ``CompileConfig`` asks for: every plugin's ``aicc_configure``
    turns its options into passes, backend options and request fields (plugin load order).
    ``plugins`` are the plugin files ``registries`` were loaded with (Dask workers load them)."""
    req = CompileRequest(model=config.get("model"), config=config, plugins=list(plugins))
    registries.configure(config, req)
    return req


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
        pipeline = Pipeline.build(default_pipeline(registries, symbols=req.symbols,
                                                   batchsize=req.batchsize, requested=req.passes),
                                  registries.passes, source="default pipeline")
    if req.pipeline_text is not None or req.pipeline is not None:
        # one rule: a flag configures its pass inside the given pipeline, or is refused
        flag_steps = [(s.name, s.options, s.by) for s in req.passes]
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


def lowering_request(backend: Any, model: onnx.ModelProto, registries: Registries
                     ) -> Requested | None:
    """``lower{ops=[...]}`` for the model's ops the backend lacks and a registered pass lowers
    (``Pass.lowers``), or None. A backend with no op table (``op_types`` None, e.g. onnxruntime)
    lacks nothing."""
    table = getattr(backend, "op_types", None)
    if table is None:
        return None
    lowerable = {op for e in registries.passes.entries() for op in e.cls.lowers}
    missing = sorted((model_op_types(model) - set(table)) & lowerable)
    return Requested("lower", {"ops": missing}, by="the backend's op table") if missing else None


def _lowered_by(pipeline: Pipeline) -> frozenset[str]:
    ops = {op for step in pipeline.steps for op in step.cls.lowers}
    ops |= {op for step in pipeline.steps if step.name == "lower" for op in step.options.ops}
    return frozenset(ops)


def _compile(req: CompileRequest, registries: Registries | None
             ) -> tuple[Path | None, Program, dict[str, Any]]:
    registries, pipeline, backend, instruments = prepare(req, registries)
    model = _load(req.model)
    _check_io_types(model, req.model)
    pipeline = _with_lowering(req, registries, pipeline, backend, model)
    # Ops introduced by passes are checked again below; this catches the common case early
    # (ops a lowering pass of the pipeline rewrites are left to that pass).
    _check_supported(backend, model, "the model", skip=_lowered_by(pipeline))
    program = Program.from_model(model)
    program.compile_options = {"backend": backend.name, "pipeline": pipeline.to_text()}
    writer = ContainerWriter(req.output) if req.output is not None else None
    try:
        program = run_pipeline(pipeline, program, registries=registries,
                               instruments=instruments)
        if req.pipeline_only:
            return None, program, {}
        retained = _finish_program(req, program)
        folders = unique_file_names(program.graphs)  # 'a/b' and 'a_b' get two folders
        remote = _compile_remotely(req, backend, program, writer)
        executables, specs = _compile_graphs(program, backend, writer, folders, remote)
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
            executables = LazyExecutables(backend, path, program, folders,
                                          {name: remote[name][2] for name in remote})
        return path, program, executables
    finally:
        if writer is not None:
            writer.abort()


def _with_lowering(req: CompileRequest, registries: Registries, pipeline: Pipeline,
                   backend: Any, model: onnx.ModelProto) -> Pipeline:
    """The default pipeline with ``lower`` when the backend lacks ops of the model (an explicit
    pipeline stays as given)."""
    if req.pipeline is not None or req.pipeline_text is not None:
        return pipeline
    lowering = lowering_request(backend, model, registries)
    if lowering is None:
        return pipeline
    logger.info("backend '%s' lacks ops of the model; lowering %s", backend.name,
                ", ".join(lowering.options["ops"]))
    return Pipeline.build(default_pipeline(registries, symbols=req.symbols,
                                           batchsize=req.batchsize,
                                           requested=list(req.passes) + [lowering]),
                          registries.passes, source="default pipeline")


def _finish_program(req: CompileRequest, program: Program) -> list[dict[str, str]]:
    """After the pipeline: output shapes corrected, retained states checked, the JSON inputs
    checked against the specializations; returns the retained-state pairs."""
    for name, graph in program.graphs.items():
        correct_output_shapes(graph, where=f"graph '{name}'", ir_version=program.ir_version)
    retained = retained_state_pairs(program) if req.retained_state else []
    if retained:
        program.compile_options["retained_state"] = True
    if req.json_input_file is not None:
        from .data import parse_json_input_file, program_input_descs, spec_input_shapes
        parse_json_input_file(req.json_input_file, program_input_descs(program, interface=True),
                              shapes=spec_input_shapes(program, interface=True),
                              optional=[p["input"] for p in retained])
    return retained


def _compile_graphs(program: Program, backend: Any, writer: Any, folders: Mapping[str, str],
                    remote: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Compile every graph (or take what Dask compiled) and add it to the container; returns
    (executables by graph, the manifest's specialization entries)."""
    shared = len(program.graphs) > 1  # several specializations store shared weights once
    executables, specs = {}, []
    progress = _Progress(len(program.graphs))
    for name, graph in program.graphs.items():
        progress.step(name)
        if remote is not None:
            lowered = remote[name][0]
        else:
            lowered = program.to_model(name)
            _check_supported(backend, lowered, f"graph '{name}'")
            executables[name] = backend.compile(lowered, program_meta=program.meta(),
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
    return executables, specs


def _compile_remotely(req: CompileRequest, backend: Any, program: Program, writer: Any
                      ) -> dict[str, tuple[onnx.ModelProto, dict[str, bytes], dict]] | None:
    """With ``req.dask``, a container to write and several graphs: every graph lowered and
    checked here, then compiled on Dask; (lowered model, artifacts, the executable's stats) by
    graph. Else None."""
    if not req.dask or writer is None or len(program.graphs) < 2:
        return None
    from ._parallel_compile import compile_on_dask
    models = {}
    for name in program.graphs:
        models[name] = program.to_model(name)
        _check_supported(backend, models[name], f"graph '{name}'")
    files, stats = compile_on_dask(req.dask, backend, req.plugins, models, program.meta(),
                                   program.spec_options)
    return {name: (models[name], files[name], stats[name]) for name in program.graphs}


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
