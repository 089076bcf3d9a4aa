"""Running a compiled container: a Session picks the specialization whose input shapes match.

Feeds are checked before anything runs: names, dtypes (nothing is converted that the program was
not told to convert) and shapes. Outputs are checked against the backend contract (names, dtypes,
static dims), so a plugin backend that returns the wrong thing is named.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backend import Executable
from .container import load_spec_model, read_manifest
from .errors import BackendError, DataError
from .options import build_options
from .plugins import Registries, load_registries
from .program import TensorDesc

__all__ = ["Session", "SpecInfo", "load"]

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

    def matches(self, feeds: Mapping[str, np.ndarray]) -> bool:
        for desc in self.inputs:
            arr = feeds[desc.name]
            if desc.shape is None:
                continue
            if len(arr.shape) != len(desc.shape):
                return False
            if any(isinstance(d, int) and d >= 0 and d != s for d, s in zip(desc.shape, arr.shape)):
                return False
        return True


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
        self.specs = [SpecInfo(name=s["name"], folder=s["folder"], symbols=s.get("symbols", {}),
                               inputs=[TensorDesc.from_json(t) for t in s["inputs"]],
                               outputs=[TensorDesc.from_json(t) for t in s["outputs"]],
                               options=s.get("options", {}))
                      for s in self.manifest["specializations"]]
        self._executables: dict[str, Executable] = {}
        self.last_specialization: str | None = None
        self.last_latency_s: float = 0.0

    @property
    def inputs(self) -> list[TensorDesc]:
        return self.specs[0].inputs

    @property
    def outputs(self) -> list[TensorDesc]:
        return self.specs[0].outputs

    def executable(self, spec: SpecInfo) -> Executable:
        if spec.name not in self._executables:
            model = load_spec_model(self.path, spec.folder)
            self._executables[spec.name] = self.backend.load(
                self.path / spec.folder, model, program_meta=self.program_meta,
                spec_options=spec.options)
        return self._executables[spec.name]

    def select(self, feeds: Mapping[str, np.ndarray]) -> SpecInfo:
        """The specialization whose inputs match the feeds' names, dtypes and shapes."""
        names = [d.name for d in self.inputs]
        missing = [n for n in names if n not in feeds]
        if missing:
            raise DataError(f"missing input(s) {', '.join(missing)}", where="feeds",
                            hint=f"the program's inputs: {', '.join(names)}")
        extra = [n for n in feeds if n not in names]
        if extra:
            raise DataError(f"unknown input(s) {', '.join(extra)}", where="feeds",
                            hint=f"the program's inputs: {', '.join(names)}")
        for desc in self.inputs:
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
                                                   for d in s.inputs) for s in self.specs)
        got = ", ".join(f"{n}{_shape_text(list(feeds[n].shape))}" for n in names)
        raise DataError(f"no specialization takes {got}", where="feeds",
                        hint=f"available: {have}")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the matching specialization; outputs are checked against the contract."""
        spec = self.select(feeds)
        exe = self.executable(spec)
        start = time.perf_counter()
        results = exe.run({d.name: feeds[d.name] for d in spec.inputs})
        self.last_latency_s = time.perf_counter() - start
        self.last_specialization = spec.name
        self._check_outputs(spec, results)
        return {d.name: results[d.name] for d in spec.outputs}

    def _check_outputs(self, spec: SpecInfo, results: Mapping[str, Any]) -> None:
        who = f"backend '{self.backend_name}'"
        expected = [d.name for d in spec.outputs]
        if not isinstance(results, Mapping) or sorted(results) != sorted(set(expected)):
            got = sorted(results) if isinstance(results, Mapping) else type(results).__name__
            raise BackendError(f"{who} returned outputs {got}, expected {expected}")
        for desc in spec.outputs:
            arr = results[desc.name]
            if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(desc.dtype):
                raise BackendError(f"{who} returned output '{desc.name}' as "
                                   f"{getattr(arr, 'dtype', type(arr).__name__)}, "
                                   f"expected {desc.dtype}")
            if desc.shape is not None and (len(arr.shape) != len(desc.shape) or any(
                    isinstance(d, int) and d >= 0 and d != s
                    for d, s in zip(desc.shape, arr.shape))):
                raise BackendError(f"{who} returned output '{desc.name}' of shape "
                                   f"{list(arr.shape)}, expected {_shape_text(desc.shape)}")

    def stats(self) -> dict[str, Any]:
        return {name: exe.stats() for name, exe in self._executables.items()}


def load(path: str | Path, backend: str | None = None, **kwargs: Any) -> Session:
    """Open a compiled container; ``backend`` overrides the one it was compiled for."""
    return Session(path, backend, **kwargs)
