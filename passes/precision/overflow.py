"""The fp16 overflow report of ``convert-fp16``: run the float program on sample inputs (through
a backend's observation, found by name) and find the nodes whose values leave the fp16 range, or
that read such a value; the pass keeps those in fp32, warns or refuses (its ``overflow`` option).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from aicc.backend import Observers
from aicc import ir
from aicc.errors import AiccError, BackendError, PassError, PluginError
from aicc.pass_base import PassContext
from aicc.program import Program, describe_tensor
from aicc.passes.custom_io import CustomIOFile

__all__ = ["read_samples", "fp16_overflow_report", "overflow_check", "FP16_MAX"]

logger = logging.getLogger("aicc.passes.precision.convert_fp16")

#: the largest finite float16
FP16_MAX = 65504.0

def read_samples(input_list: str | Path, inputs: list[Any],
                 custom_io: Any = None, outputs: list[Any] | None = None
                 ) -> list[dict[str, np.ndarray]]:
    """The samples of an input list (or a vendor JSON input file, ``.json``) as model feeds.

    ``inputs`` are the model's input descriptors; with ``custom_io`` the files hold the custom
    tensors of that custom I/O list, converted here to the model's (on the host, as a Session
    compiled without -aic-preproc does).
    """
    from aicc.customio import apply_steps, custom_desc, load_custom_io, parse_custom_io, plan_steps
    from aicc.data import parse_input_list, parse_json_input_file, read_tensor_file

    steps: dict[str, list[dict[str, Any]]] = {}
    descs = list(inputs)
    if custom_io:
        by_name = {d.name: d for d in inputs}
        entries = (parse_custom_io(custom_io.value, custom_io.path, inputs, outputs or [])
                   if isinstance(custom_io, CustomIOFile)
                   else load_custom_io(custom_io, inputs, outputs or []))
        for e in entries:
            if e.direction == "input":
                steps[e.name] = plan_steps(e, by_name[e.name])
                by_name[e.name] = custom_desc(by_name[e.name], e)
        descs = [by_name[d.name] for d in inputs]
    if Path(input_list).suffix.lower() == ".json":
        return [{n: apply_steps(steps[n], a) if n in steps else a for n, a in feeds.items()}
                for feeds in parse_json_input_file(input_list, descs)]
    listing = parse_input_list(input_list, [d.name for d in descs])
    samples = []
    for line, sample in zip(listing.lines, listing.samples):
        feeds = {}
        for d in descs:
            arr = read_tensor_file(sample[d.name], d, where=f"{listing.path}: line {line}")
            feeds[d.name] = apply_steps(steps[d.name], arr) if d.name in steps else arr
        samples.append(feeds)
    return samples


def fp16_overflow_report(model: onnx.ModelProto, samples: Iterable[Mapping[str, np.ndarray]], *,
                         nodes: Collection[str] | None = None,
                         backends: Observers | None = None,
                         outputs: list[dict[str, np.ndarray]] | None = None
                         ) -> list[dict[str, Any]]:
    """Run a float model on ``samples``; list node outputs whose magnitude exceeds fp16's range.

    Returns ``[{"node", "op", "tensor", "max_abs"}]`` in graph order (graph inputs appear with
    node ``None``), limited to the nodes named in ``nodes`` when given. Observes every tensor on
    the ``interpreter`` backend, or its float tensors on the ``cpu`` backend (onnxruntime) if
    the interpreter cannot run the model; both found in ``backends`` (a pass's
    ``ctx.observers``; default: the built-in backends). ``outputs``, when given, receives the
    graph outputs of each sample (the float reference the accuracy check compares with).
    """
    producer: dict[str, tuple[str | None, str]] = {i.name: (None, "input")
                                                   for i in model.graph.input}
    order: dict[str, int] = {n: i for i, n in enumerate(producer)}
    for node in model.graph.node:
        for out in node.output:
            if out and (nodes is None or node.name in nodes):
                producer[out] = (node.name, node.op_type)
                order[out] = len(order)
    peak: dict[str, float] = {}

    def observe(name: str, arr: np.ndarray) -> None:
        if name in producer and isinstance(arr, np.ndarray) and arr.dtype.kind == "f" and arr.size:
            finite = np.abs(arr[np.isfinite(arr)])
            if finite.size:
                peak[name] = max(peak.get(name, 0.0), float(finite.max()))

    samples = list(samples)
    backends = backends or Observers()
    results: list[dict[str, np.ndarray]] = []
    try:
        run = backends.observation("interpreter", model)
        results = [run.run(dict(feeds), observe) for feeds in samples]
    except (BackendError, PluginError):
        run = backends.observation("cpu", model, _float_tensors(model, set(producer)),
                                   options={"optimization_level": "disable"})
        results = [run.run(dict(feeds), observe) for feeds in samples]
    if outputs is not None:
        outputs.extend(results)
    report = [{"node": producer[t][0], "op": producer[t][1], "tensor": t, "max_abs": v}
              for t, v in peak.items() if v > FP16_MAX]
    return sorted(report, key=lambda r: order[r["tensor"]])


def _float_tensors(model: onnx.ModelProto, wanted: set[str]) -> list[str]:
    """The graph's inputs and outputs, and the ``wanted`` tensors that shape inference types
    as float, float16 or double (what onnxruntime is asked to show)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
    names = [vi.name for vi in list(model.graph.input) + list(model.graph.output)]
    names += [vi.name for vi in inferred.graph.value_info
              if vi.name in wanted and vi.type.tensor_type.elem_type in floats]
    return list(dict.fromkeys(names))


def overflow_check(program: Program, gname: str, graph: gs.Graph, selected: list[gs.Node],
                    ctx: PassContext, outputs: list[dict[str, np.ndarray]] | None = None
                    ) -> set[str]:
    """Run the float program on the samples; warn about (or refuse) selected nodes whose values
    leave the fp16 range. Returns the nodes to keep in fp32 (``overflow=keep-fp32``): those whose
    output overflows and those reading an overflowing tensor (a Cast to fp16 in front of them
    would overflow just the same). ``outputs`` receives the graph outputs of each sample."""
    opts = ctx.options
    inputs = [describe_tensor(t) for t in graph.inputs]
    outputs = [describe_tensor(t) for t in graph.outputs]
    samples = read_samples(opts.sample_inputs, inputs, opts.sample_custom_io, outputs)
    model = ir.export_model(graph, ir_version=program.ir_version)
    try:
        report = fp16_overflow_report(model, samples, backends=ctx.observers, outputs=outputs)
    except AiccError:
        raise
    except Exception as e:  # a backend failing on user data: say which check failed
        raise PassError(f"the fp16 overflow check could not run the float program: "
                        f"{type(e).__name__}: {e}", where=opts.sample_inputs) from e
    ctx.count("samples checked for fp16 overflow", len(samples))
    chosen = {n.name: n for n in selected}
    tensors = graph.tensors()
    kept: dict[str, str] = {}        # node -> why, in graph order of the tensors
    shown = []
    for r in report:
        why = f"output '{r['tensor']}' reaches |x| = {r['max_abs']:.4g} on the samples"
        if r["node"] in chosen:
            kept.setdefault(r["node"], why)
            shown.append((f"node '{r['node']}' ({r['op']})", r))
        elif r["node"] is None:
            shown.append(("graph input", r))
        readers = tensors[r["tensor"]].outputs if r["tensor"] in tensors else []
        for reader in readers:
            if reader.name in chosen:
                kept.setdefault(reader.name, f"it reads '{r['tensor']}' (|x| up to "
                                             f"{r['max_abs']:.4g} on the samples)")
    if opts.overflow == "keep-fp32":
        for name, why in kept.items():
            node = chosen[name]
            logger.warning("convert-fp16: node '%s' (%s) stays in fp32: %s, beyond fp16's 65504",
                           name, node.op, why)
            ctx.count("nodes kept in fp32 (fp16 overflow)")
        return set(kept)
    for what, r in shown:
        logger.warning("convert-fp16: %s output '%s' reaches |x| = %.4g on the samples, beyond "
                       "fp16's 65504: it will overflow to inf in fp16", what, r["tensor"],
                       r["max_abs"])
        ctx.count("nodes overflowing fp16")
    if shown and opts.overflow == "error":
        text = ", ".join(f"{r['node'] or r['tensor']} ({r['max_abs']:.4g})" for _, r in shown[:8])
        raise PassError(f"{len(shown)} tensor(s) overflow fp16 on the samples of graph "
                        f"'{gname}': {text}", where=opts.sample_inputs,
                        hint="drop overflow=error to keep those nodes in fp32 automatically, "
                             "or rescale the model")
    return set()
