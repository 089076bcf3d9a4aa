"""Control flow (If, Loop, Scan) as kernels that run their bodies on nested interpreters.

The engine passes a control-flow node the outer-scope values its bodies read after its real
inputs (``NodeSpec.captured``), so liveness keeps them alive until the node runs. Each body is an
``Interpreter.for_subgraph`` built once with the node; running it binds the body's inputs and the
captured values; the engine hands each node the builder (``NodeSpec.body``), so this module never
imports the engine. A kernel has ``inner_names`` (the body tensors an observer can see) and takes
an ``observe`` keyword: the engine passes one that qualifies names with the node's name, and
``bodies`` (the nested interpreters, which the engine gives its ``check_types`` and ``profile``
settings; with ``profile`` a body's ops count in the op times too, inside their node's time).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from .feeds import tensor_spec
from .kernels import NodeSpec, register

__all__: list[str] = []  # kernels register themselves


def _body(spec: NodeSpec, attr: str):
    """The nested interpreter of graph attribute ``attr`` and the outer names it reads (built by
    the engine's ``spec.body``)."""
    graph = spec.attr(attr)
    if not isinstance(graph, onnx.GraphProto):
        raise ValueError(f"attribute '{attr}' is missing or not a graph")
    if spec.body is None:
        raise ValueError("control flow runs only inside the interpreter engine (no body builder)")
    return spec.body(graph)


def _inner_names(*bodies) -> tuple[str, ...]:
    names: dict[str, None] = {}
    for body in bodies:
        outer = set(body.outer)
        names.update((n, None) for n in body.tensor_names() if n not in outer)
        names.update((n, None) for n in body.inner_tensor_names())
    return tuple(names)


def _split(spec: NodeSpec, args: tuple) -> tuple[tuple, dict[str, Any]]:
    """(the node's own inputs, outer name -> value of the captured ones)."""
    n = len(spec.inputs) - len(spec.captured)
    return args[:n], dict(zip(spec.captured, args[n:]))


def _pick(outer: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    return {n: outer[n] for n in names}


def _scalar_bool(value: Any, what: str) -> bool:
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"{what} must hold one value, got shape {arr.shape}")
    return bool(arr.reshape(-1)[0])


@register("If", min_version=1)
def _if(spec: NodeSpec):
    then_body, then_outer = _body(spec, "then_branch")
    else_body, else_outer = _body(spec, "else_branch")
    for body, which in ((then_body, "then_branch"), (else_body, "else_branch")):
        if len(body.output_names) != len(spec.outputs):
            raise ValueError(f"{which} has {len(body.output_names)} outputs, the node "
                             f"{len(spec.outputs)}")

    def run(*args, observe=None):
        (cond,), outer = _split(spec, args)
        if _scalar_bool(cond, "the condition"):
            outs = then_body.run_body(_pick(outer, then_outer), observe)
        else:
            outs = else_body.run_body(_pick(outer, else_outer), observe)
        return tuple(outs)

    run.inner_names = _inner_names(then_body, else_body)
    run.bodies = (then_body, else_body)
    return run


def _empty_scan_output(vi: onnx.ValueInfoProto) -> np.ndarray:
    """The stacked scan output of a loop that ran zero times: dims (0, *element dims)."""
    declared = tensor_spec(vi)
    dtype = declared.dtype if declared.dtype is not None else np.dtype(np.float32)
    dims = declared.shape or ()
    return np.zeros((0,) + tuple(d if isinstance(d, int) else 0 for d in dims), dtype)


@register("Loop", min_version=11)
def _loop(spec: NodeSpec):
    body, body_outer = _body(spec, "body")
    graph: onnx.GraphProto = spec.attr("body")
    n_carried = len(spec.inputs) - len(spec.captured) - 2
    n_scan = len(graph.output) - 1 - n_carried
    if n_scan < 0 or len(graph.input) != n_carried + 2:
        raise ValueError(f"the body has {len(graph.input)} inputs and {len(graph.output)} "
                         f"outputs for {n_carried} loop-carried values")
    in_names = [i.name for i in graph.input]
    scan_vis = list(graph.output[1 + n_carried:])

    def run(*args, observe=None):
        (trip, cond, *carried), outer = _split(spec, args)
        limit = None if trip is None else int(np.asarray(trip).reshape(-1)[0])
        going = True if cond is None else _scalar_bool(cond, "the loop condition")
        fixed = _pick(outer, body_outer)
        scans: list[list] = [[] for _ in range(n_scan)]
        i = 0
        while going and (limit is None or i < limit):
            values = dict(fixed)
            values.update(zip(in_names, [np.array(i, np.int64), np.array(going)] + carried))
            outs = body.run_body(values, observe)
            going = _scalar_bool(outs[0], "the body's condition output")
            carried = outs[1:1 + n_carried]
            for k in range(n_scan):
                scans[k].append(outs[1 + n_carried + k])
            i += 1
        stacked = [np.stack(s) if s else _empty_scan_output(vi) for s, vi in zip(scans, scan_vis)]
        return tuple(carried) + tuple(stacked)

    run.inner_names = _inner_names(body)
    run.bodies = (body,)
    return run


@register("Scan", min_version=8)
def _scan(spec: NodeSpec):
    if spec.version < 9:
        return _scan8(spec)
    body, body_outer = _body(spec, "body")
    graph: onnx.GraphProto = spec.attr("body")
    m = int(spec.attr("num_scan_inputs"))
    n_state = len(spec.inputs) - len(spec.captured) - m
    k_out = len(graph.output) - n_state
    if n_state < 0 or k_out < 0 or len(graph.input) != n_state + m:
        raise ValueError(f"the body has {len(graph.input)} inputs and {len(graph.output)} "
                         f"outputs for {n_state} states and {m} scan inputs")
    in_axes = list(spec.attr("scan_input_axes", [0] * m))
    in_dirs = list(spec.attr("scan_input_directions", [0] * m))
    out_axes = list(spec.attr("scan_output_axes", [0] * k_out))
    out_dirs = list(spec.attr("scan_output_directions", [0] * k_out))
    in_names = [i.name for i in graph.input]

    def run(*args, observe=None):
        own, outer = _split(spec, args)
        states, xs = list(own[:n_state]), own[n_state:]
        axes = [a + x.ndim if a < 0 else a for a, x in zip(in_axes, xs)]
        lengths = {x.shape[a] for x, a in zip(xs, axes)}
        if len(lengths) != 1:
            raise ValueError(f"scan inputs disagree on the sequence length: {sorted(lengths)}")
        steps = lengths.pop()
        fixed = _pick(outer, body_outer)
        outs_k: list[list] = [[] for _ in range(k_out)]
        for t in range(steps):
            slices = [np.take(x, steps - 1 - t if d else t, axis=a)
                      for x, a, d in zip(xs, axes, in_dirs)]
            values = dict(fixed)
            values.update(zip(in_names, states + slices))
            outs = body.run_body(values, observe)
            states = outs[:n_state]
            for k in range(k_out):
                outs_k[k].append(outs[n_state + k])
        result = []
        for k in range(k_out):
            elems = outs_k[k][::-1] if out_dirs[k] else outs_k[k]
            stacked = np.stack(elems) if elems else _empty_scan_output(graph.output[n_state + k])
            axis = out_axes[k] + stacked.ndim if out_axes[k] < 0 else out_axes[k]
            result.append(np.moveaxis(stacked, 0, axis))
        return tuple(states) + tuple(result)

    run.inner_names = _inner_names(body)
    run.bodies = (body,)
    return run


def _scan8(spec: NodeSpec):
    """Scan of opset 8: every input has a batch axis first, scan inputs scan their axis 1,
    ``sequence_lens`` (optional first input) limits the steps per batch entry; the scan outputs
    of a shorter entry are zero past its length."""
    body, body_outer = _body(spec, "body")
    graph: onnx.GraphProto = spec.attr("body")
    m = int(spec.attr("num_scan_inputs"))
    n_state = len(spec.inputs) - len(spec.captured) - 1 - m
    k_out = len(graph.output) - n_state
    dirs = list(spec.attr("directions", [0] * m))
    in_names = [i.name for i in graph.input]

    def run(*args, observe=None):
        (lens, *own), outer = _split(spec, args)
        states, xs = own[:n_state], own[n_state:]
        batch, steps = xs[0].shape[0], xs[0].shape[1]
        fixed = _pick(outer, body_outer)
        final = [[] for _ in range(n_state)]
        outs_k: list[list] = [[] for _ in range(k_out)]
        for b in range(batch):
            n = steps if lens is None else int(lens[b])
            st = [s[b] for s in states]
            per_t: list[list] = [[] for _ in range(k_out)]
            for t in range(n):
                values = dict(fixed)
                values.update(zip(in_names, st + [x[b, n - 1 - t if d else t]
                                                  for x, d in zip(xs, dirs)]))
                res = body.run_body(values, observe)
                st = res[:n_state]
                for k in range(k_out):
                    per_t[k].append(res[n_state + k])
            for i in range(n_state):
                final[i].append(st[i])
            for k in range(k_out):
                if not per_t[k]:
                    raise ValueError(f"batch entry {b} has no steps; its scan output's shape "
                                     "is unknown")
                stacked = np.stack(per_t[k])
                pad = np.zeros((steps - n,) + stacked.shape[1:], stacked.dtype)
                outs_k[k].append(np.concatenate([stacked, pad]))
        return tuple(np.stack(f) for f in final) + tuple(np.stack(o) for o in outs_k)

    run.inner_names = _inner_names(body)
    run.bodies = (body,)
    return run
