"""LSTM, GRU and RNN as numpy kernels: one loop over time steps per direction.

Every direction runs forward over time: the reverse direction reverses each batch entry's first
``sequence_lens[b]`` steps on the way in and on the way out (ONNX's ReverseSequence), so masking
is the same for both. Past a batch entry's length its state stays as it was and its ``Y`` rows are
zero; an entry of length 0 gets zero final states (onnxruntime's convention; ONNX leaves it
open). The input projection X @ W^T is computed for all steps at once; the recurrent one per step.
``layout=1`` (batch-major tensors) is transposed to time-major and back. Attributes are read by
``aicc.rnn.parse_rnn``, the parser the ``lower-rnn`` pass uses too. fp16 computes in float32 and
rounds once per output (the interpreter's policy for composite ops).
"""

from __future__ import annotations

import numpy as np

from aicc.rnn import Activation, RnnSpec, parse_rnn

from .kernels import NodeSpec, register

__all__ = ["activate", "reverse_sequence"]


def activate(act: Activation, x: np.ndarray) -> np.ndarray:
    """One activation function of a recurrent op applied to ``x``."""
    a, b = x.dtype.type(act.alpha), x.dtype.type(act.beta)
    name = act.name
    if name == "Sigmoid":
        return 1 / (1 + np.exp(-x))
    if name == "Tanh":
        return np.tanh(x)
    if name == "Relu":
        return np.maximum(x, 0)
    if name == "Affine":
        return a * x + b
    if name == "LeakyRelu":
        return np.where(x >= 0, x, a * x)
    if name == "ThresholdedRelu":
        return np.where(x > a, x, 0).astype(x.dtype)
    if name == "ScaledTanh":
        return a * np.tanh(b * x)
    if name == "HardSigmoid":
        return np.clip(a * x + b, 0, 1)
    if name == "Elu":
        return np.where(x >= 0, x, a * (np.exp(x) - 1))
    if name == "Softsign":
        return x / (1 + np.abs(x))
    if name == "Softplus":
        return np.logaddexp(0, x).astype(x.dtype)
    raise ValueError(f"activation {name} has no kernel")


def reverse_sequence(x: np.ndarray, lens: np.ndarray | None) -> np.ndarray:
    """``x`` [T, B, ...] with each batch entry's first ``lens[b]`` steps reversed (all if None)."""
    if lens is None:
        return x[::-1]
    out = x.copy()
    for b, n in enumerate(lens):
        n = int(n)
        out[:n, b] = x[:n, b][::-1]
    return out


def _clip(x: np.ndarray, clip: float | None) -> np.ndarray:
    return x if clip is None else np.clip(x, -clip, clip)


def _lstm_step(spec: RnnSpec, acts, xw, h, c, r, rb, p):
    f_act, g_act, h_act = acts
    gates = xw + h @ r.T + rb
    hs = h.shape[-1]
    i_pre, o_pre, f_pre, c_pre = (gates[:, k * hs:(k + 1) * hs] for k in range(4))
    pi, po, pf = (None, None, None) if p is None else (p[:hs], p[hs:2 * hs], p[2 * hs:])
    if p is not None:
        i_pre, f_pre = i_pre + pi * c, f_pre + pf * c
    i = activate(f_act, _clip(i_pre, spec.clip))
    f = 1 - i if spec.input_forget else activate(f_act, _clip(f_pre, spec.clip))
    g = activate(g_act, _clip(c_pre, spec.clip))
    c_new = f * c + i * g
    if p is not None:
        o_pre = o_pre + po * c_new
    o = activate(f_act, _clip(o_pre, spec.clip))
    return o * activate(h_act, c_new), c_new


def _gru_step(spec: RnnSpec, acts, xw, h, r, rb):
    f_act, g_act = acts
    hs = h.shape[-1]
    rz, rr, rh = r[:hs], r[hs:2 * hs], r[2 * hs:]
    bz, br, bh = rb[:hs], rb[hs:2 * hs], rb[2 * hs:]
    xz, xr, xh = xw[:, :hs], xw[:, hs:2 * hs], xw[:, 2 * hs:]
    z = activate(f_act, _clip(xz + h @ rz.T + bz, spec.clip))
    rg = activate(f_act, _clip(xr + h @ rr.T + br, spec.clip))
    if spec.linear_before_reset:
        pre = xh + rg * (h @ rh.T + bh)
    else:
        pre = xh + (rg * h) @ rh.T + bh
    cand = activate(g_act, _clip(pre, spec.clip))
    return (1 - z) * cand + z * h


def _rnn_step(spec: RnnSpec, acts, xw, h, r, rb):
    return activate(acts[0], _clip(xw + h @ r.T + rb, spec.clip))


def _direction(spec: RnnSpec, d: int, x, w, r, b, lens, h0, c0, p):
    """Y [T, B, H], final h and final c (LSTM; else None) of direction ``d``."""
    reverse = spec.directions[d] == "reverse"
    steps, batch = x.shape[0], x.shape[1]
    hs = r.shape[-1]
    g = spec.num_gates
    wb = b[:g * hs] if b is not None else np.zeros(g * hs, x.dtype)
    rb = b[g * hs:] if b is not None else np.zeros(g * hs, x.dtype)
    if spec.op_type == "LSTM":  # both biases add before any gate arithmetic
        wb, rb = wb + rb, np.zeros_like(rb)
    elif spec.op_type == "RNN":
        wb, rb = wb + rb, np.zeros_like(rb)
    else:  # GRU: the recurrent bias of h sits inside the reset product when linear_before_reset
        wb = wb.copy()
        wb[:2 * hs] += rb[:2 * hs]
        rb = np.concatenate([np.zeros(2 * hs, x.dtype), rb[2 * hs:]])
    xs = reverse_sequence(x, lens) if reverse else x
    xw = xs @ w.T + wb
    h = np.zeros((batch, hs), x.dtype) if h0 is None else h0
    c = np.zeros((batch, hs), x.dtype) if c0 is None and spec.op_type == "LSTM" else c0
    y = np.zeros((steps, batch, hs), x.dtype)
    acts = spec.activations[d]
    for t in range(steps):
        if spec.op_type == "LSTM":
            h_new, c_new = _lstm_step(spec, acts, xw[t], h, c, r, rb, p)
        elif spec.op_type == "GRU":
            h_new, c_new = _gru_step(spec, acts, xw[t], h, r, rb), None
        else:
            h_new, c_new = _rnn_step(spec, acts, xw[t], h, r, rb), None
        if lens is not None:
            live = (t < lens).reshape(-1, 1)
            h_new = np.where(live, h_new, h)
            if c_new is not None:
                c_new = np.where(live, c_new, c)
            y[t] = np.where(live, h_new, 0)
        else:
            y[t] = h_new
        h, c = h_new, c_new
    if reverse:
        y = reverse_sequence(y, lens)
    if lens is not None and np.any(lens == 0):  # onnxruntime's convention (ONNX leaves it open)
        empty = (lens == 0).reshape(-1, 1)
        h = np.where(empty, 0, h).astype(h.dtype)
        c = None if c is None else np.where(empty, 0, c).astype(c.dtype)
    return y, h, c


@register("RNN", "GRU", "LSTM", min_version=7, half_in_float32=True)
def _recurrent(spec: NodeSpec):
    rnn = parse_rnn(spec.op_type, spec.attrs)
    lstm = spec.op_type == "LSTM"

    def run(x, w, r, b=None, lens=None, h0=None, c0=None, p=None):
        if rnn.layout == 1:
            x = x.transpose(1, 0, 2)
            h0 = None if h0 is None else h0.transpose(1, 0, 2)
            c0 = None if c0 is None else c0.transpose(1, 0, 2)
        if rnn.hidden_size is not None and r.shape[-1] != rnn.hidden_size:
            raise ValueError(f"R has hidden size {r.shape[-1]}, hidden_size is "
                             f"{rnn.hidden_size}")
        if w.shape[0] != len(rnn.directions):
            raise ValueError(f"W has {w.shape[0]} directions, direction needs "
                             f"{len(rnn.directions)}")
        if lens is not None and (np.any(lens < 0) or np.any(lens > x.shape[0])):
            raise ValueError(f"sequence_lens {lens.tolist()} must lie in [0, {x.shape[0]}] "
                             "(the sequence length)")
        ys, hs, cs = [], [], []
        for d in range(len(rnn.directions)):
            y, h, c = _direction(rnn, d, x, w[d], r[d], None if b is None else b[d],
                                 lens, None if h0 is None else h0[d],
                                 None if c0 is None else c0[d],
                                 None if p is None else p[d])
            ys.append(y)
            hs.append(h)
            cs.append(c)
        y, y_h = np.stack(ys, axis=1), np.stack(hs)
        y_c = np.stack(cs) if lstm else None
        if rnn.layout == 1:
            y = y.transpose(2, 0, 1, 3)
            y_h = y_h.transpose(1, 0, 2)
            y_c = None if y_c is None else y_c.transpose(1, 0, 2)
        dtype = x.dtype
        outs = (y.astype(dtype), y_h.astype(dtype))
        return outs + (y_c.astype(dtype),) if lstm else outs

    return run
