"""Running a compiled container: a Session picks the specialization whose input shapes match.

Feeds are checked before anything runs: names, dtypes (nothing is converted that the program was
not told to convert) and shapes. Outputs are checked against the backend contract (names, dtypes,
static dims), so a plugin backend that returns the wrong thing is named.

Retained state (a container compiled with ``-retained-state``): the manifest lists pairs of an
input ``X`` and an output ``X_RetainedState``. The Session keeps each such output and feeds it back
as ``X`` on the next call (zeros before the first), so callers give only the other inputs and get
only the other outputs; the KV cache of an LLM stays inside the session between prefill and decode
steps. A caller may still pass ``X`` to start from a state of its own; ``reset_state`` forgets it.

Custom I/O compiled without ``-aic-preproc`` (manifest ``program.custom_io[*].conversions`` is
``host``): the compiled graph keeps the model's I/O, and the Session runs the recorded conversion
steps in numpy (``aicc.customio.HostConversions``) before and after the backend, inside the timed
latency; ``inputs``/``outputs`` describe the custom tensors either way.
"""

from __future__ import annotations

import logging
import threading
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes  # noqa: F401  (names bfloat16, float8_*, int4, ... as numpy dtypes)
import numpy as np

from .backend import Executable, Observers
from .container import ContainerFiles, load_spec_model, read_manifest
from .customio import HostConversions
from .errors import AiccError, BackendError, ContainerError, DataError
from .guards import check_guards, guard_names, read_guards
from .options import build_options
from .plugins import Registries, load_registries
from .program import TensorDesc

__all__ = ["Session", "SpecInfo", "load", "check_backend_outputs"]

logger = logging.getLogger(__name__)


@dataclass
class SpecInfo:
    """One specialization of a container: its folder, symbol values and I/O descriptors."""

    name: str
    folder: str
    symbols: dict[str, int]
    inputs: list[TensorDesc]
    outputs: list[TensorDesc]
    options: dict[str, Any] = field(default_factory=dict)
    external_data: str = "folder"
    #: the compiled graph's own I/O when the session converts custom I/O on the host (else None)
    graph_inputs: list[TensorDesc] | None = None
    graph_outputs: list[TensorDesc] | None = None

    def matches(self, feeds: Mapping[str, np.ndarray]) -> bool:
        """Whether every given feed fits this specialization's input shape (absent ones do)."""
        for desc in self.inputs:
            arr = feeds.get(desc.name)
            if arr is None or desc.shape is None:
                continue
            if len(arr.shape) != len(desc.shape):
                return False
            if any(isinstance(d, int) and d >= 0 and d != s for d, s in zip(desc.shape, arr.shape)):
                return False
        return True


def _spec_infos(manifest: Mapping[str, Any], path: Path) -> list[SpecInfo]:
    """The specializations a (structurally checked) manifest lists; malformed entries are a
    ContainerError naming the specialization."""
    out = []
    for i, s in enumerate(manifest["specializations"]):
        try:
            out.append(SpecInfo(name=s["name"], folder=s["folder"],
                                symbols=dict(s.get("symbols", {})),
                                inputs=[TensorDesc.from_json(t) for t in s["inputs"]],
                                outputs=[TensorDesc.from_json(t) for t in s["outputs"]],
                                options=dict(s.get("options", {})),
                                external_data=s.get("external_data", "folder")))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ContainerError(f"malformed entry ({type(e).__name__}: {e})",
                                 where=path / "manifest.json", field=f"specializations[{i}]",
                                 hint="the container is damaged; recompile it") from None
    return out


def _shape_text(shape: list[Any] | None) -> str:
    return "?" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"


class Session:
    """A loaded container, ready to run on its backend (or another that can run its graphs)."""

    def __init__(self, path: str | Path, backend: str | None = None, *,
                 backend_options: Mapping[str, Any] | None = None,
                 registries: Registries | None = None):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.registries = registries or load_registries()
        self.backend_name = backend or self.manifest["backend"]
        entry = self.registries.backends.get(self.backend_name)
        raw_opts = backend_options if backend_options is not None else (
            self.manifest.get("backend_options", {}) if backend is None else {})
        self.backend = entry.cls(build_options(entry.cls.Options, raw_opts,
                                               owner=f"backend '{self.backend_name}'"))
        self.program_meta = self.manifest["program"]
        #: every file read later (at the first run) is checked against these checksums
        self.files = ContainerFiles(self.path, self.manifest["files"])
        self.specs = _spec_infos(self.manifest, self.path)
        # Custom I/O compiled without -aic-preproc: the graph keeps the model's I/O and the
        # session converts on the host (aicc.customio); callers see only the custom I/O.
        self._host_io = HostConversions.from_meta(self.program_meta)
        if self._host_io is not None:
            for spec in self.specs:
                spec.graph_inputs, spec.graph_outputs = spec.inputs, spec.outputs
                spec.inputs = self._host_io.interface(spec.inputs)
                spec.outputs = self._host_io.interface(spec.outputs)
        # Guard outputs (aicc.guards) are checked on every run and never returned
        self._guards = read_guards(self.program_meta, self.path / "manifest.json")
        for spec in self.specs:
            hidden = guard_names(self._guards, spec.name)
            if hidden:
                if spec.graph_outputs is None:
                    spec.graph_outputs = list(spec.outputs)
                spec.outputs = [d for d in spec.outputs if d.name not in hidden]
        #: (input X, output X_RetainedState) pairs the session feeds back (-retained-state)
        self.retained: list[tuple[str, str]] = self._retained_pairs()
        self._state: dict[str, np.ndarray] = {}
        self._executables: dict[str, Executable] = {}
        self._load_lock = threading.Lock()  # threads making the first run build one executable
        self.last_specialization: str | None = None
        self.last_latency_s: float = 0.0
        #: specialization -> what the first run with non-finite outputs found (fp16 programs)
        self.nonfinite: dict[str, dict[str, Any]] = {}
        self._fp16 = "float16" in self.program_meta.get("node_precision", {}).values()

    def _retained_pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for item in self.manifest.get("retained_state") or []:
            inp, out = item.get("input"), item.get("output")
            for spec in self.specs:
                if inp not in {d.name for d in spec.inputs} or \
                        out not in {d.name for d in spec.outputs}:
                    raise ContainerError(f"retained state {inp!r} -> {out!r} does not match "
                                         f"specialization '{spec.name}'", where=self.path,
                                         hint="recompile the model")
            pairs.append((inp, out))
        return pairs

    @property
    def inputs(self) -> list[TensorDesc]:
        """The inputs callers feed (of the first specialization; retained state excluded)."""
        held = {i for i, _ in self.retained}
        return [d for d in self.specs[0].inputs if d.name not in held]

    @property
    def outputs(self) -> list[TensorDesc]:
        """The outputs ``run`` returns (retained-state outputs stay in the session)."""
        held = {o for _, o in self.retained}
        return [d for d in self.specs[0].outputs if d.name not in held]

    @property
    def state(self) -> Mapping[str, np.ndarray]:
        """The retained state the next ``run`` feeds back, by input name (read-only view)."""
        return types.MappingProxyType(self._state)

    def reset_state(self) -> None:
        """Forget the retained state: the next ``run`` starts from zeros (a new sequence)."""
        self._state.clear()

    def specialization(self, name: str) -> SpecInfo:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise DataError(f"no specialization named '{name}'", where=str(self.path),
                        hint="it has: " + ", ".join(s.name for s in self.specs))

    def executable(self, spec: SpecInfo) -> Executable:
        with self._load_lock:
            if spec.name not in self._executables:
                model = load_spec_model(self.path, spec.folder, external_data=spec.external_data,
                                        files=self.files)
                self._executables[spec.name] = self.backend.load(
                    self.path / spec.folder, model, program_meta=self.program_meta,
                    spec_options=spec.options)
            return self._executables[spec.name]

    def select(self, feeds: Mapping[str, np.ndarray]) -> SpecInfo:
        """The specialization whose inputs match the feeds' names, dtypes and shapes.

        Retained-state inputs may be absent (the session supplies them); the first
        specialization, in the config's order, whose shapes fit the given feeds is chosen.
        """
        held = {i for i, _ in self.retained}
        names = [d.name for d in self.specs[0].inputs]
        required = [n for n in names if n not in held]
        missing = [n for n in required if n not in feeds]
        if missing:
            raise DataError(f"missing input(s) {', '.join(missing)}", where="feeds",
                            hint=f"the program's inputs: {', '.join(required)}")
        extra = [n for n in feeds if n not in names]
        if extra:
            raise DataError(f"unknown input(s) {', '.join(extra)}", where="feeds",
                            hint=f"the program's inputs: {', '.join(required)}")
        for desc in self.specs[0].inputs:
            if desc.name not in feeds:
                continue
            arr = feeds[desc.name]
            if not isinstance(arr, np.ndarray):
                raise DataError(f"input '{desc.name}' is a {type(arr).__name__}, expected a "
                                "numpy array", where="feeds")
            if arr.dtype != np.dtype(desc.dtype):
                raise DataError(f"input '{desc.name}' is {arr.dtype}, the program takes "
                                f"{desc.dtype}", where="feeds",
                                hint="convert the data, or compile with custom I/O")
        for spec in self.specs:
            if spec.matches(feeds):
                return spec
        have = "; ".join(f"{s.name}: " + ", ".join(f"{d.name}{_shape_text(d.shape)}"
                                                   for d in s.inputs if d.name in feeds)
                         for s in self.specs)
        got = ", ".join(f"{n}{_shape_text(list(feeds[n].shape))}" for n in names if n in feeds)
        kept = [n for n in held if n in feeds and n in self._state]
        raise DataError(f"no specialization takes {got}", where="feeds",
                        hint=f"available: {have}" + (
                            "; the retained state comes from the previous run, call "
                            "reset_state() to start over" if kept else ""))

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the matching specialization; outputs are checked against the contract.

        With retained state, inputs the session holds may be left out (they are fed back from
        the previous run, or zeros), and their ``*_RetainedState`` outputs are kept, not returned.
        """
        if not self.retained:
            spec = self.select(feeds)
            full = {d.name: feeds[d.name] for d in spec.inputs}
        else:
            spec, full = self._with_state(feeds)
        exe = self.executable(spec)
        start = time.perf_counter()
        if self._host_io is not None and self._host_io.host:
            full = self._host_io.convert(full)
        results = exe.run(full)
        self._check_outputs(spec, results)
        if spec.name in self._guards:
            check_guards(self._guards[spec.name], results)
            hidden = guard_names(self._guards, spec.name)
            results = {k: v for k, v in results.items() if k not in hidden}
        if self._fp16 and spec.name not in self.nonfinite:
            self._diagnose_nonfinite(spec, full, results)
        if self._host_io is not None and self._host_io.host:
            results = self._host_io.convert(results)
        self.last_latency_s = time.perf_counter() - start
        self.last_specialization = spec.name
        held_out = set()
        for inp, out in self.retained:
            self._state[inp] = results[out]
            held_out.add(out)
        return {d.name: results[d.name] for d in spec.outputs if d.name not in held_out}

    def _diagnose_nonfinite(self, spec: SpecInfo, feeds: Mapping[str, np.ndarray],
                            results: Mapping[str, np.ndarray]) -> None:
        """Non-finite values from finite inputs in an fp16 program (in its outputs, or inside it
        when the backend watches, as the interpreter does): warn once per specialization, naming
        the node that first produced one (see ``aicc.nonfinite``)."""
        from .nonfinite import describe, first_nonfinite, nonfinite_outputs

        if nonfinite_outputs(feeds):
            return
        bad = nonfinite_outputs(results)
        first = self._executables[spec.name].first_nonfinite()
        error = None
        if not bad and first is None:
            return
        if first is None:
            try:
                model = load_spec_model(self.path, spec.folder, external_data=spec.external_data,
                                        files=self.files)
                first = first_nonfinite(model, feeds,
                                        backends=Observers(self.registries.backends))
            except AiccError as e:
                error = str(e).splitlines()[0]
        self.nonfinite[spec.name] = {"outputs": bad, "first": first}
        logger.warning(describe(f"specialization '{spec.name}'", bad, first, error))

    def _with_state(self, feeds: Mapping[str, np.ndarray]) -> tuple[SpecInfo, dict]:
        probe = dict(feeds)
        for inp, _ in self.retained:
            if inp not in probe and inp in self._state:
                probe[inp] = self._state[inp]
        spec = self.select(probe)
        absent = [i for i, _ in self.retained if i not in probe]
        if absent:
            fits = [s for s in self.specs if s.matches(probe)]
            shapes = {s.name: [d.shape for d in s.inputs if d.name in absent] for s in fits}
            if len({repr(v) for v in shapes.values()}) > 1:
                raise DataError("the feeds fit specializations " + ", ".join(shapes) +
                                " whose retained-state shapes differ", where="feeds",
                                hint="pass the state inputs (e.g. zeros) on the first run to "
                                     "choose one")
            descs = {d.name: d for d in spec.inputs}
            for name in absent:
                desc = descs[name]
                if not desc.is_static():
                    raise DataError(f"retained-state input '{name}' has no static shape in "
                                    f"specialization '{spec.name}' ({_shape_text(desc.shape)})",
                                    where="feeds", hint="pass it explicitly on the first run")
                probe[name] = np.zeros(desc.shape, np.dtype(desc.dtype))
        return spec, {d.name: probe[d.name] for d in spec.inputs}

    def _check_outputs(self, spec: SpecInfo, results: Mapping[str, Any]) -> None:
        outputs = spec.graph_outputs if spec.graph_outputs is not None else spec.outputs
        check_backend_outputs(f"backend '{self.backend_name}'", outputs, results)

    def stats(self) -> dict[str, Any]:
        return {name: exe.stats() for name, exe in self._executables.items()}


def check_backend_outputs(who: str, outputs: list[TensorDesc], results: Any) -> None:
    """The backend contract: exactly the graph's outputs, as numpy arrays of the declared dtype
    and (static dims of the) shape; anything else is a BackendError naming ``who``."""
    expected = [d.name for d in outputs]
    if not isinstance(results, Mapping) or sorted(results) != sorted(set(expected)):
        got = sorted(results) if isinstance(results, Mapping) else type(results).__name__
        raise BackendError(f"{who} returned outputs {got}, expected {expected}")
    for desc in outputs:
        arr = results[desc.name]
        try:
            want = np.dtype(desc.dtype)
        except TypeError:  # a dtype the program does not know ("unknown"): any array will do
            want = getattr(arr, "dtype", None)
        if not isinstance(arr, np.ndarray) or arr.dtype != want:
            raise BackendError(f"{who} returned output '{desc.name}' as "
                               f"{getattr(arr, 'dtype', type(arr).__name__)}, "
                               f"expected {desc.dtype}")
        if desc.shape is not None and (len(arr.shape) != len(desc.shape) or any(
                isinstance(d, int) and d >= 0 and d != s
                for d, s in zip(desc.shape, arr.shape))):
            raise BackendError(f"{who} returned output '{desc.name}' of shape "
                               f"{list(arr.shape)}, expected {_shape_text(desc.shape)}")


def load(path: str | Path, backend: str | None = None, **kwargs: Any) -> Session:
    """Open a compiled container; ``backend`` overrides the one it was compiled for."""
    return Session(path, backend, **kwargs)
