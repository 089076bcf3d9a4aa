"""Running the conversions on the host: planned steps and arrays in, converted arrays out, and a
Session's view of a container's custom I/O (``HostConversions``).

``apply_steps`` computes exactly what the graph nodes of ``-aic-preproc`` compute (every step in
float32), so host and device conversions give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..program import TensorDesc
from .mxint8 import mx_decode, mx_encode
from .plan import custom_desc

__all__ = ["apply_steps", "HostConversions"]


def apply_steps(steps: Sequence[dict[str, Any]], arr: np.ndarray) -> np.ndarray:
    """Run conversion steps in numpy, computing exactly what the graph nodes compute."""
    for step in steps:
        op = step["op"]
        if op == "transpose":
            arr = np.ascontiguousarray(np.transpose(arr, step["perm"]))
        elif op == "cast":
            arr = arr.astype(step["to"])
        elif op == "dequantize":
            arr = ((arr.astype(np.int32) - np.int32(step["zero_point"])).astype(np.float32)
                   * np.float32(step["scale"]))
        elif op == "quantize":
            with np.errstate(invalid="ignore", over="ignore"):
                q = np.rint(arr.astype(np.float32) / np.float32(step["scale"]))
                q = np.clip(q + np.float32(step["zero_point"]), -128, 127)
            arr = q.astype(np.int8)
        elif op == "mx_decode":
            arr = mx_decode(arr, int(step["length"]), int(step["block"]))
        elif op == "mx_encode":
            arr = mx_encode(arr, int(step["block"]))
        else:  # pragma: no cover - steps come from plan_steps
            raise ValueError(f"unknown conversion step {op!r}")
    return arr


class HostConversions:
    """A Session's view of a container's custom I/O (``program.custom_io`` in the manifest).

    Records with ``conversions: host`` (compiled without -aic-preproc) map the graph's model I/O
    to the custom tensors callers use, and ``convert`` runs their steps in numpy; records with
    ``conversions: device`` describe graph I/O that already are the custom ones (``interface``
    only adds their layout).
    """

    def __init__(self, records: Sequence[dict[str, Any]]):
        self.records = {r["name"]: r for r in records}
        self.host = {n: r for n, r in self.records.items() if r.get("conversions") == "host"}

    @classmethod
    def from_meta(cls, program_meta: dict[str, Any]) -> HostConversions | None:
        records = list(program_meta.get("custom_io") or [])
        return cls(records) if records else None

    def interface(self, descs: Sequence[TensorDesc]) -> list[TensorDesc]:
        """The custom descriptors callers see in place of the graph's ``descs``."""
        out = []
        for d in descs:
            record = self.records.get(d.name)
            if record is None:
                out.append(d)
            elif d.name in self.host:
                out.append(custom_desc(d, record))
            else:
                layout = (record.get("layout") or "NCHW") if d.shape is not None and \
                    len(d.shape) == 4 and record.get("precision") != "mxint8" else d.layout
                out.append(TensorDesc(d.name, d.dtype, d.shape, layout))
        return out

    def convert(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Apply the host steps to the tensors that have them (inputs: custom -> model;
        outputs: model -> custom); other tensors pass unchanged."""
        return {n: apply_steps(self.host[n]["steps"], a) if n in self.host else a
                for n, a in arrays.items()}
