"""``lower-rnn``: LSTM, GRU and RNN nodes turned into MatMul and elementwise ops per time step,
as device compilers lower them, so a backend without recurrent ops runs recurrent models.

Per direction and gate, the input projection X @ W_g^T + biases is one MatMul over all steps; each
step then Gathers its row, adds h @ R_g^T and applies the gate's activation (Sigmoid, Tanh,
Relu, LeakyRelu, HardSigmoid natively; Affine, ScaledTanh, ThresholdedRelu, Elu, Softsign and a
stable Softplus from elementwise ops; ``clip`` as Min/Max). Every option the interpreter runs is
lowered: directions (incl. bidirectional), ``sequence_lens`` (Where masks; for the reverse
direction a Gather that reverses each batch entry's valid prefix, ReverseSequence's meaning),
initial states, ``layout`` 0/1, peepholes, ``input_forget``, ``linear_before_reset``. A missing
initial state is zero, so step 0 skips its recurrent terms; an entry of length 0 gets zero final
states, as onnxruntime and the interpreter give. Semantics are preserved within
rtol 1e-4 / atol 1e-5 in float32 (the same products summed in another order).

Refused, naming the node: a sequence length that is not static, more than ``max_steps`` unrolled
steps (sequence length x directions), weights (W, R, B, P) that are not constants.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_graphsurgeon as gs

from aicc import ir
from aicc.errors import PassError
from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext, Tolerance
from aicc.passes.lowering.emit import Emitter
from aicc.passes.lowering.rnn_cells import Cell, emit_step
from aicc.passes.cleanup import detach_nodes, sort_nodes
from aicc.program import Program
from aicc.rnn import RnnSpec, parse_rnn

__all__ = ["LowerRnn", "RECURRENT_OPS"]

logger = logging.getLogger(__name__)

RECURRENT_OPS = ("LSTM", "GRU", "RNN")


class LowerRnn(Pass):
    name = "lower-rnn"
    description = "lower LSTM/GRU/RNN to MatMul and elementwise ops per time step"
    scope = "graph"
    semantics = "preserving"
    tolerance = Tolerance(rtol=1e-4, atol=1e-5)
    lowers = RECURRENT_OPS

    @classmethod
    def lowering_options(cls, missing: frozenset[str]) -> dict:
        return {"ops": sorted(missing)}

    @dataclasses.dataclass(frozen=True)
    class Options:
        ops: list[str] = option(list(RECURRENT_OPS), "recurrent op types to lower "
                                                     "(LSTM, GRU, RNN)")
        max_steps: int = option(512, "most time steps (sequence length x directions) one node "
                                     "may unroll into", minimum=1)

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> None:
        unknown = sorted(set(ctx.options.ops) - set(RECURRENT_OPS))
        if unknown:
            raise PassError(f"lower-rnn: ops: '{unknown[0]}' is not one of "
                            + ", ".join(RECURRENT_OPS))
        targets = [n for n in graph.nodes
                   if n.op in ctx.options.ops and (n.domain or "") in ("", "ai.onnx")]
        if not targets:
            logger.debug("lower-rnn: graph '%s' has no %s node", ctx.graph_name,
                         "/".join(ctx.options.ops))
            return
        # lengths computed from shapes (a Reshape after bind-symbols/fold-constants) are known
        # only once shapes are inferred again
        ir.infer_shapes(graph, where=f"graph '{ctx.graph_name}' before lower-rnn")
        new_nodes: list[gs.Node] = []
        for node in targets:
            new_nodes += _lower(graph, node, ctx.options.max_steps)
            ctx.count(f"{node.op} nodes lowered")
        detach_nodes(targets)
        gone = {id(n) for n in targets}
        graph.nodes = [n for n in graph.nodes if id(n) not in gone] + new_nodes
        ctx.count("nodes emitted", len(new_nodes))
        sort_nodes(graph)
        ir.infer_shapes(graph, where=f"graph '{ctx.graph_name}' after lower-rnn")


def _refuse(node: gs.Node, why: str, hint: str) -> PassError:
    return PassError(f"lower-rnn: node '{node.name}' ({node.op}): {why}", hint=hint)


def _constant(node: gs.Node, index: int, what: str) -> np.ndarray | None:
    if index >= len(node.inputs) or node.inputs[index].is_empty():
        return None
    t = node.inputs[index]
    if not isinstance(t, gs.Constant):
        raise _refuse(node, f"{what} '{t.name}' is not a constant",
                      "lower-rnn needs constant weights; run fold-constants first, or use a "
                      f"backend that runs {node.op}")
    return np.asarray(t.values)


def _optional(node: gs.Node, index: int) -> gs.Tensor | None:
    if index >= len(node.inputs) or node.inputs[index].is_empty():
        return None
    return node.inputs[index]


def _lower(graph: gs.Graph, node: gs.Node, max_steps: int) -> list[gs.Node]:
    """Emit the unrolled computation of ``node``; its outputs move to the emitted nodes."""
    try:
        spec = parse_rnn(node.op, node.attrs)
    except ValueError as e:
        raise _refuse(node, str(e), "fix the node's attributes") from None
    w, r = _constant(node, 1, "W"), _constant(node, 2, "R")
    b = _constant(node, 3, "B")
    p = _constant(node, 7, "P") if node.op == "LSTM" else None
    x = node.inputs[0]
    seq_axis = 1 if spec.layout else 0
    steps = x.shape[seq_axis] if x.shape is not None and len(x.shape) == 3 else None
    if not isinstance(steps, (int, np.integer)):
        raise _refuse(node, f"the sequence length of '{x.name}' is not static "
                            f"({'unknown' if steps is None else steps})",
                      "bind it (-onnx-define-symbol / bind-symbols) or use a backend that "
                      f"runs {node.op}")
    steps = int(steps)
    dirs = len(spec.directions)
    if steps < 1:
        raise _refuse(node, f"the sequence length of '{x.name}' is {steps}",
                      "a recurrent op over an empty sequence has nothing to lower")
    if w.shape[0] != dirs or r.shape[0] != dirs:
        raise _refuse(node, f"W and R hold {w.shape[0]} and {r.shape[0]} direction(s); "
                            f"direction '{node.attrs.get('direction', 'forward')}' needs {dirs}",
                      "fix the model")
    if steps * dirs > max_steps:
        raise _refuse(node, f"{steps} steps x {dirs} direction(s) exceed the unrolling limit "
                            f"of {max_steps}",
                      f"raise it with lower-rnn{{max_steps={steps * dirs}}} or use a backend "
                      f"that runs {node.op}")
    if spec.hidden_size is not None and r.shape[-1] != spec.hidden_size:
        raise _refuse(node, f"R has hidden size {r.shape[-1]}, hidden_size is "
                            f"{spec.hidden_size}", "fix the model")
    em = Emitter(graph, node.name, w.dtype)
    seq = _Sequence(em, node, spec, steps, w.shape[-1])
    h0, c0 = _states(em, node, spec.layout)
    hidden = r.shape[-1]
    ys, hs, cs = [], [], []
    for d in range(dirs):
        cell = Cell(spec=spec, d=d, w=w[d], r=r[d], b=None if b is None else b[d],
                    p=None if p is None else p[d])
        y, h, c = _direction(em, seq, cell, h0, c0, d)
        ys.append(y)
        hs.append(h)
        cs.append(c)
    _outputs(em, node, spec, ys, hs, cs, steps, hidden)
    return em.nodes


class _Sequence:
    """X as time-major steps, the per-step masks of sequence_lens, and ReverseSequence (each
    batch entry's valid prefix reversed) as a Gather over the rows of a [T*B, F] view."""

    def __init__(self, em: Emitter, node: gs.Node, spec: RnnSpec, steps: int, features: int):
        self.em, self.steps = em, steps
        x = node.inputs[0]
        self.x = em.op("Transpose", [x], "x_time_major", perm=[1, 0, 2]) if spec.layout else x
        self.features = features
        self.mask = self.rev_index = None
        self.nonempty = None  # [B, 1] lens > 0, when some length may be 0
        lens = _optional(node, 4)
        if lens is None:
            return
        batch = x.shape[0 if spec.layout else 1] if x.shape is not None else None
        if isinstance(lens, gs.Constant):
            values = np.asarray(lens.values).astype(np.int64).reshape(-1)
            if np.any(values < 0) or np.any(values > steps):
                raise _refuse(node, f"sequence_lens {values.tolist()} must lie in [0, {steps}] "
                                    "(the sequence length)", "fix the model")
            self._constant_lens(values)
        elif isinstance(batch, (int, np.integer)):
            self._dynamic_lens(lens, int(batch))
        elif "reverse" in spec.directions:
            raise _refuse(node, "sequence_lens is not a constant and the batch size is not "
                                "static, so the reverse direction cannot be gathered",
                          "bind the batch dimension (-batchsize / bind-symbols)")
        else:
            self._dynamic_lens(lens, None)

    def _constant_lens(self, lens: np.ndarray) -> None:
        if np.all(lens >= self.steps):
            return  # every sequence is full: no mask, plain reversal
        if np.any(lens == 0):
            self.nonempty = self.em.const("nonempty", (lens > 0).reshape(-1, 1))
        k = np.arange(self.steps).reshape(-1, 1)
        live = k < lens.reshape(1, -1)
        self.mask = self.em.const("mask", live.reshape(self.steps, -1, 1))
        t_src = np.where(live, lens - 1 - k, k)
        self.rev_index = self.em.const("rev_index", t_src * lens.size + np.arange(lens.size),
                                       np.int64)

    def _dynamic_lens(self, lens: gs.Tensor, batch: int | None) -> None:
        em = self.em
        lens64 = em.op("Cast", [lens], "lens64", to=7)  # INT64
        k = em.const("steps", np.arange(self.steps, dtype=np.int64).reshape(-1, 1))
        live = em.op("Less", [k, lens64], "live")  # [T, B]
        self.nonempty = em.op("Reshape", [em.op("Greater", [lens64, em.const("zero64", 0,
                                                                              np.int64)],
                                                "positive"),
                                          em.const("column", [-1, 1], np.int64)], "nonempty")
        self.mask = em.op("Reshape", [live, em.const("mask_shape", [self.steps, -1, 1],
                                                     np.int64)], "mask")
        if batch is None:
            return
        last = em.op("Sub", [lens64, em.const("one64", 1, np.int64)], "last")
        t_src = em.op("Where", [live, em.op("Sub", [last, k], "flipped"), k], "t_src")
        rows = em.op("Mul", [t_src, em.const("batch", batch, np.int64)], "rows")
        self.rev_index = em.op("Add", [rows, em.const("batch_ids", np.arange(batch),
                                                      np.int64)], "rev_index")

    @property
    def reversed_by_gather(self) -> bool:
        return self.rev_index is not None

    def step_mask(self, k: int) -> gs.Tensor | None:
        if self.mask is None:
            return None
        return self.em.op("Gather", [self.mask, self.em.shared(f"k{k}", k, np.int64)],
                          f"mask_t{k}", axis=0)

    def reverse(self, t: gs.Tensor, features: int, hint: str) -> gs.Tensor:
        """[T, B, F] with each batch entry's valid prefix reversed."""
        em = self.em
        flat = em.op("Reshape", [t, em.shared(f"rows_{features}", [-1, features], np.int64)],
                     f"{hint}_rows")
        return em.op("Gather", [flat, self.rev_index], f"{hint}_reversed", axis=0)


def _states(em: Emitter, node: gs.Node, layout: int):
    """initial_h and initial_c as direction-major [D, B, H] tensors (None when absent)."""
    out = []
    for index in (5, 6):
        t = _optional(node, index) if index == 5 or node.op == "LSTM" else None
        if t is not None and layout:
            t = em.op("Transpose", [t], f"state{index}_dir_major", perm=[1, 0, 2])
        out.append(t)
    return out[0], out[1]


def _direction(em: Emitter, seq: _Sequence, cell: Cell, h0, c0, d: int):
    """(Y [T, B, H], last h, last c) of direction ``d``."""
    reverse = cell.spec.directions[d] == "reverse"
    gathered = reverse and seq.reversed_by_gather
    xs = seq.reverse(seq.x, seq.features, f"x_d{d}") if gathered else seq.x
    projected = cell.project(em, xs)  # per gate [T, B, H]
    take = em.shared(f"dir{d}", d, np.int64)
    h = None if h0 is None else em.op("Gather", [h0, take], f"h0_d{d}", axis=0)
    c = None if c0 is None else em.op("Gather", [c0, take], f"c0_d{d}", axis=0)
    per_step: list = [None] * seq.steps
    order = range(seq.steps - 1, -1, -1) if reverse and not gathered else range(seq.steps)
    for k in order:
        index = em.shared(f"k{k}", k, np.int64)
        xk = [em.op("Gather", [g, index], f"x_d{d}_t{k}_g{i}", axis=0)
              for i, g in enumerate(projected)]
        h, c, per_step[k] = emit_step(em, cell, xk, h, c, seq.step_mask(k), f"d{d}_t{k}")
    if seq.nonempty is not None:  # length 0: zero final states, as onnxruntime gives
        zero = em.scalar(0.0)
        h = em.op("Where", [seq.nonempty, h, zero], f"h_d{d}_nonempty")
        c = None if c is None else em.op("Where", [seq.nonempty, c, zero], f"c_d{d}_nonempty")
    y = _stack(em, per_step, [1, -1, cell.hidden], 0, f"y_d{d}")  # [T, B, H]
    if gathered:
        y = em.op("Reshape", [seq.reverse(y, cell.hidden, f"y_d{d}"),
                              em.shared("tbh", [seq.steps, -1, cell.hidden], np.int64)],
                  f"y_d{d}_tbh")
    return y, h, c


def _stack(em: Emitter, items: list[gs.Tensor], shape: list[int], axis: int,
           hint: str) -> gs.Tensor:
    """Reshape each item to ``shape`` (a 1 at ``axis``) and concatenate along ``axis``."""
    key = "shape_" + "_".join(str(v).replace("-", "m") for v in shape)
    parts = [em.op("Reshape", [t, em.shared(key, shape, np.int64)], f"{hint}_{i}")
             for i, t in enumerate(items)]
    return parts[0] if len(parts) == 1 else em.op("Concat", parts, hint, axis=axis)


def _outputs(em: Emitter, node: gs.Node, spec: RnnSpec, ys, hs, cs, steps: int,
             hidden: int) -> None:
    """Bind the node's outputs (Y, Y_h, Y_c) to emitted Concat/Transpose results; a state
    that is still None (zero-length work never happens: steps >= 1) cannot occur."""
    outs = list(node.outputs) + [None] * 3
    wanted = [(0, ys, [steps, 1, -1, hidden], 1, [2, 0, 1, 3]),
              (1, hs, [1, -1, hidden], 0, [1, 0, 2])]
    if spec.op_type == "LSTM":
        wanted.append((2, cs, [1, -1, hidden], 0, [1, 0, 2]))
    node.outputs.clear()
    for index, parts, shape, axis, perm in wanted:
        target = outs[index]
        if target is None or target.is_empty():
            continue
        stacked = _stack(em, parts, shape, axis, f"out{index}")
        if spec.layout:
            em.op("Transpose", [stacked], f"out{index}_layout", outputs=[target], perm=perm)
        else:
            em.op("Identity", [stacked], f"out{index}", outputs=[target])


@hookimpl
def aicc_register_passes(registry):
    registry.add(LowerRnn)
