"""The interpreter agrees with onnxruntime on random graphs (hypothesis) and targeted op variants.

Tolerances, per dtype: |ours - ort| <= atol * scale + rtol * |ort|, scale = max(1, max|ort|):

* float32: rtol 1e-4, atol 1e-5 (summation order differs between BLAS, MLAS and numpy);
* float16: rtol 1e-2, atol 4e-3. Both sides round once per op to fp16 (onnxruntime computes many
  fp16 CPU ops in float32 behind inserted casts, the interpreter by policy), so the difference is
  a few fp16 ulps (2**-11 = 4.9e-4 relative) per op, grown over a chain of up to 5 ops.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from aicc.backends.interpreter.engine import Interpreter

TOLERANCE = {np.float32: (1e-4, 1e-5), np.float16: (1e-2, 4e-3)}
_ELEM = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


def run_ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_agrees(model: onnx.ModelProto, feeds: dict, dtype=np.float32) -> None:
    rtol, atol = TOLERANCE[dtype]
    expected = run_ort(model, feeds)
    got = Interpreter(model).run(feeds)
    for (name, value), ref in zip(got.items(), expected):
        assert value.dtype == ref.dtype, name
        assert value.shape == ref.shape, (name, value.shape, ref.shape)
        if value.dtype.kind != "f":
            np.testing.assert_array_equal(value, ref)
            continue
        ref64, val64 = ref.astype(np.float64), value.astype(np.float64)
        finite = np.isfinite(ref64)
        np.testing.assert_array_equal(np.isfinite(val64), finite, err_msg=name)
        scale = max(1.0, float(np.max(np.abs(ref64[finite]), initial=0.0)))
        np.testing.assert_allclose(val64[finite], ref64[finite], rtol=rtol, atol=atol * scale,
                                   err_msg=name)


# --- random chains -----------------------------------------------------------------------------

class _Chain:
    """Builds a one-input chain of ops, tracking the current tensor's shape."""

    def __init__(self, dtype, shape, seed):
        self.dtype = dtype
        self.rng = np.random.default_rng(seed)
        self.shape = list(shape)
        self.cur = "x"
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, array) -> str:
        self.n += 1
        name = f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, shape, fan_in) -> str:
        w = self.rng.standard_normal(shape) / math.sqrt(max(fan_in, 1))
        return self.const(w.astype(self.dtype))

    def add(self, op, inputs, shape, **attrs) -> None:
        self.n += 1
        out = f"t{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"n{self.n}", **attrs))
        self.cur, self.shape = out, list(shape)

    def model(self, opset: int = 20) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [self.cur], ["y"], name="out"))
        elem = _ELEM[self.dtype]
        graph = helper.make_graph(self.nodes, "chain", [
            helper.make_tensor_value_info("x", elem, self._x_shape)],
            [helper.make_tensor_value_info("y", elem, self.shape)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 9
        onnx.checker.check_model(model)
        return model


UNARY = ["Relu", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Erf", "Gelu", "Abs",
         "Neg", "Clip", "Softmax"]
BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min"]
ANY_RANK = ["Gather", "Where", "Tile", "CumSum", "ArgMax", "Split", "SqrtAbs", "Unsqueeze"]
IMAGE_OPS = ["Conv", "Conv", "ConvTranspose", "BatchNormalization", "MaxPool", "AveragePool",
             "GlobalAveragePool", "Resize", "Pad", "Transpose", "ReduceMean", "Flatten"]
MATRIX_OPS = ["MatMul", "MatMul", "Gemm", "LayerNormalization", "Transpose", "ReduceSum",
              "Concat", "Slice", "Reshape", "Einsum"]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _apply(draw, c: _Chain, op: str) -> None:  # noqa: C901 - one branch per op is the clearest
    s = c.shape
    if op in UNARY:
        attrs = {}
        inputs = [c.cur]
        if op == "Clip":
            lo = draw(st.floats(-1.5, 0))
            inputs += [c.const(np.array(lo, c.dtype)), c.const(np.array(lo + 1.5, c.dtype))]
        if op == "Softmax":
            attrs["axis"] = draw(st.integers(-len(s), len(s) - 1))
        if op == "LeakyRelu":
            attrs["alpha"] = draw(st.sampled_from([0.01, 0.2, 1.5]))
        c.add(op, inputs, s, **attrs)
    elif op in BINARY:
        bshape = [draw(st.sampled_from([1, d])) for d in s][draw(st.integers(0, len(s) - 1)):]
        vals = c.rng.uniform(0.5, 2.0, bshape) * c.rng.choice([-1, 1], bshape)
        other = c.const(vals.astype(c.dtype))
        c.add(op, [other, c.cur] if draw(st.booleans()) and op != "Div" else [c.cur, other], s)
    elif op == "Conv":
        n, ch, h, w = s
        group = draw(st.sampled_from(_divisors(ch)))
        m = group * draw(st.integers(1, 3))
        k = draw(st.sampled_from([1, 2, 3]))
        stride = draw(st.integers(1, 2))
        auto_pad = draw(st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
        # onnxruntime refuses dilations with SAME_* padding
        dil = 1 if auto_pad.startswith("SAME") else draw(st.integers(1, 2))
        eff = (k - 1) * dil + 1
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], dilations=[dil, dil],
                     group=group)
        if auto_pad == "NOTSET":
            pads = [draw(st.integers(0, k - 1)) for _ in range(4)]
            attrs["pads"] = pads
            oh = (h + pads[0] + pads[2] - eff) // stride + 1
            ow = (w + pads[1] + pads[3] - eff) // stride + 1
        elif auto_pad == "VALID":
            attrs["auto_pad"] = auto_pad
            oh, ow = (h - eff) // stride + 1, (w - eff) // stride + 1
        else:
            attrs["auto_pad"] = auto_pad
            oh, ow = -(-h // stride), -(-w // stride)
        if oh < 1 or ow < 1:
            return
        inputs = [c.cur, c.weight((m, ch // group, k, k), ch // group * k * k)]
        if draw(st.booleans()):
            inputs.append(c.weight((m,), 4))
        c.add("Conv", inputs, [n, m, oh, ow], **attrs)
    elif op == "ConvTranspose":
        n, ch, h, w = s
        group = draw(st.sampled_from(_divisors(ch)))
        mg = draw(st.integers(1, 2))
        k = draw(st.sampled_from([1, 2, 3]))
        stride = draw(st.integers(1, 2))
        pads = [draw(st.integers(0, k - 1)) for _ in range(4)]
        oh = (h - 1) * stride + k - pads[0] - pads[2]
        ow = (w - 1) * stride + k - pads[1] - pads[3]
        if oh < 1 or ow < 1:
            return
        c.add("ConvTranspose", [c.cur, c.weight((ch, mg, k, k), ch * k * k // stride)],
              [n, mg * group, oh, ow], kernel_shape=[k, k], strides=[stride, stride],
              pads=pads, group=group)
    elif op == "BatchNormalization":
        ch = s[1]
        params = [c.const(c.rng.uniform(0.5, 1.5, ch).astype(c.dtype)),
                  c.const(c.rng.standard_normal(ch).astype(c.dtype)),
                  c.const((c.rng.standard_normal(ch) * 0.1).astype(c.dtype)),
                  c.const(c.rng.uniform(0.5, 2, ch).astype(c.dtype))]
        c.add(op, [c.cur] + params, s, epsilon=1e-3)
    elif op in ("MaxPool", "AveragePool"):
        n, ch, h, w = s
        k = draw(st.integers(1, min(3, h, w)))
        stride = draw(st.integers(1, 2))
        pads = [draw(st.integers(0, k - 1)) for _ in range(4)]
        ceil = draw(st.integers(0, 1))
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=pads, ceil_mode=ceil)
        if op == "AveragePool":
            attrs["count_include_pad"] = draw(st.integers(0, 1))
        out = []
        for i, d in enumerate((h, w)):
            span = d + pads[i] + pads[i + 2] - k
            o = (-(-span // stride) if ceil else span // stride) + 1
            if ceil and (o - 1) * stride >= d + pads[i]:
                return  # shape inference keeps a window starting in the end pad; kernels drop it
            out.append(o)
        c.add(op, [c.cur], [n, ch] + out, **attrs)
    elif op == "GlobalAveragePool":
        c.add(op, [c.cur], s[:2] + [1, 1])
    elif op == "Resize":
        mode = draw(st.sampled_from(["nearest", "linear"]))
        ctm = draw(st.sampled_from(["half_pixel", "pytorch_half_pixel", "align_corners",
                                    "asymmetric"]))
        # scales, not sizes: onnxruntime turns sizes into float scales and back, which can lose
        # an output row (4/7 * 7 = 3.9999998) between its shape inference and its kernel
        scales = [1.0, 1.0] + [draw(st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0])) for _ in s[2:]]
        sizes = s[:2] + [int(f * d) for f, d in zip(scales[2:], s[2:])]
        if min(sizes) < 1:
            return
        attrs = dict(mode=mode, coordinate_transformation_mode=ctm)
        if mode == "nearest":
            attrs["nearest_mode"] = draw(st.sampled_from(
                ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
        c.add(op, [c.cur, "", c.const(np.array(scales, np.float32))], sizes, **attrs)
    elif op == "Pad":
        mode = draw(st.sampled_from(["constant", "reflect", "edge"]))
        limit = [1, 1, 1, 1] if mode != "reflect" else [min(1, d - 1) for d in s]
        pads = [draw(st.integers(0, lim)) for lim in limit] * 2
        new = [d + pads[i] + pads[i + 4] for i, d in enumerate(s)]
        c.add(op, [c.cur, c.const(np.array(pads, np.int64))], new, mode=mode)
    elif op == "Transpose":
        perm = draw(st.permutations(range(len(s))))
        c.add(op, [c.cur], [s[p] for p in perm], perm=list(perm))
    elif op in ("ReduceMean", "ReduceSum"):
        axes = sorted(draw(st.sets(st.integers(0, len(s) - 1), min_size=1, max_size=len(s))))
        keep = draw(st.integers(0, 1))
        new = [1 if i in axes else d for i, d in enumerate(s)] if keep else [
            d for i, d in enumerate(s) if i not in axes]
        if not new:
            return
        c.add(op, [c.cur, c.const(np.array(axes, np.int64))], new, keepdims=keep)
    elif op == "Flatten":
        axis = draw(st.integers(1, len(s) - 1))
        c.add(op, [c.cur], [math.prod(s[:axis]), math.prod(s[axis:])], axis=axis)
    elif op == "MatMul":
        m = draw(st.integers(1, 12))
        c.add(op, [c.cur, c.weight((s[-1], m), s[-1])], s[:-1] + [m])
    elif op == "Gemm":
        if len(s) != 2:
            return
        m = draw(st.integers(1, 12))
        tb = draw(st.integers(0, 1))
        w = c.weight((m, s[1]) if tb else (s[1], m), s[1])
        c.add(op, [c.cur, w, c.weight((m,), 4)], [s[0], m], transB=tb,
              alpha=draw(st.sampled_from([1.0, 0.5])), beta=draw(st.sampled_from([1.0, 2.0])))
    elif op == "LayerNormalization":
        axis = draw(st.integers(-len(s), len(s) - 1))
        norm = s[axis:] if axis < 0 else s[axis:]
        c.add(op, [c.cur, c.weight(norm, 1), c.weight(norm, 4)], s, axis=axis, epsilon=1e-3)
    elif op == "Concat":
        axis = draw(st.integers(0, len(s) - 1))
        extra = list(s)
        extra[axis] = draw(st.integers(1, 3))
        new = list(s)
        new[axis] += extra[axis]
        c.add(op, [c.cur, c.weight(extra, 1)], new, axis=axis)
    elif op == "Slice":
        axis = draw(st.integers(0, len(s) - 1))
        step = draw(st.sampled_from([1, 2, -1]))
        d = s[axis]
        start, end = (0, d) if step > 0 else (d - 1, -d - 1)
        n = len(range(*slice(start, end, step).indices(d)))
        new = list(s)
        new[axis] = n
        c.add(op, [c.cur] + [c.const(np.array([v], np.int64)) for v in (start, end, axis, step)],
              new)
    elif op == "Gather":
        axis = draw(st.integers(0, len(s) - 1))
        idx = np.array(draw(st.lists(st.integers(-s[axis], s[axis] - 1), min_size=1,
                                     max_size=4)), np.int64)
        c.add(op, [c.cur, c.const(idx)], s[:axis] + [len(idx)] + s[axis + 1:], axis=axis)
    elif op == "Where":
        cond = c.const(c.rng.random(s) < 0.5)
        c.add(op, [cond, c.cur, c.weight(s[-1:], 1)], s)
    elif op == "Tile":
        reps = [draw(st.integers(1, 2)) for _ in s]
        c.add(op, [c.cur, c.const(np.array(reps, np.int64))], [d * r for d, r in zip(s, reps)])
    elif op == "CumSum":
        axis = c.const(np.array(draw(st.integers(-len(s), len(s) - 1)), np.int64))
        c.add(op, [c.cur, axis], s, exclusive=draw(st.integers(0, 1)),
              reverse=draw(st.integers(0, 1)))
    elif op == "ArgMax":  # int64 out, cast back to keep the chain floating
        axis = draw(st.integers(0, len(s) - 1))
        c.add(op, [c.cur], s[:axis] + [1] + s[axis + 1:], axis=axis)
        c.add("Cast", [c.cur], c.shape, to=_ELEM[c.dtype])
    elif op == "Split":
        axis = draw(st.integers(0, len(s) - 1))
        if s[axis] < 2:
            return
        first = draw(st.integers(1, s[axis] - 1))
        c.n += 1
        outs = [f"t{c.n}a", f"t{c.n}b"]
        c.nodes.append(helper.make_node(op, [c.cur, c.const(np.array(
            [first, s[axis] - first], np.int64))], outs, axis=axis))
        c.cur, c.shape = outs[draw(st.integers(0, 1))], list(s)
        c.shape[axis] = first if c.cur == outs[0] else s[axis] - first
    elif op == "SqrtAbs":
        c.add("Abs", [c.cur], s)
        c.add("Sqrt", [c.cur], s)
    elif op == "Unsqueeze":
        if len(s) >= 4:
            return
        axis = draw(st.integers(-len(s) - 1, len(s)))
        new = list(s)
        new.insert(axis % (len(s) + 1), 1)
        c.add(op, [c.cur, c.const(np.array([axis], np.int64))], new)
    elif op == "Einsum":
        if len(s) != 3:
            return
        m = draw(st.integers(1, 5))
        c.add(op, [c.cur, c.weight((s[0], s[2], m), s[2])], [s[0], s[1], m],
              equation="bij,bjk->bik")
    elif op == "Reshape":
        total = math.prod(s)
        first = draw(st.sampled_from(_divisors(total)))
        c.add(op, [c.cur, c.const(np.array([first, -1], np.int64))], [first, total // first])


@st.composite
def chains(draw, dtype):
    seed = draw(st.integers(0, 2 ** 16))
    if draw(st.booleans()):
        shape = [draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(3, 9)),
                 draw(st.integers(3, 9))]
    else:
        shape = [draw(st.integers(1, 6)) for _ in range(draw(st.integers(2, 3)))]
    chain = _Chain(dtype, shape, seed)
    chain._x_shape = list(shape)
    for _ in range(draw(st.integers(1, 5))):
        ops = (IMAGE_OPS if len(chain.shape) == 4 else MATRIX_OPS) + UNARY + BINARY + ANY_RANK
        _apply(draw, chain, draw(st.sampled_from(ops)))
    x = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    return chain.model(), {"x": x}


_SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(chains(np.float32))
def test_random_float32_chains_agree_with_onnxruntime(case):
    model, feeds = case
    assert_agrees(model, feeds, np.float32)


@_SETTINGS
@given(chains(np.float16))
def test_random_float16_chains_agree_with_onnxruntime(case):
    model, feeds = case
    assert_agrees(model, feeds, np.float16)


# --- targeted variants -------------------------------------------------------------------------

def _single(op, x_shape, inits: dict, attrs=None, *, inputs=None, dtype=np.float32, opset=20,
            out_elem=None):
    elem = _ELEM.get(dtype, TensorProto.FLOAT)
    names = inputs if inputs is not None else ["x"] + list(inits)
    node = helper.make_node(op, names, ["y"], **(attrs or {}))
    graph = helper.make_graph(
        [node], op, [helper.make_tensor_value_info("x", elem, x_shape)],
        [helper.make_tensor_value_info("y", out_elem or elem, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


CONV_CASES = {
    "1d": ((1, 3, 11), (4, 3, 3), dict(pads=[1, 2], strides=[2])),
    "3d": ((1, 2, 5, 6, 4), (3, 2, 3, 2, 2), dict(pads=[1, 0, 1, 1, 1, 0])),
    "depthwise_multiplier": ((2, 4, 7, 7), (8, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),
    "depthwise_stride_dilation": ((1, 6, 9, 9), (6, 1, 3, 3),
                                  dict(group=6, strides=[2, 2], dilations=[2, 2])),
    "grouped": ((1, 6, 8, 8), (9, 2, 3, 3), dict(group=3, auto_pad="SAME_LOWER", strides=[2, 2])),
    "asymmetric_pads": ((1, 3, 6, 7), (5, 3, 2, 3), dict(pads=[0, 2, 1, 0])),
    "stride_over_kernel": ((1, 2, 9, 9), (2, 2, 1, 1), dict(strides=[3, 2])),
    "pointwise": ((2, 16, 5, 5), (8, 16, 1, 1), {}),
    "big_chunked": ((1, 8, 70, 70), (16, 8, 3, 3), dict(pads=[1, 1, 1, 1])),
}


@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_conv_variants_agree_with_onnxruntime(name):
    x_shape, w_shape, attrs = CONV_CASES[name]
    rng = np.random.default_rng(0)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    model = _single("Conv", x_shape, {"w": w, "b": b}, attrs)
    assert_agrees(model, {"x": rng.standard_normal(x_shape).astype(np.float32)})


CONV_TRANSPOSE_CASES = {
    "output_padding": ((1, 2, 4, 4), (2, 3, 3, 3), dict(strides=[2, 2], output_padding=[1, 1])),
    "output_shape": ((1, 2, 4, 5), (2, 3, 3, 3), dict(strides=[2, 2], output_shape=[9, 10])),
    "same_upper": ((1, 2, 4, 4), (2, 2, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    "grouped_dilated": ((1, 4, 5, 5), (4, 2, 2, 2), dict(group=2, dilations=[2, 2],
                                                         pads=[1, 0, 0, 1])),
    "1d": ((2, 3, 6), (3, 2, 4), dict(strides=[3])),
}


@pytest.mark.parametrize("name", sorted(CONV_TRANSPOSE_CASES))
def test_conv_transpose_variants_agree_with_onnxruntime(name):
    x_shape, w_shape, attrs = CONV_TRANSPOSE_CASES[name]
    rng = np.random.default_rng(1)
    w = rng.standard_normal(w_shape).astype(np.float32)
    model = _single("ConvTranspose", x_shape, {"w": w}, attrs)
    assert_agrees(model, {"x": rng.standard_normal(x_shape).astype(np.float32)})


POOL_CASES = {
    "max_ceil_dilated": ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 1],
                                         ceil_mode=1, pads=[1, 1, 0, 1])),
    "max_same_lower": ("MaxPool", dict(kernel_shape=[2, 3], strides=[2, 2],
                                       auto_pad="SAME_LOWER")),
    "avg_include_pad_ceil": ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2],
                                                 pads=[1, 1, 1, 1], count_include_pad=1,
                                                 ceil_mode=1)),
    "avg_exclude_pad": ("AveragePool", dict(kernel_shape=[3, 2], strides=[1, 2],
                                            pads=[1, 0, 2, 1])),
    "avg_same_upper": ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2],
                                           auto_pad="SAME_UPPER")),
}


@pytest.mark.parametrize("name", sorted(POOL_CASES))
def test_pool_variants_agree_with_onnxruntime(name):
    op, attrs = POOL_CASES[name]
    model = _single(op, (2, 3, 9, 8), {}, attrs)
    x = np.random.default_rng(2).standard_normal((2, 3, 9, 8)).astype(np.float32)
    assert_agrees(model, {"x": x})


RESIZE_CASES = [
    (mode, ctm, nearest)
    for mode in ("nearest", "linear", "cubic")
    for ctm in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
    for nearest in (["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
                    if mode == "nearest" else [None])
]


@pytest.mark.parametrize("mode,ctm,nearest", RESIZE_CASES)
@pytest.mark.parametrize("scales", [(1, 1, 1.7, 0.6), (1, 1, 2, 3)])
def test_resize_variants_agree_with_onnxruntime(mode, ctm, nearest, scales):
    attrs = dict(mode=mode, coordinate_transformation_mode=ctm)
    if nearest:
        attrs["nearest_mode"] = nearest
    model = _single("Resize", (1, 2, 5, 7), {"scales": np.array(scales, np.float32)}, attrs,
                    inputs=["x", "", "scales"])
    x = np.random.default_rng(3).standard_normal((1, 2, 5, 7)).astype(np.float32)
    assert_agrees(model, {"x": x})


@pytest.mark.parametrize("dtype,zp", [(np.int8, 3), (np.uint8, 128), (np.int16, -7),
                                      (np.uint16, 1000)])
@pytest.mark.parametrize("per_axis", [False, True])
def test_qdq_agrees_with_onnxruntime(dtype, zp, per_axis):
    rng = np.random.default_rng(4)
    shape = (2, 3, 4)
    scale = (rng.uniform(0.01, 0.1, 3) if per_axis else np.array(0.05)).astype(np.float32)
    zero = np.full(scale.shape, zp, dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape),
         helper.make_tensor_value_info("q", elem, shape)],
        [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero, "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    x = (rng.standard_normal(shape) * 40).astype(np.float32)
    x.flat[:4] = [0.025, -0.075, 0.125, 1e9]  # ties round to even; saturation
    assert_agrees(model, {"x": x})
