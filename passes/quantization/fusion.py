"""Tensors a quantized graph leaves unquantized because the ops around them run as one fused
kernel: a graph in, the names of those interior tensors out.

Two rules, both on by default (``fuse_activations``, ``fuse_elementwise`` of ``quantize``):

* **activation fusion**: the output of a Conv/ConvTranspose/Gemm/MatMul/Add read only by a Relu or
  Clip (the pair is one integer kernel; only the activation's output is quantized);
* **elementwise fusion**: a tensor made by an elementwise op (arithmetic, activation functions,
  and the mean reductions of normalizations) and read only by such ops is inside one elementwise
  expression (HardSwish ``x * clip(x + 3, 0, 6) / 6``, Swish ``x * sigmoid(x)``, a LayerNorm
  spelled ``ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add``, GELU's ``Erf`` chain): only the expression's
  inputs and outputs are quantized. Converters of int8 toolchains (the vendor's included) match
  these expressions into single ops (HardSwish, LayerNorm, Gelu) before quantizing, so their
  intermediates never get an 8-bit encoding; quantizing each of them instead adds one rounding per
  elementary op, and in a model made of many such expressions the roundings add up: PP-OCRv4's
  recognizer has 374 quantized activations of which 235 are such intermediates, each alone at
  about 38 dB, together costing about 4 dB of output SQNR and a third of the decoded strings
  (``benchmarks/calibration.py``, workload ``ppocr-rec-64``).

A tensor that is a graph output, carries an override, or is read by any other op (a Conv, a
Concat, a Reshape, ...) stays quantized, so every weighted op and every data-movement op still
reads integers.
"""

from __future__ import annotations

from collections.abc import Container

import onnx_graphsurgeon as gs

__all__ = ["ELEMENTWISE_OPS", "activation_fused", "elementwise_interior"]

#: ops an elementwise fused kernel evaluates (the mean reductions serve normalizations)
ELEMENTWISE_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Erf",
    "Tanh", "Sigmoid", "HardSigmoid", "HardSwish", "Relu", "LeakyRelu", "Clip", "Softplus",
    "Min", "Max", "ReduceMean"})
_FUSED_ACTIVATIONS = ("Relu", "Clip")
_FUSING_PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add")

Readers = dict[str, list[tuple[gs.Node, int]]]


def activation_fused(graph: gs.Graph, readers: Readers, outputs: Container[str],
                     float_ops: Container[int], overridden: Container[str]) -> set[str]:
    """Outputs of Conv/ConvTranspose/Gemm/MatMul/Add read only by a Relu or Clip: the pair runs as
    one integer kernel, so only the activation's output is quantized, on its own (never
    negative) range."""
    fused = set()
    for node in graph.nodes:
        if node.op not in _FUSED_ACTIVATIONS or id(node) in float_ops or not node.inputs:
            continue
        x = node.inputs[0]
        if not x.inputs or x.name in outputs or x.name in overridden:
            continue
        producer = x.inputs[0]
        if producer.op in _FUSING_PRODUCERS and id(producer) not in float_ops and \
                len(readers.get(x.name, [])) == 1:
            fused.add(x.name)
    return fused


def elementwise_interior(graph: gs.Graph, readers: Readers, outputs: Container[str],
                         float_ops: Container[int], overridden: Container[str]) -> set[str]:
    """The intermediates of elementwise expressions of one tensor: a tensor made by an
    elementwise op from one source tensor (directly or through other such tensors, constants
    aside) and read only by elementwise ops that compute from that same source. An op combining
    two sources (a residual ``Add(a, b)``) starts a new expression: its inputs stay quantized.
    Nodes must be in topological order (graphsurgeon's after ``toposort``)."""
    source: dict[str, str] = {}          # elementwise output -> the tensor its expression reads
    for node in graph.nodes:
        if node.op not in ELEMENTWISE_OPS or id(node) in float_ops:
            continue
        roots = {source.get(t.name, t.name) for t in node.inputs
                 if t.name and not isinstance(t, gs.Constant)}
        for t in node.outputs:
            if t.name:
                source[t.name] = roots.pop() if len(roots) == 1 else t.name
    interior = set()
    for name, root in source.items():
        if root == name or name in outputs or name in overridden:
            continue
        uses = readers.get(name, [])
        if uses and all(n.outputs and source.get(n.outputs[0].name) == root for n, _ in uses):
            interior.add(name)
    return interior
