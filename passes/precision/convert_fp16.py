"""``convert-fp16``: a float32 program in; the chosen nodes computing in float16 out, with Casts at
their boundaries (-convert-to-fp16, -node-precision-info, -execute-nodes-in-fp16,
-keep-original-precision-for-nodes).

Which nodes run in fp16:

- ``all`` (-convert-to-fp16): every node with floating-point computation, except those whose op
  type is in ``keep_op_types`` (-keep-original-precision-for-nodes);
- ``op_types`` (-execute-nodes-in-fp16): every node of those types;
- ``nodes`` / ``node_precision_info`` (-node-precision-info, YAML ``FP16NodeInstanceNames``): the
  node instances named by their first output. A named instance runs in fp16 even if its type is
  kept (the instance is the more specific request). FP32 requests are refused: the vendor does
  not support setting node instances to FP32 (keep their op type instead).

How: a node's inputs and outputs whose schema type variable allows float16 and is bound to float32
become float16. A float32 initializer read by an fp16 node gets a float16 copy (the original stays
for fp32 readers, so shared initializers are split); other float32 inputs get one shared
``Cast(to=FLOAT16)``; each converted output keeps its name through ``Cast(to=FLOAT)`` so the
graph's I/O and fp32 readers are unchanged, while fp16 readers take the fp16 tensor directly (no
Cast pairs back to back; a ``Cast(int -> float)`` becomes ``Cast(int -> float16)``). Integer
tensors (shapes, indices) are never touched, nor are other Casts, Q/DQ, control-flow and random
ops. Afterwards every Cast's ``to`` is checked against its output's
declared type and the graph must pass strict ONNX type inference. Constants (initializers and
``Constant`` nodes alike) beyond the fp16 range keep the node reading them in fp32 with a
warning, and nodes computing from constants only stay in fp32 to be folded so
(``constant_range``); a BatchNormalization's parameters instead make the layer run as the same
scale and shift (``_affine_batchnorm``), since a clipped variance would change its function; a
constant acting as a bound or fill (``Clip``, ``Where``, an ``Add`` of a -1e9 mask) is clipped to
+-65504 with a warning.

This pass runs **before** ``fold-batchnorm`` in the default pipeline (stage ``bind``): instance
names refer to the model as given (folding renames a Conv's output to its BatchNormalization's),
and a Conv whose BatchNormalization runs in another precision must not be folded with it. That is
the vendor's note (mark both to let them fuse); aicc warns about each such pair
(counter ``conv/batchnorm pairs that will not fuse``) and the Casts between them keep them apart.

With ``sample_inputs`` (an input list; -input-list-file), the float program first runs on those
samples (observed on the interpreter backend, or on the cpu backend when the interpreter cannot
run the model), and a node going to fp16 whose values leave the fp16 range
(|x| > 65504) stays in fp32 (``overflow=keep-fp32``, the default): one whose output does, and one
that reads such a tensor (a Cast to fp16 in front of it would overflow alike). A warning names
each with the range seen, and ``Program.node_precision`` records it as ``float32``.
``overflow=warn`` only warns, ``overflow=error`` refuses. Values inside one op (a Conv's
accumulator) are not observable; only op outputs are checked. Without samples, a run that meets a
non-finite value names the node that first produced it (``aicc.nonfinite``).

The samples also check the result (``tolerance``, default ``DEFAULT_TOLERANCE``; 0 is off): when
the fp16 program's output error on them (max |fp16 - fp32| / max |fp32| per output, on the
interpreter) exceeds it, a bisection finds nodes to keep in fp32 until it does, with a warning
giving the error before and after; they are recorded as ``float32`` and the instances named
in ``nodes``/``node_precision_info`` are never among them (``accuracy``). A Conv, ConvTranspose
or Gemm going to fp16 together with its BatchNormalization is folded with it in float64 first,
from the float32 parameters, as the device compiler does (``fold_pairs``).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from aicc import ir
from aicc.configfile import load_yaml
from aicc.errors import ConfigError, did_you_mean, option_ref
from aicc.hookspecs import hookimpl
from aicc.options import FileValue, option
from aicc.pass_base import Pass, PassContext
from aicc.program import Program, describe_tensor
from aicc.passes.cleanup import remove_dead_nodes, sort_nodes

from aicc.passes.custom_io import CustomIOFile
from aicc.passes.precision.accuracy import accuracy_check
from aicc.passes.precision.fold_pairs import fold_fp16_pairs
from aicc.passes.precision.constant_range import constant_values, kept_for_constants
from aicc.passes.precision.overflow import (FP16_MAX, fp16_overflow_report, overflow_check,
                                            read_samples)
from aicc.graph_casts import (Names, fold_cast_pairs, has_subgraph, schema_of, type_slots,
                              verify_types)

__all__ = ["ConvertFP16", "DEFAULT_TOLERANCE", "FP16_MAX", "fp16_capable", "NodePrecisionFile",
           "load_node_precision_info", "check_op_types", "fp16_overflow_report", "read_samples"]

logger = logging.getLogger(__name__)

_NPI_KEY = "FP16NodeInstanceNames"
#: ops never converted: dtype set by an attribute, quantization, control flow, randomness
_NEVER = frozenset({
    "Cast", "CastLike", "Constant", "ConstantOfShape", "QuantizeLinear", "DequantizeLinear",
    "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
    "If", "Loop", "Scan", "RandomNormal", "RandomUniform", "RandomNormalLike",
    "RandomUniformLike", "Multinomial", "Bernoulli", "EyeLike", "Shape", "Size",
})
_LAYERS = ("Conv", "ConvTranspose", "Gemm")
#: the output error allowed by default before nodes stay in fp32 for accuracy (``tolerance``):
#: the model zoo's aic100 target (5e-2) with margin for inputs unlike the samples
DEFAULT_TOLERANCE = 0.02


class NodePrecisionFile(FileValue):
    """A node precision info file (``-node-precision-info``), read once: ``value`` is its list
    of node instance names."""

    what = "node precision info file"

    @classmethod
    def parse(cls, path: str | Path) -> list[str]:
        return load_node_precision_info(path)


def load_node_precision_info(path: str | Path) -> list[str]:
    """The node instances (first output names) of a -node-precision-info YAML file.

    Exactly one key, ``FP16NodeInstanceNames``, a non-empty list of names; FP32 requests and
    unknown keys are refused. Integer names (``[123]``: exporters name tensors by number) are
    read as their decimal text; repeats are merged.
    """
    data = load_yaml(path, what="node precision info file")
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping with key {_NPI_KEY}, got {type(data).__name__}",
                          where=path, hint=f"write '{_NPI_KEY}: [conv0, bn0, relu0]'")
    for key in data:
        if isinstance(key, str) and key.upper().startswith("FP32"):
            raise ConfigError(f"{key}: setting node instances to FP32 is not supported",
                              where=path, field=str(key),
                              hint="list FP16 instances only; keep op types in their original "
                                   f"precision with {option_ref('keep_original_precision')}")
        if key != _NPI_KEY:
            raise ConfigError(f"unknown key {key!r}", where=path, field=str(key),
                              hint=did_you_mean(str(key), [_NPI_KEY]))
    if _NPI_KEY not in data:
        raise ConfigError(f"missing key {_NPI_KEY}", where=path)
    names = data[_NPI_KEY]
    if not isinstance(names, list):
        raise ConfigError(f"expected a list of node output names, got {type(names).__name__} "
                          f"{names!r}", where=path, field=_NPI_KEY)
    if not names:
        raise ConfigError("the list is empty", where=path, field=_NPI_KEY,
                          hint=f"name at least one node, or drop {option_ref('node_precision_info')}")
    out: list[str] = []
    for i, name in enumerate(names):
        if isinstance(name, bool) or not isinstance(name, (str, int)) or name == "":
            raise ConfigError(f"expected a node's first output name, got {name!r}", where=path,
                              field=f"{_NPI_KEY}[{i}]", hint="quote names in YAML if in doubt")
        name = str(name)
        if name not in out:
            out.append(name)
    return out


def check_op_types(types: Iterable[str], *, where: str) -> list[str]:
    """Refuse names that are not ONNX op types (suggesting the nearest); drop repeats."""
    known = None
    out: list[str] = []
    for op in types:
        op = op.strip()
        if not op:
            raise ConfigError("empty op type in the list", where=where,
                              hint="write OpType[,OpType], e.g. Softmax,LayerNormalization")
        if not onnx.defs.has(op):
            known = known or sorted({s.name for s in onnx.defs.get_all_schemas()})
            raise ConfigError(f"unknown op type '{op}'", where=where, hint=did_you_mean(op, known))
        if op not in out:
            out.append(op)
    return out


class ConvertFP16(Pass):
    name = "convert-fp16"
    description = "run all, or the chosen, floating-point nodes in float16 (Casts at boundaries)"
    scope = "program"
    #: picks nodes by the model's own output names and Conv/BatchNormalization pairs: before
    #: fold-constants and fold-batchnorm rename and merge them
    after = ("specialize", "lower")
    before = ("fold-constants", "fold-batchnorm")
    semantics = "approximating"

    @dataclasses.dataclass(frozen=True)
    class Options:
        all: bool = option(False, "run every floating-point node in fp16 (-convert-to-fp16)")
        node_precision_info: NodePrecisionFile | None = option(
            None, "YAML file listing FP16NodeInstanceNames (node_precision_info)", path=True)
        nodes: list[str] = option([], "node instances (first output names) to run in fp16")
        op_types: list[str] = option([], "op types whose every node runs in fp16 "
                                         "(-execute-nodes-in-fp16)")
        keep_op_types: list[str] = option([], "op types that keep their original precision "
                                              "(-keep-original-precision-for-nodes); named "
                                              "instances still run in fp16")
        sample_inputs: str = option("", "input list to run the float program on first, "
                                        "reporting nodes whose outputs overflow fp16", path=True)
        sample_custom_io: CustomIOFile | None = option(
            None, "custom I/O list file the samples are written for", path=True)
        overflow: Literal["keep-fp32", "warn", "error"] = option(
            "keep-fp32", "what an fp16 overflow found on the samples does: keep the nodes whose "
                         "values leave the fp16 range in fp32, only warn, or fail")
        tolerance: float = option(
            DEFAULT_TOLERANCE, "with samples: the largest output error (max |fp16 - fp32| / "
                               "max |fp32| per output) before nodes are kept in fp32 for "
                               "accuracy; 0 turns the check off", minimum=0.0)

    def run(self, program: Program, ctx: PassContext) -> None:
        opts = ctx.options
        instances = list(opts.nodes)
        if opts.node_precision_info is not None:
            instances += [n for n in opts.node_precision_info.value if n not in instances]
        op_types = check_op_types(opts.op_types, where="pass 'convert-fp16': option 'op_types'")
        keep = check_op_types(opts.keep_op_types,
                              where="pass 'convert-fp16': option 'keep_op_types'")
        both = sorted(set(keep) & set(op_types))
        if both:
            raise ConfigError(f"op type {both[0]} is both kept in its original precision and run "
                              "in fp16", field="pass 'convert-fp16'",
                              hint=f"drop it from {option_ref('execute_nodes_in_fp16')} or "
                                   f"from {option_ref('keep_original_precision')}")
        if not (opts.all or instances or op_types):
            raise ConfigError("nothing to convert", field="pass 'convert-fp16'",
                              hint="set all=true, nodes, node_precision_info or op_types")
        for gname, graph in program.graphs.items():
            where = f"graph '{gname}'"
            selected = _select(graph, opts.all, instances, op_types, keep,
                               source=opts.node_precision_info.path
                               if opts.node_precision_info is not None
                               else "pass 'convert-fp16': option 'nodes'")
            named = {n.name for n in selected if n.outputs and n.outputs[0].name in instances}
            selected, folded = fold_fp16_pairs(graph, selected, ctx)
            reference: list[dict[str, np.ndarray]] = []     # the float outputs, per sample
            if opts.sample_inputs:
                kept = overflow_check(program, gname, graph, selected, ctx, reference)
                selected = [n for n in selected if n.name not in kept]
                for name in kept:
                    program.node_precision[name] = "float32"
            selected = _keep_for_constants(program, graph, selected, ctx)
            if opts.sample_inputs and opts.tolerance > 0:
                selected = _keep_for_accuracy(program, gname, graph, selected, named, ctx,
                                              reference)
            _warn_split_pairs(graph, selected, ctx)
            converted = convert_nodes(graph, selected, ctx, where=where)
            for node in graph.nodes:
                if node.name in converted:
                    program.node_precision[node.name] = "float16"
                elif keep and node.op in keep and _fp16_plan(node, graph.opset)[0] is not None:
                    program.node_precision.setdefault(node.name, "original")
            for bn, layer in folded.items():     # a folded BatchNormalization runs as its layer
                program.node_precision[bn] = program.node_precision.get(layer, "float32")
            verify_types(graph, who=f"pass 'convert-fp16' ({where})",
                         ir_version=program.ir_version)


def _keep_for_accuracy(program: Program, gname: str, graph: gs.Graph, selected: list[gs.Node],
                       protected: set[str], ctx: PassContext,
                       reference: list[dict[str, np.ndarray]]) -> list[gs.Node]:
    """``selected`` less the nodes the accuracy check keeps in fp32 (``accuracy``), recorded
    as ``float32`` in ``Program.node_precision``; ``reference``: the float outputs the overflow
    check saw, per sample (run again when missing)."""
    opts = ctx.options
    samples = read_samples(opts.sample_inputs, [describe_tensor(t) for t in graph.inputs],
                           opts.sample_custom_io, [describe_tensor(t) for t in graph.outputs])

    def convert(copy: gs.Graph, nodes: list[gs.Node], quiet: object) -> None:
        convert_nodes(copy, nodes, quiet, where=f"graph '{gname}' (accuracy trial)")

    capable = [n for n in selected if _fp16_plan(n, graph.opset)[0] is not None]
    kept = accuracy_check(program, gname, graph, capable, protected, samples, ctx, convert,
                          reference if len(reference) == len(samples) else None)
    for name in kept:
        program.node_precision[name] = "float32"
    return [n for n in selected if n.name not in kept]


def _keep_for_constants(program: Program, graph: gs.Graph, selected: list[gs.Node],
                        ctx: PassContext) -> list[gs.Node]:
    """``selected`` less the nodes that stay in fp32 for their constants (see
    ``constant_range``): those computed from constants only (folded in fp32), and, with a
    warning, those reading a constant beyond the fp16 range."""
    if any(ir.tensor_dtype(t) is None for n in graph.nodes for t in n.outputs if t.name):
        ir.infer_shapes(graph, where=f"graph '{graph.name}'")
    plans = {n.name for n in selected if _fp16_plan(n, graph.opset)[0] is not None}
    folded, readers = kept_for_constants(graph, selected, ctx, plans)
    by_name = {n.name: n for n in selected}
    for name, why in readers.items():
        logger.warning("convert-fp16: node '%s' (%s) stays in fp32: %s, beyond fp16's 65504",
                       name, by_name[name].op, why)
        ctx.count("nodes kept in fp32 (constant beyond fp16)")
        program.node_precision[name] = "float32"
    if folded:
        ctx.count("constant-only nodes left to fold in fp32", len(folded))
    return [n for n in selected if n.name not in folded and n.name not in readers]


def _select(graph: gs.Graph, all_: bool, instances: list[str], op_types: list[str],
            keep: list[str], *, source: str) -> list[gs.Node]:
    """The nodes to run in fp16, in graph order; refuses unknown names and types."""
    by_output: dict[str, gs.Node] = {}
    for node in graph.nodes:
        if node.outputs and node.outputs[0].name:
            by_output.setdefault(node.outputs[0].name, node)
    named: set[int] = set()
    for name in instances:
        node = by_output.get(name)
        if node is None:
            close = difflib.get_close_matches(name, list(by_output), n=3, cutoff=0.6)
            hint = (f"close matches: {', '.join(close)}" if close else
                    "nodes are named by their first output; no output is close to it")
            raise ConfigError(f"no node has first output '{name}'", where=source,
                              field=_NPI_KEY, hint=hint)
        plan, why = _fp16_plan(node, graph.opset)
        if plan is None:
            raise ConfigError(f"node '{name}' ({node.op}) cannot run in fp16: {why}",
                              where=source, field=_NPI_KEY)
        named.add(id(node))
    present = {n.op for n in graph.nodes}
    for option_name, flag, ops in (("op_types", "-execute-nodes-in-fp16", op_types),
                                   ("keep_op_types", "-keep-original-precision-for-nodes", keep)):
        for op in ops:
            where = f"pass 'convert-fp16': option '{option_name}' ({flag})"
            if op not in present:
                raise ConfigError(f"the model has no {op} node", where=where,
                                  hint=f"its op types: {', '.join(sorted(present))}")
            if option_name == "op_types" and not any(
                    n.op == op and _fp16_plan(n, graph.opset)[0] is not None
                    for n in graph.nodes):
                raise ConfigError(f"no {op} node computes in float32, so none can run in fp16",
                                  where=where)
    selected = []
    for node in graph.nodes:
        if id(node) in named or node.op in op_types or (all_ and node.op not in keep):
            if id(node) in named and node.op in keep:
                logger.info("convert-fp16: node '%s' (%s) is named in the fp16 instances; it "
                            "runs in fp16 although its op type is kept", node.name, node.op)
            selected.append(node)
    return selected


def fp16_capable(node: gs.Node, opset: int) -> bool:
    """Whether ``node`` has float32 computation that ``convert-fp16`` can run in float16."""
    return _fp16_plan(node, opset)[0] is not None


def _fp16_plan(node: gs.Node, opset: int) -> tuple[tuple[list[int], list[int]] | None, str]:
    """(input indices, output indices) that become float16, or (None, why not)."""
    if node.op == "Cast":
        # Cast(x -> float32) from another type becomes Cast(x -> float16): no Cast pair after it
        src = ir.tensor_dtype(node.inputs[0]) if node.inputs else None
        if int(node.attrs.get("to", 0)) == onnx.TensorProto.FLOAT and src is not None and \
                src not in (np.dtype(np.float32), np.dtype(np.float16)):
            return ([], [0]), ""
        return None, "a Cast that does not produce float32 from another type stays"
    if node.op in _NEVER:
        return None, f"{node.op} is never converted"
    if has_subgraph(node):
        return None, "it holds subgraphs"
    schema = schema_of(node, opset)
    if schema is None:
        return None, f"no ONNX schema for {node.domain or ''}{node.op} at opset {opset}"
    slots, allowed = type_slots(node, schema)
    ins: list[int] = []
    outs: list[int] = []
    for tv, where in slots.items():
        tensors = [(kind, i, (node.inputs if kind == "in" else node.outputs)[i])
                   for kind, i in where]
        if not any(ir.tensor_dtype(t) == np.float32 for _, _, t in tensors):
            continue
        if "tensor(float16)" not in allowed.get(tv, ()):
            continue
        for kind, i, t in tensors:
            if ir.tensor_dtype(t) in (np.dtype(np.float32), None):
                (ins if kind == "in" else outs).append(i)
    if not ins and not outs:
        return None, "it has no float32 computation that may be float16"
    return (ins, outs), ""


def _warn_split_pairs(graph: gs.Graph, selected: list[gs.Node], ctx: PassContext) -> None:
    chosen = {id(n) for n in selected}
    for node in graph.nodes:
        if node.op != "BatchNormalization" or not node.inputs:
            continue
        x = node.inputs[0]
        if len(x.inputs) != 1 or x.inputs[0].op not in _LAYERS or len(x.outputs) != 1:
            continue
        layer = x.inputs[0]
        if (id(layer) in chosen) != (id(node) in chosen):
            fp16, other = (layer, node) if id(layer) in chosen else (node, layer)
            logger.warning("convert-fp16: %s '%s' runs in fp16 but %s '%s' does not: they will "
                           "not fuse (mark both to let them fold)", fp16.op, fp16.name, other.op,
                           other.name)
            ctx.count("conv/batchnorm pairs that will not fuse")


def convert_nodes(graph: gs.Graph, selected: Iterable[gs.Node], ctx: PassContext, *,
                  where: str) -> set[str]:
    """Run ``selected`` nodes in float16 (see the module docstring); returns their names."""
    if any(ir.tensor_dtype(t) is None for n in graph.nodes for t in n.outputs if t.name):
        ir.infer_shapes(graph, where=where)
    names = Names(graph)
    cache: dict[int, gs.Tensor] = {}
    new_nodes: list[gs.Node] = []
    converted: set[str] = set()

    def to16(t: gs.Tensor) -> gs.Tensor:
        if id(t) in cache:
            return cache[id(t)]
        values = constant_values(t)
        if values is not None:     # an initializer, or a Constant node's value: copied as fp16
            big = np.isfinite(values) & (np.abs(values) > FP16_MAX)
            if big.any():
                logger.warning("convert-fp16: constant '%s' has %d value(s) beyond the fp16 "
                               "range (max |x| %.4g); they are clipped to +-65504", t.name,
                               int(big.sum()), float(np.abs(values[big]).max()))
                ctx.count("initializer values clipped to fp16 range", int(big.sum()))
                values = np.where(big, np.sign(values) * FP16_MAX, values)
            out: gs.Tensor = gs.Constant(names.new(f"{t.name}_fp16"),
                                         np.array(values, dtype=np.float16, order="C"))
            ctx.count("initializers converted")
        elif (len(t.inputs) == 1 and t.inputs[0].op == "Cast" and t.inputs[0].inputs
              and ir.tensor_dtype(t.inputs[0].inputs[0]) == np.float16):
            out = t.inputs[0].inputs[0]          # Cast(fp16 -> fp32): read the fp16 source
        else:
            out = gs.Variable(names.new(f"{t.name}_fp16"), dtype=np.float16, shape=t.shape)
            new_nodes.append(gs.Node("Cast", names.new(f"Cast_{out.name}"),
                                     {"to": onnx.TensorProto.FLOAT16}, [t], [out]))
            ctx.count("casts inserted")
        cache[id(t)] = out
        return out

    for node in selected:
        if node.op == "BatchNormalization":
            _affine_batchnorm(node, names, ctx)
        plan, why = _fp16_plan(node, graph.opset)
        if plan is None:
            logger.debug("convert-fp16: '%s' (%s) stays: %s", node.name, node.op, why)
            ctx.count("nodes left in original precision")
            continue
        ins, outs = plan
        if node.op == "Cast":
            node.attrs["to"] = onnx.TensorProto.FLOAT16
        for i in ins:
            node.inputs[i] = to16(node.inputs[i])
        for i in outs:
            o = node.outputs[i]
            o16 = gs.Variable(names.new(f"{o.name}_fp16"), dtype=np.float16, shape=o.shape)
            node.outputs[i] = o16
            new_nodes.append(gs.Node("Cast", names.new(f"Cast_{o.name}"),
                                     {"to": onnx.TensorProto.FLOAT}, [o16], [o]))
            ctx.count("casts inserted")
        converted.add(node.name)
        ctx.count("nodes in fp16")
    graph.nodes.extend(new_nodes)
    ctx.count("cast pairs folded", fold_cast_pairs(graph))
    remove_dead_nodes(graph)
    sort_nodes(graph)
    return converted


def _affine_batchnorm(bn: gs.Node, names: Names, ctx: PassContext) -> None:
    """Give an inference BatchNormalization whose parameters leave the fp16 range (a variance of
    1e8 is common after a layer with large outputs) the same function in fp16-friendly numbers:
    scale ``gamma / sqrt(var + eps)``, shift ``beta - mean * scale``, mean 0 and variance
    ``1 - eps``, computed in float64. Clipping the variance to 65504 instead would change the
    layer's scale (PP-OCRv4 det: by 38x, every output wrong). Left as is when the parameters fit
    fp16, or when they are not constants."""
    params = [constant_values(t) for t in bn.inputs[1:5]]
    if len(params) != 4 or len([o for o in bn.outputs if o.name]) != 1 or \
            any(v is None for v in params):
        return
    gamma, beta, mean, var = (np.asarray(v, np.float64) for v in params)
    if all(np.all(np.abs(v[np.isfinite(v)]) <= FP16_MAX) for v in (gamma, beta, mean, var)):
        return
    eps = float(bn.attrs.get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    values = (scale, beta - mean * scale, np.zeros_like(mean), np.full_like(var, 1.0 - eps))
    dtype = np.asarray(params[0]).dtype
    for i, (what, v) in enumerate(zip(("scale", "shift", "mean", "var"), values), start=1):
        bn.inputs[i] = gs.Constant(names.new(f"{bn.name}_{what}"), v.astype(dtype))
    logger.warning("convert-fp16: BatchNormalization '%s' has parameters beyond the fp16 range; "
                   "it runs as the same scale and shift (largest |scale| %.3g, |shift| %.3g)",
                   bn.name, float(np.abs(scale).max()), float(np.abs(values[1]).max()))
    ctx.count("batchnorms rewritten as scale and shift for fp16")


@hookimpl
def aicc_register_passes(registry):
    registry.add(ConvertFP16)
