"""Pipelines: an ordered list of (pass, options), validated before any work, run with instruments.

A pipeline comes from a Python list, a YAML/TOML file, or the one-line text form that
``--print-pipeline`` prints and ``--passes`` reads back::

    bind-symbols{symbols=[batch=1]},fold-constants,fold-batchnorm,cleanup

Building a pipeline checks every pass name and option (type, range, unknown keys) and the ordering
each pass declares; running it wraps each pass in the enabled instruments and checks the pass
contract after it (a Program comes back, graphs stay structurally valid).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ir
from .configfile import load_config, resolve_relative
from .errors import AiccError, ConfigError, PassError, PluginError, did_you_mean
from .options import (build_options, files_read_once, format_value, options_to_dict,
                      parse_text_value, split_outside_quotes)
from .analyses import Analysis, AnalysisCache
from .backend import Observers
from .pass_base import PassContext, PassResult
from .program import Program

__all__ = ["Pipeline", "Step", "Instrument", "run_pipeline", "parse_pipeline_text"]

logger = logging.getLogger(__name__)


@dataclass
class Step:
    """One pass of a pipeline with its validated options."""

    name: str
    cls: type
    options: Any
    plugin: str

    def to_text(self) -> str:
        changed = options_to_dict(self.options, only_changed=True)
        if not changed:
            return self.name
        body = " ".join(f"{k}={format_value(v)}" for k, v in changed.items())
        return f"{self.name}{{{body}}}"


class Instrument:
    """Base class of pass instruments; all methods are optional no-ops.

    Order: ``before_pipeline``; per pass ``before_pass``, then ``after_pass`` (or
    ``after_pass_failed`` if the pass raised); finally ``after_pipeline``. Several instruments are
    called in the order they were enabled for ``before_*`` and in reverse for ``after_*``.
    """

    name = ""
    description = ""

    def __init__(self, options: Any = None, registries: Any = None):
        self.options = options
        self.registries = registries

    def before_pipeline(self, program: Program, steps: Sequence[Step]) -> None: ...
    def before_pass(self, index: int, step: Step, program: Program) -> None: ...
    def after_pass(self, index: int, step: Step, program: Program, ctx: PassContext) -> None: ...
    def after_pass_failed(self, index: int, step: Step, error: BaseException) -> None: ...
    def after_pipeline(self, program: Program) -> None: ...


_TEXT_STEP = re.compile(r'\s*([a-z][a-z0-9-]*)\s*(?:\{((?:[^{}"]|"(?:[^"\\]|\\.)*")*)\})?\s*(?:,|$)')


def parse_pipeline_text(text: str) -> list[dict[str, Any]]:
    """``a,b{x=1 y=[p,q]}`` -> ``[{"name": "a"}, {"name": "b", "options": {...}}]``."""
    entries: list[dict[str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TEXT_STEP.match(text, pos)
        if not m or m.end() == pos:
            raise ConfigError(f"cannot read the pipeline text at column {pos + 1}: "
                              f"{text[pos:pos + 30]!r}", where="--passes",
                              hint="write name{option=value option=value},name")
        options: dict[str, Any] = {}
        for item in _split_options(m.group(2) or ""):
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"option {item!r} of pass '{m.group(1)}' has no '='",
                                  where="--passes")
            options[key.strip()] = parse_text_value(value.strip())
        entries.append({"name": m.group(1), "options": options})
        pos = m.end()
    return entries


def _split_options(body: str) -> list[str]:
    return split_outside_quotes(body, None)


def _resolve_paths(options_cls: Any, raw: Mapping[str, Any], base_file: str | Path
                   ) -> dict[str, Any]:
    """``raw`` with the relative values of path options resolved against ``base_file``'s folder."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(options_cls)} \
        if dataclasses.is_dataclass(options_cls) else {}
    out = dict(raw)
    for key, value in raw.items():
        f = fields.get(key)
        if f is not None and f.metadata.get("path") and isinstance(value, str) and value:
            out[key] = str(resolve_relative(base_file, value))
    return out


@dataclass
class Pipeline:
    """A validated, printable list of steps."""

    steps: list[Step]
    instruments: list[str] = field(default_factory=list)
    source: str = "<python>"

    @classmethod
    def build(cls, entries: Iterable[Any], passes_registry, *, source: str = "<python>",
              instruments: Iterable[str] = (), base_file: str | Path | None = None
              ) -> "Pipeline":
        """Validate a list of pass names, ``(name, options)`` pairs or ``{name, options}`` maps.
        With ``base_file`` (a pipeline file), relative paths in path options resolve against
        its folder. A file that several passes name by the same path is read once."""
        with files_read_once():
            steps = [cls._step(i, entry, passes_registry, source, base_file)
                     for i, entry in enumerate(entries)]
        pipeline = cls(steps, list(instruments), source)
        pipeline._check_order()
        return pipeline

    @staticmethod
    def _step(i: int, entry: Any, passes_registry, source: str,
              base_file: str | Path | None) -> "Step":
        """One entry of ``build`` as a checked Step."""
        where = f"pipeline entry {i + 1}"
        if isinstance(entry, str):
            name, raw = entry, {}
        elif isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str):
            name, raw = entry[0], entry[1] or {}
        elif isinstance(entry, Mapping):
            extra = set(entry) - {"name", "options"}
            if extra:
                raise ConfigError(f"unknown key '{sorted(extra)[0]}'", where=source,
                                  field=where, hint="an entry has 'name' and 'options'")
            if "name" not in entry:
                raise ConfigError("entry has no 'name'", where=source, field=where)
            name, raw = entry["name"], entry.get("options") or {}
        else:
            raise ConfigError(f"got {entry!r}, expected a pass name or "
                              "{name: ..., options: {...}}", where=source, field=where)
        if not isinstance(name, str):
            raise ConfigError(f"pass name {name!r} is not a string", where=source, field=where)
        if not isinstance(raw, Mapping):
            raise ConfigError(f"options of pass '{name}' must be a mapping, got {raw!r}",
                              where=source, field=where)
        try:
            reg = passes_registry.get(name)
        except PluginError as e:
            raise ConfigError(f"unknown pass '{name}'", where=source, field=where,
                              hint=did_you_mean(name, passes_registry.names())) from e
        if base_file is not None:
            raw = _resolve_paths(reg.cls.Options, raw, base_file)
        try:
            opts = build_options(reg.cls.Options, raw, owner=f"pass '{name}'")
        except ConfigError as e:
            if not (e.field or "").startswith(f"pass '{name}'"):
                raise       # a file's own error (a FileValue read), naming the file
            raise ConfigError(e.message, where=source, field=e.field or where,
                              hint=e.hint) from None
        return Step(name, reg.cls, opts, reg.plugin)

    @classmethod
    def from_text(cls, text: str, passes_registry, **kw: Any) -> "Pipeline":
        return cls.build(parse_pipeline_text(text), passes_registry, source="--passes", **kw)

    @classmethod
    def from_file(cls, path: str | Path, passes_registry) -> "Pipeline":
        """A pipeline file: a YAML list of entries, or a mapping with ``passes`` (a list) and
        optional ``instruments`` (a list of names). TOML files use ``[[passes]]`` tables."""
        data = load_config(path, what="pipeline file")
        instruments: list[str] = []
        if isinstance(data, Mapping):
            extra = set(data) - {"passes", "instruments"}
            if extra:
                raise ConfigError(f"unknown key '{sorted(extra)[0]}'", where=path,
                                  hint=did_you_mean(sorted(extra)[0], ["passes", "instruments"]))
            instruments = data.get("instruments") or []
            if not isinstance(instruments, list) or not all(isinstance(s, str) for s in instruments):
                raise ConfigError("'instruments' must be a list of names", where=path)
            data = data.get("passes")
        if not isinstance(data, list):
            raise ConfigError(f"expected a list of passes, got {type(data).__name__}", where=path,
                              hint="write '- pass-name' lines, or 'passes: [...]'")
        return cls.build(data, passes_registry, source=str(path), instruments=instruments,
                         base_file=path)

    def _check_order(self) -> None:
        """Refuse a pipeline in which a pass's ``requires`` does not run before it. (``after``
        and ``before`` place passes in generated pipelines, see ``aicc.pass_order``; a pipeline
        the user wrote keeps the user's order.)"""
        names = [s.name for s in self.steps]
        for i, step in enumerate(self.steps):
            for req in step.cls.requires:
                if req not in names[:i]:
                    raise ConfigError(f"pass '{step.name}' needs pass '{req}' before it",
                                      where=self.source)

    def to_text(self) -> str:
        """The pipeline in the text form ``--passes`` accepts back."""
        return ",".join(step.to_text() for step in self.steps)

    def names(self) -> list[str]:
        return [s.name for s in self.steps]


def _check_contract(step: Step, result: Any, program: Program) -> tuple[Program, PassResult]:
    who = f"pass '{step.name}' (plugin '{step.plugin}')"
    if result is None:
        result = PassResult()
    elif isinstance(result, Program):
        result = PassResult(program=result)
    elif not isinstance(result, PassResult):
        raise PassError(f"{who} returned {type(result).__name__}, expected a PassResult, a "
                        "Program or None")
    program = result.program if result.program is not None else program
    if not program.graphs:
        raise PassError(f"{who} left the Program with no graphs")
    if not result.modified:
        return program, result
    import onnx_graphsurgeon as gs
    for name, graph in program.graphs.items():
        if not isinstance(graph, gs.Graph):
            raise PassError(f"{who} left graph '{name}' as a {type(graph).__name__}, "
                            "expected an onnx_graphsurgeon.Graph")
        try:
            ir.verify_graph(graph, where=f"graph '{name}'",
                            allowed_repeated_outputs=frozenset(program.repeated_outputs))
        except AiccError as e:
            raise PassError(f"{who} broke graph '{name}': {e.message}") from e
    return program, result


@dataclass
class _Run:
    """One pipeline run: what every pass of it (nested ones too) shares."""

    registries: Any
    instruments: Sequence[Instrument]
    analyses: AnalysisCache

    def steps(self, steps: Sequence[Step], program: Program, *, prefix: str = "",
              at: int | None = None) -> Program:
        for index, step in enumerate(steps):
            shown = Step(prefix + step.name, step.cls, step.options, step.plugin) \
                if prefix else step
            program = self.step(index if at is None else at, shown, step, program,
                                [s.name for s in steps[:index]])
        return program

    def step(self, index: int, shown: Step, step: Step, program: Program,
             before: list[str]) -> Program:
        for inst in self.instruments:
            inst.before_pass(index, shown, program)
        ctx = PassContext(options=step.options, logger=logging.getLogger(f"aicc.pass.{step.name}"),
                          observers=Observers(self.registries.backends
                                              if self.registries else None),
                          registries=self.registries, analyses=self.analyses)
        ctx._nested = lambda entries, prog: self.nested(index, shown.name, entries, prog,
                                                        ctx.counters)
        started = self.analyses.start_pass()
        try:
            program, result = _check_contract(step, step.cls().run(program, ctx), program)
        except BaseException as e:
            for inst in reversed(self.instruments):
                inst.after_pass_failed(index, shown, e)
            err = _pass_failure(step, e, before)
            if err is e:
                raise
            raise err from e
        ctx.modified = result.modified
        if result.modified:
            self.analyses.invalidate(tuple(step.cls.preserves) + tuple(result.preserved),
                                     started=started)
        for inst in reversed(self.instruments):
            inst.after_pass(index, shown, program, ctx)
        return program

    def nested(self, index: int, outer: str, entries: Sequence[Any], program: Program,
               counters: Any) -> Program:
        """Passes run by the pass ``outer``: shown to instruments as ``outer/NAME``; their
        counters add to ``outer``'s."""
        inner = Pipeline.build(entries, self.registries.passes, source=f"pass '{outer}'")
        probe = _CounterSum(f"{outer}/")
        run = _Run(self.registries, [*self.instruments, probe], self.analyses)
        program = run.steps(inner.steps, program, prefix=f"{outer}/", at=index)
        counters.update(probe.total)
        return program


class _CounterSum(Instrument):
    """Sums the counters of the passes it sees (those a pass runs through ctx.run_pipeline)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.total: Counter = Counter()

    def after_pass(self, index: int, step: Step, program: Program, ctx: PassContext) -> None:
        rest = step.name[len(self.prefix):]
        if step.name.startswith(self.prefix) and "/" not in rest:  # deeper runs sum upward
            self.total.update(ctx.counters)


def _pass_failure(step: Step, e: BaseException, before: list[str]) -> BaseException:
    """The error to raise for a pass that failed: aicc errors named after the pass, anything
    else an internal error (exit 1) naming the pass, its plugin and the passes before it."""
    if isinstance(e, AiccError):
        if not isinstance(e, PassError) and step.name not in (e.where or ""):
            e.args = (f"pass '{step.name}': {e.raw_format()}",)
        return e
    if isinstance(e, Exception):
        err = PassError(f"pass '{step.name}' (plugin '{step.plugin}') failed: "
                        f"{type(e).__name__}: {e}",
                        hint=f"passes run before it: {', '.join(before) or 'none'}")
        err.exit_code = 1
        return err
    return e


def run_pipeline(pipeline: Pipeline, program: Program, *, registries: Any,
                 instruments: Sequence[Instrument] = (),
                 provided: Mapping[Analysis, Any] | None = None,
                 analyses: AnalysisCache | None = None) -> Program:
    """Run every step over ``program`` with ``instruments`` around each; return the result.

    ``provided`` are facts the caller gives the passes (e.g. calibration samples); ``analyses``
    an existing cache to share (the caller reads what the passes produced from it)."""
    cache = analyses if analyses is not None else AnalysisCache()
    for analysis, value in (provided or {}).items():
        cache.put(analysis, value)
    for inst in instruments:
        inst.before_pipeline(program, pipeline.steps)
    program = _Run(registries, instruments, cache).steps(pipeline.steps, program)
    for inst in reversed(instruments):
        inst.after_pipeline(program)
    return program
