"""A model that onnx wrote, made loadable by onnxruntime without changing what it computes.

onnx moves ahead of onnxruntime: onnx 1.23 stamps IR version 14 and opset 28 on every model its
helpers build, while onnxruntime 1.31 reads IR versions up to 13 and opsets up to 26. Both limits
are probed from the installed onnxruntime once (a tiny model per candidate version).

* **IR version.** Each IR version only adds things (docs/IR.md, the ``Version`` enum of
  onnx.proto): IR 4 bfloat16, 8 optional/sparse types and model-local functions, 9 float8 types
  and function attributes, 10 int4/uint4 and function overloads, 11 float4e2m1, 12 float8e8m0,
  13 int2/uint2, 14 float6e2m3/float6e3m2 and opaque types outside ONNX-ML. A model "needs" the
  highest version among the features it uses (``needed_ir_version``); its stamp is lowered to
  onnxruntime's highest when that is enough, and the model is refused, naming the feature, when
  it is not.
* **Semantics.** Float -> 2/4-bit integer casts are rewritten to onnx's rule
  (``aicc.ort_casts``), where onnxruntime's own Cast computes another.
* **Opset.** Re-stamping the default-domain opset down to onnxruntime's highest is exact when
  every node resolves to the same operator definition (``since_version``) at both opsets. When
  some node's definition is newer, onnx's version converter lowers the model (it refuses when an
  operator has no down-conversion), and a model it cannot lower is refused naming those nodes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import TensorProto

from .errors import BackendError
from .ort_casts import align_sub_byte_casts

__all__ = ["carry_boundary_types", "check_ir_version", "for_onnxruntime", "needed_ir_version",
           "ort_limits", "restamp_suffices"]

logger = logging.getLogger(__name__)

#: element type -> the IR version that introduced it (onnx.proto's ``Version`` comments)
_TYPE_IR = {
    TensorProto.BFLOAT16: 4,
    TensorProto.FLOAT8E4M3FN: 9, TensorProto.FLOAT8E4M3FNUZ: 9,
    TensorProto.FLOAT8E5M2: 9, TensorProto.FLOAT8E5M2FNUZ: 9,
    TensorProto.UINT4: 10, TensorProto.INT4: 10,
    TensorProto.FLOAT4E2M1: 11,
    TensorProto.FLOAT8E8M0: 12,
    TensorProto.UINT2: 13, TensorProto.INT2: 13,
}
for _name, _ir in (("FLOAT6E2M3", 14), ("FLOAT6E3M2", 14)):
    if hasattr(TensorProto, _name):
        _TYPE_IR[getattr(TensorProto, _name)] = _ir
#: attributes whose integer value is an element type
_TYPE_ATTRS = {("Cast", "to"), ("EyeLike", "dtype"), ("RandomNormal", "dtype"),
               ("RandomUniform", "dtype"), ("RandomNormalLike", "dtype"),
               ("RandomUniformLike", "dtype"), ("Multinomial", "dtype"), ("Bernoulli", "dtype"),
               ("QuantizeLinear", "output_dtype"), ("DequantizeLinear", "output_dtype"),
               ("TreeEnsemble", "dtype")}


@functools.lru_cache(maxsize=1)
def ort_limits() -> tuple[int, int]:
    """(highest IR version, highest default-domain opset) the installed onnxruntime loads."""
    ir = _highest(lambda v: _probe(ir_version=v, opset=13), onnx.IR_VERSION, 7)
    opset = _highest(lambda v: _probe(ir_version=min(ir, 8), opset=v),
                     onnx.defs.onnx_opset_version(), 13)
    return ir, opset


def _highest(loads, start: int, floor: int) -> int:
    for version in range(start, floor, -1):
        if loads(version):
            return version
    return floor


def _probe(*, ir_version: int, opset: int) -> bool:
    import onnxruntime as ort

    h = onnx.helper
    graph = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "probe",
                         [h.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = ir_version
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), options,
                             providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own exception types
        return False
    return True


def _graphs(model: onnx.ModelProto) -> Iterator[onnx.GraphProto]:
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)


def _type_features(tp: onnx.TypeProto, what: str) -> Iterator[tuple[int, str]]:
    kind = tp.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        elem = getattr(tp, kind).elem_type
        if elem in _TYPE_IR:
            yield _TYPE_IR[elem], f"{what} has type {TensorProto.DataType.Name(elem)}"
        if kind == "sparse_tensor_type":
            yield 8, f"{what} is a sparse tensor type"
    elif kind == "optional_type":
        yield 8, f"{what} is an optional type"
        yield from _type_features(tp.optional_type.elem_type, what)
    elif kind == "sequence_type":
        yield from _type_features(tp.sequence_type.elem_type, what)
    elif kind == "map_type":
        yield from _type_features(tp.map_type.value_type, what)
    elif kind == "opaque_type":
        yield 14, f"{what} is an opaque type"


def _features(model: onnx.ModelProto) -> Iterator[tuple[int, str]]:
    """(IR version needed, what needs it) for every versioned feature the model uses."""
    if model.functions:
        yield 8, f"model-local function '{model.functions[0].name}'"
    for func in model.functions:
        if func.attribute_proto:
            yield 9, f"function '{func.name}' has attribute defaults"
        if func.overload:
            yield 10, f"function '{func.name}' is an overload"
    for graph in _graphs(model):
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            yield from _type_features(vi.type, f"tensor '{vi.name}'")
        for t in graph.initializer:
            if t.data_type in _TYPE_IR:
                yield _TYPE_IR[t.data_type], (f"initializer '{t.name}' has type "
                                              f"{TensorProto.DataType.Name(t.data_type)}")
        if len(graph.sparse_initializer):
            yield 6, "a sparse initializer"
        nodes = list(graph.node) + [n for f in model.functions for n in f.node]
        for node in nodes:
            for attr in node.attribute:
                if (node.op_type, attr.name) in _TYPE_ATTRS and attr.i in _TYPE_IR:
                    yield _TYPE_IR[attr.i], (f"node '{node.name or node.output[0]}' "
                                             f"({node.op_type}) makes type "
                                             f"{TensorProto.DataType.Name(attr.i)}")
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type in _TYPE_IR:
                    yield _TYPE_IR[attr.t.data_type], (
                        f"node '{node.name or node.output[0]}' ({node.op_type}) holds a "
                        f"{TensorProto.DataType.Name(attr.t.data_type)} tensor")


def needed_ir_version(model: onnx.ModelProto) -> tuple[int, str]:
    """The lowest IR version that can carry ``model`` and the feature that sets it."""
    needed, why = 3, "opset_import"
    for version, what in _features(model):
        if version > needed:
            needed, why = version, what
    return needed, why


def check_ir_version(model: onnx.ModelProto) -> None:
    """BackendError when the model uses a feature of an IR version onnxruntime cannot read."""
    max_ir = ort_limits()[0]
    if model.ir_version > max_ir:
        needed, why = needed_ir_version(model)
        if needed > max_ir:
            raise BackendError(f"the model needs IR version {needed} ({why}); onnxruntime reads "
                               f"IR versions up to {max_ir}", where="onnxruntime",
                               hint="run it on the interpreter, or use types onnxruntime knows")


def for_onnxruntime(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with IR version and opset lowered to what onnxruntime loads (a new proto when
    anything changes, else ``model`` itself); BackendError when it cannot be lowered exactly."""
    max_ir, max_opset = ort_limits()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if model.ir_version <= max_ir and opset <= max_opset:
        return align_sub_byte_casts(model)
    check_ir_version(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if opset > max_opset:
        out = _lower_opset(out, opset, max_opset)
    if out.ir_version > max_ir:
        logger.debug("onnxruntime: IR version %d lowered to %d", out.ir_version, max_ir)
        out.ir_version = max_ir
    return align_sub_byte_casts(out)


def _newer_nodes(model: onnx.ModelProto, opset: int, target: int) -> list[str]:
    """Nodes of the default domain whose definition at ``opset`` is newer than ``target``."""
    newer = []
    nodes = [n for g in _graphs(model) for n in g.node]
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            since = onnx.defs.get_schema(node.op_type, opset, "").since_version
        except onnx.defs.SchemaError:
            continue  # an unknown op is reported by the backend's own op check
        if since > target:
            newer.append(f"node '{node.name or node.output[0]}' ({node.op_type}-{since})")
    return newer


@functools.lru_cache(maxsize=8)
def _convert(data: bytes, target: int) -> onnx.ModelProto:
    """onnx's version converter, memoized: one compile lowers the same graph for the up-front
    op check, the backend compile and the container reload."""
    from onnx import version_converter

    model = onnx.ModelProto()
    model.ParseFromString(data)
    return version_converter.convert_version(model, target)


def _newer_functions(model: onnx.ModelProto, target: int) -> list[str]:
    return [f.name for f in model.functions for o in f.opset_import
            if o.domain in ("", "ai.onnx") and o.version > target]


def restamp_suffices(model: onnx.ModelProto) -> bool:
    """Whether ``for_onnxruntime`` only changes the model's stamps (no opset conversion)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    target = ort_limits()[1]
    return opset <= target or not (_newer_nodes(model, opset, target) or
                                   _newer_functions(model, target))


def _lower_opset(model: onnx.ModelProto, opset: int, target: int) -> onnx.ModelProto:
    newer = _newer_nodes(model, opset, target)
    func_newer = _newer_functions(model, target)
    if not newer and not func_newer:
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = target
        logger.debug("onnxruntime: opset %d re-stamped as %d (no operator changed)", opset, target)
        return model
    try:
        lowered = _convert(model.SerializeToString(deterministic=True), target)
    except Exception as e:  # the converter raises RuntimeError/ValueError/its own types
        shown = ", ".join((newer + [f"function '{f}'" for f in func_newer])[:5])
        raise BackendError(f"opset {opset} cannot be lowered to opset {target}, the newest "
                           f"onnxruntime loads: {shown} ({str(e).splitlines()[0][:120]})",
                           where="onnxruntime",
                           hint="run it on the interpreter, or export at an older opset") from None
    logger.debug("onnxruntime: opset %d converted to %d (%s)", opset, target, ", ".join(newer))
    out = onnx.ModelProto()
    out.CopyFrom(lowered)  # the memoized proto stays untouched
    return out


#: element types onnxruntime's Python API cannot exchange with numpy -> the type they travel in
#: across the session boundary (every value of the former is exact in the latter)
_CARRIERS = {
    TensorProto.BFLOAT16: TensorProto.FLOAT,
    TensorProto.FLOAT8E4M3FN: TensorProto.FLOAT, TensorProto.FLOAT8E4M3FNUZ: TensorProto.FLOAT,
    TensorProto.FLOAT8E5M2: TensorProto.FLOAT, TensorProto.FLOAT8E5M2FNUZ: TensorProto.FLOAT,
    TensorProto.INT4: TensorProto.INT8, TensorProto.UINT4: TensorProto.UINT8,
    TensorProto.INT2: TensorProto.INT8, TensorProto.UINT2: TensorProto.UINT8,
    TensorProto.FLOAT8E8M0: TensorProto.FLOAT, TensorProto.FLOAT4E2M1: TensorProto.FLOAT,
}


def carry_boundary_types(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.dtype],
                                                           dict[str, np.dtype]]:
    """Graph I/O of types onnxruntime's Python API cannot pass (bfloat16, float8, 2/4-bit ints)
    re-declared in a wider type that holds each value exactly, with a ``Cast`` inside the graph.

    Returns the model, the numpy dtype each converted input is fed in, and the declared numpy
    dtype each converted output is turned back into.
    """
    graph = model.graph
    ins = [vi for vi in graph.input if vi.type.tensor_type.elem_type in _CARRIERS]
    outs = [vi for vi in graph.output if vi.type.tensor_type.elem_type in _CARRIERS]
    if not ins and not outs:
        return model, {}, {}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    renames: dict[str, str] = {}
    casts_in, casts_out = [], []
    feed_types: dict[str, np.dtype] = {}
    result_types: dict[str, np.dtype] = {}
    input_names = {vi.name for vi in graph.input}
    for vi in graph.input:
        elem = vi.type.tensor_type.elem_type
        if elem not in _CARRIERS:
            continue
        inner = renames[vi.name] = f"{vi.name}__aicc_carried"
        casts_in.append(onnx.helper.make_node("Cast", [vi.name], [inner], to=elem,
                                              name=f"{inner}_cast"))
        vi.type.tensor_type.elem_type = _CARRIERS[elem]
        feed_types[vi.name] = onnx.helper.tensor_dtype_to_np_dtype(_CARRIERS[elem])
    for vi in graph.output:
        elem = vi.type.tensor_type.elem_type
        if elem not in _CARRIERS:
            continue
        vi.type.tensor_type.elem_type = _CARRIERS[elem]
        result_types[vi.name] = onnx.helper.tensor_dtype_to_np_dtype(elem)
        if vi.name in input_names or vi.name in renames:
            continue  # a graph input passed through, or an output listed twice
        inner = renames[vi.name] = f"{vi.name}__aicc_carried"
        casts_out.append(onnx.helper.make_node("Cast", [inner], [vi.name], to=_CARRIERS[elem],
                                               name=f"{inner}_cast"))
    for g in _graphs(out):
        for node in g.node:
            node.input[:] = [renames.get(n, n) for n in node.input]
            if g is graph:
                node.output[:] = [renames.get(n, n) for n in node.output]
    for vi in graph.value_info:
        vi.name = renames.get(vi.name, vi.name)
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    return out, feed_types, result_types
