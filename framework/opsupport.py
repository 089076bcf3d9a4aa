"""Which operators run where: the listing of ``aicc ops`` and ``aicc compile -operators-supported``.

The listing is not a second table: it asks each backend's own ``unsupported_nodes`` (the check
``aicc compile`` runs before any work) about a one-node model of every operator at every opset, so
what it prints is exactly what a compile accepts and refuses. Candidates are ONNX's operator
schemas (default and ``ai.onnx.ml`` domains) plus what a backend names in ``candidate_ops`` (the
cpu backend: onnxruntime's own ``com.microsoft`` ops). Element types are those the operator's
schema allows that the backend computes in (``Backend.dtypes``, narrowed by a backend's
``op_dtypes`` when it knows more: the cpu backend's onnxruntime kernels). Passes that lower an operator
into others for backends lacking it declare it in ``Pass.lowers``; the listing shows them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from typing import Any

import onnx

from .ir import MAX_OPSET, MIN_OPSET

__all__ = ["OpSupport", "supported_ops", "lowering_passes", "format_listing"]



@dataclasses.dataclass(frozen=True)
class OpSupport:
    domain: str            # "" for the default ONNX domain
    op: str
    opsets: tuple[tuple[int, int], ...]   # inclusive ranges of the domain's opset
    dtypes: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.domain}.{self.op}" if self.domain else self.op

    def ranges_text(self) -> str:
        return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in self.opsets)


@functools.lru_cache(maxsize=1)
def _schemas() -> dict[tuple[str, str], list[onnx.defs.OpSchema]]:
    out: dict[tuple[str, str], list[onnx.defs.OpSchema]] = {}
    for s in onnx.defs.get_all_schemas_with_history():
        if s.domain in ("", "ai.onnx.ml") and not s.deprecated:
            out.setdefault((s.domain, s.name), []).append(s)
    return out


def _opset_span(domain: str) -> range:
    if domain == "":
        return range(MIN_OPSET, MAX_OPSET + 1)
    if domain == "ai.onnx.ml":
        return range(1, max(v for (d, _), ss in _schemas().items() if d == domain
                            for v in (s.since_version for s in ss)) + 1)
    return range(1, 2)  # contrib domains (com.microsoft) have version 1


def _probe(domain: str, op: str, opset: int) -> onnx.ModelProto:
    node = onnx.helper.make_node(op, [], ["y"], name="probe", domain=domain)
    graph = onnx.GraphProto(name="probe", node=[node])
    graph.output.append(onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None))
    imports = [onnx.helper.make_opsetid("", opset if domain == "" else MAX_OPSET)]
    if domain:
        imports.append(onnx.helper.make_opsetid(domain, opset))
    return onnx.helper.make_model(graph, opset_imports=imports)


def _ranges(versions: Iterable[int]) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for v in sorted(versions):
        if out and out[-1][1] == v - 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return tuple((lo, hi) for lo, hi in out)


def _dtypes(domain: str, op: str, backend_dtypes: frozenset[str]) -> tuple[str, ...]:
    """The element types ``op``'s latest schema allows that the backend runs."""
    schemas = _schemas().get((domain, op))
    if not schemas:
        return tuple(sorted(backend_dtypes))
    latest = max(schemas, key=lambda s: s.since_version)
    allowed: set[str] = set()
    for tc in latest.type_constraints:
        for t in tc.allowed_type_strs:
            if t.startswith("tensor(") and t.endswith(")"):
                allowed.add(t[len("tensor("):-1])
    names = {"float": "float32", "double": "float64"}
    allowed = {names.get(t, t) for t in allowed}
    return tuple(sorted(allowed & backend_dtypes))


def supported_ops(backend: Any) -> list[OpSupport]:
    """Every operator ``backend`` accepts, with the opsets and element types it runs."""
    candidates = sorted(set(_schemas()) | set(getattr(backend, "candidate_ops", lambda: ())()))
    out = []
    for domain, op in candidates:
        schemas = _schemas().get((domain, op))
        first = min(s.since_version for s in schemas) if schemas else 1  # where the op exists
        accepted = [v for v in _opset_span(domain)
                    if v >= first and not backend.unsupported_nodes(_probe(domain, op, v))]
        if accepted:
            dtypes = frozenset(backend.dtypes)
            own = getattr(backend, "op_dtypes", lambda d, o: None)(domain, op)
            if own is not None:
                dtypes &= own
            out.append(OpSupport(domain, op, _ranges(accepted), _dtypes(domain, op, dtypes)))
    return out


def lowering_passes(pass_registry: Any) -> dict[str, list[str]]:
    """Op type -> the registered passes that lower it into other ops (``Pass.lowers``)."""
    out: dict[str, list[str]] = {}
    for entry in pass_registry.entries():
        for op in sorted(getattr(entry.cls, "lowers", ()) or ()):
            out.setdefault(op, []).append(entry.name)
    return out


def format_listing(backends: dict[str, Any], lowers: dict[str, list[str]]) -> list[str]:
    """Text lines: per backend, one line per operator (opsets, element types), then for each
    operator a backend lacks, the passes that can lower it for that backend."""
    lines: list[str] = []
    for name, backend in backends.items():
        ops = supported_ops(backend)
        have = {o.op for o in ops if o.domain == ""}
        lines.append(f"backend '{name}': {len(ops)} operators (opsets of the operator's domain; "
                     "element types it runs)")
        width = max((len(o.label) for o in ops), default=10)
        for o in ops:
            lines.append(f"  {o.label:<{width}}  {o.ranges_text():<10}  {', '.join(o.dtypes)}")
        lowered = {op: passes for op, passes in lowers.items() if op not in have}
        if lowered:
            lines.append(f"  lowered by passes for '{name}':")
            for op, passes in sorted(lowered.items()):
                lines.append(f"    {op}: {', '.join(passes)}")
        else:
            lines.append(f"  (no registered pass lowers an operator '{name}' lacks)")
    return lines
