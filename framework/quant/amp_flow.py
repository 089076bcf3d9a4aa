"""AMP on aicc's quantization flow: a float model, calibration samples and quantize options in;
QDQ models of candidate assignments (one calibration, then one ``quantize`` run per assignment),
their scores on evaluation samples, and the files that carry the chosen assignment to ``aicc
compile`` out.

Assignments become ``quantize`` overrides: a float candidate puts the group's output and weight in
float (the layer then runs in fp16 or fp32 through ``convert-fp16``'s Cast lowering, QNN's mixed
precision rule); an integer candidate whose bitwidths differ from the quantize options gives the
output and weight those bitwidths (ranges still calibrated). Models are scored with onnxruntime.

The bridge (``write_bridge``): ``node_precision.yaml`` (``FP16NodeInstanceNames``: the layers the
choice keeps in fp16, for ``-node-precision-info``) and ``encodings.json`` (AIMET 0.6.1 form: every
encoding of the chosen QDQ model, float entries for the fp16 layers, for
``-external-quantization``).
"""

from __future__ import annotations

import json
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

__all__ = ["QuantizedVariants", "OrtScorer", "write_bridge", "WEIGHTED"]

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class QuantizedVariants:
    """Calibrate once; quantize again for each assignment of candidates to groups."""

    def __init__(self, model: Any, *, registries: Any = None, **kwargs: Any):
        from .. import ir
        from ..pipeline import Pipeline, run_pipeline
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
        prefix = Pipeline.build(steps[:-2], self.registries.passes, source="amp")
        self.program = run_pipeline(prefix, Program.from_model(loaded),
                                    registries=self.registries, analyses=self.analyses)
        self.float_model = self.program.to_model()
        self.act_bw = int(steps[-2][1].get("act_bitwidth", 8))
        self.weight_bw = int(steps[-2][1].get("weight_bitwidth", 8))
        graph = self.program.graph()
        self.layers: dict[str, gs.Node] = {
            n.name: n for n in graph.nodes if n.op in WEIGHTED and len(n.inputs) > 1
            and isinstance(n.inputs[1], gs.Constant)
            and np.asarray(n.inputs[1].values).dtype == np.float32}
        if not self.layers:
            raise ConfigError("the model has no Conv/Gemm/MatMul layer with constant weights "
                              "for AMP to choose precisions for", field="amp")

    def macs(self) -> dict[str, int]:
        """Multiply-accumulates per layer (output elements x weight elements per output)."""
        out = {}
        for name, n in self.layers.items():
            w = np.asarray(n.inputs[1].values)
            shape = n.outputs[0].shape or []
            spatial = int(np.prod([d for d in shape[2:] if isinstance(d, int)] or [1]))
            rows = int(np.prod([d for d in shape[:-1] if isinstance(d, int)] or [1]))
            out[name] = int(w.size * spatial) if n.op in ("Conv", "ConvTranspose") \
                else int(w.size * max(1, rows))
        return out

    def table(self, choice: Mapping[str, Candidate]) -> dict[str, Any]:
        """The overrides (``table_to_json`` form) of an assignment."""
        acts: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for name, c in choice.items():
            n = self.layers[name]
            out, w = n.outputs[0].name, n.inputs[1].name
            if c.is_float:
                acts[out] = {"dtype": "float", "bitwidth": c.act_bw}
                params[w] = {"dtype": "float", "bitwidth": c.param_bw}
                continue
            if c.act_bw != self.act_bw:
                acts[out] = {"dtype": "int", "bitwidth": c.act_bw}
            if c.param_bw != self.weight_bw:
                params[w] = {"dtype": "int", "bitwidth": c.param_bw}
        return {"file": "amp", "activations": acts, "params": params, "excluded_layers": []}

    def build(self, choice: Mapping[str, Candidate]) -> tuple[onnx.ModelProto, Any]:
        """The QDQ model (and its Program) of an assignment."""
        from ..pipeline import Pipeline, run_pipeline
        program = self.program.copy()
        program.encodings["overrides"] = self.table(choice)
        pipeline = Pipeline.build(self.quantize_steps, self.registries.passes, source="amp")
        program = run_pipeline(pipeline, program, registries=self.registries,
                               analyses=self.analyses.copy())
        return program.to_model(), program


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


def fp16_node_names(original: onnx.ModelProto, layers: Sequence[str]) -> list[str]:
    """The original model's nodes behind ``layers`` (names after BatchNorm folding): the layer
    and the BatchNormalization folded into it, so that ``convert-fp16`` (which runs before the
    fold in ``aicc compile``) lets the pair fold in fp16 as the quantize flow did."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in original.graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    by_name = {n.name: n for n in original.graph.node}
    out = []
    for layer in layers:
        node = by_name.get(layer)
        if node is None:
            raise ConfigError(f"AMP chose layer '{layer}' for fp16, but the original model has "
                              "no node of that name", where="AMP bridge",
                              hint="the node-precision file cannot name it; use AMP's model")
        # FP16NodeInstanceNames name nodes by their first output (convert-fp16 reads it so)
        out.append(node.output[0])
        after = readers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type == "BatchNormalization":
            out.append(after[0].output[0])
    return out


def write_bridge(folder: Path, choice: Mapping[str, Candidate], program: Any,
                 original: onnx.ModelProto) -> list[Path]:
    """``node_precision.yaml`` and ``encodings.json`` for ``aicc compile`` (see the docstring)."""
    import yaml

    from aicc.passes.quantization.calibrate import write_text_atomic
    from aicc.passes.quantization.quantize import encodings_table
    from .aimet import export_aimet_encodings
    folder.mkdir(parents=True, exist_ok=True)
    fp16 = fp16_node_names(original, sorted(n for n, c in choice.items()
                                            if c.is_float and c.act_bw == 16))
    npi = folder / "node_precision.yaml"
    write_text_atomic(npi, yaml.safe_dump({"FP16NodeInstanceNames": fp16}, sort_keys=False))
    table = encodings_table(program.encodings)
    data = export_aimet_encodings(table, form="0.6.1")
    enc = folder / "encodings.json"
    write_text_atomic(enc, json.dumps(data, indent=1) + "\n")
    return [npi, enc]
