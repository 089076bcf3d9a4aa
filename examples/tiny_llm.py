"""A tiny decoder-only transformer built in code: ONNX in the KV-cache style of the vendor's LLM
flow (QEfficient's export) out, plus an onnxruntime reference generator.

Interface (symbols ``batch_size``, ``seq_len``, ``ctx_len``)::

    input_ids      int64 [batch_size, seq_len]          token ids (padding: any id)
    position_ids   int64 [batch_size, seq_len]          position of each token; -1 marks padding
    past_key.N     float [batch_size, heads, ctx_len, head_dim]    the KV cache of layer N
    past_value.N   float [batch_size, heads, ctx_len, head_dim]
 -> logits                     float [batch_size, seq_len, vocab]
    past_key.N_RetainedState   float [batch_size, heads, ctx_len, head_dim]  the updated cache
    past_value.N_RetainedState

Each layer writes its new keys and values into the cache at ``position_ids`` (a one-hot matrix of
positions times the new rows, selected with ``Where``: the ONNX ops every backend has, and exact,
since each cache row receives one value plus zeros; position -1 writes nothing), then attends over
the whole cache with a mask that lets a query at position p see cache rows 0..p (causal, and rows
not yet written are never seen). Token plus learned position embeddings, RMSNorm, 2 heads,
SiLU MLP, 2 layers, vocabulary 64; weights are random but seeded.

``python examples/tiny_llm.py`` compiles the model with a prefill and a decode specialization and
``-retained-state``, generates 32 tokens with ``aicc.generate`` and checks them against
onnxruntime running this (dynamic) model.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["build", "reference_generate", "SPECIALIZATIONS", "VOCAB", "LAYERS", "HEADS",
           "HEAD_DIM", "MAX_POSITIONS", "kv_names"]

VOCAB = 64
LAYERS = 2
HEADS = 2
HEAD_DIM = 16
HIDDEN = HEADS * HEAD_DIM
MLP = 64
MAX_POSITIONS = 256
OPSET = 17

#: Prefill (seq_len = the prompt chunk) and decode (seq_len = 1) over one 64-token cache.
SPECIALIZATIONS = {"specializations": [
    {"name": "prefill", "symbols": {"batch_size": "1", "seq_len": "8", "ctx_len": "64"}},
    {"name": "decode", "symbols": {"batch_size": "1", "seq_len": "1", "ctx_len": "64"}},
]}


def kv_names(layers: int = LAYERS) -> list[str]:
    """``past_key.0, past_value.0, past_key.1, ...``: the KV-cache inputs, in input order."""
    return [f"past_{kind}.{i}" for i in range(layers) for kind in ("key", "value")]


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, name: str, values: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(values), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        self.count += 1
        out = output or f"{op_type.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self.count}_{op_type}",
                                           **attrs))
        return out

    def rmsnorm(self, x: str, gain: str) -> str:
        sq = self.op("Mul", [x, x])
        mean = self.op("ReduceMean", [sq], axes=[-1], keepdims=1)
        rms = self.op("Sqrt", [self.op("Add", [mean, "eps"])])
        return self.op("Mul", [self.op("Div", [x, rms]), gain])

    def heads(self, x: str) -> str:
        """[b, s, D] -> [b, H, s, dh]"""
        return self.op("Transpose", [self.op("Reshape", [x, "heads_shape"])], perm=[0, 2, 1, 3])


def build(*, seed: int = 0, layers: int = LAYERS) -> onnx.ModelProto:
    """The model with symbolic ``batch_size``, ``seq_len`` and ``ctx_len``, checked."""
    rng = np.random.default_rng(seed)
    b = _Builder()

    def w(name: str, fan_in: int, *shape: int) -> str:
        return b.const(name, (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))

    b.const("tok_embed", rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32))
    b.const("pos_embed", (0.5 * rng.standard_normal((MAX_POSITIONS, HIDDEN))).astype(np.float32))
    b.const("eps", np.array(1e-6, np.float32))
    b.const("heads_shape", np.array([0, 0, HEADS, HEAD_DIM], np.int64))
    b.const("hidden_shape", np.array([0, 0, HIDDEN], np.int64))
    b.const("two", np.array(2, np.int64))
    b.const("zero", np.array(0, np.int64))
    b.const("one", np.array(1, np.int64))
    b.const("neg_big", np.array(-1e9, np.float32))
    b.const("inv_sqrt_dh", np.array(1.0 / np.sqrt(HEAD_DIM), np.float32))

    x = b.op("Add", [b.op("Gather", ["tok_embed", "input_ids"]),
                     b.op("Gather", ["pos_embed", "position_ids"])])
    # Positions of the cache rows, and per token which row it writes / which rows it may see.
    ctx = b.op("Gather", [b.op("Shape", ["past_key.0"]), "two"], axis=0)
    rows = b.op("Range", ["zero", ctx, "one"], "cache_rows")                    # [ctx]
    pos = b.op("Unsqueeze", ["position_ids", b.const("axis_last", np.array([-1], np.int64))])
    onehot = b.op("Cast", [b.op("Equal", [pos, rows])], to=TensorProto.FLOAT)  # [b, s, ctx]
    axis1 = b.const("axis_1", np.array([1], np.int64))
    write = b.op("Transpose", [b.op("Unsqueeze", [onehot, axis1])], "kv_write",
                 perm=[0, 1, 3, 2])                                            # [b, 1, ctx, s]
    written = b.op("Greater", [b.op("ReduceMax", [write], axes=[3], keepdims=1),
                               b.const("half", np.array(0.5, np.float32))], "kv_written")
    visible = b.op("Unsqueeze", [b.op("LessOrEqual", [rows, pos]), axis1], "attn_visible")

    for layer in range(layers):
        p = f"layers.{layer}."
        h = b.rmsnorm(x, b.const(p + "attn_norm", np.ones(HIDDEN, np.float32)))
        q = b.heads(b.op("MatMul", [h, w(p + "wq", HIDDEN, HIDDEN, HIDDEN)]))
        k = b.heads(b.op("MatMul", [h, w(p + "wk", HIDDEN, HIDDEN, HIDDEN)]))
        v = b.heads(b.op("MatMul", [h, w(p + "wv", HIDDEN, HIDDEN, HIDDEN)]))
        caches = []
        for kind, new in (("key", k), ("value", v)):
            scattered = b.op("MatMul", [write, new])                           # [b, H, ctx, dh]
            caches.append(b.op("Where", [written, scattered, f"past_{kind}.{layer}"],
                               f"past_{kind}.{layer}_RetainedState"))
        keys_t = b.op("Transpose", [caches[0]], perm=[0, 1, 3, 2])
        scores = b.op("Mul", [b.op("MatMul", [q, keys_t]), "inv_sqrt_dh"])     # [b, H, s, ctx]
        probs = b.op("Softmax", [b.op("Where", [visible, scores, "neg_big"])], axis=-1)
        attn = b.op("Transpose", [b.op("MatMul", [probs, caches[1]])], perm=[0, 2, 1, 3])
        attn = b.op("Reshape", [attn, "hidden_shape"])
        x = b.op("Add", [x, b.op("MatMul", [attn, w(p + "wo", HIDDEN, HIDDEN, HIDDEN)])])
        h = b.rmsnorm(x, b.const(p + "mlp_norm", np.ones(HIDDEN, np.float32)))
        up = b.op("MatMul", [h, w(p + "w_up", HIDDEN, HIDDEN, MLP)])
        act = b.op("Mul", [up, b.op("Sigmoid", [up])])
        x = b.op("Add", [x, b.op("MatMul", [act, w(p + "w_down", MLP, MLP, HIDDEN)])])
    h = b.rmsnorm(x, b.const("final_norm", np.ones(HIDDEN, np.float32)))
    b.op("MatMul", [h, w("lm_head", HIDDEN, HIDDEN, VOCAB)], "logits")

    kv_shape = ["batch_size", HEADS, "ctx_len", HEAD_DIM]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64,
                                            ["batch_size", "seq_len"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64,
                                            ["batch_size", "seq_len"])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, kv_shape)
               for n in kv_names(layers)]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             ["batch_size", "seq_len", VOCAB])]
    outputs += [helper.make_tensor_value_info(n + "_RetainedState", TensorProto.FLOAT, kv_shape)
                for n in kv_names(layers)]
    graph = helper.make_graph(b.nodes, "tiny_llm", inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="aicc-examples")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def reference_generate(model: onnx.ModelProto, prompt: np.ndarray, max_new_tokens: int, *,
                       ctx_len: int, layers: int = LAYERS) -> np.ndarray:
    """Greedy tokens from onnxruntime on the (dynamic) model: the whole prompt in one prefill of
    exactly its length, then one decode step per token, the KV cache passed back by hand."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    prompt = np.asarray(prompt, np.int64).reshape(1, -1)
    n = prompt.shape[1]
    cache = {name: np.zeros((1, HEADS, ctx_len, HEAD_DIM), np.float32)
             for name in kv_names(layers)}
    out_names = ["logits"] + [k + "_RetainedState" for k in kv_names(layers)]

    def step(ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
        results = sess.run(out_names, {"input_ids": ids, "position_ids": pos, **cache})
        for name, value in zip(kv_names(layers), results[1:]):
            cache[name] = value
        return results[0]

    logits = step(prompt, np.arange(n, dtype=np.int64).reshape(1, -1))
    tokens = [int(np.argmax(logits[0, -1]))]
    for i in range(1, max_new_tokens):
        logits = step(np.array([[tokens[-1]]], np.int64), np.array([[n + i - 1]], np.int64))
        tokens.append(int(np.argmax(logits[0, 0])))
    return np.array(tokens, np.int64)


def main() -> int:
    import aicc

    model = build()
    prompt = np.array([3, 14, 15, 9, 26, 5, 35, 8], np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "specializations.json"
        spec.write_text(json.dumps(SPECIALIZATIONS, indent=2))
        qpc = aicc.compile(model, output=Path(tmp) / "tiny_llm.qpc", specializations=spec,
                           retained_state=True)
        session = aicc.load(qpc)
        got = aicc.generate(session, prompt, 32)
    ref = reference_generate(model, prompt, 32, ctx_len=64)
    print("aicc        :", " ".join(map(str, got)))
    print("onnxruntime :", " ".join(map(str, ref)))
    same = bool(np.array_equal(got, ref))
    print("same greedy tokens" if same else "tokens DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
