"""Device numerics: a lowered graph and its partition into results computed the way the AIC100 does,
core by core.

- **int8** tensor steps (DQ -> Conv/Gemm/MatMul [-> Relu/Clip] -> Q): int8/uint8 operands minus
  their zero points, products summed in an int32 accumulator (saturating; emulated exactly in
  float64, where every partial sum of 8-bit products is an integer far below 2**53), plus the
  int32 bias, then
  requantized in fixed point: the real multiplier ``x_scale * w_scale[c] / y_scale`` becomes a
  31-bit mantissa and a shift per output channel, the product is rounded half up by the shift, the
  output zero point added and the result saturated to int8/uint8; a fused Relu/Clip clamps on the
  int8 grid. A bias on its own scale is rescaled to the accumulator's at compile time. ONNX rounds
  half to even in float32 instead, so a result may differ from the interpreter's by one
  quantization step (``Runner.step_outputs`` compares op by op; through a deep network those rare
  one-step differences drift, as they would between any two int8 implementations).
- **fp16** steps: fp16 operands, products accumulated in fp32 (the MAC array), the op's result
  rounded to fp16 once. Every op rounds its own output, fused or not, so fusion never changes a
  result (the interpreter does the same).
- **other ops** of a quantized program run as DQ -> op -> Q in float32 on the vector unit, through
  the interpreter's kernels, so they equal the interpreter exactly; so does a Conv/Gemm/MatMul that
  does not fit the integer pattern (16-bit activations, per-channel output scales, alpha/beta).

Out of range values are counted, not hidden: int32 accumulators that saturate (``saturations``)
and, per node, fp16 results that are inf or nan, separating those a node made from finite inputs
(an overflow past fp16's 65504) from those it only passed on (``fp16``); the device report prints
both.

Tensor steps run piece by piece as the plan splits them: output rows (batch x output rows of a
Conv, rows of a Gemm/MatMul) or output channels, each piece on its core; data-parallel groups run
their slice of the batch. Splitting never splits a reduction, so the pieces agree exactly with the
whole (integer steps are bit-identical for any core count).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view

from aicc.errors import AiccError, BackendError

from .lower import IntPattern, Lowered, Step, pieces_of
from .transposed import convtranspose

__all__ = ["Runner", "requantize", "fixed_point_multiplier", "conv_rows", "StepSplit"]

logger = logging.getLogger(__name__)

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


@dataclass(frozen=True)
class StepSplit:
    """How one step is cut: ``axis`` "rows", "channels" or "none", into ``pieces``."""

    axis: str
    pieces: int


# --- fixed-point requantization ---------------------------------------------------------------

def fixed_point_multiplier(multiplier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real multipliers -> (31-bit mantissa, right shift) with m * 2**-shift ~= multiplier."""
    mult = np.asarray(multiplier, np.float64)
    if np.any(~np.isfinite(mult)) or np.any(mult <= 0):
        raise BackendError("a requantization scale is not a positive finite number",
                           where="backend 'aic100'")
    mant, exp = np.frexp(mult)  # mult = mant * 2**exp, mant in [0.5, 1)
    q = np.rint(mant * (1 << 31)).astype(np.int64)
    carry = q == (1 << 31)
    q = np.where(carry, q // 2, q)
    exp = np.where(carry, exp + 1, exp)
    shift = 31 - exp.astype(np.int64)
    return q, shift


def requantize(acc: np.ndarray, multiplier: np.ndarray, zero_point: int, dtype: np.dtype,
               axis: int) -> np.ndarray:
    """int32 accumulators -> int8/uint8: fixed-point multiply, round half up, add zero point,
    saturate. ``multiplier`` holds one value per index of ``axis`` (or one for all)."""
    mant, shift = fixed_point_multiplier(multiplier)
    shape = [1] * acc.ndim
    if mant.size > 1:
        shape[axis] = mant.size
    mant = mant.reshape(shape)
    shift = np.clip(shift, -30, 62).reshape(shape)
    prod = acc.astype(np.int64) * mant  # |acc| < 2**31, mant < 2**31: fits in int64
    right = np.maximum(shift, 0)
    left = np.maximum(-shift, 0)
    half = np.where(right > 0, np.left_shift(np.int64(1), np.maximum(right - 1, 0)), 0)
    y = np.right_shift(prod + half, right)
    if np.any(left):
        y = np.left_shift(np.clip(y, -(1 << 40), 1 << 40), left)
    info = np.iinfo(dtype)
    return np.clip(y + zero_point, info.min, info.max).astype(dtype)


# --- convolution ------------------------------------------------------------------------------

def _conv_geometry(x_shape, w_shape, attrs):
    from aicc.backends.interpreter.ops_conv import conv_geometry

    nd = len(w_shape) - 2
    kernel = tuple(w_shape[2:])
    strides = tuple(attrs.get("strides") or [1] * nd)
    dil = tuple(attrs.get("dilations") or [1] * nd)
    pads = attrs.get("pads") or []
    auto = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    begin, end, out = conv_geometry(x_shape[2:], kernel, strides, dil, pads, auto)
    return kernel, strides, dil, begin, end, out


def conv_rows(xp: np.ndarray, w: np.ndarray, group: int, strides, dil, out_hw,
              rows: tuple[int, int], chans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Output rows ``rows`` (flattened over batch x output height) of a 2-D convolution of the
    padded input ``xp`` (N, C, Hp, Wp) with ``w`` (M, C/group, kh, kw), for the output-channel
    pieces ``chans``.

    Returns (rows, M, Wo) in ``xp``'s dtype with the pieces' channels filled. The input columns
    (im2col) of a band of rows are built once and multiplied by each piece's weights; the
    reduction always runs over all input channels of the group and all taps.
    """
    ho, wo = out_hw
    m = w.shape[0]
    kh, kw = w.shape[2:]
    sh, sw = strides
    dh, dw = dil
    cg, mg = xp.shape[1] // group, m // group
    depthwise = group > 1 and cg == 1 and mg == 1
    r0, r1 = rows
    out = np.zeros((r1 - r0, m, wo), dtype=xp.dtype)
    r = r0
    while r < r1:
        n, h0 = divmod(r, ho)
        h1 = min(ho, h0 + (r1 - r))
        band = xp[n, :, h0 * sh:(h1 - 1) * sh + (kh - 1) * dh + 1]  # (C, band rows, Wp)
        win = sliding_window_view(band, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
        win = win[:, ::sh, ::sw][:, :h1 - h0, :wo, ::dh, ::dw]  # (C, hrows, Wo, kh, kw)
        dst = out[r - r0:r - r0 + (h1 - h0)]
        if depthwise:
            for c0, c1 in chans:
                res = np.einsum("chwij,cij->chw", win[c0:c1], w[c0:c1, 0])
                dst[:, c0:c1] = res.transpose(1, 0, 2)
        else:
            for gi in range(group):
                lo_g, hi_g = gi * mg, (gi + 1) * mg
                parts = [(max(c0, lo_g), min(c1, hi_g)) for c0, c1 in chans
                         if c0 < hi_g and c1 > lo_g]
                if not parts:
                    continue
                cols = np.ascontiguousarray(win[gi * cg:(gi + 1) * cg].transpose(0, 3, 4, 1, 2))
                cols = cols.reshape(cg * kh * kw, -1)
                for lo, hi in parts:
                    res = w[lo:hi].reshape(hi - lo, -1) @ cols  # (oc, hrows * Wo)
                    dst[:, lo:hi] = res.reshape(hi - lo, h1 - h0, wo).transpose(1, 0, 2)
        r += h1 - h0
    return out


def _pad(x: np.ndarray, begin, end) -> np.ndarray:
    if not any(begin) and not any(end):
        return x
    widths = [(0, 0), (0, 0)] + list(zip(begin, end))
    return np.pad(x, widths)


def _as_2d(x: np.ndarray, w: np.ndarray, attrs: dict) -> tuple[np.ndarray, np.ndarray, dict, bool]:
    """A 1-D convolution as a 2-D one of height 1."""
    if w.ndim == 3:
        a = dict(attrs)
        for key, fill in (("strides", 1), ("dilations", 1)):
            if a.get(key):
                a[key] = [fill] + list(a[key])
        if a.get("kernel_shape"):
            a["kernel_shape"] = [1] + list(a["kernel_shape"])
        if a.get("pads"):
            p = list(a["pads"])
            a["pads"] = [0, p[0], 0, p[1]]
        return x[:, :, None, :], w[:, :, None, :], a, True
    return x, w, attrs, False


def _conv(x: np.ndarray, w: np.ndarray, attrs: dict, split: StepSplit) -> np.ndarray:
    """Full conv output (N, M, Ho, Wo), computed piece by piece; dtype of ``x``."""
    x, w, attrs, squeezed = _as_2d(x, w, attrs)
    if w.ndim != 4:
        raise BackendError(f"Conv with {w.ndim - 2} spatial dims is not supported",
                           where="backend 'aic100'")
    kernel, strides, dil, begin, end, out_hw = _conv_geometry(x.shape, w.shape, attrs)
    group = int(attrs.get("group", 1))
    xp = _pad(x, begin, end)
    n, m = x.shape[0], w.shape[0]
    rows_total = n * out_hw[0]
    res = np.empty((rows_total, m, out_hw[1]), dtype=x.dtype)
    if split.axis == "channels":
        res[:] = conv_rows(xp, w, group, strides, dil, out_hw, (0, rows_total),
                           pieces_of(m, split.pieces))
    else:
        count = split.pieces if split.axis == "rows" else 1
        for r0, r1 in pieces_of(rows_total, count):
            res[r0:r1] = conv_rows(xp, w, group, strides, dil, out_hw, (r0, r1), [(0, m)])
    out = res.reshape(n, out_hw[0], m, out_hw[1]).transpose(0, 2, 1, 3)
    out = np.ascontiguousarray(out)
    return out[:, :, 0, :] if squeezed else out


def _matmul_2d(a: np.ndarray, b: np.ndarray, split: StepSplit) -> np.ndarray:
    """(R, K) @ (K, N) piece by piece."""
    r, n = a.shape[0], b.shape[1]
    out = np.empty((r, n), dtype=np.result_type(a, b))
    if split.axis == "channels":
        for c0, c1 in pieces_of(n, split.pieces):
            out[:, c0:c1] = a @ b[:, c0:c1]
    else:
        count = split.pieces if split.axis == "rows" else 1
        for r0, r1 in pieces_of(r, count):
            out[r0:r1] = a[r0:r1] @ b
    return out


# --- the runner -------------------------------------------------------------------------------

def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return op.version
    return onnx.defs.onnx_opset_version()


class Runner:
    """Executes a lowered graph step by step with the plan's groups and splits."""

    def __init__(self, low: Lowered, splits: Sequence[StepSplit], groups: int, cores: int):
        self.low = low
        self.splits = list(splits)
        self.groups = groups
        self.cores = cores
        self.saturations = 0
        #: fp16 results that are not finite, by node: {"nonfinite": values that are inf or nan,
        #: "overflow": of those, inf values the node made from finite inputs}; over all runs
        self.fp16: dict[str, dict[str, int]] = {}
        #: the first node (in execution order) whose fp16 output held inf or nan, as
        #: ``aicc.nonfinite.NonfiniteWatch.found``: the run's diagnosis even when that value
        #: vanished before the outputs (a LayerNorm whose variance overflowed returns its bias)
        self.first_fp16: dict[str, object] | None = None
        self._kernels: dict[int, object] = {}
        self._versions: dict[int, int] = {}
        self._attrs = [_attrs(n) for n in low.nodes]
        opset = _opset(low.model)
        from aicc.backends.interpreter.kernels import NodeSpec, in_float32, lookup, parse_attribute

        for i, node in enumerate(low.nodes):
            entry = lookup(node.op_type)
            if entry is None:
                raise BackendError(f"no kernel for node '{node.name}' ({node.op_type})",
                                   where="backend 'aic100'")
            version = onnx.defs.get_schema(node.op_type, opset, "").since_version
            self._versions[i] = version
            spec = NodeSpec(name=node.name or node.output[0], op_type=node.op_type,
                            version=version,
                            attrs={a.name: parse_attribute(a) for a in node.attribute},
                            inputs=tuple(node.input), outputs=tuple(node.output))
            try:
                kernel = entry.builder(spec)
            except AiccError:
                raise
            except Exception as e:
                raise BackendError(f"node '{spec.name}' ({node.op_type}): {e}",
                                   where="backend 'aic100'") from e
            self._kernels[i] = in_float32(kernel) if entry.half_in_float32 else kernel
        # tensors to drop after each step (after their last reader)
        last: dict[str, int] = {}
        for s, step in enumerate(low.steps):
            for name in step.reads:
                last[name] = s
        keep = set(low.outputs) | set(low.constants)
        self._drop: list[list[str]] = [[] for _ in low.steps]
        for name, s in last.items():
            if name not in keep:
                self._drop[s].append(name)
        # intermediates a step produces that no later step reads die with the step
        for s, step in enumerate(low.steps):
            for m in step.nodes:
                for o in low.nodes[m].output:
                    if o and o not in keep and last.get(o, -1) <= s:
                        self._drop[s].append(o)

    # -- public --------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.groups <= 1:
            return self._run_group(feeds)
        slices = {k: np.array_split(v, self.groups, axis=0) for k, v in feeds.items()}
        parts = [self._run_group({k: v[g] for k, v in slices.items()})
                 for g in range(self.groups)]
        return {name: np.concatenate([p[name] for p in parts], axis=0)
                for name in self.low.outputs}

    # -- internals -----------------------------------------------------------------------------
    def _run_group(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = dict(self.low.constants)
        env.update(feeds)
        with np.errstate(all="ignore"):
            for s, step in enumerate(self.low.steps):
                self._step(step, self.splits[s], env)
                for name in self._drop[s]:
                    env.pop(name, None)
            for name in self.low.outputs:
                self._ensure(name, env)
        return {name: env[name] for name in self.low.outputs}

    def step_outputs(self, index: int, tensors: Mapping[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
        """Run step ``index`` alone on the given tensors and return what it writes.

        Feeding every step the reference's own inputs (e.g. every tensor an interpreter run
        observed) compares the device numerics op by op, without the drift that small rounding
        differences accumulate through a deep network.
        """
        step = self.low.steps[index]
        produced = {o for m in step.nodes for o in self.low.nodes[m].output if o}
        env: dict[str, np.ndarray] = dict(self.low.constants)
        env.update({k: v for k, v in tensors.items() if k not in produced})
        with np.errstate(all="ignore"):
            self._step(step, self.splits[index], env)
        return {o: env[o] for o in step.outputs}

    def _ensure(self, name: str, env: dict) -> np.ndarray | None:
        if not name:
            return None
        if name in env:
            return env[name]
        p = self.low.producer.get(name)
        if p is None:
            raise BackendError(f"tensor '{name}' is not available", where="backend 'aic100'")
        self._node(p, env)
        return env[name]

    def _node(self, i: int, env: dict) -> None:
        node = self.low.nodes[i]
        args = [self._ensure(x, env) if x else None for x in node.input]
        try:
            res = self._kernels[i](*args)
        except AiccError:
            raise
        except Exception as e:
            raise BackendError(f"node '{node.name}' ({node.op_type}) failed: "
                               f"{type(e).__name__}: {e}", where="backend 'aic100'") from e
        if isinstance(res, tuple):
            for name, value in zip(node.output, res):
                if name:
                    env[name] = np.asarray(value)
        else:
            env[node.output[0]] = np.asarray(res)
        self._watch_fp16(node, args, [env.get(o) for o in node.output if o])

    def _watch_fp16(self, node: onnx.NodeProto, args: Sequence, outputs: Sequence) -> None:
        """Count the node's fp16 results that are inf or nan (see ``fp16``)."""
        bad = over = 0
        for y in outputs:
            if y is None or y.dtype != np.float16:
                continue
            finite = np.isfinite(y)
            if finite.all():
                continue
            bad += int(y.size - np.count_nonzero(finite))
            if all(a is None or a.dtype.kind != "f" or np.isfinite(a).all() for a in args):
                over += int(np.count_nonzero(np.isinf(y)))
        if bad and self.first_fp16 is None:
            tensor = next(o for o, y in zip(node.output, outputs) if y is not None
                          and y.dtype == np.float16 and not np.isfinite(y).all())
            self.first_fp16 = {"node": node.name or tensor, "op": node.op_type, "tensor": tensor,
                               "count": bad, "max_abs_input": _max_finite(args)}
        if bad:
            entry = self.fp16.setdefault(node.name or node.output[0],
                                         {"nonfinite": 0, "overflow": 0})
            entry["nonfinite"] += bad
            entry["overflow"] += over

    def _step(self, step: Step, split: StepSplit, env: dict) -> None:
        rest = step.nodes
        if step.integer is not None:
            self._integer(step.integer, split, env)
            rest = step.nodes[step.integer.consumed:]
        elif step.kind == "tensor":
            self._float_tensor(step.nodes[0], split, env)
            rest = step.nodes[1:]
        for m in rest:
            if all(o in env for o in self.low.nodes[m].output if o):
                continue
            self._node(m, env)

    # float (fp16 / fp32) Conv, Gemm, MatMul
    def _float_tensor(self, i: int, split: StepSplit, env: dict) -> None:
        node = self.low.nodes[i]
        a = self._attrs[i]
        args = [self._ensure(x, env) if x else None for x in node.input]
        x, w = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        out_dtype = np.result_type(x.dtype, w.dtype)
        work = np.float32 if out_dtype in (np.float16, np.float32) else out_dtype
        xf, wf = x.astype(work, copy=False), w.astype(work, copy=False)
        if node.op_type == "ConvTranspose":  # the reduction is never split: compute it whole
            y = convtranspose(xf, wf, bias, node, self._versions[i], work)
        elif node.op_type == "Conv":
            y = _conv(xf, wf, a, split)
            if bias is not None:
                y = y + bias.astype(work).reshape((1, -1) + (1,) * (y.ndim - 2))
        elif node.op_type == "Gemm":
            am = xf.T if a.get("transA", 0) else xf
            bm = wf.T if a.get("transB", 0) else wf
            y = _matmul_2d(am, bm, split) * np.asarray(a.get("alpha", 1.0), work)
            if bias is not None:
                y = y + np.asarray(a.get("beta", 1.0), work) * bias.astype(work)
        else:
            y = self._matmul(xf, wf, split)
        env[node.output[0]] = np.asarray(y).astype(out_dtype)
        self._watch_fp16(node, args, [env[node.output[0]]])

    @staticmethod
    def _matmul(a: np.ndarray, b: np.ndarray, split: StepSplit) -> np.ndarray:
        if a.ndim >= 2 and b.ndim == 2:
            flat = a.reshape(-1, a.shape[-1])
            return _matmul_2d(flat, b, split).reshape(a.shape[:-1] + (b.shape[1],))
        return np.matmul(a, b)

    # int8 Conv, Gemm, MatMul with int32 accumulators
    def _integer(self, p: IntPattern, split: StepSplit, env: dict) -> None:
        node = self.low.nodes[p.main]
        a = self._attrs[p.main]
        # data-parallel groups hold a slice of the batch (dim 0), so keep dim 0 free
        xq = self._ensure(p.x, env).reshape((-1,) + tuple(p.x_shape[1:]))
        wq = self._ensure(p.w, env)
        wq = wq.reshape(p.w_shape if p.w in self.low.constants
                        else (-1,) + tuple(p.w_shape[1:]))
        xf = xq.astype(np.float64) - p.x_zero
        if node.op_type == "ConvTranspose":
            same = p.w_zero.min() == p.w_zero.max()
            wz = p.w_zero.reshape(-1)[0] if same else p.w_zero.reshape(
                (1, -1) + (1,) * (wq.ndim - 2))
            acc = convtranspose(xf, wq.astype(np.float64) - wz, None, node,
                                self._versions[p.main], np.float64)
            axis = 1
            shape = (1, -1) + (1,) * (acc.ndim - 2)
        elif node.op_type == "Conv":
            wz = p.w_zero.reshape((-1,) + (1,) * (wq.ndim - 1))
            wf = wq.astype(np.float64) - wz
            acc = _conv(xf, wf, a, split)
            axis = 1
            shape = (1, -1) + (1,) * (acc.ndim - 2)
        elif node.op_type == "Gemm":
            bm = wq.T if a.get("transB", 0) else wq
            wf = bm.astype(np.float64) - p.w_zero.reshape(1, -1)
            acc = _matmul_2d(xf, wf, split)
            axis, shape = acc.ndim - 1, (1, -1)
        else:
            wf = wq.astype(np.float64) - (p.w_zero.reshape(1, -1) if wq.ndim == 2 and
                                          p.w_zero.size > 1 else p.w_zero.reshape(-1)[0])
            acc = self._matmul(xf, wf, split)
            axis, shape = acc.ndim - 1, (1,) * (acc.ndim - 1) + (-1,)
        acc = np.rint(acc).astype(np.int64)
        if p.bias is not None:
            acc = acc + p.bias.reshape(shape)
        over = (acc < _INT32_MIN) | (acc > _INT32_MAX)
        if over.any():
            self.saturations += int(over.sum())
            acc = np.clip(acc, _INT32_MIN, _INT32_MAX)
        mult = p.x_scale * p.w_scale / p.y_scale
        if np.all(mult == mult.reshape(-1)[0]):
            mult = mult.reshape(-1)[:1]
        y = requantize(acc, mult, p.y_zero, p.y_dtype, axis)
        if p.act is not None:  # the fused Relu/Clip: bounds on the quantized grid
            y = np.clip(y, p.act_lo, p.act_hi).astype(p.y_dtype)
        env[p.y] = y


def _max_finite(arrays: Sequence) -> float:
    """The largest finite magnitude among the float arrays (0.0 when there is none)."""
    peak = 0.0
    for a in arrays:
        if a is not None and a.dtype.kind == "f" and a.size:
            finite = np.abs(a[np.isfinite(a)])
            if finite.size:
                peak = max(peak, float(finite.max()))
    return peak
