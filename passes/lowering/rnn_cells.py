"""One time step of an LSTM, GRU or RNN cell as ONNX nodes (for ``lower-rnn``).

``Cell.project`` emits the input projection of every gate for all steps at once; ``emit_step``
emits one step from that projection and the previous state. A state of ``None`` is zero (no
initial state), so the recurrent terms of step 0 are left out instead of multiplied by zero.
Equations and gate orders are ONNX's (LSTM iofc with peepholes iof, GRU zrh, RNN i).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from aicc.passes.lowering.emit import Emitter
from aicc.rnn import Activation, RnnSpec

__all__ = ["Cell", "emit_step", "emit_activation"]


@dataclass
class Cell:
    """The weights of one direction: W [G*H, I], R [G*H, H], B [2*G*H], P [3*H] (LSTM)."""

    spec: RnnSpec
    d: int
    w: np.ndarray
    r: np.ndarray
    b: np.ndarray | None
    p: np.ndarray | None

    @property
    def hidden(self) -> int:
        return self.r.shape[-1]

    def gate(self, m: np.ndarray, g: int) -> np.ndarray:
        h = self.hidden
        return m[g * h:(g + 1) * h]

    def recurrent_bias(self, g: int) -> np.ndarray | None:
        """The R bias that stays inside the step (GRU's h gate); others fold into the input."""
        if self.b is None:
            return None
        return self.gate(self.b[self.spec.num_gates * self.hidden:], g)

    def input_bias(self, g: int) -> np.ndarray | None:
        if self.b is None:
            return None
        n = self.spec.num_gates * self.hidden
        wb = self.gate(self.b[:n], g)
        if self.spec.op_type == "GRU" and g == 2:
            return wb
        return wb + self.gate(self.b[n:], g)

    def project(self, em: Emitter, xs: gs.Tensor) -> list[gs.Tensor]:
        """Per gate, X @ W_g^T + folded biases: [T, B, H]."""
        out = []
        for g in range(self.spec.num_gates):
            tag = f"d{self.d}_g{g}"
            xw = em.op("MatMul", [xs, em.shared(f"W_{tag}_T", self.gate(self.w, g).T)],
                       f"xw_{tag}")
            bias = self.input_bias(g)
            if bias is not None and np.any(bias):
                xw = em.op("Add", [xw, em.shared(f"b_{tag}", bias)], f"xwb_{tag}")
            out.append(xw)
        return out


def emit_activation(em: Emitter, act: Activation, x: gs.Tensor, tag: str) -> gs.Tensor:
    """``act`` applied to ``x`` with ops every backend has (no Softplus/Elu/... nodes)."""
    name, a, b = act.name, act.alpha, act.beta
    if name in ("Sigmoid", "Tanh", "Relu"):
        return em.op(name, [x], f"{tag}_{name.lower()}")
    if name == "LeakyRelu":
        return em.op("LeakyRelu", [x], f"{tag}_leaky", alpha=a)
    if name == "HardSigmoid":
        return em.op("HardSigmoid", [x], f"{tag}_hsig", alpha=a, beta=b)
    if name == "Affine":
        return em.op("Add", [em.op("Mul", [x, em.scalar(a)], f"{tag}_ax"), em.scalar(b)],
                     f"{tag}_affine")
    if name == "ScaledTanh":
        inner = em.op("Tanh", [em.op("Mul", [x, em.scalar(b)], f"{tag}_bx")], f"{tag}_tanh")
        return em.op("Mul", [inner, em.scalar(a)], f"{tag}_stanh")
    if name == "ThresholdedRelu":
        above = em.op("Greater", [x, em.scalar(a)], f"{tag}_above")
        return em.op("Where", [above, x, em.scalar(0.0)], f"{tag}_trelu")
    if name == "Elu":
        neg = em.op("Less", [x, em.scalar(0.0)], f"{tag}_neg")
        em1 = em.op("Sub", [em.op("Exp", [x], f"{tag}_exp"), em.scalar(1.0)], f"{tag}_expm1")
        return em.op("Where", [neg, em.op("Mul", [em1, em.scalar(a)], f"{tag}_aexp"), x],
                     f"{tag}_elu")
    if name == "Softsign":
        den = em.op("Add", [em.op("Abs", [x], f"{tag}_abs"), em.scalar(1.0)], f"{tag}_den")
        return em.op("Div", [x, den], f"{tag}_softsign")
    if name == "Softplus":  # relu(x) + log(1 + exp(-|x|)): no overflow for large |x|
        tail = em.op("Exp", [em.op("Neg", [em.op("Abs", [x], f"{tag}_abs")], f"{tag}_nabs")],
                     f"{tag}_exp")
        log1p = em.op("Log", [em.op("Add", [tail, em.scalar(1.0)], f"{tag}_1p")], f"{tag}_log")
        return em.op("Add", [em.op("Relu", [x], f"{tag}_relu"), log1p], f"{tag}_softplus")
    raise ValueError(f"activation {name} cannot be lowered")


def _clip(em: Emitter, cell: Cell, x: gs.Tensor, tag: str) -> gs.Tensor:
    c = cell.spec.clip
    if c is None:
        return x
    return em.op("Max", [em.op("Min", [x, em.scalar(c)], f"{tag}_cliphi"), em.scalar(-c)],
                 f"{tag}_clip")


def _recur(em: Emitter, cell: Cell, x: gs.Tensor, h: gs.Tensor | None, g: int,
           tag: str) -> gs.Tensor:
    """x + h @ R_g^T (just x when the state is zero)."""
    if h is None:
        return x
    rt = em.shared(f"R_d{cell.d}_g{g}_T", cell.gate(cell.r, g).T)
    return em.op("Add", [x, em.op("MatMul", [h, rt], f"{tag}_hr{g}")], f"{tag}_pre{g}")


def _gate(em: Emitter, cell: Cell, act: Activation, x: gs.Tensor, tag: str) -> gs.Tensor:
    return emit_activation(em, act, _clip(em, cell, x, tag), tag)


def _lstm(em: Emitter, cell: Cell, xk, h, c, tag: str):
    f_act, g_act, h_act = cell.spec.activations[cell.d]
    i_pre, o_pre, f_pre, c_pre = (_recur(em, cell, xk[g], h, g, tag) for g in range(4))
    peep = None if cell.p is None else [cell.gate(cell.p, k) for k in range(3)]  # i, o, f
    if peep is not None and c is not None:
        i_pre = em.op("Add", [i_pre, em.op("Mul", [c, em.shared(f"P_d{cell.d}_i", peep[0])],
                                           f"{tag}_pic")], f"{tag}_ipeep")
        f_pre = em.op("Add", [f_pre, em.op("Mul", [c, em.shared(f"P_d{cell.d}_f", peep[2])],
                                           f"{tag}_pfc")], f"{tag}_fpeep")
    i = _gate(em, cell, f_act, i_pre, f"{tag}_i")
    g = _gate(em, cell, g_act, c_pre, f"{tag}_g")
    c_new = em.op("Mul", [i, g], f"{tag}_ig")
    if c is not None:
        if cell.spec.input_forget:
            f = em.op("Sub", [em.scalar(1.0), i], f"{tag}_f")
        else:
            f = _gate(em, cell, f_act, f_pre, f"{tag}_f")
        c_new = em.op("Add", [em.op("Mul", [f, c], f"{tag}_fc"), c_new], f"{tag}_c")
    if peep is not None:
        o_pre = em.op("Add", [o_pre, em.op("Mul", [c_new, em.shared(f"P_d{cell.d}_o", peep[1])],
                                           f"{tag}_poc")], f"{tag}_opeep")
    o = _gate(em, cell, f_act, o_pre, f"{tag}_o")
    h_new = em.op("Mul", [o, emit_activation(em, h_act, c_new, f"{tag}_hc")], f"{tag}_h")
    return h_new, c_new


def _gru(em: Emitter, cell: Cell, xk, h, tag: str):
    f_act, g_act = cell.spec.activations[cell.d]
    z = _gate(em, cell, f_act, _recur(em, cell, xk[0], h, 0, tag), f"{tag}_z")
    r = _gate(em, cell, f_act, _recur(em, cell, xk[1], h, 1, tag), f"{tag}_r")
    rbh = cell.recurrent_bias(2)
    rbh_t = em.shared(f"Rb_d{cell.d}_h", rbh) if rbh is not None and np.any(rbh) else None
    if cell.spec.linear_before_reset:
        inner = None if h is None else em.op(
            "MatMul", [h, em.shared(f"R_d{cell.d}_g2_T", cell.gate(cell.r, 2).T)], f"{tag}_hr2")
        if rbh_t is not None:
            inner = rbh_t if inner is None else em.op("Add", [inner, rbh_t], f"{tag}_hrb")
        pre = xk[2] if inner is None else em.op(
            "Add", [xk[2], em.op("Mul", [r, inner], f"{tag}_rh")], f"{tag}_pre2")
    else:
        rh = None if h is None else em.op("Mul", [r, h], f"{tag}_rh")
        pre = _recur(em, cell, xk[2], rh, 2, tag)
        if rbh_t is not None:
            pre = em.op("Add", [pre, rbh_t], f"{tag}_prerb")
    cand = _gate(em, cell, g_act, pre, f"{tag}_cand")
    keep = em.op("Sub", [em.scalar(1.0), z], f"{tag}_1mz")
    h_new = em.op("Mul", [keep, cand], f"{tag}_zc")
    if h is not None:
        h_new = em.op("Add", [h_new, em.op("Mul", [z, h], f"{tag}_zh")], f"{tag}_h")
    return h_new


def emit_step(em: Emitter, cell: Cell, xk: list[gs.Tensor], h, c, mask, tag: str):
    """(next h, next c, this step's Y row) of one step; ``mask`` [B, 1] keeps finished batch
    entries' states and zeroes their Y rows (None: every entry is live)."""
    op = cell.spec.op_type
    if op == "LSTM":
        h_new, c_new = _lstm(em, cell, xk, h, c, tag)
    elif op == "GRU":
        h_new, c_new = _gru(em, cell, xk, h, tag), None
    else:
        h_new = _gate(em, cell, cell.spec.activations[cell.d][0],
                      _recur(em, cell, xk[0], h, 0, tag), f"{tag}_f")
        c_new = None
    if mask is None:
        return h_new, c_new, h_new
    zero = em.scalar(0.0)
    y = em.op("Where", [mask, h_new, zero], f"{tag}_y")
    h_out = em.op("Where", [mask, h_new, zero if h is None else h], f"{tag}_hm")
    c_out = None if c_new is None else em.op(
        "Where", [mask, c_new, zero if c is None else c], f"{tag}_cm")
    return h_out, c_out, y
