"""``cpu``: run each graph on onnxruntime's CPU execution provider (the fast host path).

The graph in the container is the kernel here: compiling creates an onnxruntime session with the
chosen thread count and graph-optimization level; loading a container does the same. Graphs with
quantization ops avoid onnxruntime's integer kernels where they saturate (x86 without VNNI): see
``_cpu_quant.py`` and the ``quantized_kernels`` option.

onnxruntime's telemetry events are turned off (``aicc`` also sets ``ORT_DISABLE_TELEMETRY=1``
for its process) and its own log lines are silenced: a failure reaches the user as aicc's one-line
error. A graph past 2 GiB cannot be handed to onnxruntime as one protobuf, so its large
initializers are passed beside it as in-memory external initializers.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort

from aicc import ir
from aicc.backend import Backend, Executable, Observation, Observe
from aicc.errors import BackendError
from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.ort_compat import carry_boundary_types, check_ir_version, for_onnxruntime, ort_limits

from ._cpu_quant import QuantKernels, quantized_session_config
from aicc.ort_free_shapes import has_subgraphs, with_free_shapes

__all__ = ["CpuBackend", "CpuExecutable", "CpuObservation"]

logger = logging.getLogger(__name__)

ort.disable_telemetry_events()
#: onnxruntime's log severity for aicc's sessions and runs: fatal only (errors come back as
#: exceptions, which aicc reports on one line)
_LOG_SEVERITY = 4
#: Past 2 GiB, initializers of at least this size go to onnxruntime as external initializers.
_EXTERNAL_MIN_BYTES = 1 << 20

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@functools.lru_cache(maxsize=1)
def _cpu_kernels() -> dict[tuple[str, str], list[tuple[int, int]]]:
    """(domain, op) -> opset ranges onnxruntime's CPU provider has kernels for."""
    from onnxruntime.capi import _pybind_state as C

    table: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for k in C.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider":
            domain = "" if k.domain == "ai.onnx" else k.domain
            table.setdefault((domain, k.op_name), []).append(tuple(k.version_range))
    return table


@functools.lru_cache(maxsize=1)
def _cpu_kernel_types() -> dict[tuple[str, str], frozenset[str]]:
    """(domain, op) -> element types onnxruntime's CPU kernels take (any type constraint)."""
    from onnxruntime.capi import _pybind_state as C

    names = {"float": "float32", "double": "float64"}
    table: dict[tuple[str, str], set[str]] = {}
    for k in C.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider":
            domain = "" if k.domain == "ai.onnx" else k.domain
            types = table.setdefault((domain, k.op_name), set())
            for allowed in k.type_constraints.values():
                types.update(names.get(t[7:-1], t[7:-1]) for t in allowed
                             if t.startswith("tensor(") and t.endswith(")"))
    return {key: frozenset(v) for key, v in table.items()}


def _session_source(model: onnx.ModelProto) -> tuple[bytes, list[str], list[Any]]:
    """The model bytes for onnxruntime, plus (names, OrtValues) of initializers passed beside
    them when the model is too large for one protobuf. ``model`` is left as it was."""
    if not ir.too_large_for_protobuf(model):
        return model.SerializeToString(), [], []
    names: list[str] = []
    values: list[Any] = []
    moved: list[tuple[onnx.TensorProto, bytes]] = []
    try:
        for t in model.graph.initializer:
            if not t.HasField("raw_data") or len(t.raw_data) < _EXTERNAL_MIN_BYTES:
                continue
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
            if dtype.kind not in "biuf":
                continue
            data = t.raw_data
            arr = np.frombuffer(data, dtype=dtype).reshape(tuple(t.dims))
            names.append(t.name)
            values.append(ort.OrtValue.ortvalue_from_numpy(arr))
            moved.append((t, data))
            t.ClearField("raw_data")
            entry = t.external_data.add()
            entry.key, entry.value = "location", "aicc-in-memory"
            t.data_location = onnx.TensorProto.EXTERNAL
        return model.SerializeToString(), names, values
    finally:
        for t, data in moved:
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
            t.raw_data = data


class CpuExecutable(Executable):
    """A session; I/O of types onnxruntime's Python API cannot pass travels in a wider type
    (``aicc.ort_compat.carry_boundary_types``) and is converted here, exactly."""

    def __init__(self, session: ort.InferenceSession, keep: list[Any] | None = None,
                 carried: tuple[Mapping[str, Any], Mapping[str, Any]] = ({}, {}),
                 quantized_kernels: str = "none"):
        self.session = session
        self._keep = keep or []  # external initializers the session reads in place
        self.output_names = [o.name for o in session.get_outputs()]
        self.runs = 0
        self.feed_types, self.result_types = carried
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = _LOG_SEVERITY
        #: "integer" (onnxruntime's fused kernels), "float" (QDQ unfused) or "none"
        self.quantized_kernels = quantized_kernels

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = dict(feeds)
        for name, dtype in self.feed_types.items():
            if name in feeds:
                feeds[name] = feeds[name].astype(dtype)
        try:
            results = self.session.run(self.output_names, feeds, self._run_options)
        except Exception as e:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime failed: {str(e).splitlines()[0]}",
                               where="backend 'cpu'") from e
        self.runs += 1
        out = dict(zip(self.output_names, results))
        for name, dtype in self.result_types.items():
            out[name] = out[name].astype(dtype)
        return out

    def stats(self) -> dict[str, Any]:
        return {"runs": self.runs, "providers": self.session.get_providers(),
                "quantized_kernels": self.quantized_kernels}


class CpuObservation(Observation):
    """Observed node outputs are extra graph outputs of the session, shown after each run (with
    the observed graph inputs, taken from the feeds). onnxruntime may fuse nodes away; their
    outputs stay computed here because a graph output is never fused away."""

    def __init__(self, executable: CpuExecutable, names: list[str], fed: set[str],
                 outputs: list[str]):
        self.executable = executable
        self.names = tuple(names)
        self.fed, self.outputs = fed, outputs

    def run(self, feeds: Mapping[str, np.ndarray],
            observe: Observe | None = None) -> dict[str, np.ndarray]:
        results = self.executable.run(feeds)
        if observe is not None:
            for name in self.names:
                if name not in self.fed:
                    observe(name, results[name])
                elif name in feeds:     # (an input with an initializer may be left out)
                    observe(name, np.asarray(feeds[name]))
        return {name: results[name] for name in self.outputs}


class CpuBackend(Backend):
    name = "cpu"
    description = "onnxruntime on the host CPU"
    dtypes = frozenset({"float32", "float16", "float64", "int8", "uint8", "int16", "uint16",
                        "int32", "int64", "bool"})
    fp16_compute = ("as onnxruntime does: fp16 ops without an fp16 CPU kernel (most of them) "
                    "compute in float32 between Casts, so values beyond fp16's range may stay "
                    "finite here while the device overflows")
    fp16_as_device = False
    observes = True

    @dataclasses.dataclass(frozen=True)
    class Options:
        threads: int = option(0, "intra-op threads (0: onnxruntime's default)", minimum=0)
        optimization_level: Literal["disable", "basic", "extended", "all"] = option(
            "all", "onnxruntime graph optimization level")
        allow_spinning: bool = option(True, "let idle intra-op threads spin; turn off when a "
                                            "container holds many specializations")
        quantized_kernels: QuantKernels = option(
            "auto", "graphs with QDQ: auto (onnxruntime's integer kernels where exact, float "
                    "where they saturate, x86 without VNNI) or float (QDQ never fused)")

    def candidate_ops(self) -> list[tuple[str, str]]:
        """onnxruntime's own operators (com.microsoft, ...), for the ``aicc ops`` listing."""
        return sorted(k for k in _cpu_kernels() if k[0] not in ("", "ai.onnx.ml"))

    def op_dtypes(self, domain: str, op: str) -> frozenset[str] | None:
        """Element types onnxruntime runs ``op`` in: its kernels' types, plus float16 where a
        float32 kernel exists (onnxruntime inserts Casts around it); None for function ops."""
        types = _cpu_kernel_types().get((domain, op))
        if types is None:
            return None
        return types | {"float16"} if "float32" in types else types

    def unsupported_nodes(self, model: onnx.ModelProto) -> list[str]:
        """Nodes with no kernel in onnxruntime's CPU provider, judged at the opset the model is
        lowered to for onnxruntime (``aicc.ort_compat``; BackendError for an IR version it
        cannot read). A node whose definition is newer than that opset is looked up by the
        definition it is converted to; a node the converter cannot convert is refused when the
        graph is compiled."""
        check_ir_version(model)
        opsets = {o.domain or "": o.version for o in model.opset_import}
        opsets[""] = min(opsets.get("", 0), ort_limits()[1])
        kernels = _cpu_kernels()
        dims = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
                for vi in model.graph.input if vi.type.tensor_type.HasField("shape") and
                all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)}
        dims.update({t.name: list(t.dims) for t in model.graph.initializer})
        problems = []
        for node in model.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                continue  # onnxruntime turns Constant nodes into initializers; no kernel needed
            domain = "" if node.domain in ("", "ai.onnx") else node.domain
            ranges = kernels.get((domain, node.op_type))
            # kernels are registered by operator definition (since_version), not by opset
            version = _since_version(node, domain, opsets.get(domain, 0))
            if ranges is None or not any(lo <= version <= hi for lo, hi in ranges):
                if ranges is None and _is_function(node, domain, version):
                    continue
                problems.append(f"node '{node.name}' ({node.op_type}"
                                f"{'' if not domain else ', domain ' + domain})")
            elif (limit := _kernel_limit(node, dims)) is not None:
                problems.append(f"node '{node.name}' ({node.op_type}: {limit})")
        return problems

    def compile(self, model: onnx.ModelProto, *, program_meta: Mapping[str, Any],
                spec_options: Mapping[str, Any]) -> CpuExecutable:
        so = ort.SessionOptions()
        so.graph_optimization_level = _LEVELS[self.options.optimization_level]
        if self.options.threads:
            so.intra_op_num_threads = self.options.threads
        so.log_severity_level = _LOG_SEVERITY
        if not self.options.allow_spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model, feed_types, result_types = carry_boundary_types(for_onnxruntime(model))
        kernels, config = quantized_session_config(model, self.options.quantized_kernels)
        for key, value in config.items():
            so.add_session_config_entry(key, value)
        data, names, values = _session_source(model)
        if names:
            so.add_external_initializers(names, values)
        try:
            session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        except Exception as e:
            session = _load_with_free_shapes(model, so, e)
        return CpuExecutable(session, values, (feed_types, result_types), kernels)

    def observation(self, model: onnx.ModelProto,
                    names: Iterable[str] | None = None) -> CpuObservation:
        """Graph inputs and node outputs can be observed (not tensors inside control-flow
        bodies); each observed node output becomes a graph output whose type onnxruntime
        infers. ``model`` is not changed."""
        graph = model.graph
        inputs = [i.name for i in graph.input]
        made = [o for n in graph.node for o in n.output if o]
        wanted = list(dict.fromkeys(inputs + made if names is None else names))
        fed, is_made = set(inputs), set(made)
        shown = [n for n in wanted if n in fed or n in is_made]
        exposed = onnx.ModelProto()
        exposed.CopyFrom(model)
        have = {o.name for o in exposed.graph.output}
        for name in shown:
            if name not in fed and name not in have:
                exposed.graph.output.append(onnx.ValueInfoProto(name=name))
        exe = self.compile(exposed, program_meta={}, spec_options={})
        return CpuObservation(exe, shown, fed, [o.name for o in graph.output])


def _load_with_free_shapes(model: onnx.ModelProto, so: ort.SessionOptions,
                           error: Exception) -> ort.InferenceSession:
    """onnxruntime refused ``model`` (``error``): when it has control flow, try once more with
    its shapes left free (see ``aicc.ort_free_shapes``: a branch dead for the bound shapes may not
    type-check); otherwise, or if that fails too, report the first refusal."""
    if has_subgraphs(model):
        data, _, _ = _session_source(with_free_shapes(model))  # external initializers: same
        try:
            session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        except Exception:
            pass
        else:
            logger.info("onnxruntime refused the graph's bound shapes inside control flow (%s); "
                        "loaded it with free input shapes", str(error).splitlines()[0])
            return session
    raise BackendError(f"onnxruntime cannot load the graph: {str(error).splitlines()[0]}",
                       where="backend 'cpu'") from error


def _kernel_limit(node: onnx.NodeProto, dims: Mapping[str, list[int]]) -> str | None:
    """What onnxruntime's CPU kernel for ``node`` does not implement although ONNX defines it, so
    that the node is refused before compiling instead of failing at load or at run time."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in ("RNN", "GRU", "LSTM"):
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        if layout != 0:
            return ("onnxruntime runs layout 0 only; the interpreter runs it, or add the "
                    "lower-rnn pass to the pipeline")
    if node.op_type == "ConvInteger" and len(node.input) > 3 and node.input[3]:
        shape = dims.get(node.input[3])  # unknown: onnxruntime checks when it runs
        if shape is not None and int(np.prod(shape)) != 1:
            return ("onnxruntime takes one weight zero point per tensor only; the interpreter "
                    "runs per-channel zero points")
    return None


def _since_version(node: onnx.NodeProto, domain: str, opset: int) -> int:
    try:
        return onnx.defs.get_schema(node.op_type, opset, domain).since_version
    except onnx.defs.SchemaError:
        return opset


def _is_function(node: onnx.NodeProto, domain: str, version: int) -> bool:
    """Ops defined as ONNX functions (e.g. Gelu at opset 20) run without a kernel of their own."""
    try:
        schema = onnx.defs.get_schema(node.op_type, version, domain)
    except onnx.defs.SchemaError:
        return False
    return schema.has_function or schema.has_context_dependent_function


@hookimpl
def aicc_register_backends(registry):
    registry.add(CpuBackend)
