"""The backend contract: a backend lowers one graph of a Program into an Executable that runs it.

Backends are plugins (``aicc_register_backends``). The framework, not the backend, writes the lowered
graph (``model.onnx``) into each specialization's folder of the container; an Executable adds its own
artifacts beside it with ``save`` and is rebuilt from that folder with ``Backend.load``.

A backend may also *observe*: run a graph while showing chosen intermediate tensors to a callback
(``Backend.observation`` -> ``Observation``). Calibration, the fp16 overflow check, the non-finite
diagnosis and ``--verify-each=numeric`` use it by backend name through ``Observers`` (the backend
registry), so no pass imports a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from .errors import BackendError
from .options import NoOptions, build_options

__all__ = ["Backend", "Executable", "Observation", "Observe", "Observers"]

#: ``observe(name, array)``: called once per run for each observed tensor; the array belongs to
#: the backend and must not be modified (copy it to keep a changed version).
Observe = Callable[[str, np.ndarray], None]


class Observation:
    """One graph prepared to run while showing intermediate tensors (``Backend.observation``).

    ``names`` are the tensors each run shows: those asked for that the backend can see (a
    backend sees graph inputs and node outputs; the interpreter also sees tensors inside
    control-flow bodies as ``node/tensor``), or every one it can see when none were named.
    ``in_order`` is True when a run calls ``observe`` as tensors are produced, in execution
    order (every tensor after the tensors it was computed from), False when it calls it after
    the run, in the order of ``names``.
    """

    names: tuple[str, ...] = ()
    in_order: bool = False

    def run(self, feeds: Mapping[str, np.ndarray],
            observe: Observe | None = None) -> dict[str, np.ndarray]:
        """Run once on ``feeds``: ``observe(name, array)`` for each of ``names`` (when given);
        return the graph outputs. A failure to run raises BackendError."""
        raise NotImplementedError


class Executable:
    """One compiled graph, ready to run.

    ``run`` takes and returns numpy arrays keyed by the graph's input/output names; it must return
    exactly the graph's outputs, with the declared dtypes. The framework checks this contract on
    every call and names the backend when it is broken.
    """

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Backend-specific statistics of the last runs (may be empty)."""
        return {}

    def first_nonfinite(self) -> dict[str, Any] | None:
        """For a backend that watches its tensors (the interpreter, in fp16 programs): the first
        node whose output held inf/NaN so far, as ``{"node", "op", "tensor", "count",
        "max_abs_input"}``; None when none did or the backend does not watch."""
        return None

    def save(self, folder: Path) -> list[str]:
        """Write backend artifacts (beside ``model.onnx``) into ``folder``; return their names."""
        return []


class Backend:
    """A target: declares what it supports, compiles a graph, reloads a compiled one.

    Subclasses set ``name`` (kebab-case, unique), ``description`` and ``Options`` (an options
    dataclass, see ``aicc.options``), and implement ``compile`` and ``load``.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    #: element types the backend computes in (numpy names); checked before compiling.
    dtypes: ClassVar[frozenset[str]] = frozenset()
    #: how the backend computes the fp16 nodes of a program, in one sentence (``aicc backends``)
    fp16_compute: ClassVar[str] = "every fp16 op in fp16, as the device does"
    #: False when its fp16 results can differ from the device's (``aicc run`` then says so)
    fp16_as_device: ClassVar[bool] = True
    #: True when ``observation`` is implemented (intermediate tensors can be observed)
    observes: ClassVar[bool] = False

    def __init__(self, options: Any = None):
        self.options = options if options is not None else self.Options()

    def unsupported_nodes(self, model: onnx.ModelProto) -> list[str]:
        """Describe every node this backend cannot run (``"node 'x' (OpType)"``); empty if none.

        ``aicc compile`` calls this before any work, so users learn at once what will not run.
        """
        return []

    def compile(self, model: onnx.ModelProto, *, program_meta: Mapping[str, Any],
                spec_options: Mapping[str, Any]) -> Executable:
        """Lower one graph (an exported, valid ONNX model) into an Executable.

        ``program_meta`` is the Program's metadata (encodings, precisions, custom I/O) and
        ``spec_options`` the per-specialization options (e.g. ``ols``).
        """
        raise NotImplementedError

    def load(self, folder: Path, model: onnx.ModelProto, *, program_meta: Mapping[str, Any],
             spec_options: Mapping[str, Any]) -> Executable:
        """Rebuild an Executable from a container folder written by ``Executable.save``.

        The default compiles ``model`` again, which suits backends with no artifacts of their own.
        """
        return self.compile(model, program_meta=program_meta, spec_options=spec_options)

    def observation(self, model: onnx.ModelProto,
                    names: Iterable[str] | None = None) -> Observation:
        """``model`` prepared to run while showing the tensors ``names`` (None: every tensor
        this backend can show); names it cannot see (initializers, unknown names) are left out
        of ``Observation.names``. Backends that cannot observe (``observes`` False) refuse."""
        raise BackendError(f"backend '{self.name}' cannot observe intermediate tensors",
                           hint="observe on the interpreter or cpu backend")


class Observers:
    """Observation by backend name, through the backend registry.

    Passes get one as ``PassContext.observers``; instruments and the runtime build one from
    their registries. Choosing a backend to observe on is thus a name (``interpreter``,
    ``cpu``, a plugin's), never an import. Without a registry, the built-in plugins are loaded
    when first needed (a pass run outside a pipeline, ``calibrate_program`` called directly)
    and kept for the process.
    """

    def __init__(self, backends: Any = None):
        self._backends = backends

    @property
    def backends(self) -> Any:
        """The backend registry (``aicc.registry.Registry``)."""
        if self._backends is None:
            self._backends = _default_backends()
        return self._backends

    def can_observe(self, backend: str) -> bool:
        """True when ``backend`` is registered and implements ``observation``."""
        return backend in self.backends and bool(self.backends.get(backend).cls.observes)

    def observation(self, backend: str, model: onnx.ModelProto,
                    names: Iterable[str] | None = None, *,
                    options: Mapping[str, Any] | None = None) -> Observation:
        """``Backend.observation`` of the backend registered as ``backend``, built with
        ``options`` (validated like the CLI's backend options). PluginError for an unknown
        name, BackendError for a backend that cannot observe or cannot load ``model``."""
        cls = self.backends.get(backend).cls
        if not cls.observes:
            raise BackendError(f"backend '{backend}' cannot observe intermediate tensors",
                               hint="backends that observe: " + ", ".join(
                                   n for n in self.backends.names()
                                   if self.backends.get(n).cls.observes))
        instance = cls(build_options(cls.Options, options, owner=f"backend '{backend}'"))
        return instance.observation(model, names)


_DEFAULT_BACKENDS: dict[str | None, Any] = {}


def _default_backends() -> Any:
    """The backend registry of the default plugins, loaded once per process (and per value of
    the variable that turns off entry-point plugins)."""
    import os

    from .plugins import AUTOLOAD_ENV, load_registries

    key = os.environ.get(AUTOLOAD_ENV)
    if key not in _DEFAULT_BACKENDS:
        _DEFAULT_BACKENDS[key] = load_registries().backends
    return _DEFAULT_BACKENDS[key]
