"""``unroll-loops``: a Loop or Scan with a static trip count replaced by one copy of its body per
iteration, so a backend without Loop/Scan runs the model.

A Loop unrolls when its trip count M is a constant, its initial condition is absent or a true
constant, and its body passes the condition through unchanged (an Identity of the condition
input, or a true constant): then it runs exactly M times. Each copy gets the iteration number
and condition as constants and the previous copy's carried values; the scan outputs of all copies
are stacked (Unsqueeze + Concat on axis 0). A Scan unrolls when its sequence length (the scan
axis of its scan inputs) is static: each copy reads its slice with a Gather (backwards for a
reverse direction) and its scan outputs are stacked along their axes, in the order the
direction gives. Outer-scope reads stay reads of the same tensors.

Refused, naming the node and the reason: a dynamic trip count or condition, zero iterations with
scan outputs (their shape is unknown), more than ``max_iterations`` copies or ``max_nodes``
nodes (with a hint naming the option to raise).
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
from aicc.pass_base import Pass, PassContext
from aicc.passes.lowering.inline import _fresh, all_names, body_nodes, inline_body, unsqueeze
from aicc.passes.cleanup import detach_nodes, remove_dead_nodes, sort_nodes
from aicc.program import Program

__all__ = ["UnrollLoops"]

logger = logging.getLogger(__name__)


class UnrollLoops(Pass):
    name = "unroll-loops"
    description = "unroll Loop and Scan nodes whose trip count is static"
    scope = "graph"
    semantics = "preserving"
    lowers = ("Loop", "Scan")

    @dataclasses.dataclass(frozen=True)
    class Options:
        max_iterations: int = option(256, "most body copies one Loop/Scan may unroll into",
                                     minimum=1)
        max_nodes: int = option(65536, "most nodes (body nodes x iterations) one Loop/Scan may "
                                       "unroll into", minimum=1)
        strict: bool = option(True, "refuse a Loop/Scan that cannot be unrolled (else leave it "
                                    "and log why)")

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> None:
        loops = [n for n in graph.nodes
                 if n.op in ("Loop", "Scan") and (n.domain or "") in ("", "ai.onnx")]
        if not loops:
            return
        taken = all_names(graph)
        done, added = [], []
        for node in loops:
            try:
                limits = (ctx.options.max_iterations, ctx.options.max_nodes)
                if node.op == "Loop":
                    added += _unroll_loop(graph, node, limits, taken)
                else:
                    added += _unroll_scan(graph, node, limits, taken)
            except _CannotUnroll as e:
                if ctx.options.strict:
                    raise PassError(f"unroll-loops: node '{node.name}' ({node.op}): {e.why}",
                                    hint=e.hint) from None
                logger.debug("unroll-loops: skip '%s': %s", node.name, e.why)
                ctx.count("skipped")
                continue
            done.append(node)
            ctx.count(f"{node.op} nodes unrolled")
        if done:
            detach_nodes(done + [n for node in done for n in body_nodes(node)])
            gone = {id(n) for n in done}
            graph.nodes = [n for n in graph.nodes if id(n) not in gone] + added
            remove_dead_nodes(graph)
            sort_nodes(graph)
            ir.infer_shapes(graph, where=f"graph '{ctx.graph_name}' after unroll-loops")


class _CannotUnroll(Exception):
    def __init__(self, why: str, hint: str = "bind the symbols it depends on "
                 "(-onnx-define-symbol) or use a backend that runs it (interpreter, cpu)"):
        super().__init__(why)
        self.why, self.hint = why, hint


def _const(t: gs.Tensor) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def _check_count(node: gs.Node, count: int, limits: tuple[int, int]) -> None:
    max_iterations, max_nodes = limits
    if count > max_iterations:
        raise _CannotUnroll(f"{count} iterations exceed the unrolling limit of {max_iterations}",
                            f"raise it with unroll-loops{{max_iterations={count}}} or use a "
                            f"backend that runs {node.op}")
    size = count * len(node.attrs["body"].nodes)
    if size > max_nodes:
        raise _CannotUnroll(f"{count} iterations of a {len(node.attrs['body'].nodes)}-node body "
                            f"make {size} nodes, beyond the limit of {max_nodes}",
                            f"raise it with unroll-loops{{max_nodes={size}}} or use a backend "
                            f"that runs {node.op}")


def _trip_count(node: gs.Node) -> int:
    m = node.inputs[0] if node.inputs else None
    if m is None or m.is_empty():
        raise _CannotUnroll("it has no trip count M (it runs until its condition turns false)")
    value = _const(m)
    if value is None:
        raise _CannotUnroll(f"the trip count '{m.name}' is not a constant")
    cond = node.inputs[1] if len(node.inputs) > 1 else None
    if cond is not None and not cond.is_empty():
        c = _const(cond)
        if c is None:
            raise _CannotUnroll(f"the initial condition '{cond.name}' is not a constant")
        if not bool(c.reshape(-1)[0]):
            return 0
    body: gs.Graph = node.attrs["body"]
    cond_in, cond_out = body.inputs[1], body.outputs[0]
    if not _passes_through(cond_in, cond_out):
        raise _CannotUnroll(f"the body computes its condition '{cond_out.name}', so the number "
                            "of iterations is known only at run time")
    return int(value.reshape(-1)[0])


def _passes_through(cond_in: gs.Tensor, cond_out: gs.Tensor) -> bool:
    value = _const(cond_out)
    if value is not None:
        return bool(value.reshape(-1)[0])
    while cond_out is not cond_in:
        if len(cond_out.inputs) != 1 or cond_out.inputs[0].op != "Identity":
            return False
        cond_out = cond_out.inputs[0].inputs[0]
    return True


def _unroll_loop(graph: gs.Graph, node: gs.Node, limits: tuple[int, int],
                 taken: set[str]) -> list[gs.Node]:
    count = _trip_count(node)
    _check_count(node, count, limits)
    body: gs.Graph = node.attrs["body"]
    carried = list(node.inputs[2:])
    n_scan = len(body.outputs) - 1 - len(carried)
    if count == 0 and n_scan:
        raise _CannotUnroll("it runs zero times and has scan outputs, whose shape is unknown")
    nodes: list[gs.Node] = []
    scans: list[list[gs.Tensor]] = [[] for _ in range(n_scan)]
    for i in range(count):
        bind = {0: np.array(i, np.int64), 1: np.array(True)}
        bind.update({2 + k: t for k, t in enumerate(carried)})
        copied, outs = inline_body(graph, body, f"{node.name}/iter{i}", bind, taken)
        nodes += copied
        carried = outs[1:1 + len(carried)]
        for k in range(n_scan):
            scans[k].append(outs[1 + len(carried) + k])
    results = carried + [_stack(graph, parts, 0, f"{node.name}/scan{k}", nodes, taken)
                         for k, parts in enumerate(scans)]
    return nodes + _bind_outputs(node, results, taken)


def _unroll_scan(graph: gs.Graph, node: gs.Node, limits: tuple[int, int],
                 taken: set[str]) -> list[gs.Node]:
    if "directions" in node.attrs or (graph.opset or 9) < 9:
        raise _CannotUnroll("opset 8's Scan (batch axis, sequence_lens) is not unrolled",
                            "convert the model to opset 9 or later, or use a backend that "
                            "runs Scan")
    body: gs.Graph = node.attrs["body"]
    m = int(node.attrs["num_scan_inputs"])
    n_state = len(node.inputs) - m
    xs = node.inputs[n_state:]
    in_axes = list(node.attrs.get("scan_input_axes", [0] * m))
    in_dirs = list(node.attrs.get("scan_input_directions", [0] * m))
    k_out = len(body.outputs) - n_state
    out_axes = list(node.attrs.get("scan_output_axes", [0] * k_out))
    out_dirs = list(node.attrs.get("scan_output_directions", [0] * k_out))
    lengths = set()
    for x, axis in zip(xs, in_axes):
        dim = None if x.shape is None else x.shape[axis]
        if not isinstance(dim, (int, np.integer)):
            raise _CannotUnroll(f"the scan length of '{x.name}' is not static")
        lengths.add(int(dim))
    if len(lengths) != 1:
        raise _CannotUnroll(f"its scan inputs disagree on the sequence length {sorted(lengths)}")
    steps = lengths.pop()
    _check_count(node, steps, limits)
    if steps == 0 and k_out:
        raise _CannotUnroll("it runs zero times and has scan outputs, whose shape is unknown")
    nodes: list[gs.Node] = []
    states = list(node.inputs[:n_state])
    outs_k: list[list[gs.Tensor]] = [[] for _ in range(k_out)]
    for t in range(steps):
        bind: dict = {k: s for k, s in enumerate(states)}
        for j, (x, axis, rev) in enumerate(zip(xs, in_axes, in_dirs)):
            index = gs.Constant(_fresh(f"{node.name}/t{t}_in{j}_index", taken),
                                np.array(steps - 1 - t if rev else t, np.int64))
            part = gs.Variable(_fresh(f"{node.name}/t{t}_in{j}", taken))
            nodes.append(gs.Node("Gather", name=_fresh(f"{node.name}/t{t}_slice{j}", taken),
                                 attrs={"axis": axis}, inputs=[x, index], outputs=[part]))
            bind[n_state + j] = part
        copied, outs = inline_body(graph, body, f"{node.name}/iter{t}", bind, taken)
        nodes += copied
        states = outs[:n_state]
        for k in range(k_out):
            outs_k[k].append(outs[n_state + k])
    results = list(states)
    for k in range(k_out):
        parts = outs_k[k][::-1] if out_dirs[k] else outs_k[k]
        axis = out_axes[k]
        if axis < 0:
            rank = parts[0].shape and len(parts[0].shape)
            if not rank:
                raise _CannotUnroll(f"scan output {k} has a negative axis and unknown rank")
            axis += rank + 1
        results.append(_stack(graph, parts, axis, f"{node.name}/scan{k}", nodes, taken))
    return nodes + _bind_outputs(node, results, taken)


def _stack(graph: gs.Graph, parts: list[gs.Tensor], axis: int, name: str,
           nodes: list[gs.Node], taken: set[str]) -> gs.Tensor:
    """Unsqueeze each part at ``axis`` and Concat them (appending the nodes to ``nodes``)."""
    pieces = []
    for i, part in enumerate(parts):
        node, out = unsqueeze(graph, part, axis, f"{name}_{i}", taken)
        nodes.append(node)
        pieces.append(out)
    if len(pieces) == 1:
        return pieces[0]
    out = gs.Variable(_fresh(name, taken))
    nodes.append(gs.Node("Concat", name=_fresh(f"{name}_Concat", taken), attrs={"axis": axis},
                         inputs=pieces, outputs=[out]))
    return out


def _bind_outputs(node: gs.Node, results: list[gs.Tensor], taken: set[str]) -> list[gs.Node]:
    """Identities giving the node's output tensors their new producers."""
    targets = list(node.outputs)
    node.outputs.clear()
    return [gs.Node("Identity", name=_fresh(f"{node.name}/out{i}", taken), inputs=[result],
                    outputs=[target])
            for i, (target, result) in enumerate(zip(targets, results)) if not target.is_empty()]


@hookimpl
def aicc_register_passes(registry):
    registry.add(UnrollLoops)
