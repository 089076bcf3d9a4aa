"""Interpreter benchmark: a ResNet-18-like CNN and a transformer encoder in, ratios out.

Everything is measured in the same run on the same machine:

* time per inference: interpreter vs ``onnx.reference.ReferenceEvaluator`` vs onnxruntime;
* Conv/MatMul/Gemm throughput (GFLOP/s, from the interpreter's per-op profile) as a fraction of
  numpy's own float32 matmul on the same GEMM shapes (and, for scale, a square 1024 matmul);
* peak traced memory of one run (tracemalloc; feeds allocated inside the window, weights not) vs
  the largest live set: the bytes of distinct tensor buffers alive at the worst step of the
  interpreter's own schedule.

Targets: >= 10x faster than the reference evaluator, Conv/MatMul >= 0.5 of numpy matmul
throughput, peak memory <= 1.5x the largest live set. ``--quick`` shrinks inputs and repetitions.

Run: ``.venv/bin/python benchmarks/interpreter.py [--quick]``
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from aicc.backends.interpreter.engine import Interpreter

__all__ = ["build_resnet18", "build_encoder", "main"]


# --- model builders ----------------------------------------------------------------------------

class _Builder:
    """Tiny graph builder: unique names, random initializers, node list."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def weight(self, prefix: str, shape, scale: float | None = None) -> str:
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
        scale = scale if scale is not None else math.sqrt(2.0 / fan_in)
        return self.const(prefix, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def op(self, op_type: str, inputs, n_out: int = 1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name(op_type),
                                           **attrs))
        return outs[0] if n_out == 1 else outs


def _conv_bn(b: _Builder, x: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
    w = b.weight("w", (cout, cin, k, k))
    y = b.op("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride],
             pads=[k // 2] * 4)
    gamma = b.const("gamma", b.rng.uniform(0.5, 1.5, cout).astype(np.float32))
    beta = b.const("beta", (b.rng.standard_normal(cout) * 0.1).astype(np.float32))
    mean = b.const("mean", (b.rng.standard_normal(cout) * 0.1).astype(np.float32))
    var = b.const("var", b.rng.uniform(0.5, 1.5, cout).astype(np.float32))
    y = b.op("BatchNormalization", [y, gamma, beta, mean, var], epsilon=1e-5)
    return b.op("Relu", [y]) if relu else y


def build_resnet18(batch: int = 1, size: int = 224, classes: int = 1000,
                   seed: int = 0) -> onnx.ModelProto:
    """A ResNet-18-shaped CNN (BasicBlocks 2-2-2-2, unfused BatchNorm) with random weights."""
    b = _Builder(seed)
    x = _conv_bn(b, "input", 3, 64, 7, 2, relu=True)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = _conv_bn(b, x, cin, cout, 3, stride, relu=True)
            y = _conv_bn(b, y, cout, cout, 3, 1, relu=False)
            short = _conv_bn(b, x, cin, cout, 1, stride, relu=False) if (
                stride != 1 or cin != cout) else x
            x = b.op("Relu", [b.op("Add", [y, short])])
            cin = cout
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    fc_w = b.weight("fc_w", (classes, 512))
    fc_b = b.const("fc_b", np.zeros(classes, np.float32))
    b.nodes.append(helper.make_node("Gemm", [x, fc_w, fc_b], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        b.nodes, "resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def build_encoder(batch: int = 1, seq: int = 128, dim: int = 256, heads: int = 4,
                  ffn: int = 1024, layers: int = 4, seed: int = 0) -> onnx.ModelProto:
    """A post-norm transformer encoder (MHA + GELU FFN, LayerNormalization) with random weights."""
    b = _Builder(seed)
    hd = dim // heads
    x = "tokens"
    split_shape = b.const("split_shape", np.array([batch, seq, heads, hd], np.int64))
    merge_shape = b.const("merge_shape", np.array([batch, seq, dim], np.int64))
    scale = b.const("scale", np.array(1 / math.sqrt(hd), np.float32))
    for _ in range(layers):
        qkv = []
        for _part in range(3):
            h = b.op("Add", [b.op("MatMul", [x, b.weight("w", (dim, dim))]),
                             b.const("b", np.zeros(dim, np.float32))])
            h = b.op("Reshape", [h, split_shape])
            qkv.append(h)
        q = b.op("Transpose", [qkv[0]], perm=[0, 2, 1, 3])
        k = b.op("Transpose", [qkv[1]], perm=[0, 2, 3, 1])
        v = b.op("Transpose", [qkv[2]], perm=[0, 2, 1, 3])
        att = b.op("Softmax", [b.op("Mul", [b.op("MatMul", [q, k]), scale])], axis=-1)
        ctx = b.op("Transpose", [b.op("MatMul", [att, v])], perm=[0, 2, 1, 3])
        ctx = b.op("Reshape", [ctx, merge_shape])
        out = b.op("Add", [b.op("MatMul", [ctx, b.weight("wo", (dim, dim))]),
                           b.const("bo", np.zeros(dim, np.float32))])
        x = b.op("LayerNormalization", [b.op("Add", [x, out]),
                                        b.const("g", np.ones(dim, np.float32)),
                                        b.const("beta", np.zeros(dim, np.float32))], axis=-1)
        h = b.op("Gelu", [b.op("MatMul", [x, b.weight("w1", (dim, ffn))])])
        h = b.op("MatMul", [h, b.weight("w2", (ffn, dim))])
        x = b.op("LayerNormalization", [b.op("Add", [x, h]),
                                        b.const("g", np.ones(dim, np.float32)),
                                        b.const("beta", np.zeros(dim, np.float32))], axis=-1)
    b.nodes.append(helper.make_node("Identity", [x], ["encoded"], name="out"))
    graph = helper.make_graph(
        b.nodes, "encoder",
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, [batch, seq, dim])],
        [helper.make_tensor_value_info("encoded", TensorProto.FLOAT, [batch, seq, dim])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    return model


# --- measurements ------------------------------------------------------------------------------

def _once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _timed(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` calls after one warm-up call (robust on a shared machine)."""
    fn()
    return min(_once(fn) for _ in range(repeat))


def _gemm_shapes(model: onnx.ModelProto, interp: Interpreter, feeds) -> list[tuple]:
    """(op type, flops, numpy operands) for every Conv / MatMul / Gemm node, from a real run."""
    shapes: dict[str, tuple] = {}
    interp.run(feeds, observe=lambda n, a: shapes.__setitem__(n, a.shape))
    consts = {i.name: tuple(i.dims) for i in model.graph.initializer}
    shape_of = {**consts, **shapes}
    out = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            x, w, y = shape_of[node.input[0]], shape_of[node.input[1]], shape_of[node.output[0]]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            n, m, p = x[0], w[0], math.prod(y[2:])
            ck = math.prod(w[1:])
            flops = 2 * n * m * p * ck
            operands = ((group, m // group, ck), (n, group, ck, p))
        elif node.op_type == "MatMul":
            a, bshape = shape_of[node.input[0]], shape_of[node.input[1]]
            batch = math.prod(np.broadcast_shapes(a[:-2], bshape[:-2]))
            flops = 2 * batch * a[-2] * a[-1] * bshape[-1]
            operands = (a, bshape)
        elif node.op_type == "Gemm":
            attrs = {a.name: a.i for a in node.attribute}
            a, bshape = shape_of[node.input[0]], shape_of[node.input[1]]
            a = a[::-1] if attrs.get("transA") else a
            bshape = bshape[::-1] if attrs.get("transB") else bshape
            flops = 2 * a[0] * a[1] * bshape[1]
            operands = (a, bshape)
        else:
            continue
        out.append((node.op_type, flops, operands))
    return out


def _numpy_gemms(gemms: list[tuple]) -> Callable[[], None]:
    """A function running numpy's float32 matmul on the operand shapes the model's GEMMs have."""
    rng = np.random.default_rng(1)
    pairs = [(rng.standard_normal(a).astype(np.float32), rng.standard_normal(b).astype(np.float32))
             for _, _, (a, b) in gemms]

    def run():
        for a, b in pairs:
            np.matmul(a, b)

    return run


def _square_matmul_gflops(n: int = 1024, repeat: int = 5) -> float:
    a = np.random.default_rng(2).standard_normal((n, n)).astype(np.float32)
    return 2 * n ** 3 / _timed(lambda: a @ a, repeat) / 1e9


def _memory(interp: Interpreter, feeds) -> tuple[int, int]:
    """(peak traced bytes of one run, largest live set of distinct buffers in the schedule)."""
    held: dict[str, np.ndarray] = {}
    interp.run(feeds, observe=lambda n, a: held.__setitem__(n, a))
    consts = interp.constant_names  # weights are allocated before the run: not in the live set
    buf_of, size_of = {}, {}
    for name, arr in held.items():
        base = arr
        while isinstance(base.base, np.ndarray):
            base = base.base
        buf_of[name] = id(base)
        size_of[id(base)] = base.nbytes
    live = {n for n in feeds}
    worst = 0
    for step in interp.schedule():
        live.update(n for n in step.outputs if n)
        bufs = {buf_of[n] for n in live if n in buf_of and n not in consts}
        worst = max(worst, sum(size_of[b] for b in bufs))
        live.difference_update(step.frees)
    held.clear()
    tracemalloc.start()
    fresh = {k: v.copy() for k, v in feeds.items()}
    interp.run(fresh)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, worst


def measure(title: str, model: onnx.ModelProto, feeds: dict, *, repeat: int,
            ref_repeat: int) -> dict:
    """Time the interpreter, onnxruntime and numpy's GEMMs in interleaved rounds (best of each),
    then the reference evaluator; profile one run per round for the Conv/MatMul share."""
    interp = Interpreter(model)
    prof = Interpreter(model, profile=True)
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy threads after
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    gemms = _gemm_shapes(model, prof, feeds)
    dense_ops = {op for op, _, _ in gemms}
    numpy_gemms = _numpy_gemms(gemms)
    runs = {"interp": lambda: interp.run(feeds), "ort": lambda: sess.run(None, feeds),
            "numpy": numpy_gemms}
    best = {k: math.inf for k in runs}
    prof_best = (math.inf, 0.0, {})
    for fn in runs.values():
        fn()
    for _ in range(repeat):
        for key, fn in runs.items():
            best[key] = min(best[key], _once(fn))
        prof.op_times.clear()
        total = _once(lambda: prof.run(feeds))
        if total < prof_best[0]:
            dense = sum(prof.op_times[op][1] for op in dense_ops)
            prof_best = (total, dense, {op: t for op, (_, t) in prof.op_times.items()})
    ref = ReferenceEvaluator(model)
    t_ref = _timed(lambda: ref.run(None, feeds), ref_repeat)
    best["interp"] = min(best["interp"], _timed(runs["interp"], repeat))
    # onnxruntime with its default (spinning) thread pool, alone: its best case
    fast = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    best["ort"] = min(best["ort"], _timed(lambda: fast.run(None, feeds), repeat))
    del fast
    ours = list(interp.run(feeds).values())[0]
    theirs = sess.run(None, feeds)[0]
    err = float(np.max(np.abs(ours - theirs)) / (np.max(np.abs(theirs)) + 1e-12))
    flops = sum(f for _, f, _ in gemms)
    total, t_dense, op_times = prof_best
    peak, live = _memory(interp, feeds)
    return {"title": title, "interp": best["interp"], "ort": best["ort"], "ref": t_ref,
            "err": err, "dense_gflops": flops / t_dense / 1e9,
            "numpy_gflops": flops / best["numpy"] / 1e9, "dense_share": t_dense / total,
            "peak": peak, "live": live, "nodes": len(model.graph.node), "op_times": op_times}


def _report(r: dict) -> None:
    mb = 1 / 2 ** 20
    print(f"\n== {r['title']} ({r['nodes']} nodes)")
    print(f"  interpreter            {r['interp'] * 1e3:9.1f} ms")
    print(f"  onnxruntime            {r['ort'] * 1e3:9.1f} ms   (interpreter is "
          f"{r['interp'] / r['ort']:.1f}x slower)")
    print(f"  ReferenceEvaluator     {r['ref'] * 1e3:9.1f} ms   (interpreter is "
          f"{r['ref'] / r['interp']:.1f}x faster; target >= 10x)")
    print(f"  max rel. diff vs ORT   {r['err']:.2e}")
    ratio = r["dense_gflops"] / r["numpy_gflops"]
    print(f"  Conv/MatMul/Gemm       {r['dense_gflops']:9.1f} GFLOP/s vs numpy matmul on the same "
          f"shapes {r['numpy_gflops']:.1f} GFLOP/s = {ratio:.2f} (target >= 0.5); "
          f"{r['dense_share'] * 100:.0f}% of run time")
    top = sorted(r["op_times"].items(), key=lambda kv: -kv[1])[:5]
    print("  time by op (profiled)  " + ", ".join(f"{op} {t * 1e3:.1f} ms" for op, t in top))
    print(f"  peak traced memory     {r['peak'] * mb:9.1f} MiB vs largest live set "
          f"{r['live'] * mb:.1f} MiB = {r['peak'] / r['live']:.2f}x (target <= 1.5x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs, fewer repetitions")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    size, seq = (112, 64) if args.quick else (224, 128)
    repeat, ref_repeat = (5, 1) if args.quick else (12, 2)
    print(f"numpy {np.__version__}, onnxruntime {ort.__version__}, onnx {onnx.__version__}; "
          f"numpy square 1024 float32 matmul: {_square_matmul_gflops():.1f} GFLOP/s")
    cnn = build_resnet18(size=size)
    enc = build_encoder(seq=seq)
    results = [
        measure(f"ResNet-18 shape, 1x3x{size}x{size}", cnn,
                {"input": rng.standard_normal((1, 3, size, size)).astype(np.float32)},
                repeat=repeat, ref_repeat=ref_repeat),
        measure(f"transformer encoder, 4 layers, 1x{seq}x256", enc,
                {"tokens": rng.standard_normal((1, seq, 256)).astype(np.float32)},
                repeat=repeat, ref_repeat=ref_repeat),
    ]
    for r in results:
        _report(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
