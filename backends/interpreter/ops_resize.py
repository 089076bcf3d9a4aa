"""Resize (opsets 11-19) as separable numpy kernels: per resized axis, gather a few taps and blend.

Every mode is one formula: an output position maps to a source coordinate (the
coordinate_transformation_mode); nearest picks one source index by nearest_mode; linear and cubic
blend ``n`` neighbouring indices with kernel weights (stretched by 1/scale when antialiasing a
downsample, renormalized when exclude_outside drops taps outside the input). Indices clamp to the
edge; tf_crop_and_resize writes extrapolation_value where the coordinate leaves the input.
"""

from __future__ import annotations

import math

import numpy as np

from .kernels import NodeSpec, normalize_axis, register

__all__ = ["source_coordinates"]

_MODES = ("nearest", "linear", "cubic")
_TRANSFORMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
               "asymmetric", "tf_crop_and_resize", "tf_half_pixel_for_nn")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def source_coordinates(mode: str, out_len: int, in_len: int, scale: float, roi=None):
    """Source coordinate of each output index along one axis.

    Computed in float32 like onnxruntime, so that ties (a coordinate landing exactly on a pixel
    or half-pixel in float32) round the same way; returned as float64. align_corners and
    tf_crop_and_resize divide by the integer output length minus one (the spec's length_resized,
    as onnxruntime does); onnx's reference uses scale * input length there instead.
    """
    f = np.float32
    y = np.arange(out_len, dtype=f)
    scale = f(scale)
    half = f(0.5)
    if mode == "half_pixel":
        x = (y + half) / scale - half
    elif mode == "half_pixel_symmetric":
        offset = f(in_len) / f(2) * (f(1) - f(out_len) / (scale * f(in_len)))
        x = offset + (y + half) / scale - half
    elif mode == "pytorch_half_pixel":
        x = (y + half) / scale - half if out_len > 1 else np.full(out_len, -half, f)
    elif mode == "align_corners":  # the integer output length, as onnxruntime and PyTorch
        x = y * f(in_len - 1) / f(out_len - 1) if out_len > 1 else np.zeros(out_len, f)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_half_pixel_for_nn":
        x = (y + half) / scale
    else:
        start, end = f(roi[0]), f(roi[1])
        if out_len > 1:
            x = y * (end - start) * f(in_len - 1) / f(out_len - 1)
        else:
            x = np.full(out_len, (end - start) * f(in_len - 1) / f(2), f)
        x = x + start * f(in_len - 1)
    return x.astype(np.float64)


def _cubic(t: np.ndarray, a: float) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


class _AxisPlan:
    """How to resize one axis: source indices (out, n) and weights (out, n), or one index."""

    def __init__(self, spec_attrs: dict, in_len: int, out_len: int, scale: float, roi):
        mode, transform = spec_attrs["mode"], spec_attrs["transform"]
        x = source_coordinates(transform, out_len, in_len, scale, roi)
        self.outside = None
        if transform == "tf_crop_and_resize":
            out = (x < 0) | (x > in_len - 1)
            self.outside = out if out.any() else None
        if mode == "nearest":
            rule = spec_attrs["nearest_mode"]
            if rule == "round_prefer_floor":
                idx = np.ceil(x - 0.5)
            elif rule == "round_prefer_ceil":
                idx = np.floor(x + 0.5)
            elif rule == "floor":
                idx = np.floor(x)
            else:
                idx = np.ceil(x)
            self.index = np.clip(idx, 0, in_len - 1).astype(np.intp)
            self.weights = None
            return
        base = np.ceil(x) - 1  # the tap left of x; an exact integer x counts as ratio 1
        ratio = x - base
        stretch = min(scale, 1.0) if spec_attrs["antialias"] else 1.0
        support = 1 if mode == "linear" else 2
        start = math.floor(-support / stretch) + 1
        offsets = np.arange(start, 2 - start, dtype=np.float64)
        t = (offsets[None, :] - ratio[:, None]) * stretch
        w = np.clip(1 - np.abs(t), 0, 1) if mode == "linear" else _cubic(t, spec_attrs["cubic_a"])
        pos = base[:, None] + offsets[None, :]
        if spec_attrs["exclude_outside"]:
            w = np.where((pos < 0) | (pos > in_len - 1), 0.0, w)
        if spec_attrs["antialias"] or spec_attrs["exclude_outside"]:
            total = w.sum(axis=1, keepdims=True)
            w = w / np.where(total == 0, 1, total)
        self.index = np.clip(pos, 0, in_len - 1).astype(np.intp)
        self.weights = w

    def apply(self, x: np.ndarray, axis: int, work: np.dtype, fill: float) -> np.ndarray:
        bshape = [1] * x.ndim
        if self.weights is None:
            y = np.take(x, self.index, axis=axis)
        else:
            bshape[axis] = -1
            y = None
            for j in range(self.index.shape[1]):
                term = np.take(x, self.index[:, j], axis=axis).astype(work, copy=False)
                term *= self.weights[:, j].astype(work).reshape(bshape)
                y = term if y is None else np.add(y, term, out=y)
        if self.outside is not None:
            bshape[axis] = -1
            y = np.where(self.outside.reshape(bshape), np.asarray(fill, dtype=y.dtype), y)
        return y


@register("Resize", min_version=11, half_in_float32=True)
def _resize(spec: NodeSpec):
    attrs = {
        "mode": spec.attr("mode", "nearest"),
        "transform": spec.attr("coordinate_transformation_mode", "half_pixel"),
        "nearest_mode": spec.attr("nearest_mode", "round_prefer_floor"),
        "cubic_a": spec.attr("cubic_coeff_a", -0.75),
        "exclude_outside": spec.attr("exclude_outside", 0) == 1,
        "antialias": spec.attr("antialias", 0) == 1,
    }
    for key, allowed in (("mode", _MODES), ("transform", _TRANSFORMS),
                         ("nearest_mode", _NEAREST)):
        if attrs[key] not in allowed:
            raise ValueError(f"{spec.describe()}: {key} {attrs[key]!r} is not one of {allowed}")
    fill = spec.attr("extrapolation_value", 0.0)
    policy = spec.attr("keep_aspect_ratio_policy", "stretch")
    axes_attr = spec.attr("axes")
    cache: dict[tuple, list] = {}

    def plan(x, roi, scales, sizes):
        r = x.ndim
        axes = list(range(r)) if axes_attr is None else [
            normalize_axis(a, r, spec) for a in axes_attr]
        if sizes is not None and sizes.size:
            want = [int(v) for v in sizes.reshape(-1)]
            factors = [want[i] / x.shape[a] for i, a in enumerate(axes)]
            if policy != "stretch":
                common = min(factors) if policy == "not_larger" else max(factors)
                factors = [common] * len(axes)
                want = [int(common * x.shape[a] + 0.5) for a in axes]
        elif scales is not None and scales.size:
            factors = [float(v) for v in scales.reshape(-1)]
            want = [int(f * x.shape[a]) for f, a in zip(factors, axes)]
        else:
            raise ValueError(f"{spec.describe()}: neither scales nor sizes is given")
        rois = [None] * len(axes)
        if attrs["transform"] == "tf_crop_and_resize":
            box = [float(v) for v in np.asarray(roi).reshape(-1)]
            n = len(box) // 2
            full = n == r and len(axes) != r
            rois = [(box[a], box[n + a]) if full else (box[i], box[n + i])
                    for i, a in enumerate(axes)]
        steps = []
        for a, f, o, roi_a in zip(axes, factors, want, rois):
            same = o == x.shape[a] and math.isclose(f, 1.0) and (
                roi_a is None or (roi_a[0] == 0 and roi_a[1] == 1))
            if not same:
                steps.append((a, _AxisPlan(attrs, x.shape[a], o, f, roi_a)))
        return steps

    def run(x, roi=None, scales=None, sizes=None):
        key = (x.shape, _key(roi), _key(scales), _key(sizes))
        steps = cache.get(key)
        if steps is None:
            steps = cache[key] = plan(x, roi, scales, sizes)
        work = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        y = x
        for axis, step in steps:
            y = step.apply(y, axis, work, fill)
        if y is x:
            return x.copy()
        if y.dtype != x.dtype:  # integer images: round and saturate like ONNX
            info = np.iinfo(x.dtype)
            y = np.clip(np.rint(y), info.min, info.max).astype(x.dtype)
        return y

    return run


def _key(a):
    return None if a is None else (a.dtype.str, a.shape, a.tobytes())
