"""Activation groups for quantization: the integer activations of a graph in, the sets that must
share one encoding out.

A data-movement op (Reshape, Transpose, MaxPool, ...) does not change values, so its input and
output share an encoding; so do a Concat's output and each input that only the Concat reads (not a
graph input or output, not already grouped). Two groups that carry different overrides never
join; an override spreads to the group it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx_graphsurgeon as gs

from aicc.quant import Encoding

from .qdq import DATA_MOVEMENT_OPS

__all__ = ["activation_groups"]


def activation_groups(graph: gs.Graph, ints: list[str],
                      override: Callable[[str], Encoding | None], *, float_ops: Iterable[int],
                      readers: dict[str, list], boundary: set[str]) -> dict[str, list[str]]:
    """Root name -> the members of each group of ``ints`` (the activations quantized to
    integers), in ``ints`` order. ``override`` gives a tensor's override, ``float_ops`` the ids
    of nodes kept in float, ``readers`` each tensor's reading (node, index) pairs, ``boundary``
    the graph's input and output names."""
    groups = _Groups(ints, override)
    ints_set = set(ints)
    float_ids = set(float_ops)
    for node in graph.nodes:
        if id(node) in float_ids or not node.inputs:
            continue
        if node.op in DATA_MOVEMENT_OPS:
            x = node.inputs[0].name
            if x not in ints_set:
                continue
            for y in node.outputs:
                if y.name in ints_set:
                    groups.join(x, y.name)
        elif node.op == "Concat" and node.outputs and node.outputs[0].name in ints_set:
            y = node.outputs[0].name
            for x in node.inputs:
                exclusive = (x.name in ints_set and len(readers.get(x.name, [])) == 1
                             and x.name not in boundary and groups.alone(x.name))
                if exclusive:
                    groups.join(x.name, y)
    out: dict[str, list[str]] = {}
    for n in ints:
        out.setdefault(groups.uf.find(n), []).append(n)
    return out


class _Groups:
    """Union-find over tensor names that remembers the override each group carries."""

    def __init__(self, names: list[str], override: Callable[[str], Encoding | None]):
        self.uf = _UnionFind()
        self.fixed: dict[str, Encoding] = {}      # root -> the override its group carries
        for n in names:
            self.uf.find(n)
            e = override(n)
            if e is not None:
                self.fixed[n] = e

    def alone(self, name: str) -> bool:
        return self.uf.size[self.uf.find(name)] == 1

    def join(self, a: str, b: str) -> bool:
        """Groups join unless they carry different overrides (the override then spreads)."""
        ra, rb = self.uf.find(a), self.uf.find(b)
        ea, eb = self.fixed.get(ra), self.fixed.get(rb)
        if ea is not None and eb is not None and not ea.isclose(eb):
            return False
        keep = ea if ea is not None else eb
        self.uf.union(a, b)
        if keep is not None:
            self.fixed[self.uf.find(a)] = keep
        return True


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        self.size.setdefault(x, 1)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
