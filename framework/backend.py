"""The backend contract: a backend lowers one graph of a Program into an Executable that runs it.

Backends are plugins (``aicc_register_backends``). The framework, not the backend, writes the lowered
graph (``model.onnx``) into each specialization's folder of the container; an Executable adds its own
artifacts beside it with ``save`` and is rebuilt from that folder with ``Backend.load``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from .options import NoOptions

__all__ = ["Backend", "Executable"]


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
