"""aicc: an open compiler framework taking ONNX models to AI-core accelerators.

The Python API::

    import aicc
    qpc = aicc.compile("model.onnx", backend="cpu", output="model.qpc")
    session = aicc.load(qpc)
    outputs = session.run({"image": batch})
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Users' models and machines are private: onnxruntime, which aicc drives for the cpu backend and
# for constant folding, fp16 checks and calibration, sends no telemetry from an aicc process
# (unless the user set the variable otherwise); the cpu backend also turns its events off.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .backend import Backend, Executable  # noqa: E402
from .errors import AiccError  # noqa: E402
from .generate import generate  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .options import option  # noqa: E402
from .pass_base import Pass, PassContext, Tolerance  # noqa: E402
from .pipeline import Instrument, Pipeline  # noqa: E402
from .program import Program  # noqa: E402
from .runtime import Session, load  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ["compile", "load", "generate", "Session", "Pass", "PassContext", "Tolerance",
           "Program", "Backend", "Executable", "Instrument", "Pipeline", "hookimpl", "option",
           "AiccError", "__version__"]


def compile(model: Any, *, backend: str = "cpu", pipeline: Any = None, output: Any = None,
            symbols: Mapping[str, int] | Sequence[str] = (), batchsize: int = 0,
            backend_options: Mapping[str, Any] | None = None,
            instruments: Sequence[str | tuple[str, Mapping[str, Any]]] = (),
            plugins: Sequence[str | Path] = (), specializations: str | Path | None = None,
            retained_state: bool = False, dask: Any = None) -> Path:
    """Compile an ONNX model (path, bytes or ModelProto) into a container; return its path.

    ``pipeline`` is a list of pass names / ``(name, options)`` pairs, a pipeline file, or None for
    the default. ``symbols`` binds symbolic dimensions (``{"batch": 4}``). ``specializations`` is
    a network specialization config (JSON), ``retained_state`` keeps ``*_RetainedState`` outputs
    in the session (both as the CLI flags). ``dask`` (``"local:N"``, a scheduler address or a
    ``distributed.Client``) compiles several specializations in parallel there; the container is
    the same bytes. Without ``output`` the container goes to a new temporary folder.
    """
    from .compiler import CompileRequest, compile_model

    if isinstance(symbols, Mapping):
        symbols = [f"{k}={v}" for k, v in symbols.items()]
    if output is None:
        output = Path(tempfile.mkdtemp(prefix="aicc-")) / "program.qpc"
    req = CompileRequest(model=model, backend=backend, backend_options=dict(backend_options or {}),
                         pipeline=pipeline, output=output, symbols=list(symbols),
                         batchsize=batchsize,
                         instruments=[(i, {}) if isinstance(i, str) else i for i in instruments],
                         plugins=list(plugins), retained_state=retained_state, dask=dask)
    if specializations is not None:
        from .specconfig import parse_specialization_config
        parse_specialization_config(specializations)  # refuse a bad file before any work
        req.feature_steps.append(("specialize", "specialize", {"config": str(specializations)}))
    path, _, _ = compile_model(req)
    assert path is not None
    return path
