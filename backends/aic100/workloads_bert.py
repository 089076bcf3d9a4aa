"""Reference transformer workloads for the cost model's fit and held-out checks: parameters in, a
BERT-large-shaped ONNX model (float32, random weights) out, for quantization by aicc's own passes.

The network is the MLPerf Inference BERT-large (SQuAD v1.1) encoder: inputs ``input_ids``,
``input_mask`` and ``segment_ids`` (int64 ``[batch, seq]``, MLPerf uses seq 384), word, position
and token-type embeddings with LayerNormalization, 24 layers of 16-head self-attention (hidden
1024, head 64) and a 4096-wide GELU feed-forward block, each with a residual Add and a
LayerNormalization, and the 2-way start/end logits: 335 M parameters, 1.34 GB in float32.

Weights are drawn in float32 directly (no float64 temporaries) one tensor at a time and handed to
the ModelProto without an extra copy, so building the full model costs its 1.34 GB and little
more. ``layers``, ``hidden`` and ``seq`` shrink it for fast tests. ``batch`` may be a symbol name
(bind it with ``-batchsize`` / ``symbols``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["bert_large", "BERT_LARGE"]

#: the MLPerf BERT-large geometry
BERT_LARGE = {"layers": 24, "hidden": 1024, "heads": 16, "ffn": 4096, "vocab": 30522,
              "positions": 512, "seq": 384}


class _Graph:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def weight(self, name: str, shape: tuple[int, ...], std: float) -> str:
        value = self.rng.standard_normal(shape, dtype=np.float32)
        value *= np.float32(std)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def linear(self, x: str, cin: int, cout: int, name: str) -> str:
        w = self.weight(f"{name}.weight", (cin, cout), 0.02)
        b = self.const(f"{name}.bias", np.zeros(cout, np.float32))
        return self.node("Add", [self.node("MatMul", [x, w], f"{name}.mm"), b], name)

    def layer_norm(self, x: str, width: int, name: str) -> str:
        g = self.const(f"{name}.gamma", np.ones(width, np.float32))
        b = self.const(f"{name}.beta", np.zeros(width, np.float32))
        return self.node("LayerNormalization", [x, g, b], name, axis=-1, epsilon=1e-12)


def _attention(g: _Graph, x: str, batch_shape: str, heads: int, hidden: int, mask: str,
               tag: str) -> str:
    head = hidden // heads
    split = g.const(f"{tag}.heads_shape", np.array([0, 0, heads, head], np.int64))
    merged = g.const(f"{tag}.merge_shape", np.array([0, 0, hidden], np.int64))

    def heads_of(name: str, perm: list[int]) -> str:
        y = g.linear(x, hidden, hidden, f"{tag}.{name}")
        y = g.node("Reshape", [y, split], f"{tag}.{name}.split")
        return g.node("Transpose", [y], f"{tag}.{name}.heads", perm=perm)

    q = heads_of("query", [0, 2, 1, 3])
    k = heads_of("key", [0, 2, 3, 1])
    v = heads_of("value", [0, 2, 1, 3])
    scores = g.node("MatMul", [q, k], f"{tag}.scores")
    scale = g.const(f"{tag}.scale", np.array(1.0 / np.sqrt(head), np.float32))
    scores = g.node("Mul", [scores, scale], f"{tag}.scaled")
    scores = g.node("Add", [scores, mask], f"{tag}.masked")
    probs = g.node("Softmax", [scores], f"{tag}.probs", axis=-1)
    ctx = g.node("MatMul", [probs, v], f"{tag}.context")
    ctx = g.node("Transpose", [ctx], f"{tag}.context.t", perm=[0, 2, 1, 3])
    ctx = g.node("Reshape", [ctx, merged], f"{tag}.context.merged")
    out = g.linear(ctx, hidden, hidden, f"{tag}.output")
    return g.layer_norm(g.node("Add", [out, x], f"{tag}.residual"), hidden, f"{tag}.norm")


def _feed_forward(g: _Graph, x: str, hidden: int, ffn: int, tag: str) -> str:
    h = g.linear(x, hidden, ffn, f"{tag}.intermediate")
    h = g.node("Gelu", [h], f"{tag}.gelu")
    out = g.linear(h, ffn, hidden, f"{tag}.output")
    return g.layer_norm(g.node("Add", [out, x], f"{tag}.residual"), hidden, f"{tag}.norm")


def bert_large(*, batch: int | str = 1, seq: int = 384, layers: int = 24, hidden: int = 1024,
               heads: int = 16, ffn: int | None = None, vocab: int = 30522, seed: int = 0
               ) -> onnx.ModelProto:
    """A BERT-large-shaped SQuAD model (float32): inputs ``input_ids``, ``input_mask``,
    ``segment_ids`` int64 ``[batch, seq]``, output ``logits`` float32 ``[batch, seq, 2]``."""
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not a multiple of heads {heads}")
    ffn = ffn or 4 * hidden
    g = _Graph(np.random.default_rng(seed))
    words = g.node("Gather", [g.weight("embeddings.word", (vocab, hidden), 0.02), "input_ids"],
                   "embeddings.words")
    types = g.node("Gather", [g.weight("embeddings.type", (2, hidden), 0.02), "segment_ids"],
                   "embeddings.types")
    positions = g.weight("embeddings.position", (seq, hidden), 0.02)
    x = g.node("Add", [g.node("Add", [words, types], "embeddings.sum"), positions],
               "embeddings.all")
    x = g.layer_norm(x, hidden, "embeddings.norm")
    # attention bias: 0 where the mask is 1, -10000 where it is 0, shaped [batch, 1, 1, seq]
    m = g.node("Cast", ["input_mask"], "mask.float", to=TensorProto.FLOAT)
    m = g.node("Sub", [g.const("mask.one", np.array(1.0, np.float32)), m], "mask.inverted")
    m = g.node("Mul", [m, g.const("mask.big", np.array(-10000.0, np.float32))], "mask.bias")
    mask = g.node("Unsqueeze", [m, g.const("mask.axes", np.array([1, 2], np.int64))],
                  "mask.bias4")
    for i in range(layers):
        x = _attention(g, x, "batch", heads, hidden, mask, f"layer{i}.attention")
        x = _feed_forward(g, x, hidden, ffn, f"layer{i}.ffn")
    logits = g.linear(x, hidden, 2, "qa_outputs")
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, [batch, seq])
            for n in ("input_ids", "input_mask", "segment_ids")]
    out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, seq, 2])]
    graph = helper.make_graph(g.nodes, "bert_large", ints, out, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    return model
