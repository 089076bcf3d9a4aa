"""The geometry of a tensor step: its MACs and the sizes the planner splits it by (output rows,
output channels, the reduction length, bytes per row and per unit of input and weight), for a
Conv, a ConvTranspose (see ``transposed``) or a Gemm/MatMul."""

from __future__ import annotations

import numpy as np
import onnx

from ..transposed import convtranspose_geometry
from .lowered import Lowered, Step
from .ops import attrs

__all__ = ["tensor_geometry"]


def tensor_geometry(low: Lowered, step: Step, node: onnx.NodeProto) -> None:
    """Set ``step.macs`` and ``step.geometry`` for the step's Conv/ConvTranspose/Gemm/MatMul."""
    t = low.tensors
    out = t[node.output[0]]
    x = t[node.input[0]]
    if node.op_type == "ConvTranspose":
        w = t[node.input[1]]
        step.macs, step.geometry = convtranspose_geometry(
            x.shape, x.nbytes, w.shape, w.nbytes, out.shape, out.nbytes, node)
    elif node.op_type == "Conv":
        _conv(low, step, node)
    else:
        _gemm(low, step, node)


def _conv(low: Lowered, step: Step, node: onnx.NodeProto) -> None:
    t = low.tensors
    a = attrs(node)
    out = t[node.output[0]]
    x = t[node.input[0]]
    w = t[node.input[1]]
    group = int(a.get("group", 1))
    k = w.shape[2:]
    cin = x.shape[1]
    cout = w.shape[0]
    reduce = (cin // group) * int(np.prod(k))
    osp = out.shape[2:]
    strides = a.get("strides", [1] * len(k))
    dil = a.get("dilations", [1] * len(k))
    eff = (k[0] - 1) * dil[0] + 1 if k else 1
    rows = out.shape[0] * (osp[0] if osp else 1)
    in_row_bytes = x.nbytes // max(1, x.shape[0] * (x.shape[2] if len(x.shape) > 2 else 1))
    step.macs = out.size * reduce
    step.geometry = {
        "split": "conv", "rows": rows, "channels": cout, "reduce": reduce, "groups": group,
        "depthwise": group > 1 and group == cin and cout % cin == 0,
        "n_per_group": cout // group, "halo_rows": max(eff - strides[0], 0) if k else 0,
        "in_row_bytes": in_row_bytes,
        "out_row_bytes": out.nbytes // max(1, rows),
        "in_unit_bytes": in_row_bytes * eff,
        "w_unit_bytes": (w.nbytes // max(1, cout)), "spatial": len(k)}


def _gemm(low: Lowered, step: Step, node: onnx.NodeProto) -> None:
    t = low.tensors
    a = attrs(node)
    out = t[node.output[0]]
    x = t[node.input[0]]
    trans_a = node.op_type == "Gemm" and int(a.get("transA", 0))
    trans_b = node.op_type == "Gemm" and int(a.get("transB", 0))
    b = t[node.input[1]]
    k_dim = x.shape[0] if trans_a else x.shape[-1]
    # a 1-D right operand (MatMul) drops the output's last dim: one output channel (a
    # vector by a vector gives a scalar)
    n_dim = out.shape[-1] if out.shape and len(b.shape) > 1 else 1
    rows = out.size // max(1, n_dim)
    b_weight = low.tensors[low.resolve(node.input[1])].kind == "weight"
    step.macs = out.size * k_dim
    step.geometry = {
        "split": "gemm", "rows": rows, "channels": n_dim, "reduce": k_dim, "groups": 1,
        "depthwise": False, "n_per_group": n_dim, "halo_rows": 0,
        "in_row_bytes": k_dim * x.dtype.itemsize, "out_row_bytes": n_dim * out.dtype.itemsize,
        "in_unit_bytes": k_dim * x.dtype.itemsize,
        "w_unit_bytes": k_dim * b.dtype.itemsize, "b_is_weight": b_weight,
        "trans_b": bool(trans_b)}
