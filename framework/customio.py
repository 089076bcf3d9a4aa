"""Custom I/O: the YAML list (IOName, Layout, Precision, Scale, Offset) in; validated entries, the
custom tensor descriptors, the conversion steps and their numpy (host) execution out.

The file format is the vendor's (``seeds/custom-io.txt``)::

    - IOName: input_0
      Layout: NHWC          # NCHW or NHWC, rank-4 tensors only
      Precision: int8       # float, float16, int8, or mxint8 (KV-cache tensors)
      Scale: 0.12           # int8 only: real = (q - Offset) * Scale
      Offset: 3

Conventions:

- The model's rank-4 I/O are taken to be NCHW (the ONNX convention); ``Layout: NHWC`` adds a
  Transpose at the boundary, ``Layout: NCHW`` changes nothing.
- Scale/Offset follow the vendor (Glow lineage) convention ``real = (q - Offset) * Scale``, which is
  ONNX's ``zero_point = Offset``; ``Offset`` must fit int8.
- ``mxint8`` (block-scaled int8, OCP microscaling MXINT8): the custom tensor's last axis (C with
  ``Layout: NHWC``) is cut into blocks of ``MX_BLOCK = 32`` values (the last block zero-padded).
  Each block stores one shared exponent byte ``E`` (E8M0: the block scale is ``2^(E - 127)``),
  then 32 int8 mantissas ``m`` (two's complement) with 6 fraction bits, so a value is
  ``m * 2^(E - 127 - 6)``. ``E`` is ``floor(log2(max |x|)) + 127`` over the block (clamped to
  [0, 254]; 0 for an all-zero block) and ``m = clip(round_half_even(x / 2^(E - 133)), -127, 127)``.
  ONNX has no such type, so the custom tensor is a **uint8 tensor of shape [..., blocks, 33]**
  (byte 0 of each block the exponent, bytes 1..32 the mantissas' bytes), and the graph decodes /
  encodes it with standard ops (Slice, Gather from a table of powers of two, Where, Reshape; the
  rounding is a QuantizeLinear with scale 1). A round trip errs by at most half a step,
  ``2^(E - 134) <= max|x| / 128`` per block; a value at the very top of a block, where ``m`` would
  be 128, saturates to 127 and loses at most one step. NaN and infinities are not representable.

Each entry becomes a list of **steps** (``transpose``, ``cast``, ``quantize``, ``dequantize``,
``mx_decode``, ``mx_encode``): for an input from the custom tensor to the model's, for an output
from the model's tensor to the custom one. The ``custom-io`` pass either builds them as graph nodes
(``-aic-preproc``: conversions on the device) or leaves the graph alone and records them in the
manifest, where ``aicc.runtime.Session`` runs them in numpy on the host (``apply_steps``). Both give
the same numbers: every step is computed the same way in float32.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .configfile import load_yaml
from .errors import ConfigError, DataError, did_you_mean
from .program import TensorDesc

__all__ = ["CustomIOEntry", "load_custom_io", "parse_custom_io", "custom_desc", "plan_steps",
           "apply_steps", "mx_encode", "mx_decode", "mx_step_table", "write_template",
           "template_entries", "PRECISIONS", "LAYOUTS", "KEYS", "MX_BLOCK", "NCHW_TO_NHWC",
           "NHWC_TO_NCHW", "HostConversions"]

logger = logging.getLogger(__name__)

KEYS = ("IOName", "Layout", "Precision", "Scale", "Offset")
PRECISIONS = ("float", "float16", "int8", "mxint8")
LAYOUTS = ("NCHW", "NHWC")
MX_BLOCK = 32
NHWC_TO_NCHW = [0, 3, 1, 2]
NCHW_TO_NHWC = [0, 2, 3, 1]

_REFUSED = {
    "uint8": "uint8 is not supported with custom I/O (convert uint8 to int8 on the host or the "
             "device)",
    "int64": "int64, int32 and int16 are not supported with custom I/O",
    "int32": "int64, int32 and int16 are not supported with custom I/O",
    "int16": "int64, int32 and int16 are not supported with custom I/O",
}
#: numpy dtype of each custom precision (mxint8 travels as bytes, see the module docstring)
_CUSTOM_DTYPE = {"float": "float32", "float16": "float16", "int8": "int8", "mxint8": "uint8"}
#: model dtypes whose precision may change, and the custom precision naming them
_MODEL_PRECISION = {"float32": "float", "float16": "float16", "int8": "int8"}


@dataclasses.dataclass(frozen=True)
class CustomIOEntry:
    """One validated entry: which model input or output, and its custom layout and precision.

    ``scale``/``offset`` are kept only for int8 (vendor convention ``real = (q - offset) * scale``).
    ``entry`` is the 1-based position of the entry in the file (the first, for merged repeats).
    """

    name: str
    direction: str
    layout: str | None = None
    precision: str | None = None
    scale: float | None = None
    offset: int | None = None
    entry: int = 0

    def settings(self) -> tuple:
        return (self.layout, self.precision, self.scale, self.offset)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _where_entry(i: int, name: Any) -> str:
    return f"entry {i}" + (f" (IOName '{name}')" if isinstance(name, str) and name else "")


def _number(value: Any, path: Path, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = "write a number such as 0.12" + (
            " (quote-free)" if isinstance(value, str) else "")
        raise ConfigError(f"Scale must be a number, got {type(value).__name__} {value!r}",
                          where=path, field=field, hint=hint)
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"Scale must be a positive finite number, got {value}", where=path,
                          field=field)
    return value


def _offset(value: Any, path: Path, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"Offset must be an integer, got {type(value).__name__} {value!r}",
                          where=path, field=field, hint="int8 offsets are integers in [-128, 127]")
    if not -128 <= value <= 127:
        raise ConfigError(f"Offset {value} is outside the int8 range [-128, 127]", where=path,
                          field=field)
    return value


def parse_custom_io(data: Any, path: str | Path, inputs: Sequence[TensorDesc] | None,
                    outputs: Sequence[TensorDesc] | None, *, external_quantization: bool = False,
                    notes: list[str] | None = None) -> list[CustomIOEntry]:
    """Validate a loaded custom I/O document against the model's I/O (every rule of the seed).

    With ``inputs``/``outputs`` None only the file itself is checked (keys, types, values,
    repeats), as the CLI does before any work starts; the pass checks against the model.
    With ``external_quantization``, int8 entries need no Scale/Offset (the external encodings
    supply them) and any given are ignored. Merged repeats and ignored fields are appended to
    ``notes`` (and logged).
    """
    model_known = inputs is not None and outputs is not None
    inputs, outputs = list(inputs or []), list(outputs or [])
    path = Path(path)
    notes = notes if notes is not None else []
    if not isinstance(data, list):
        raise ConfigError(f"expected a list of entries (- IOName: ...), got {type(data).__name__}",
                          where=path, hint="see -dump-custom-IO-config-template for the format")
    if not data:
        raise ConfigError("the file lists no entries", where=path,
                          hint="list the inputs and outputs to change, or drop the flag")
    by_name = {d.name: ("input", d) for d in inputs}
    for d in outputs:
        if d.name in by_name:
            by_name[d.name] = ("both", d)
        else:
            by_name[d.name] = ("output", d)
    result: dict[str, CustomIOEntry] = {}
    for i, raw in enumerate(data, start=1):
        if not isinstance(raw, dict):
            raise ConfigError(f"expected a mapping (IOName, Layout, Precision, Scale, Offset), got "
                              f"{type(raw).__name__} {raw!r}", where=path, field=f"entry {i}")
        name = raw.get("IOName")
        field = _where_entry(i, name)
        for key in raw:
            if key not in KEYS:
                same = [k for k in KEYS if k.lower() == str(key).lower()]
                raise ConfigError(f"unknown key {key!r}", where=path, field=field,
                                  hint=f"did you mean '{same[0]}'? keys are case-sensitive"
                                  if same else did_you_mean(str(key), KEYS))
        if "IOName" not in raw:
            raise ConfigError("missing IOName", where=path, field=field)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"IOName must be a non-empty string, got {name!r}", where=path,
                              field=field, hint="quote names that look like numbers")
        if not model_known:
            by_name.setdefault(name, ("input", TensorDesc(name, "float32", None)))
        if name not in by_name:
            close = did_you_mean(name, by_name)
            raise ConfigError(
                "no such model input or output", where=path, field=field,
                hint=(f"{close} " if close.startswith("did") else "")
                + f"inputs are {', '.join(d.name for d in inputs) or 'none'}; outputs are "
                  f"{', '.join(d.name for d in outputs) or 'none'}")
        direction, desc = by_name[name]
        if direction == "both":
            raise ConfigError(f"'{name}' is both a model input and a model output; custom I/O "
                              "cannot change one side only", where=path, field=field)
        layout = raw.get("Layout")
        rank = None if desc.shape is None else len(desc.shape)
        if layout is not None:
            if not isinstance(layout, str) or layout not in LAYOUTS:
                raise ConfigError(f"Layout {layout!r} is not supported", where=path, field=field,
                                  hint="NCHW or NHWC; skip the field for other layouts")
            if rank != 4 and model_known:
                raise ConfigError(f"Layout applies only to rank-4 tensors; '{name}' has "
                                  f"{'unknown rank' if rank is None else f'rank {rank}'}",
                                  where=path, field=field, hint="skip the Layout field")
        precision = raw.get("Precision")
        if precision is not None:
            if not isinstance(precision, str):
                raise ConfigError(f"Precision must be a string, got {precision!r}", where=path,
                                  field=field, hint=f"one of {', '.join(PRECISIONS)}")
            if precision in _REFUSED:
                raise ConfigError(f"Precision {precision} is refused: {_REFUSED[precision]}",
                                  where=path, field=field, hint=f"one of {', '.join(PRECISIONS)}")
            if precision not in PRECISIONS:
                raise ConfigError(f"Precision {precision!r} is not supported", where=path,
                                  field=field, hint=did_you_mean(precision, PRECISIONS))
            if not model_known:
                pass
            elif desc.dtype not in _MODEL_PRECISION:
                raise ConfigError(f"Precision can change only for float, float16 or int8 model "
                                  f"I/O; '{name}' is {desc.dtype}", where=path, field=field,
                                  hint="skip the Precision field for this tensor")
            if precision == "mxint8" and model_known:
                if desc.dtype == "int8":
                    raise ConfigError("mxint8 applies to float or float16 tensors (KV caches); "
                                      f"'{name}' is int8", where=path, field=field)
                axis = 1 if layout == "NHWC" else -1
                if not desc.shape or not isinstance(desc.shape[axis], int):
                    raise ConfigError(f"mxint8 needs a static size along the blocked (last) axis; "
                                      f"'{name}' has shape {desc.shape}", where=path, field=field,
                                      hint="bind the symbol with -onnx-define-symbol")
        scale, offset = raw.get("Scale"), raw.get("Offset")
        if scale is not None:
            scale = _number(scale, path, f"{field}: Scale")
        if offset is not None:
            offset = _offset(offset, path, f"{field}: Offset")
        if precision == "int8" and not external_quantization:
            missing = [k for k, v in (("Scale", scale), ("Offset", offset)) if v is None]
            if missing:
                raise ConfigError(f"Precision int8 needs Scale and Offset; {' and '.join(missing)} "
                                  "missing", where=path, field=field,
                                  hint="real = (q - Offset) * Scale; see "
                                       "-dump-custom-IO-config-template=FILE,PROFILE")
        elif scale is not None or offset is not None:
            why = ("external quantization supplies them" if precision == "int8"
                   else f"they apply only to int8, not {precision or 'an unchanged precision'}")
            _note(notes, f"{path}: {field}: Scale/Offset ignored ({why})")
            scale = offset = None
        if layout is None and precision is None:
            _note(notes, f"{path}: {field}: neither Layout nor Precision given; nothing changes")
        entry = CustomIOEntry(name, direction, layout, precision, scale, offset, i)
        if name in result:
            first = result[name]
            if first.settings() != entry.settings():
                raise ConfigError(f"'{name}' is listed twice with different settings (entry "
                                  f"{first.entry}: {_describe(first)}; entry {i}: "
                                  f"{_describe(entry)})", where=path, field=field,
                                  hint="keep one entry per input or output")
            _note(notes, f"{path}: {field}: repeats entry {first.entry} with the same settings; "
                         "merged")
            continue
        result[name] = entry
    return list(result.values())


def _describe(e: CustomIOEntry) -> str:
    parts = [f"Layout {e.layout}" if e.layout else "", f"Precision {e.precision}" if e.precision
             else "", f"Scale {e.scale}" if e.scale is not None else "",
             f"Offset {e.offset}" if e.offset is not None else ""]
    return ", ".join(p for p in parts if p) or "no change"


def _note(notes: list[str], text: str) -> None:
    logger.info("%s", text)
    notes.append(text)


def load_custom_io(path: str | Path, inputs: Sequence[TensorDesc], outputs: Sequence[TensorDesc],
                   **kw: Any) -> list[CustomIOEntry]:
    """Read (hardened YAML) and validate a custom I/O list file."""
    return parse_custom_io(load_yaml(path, what="custom I/O list file"), path, inputs, outputs,
                           **kw)


# -- descriptors and steps --------------------------------------------------------------------

def _get(entry: CustomIOEntry | dict[str, Any], key: str) -> Any:
    return entry.get(key) if isinstance(entry, dict) else getattr(entry, key)


def mx_blocks(length: int) -> int:
    return -(-length // MX_BLOCK)


def mx_length(desc: TensorDesc, layout: str | None) -> int:
    """The length of the axis mxint8 blocks run along: the custom tensor's last axis (C for an
    NHWC custom layout)."""
    return int(desc.shape[1] if layout == "NHWC" else desc.shape[-1])


def custom_desc(desc: TensorDesc, entry: CustomIOEntry | dict[str, Any]) -> TensorDesc:
    """The descriptor of the custom tensor that replaces model tensor ``desc``."""
    layout, precision = _get(entry, "layout"), _get(entry, "precision")
    shape = None if desc.shape is None else list(desc.shape)
    out_layout = desc.layout
    if shape is not None and len(shape) == 4:
        out_layout = layout or desc.layout or "NCHW"
        if layout == "NHWC":
            shape = [shape[i] for i in NCHW_TO_NHWC]
    dtype = _CUSTOM_DTYPE[precision] if precision else desc.dtype
    if precision == "mxint8":
        shape = shape[:-1] + [mx_blocks(int(shape[-1])), MX_BLOCK + 1]
        out_layout = None
    return TensorDesc(desc.name, dtype, shape, out_layout)


def plan_steps(entry: CustomIOEntry, desc: TensorDesc,
               model_qparams: tuple[float, int] | None = None) -> list[dict[str, Any]]:
    """The conversions between the custom tensor and model tensor ``desc``.

    For an input they go custom -> model, for an output model -> custom. ``model_qparams`` is the
    (scale, zero_point) of an int8 model tensor (read from the DequantizeLinear that consumes an
    input / the QuantizeLinear that produces an output), needed to turn it into float.
    Raises ConfigError naming the entry when a conversion is impossible.
    """
    md, cp = desc.dtype, entry.precision
    nhwc = entry.layout == "NHWC"
    where = f"entry {entry.entry} (IOName '{entry.name}')"
    steps: list[dict[str, Any]] = []

    def need_model_qparams() -> tuple[float, int]:
        if model_qparams is None:
            raise ConfigError(f"'{entry.name}' is int8 in the model, and no per-tensor "
                              "DequantizeLinear/QuantizeLinear next to it says its scale and "
                              "zero point, so it cannot be converted to or from "
                              f"{cp}", field=where,
                              hint="keep Precision int8 for this tensor")
        return model_qparams

    def q(scale: float, zp: int) -> dict[str, Any]:
        return {"op": "quantize", "scale": float(scale), "zero_point": int(zp)}

    def dq(scale: float, zp: int) -> dict[str, Any]:
        return {"op": "dequantize", "scale": float(scale), "zero_point": int(zp)}

    def cast(dtype: str) -> dict[str, Any]:
        return {"op": "cast", "to": dtype}

    if entry.direction == "input":
        if cp == "mxint8":
            steps.append({"op": "mx_decode", "length": mx_length(desc, entry.layout),
                          "block": MX_BLOCK})
            if nhwc:
                steps.append({"op": "transpose", "perm": list(NHWC_TO_NCHW)})
            if md == "float16":
                steps.append(cast("float16"))
            return steps
        if nhwc:
            steps.append({"op": "transpose", "perm": list(NHWC_TO_NCHW)})
        if cp is None or _MODEL_PRECISION.get(md) == cp and cp != "int8":
            return steps
        if cp == "float":
            steps += [cast("float16")] if md == "float16" else [q(*need_model_qparams())]
        elif cp == "float16":
            steps += [cast("float32")] if md == "float32" else [cast("float32"),
                                                               q(*need_model_qparams())]
        elif cp == "int8":
            if md == "int8":
                if model_qparams is not None and _differs(model_qparams, entry):
                    steps += [dq(entry.scale, entry.offset), q(*model_qparams)]
            else:
                steps.append(dq(entry.scale, entry.offset))
                if md == "float16":
                    steps.append(cast("float16"))
        return steps
    # output: model -> custom
    if cp == "mxint8":
        if md == "float16":
            steps.append(cast("float32"))
        if nhwc:
            steps.append({"op": "transpose", "perm": list(NCHW_TO_NHWC)})
        steps.append({"op": "mx_encode", "length": mx_length(desc, entry.layout),
                      "block": MX_BLOCK})
        return steps
    if cp is not None and not (_MODEL_PRECISION.get(md) == cp and cp != "int8"):
        if cp == "float":
            steps += [cast("float32")] if md == "float16" else [dq(*need_model_qparams())]
        elif cp == "float16":
            steps += [cast("float16")] if md == "float32" else [dq(*need_model_qparams()),
                                                               cast("float16")]
        elif cp == "int8":
            if md == "int8":
                if model_qparams is not None and _differs(model_qparams, entry):
                    steps += [dq(*model_qparams), q(entry.scale, entry.offset)]
            else:
                if md == "float16":
                    steps.append(cast("float32"))
                steps.append(q(entry.scale, entry.offset))
    if nhwc:
        steps.append({"op": "transpose", "perm": list(NCHW_TO_NHWC)})
    return steps


def _differs(qparams: tuple[float, int], entry: CustomIOEntry) -> bool:
    return entry.scale is not None and (np.float32(qparams[0]) != np.float32(entry.scale)
                                        or int(qparams[1]) != int(entry.offset))


# -- numpy execution of the steps (the host side) --------------------------------------------

def mx_step_table() -> np.ndarray:
    """float32[256]: ``2^(E - 133)``, the mantissa step of exponent byte E (exact powers of 2)."""
    return np.ldexp(np.float64(1.0), np.arange(256) - 133).astype(np.float32)


def mx_scale_table() -> np.ndarray:
    """float32[256]: ``2^(E - 127)`` (E = 255 gives +inf: never produced)."""
    with np.errstate(over="ignore"):
        return np.ldexp(np.float64(1.0), np.arange(256) - 127).astype(np.float32)


def mx_encode(x: np.ndarray, block: int = MX_BLOCK) -> np.ndarray:
    """float [..., L] -> uint8 [..., ceil(L / block), 1 + block] (see the module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0:
        raise DataError("mxint8 needs a tensor of rank >= 1")
    length = x.shape[-1]
    nb = -(-length // block)
    pad = nb * block - length
    if pad:
        x = np.concatenate([x, np.zeros(x.shape[:-1] + (pad,), np.float32)], axis=-1)
    xb = x.reshape(x.shape[:-1] + (nb, block))
    amax = np.abs(xb).max(axis=-1, keepdims=True)
    _, e = np.frexp(amax)                      # amax = m * 2^e, m in [0.5, 1)
    exp = np.where(amax > 0, e.astype(np.int64) - 1 + 127, 0)
    exp = np.clip(exp, 0, 254)
    step = mx_step_table()[exp]
    m = np.clip(np.rint(xb / step), -127, 127).astype(np.int8)
    out = np.concatenate([exp.astype(np.uint8), m.view(np.uint8)], axis=-1)
    return np.ascontiguousarray(out)


def mx_decode(data: np.ndarray, length: int, block: int = MX_BLOCK) -> np.ndarray:
    """uint8 [..., blocks, 1 + block] -> float32 [..., length]."""
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim < 2 or data.shape[-1] != block + 1:
        raise DataError(f"an mxint8 tensor is uint8 [..., blocks, {block + 1}], got {data.dtype} "
                        f"{list(data.shape)}")
    step = mx_step_table()[data[..., :1].astype(np.int64)]
    m = np.ascontiguousarray(data[..., 1:]).view(np.int8).astype(np.float32)
    values = (m * step).reshape(data.shape[:-2] + (data.shape[-2] * block,))
    return np.ascontiguousarray(values[..., :length])


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


# -- the template ----------------------------------------------------------------------------

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
        precision = _MODEL_PRECISION.get(desc.dtype)
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
    import yaml

    from .fileio import write_text_atomic

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
