"""Model builders for the ``cle`` tests: chains of Conv / Gemm / MatMul layers with optional
BatchNormalization and activations, with per-channel weight scales spread on purpose."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from aicc.analyses import AnalysisCache
from aicc import ir
from aicc.pipeline import Instrument, Pipeline, run_pipeline
from aicc.plugins import load_registries
from aicc.program import Program

__all__ = ["cnn", "mlp", "layer_ranges", "initializer", "run_cle"]


def _spread(rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
    if spread <= 1.0:
        return np.ones(n)
    return np.exp(rng.uniform(-np.log(spread), np.log(spread), n))


def _activation(act: str | None, x: str, i: int, channels: int, rank: int, nodes: list,
                inits: list, rng: np.random.Generator) -> str:
    if act is None:
        return x
    y = f"a{i}"
    if act in ("Relu", "Sigmoid", "Tanh"):
        nodes.append(helper.make_node(act, [x], [y], name=f"act{i}"))
    elif act == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", [x], [y], name=f"act{i}", alpha=0.1))
    elif act == "PRelu":
        slope = rng.uniform(0.05, 0.3, (channels,) + (1,) * (rank - 2)).astype(np.float32)
        inits.append(numpy_helper.from_array(slope, f"slope{i}"))
        nodes.append(helper.make_node("PRelu", [x, f"slope{i}"], [y], name=f"act{i}"))
    elif act in ("Relu6", "Clip-neg", "Clip-min-only"):
        lo, hi = {"Relu6": (0.0, 6.0), "Clip-neg": (-1.0, 1.0), "Clip-min-only": (0.0, None)}[act]
        inits.append(numpy_helper.from_array(np.array(lo, np.float32), f"lo{i}"))
        names = [x, f"lo{i}"]
        if hi is not None:
            inits.append(numpy_helper.from_array(np.array(hi, np.float32), f"hi{i}"))
            names.append(f"hi{i}")
        nodes.append(helper.make_node("Clip", names, [y], name=f"act{i}"))
    elif act == "Relu6-const":
        for name, v in ((f"lo{i}", 0.0), (f"hi{i}", 6.0)):
            nodes.append(helper.make_node("Constant", [], [name], name=f"const_{name}",
                                          value=numpy_helper.from_array(np.array(v, np.float32))))
        nodes.append(helper.make_node("Clip", [x, f"lo{i}", f"hi{i}"], [y], name=f"act{i}"))
    elif act == "Relu6-attr":  # opset 6..10 form
        nodes.append(helper.make_node("Clip", [x], [y], name=f"act{i}", min=0.0, max=6.0))
    else:
        raise ValueError(act)
    return y


def _bn(i: int, x: str, channels: int, nodes: list, inits: list, rng: np.random.Generator,
        beta: Any = None, gamma: Any = None) -> str:
    # moderate BN gains keep outputs O(1), so float32 rounding stays far below the tolerance
    values = {"gamma": rng.uniform(0.5, 1.5, channels) if gamma is None else gamma,
              "beta": rng.standard_normal(channels) if beta is None else beta,
              "mean": 0.5 * rng.standard_normal(channels), "var": rng.uniform(0.5, 2.0, channels)}
    for k, v in values.items():
        inits.append(numpy_helper.from_array(np.broadcast_to(np.asarray(v, np.float32),
                                                             (channels,)).copy(), f"{k}{i}"))
    nodes.append(helper.make_node("BatchNormalization", [x] + [f"{k}{i}" for k in values],
                                  [f"bn{i}"], name=f"bn{i}", epsilon=1e-3))
    return f"bn{i}"


def _finish(nodes, inits, x_shape, out, opset) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         x_shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model


def _mismatch(ws: list[np.ndarray], groups: list[int], rng: np.random.Generator,
              spread: float) -> None:
    """Spread ranges without blowing up values: output channel o of layer i times f_o, the
    weights reading it in layer i + 1 divided by f_o (f log-uniform in [1/spread, spread])."""
    for i in range(len(ws) - 1):
        f = _spread(rng, ws[i].shape[0], spread)
        ws[i] *= f.reshape((-1,) + (1,) * (ws[i].ndim - 1))
        nxt, g = ws[i + 1], groups[i + 1]
        nxt.reshape(g, nxt.shape[0] // g, nxt.shape[1], -1)[...] /= \
            f.reshape(g, 1, nxt.shape[1], 1)


def cnn(layers: Sequence[dict], *, cin: int = 3, spatial: int = 6, batch: int = 2, seed: int = 0,
        spread: float = 1.0, opset: int = 17, rank: int = 4) -> onnx.ModelProto:
    """x -> (Conv [-> BN] [-> act]) per entry of ``layers`` -> output.

    Entry keys: ``out`` (channels), ``group`` (1; "dw" = depthwise), ``k`` (3), ``pad`` (k // 2),
    ``bias`` (True), ``bn`` (True), ``act`` ("Relu"; see ``_activation``), ``beta``/``gamma``
    (BN values). Weights are N(0, 1/fan_in); ``spread`` mismatches channel ranges (``_mismatch``).
    """
    rng = np.random.default_rng(seed)
    nodes: list = []
    inits: list = []
    spatial_dims = rank - 2
    ws, groups, c = [], [], cin
    for spec in layers:
        group = c if spec.get("group") == "dw" else spec.get("group", 1)
        out = c if spec.get("group") == "dw" else spec.get("out", c)
        k = spec.get("k", 3)
        fan_in = (c // group) * k ** spatial_dims
        ws.append(rng.standard_normal((out, c // group) + (k,) * spatial_dims) / np.sqrt(fan_in))
        groups.append(group)
        c = out
    _mismatch(ws, groups, rng, spread)
    x = "x"
    for i, (spec, w, group) in enumerate(zip(layers, ws, groups)):
        out = w.shape[0]
        k = spec.get("k", 3)
        pad = spec.get("pad", k // 2)
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        inputs = [x, f"w{i}"]
        if spec.get("bias", True):
            inits.append(numpy_helper.from_array(rng.standard_normal(out).astype(np.float32),
                                                 f"b{i}"))
            inputs.append(f"b{i}")
        nodes.append(helper.make_node("Conv", inputs, [f"y{i}"], name=f"conv{i}", group=group,
                                      pads=[pad] * (2 * spatial_dims)))
        x = f"y{i}"
        if spec.get("bn", True):
            x = _bn(i, x, out, nodes, inits, rng, spec.get("beta"), spec.get("gamma"))
        x = _activation(spec.get("act", "Relu"), x, i, out, rank, nodes, inits, rng)
    return _finish(nodes, inits, [batch, cin] + [spatial] * spatial_dims, x, opset)


def mlp(layers: Sequence[dict], *, k: int = 5, batch: int = 3, seed: int = 0, op: str = "Gemm",
        trans_b: int = 1, spread: float = 1.0, alpha: float = 1.0) -> onnx.ModelProto:
    """x [batch, k] -> (Gemm or MatMul [+ Add bias] [-> BN] [-> act]) per entry -> output."""
    rng = np.random.default_rng(seed)
    nodes: list = []
    inits: list = []
    ws, c = [], k
    for spec in layers:
        ws.append(rng.standard_normal((spec["out"], c)) / np.sqrt(c))
        c = spec["out"]
    _mismatch(ws, [1] * len(ws), rng, spread)
    x = "x"
    for i, (spec, w) in enumerate(zip(layers, ws)):
        out = spec["out"]
        bias = rng.standard_normal(out).astype(np.float32)
        if op == "Gemm":
            stored = w if trans_b else w.T
            inits.append(numpy_helper.from_array(stored.astype(np.float32), f"w{i}"))
            inputs = [x, f"w{i}"]
            if spec.get("bias", True):
                inits.append(numpy_helper.from_array(bias, f"b{i}"))
                inputs.append(f"b{i}")
            nodes.append(helper.make_node("Gemm", inputs, [f"y{i}"], name=f"fc{i}",
                                          transB=trans_b, alpha=alpha, beta=1.0))
            x = f"y{i}"
        else:
            inits.append(numpy_helper.from_array(w.T.astype(np.float32), f"w{i}"))
            nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
            x = f"m{i}"
            if spec.get("bias", True):
                inits.append(numpy_helper.from_array(bias, f"b{i}"))
                nodes.append(helper.make_node("Add", [x, f"b{i}"], [f"y{i}"], name=f"add{i}"))
                x = f"y{i}"
        if spec.get("bn", False):
            x = _bn(i, x, out, nodes, inits, rng, spec.get("beta"), spec.get("gamma"))
        x = _activation(spec.get("act", "Relu"), x, i, out, 2, nodes, inits, rng)
    return _finish(nodes, inits, [batch, k], x, 17)


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def layer_ranges(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per layer name: (range per output channel, range per input channel) of its weights."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or node.input[1] not in inits:
            continue
        w = np.abs(inits[node.input[1]].astype(np.float64))
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            w = w if trans_b else w.T
        elif node.op_type == "MatMul":
            w = w.T
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        per_out = w.reshape(w.shape[0], -1).max(1)
        grouped = w.reshape(group, w.shape[0] // group, w.shape[1], -1)
        per_in = grouped.max(axis=(1, 3)).reshape(-1)
        out[node.name] = (per_out, per_in)
    return out


class _Counters(Instrument):
    def after_pass(self, index, step, program, ctx):
        self.counters = dict(ctx.counters)


def run_cle(model: onnx.ModelProto, options: dict | None = None, *,
            passes: Sequence[Any] | None = None, analyses: AnalysisCache | None = None
            ) -> tuple[Program, dict[str, int]]:
    """Run ``cle`` (or the given pipeline) on a copy of ``model``: (Program, counters of the
    last pass)."""
    registries = load_registries()
    probe = _Counters()
    program = Program.from_model(ir.load_model(model.SerializeToString()))
    pipeline = Pipeline.build(list(passes or [("cle", dict(options or {}))]), registries.passes)
    program = run_pipeline(pipeline, program, registries=registries, instruments=[probe],
                           analyses=analyses)
    return program, probe.counters
