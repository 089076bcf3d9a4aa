"""Planning the conversions: a validated entry and the model tensor in, the custom tensor's
descriptor and the list of conversion steps between the two out.

A step is a small dict (``transpose``, ``cast``, ``quantize``, ``dequantize``, ``mx_decode``,
``mx_encode``) that the ``custom-io`` pass either builds as graph nodes or records in the manifest
for ``aicc.customio.host`` to run in numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from ..program import TensorDesc
from .parse import CustomIOEntry
from .vocabulary import CUSTOM_DTYPE, MODEL_PRECISION, MX_BLOCK, NCHW_TO_NHWC, NHWC_TO_NCHW

__all__ = ["custom_desc", "plan_steps", "mx_blocks", "mx_length"]

Step = dict[str, Any]


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
    dtype = CUSTOM_DTYPE[precision] if precision else desc.dtype
    if precision == "mxint8":
        shape = shape[:-1] + [mx_blocks(int(shape[-1])), MX_BLOCK + 1]
        out_layout = None
    return TensorDesc(desc.name, dtype, shape, out_layout)


def _get(entry: CustomIOEntry | dict[str, Any], key: str) -> Any:
    return entry.get(key) if isinstance(entry, dict) else getattr(entry, key)


def plan_steps(entry: CustomIOEntry, desc: TensorDesc,
               model_qparams: tuple[float, int] | None = None) -> list[Step]:
    """The conversions between the custom tensor and model tensor ``desc``.

    For an input they go custom -> model, for an output model -> custom. ``model_qparams`` is the
    (scale, zero_point) of an int8 model tensor (read from the DequantizeLinear that consumes an
    input / the QuantizeLinear that produces an output), needed to turn it into float.
    Raises ConfigError naming the entry when a conversion is impossible.
    """
    if entry.direction == "input":
        return _input_steps(entry, desc, model_qparams)
    return _output_steps(entry, desc, model_qparams)


def _input_steps(entry: CustomIOEntry, desc: TensorDesc,
                 qparams: tuple[float, int] | None) -> list[Step]:
    """custom -> model: decode mxint8 or undo the layout first, then change the precision."""
    nhwc = entry.layout == "NHWC"
    if entry.precision == "mxint8":
        steps = [_mx("mx_decode", desc, entry)]
        if nhwc:
            steps.append(_transpose(NHWC_TO_NCHW))
        if desc.dtype == "float16":
            steps.append(_cast("float16"))
        return steps
    steps = [_transpose(NHWC_TO_NCHW)] if nhwc else []
    if entry.precision is None or _unchanged(desc.dtype, entry.precision):
        return steps
    return steps + _input_precision_steps(entry, desc.dtype, qparams)


def _input_precision_steps(entry: CustomIOEntry, model_dtype: str,
                           qparams: tuple[float, int] | None) -> list[Step]:
    cp, md = entry.precision, model_dtype
    if cp == "float":
        return [_cast("float16")] if md == "float16" else [_q(*_need(entry, qparams))]
    if cp == "float16":
        return [_cast("float32")] if md == "float32" else [_cast("float32"),
                                                          _q(*_need(entry, qparams))]
    if cp != "int8":
        return []
    if md == "int8":
        if qparams is not None and _differs(qparams, entry):
            return [_dq(entry.scale, entry.offset), _q(*qparams)]
        return []
    return [_dq(entry.scale, entry.offset)] + ([_cast("float16")] if md == "float16" else [])


def _output_steps(entry: CustomIOEntry, desc: TensorDesc,
                  qparams: tuple[float, int] | None) -> list[Step]:
    """model -> custom: change the precision first, then apply the layout (or encode mxint8)."""
    nhwc = entry.layout == "NHWC"
    if entry.precision == "mxint8":
        steps = [_cast("float32")] if desc.dtype == "float16" else []
        if nhwc:
            steps.append(_transpose(NCHW_TO_NHWC))
        steps.append(_mx("mx_encode", desc, entry))
        return steps
    steps = []
    if entry.precision is not None and not _unchanged(desc.dtype, entry.precision):
        steps = _output_precision_steps(entry, desc.dtype, qparams)
    if nhwc:
        steps.append(_transpose(NCHW_TO_NHWC))
    return steps


def _output_precision_steps(entry: CustomIOEntry, model_dtype: str,
                            qparams: tuple[float, int] | None) -> list[Step]:
    cp, md = entry.precision, model_dtype
    if cp == "float":
        return [_cast("float32")] if md == "float16" else [_dq(*_need(entry, qparams))]
    if cp == "float16":
        return [_cast("float16")] if md == "float32" else [_dq(*_need(entry, qparams)),
                                                          _cast("float16")]
    if cp != "int8":
        return []
    if md == "int8":
        if qparams is not None and _differs(qparams, entry):
            return [_dq(*qparams), _q(entry.scale, entry.offset)]
        return []
    return ([_cast("float32")] if md == "float16" else []) + [_q(entry.scale, entry.offset)]


def _unchanged(model_dtype: str, precision: str) -> bool:
    """The custom precision is the model's own (int8 may still change its scale/offset)."""
    return MODEL_PRECISION.get(model_dtype) == precision and precision != "int8"


def _need(entry: CustomIOEntry, qparams: tuple[float, int] | None) -> tuple[float, int]:
    """The model tensor's int8 (scale, zero_point), refused when unknown."""
    if qparams is None:
        where = f"entry {entry.entry} (IOName '{entry.name}')"
        raise ConfigError(f"'{entry.name}' is int8 in the model, and no per-tensor "
                          "DequantizeLinear/QuantizeLinear next to it says its scale and "
                          "zero point, so it cannot be converted to or from "
                          f"{entry.precision}", field=where,
                          hint="keep Precision int8 for this tensor")
    return qparams


def _differs(qparams: tuple[float, int], entry: CustomIOEntry) -> bool:
    return entry.scale is not None and (np.float32(qparams[0]) != np.float32(entry.scale)
                                        or int(qparams[1]) != int(entry.offset))


def _q(scale: float, zp: int) -> Step:
    return {"op": "quantize", "scale": float(scale), "zero_point": int(zp)}


def _dq(scale: float, zp: int) -> Step:
    return {"op": "dequantize", "scale": float(scale), "zero_point": int(zp)}


def _cast(dtype: str) -> Step:
    return {"op": "cast", "to": dtype}


def _transpose(perm: list[int]) -> Step:
    return {"op": "transpose", "perm": list(perm)}


def _mx(op: str, desc: TensorDesc, entry: CustomIOEntry) -> Step:
    return {"op": op, "length": mx_length(desc, entry.layout), "block": MX_BLOCK}
