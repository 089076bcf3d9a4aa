"""The custom I/O template (``-dump-custom-IO-config-template``): the model's inputs and outputs in,
a YAML list that changes nothing when applied as is out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..fileio import write_text_atomic
from ..program import TensorDesc
from .vocabulary import MODEL_PRECISION

__all__ = ["template_entries", "write_template"]


def template_entries(inputs: Sequence[TensorDesc], outputs: Sequence[TensorDesc],
                     qparams: dict[str, tuple[float, int]] | None = None
                     ) -> list[dict[str, Any]]:
    """One entry per model input and output that leaves it unchanged when applied as is.

    Layout appears for rank-4 tensors (NCHW), Precision for float/float16/int8 tensors (int8 only
    when its scale and offset are known); ``qparams`` (tensor -> (scale, offset), vendor
    convention) fills Scale and Offset, e.g. from a calibration profile.
    """
    qparams = qparams or {}
    out = []
    for desc in list(inputs) + list(outputs):
        entry: dict[str, Any] = {"IOName": desc.name}
        if desc.shape is not None and len(desc.shape) == 4:
            entry["Layout"] = "NCHW"
        precision = MODEL_PRECISION.get(desc.dtype)
        if precision == "int8" and desc.name not in qparams:
            precision = None
        if precision:
            entry["Precision"] = precision
        if desc.name in qparams and precision:
            scale, offset = qparams[desc.name]
            entry["Scale"] = float(scale)
            entry["Offset"] = int(offset)
        out.append(entry)
    return out


def write_template(path: str | Path, entries: list[dict[str, Any]], *, model: str) -> Path:
    """Write the template YAML (with a header explaining the fields) atomically."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError("is a directory", where=path, hint="name a file for the template")
    if not path.resolve().parent.is_dir():
        raise ConfigError("parent folder does not exist", where=path)
    header = (f"# aicc custom I/O configuration template for {model}\n"
              "# One entry per model input and output; applied as is, it changes nothing.\n"
              "# Layout: NCHW or NHWC (rank-4 tensors only).\n"
              "# Precision: float, float16, int8 (needs Scale and Offset: real = (q - Offset) * "
              "Scale)\n#   or mxint8 (KV caches). Delete entries you do not change.\n")
    body = yaml.safe_dump(entries, sort_keys=False, default_flow_style=False) if entries else "[]\n"
    return write_text_atomic(path, header + body)
