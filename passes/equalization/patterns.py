"""Pattern matching for ``cle``: an ONNX graph -> chains of layers joined by scalable activations.

A *layer* is a Conv (any group count, channels on axis 1), a Gemm (``transA=0``) or a MatMul with a
constant 2-D right operand and an optional following ``Add`` of a per-channel constant as its bias
(channels on the last axis). Its weights are held in float64 in one canonical form,
``[C_out, C_in / group, *kernel]`` (dense layers: ``[N, K]``, group 1), so ranges, scaling and bias
absorption are written once for all of them.

A *link* joins layer 1 to layer 2 when layer 1's output reaches layer 2's data input through at
most one positively homogeneous activation, every tensor on the way has a single reader and none is
a graph output. Activations: Relu, LeakyRelu, PRelu (f(x / s) = f(x) / s for s > 0), and the
bounded ReLU family -- ``Clip(0, M)`` (attributes or initializer inputs, ReLU6 is M = 6) and
``Relu -> Min(constant)``, which ``cle`` writes itself -- whose bound scales with the channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from aicc.errors import PassError

__all__ = ["Layer", "Activation", "Link", "const_value", "refuse_non_float", "find_chains"]

LAYER_OPS = ("Conv", "Gemm", "MatMul")
_WEIGHT_OPS = LAYER_OPS + ("ConvTranspose",)
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                  "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
                  "QGemm", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearGlobalAveragePool"}


def const_value(t: gs.Tensor) -> np.ndarray | None:
    """The value of an initializer or of a ``Constant`` node's output; None for anything else."""
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    if isinstance(t, gs.Variable) and len(t.inputs) == 1 and t.inputs[0].op == "Constant":
        value = t.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(value.values)
    return None


def refuse_non_float(graph: gs.Graph, where: str) -> None:
    """Raise PassError naming the first node that shows the graph is not a float model."""
    hint = "run cle on the float model, before quantization or fp16 conversion"
    for node in graph.nodes:
        if node.op in _QUANTIZED_OPS:
            raise PassError(f"cle needs a float model, and node '{node.name}' ({node.op}) is "
                            "quantized", where=where, hint=hint)
        if node.op in _WEIGHT_OPS:
            for t in node.inputs[1:]:
                v = const_value(t)
                if v is not None and v.dtype not in (np.float32, np.float64):
                    raise PassError(f"cle needs a float32 model, and node '{node.name}' "
                                    f"({node.op}) has {v.dtype} constant '{t.name}'",
                                    where=where, hint=hint)


@dataclass(eq=False)
class Layer:
    """A Conv/Gemm/MatMul whose weights ``cle`` may rescale (float64 working copies)."""

    node: gs.Node
    kind: str                      # "conv": channels on axis 1; "dense": on the last axis
    w: np.ndarray                  # [C_out, C_in / group, *kernel]
    b: np.ndarray                  # [C_out]; zeros if the layer has no bias
    group: int
    dtype: np.dtype
    out: gs.Variable               # the layer's output (after its bias Add for MatMul)
    has_bias: bool
    bias_add: gs.Node | None = None
    changed: bool = False

    @property
    def c_out(self) -> int:
        return self.w.shape[0]

    @property
    def c_in(self) -> int:
        return self.w.shape[1] * self.group

    @property
    def depthwise(self) -> bool:
        """One channel in, one channel out per group: scaling in and out act on the same channel."""
        return self.group == self.c_out and self.w.shape[1] == 1 and self.group > 1

    def _grouped(self) -> np.ndarray:
        g = self.group
        return self.w.reshape(g, self.c_out // g, self.w.shape[1], -1)

    def out_range(self) -> np.ndarray:
        return np.abs(self.w).reshape(self.c_out, -1).max(axis=1)

    def in_range(self) -> np.ndarray:
        return np.abs(self._grouped()).max(axis=(1, 3)).reshape(self.c_in)

    def scale_out(self, factor: np.ndarray) -> None:
        """Output channel o -> factor[o] * output channel o."""
        self.w *= factor.reshape((-1,) + (1,) * (self.w.ndim - 1))
        self.b *= factor
        self.changed = True

    def scale_in(self, factor: np.ndarray) -> None:
        """Weights reading input channel i are multiplied by factor[i]."""
        g = self.group
        self._grouped()[...] *= factor.reshape(g, 1, self.w.shape[1], 1)
        self.changed = True

    def input_bias_effect(self, c: np.ndarray) -> np.ndarray:
        """How much the output moves when constant ``c`` (per input channel) is added to the input."""
        g = self.group
        moved = self._grouped() * c.reshape(g, 1, self.w.shape[1], 1)
        return moved.sum(axis=(2, 3)).reshape(self.c_out)

    def zero_padded(self) -> bool:
        """True if some outputs read implicit zero padding (bias absorption is inexact there)."""
        if self.kind != "conv":
            return False
        pads = self.node.attrs.get("pads") or []
        auto = self.node.attrs.get("auto_pad", "NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        return any(int(p) for p in pads) or (auto.startswith("SAME") and any(
            k > 1 for k in self.w.shape[2:]))


@dataclass(eq=False)
class Activation:
    """What sits between two layers of a link."""

    kind: str                      # none | relu | leaky | prelu | bounded
    nodes: list[gs.Node] = field(default_factory=list)
    bound: np.ndarray | None = None  # per-channel upper bound (bounded)


@dataclass(eq=False)
class Link:
    first: Layer
    act: Activation
    second: Layer


def _per_channel(v: np.ndarray, channels: int, kind: str, rank: int | None) -> np.ndarray | None:
    """``v`` as one value per channel if it broadcasts like a per-channel constant, else None."""
    shape = list(v.shape)
    if kind == "conv":
        if rank is None or len(shape) > rank:
            return None
        shape = [1] * (rank - len(shape)) + shape
        ok = shape[0] == 1 and shape[1] in (1, channels) and all(d == 1 for d in shape[2:])
    else:
        ok = all(d == 1 for d in shape[:-1]) and (not shape or shape[-1] in (1, channels))
    if not ok:
        return None
    return np.broadcast_to(v.reshape(-1).astype(np.float64), (channels,)).copy()


def parse_layer(node: gs.Node, graph_outputs: set[str]) -> Layer | str:
    """A Layer, or the reason the node cannot take part."""
    if len(node.inputs) < 2:
        return "it has no weight input"
    w = const_value(node.inputs[1])
    if w is None:
        return f"its weights '{node.inputs[1].name}' are not constant"
    bias_t = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    bias = None if bias_t is None else const_value(bias_t)
    if bias_t is not None and bias is None:
        return f"its bias '{bias_t.name}' is not constant"
    dtype, out, add = w.dtype, node.outputs[0], None
    if node.op == "Conv":
        if w.ndim < 3:
            return f"weights of rank {w.ndim}"
        group = int(node.attrs.get("group", 1))
        c_out = w.shape[0]
        if group < 1 or c_out % group:
            return f"group {group} does not divide {c_out} output channels"
        b = np.zeros(c_out) if bias is None else bias.astype(np.float64).reshape(c_out)
        return Layer(node, "conv", w.astype(np.float64), b, group, dtype, out, bias is not None)
    if node.op == "Gemm":
        if int(node.attrs.get("transA", 0)):
            return "Gemm with transA=1 (its input channels are not on the last axis)"
        mat = w.astype(np.float64) * float(node.attrs.get("alpha", 1.0))
        mat = mat if int(node.attrs.get("transB", 0)) else mat.T
        b = np.zeros(mat.shape[0])
        if bias is not None:
            pc = _per_channel(bias, mat.shape[0], "dense", None)
            if pc is None:
                return f"Gemm bias C of shape {list(bias.shape)} is not one value per channel"
            b = pc * float(node.attrs.get("beta", 1.0))
        return Layer(node, "dense", mat, b, 1, dtype, out, bias is not None)
    # MatMul: x @ B, with an optional Add of a per-channel constant as bias
    if w.ndim != 2:
        return f"MatMul weights of rank {w.ndim} (need 2)"
    mat = w.astype(np.float64).T
    b, has_bias = np.zeros(mat.shape[0]), False
    if len(out.outputs) == 1 and out.name not in graph_outputs and out.outputs[0].op == "Add":
        add = out.outputs[0]
        other = [t for t in add.inputs if t is not out]
        cval = const_value(other[0]) if len(other) == 1 else None
        pc = None if cval is None else _per_channel(cval, mat.shape[0], "dense", None)
        if pc is not None:
            b, has_bias, out = pc, True, add.outputs[0]
        else:
            add = None
    return Layer(node, "dense", mat, b, 1, dtype, out, has_bias, bias_add=add)


def _single_reader(t: gs.Tensor, graph_outputs: set[str]) -> gs.Node | str:
    if t.name in graph_outputs:
        return f"'{t.name}' is a graph output"
    if len(t.outputs) != 1:
        return f"'{t.name}' has {len(t.outputs)} readers"
    return t.outputs[0]


def _clip_bounds(node: gs.Node) -> tuple[float, float] | str:
    lo, hi = node.attrs.get("min"), node.attrs.get("max")
    for i in (1, 2):
        if len(node.inputs) > i and node.inputs[i].name:
            v = const_value(node.inputs[i])
            if v is None or v.size != 1:
                return f"Clip '{node.name}' has a non-constant bound '{node.inputs[i].name}'"
            if i == 1:
                lo = float(v.reshape(()))
            else:
                hi = float(v.reshape(()))
    lo = -np.inf if lo is None else float(lo)
    hi = np.inf if hi is None else float(hi)
    return lo, hi


def _activation(node: gs.Node, x: gs.Tensor, first: Layer, graph_outputs: set[str]
                ) -> tuple[Activation, gs.Tensor] | str:
    """Match the activation at ``node`` (reading ``x``); returns it and the tensor after it."""
    channels = first.c_out
    if node.op in LAYER_OPS:
        return Activation("none"), x
    if node.inputs[0] is not x or any(t is x for t in node.inputs[1:]):
        return f"'{node.name}' ({node.op}) does not read '{x.name}' as its data input only"
    out = node.outputs[0]
    if node.op in ("LeakyRelu", "PRelu"):
        return Activation("leaky" if node.op == "LeakyRelu" else "prelu", [node]), out
    if node.op == "Clip":
        bounds = _clip_bounds(node)
        if isinstance(bounds, str):
            return bounds
        lo, hi = bounds
        if lo != 0.0:
            return f"Clip '{node.name}' has min {lo:g}, not 0: not a (bounded) ReLU"
        if not np.isfinite(hi):
            return Activation("relu", [node]), out
        if hi <= 0:
            return f"Clip '{node.name}' has max {hi:g} <= 0"
        return Activation("bounded", [node], np.full(channels, hi)), out
    if node.op != "Relu":
        return (f"next op '{node.name}' ({node.op}) is not a positively homogeneous "
                "activation or a layer")
    reader = _single_reader(out, graph_outputs)
    if isinstance(reader, gs.Node) and reader.op == "Min" and len(reader.inputs) == 2 \
            and sum(t is out for t in reader.inputs) == 1:
        v = const_value(reader.inputs[1] if reader.inputs[0] is out else reader.inputs[0])
        rank = first.w.ndim if first.kind == "conv" else None
        bound = None if v is None else _per_channel(v, channels, first.kind, rank)
        if bound is None or not np.all(bound >= 0):
            return (f"Min '{reader.name}' after Relu '{node.name}' is not a non-negative "
                    "per-channel constant bound")
        return Activation("bounded", [node, reader], bound), reader.outputs[0]
    return Activation("relu", [node]), out


def _next(first: Layer, layers: dict[int, Layer | str], graph_outputs: set[str]) -> Link | str:
    reader = _single_reader(first.out, graph_outputs)
    if isinstance(reader, str):
        return reader
    if reader.op == "BatchNormalization":
        return f"BatchNormalization '{reader.name}' after it could not be folded"
    matched = _activation(reader, first.out, first, graph_outputs)
    if isinstance(matched, str):
        return matched
    act, t = matched
    if act.kind != "none":
        reader = _single_reader(t, graph_outputs)
        if isinstance(reader, str):
            return reader
    if reader.op not in LAYER_OPS:
        return f"next op '{reader.name}' ({reader.op}) is not a layer cle supports"
    second = layers.get(id(reader))
    if isinstance(second, str) or second is None:
        return f"next layer '{reader.name}': {second or 'not parsed'}"
    if reader.inputs[0] is not t or any(x is t for x in reader.inputs[1:]):
        return f"next layer '{reader.name}' does not read '{t.name}' as its data input"
    if second.kind != first.kind:
        return f"next layer '{reader.name}' keeps channels on another axis"
    if second.c_in != first.c_out:
        return (f"next layer '{reader.name}' reads {second.c_in} channels, "
                f"'{first.node.name}' writes {first.c_out}")
    return Link(first, act, second)


def find_chains(graph: gs.Graph) -> tuple[list[list[Link]], list[tuple[str, str]]]:
    """Maximal chains of links (in graph order) and the (layer, reason) of every link not made."""
    graph_outputs = {t.name for t in graph.outputs}
    layers: dict[int, Layer | str] = {}
    order: list[gs.Node] = []
    for node in graph.nodes:
        if node.op in LAYER_OPS:
            layers[id(node)] = parse_layer(node, graph_outputs)
            order.append(node)
    nxt: dict[int, Link] = {}
    has_prev: set[int] = set()
    skipped: list[tuple[str, str]] = []
    for node in order:
        layer = layers[id(node)]
        if isinstance(layer, str):
            skipped.append((node.name, layer))
            continue
        link = _next(layer, layers, graph_outputs)
        if isinstance(link, str):
            skipped.append((node.name, link))
            continue
        nxt[id(node)] = link
        has_prev.add(id(link.second.node))
    chains = []
    for node in order:
        if id(node) in nxt and id(node) not in has_prev:
            chain, key = [], id(node)
            while key in nxt:
                chain.append(nxt[key])
                key = id(nxt[key].second.node)
            chains.append(chain)
    return chains, skipped
