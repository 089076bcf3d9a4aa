"""Evaluation for ``fold-constants``: the tensors to compute in, their values out, computed on
onnxruntime in batches of independent components (session creation grows faster than linearly with
the nodes in one session).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.importers.onnx_importer import get_itemsize
from onnx_graphsurgeon.ir.tensor import SparseValues
from onnx_graphsurgeon.util import misc

from aicc.backend import Observers

__all__ = ["BATCH_NODES", "should_evaluate", "batches", "evaluate"]

#: Most nodes evaluated in one onnxruntime session (a larger connected component is one session).
BATCH_NODES = 512


def should_evaluate(tensor: gs.Tensor, known: dict[str, gs.Tensor],
                     shapes: dict[str, np.ndarray], size_threshold: int | None) -> bool:
    """Evaluate a folded tensor that something outside the folded set reads (as graph-surgeon
    does, a reader counts as folded when its node name is a folded tensor's name)."""
    if isinstance(tensor, gs.Constant) or tensor.name in shapes:
        return False
    if tensor.outputs and all(node.name in known for node in tensor.outputs):
        return False
    if (size_threshold is not None and tensor.shape is not None and tensor.dtype is not None
            and not misc.is_dynamic_shape(tensor.shape)):
        return misc.volume(tensor.shape) * get_itemsize(tensor.dtype) <= size_threshold
    return True


def batches(graph: gs.Graph, wanted: list[gs.Tensor], shapes: dict[str, np.ndarray]
             ) -> Iterable[tuple[list[gs.Node], list[gs.Tensor]]]:
    """The nodes that compute ``wanted``, split into independent batches, in graph order."""
    # Nodes needed: walk back from the wanted tensors; Constants and folded shapes are leaves.
    parent: dict[int, int] = {}  # union-find over node ids: connected components

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    stack = [p for t in wanted for p in t.inputs]
    for node in stack:
        parent.setdefault(id(node), id(node))
    while stack:
        node = stack.pop()
        for t in node.inputs:
            if isinstance(t, gs.Constant) or t.name in shapes:
                continue
            for producer in t.inputs:
                if id(producer) not in parent:
                    parent[id(producer)] = id(producer)
                    stack.append(producer)
                a, b = find(id(node)), find(id(producer))
                if a != b:
                    parent[a] = b
    if not parent:
        return
    components: dict[int, list[gs.Node]] = {}
    for node in graph.nodes:
        if id(node) in parent:
            components.setdefault(find(id(node)), []).append(node)
    outputs: dict[int, list[gs.Tensor]] = {}
    for t in wanted:
        outputs.setdefault(find(id(t.inputs[0])), []).append(t)
    batch_nodes: list[gs.Node] = []
    batch_outputs: list[gs.Tensor] = []
    for root, nodes in components.items():
        if batch_nodes and len(batch_nodes) + len(nodes) > BATCH_NODES:
            yield batch_nodes, batch_outputs
            batch_nodes, batch_outputs = [], []
        batch_nodes += nodes
        batch_outputs += outputs.get(root, [])
    if batch_nodes:
        yield batch_nodes, batch_outputs


def evaluate(graph: gs.Graph, nodes: list[gs.Node], outputs: list[gs.Tensor],
             shapes: dict[str, np.ndarray], backends: Observers) -> dict[str, np.ndarray]:
    """Run ``nodes`` on the cpu backend and return the values of ``outputs``."""
    initializers: dict[str, onnx.TensorProto] = {}
    sparse: dict[str, onnx.SparseTensorProto] = {}
    value_info: dict[str, onnx.ValueInfoProto] = {}
    output_names = {t.name for t in outputs}
    for node in nodes:
        for t in node.inputs:
            if t.is_empty() or t.name in initializers or t.name in sparse:
                continue
            if t.name in shapes:
                initializers[t.name] = numpy_helper.from_array(shapes[t.name], t.name)
            elif isinstance(t, gs.Constant):
                if isinstance(t._values, SparseValues):
                    sparse[t.name] = OnnxExporter.export_sparse_tensor_proto(t)
                else:
                    initializers[t.name] = OnnxExporter.export_tensor_proto(t)
        for t in node.outputs:
            if (not t.is_empty() and t.name not in output_names
                    and (t.dtype is not None or t.shape is not None)):
                value_info[t.name] = OnnxExporter.export_value_info_proto(t, False)
    opsets = list(graph.import_domains or [onnx.helper.make_opsetid("", graph.opset)])
    have = {o.domain for o in opsets}
    for domain in sorted({n.domain for n in nodes if n.domain is not None} - have):
        opsets.append(onnx.helper.make_opsetid(domain, 1))
    proto = onnx.helper.make_graph(
        [OnnxExporter.export_node(n) for n in nodes], f"{graph.name}-folding", [],
        [OnnxExporter.export_value_info_proto(t, False) for t in outputs],
        initializer=list(initializers.values()), sparse_initializer=list(sparse.values()),
        value_info=list(value_info.values()))
    model = onnx.helper.make_model(proto, opset_imports=opsets)
    if graph.ir_version is not None:
        model.ir_version = graph.ir_version
    # one run per session: idle worker threads need not spin (this changes no result)
    return backends.observation("cpu", model, (), options={"allow_spinning": False}).run({})
