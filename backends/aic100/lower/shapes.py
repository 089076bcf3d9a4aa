"""What lowering knows before it builds steps: the graph's constants (initializers and Constant
nodes) and the static shape and dtype of every tensor, from ONNX shape inference or, where that
leaves a shape open, one interpreter run on zeros. Symbolic graph inputs and non-tensor I/O are
refused here, naming the input and the symbol to bind."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from aicc.errors import BackendError, ModelError, option_ref

__all__ = ["check_static_inputs", "constants_of", "static_shapes"]


def _static(vi: onnx.ValueInfoProto) -> tuple[tuple[int, ...], np.dtype] | None:
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.elem_type or not tt.HasField("shape"):
        return None
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims), np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))


def check_static_inputs(model: onnx.ModelProto) -> None:
    """Refuse non-tensor graph I/O and graph inputs with a symbolic dimension."""
    inits = {i.name for i in model.graph.initializer}
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.name not in inits and not vi.type.HasField("tensor_type"):
            kind = (vi.type.WhichOneof("value") or "untyped").replace("_type", "")
            raise BackendError(f"'{vi.name}' is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, "
                               "not a tensor; the AIC100 runs tensors only",
                               where="backend 'aic100'",
                               hint="choose another backend with --backend")
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        for axis, d in enumerate(dims):
            if not d.HasField("dim_value") or d.dim_value < 0:  # 0: an empty tensor, static
                sym = d.dim_param or "?"
                raise BackendError(
                    f"input '{vi.name}' has symbolic dimension '{sym}' (axis {axis}); the AIC100 "
                    "runs static shapes", where="backend 'aic100'",
                    hint=f"bind it with {option_ref('batchsize')}=N or "
                         f"{option_ref('symbols')}={sym},N")


_LIGHT_BYTES = 1 << 16


def _light(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model for shape inference: initializers over 64 KiB become typed graph inputs, so
    onnx does not serialize hundreds of MB of weights to learn their (declared) shapes. Small
    ones stay: shape computations may read their values."""
    g = model.graph
    big = [t for t in g.initializer if len(t.raw_data) > _LIGHT_BYTES]
    if not big:
        return model
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    lg = light.graph
    lg.name = g.name
    lg.node.extend(g.node)
    declared = {vi.name for vi in g.input}
    lg.input.extend(g.input)
    lg.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                    for t in big if t.name not in declared)
    big_names = {t.name for t in big}
    lg.initializer.extend(t for t in g.initializer if t.name not in big_names)
    lg.output.extend(g.output)
    lg.value_info.extend(g.value_info)
    return light


def static_shapes(model: onnx.ModelProto, constants: dict[str, np.ndarray]
            ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Static shape and dtype of every tensor: ONNX shape inference, else one interpreter run."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_light(model), strict_mode=False,
                                                     data_prop=True)
    except Exception as e:  # onnx raises several exception types here
        raise ModelError(f"shape inference failed: {str(e).strip().splitlines()[0]}",
                         where="backend 'aic100'") from None
    known: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        s = _static(vi)
        if s is not None:
            known[vi.name] = s
    for name, arr in constants.items():
        known[name] = (tuple(arr.shape), arr.dtype)
    needed = [o for n in model.graph.node for o in n.output if o and o not in known]
    if needed:
        from aicc.backends.interpreter.engine import Interpreter

        feeds = {}
        for vi in model.graph.input:
            if vi.name in constants:
                continue
            shape, dtype = _static(vi)
            feeds[vi.name] = np.zeros(shape, dtype)
        seen: dict[str, tuple[tuple[int, ...], np.dtype]] = {}

        def observe(name: str, value: np.ndarray) -> None:
            if isinstance(value, np.ndarray):
                seen[name] = (tuple(value.shape), value.dtype)

        Interpreter(model).run(feeds, observe=observe, observe_names=needed)
        known.update(seen)
        missing = [n for n in needed if n not in known]
        if missing:
            raise BackendError(f"no static shape for tensor '{missing[0]}'",
                               where="backend 'aic100'")
    return known


def constants_of(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The initializers and the values of Constant nodes, by tensor name."""
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    from aicc.backends.interpreter.kernels import NodeSpec, parse_attribute
    from aicc.backends.interpreter.ops_shape import constant_value

    for node in model.graph.node:
        if node.op_type == "Constant":
            spec = NodeSpec(name=node.name, op_type="Constant", version=13,
                            attrs={a.name: parse_attribute(a) for a in node.attribute},
                            inputs=tuple(node.input), outputs=tuple(node.output))
            out[node.output[0]] = constant_value(spec)
    return out
