"""AMP on aicc's quantization flow: a float model, calibration samples and quantize options in;
QDQ models of candidate assignments (one calibration, then one ``quantize`` run per assignment),
their scores on evaluation samples, and the files that carry the chosen assignment to ``aicc
compile`` out.

Assignments become ``quantize`` overrides on AMP's groups (``amp_groups``: a weighted layer and
the nodes downstream of it up to the next one): a float candidate puts every activation the group
computes and its layer's weight in float (the nodes then run in fp16 or fp32 through
``convert-fp16``'s Cast lowering, QNN's mixed precision rule); an integer candidate whose
bitwidths differ from the quantize options gives the group's quantized activations those
bits and its layer's weight and the other constants its nodes read that the base quantizes at
the weight bitwidth (a LayerNorm's scale and shift, a MatMul's bias Add) the parameter bits
(ranges still calibrated, at those bits). With a 16-bit integer candidate (``wide``) the graph
is raised to opset 21 before calibration, once, as a 16-bit run would be. Models are scored
with onnxruntime.

Not done: a float tensor that an integer group reads is converted at the quantize options'
activation bitwidth, not at that group's: an fp16 group next to a 16-bit integer one feeds it
8-bit conversions (phase 1 on PP-OCRv4 rec, every other group at A16/W16: Conv.1 in fp16
15.9 dB, at A8/W8 14.2 dB), and the AIMET file, one encoding per tensor, cannot say otherwise.

The bridge (``write_bridge``): ``node_precision.yaml`` (``FP16NodeInstanceNames``: every node of
the groups the choice keeps in fp16, named in the original model, for ``-node-precision-info``)
and ``encodings.json`` (AIMET 0.6.1 form: every encoding of the chosen QDQ model, float entries
for the fp16 tensors, 16-bit ones for the groups at 16-bit integer candidates, for
``-external-quantization``, which converts the graph to opset 21 when it gives 16-bit ones).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..backend import Observers
from ..errors import BackendError, ConfigError
from .amp import Candidate, sqnr_db
from .amp_groups import WEIGHTED, AmpGroup, amp_groups

__all__ = ["QuantizedVariants", "OrtScorer", "write_bridge", "fp16_node_names", "WEIGHTED"]

logger = logging.getLogger(__name__)


class QuantizedVariants:
    """Calibrate once; quantize again for each assignment of candidates to groups."""

    def __init__(self, model: Any, *, registries: Any = None, wide: bool = False,
                 **kwargs: Any):
        from .. import ir
        from ..program import Program
        from ..quantization import _default_registries, quantize_pipeline
        if kwargs.get("overrides"):
            raise ConfigError("AMP chooses the overrides itself and cannot be combined with "
                              "--quantization_overrides", field="amp")
        self.registries = registries or _default_registries()
        samples = kwargs.pop("samples", None)
        ada_samples = kwargs.pop("adaround_samples", None)
        steps = quantize_pipeline(calibrate=samples is not None,
                                  adaround_samples_given=ada_samples is not None, **kwargs)
        self.quantize_steps = steps[-2:]                     # quantize, cleanup
        self.wide = wide
        from aicc.passes.quantization.analyses import ADAROUND_SAMPLES, CALIBRATION_SAMPLES
        from ..analyses import AnalysisCache
        #: what the float prefix measured (profile, learned rounding), reused by every trial
        self.analyses = AnalysisCache()
        if samples is not None:
            self.analyses.put(CALIBRATION_SAMPLES, samples)
        if ada_samples is not None:
            self.analyses.put(ADAROUND_SAMPLES, ada_samples)
        loaded = ir.load_model(model if not isinstance(model, onnx.ModelProto)
                               else model.SerializeToString())
        self.original = loaded
        self.program = self._prefix(steps, Program.from_model(loaded))
        self.float_model = self.program.to_model()
        self.act_bw = int(steps[-2][1].get("act_bitwidth", 8))
        self.weight_bw = int(steps[-2][1].get("weight_bitwidth", 8))
        self.groups = _groups_of(self.program.graph())
        self._quantized: set[str] | None = None
        self._base_params: set[str] = set()

    def _prefix(self, steps: list[tuple[str, dict]], program: Any) -> Any:
        """The float steps before ``quantize``, with the graph raised to the opset the quantize
        options need before ``calibrate``: quantize would otherwise convert it after calibration,
        and the tensors onnx's version converter adds (opset 13 spells an opset-12 Softmax with
        a Flatten and a Reshape around it) would have no statistics when an fp16 group leaves
        them without an integer neighbour to share an encoding with."""
        from aicc.passes.quantization.opset import prepare_opset
        from aicc.passes.quantization.settings import QuantSettings
        from ..pipeline import Pipeline, run_pipeline
        names = [name for name, _ in steps]
        cut = names.index("calibrate") if "calibrate" in names else len(steps) - 2
        passes = self.registries.passes
        program = run_pipeline(Pipeline.build(steps[:cut], passes, source="amp"), program,
                               registries=self.registries, analyses=self.analyses)
        quantize = Pipeline.build(self.quantize_steps[:1], passes, source="amp").steps[0]
        settings = QuantSettings.from_options(quantize.options)
        for gname in list(program.graphs):
            program.graphs[gname], _ = prepare_opset(program.graphs[gname], settings,
                                                     where=f"graph '{gname}'",
                                                     ir_version=program.ir_version,
                                                     wide=self.wide)
        return run_pipeline(Pipeline.build(steps[cut:-2], passes, source="amp"), program,
                            registries=self.registries, analyses=self.analyses)

    @property
    def layers(self) -> dict[str, gs.Node]:
        """Group name -> weighted layer, for the groups that have one."""
        return {name: g.layer for name, g in self.groups.items() if g.layer is not None}

    def macs(self) -> dict[str, int]:
        """The work of each group (``amp_groups.node_work`` summed over its nodes)."""
        return {name: max(1, g.work) for name, g in self.groups.items()}

    def quantized(self) -> set[str]:
        """The activations the base precision quantizes (fused ones are not), found once; the
        parameters it quantizes at the weight bitwidth go to ``_base_params``."""
        if self._quantized is None:
            program = self._run(self.program.copy(), None)
            acts = program.encodings.get("activations", {})
            self._quantized = {n for n, e in acts.items() if e.get("dtype", "int") != "float"}
            self._base_params = {n for n, e in program.encodings.get("params", {}).items()
                                 if e.get("dtype", "int") != "float"
                                 and int(e.get("bitwidth", 0)) == self.weight_bw}
        return self._quantized

    def _params_of(self, group: AmpGroup) -> list[str]:
        """The group's constants that the base quantizes at the weight bitwidth, the layer's
        weight first (when the base quantizes it)."""
        self.quantized()
        names = [t.name for n in group.nodes for t in n.inputs
                 if isinstance(t, gs.Constant) and t.name in self._base_params]
        return list(dict.fromkeys(names))

    def table(self, choice: Mapping[str, Candidate]) -> dict[str, Any]:
        """The overrides (``table_to_json`` form) of an assignment: a float candidate puts every
        activation of the group and its layer's weight in float; an integer one gives the group's
        quantized activations and the weight its bitwidths."""
        acts: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for name, c in choice.items():
            group = self.groups[name]
            weight = group.layer.inputs[1].name if group.layer is not None else None
            if c.is_float:
                for t in group.activations():
                    acts[t] = {"dtype": "float", "bitwidth": c.act_bw}
                if weight is not None:
                    params[weight] = {"dtype": "float", "bitwidth": c.param_bw}
                continue
            if c.act_bw != self.act_bw:
                quantized = self.quantized()
                for t in group.activations():
                    if t in quantized:
                        acts[t] = {"dtype": "int", "bitwidth": c.act_bw}
            if c.param_bw != self.weight_bw:
                for name in self._params_of(group):
                    params[name] = {"dtype": "int", "bitwidth": c.param_bw}
        return {"file": "amp", "activations": acts, "params": params, "excluded_layers": []}

    def fp16_interior(self, groups: Sequence[AmpGroup]) -> set[str]:
        """The activations of fp16 ``groups`` that only fp16 nodes read (not graph outputs):
        ``aicc compile``'s ``convert-fp16`` hands them from fp16 node to fp16 node without a Cast
        back to float32, so they have no float32 tensor for an encoding to name."""
        graph = self.program.graph()
        fp16 = {n.name for g in groups for n in g.nodes}
        readers: dict[str, list[str]] = {}
        for n in graph.nodes:
            for t in n.inputs:
                readers.setdefault(t.name, []).append(n.name)
        outputs = {t.name for t in graph.outputs}
        return {t for g in groups for t in g.outputs() if t not in outputs and readers.get(t)
                and all(r in fp16 for r in readers[t])}

    def _run(self, program: Any, table: dict[str, Any] | None) -> Any:
        from ..pipeline import Pipeline, run_pipeline
        if table is not None:
            program.encodings["overrides"] = table
        pipeline = Pipeline.build(self.quantize_steps, self.registries.passes, source="amp")
        return run_pipeline(pipeline, program, registries=self.registries,
                            analyses=self.analyses.copy())

    def build(self, choice: Mapping[str, Candidate]) -> tuple[onnx.ModelProto, Any]:
        """The QDQ model (and its Program) of an assignment."""
        program = self._run(self.program.copy(), self.table(choice))
        return program.to_model(), program


def _groups_of(graph: gs.Graph) -> dict[str, AmpGroup]:
    """The groups, found on a copy with inferred shapes (for their work; names are the same)."""
    from .. import ir
    graph = graph.copy()
    ir.infer_shapes(graph, where="AMP")
    groups = {g.name: g for g in amp_groups(graph)}
    if not any(g.layer is not None for g in groups.values()):
        raise ConfigError("the model has no Conv/Gemm/MatMul layer with constant weights "
                          "for AMP to choose precisions for", field="amp")
    return groups


#: the cpu backend's options for scoring: QDQ as written, no fusions (the reference numbers, and
#: int4/int16 activations that some of onnxruntime's QDQ fusions do not handle); with no
#: fusion, ``float`` changes nothing but makes that independent of the CPU
_SCORING = {"optimization_level": "disable", "quantized_kernels": "float"}


class OrtScorer:
    """Runs models on feed dicts on the ``cpu`` backend (onnxruntime, found by name in
    ``backends``; default: the built-in backends); scores them by output SQNR or a callback."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]], reference_model: onnx.ModelProto,
                 backends: Observers | None = None):
        if not feeds:
            raise ConfigError("AMP has no evaluation samples", field="amp")
        self.feeds = list(feeds)
        self.backends = backends or Observers()
        self.reference = self.run(reference_model)

    def run(self, model: onnx.ModelProto,
            feeds: Sequence[Mapping[str, np.ndarray]] | None = None) -> list[list[np.ndarray]]:
        names = [o.name for o in model.graph.output]
        try:
            run = self.backends.observation("cpu", model, (), options=_SCORING)
            results = [run.run(dict(f)) for f in (self.feeds if feeds is None else feeds)]
        except BackendError as e:
            raise BackendError("onnxruntime could not run a candidate model: "
                               f"{str(e).splitlines()[0][:300]}") from None
        return [[out[n] for n in names] for out in results]

    def sqnr(self, model: onnx.ModelProto) -> float:
        outs = self.run(model)
        ref = [a for r in self.reference for a in r]
        got = [a for o in outs for a in o]
        return sqnr_db(ref, got)


def labeled_metric(model: onnx.ModelProto, batches: Sequence[tuple[list[dict], Any]],
                   evaluate: Callable[[Any, Any], Any], scorer: OrtScorer, *, where: Path,
                   key: str) -> float:
    """Mean of ``evaluate(outputs, labels)`` over labeled batches (first model output)."""
    values = []
    for feeds, labels in batches:
        outs = scorer.run(model, feeds)
        pred = np.concatenate([o[0] for o in outs], axis=0)
        try:
            value = evaluate(pred, labels)
        except Exception as e:
            raise ConfigError(f"the evaluation callback failed: {type(e).__name__}: {e}",
                              where=where, field=key) from None
        values.append(_as_float(value, where, key))
    return float(np.mean(values))


def _as_float(value: Any, where: Path, key: str) -> float:
    try:
        arr = np.asarray(value if not isinstance(value, (list, tuple)) else
                         [np.asarray(v).reshape(-1)[0] for v in value][:1], dtype=np.float64)
        out = float(arr.reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        raise ConfigError(f"the evaluation callback returned {value!r}, not a number",
                          where=where, field=key) from None
    if not math.isfinite(out):
        raise ConfigError(f"the evaluation callback returned {out}", where=where, field=key)
    return out


def fp16_node_names(original: onnx.ModelProto, groups: Sequence[AmpGroup]) -> list[str]:
    """The original model's nodes behind ``groups`` (found after BatchNorm folding), by first
    output as ``FP16NodeInstanceNames`` names them, in the model's order: each weighted layer
    (by node name) and the BatchNormalization folded into it, so that ``convert-fp16`` (which
    runs before the fold in ``aicc compile``) lets the pair fold in fp16 as the quantize flow did;
    and every other member by its first output. A member the original model has no node for
    was made by a pass before quantization (onnx's version converter spells an opset-12 Softmax
    as Flatten/Softmax/Reshape; the last keeps the Softmax's output name, so the Softmax is
    listed); it is covered by that node. Nodes that cannot run in fp16 in the original model
    are left out (debug log)."""
    from aicc.passes.precision.convert_fp16 import fp16_capable
    from .. import ir
    graph = ir.import_graph(original)
    ir.infer_shapes(graph, where="AMP bridge")      # dtypes, for which nodes can be fp16
    by_name = {n.name: n for n in graph.nodes if n.name}
    by_output = {n.outputs[0].name: n for n in graph.nodes if n.outputs}
    readers: dict[str, list[gs.Node]] = {}
    for n in graph.nodes:
        for t in n.inputs:
            readers.setdefault(t.name, []).append(n)
    chosen: set[int] = set()
    for group in groups:
        for member in group.nodes:
            if member is group.layer:
                node = by_name.get(member.name)
                if node is None:
                    raise ConfigError(f"AMP chose layer '{member.name}' for fp16, but the "
                                      "original model has no node of that name",
                                      where="AMP bridge", hint="the node-precision file cannot "
                                      "name it; use AMP's model")
                chosen.add(id(node))
                after = readers.get(node.outputs[0].name, [])
                if len(after) == 1 and after[0].op == "BatchNormalization":
                    chosen.add(id(after[0]))
                continue
            node = by_output.get(member.outputs[0].name) if member.outputs else None
            if node is not None and node.op != "Constant":
                chosen.add(id(node))
    out = []
    for node in graph.nodes:
        if id(node) not in chosen:
            continue
        if fp16_capable(node, graph.opset):
            out.append(node.outputs[0].name)
        else:
            logger.debug("AMP bridge: %s '%s' cannot run in fp16; not listed", node.op,
                         node.name)
    return out


def write_bridge(folder: Path, groups: Sequence[AmpGroup], program: Any,
                 original: onnx.ModelProto, interior: set[str] = frozenset()
                 ) -> tuple[list[Path], list[str]]:
    """``node_precision.yaml`` and ``encodings.json`` for ``aicc compile`` (see the module
    docstring) for the fp16 ``groups``; the float encodings of ``interior`` tensors (read by
    fp16 nodes only, ``QuantizedVariants.fp16_interior``) and the encodings of tensors the
    original model does not have are left out. Returns the files and the names listed; with no
    node in fp16 (integer candidates only) no node-precision file is written (``aicc compile``
    refuses an empty one) and the encodings alone carry the choice."""
    import yaml

    from aicc.passes.quantization.calibrate import write_text_atomic
    from aicc.passes.quantization.quantize import encodings_table
    from .aimet import export_aimet_encodings
    folder.mkdir(parents=True, exist_ok=True)
    fp16 = fp16_node_names(original, groups)
    npi = folder / "node_precision.yaml"
    files = [npi] if fp16 else []
    if fp16:
        write_text_atomic(npi, yaml.safe_dump({"FP16NodeInstanceNames": fp16}, sort_keys=False))
    elif npi.exists():       # an earlier run's, which would describe another choice
        npi.unlink()
    table = encodings_table(program.encodings)
    for name in interior:
        if name in table.activations and table.activations[name].is_float:
            del table.activations[name]
    # tensors a pass made before quantization (onnx's version converter names them _v_N) are
    # not in the model ``aicc compile`` reads, which calibrates its own
    known = {t.name for t in original.graph.input} | {o for n in original.graph.node
                                                       for o in n.output}
    made = [name for name in table.activations if name not in known]
    for name in made:
        del table.activations[name]
    if made:
        logger.debug("AMP bridge: %d activation encodings of tensors the model does not name "
                     "left out: %s", len(made), ", ".join(made[:5]))
    data = export_aimet_encodings(table, form="0.6.1")
    enc = folder / "encodings.json"
    write_text_atomic(enc, json.dumps(data, indent=1) + "\n")
    return files + [enc], fp16
