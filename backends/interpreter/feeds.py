"""Declared tensor types and feed checks: ONNX value infos and user arrays in, checked arrays out.

Feeds are never converted: a wrong dtype, rank or static dim is a one-line DataError naming the
input, what the model expects and what came; symbolic dims must agree across inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from aicc.errors import BackendError, DataError, did_you_mean

from .kernels import onnx_dtype

__all__ = ["TensorSpec", "format_shape", "tensor_spec", "check_declared", "bind_feeds"]


def format_shape(shape: Sequence[Any]) -> str:
    """``(N, 3, 224, 224)``; unknown dims print as ``?``."""
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + (
        ",)" if len(shape) == 1 else ")")


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as the model declares it: dtype (None if not a tensor) and dims.

    ``shape`` is None when the rank is unknown; a dim is an int, a symbol name, or None.
    """

    name: str
    dtype: np.dtype | None
    shape: tuple[int | str | None, ...] | None

    def describe(self) -> str:
        if self.dtype is None:
            return "a non-tensor value"
        if self.shape is None:
            return f"{self.dtype} of any shape"
        return f"{self.dtype} {format_shape(self.shape)}"


def tensor_spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    """The TensorSpec of a graph input, output or value_info entry."""
    t = vi.type
    if not t.HasField("tensor_type"):
        return TensorSpec(vi.name, None, None)
    tt = t.tensor_type
    dtype = onnx_dtype(tt.elem_type) if tt.elem_type else None
    shape = None
    if tt.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                      for d in tt.shape.dim)
    return TensorSpec(vi.name, dtype, shape)


def check_declared(declared: TensorSpec, value: np.ndarray, what: str) -> None:
    """Raise a BackendError if a produced tensor contradicts its declared dtype or static dims."""
    if value.dtype != declared.dtype:
        raise BackendError(f"{what} '{declared.name}' has dtype {value.dtype}, but the model "
                           f"declares {declared.dtype}")
    if declared.shape is not None:
        ok = len(declared.shape) == value.ndim and all(
            not isinstance(d, int) or d == v for d, v in zip(declared.shape, value.shape))
        if not ok:
            raise BackendError(f"{what} '{declared.name}' has shape {format_shape(value.shape)}, "
                               f"but the model declares {format_shape(declared.shape)}")


def bind_feeds(feeds: Mapping[str, Any], inputs: Sequence[TensorSpec],
               defaults: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Checked feeds by name; inputs with an initializer (in ``defaults``) may be left out."""
    if not isinstance(feeds, Mapping):
        raise DataError(f"feeds must map input names to numpy arrays, got {type(feeds).__name__}")
    by_name = {s.name: s for s in inputs}
    for name in feeds:
        if name not in by_name:
            raise DataError(f"feed '{name}': the model has no such input",
                            hint=did_you_mean(str(name), by_name))
    bound: dict[str, Any] = {}
    symbols: dict[str, tuple[int, str]] = {}
    for spec in inputs:
        if spec.name in feeds:
            bound[spec.name] = _check_feed(spec, feeds[spec.name], symbols)
        elif spec.name not in defaults:
            raise DataError(f"input '{spec.name}': missing (expected {spec.describe()})",
                            hint="the model's inputs are " + ", ".join(
                                s.name for s in inputs if s.name not in defaults))
    return bound


def _check_feed(spec: TensorSpec, value: Any, symbols: dict) -> Any:
    if spec.dtype is None:  # sequences / optionals pass through as given
        return value
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise DataError(f"input '{spec.name}': got a {type(value).__name__}, expected a numpy "
                        f"array of {spec.describe()}")
    if value.dtype != spec.dtype:
        if spec.dtype == object and value.dtype.kind in "US":
            value = value.astype(object)
        else:
            raise DataError(f"input '{spec.name}': dtype {value.dtype}, expected {spec.dtype}",
                            hint="convert the data; the interpreter never casts feeds")
    if spec.shape is None:
        return value
    if value.ndim != len(spec.shape):
        raise DataError(f"input '{spec.name}': shape {format_shape(value.shape)} has rank "
                        f"{value.ndim}, expected rank {len(spec.shape)} "
                        f"{format_shape(spec.shape)}")
    for axis, (want, got) in enumerate(zip(spec.shape, value.shape)):
        if isinstance(want, int) and want != got:
            raise DataError(f"input '{spec.name}': shape {format_shape(value.shape)}, expected "
                            f"{format_shape(spec.shape)} (dim {axis} is {got}, expected {want})")
        if isinstance(want, str):
            seen = symbols.setdefault(want, (got, spec.name))
            if seen[0] != got:
                raise DataError(f"input '{spec.name}': dim {axis} ('{want}') is {got}, but "
                                f"input '{seen[1]}' has '{want}' = {seen[0]}")
    return value
