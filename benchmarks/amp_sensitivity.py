"""Where the int8 error of PP-OCRv4's recognizer comes from: each quantized tensor of the int8
per-channel model fake-quantized alone in the float model (BatchNorm folded, as AMP quantizes
it), with the encoding the int8 model used, ranked by the output SQNR and decoded strings that
costs; the same for each weight; then the curve of leaving the k most sensitive tensors in float
with the rest quantized (is the error concentrated or spread?).

Calibration: 64 rendered lines (seed 0), ``aicc quantize`` defaults with per-channel weights (the
AMP base); scores on ``--lines`` held-out lines (seed 1). Fake quantization is QuantizeLinear/
DequantizeLinear around one activation, or a weight replaced by its dequantized integers; the
model runs on onnxruntime with graph optimizations off.

Run (``make zoo`` first)::

    .venv/bin/python benchmarks/amp_sensitivity.py [--lines 16] [--top 25] [--noise TENSOR]

Measured (2026-12-05, 16 held-out lines; all-int8 fake-quantized: 20.1 dB, 62.5 % strings):
- activations alone (148): the first ones cost most: batch_norm_2.tmp_2 (first Conv) 14.0 dB,
  depthwise_conv2d_0.tmp_0 14.8, p2o.Add.39 15.4, p2o.Add.7 16.6, conv2d_187.tmp_0 16.6,
  conv2d_188.tmp_0 19.6; 20 more between 22 and 30 dB; the rest above 30 dB. Every activation
  int8 (weights float): 16.9 dB.
- weights alone (8-bit ones, 66): conv2d_157.w_0 (Conv.1, a 3x3 depthwise whose kernels are
  differences, weights up to +-6.7 per channel that nearly cancel) 15.8 dB; then 22.0 to
  25.2 dB for five more (conv2d_184/182/164/118/168); the rest above 34 dB. Per-channel
  weight SQNR of conv2d_157 is 43-49 dB: the loss is the kernel's gain on a smooth input, not
  the encoding. Every weight int8 (activations float): 15.9 dB; the worst weight float: 21.0 dB;
  the worst three: 22.1 dB, 100 %; more does not help (21.5, 20.9 dB).
- the errors do not add up: the k most sensitive activations left float (params int8):
  k=0 20.1 dB, 5 20.0, 10 18.5, 20 15.7, 40 14.7, 148 15.9 dB; with params float: k=0 16.9,
  10 17.3, 40 24.6, 80 32.7, 120 49.3 dB. Leaving any one activation float in the int8 model
  gains at most 2.3 dB (batch_norm_2.tmp_2), every other one under 0.2 dB.
- why: the output SQNR (of the softmax probabilities) and the strings are set by a few CTC
  steps whose argmax flips: with batch_norm_2.tmp_2 alone quantized, the lines' SQNR ranges
  from 9 to 50 dB, and the low ones have 1 to 20 of 40 steps whose probability moves by more
  than 0.1 (up to 1.0, a different class). A flip costs the same whatever noise caused it, so
  sources do not add up, and leaving a few tensors in float does not remove the flips.
  It is the model's sensitivity, not the encoding: ``--noise batch_norm_2.tmp_2`` adds
  perturbations to that tensor alone: its int8 error 14.0 dB, 56.2 %; uniform noise of one
  step 11.2 dB, 50.0 %; Gaussian noise of the same power 10.7 dB, 50.0 %; half the int8 error
  21.5 dB, 75.0 %; a quarter 24.6 dB, 93.8 %. Why every tensor int8 (20.1 dB, 11 flipped
  steps of 640) is no worse than that tensor alone (14.0 dB, 20 flipped, at steps where the
  float model's top-1/top-2 margin is 0.77 at the median) is not explained: the quantizers
  right after it do not round the perturbation away (with the next one, two: 14.1, 14.4 dB).
  The scores are not monotone in what is quantized, so AMP's phase 1 (one group int8, the rest
  fp16) predicts the combined cost badly.
- no tensor is quantized that should not be: one group in int8 quantizes its own outputs, its
  layer's weight and bias, and its input (a conversion from the fp16 group before it); nothing
  else (e.g. group Conv.5: depthwise_conv2d_2.tmp_0, p2o.Add.39, conv2d_161.w_0/b_0, input
  p2o.Add.31).
- AdaRound and bias correction (2026-12-05, 48 held-out lines, full-model numbers from ``aicc
  quantize --use_per_channel_quantization`` [``--apply_algorithms adaround``]
  [``--bias_correction``]; "weights" = the model's dequantized weights and biases put in the
  float model, activations float; times on 2 cores shared with other runs):

  ===================  ==================  ==================  =====================
  weights rounded      int8 model          weights only        quantize wall time
  ===================  ==================  ==================  =====================
  nearest              16.67 dB, 79.2 %    17.43 dB, 79.2 %    6 s
  AdaRound             16.35 dB, 70.8 %    23.24 dB, 89.6 %    515 s (346 s AdaRound)
  bias correction      14.18 dB, 81.2 %    24.51 dB, 91.7 %    25 s
  AdaRound + bias c.   15.41 dB, 72.9 %    24.95 dB, 91.7 %    997 s (715 s, load 5)
  (activations only)   13.19 dB, 64.6 %    --                  --
  ===================  ==================  ==================  =====================

  Both fix what they aim at: conv2d_157 alone in the float model goes 18.7 -> 27.8 dB with
  AdaRound (its layer output SQNR 38.3 -> 43.5 dB, the exhaustive optimum over the 2^9
  roundings of each channel: 43.6), and every weight with both 17.4 -> 25.0 dB. AdaRound never
  worsened a layer (47 of 47 improved, 2.1 to 22.2 dB lower reconstruction error). None of it
  survives into the int8 model because the int8 *activations* dominate: conv2d_157's input
  batch_norm_2.tmp_2 has one per-tensor grid (step 0.125) over channels whose spread is 0.008
  to 3.0, and through the kernels' differences that leaves the layer's output at 19.4 dB even
  with float weights (19.3 nearest, 19.4 AdaRound). AdaRound fed the quantized input (AIMET's
  objective, min E||W~ x_q - W x||^2, tried on that layer) is no better (16.2 dB at the output);
  AIMET-style empirical bias correction of the quantized model, layer by layer on its own
  outputs, is worse (13.3 dB, 68.8 %; a prototype on 32 lines, not in aicc); rescaling
  batch_norm_2.tmp_2's channels to one range (Conv.0 -> Conv.1 is linear; also a prototype)
  gives 16.6 dB, 83.3 %. The int8 base stays at 79-83 % strings
  whatever the weights: the way up is precision for a few activations (AMP), not rounding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import amp_ppocr  # noqa: E402
import ocr_lines  # noqa: E402


def int8_encodings(model: Path, lst: Path) -> tuple[onnx.ModelProto, dict]:
    """The float model AMP quantizes and the encodings of its all-int8 assignment."""
    from aicc.quant.amp import Candidate
    from aicc.quant.amp_flow import QuantizedVariants
    v = QuantizedVariants(str(model), input_list=str(lst), input_shapes=[f"x={amp_ppocr.SHAPE}"],
                          per_channel=True, act_quantizer="tf", param_quantizer="tf",
                          calibration="Auto", progress=False)
    base = Candidate(v.act_bw, "int", v.weight_bw, "int")
    _, program = v.build({g: base for g in v.groups})
    return v.float_model, program.encodings


def fake_quantized(x: np.ndarray, e: dict) -> np.ndarray:
    """``x`` through an ONNX-convention encoding (per channel along ``axis`` when given)."""
    bits = int(e["bitwidth"])
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if e["signed"] else (0, (1 << bits) - 1)
    s, z = np.asarray(e["scale"], np.float64), np.asarray(e["zero_point"], np.float64)
    if e.get("axis") is not None:
        shape = [1] * x.ndim
        shape[e["axis"]] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    return ((np.clip(np.round(x / s) + z, lo, hi) - z) * s).astype(np.float32)


def with_quantized(fm: onnx.ModelProto, enc: dict, acts=(), params=()) -> onnx.ModelProto:
    """``fm`` with the activations ``acts`` fake-quantized (QDQ after each) and the weights
    ``params`` replaced by their dequantized integers."""
    m = onnx.ModelProto.FromString(fm.SerializeToString())
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    for p in params:
        arr = numpy_helper.to_array(inits[p]).astype(np.float64)
        inits[p].CopyFrom(numpy_helper.from_array(fake_quantized(arr, enc["params"][p]), p))
    for a in acts:
        e = enc["activations"][a]
        zdt = np.int8 if e["signed"] else np.uint8
        g.initializer.extend([
            numpy_helper.from_array(np.asarray(e["scale"], np.float32), a + "_fq_s"),
            numpy_helper.from_array(np.asarray(e["zero_point"], zdt), a + "_fq_z")])
        for n in g.node:
            n.input[:] = [a + "_fq_dq" if i == a else i for i in n.input]
        for o in g.output:
            if o.name == a:
                o.name = a + "_fq_dq"
        producer = next((k for k, n in enumerate(g.node) if a in n.output), -1)
        g.node.insert(producer + 1, helper.make_node(
            "DequantizeLinear", [a + "_fq_q", a + "_fq_s", a + "_fq_z"], [a + "_fq_dq"]))
        g.node.insert(producer + 1, helper.make_node(
            "QuantizeLinear", [a, a + "_fq_s", a + "_fq_z"], [a + "_fq_q"]))
    return m


class Scorer:
    """Output SQNR (dB) and share of decoded strings equal to the float model's."""

    def __init__(self, fm: onnx.ModelProto, feeds: list[np.ndarray], chars: list[str]):
        self.feeds, self.chars = feeds, chars
        self.ref = self.outputs(fm)
        self.ref_text = amp_ppocr.decode(self.ref, chars)

    def outputs(self, m: onnx.ModelProto) -> list[np.ndarray]:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        s = ort.InferenceSession(m.SerializeToString(), opts,
                                 providers=["CPUExecutionProvider"])
        return [s.run(None, {"x": x})[0] for x in self.feeds]

    def __call__(self, m: onnx.ModelProto) -> tuple[float, float]:
        got = self.outputs(m)
        q = amp_ppocr.quality(self.ref, got, self.chars)
        return q["sqnr"], 100 * q["strings"]


def noise_study(fm: onnx.ModelProto, enc: dict, name: str, score: "Scorer") -> None:
    """The cost of perturbing activation ``name`` alone: by its int8 error, a fraction of it,
    and random noise of one quantization step (uniform) or of the same power (Gaussian)."""
    import onnxruntime as ort
    e = enc["activations"][name]
    m = onnx.ModelProto.FromString(fm.SerializeToString())
    for n in m.graph.node:
        n.input[:] = [name + "_noisy" if i == name else i for i in n.input]
    at = next(k for k, n in enumerate(m.graph.node) if name in n.output)
    m.graph.node.insert(at + 1, helper.make_node("Add", [name, "noise"], [name + "_noisy"]))
    m.graph.input.append(helper.make_tensor_value_info("noise", onnx.TensorProto.FLOAT, None))
    m.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    step = float(e["scale"])
    kinds = {"int8 error": lambda v, err: err, "half of it": lambda v, err: err / 2,
             "a quarter": lambda v, err: err / 4,
             "uniform, one step": lambda v, err: rng.uniform(-step / 2, step / 2, v.shape),
             "Gaussian, same power": lambda v, err: rng.normal(0, err.std(), v.shape)}
    for label, make in kinds.items():
        got = []
        for x in score.feeds:
            zero = np.zeros(1, np.float32)
            v = sess.run(None, {"x": x, "noise": zero})[1]
            noise = make(v, fake_quantized(v.astype(np.float64), e) - v).astype(np.float32)
            got.append(sess.run(None, {"x": x, "noise": noise})[0])
        q = amp_ppocr.quality(score.ref, got, score.chars)
        print(f"  {name} + {label}: {q['sqnr']:.2f} dB, {100 * q['strings']:.1f} %")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=16, help="held-out lines to score on")
    parser.add_argument("--top", type=int, default=25, help="rows of each ranking to print")
    parser.add_argument("--noise", metavar="TENSOR", help="only perturb this activation alone "
                        "(its int8 error, fractions of it, random noise) and score")
    args = parser.parse_args(argv)
    model = ocr_lines.model_path()
    if not model.exists():
        raise SystemExit(f"{model} is missing: run `make zoo` first")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        lst = amp_ppocr.write_list(Path(tmp), ocr_lines.lines(64, seed=0)[1])
        fm, enc = int8_encodings(model, lst)
    score = Scorer(fm, ocr_lines.lines(args.lines, seed=1)[1], ocr_lines.dictionary(model))
    if args.noise:
        noise_study(fm, enc, args.noise, score)
        return 0
    acts = [a for a, e in enc["activations"].items() if e.get("dtype") != "float"]
    params = [p for p, e in enc["params"].items() if "@" not in p and e.get("dtype") != "float"]
    print("all int8: %.2f dB, %.1f %% strings" % score(with_quantized(fm, enc, acts, params)))
    ranked = sorted((score(with_quantized(fm, enc, [a])), a) for a in acts)
    print(f"activations alone ({len(acts)}), worst first:")
    for (db, ok), a in ranked[:args.top]:
        print(f"  {db:7.2f} dB {ok:5.1f} %  {a}")
    weights = [p for p in params if int(enc["params"][p]["bitwidth"]) < 32]
    ranked_w = sorted((score(with_quantized(fm, enc, (), [p])), p) for p in weights)
    print(f"weights alone ({len(weights)}), worst first:")
    for (db, ok), p in ranked_w[:args.top]:
        print(f"  {db:7.2f} dB {ok:5.1f} %  {p}")
    order = [a for _, a in ranked]
    for k in (0, 5, 10, 20, 40, 80, len(order)):
        rest = order[k:]
        print("  %3d most sensitive activations float: weights int8 %.2f dB %.1f %%, "
              "weights float %.2f dB %.1f %%" % (k, *score(with_quantized(fm, enc, rest, params)),
                                                 *score(with_quantized(fm, enc, rest))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
