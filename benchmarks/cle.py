"""Cross-layer equalization under int8: the digits model (and a badly balanced copy) -> top-1 and
output SQNR, float vs int8 without CLE, with ``cle`` (exact and replace modes), and onnxruntime's
``quantize_static``, per-tensor and per-channel.

EVALUATION HARNESS, NOT A PRODUCT FEATURE. int8 is simulated here with ONNX QDQ nodes
(``QuantizeLinear -> DequantizeLinear``) built from ``aicc.quant``'s encodings (the table also
shows aicc's own ``quantize`` pass, tf/symmetric, when it is registered; it quantizes every op
output, the pre-activation too, where this harness fuses activations):

- weights of Conv/Gemm/MatMul: symmetric int8, per tensor or per output channel (biases stay
  float: their int32 rounding is negligible next to int8 weights);
- activations: QNN ``tf`` mode, asymmetric uint8, min/max calibrated on the 32 samples of
  ``examples/data/digits_calib``; fake-quantized at the graph input and at every op output, an op
  followed only by an activation (Relu, Clip, Min, LeakyRelu, PRelu) being fused with it, as
  accelerators run them (so the quantized tensor is the activation's output);
- the QDQ model runs on onnxruntime with graph optimizations off (plain float fake-quant).

The badly balanced model (``mismatched_model``) is the example model rescaled without changing its
function, as real MobileNetV2 depthwise layers are: on every Conv -> BN -> ReLU6 -> Conv link,
channel i of the BN output is multiplied by f_i (gamma and beta times f_i, log-uniform in
[1e-2, 1e2]), the ReLU6 becomes ``Relu -> Min(6 f_i)`` and the next layer's input channel i is
divided by f_i. Run::

    python benchmarks/cle.py            # both models, full test split (360 images)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("AICC_DISABLE_PLUGIN_AUTOLOAD", "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnx_graphsurgeon as gs  # noqa: E402
import onnxruntime as ort  # noqa: E402

from aicc import ir  # noqa: E402
from aicc.data import parse_input_list, read_tensor_file  # noqa: E402
from aicc.pipeline import Instrument, Pipeline, run_pipeline  # noqa: E402
from aicc.plugins import Registries, load_registries  # noqa: E402
from aicc.program import Program, TensorDesc  # noqa: E402
from aicc.quant import per_channel_encoding, symmetric_encoding, tf_encoding  # noqa: E402

__all__ = ["EXAMPLE_MODEL", "calibration_samples", "test_split", "mismatched_model",
           "apply_passes", "fake_quant_model", "ort_quantize_static", "predict", "evaluate",
           "sqnr_db", "main"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODEL = ROOT / "examples" / "digits_mobilenet.onnx"
DATA = ROOT / "examples" / "data"
_FUSED_ACTIVATIONS = {"Relu", "Clip", "Min", "LeakyRelu", "PRelu"}
_WEIGHTED = {"Conv", "Gemm", "MatMul"}


# ---------------------------------------------------------------------------- data
def calibration_samples() -> np.ndarray:
    """The 32 calibration samples of ``examples/data/digits_calib`` as one [32, 1, 8, 8] batch."""
    listing = parse_input_list(DATA / "digits_calib" / "input_list.txt", ["image"])
    desc = TensorDesc("image", "float32", [1, 1, 8, 8])
    return np.concatenate([read_tensor_file(s["image"], desc) for s in listing.samples])


def test_split() -> tuple[np.ndarray, np.ndarray]:
    images = np.load(DATA / "digits_test_images.npy", allow_pickle=False)
    labels = np.load(DATA / "digits_test_labels.npy", allow_pickle=False)
    return images, labels


# ---------------------------------------------------------------------------- models
def mismatched_model(model: onnx.ModelProto, *, low: float = 1e-2, high: float = 1e2,
                     seed: int = 0) -> onnx.ModelProto:
    """The same function with per-channel ranges spread over [low, high] (module docstring)."""
    rng = np.random.default_rng(seed)
    graph = gs.import_onnx(model)
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        clip = bn.outputs[0].outputs[0] if len(bn.outputs[0].outputs) == 1 else None
        if clip is None or clip.op != "Clip" or len(clip.outputs[0].outputs) != 1:
            continue
        nxt = clip.outputs[0].outputs[0]
        if nxt.op != "Conv":
            continue
        channels = bn.inputs[1].values.shape[0]
        f = np.exp(rng.uniform(np.log(low), np.log(high), channels))
        gamma, beta = (np.asarray(t.values, np.float64) for t in bn.inputs[1:3])
        bn.inputs[1] = gs.Constant(f"{bn.name}.scale_mm", (gamma * f).astype(np.float32))
        bn.inputs[2] = gs.Constant(f"{bn.name}.bias_mm", (beta * f).astype(np.float32))
        hi = float(np.asarray(clip.inputs[2].values))
        out = clip.outputs[0]
        mid = gs.Variable(f"{clip.name}_mm_relu", dtype=np.float32)
        clip.op, clip.inputs, clip.outputs = "Relu", [clip.inputs[0]], [mid]
        bound = gs.Constant(f"{clip.name}_mm_bound",
                            (hi * f).reshape(-1, 1, 1).astype(np.float32))
        graph.nodes.append(gs.Node("Min", f"{clip.name}_mm_min", inputs=[mid, bound],
                                   outputs=[out]))
        w = np.asarray(nxt.inputs[1].values, np.float64)
        group = int(nxt.attrs.get("group", 1))
        wg = w.reshape(group, w.shape[0] // group, w.shape[1], -1)
        wg /= f.reshape(group, 1, w.shape[1], 1)
        nxt.inputs[1] = gs.Constant(f"{nxt.name}.weight_mm", wg.reshape(w.shape)
                                    .astype(np.float32))
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    onnx.checker.check_model(out)
    return out


def apply_passes(model: onnx.ModelProto, passes: Sequence[Any],
                 registries: Registries | None = None,
                 instruments: Sequence[Instrument] = ()) -> onnx.ModelProto:
    """Run an aicc pipeline (names or ``(name, options)``) and return the resulting model."""
    registries = registries or load_registries()
    program = Program.from_model(ir.load_model(model.SerializeToString()))
    program = run_pipeline(Pipeline.build(list(passes), registries.passes), program,
                           registries=registries, instruments=instruments)
    return program.to_model()


# ---------------------------------------------------------------------------- fake quant
def _session(model: onnx.ModelProto, optimize: bool = False) -> ort.InferenceSession:
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def predict(model: onnx.ModelProto, images: np.ndarray, *, optimize: bool = False) -> np.ndarray:
    sess = _session(model, optimize)
    return sess.run(None, {sess.get_inputs()[0].name: images})[0]


def _activation_tensors(graph: gs.Graph) -> list[gs.Variable]:
    """The tensors the harness quantizes: float graph inputs and unfused op outputs."""
    out = [t for t in graph.inputs if t.dtype in (np.float32, None)]
    for node in graph.nodes:
        for t in node.outputs:
            readers = t.outputs
            if readers and all(r.op in _FUSED_ACTIVATIONS for r in readers) \
                    and t not in graph.outputs:
                continue
            out.append(t)
    return out


def fake_quant_model(model: onnx.ModelProto, calib: np.ndarray, *,
                     per_channel: bool = False) -> onnx.ModelProto:
    """EVALUATION HARNESS: ``model`` with int8 QDQ weights and uint8 QDQ activations (module
    docstring), activation ranges calibrated (min/max) on ``calib``."""
    graph = gs.import_onnx(model)
    targets = _activation_tensors(graph)
    probe = graph.copy()
    probe_tensors = probe.tensors()
    probe.outputs = [probe_tensors[t.name] for t in targets]
    for t in probe.outputs:
        t.dtype = np.float32
    sess = _session(gs.export_onnx(probe))
    values = sess.run(None, {graph.inputs[0].name: calib})
    for i, (t, v) in enumerate(zip(targets, values)):
        enc = tf_encoding(float(v.min()), float(v.max()), 8, signed=False)
        scale = gs.Constant(f"{t.name}_qs{i}", enc.scale_array())
        zp = gs.Constant(f"{t.name}_qz{i}", enc.zero_point_array())
        q = gs.Variable(f"{t.name}_q{i}", dtype=np.uint8)
        dq = gs.Variable(f"{t.name}_dq{i}", dtype=np.float32, shape=t.shape)
        readers = list(t.outputs)
        graph.nodes.append(gs.Node("QuantizeLinear", f"{t.name}_Q{i}", inputs=[t, scale, zp],
                                   outputs=[q]))
        graph.nodes.append(gs.Node("DequantizeLinear", f"{t.name}_DQ{i}", inputs=[q, scale, zp],
                                   outputs=[dq]))
        for r in readers:
            for j, x in enumerate(r.inputs):
                if x is t:
                    r.inputs[j] = dq
        graph.outputs = [dq if o is t else o for o in graph.outputs]
        if dq in graph.outputs:
            dq.name, t.name = t.name, f"{t.name}_float{i}"
    for node in [n for n in graph.nodes if n.op in _WEIGHTED]:
        w_t = node.inputs[1]
        if not isinstance(w_t, gs.Constant):
            continue
        w = np.asarray(w_t.values)
        if node.op == "Gemm":
            axis = 0 if int(node.attrs.get("transB", 0)) else 1
        else:
            axis = 0 if node.op == "Conv" else w.ndim - 1
        enc = per_channel_encoding(w, axis, 8) if per_channel else \
            symmetric_encoding(float(w.min()), float(w.max()), 8, signed=True)
        q = gs.Constant(f"{node.name}_wq", enc.quantize(w))
        scale = gs.Constant(f"{node.name}_ws", enc.scale_array())
        zp = gs.Constant(f"{node.name}_wz", enc.zero_point_array())
        deq = gs.Variable(f"{node.name}_wdq", dtype=np.float32, shape=list(w.shape))
        attrs = {"axis": axis} if per_channel else {}
        graph.nodes.append(gs.Node("DequantizeLinear", f"{node.name}_WDQ", attrs=attrs,
                                   inputs=[q, scale, zp], outputs=[deq]))
        node.inputs[1] = deq
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    return out


def ort_quantize_static(model: onnx.ModelProto, calib: np.ndarray, *,
                        per_channel: bool = False) -> onnx.ModelProto:
    """onnxruntime's own post-training quantization: QDQ, MinMax, uint8 activations, int8
    weights, calibrated on the same samples."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, \
        QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        return onnx.load(dst)


# ---------------------------------------------------------------------------- metrics
def sqnr_db(reference: np.ndarray, got: np.ndarray) -> float:
    """10 log10(signal / noise) of ``got`` against ``reference``."""
    noise = float(np.sum((reference.astype(np.float64) - got) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise)


def evaluate(model: onnx.ModelProto, images: np.ndarray, labels: np.ndarray,
             reference: np.ndarray, *, optimize: bool = False) -> tuple[float, float]:
    """(top-1 accuracy in %, output SQNR in dB against ``reference`` logits)."""
    logits = predict(model, images, optimize=optimize)
    return 100.0 * float(np.mean(logits.argmax(1) == labels)), sqnr_db(reference, logits)


# ---------------------------------------------------------------------------- report
def variants(model: onnx.ModelProto, registries: Registries) -> Mapping[str, onnx.ModelProto]:
    """The float models compared: BN folded (no CLE) and after cle in each ReLU6 mode."""
    return {
        "no CLE": apply_passes(model, ["fold-batchnorm"], registries),
        "cle exact": apply_passes(model, [("cle", {"relu6_mode": "exact"})], registries),
        "cle replace": apply_passes(model, [("cle", {"relu6_mode": "replace"})], registries),
    }


class _Counters(Instrument):
    def after_pass(self, index: int, step: Any, program: Program, ctx: Any) -> None:
        self.text = ", ".join(f"{k}={v}" for k, v in sorted(ctx.counters.items()))


def table(title: str, model: onnx.ModelProto, registries: Registries, *, with_ort: bool = True
          ) -> dict[str, dict[str, tuple[float, float]]]:
    images, labels = test_split()
    calib = calibration_samples()
    reference = predict(onnx.load(EXAMPLE_MODEL), images)
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    models = variants(model, registries)
    rows["float (as given)"] = {"float": evaluate(model, images, labels, reference)}
    for name, m in models.items():
        row = {"float": evaluate(m, images, labels, reference)}
        for pc in (False, True):
            row["per-channel" if pc else "per-tensor"] = evaluate(
                fake_quant_model(m, calib, per_channel=pc), images, labels, reference)
        rows[f"aicc harness int8, {name}"] = row
    if "quantize" in registries.passes:
        from aicc.quantization import quantize_model
        samples = [{"image": calib[i:i + 1]} for i in range(len(calib))]
        for name, algorithms in (("no CLE", ()), ("algorithms=cle", ("cle",))):
            row = {}
            for pc in (False, True):
                qdq, _ = quantize_model(model, samples=samples, algorithms=algorithms,
                                        per_channel=pc, act_quantizer="tf",
                                        param_quantizer="symmetric", progress=False,
                                        registries=registries)
                row["per-channel" if pc else "per-tensor"] = evaluate(qdq, images, labels,
                                                                      reference)
            rows[f"aicc quantize pass, {name}"] = row
    if with_ort:
        for name in ("no CLE", "cle exact"):
            row = {}
            for pc in (False, True):
                row["per-channel" if pc else "per-tensor"] = evaluate(
                    ort_quantize_static(models[name], calib, per_channel=pc), images, labels,
                    reference, optimize=True)
            rows[f"onnxruntime quantize_static, {name}"] = row
    print(f"\n{title}  (top-1 % / output SQNR dB vs the original float model; "
          f"{len(labels)} test images)")
    print(f"{'':<40} {'float':>16} {'int8 per-tensor':>17} {'int8 per-channel':>17}")
    for name, row in rows.items():
        cells = []
        for col in ("float", "per-tensor", "per-channel"):
            acc_db = row.get(col)
            cells.append(f"{acc_db[0]:6.2f} / {acc_db[1]:6.2f}" if acc_db else "-")
        print(f"{name:<40} {cells[0]:>16} {cells[1]:>17} {cells[2]:>17}")
    probe = _Counters()
    apply_passes(model, ["cle"], registries, [probe])
    print(f"cle counters: {probe.text}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-ort", action="store_true", help="skip onnxruntime quantize_static")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)   # onnxruntime.quantization's advice on stderr
    registries = load_registries()
    example = onnx.load(EXAMPLE_MODEL)
    table("example model (ReLU6)", example, registries, with_ort=not args.no_ort)
    table("mismatched copy (channels rescaled by 1e-2..1e2)", mismatched_model(example),
          registries, with_ort=not args.no_ort)
    return 0


if __name__ == "__main__":
    sys.exit(main())
