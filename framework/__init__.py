"""aicc: an open compiler framework taking ONNX models to AI-core accelerators.

The Python API::

    import aicc
    qpc = aicc.compile("model.onnx", backend="cpu", output="model.qpc")
    session = aicc.load(qpc)
    outputs = session.run({"image": batch})
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Users' models and machines are private: onnxruntime, which aicc drives for the cpu backend and
# for constant folding, fp16 checks and calibration, sends no telemetry from an aicc process
# (unless the user set the variable otherwise); the cpu backend also turns its events off.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .backend import Backend, Executable  # noqa: E402
from .errors import AiccError, ConfigError  # noqa: E402
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


def compile(model: Any = None, *, config: str | Path | None = None, output: Any = None,
            plugins: Sequence[str | Path] = (), backend: str | None = None,
            **options: Any) -> Path | None:
    """Compile an ONNX model (path, bytes or ModelProto) into a container; return its path.

    Every option ``aicc compile`` takes as a flag is a keyword here, by its Python name (``aicc
    options`` lists them with their flags): ``target="aic100"`` (or ``backend=``),
    ``num_cores=4``, ``fp16=True``, ``custom_io="io.yaml"``, ``specializations="spec.json"``,
    ``quantization=dict(profile=["p.yaml"], per_channel=True)``, ``pipeline=[...]``,
    ``symbols={"batch": 4}``, ... ``config`` is a compile config file holding the same keys
    (keywords given here too are refused as a contradiction). ``plugins`` adds plugin files,
    whose options are keywords too. Without ``output`` the container goes to a new temporary
    folder. Returns None when nothing is compiled (``quantization=dict(dump_profile=...)``
    alone writes the profile only, as the vendor tool does).
    """
    from .compiler import compile_model, configure
    from .config import CompileConfig
    from .plugins import load_registries

    registries = load_registries(plugins)
    if backend is not None:
        if "target" in options:
            raise ConfigError("backend= and target= both given; they name the same option",
                              hint="give one of them")
        options["target"] = backend
    if model is not None:
        options["model"] = model
    if isinstance(options.get("symbols"), Mapping):
        options["symbols"] = [f"{k}={v}" for k, v in options["symbols"].items()]
    given = CompileConfig.from_python(registries.options, options)
    if config is not None:
        given = CompileConfig.from_file(registries.options, config).merged(given)
    dump_only = given.given("quantization.dump_profile") and not any(
        given.given(f"quantization.{k}") for k in ("calibrate", "profile", "encodings"))
    if given.get("model") is None:
        raise ConfigError("no model given", hint="aicc.compile('model.onnx', ...)")
    folder = None
    if given.get("output") is None and output is None and not dump_only:
        folder = Path(tempfile.mkdtemp(prefix="aicc-"))
        output = folder / "program.qpc"
    if output is not None:
        given = given.merged(CompileConfig.from_python(registries.options, {"output": output}))
    try:
        path, _, _ = compile_model(configure(given, registries, list(plugins)), registries)
    except BaseException:
        if folder is not None:  # the folder was ours and holds no program: leave nothing behind
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return path
