"""AMP on PP-OCRv4's recognizer (rapidocr-onnxruntime 1.4.4, zoo cache): ``aicc quantize
--auto_precision SQNR_DB`` on 64 rendered calibration lines (``benchmarks/ocr_lines.py``, seed 0),
int8 per-channel base and fp16 candidate; quality on 48 held-out lines (seed 1): share of
CTC-decoded strings equal to the float model's, output SQNR, how many weighted layers (Conv/Gemm/
MatMul with constant weights) and how many other nodes the exported node-precision file puts in
fp16, the time AMP takes, and the same accuracy after ``aicc compile -node-precision-info
-external-quantization`` on the cpu and interpreter backends.

Run (``make zoo`` first)::

    .venv/bin/python benchmarks/amp_ppocr.py [--targets 20,22] [--backends cpu,interpreter]

``--targets 0`` quantizes without AMP (the int8 baseline).

Measured (2026-12-04, 2 shared cores): int8 per-channel 79.2 % strings, 16.69 dB; AMP (47 groups,
one per weighted layer) takes 230 s for phase 1 and 2 (quantize command wall time, calibration
included; later targets reuse phase 1: 25-77 s). Target 25 dB: 91.7 % strings, 22.60 dB, 29/47
weighted layers and 211 other nodes in fp16; compiled cpu 91.7 % / 22.94 dB, interpreter
91.7 % / 23.91 dB. Target 30 dB: 97.9 % strings, 23.31 dB, 32/47 weighted layers and 229 other
nodes; compiled cpu 95.8 % / 21.72 dB, interpreter 97.9 % / 21.63 dB. Every group in fp16:
about 42 dB on the calibration lines, 97.9 % strings. One group left in int8 with the rest in
fp16 (2026-12-05, 16 held-out lines, all fp16 45.2 dB): Conv.0/1/6 13-17 dB, 20 more Conv
groups 21-29 dB, the others 32-46 dB (the transformer's MatMuls 41-46 dB, but MatMul.8
25 dB, the classifier MatMul.24 35 dB); the costs do not add up (every group int8: 16.7 dB,
79.2 %; the six most sensitive early groups in fp16: 17.2 dB, 83.3 % on 48 lines), because
the output SQNR and the strings move with a few CTC steps whose argmax flips under any
perturbation (``benchmarks/amp_sensitivity.py`` ranks single tensors).
With ``--quantize-flags=--bias_correction`` (2026-12-05, no compile: ``-external-quantization``
carries no corrected biases): base 81.2 % strings, 14.18 dB, 39 s; target 25 dB: 97.9 % strings,
22.46 dB, 31/47 weighted layers and 222 other nodes in fp16, 358 s. AdaRound's and bias
correction's effect on the int8 base: ``benchmarks/amp_sensitivity.py``.
The other way round (every group int8, 18.6 dB and 68.8 % on those 16 lines, one raised to
fp16): 13.2 dB (Conv.6) to 20.0 dB (Conv.21), 38 of 47 at 18.5 dB or less; QDQ with the
all-int8 encodings and the same tensors float gives the same picture (Conv.6: 16.2 dB,
Conv.21: 19.1 dB), so the mixed models are written as intended: the metric is not monotone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ocr_lines  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
AICC = ROOT / ".venv" / "bin" / "aicc"
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
SHAPE = "1,3,48,320"


def write_list(folder: Path, samples: list[np.ndarray]) -> Path:
    lines = []
    for i, x in enumerate(samples):
        path = folder / f"cal_{i:03d}.raw"
        x.astype("<f4").tofile(path)
        lines.append(path.name)
    out = folder / "list.txt"
    out.write_text("\n".join(lines) + "\n")
    return out


def weighted_outputs(model_path: Path) -> dict[str, str]:
    """First output -> op of the layers with constant weights (``Constant`` nodes included)."""
    m = onnx.load(str(model_path))
    consts = {i.name for i in m.graph.initializer} | {o for n in m.graph.node
                                                      if n.op_type == "Constant" for o in n.output}
    return {n.output[0]: n.op_type for n in m.graph.node
            if n.op_type in WEIGHTED and len(n.input) > 1 and n.input[1] in consts}


def decode(outs: list[np.ndarray], chars: list[str]) -> list[str]:
    return [ocr_lines.ctc_decode(o, chars)[0] for o in outs]


def quality(ref: list[np.ndarray], got: list[np.ndarray], chars: list[str]) -> dict:
    a = np.concatenate(ref).astype(np.float64)
    b = np.concatenate(got).astype(np.float64)
    sqnr = float(10 * np.log10(np.sum(a ** 2) / max(np.sum((a - b) ** 2), 1e-30)))
    ra, rb = decode(ref, chars), decode(got, chars)
    return {"strings": float(np.mean([x == y for x, y in zip(ra, rb)])), "sqnr": sqnr}


def run_ort(path: Path, feeds: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return [s.run(None, {"x": x})[0] for x in feeds]


def compiled(model: Path, folder: Path, lst: Path, backend: str, feeds) -> tuple[list, float]:
    import aicc
    qpc = folder / f"qpc_{backend}"
    t0 = time.perf_counter()
    subprocess.run([str(AICC), "compile", f"-m={model}", f"--input-shape=x={SHAPE}",
                    f"-node-precision-info={folder / 'q_amp' / 'node_precision.yaml'}",
                    f"-external-quantization={folder / 'q_amp' / 'encodings.json'}",
                    f"-input-list-file={lst}", "-quantization-schema-activations=asymmetric",
                    "-enable-channelwise",
                    f"--backend={backend}", f"-aic-binary-dir={qpc}"], check=True)
    seconds = time.perf_counter() - t0
    sess = aicc.load(qpc)
    return [next(iter(sess.run({"x": x}).values())) for x in feeds], seconds


def one(target: float, model: Path, work: Path, lst: Path, held, ref, chars, backends,
        extra: list[str] = ()) -> None:
    # one folder for every target: phase 1 (q_amp/phase1_cache.json) runs once
    folder = work / ("amp" if target > 0 else "int8")
    folder.mkdir(exist_ok=True)
    out = folder / "q.onnx"
    cmd = [str(AICC), "quantize", "--input_model", str(model), "--input_list", str(lst),
           "--input_dim", "x", SHAPE, "--use_per_channel_quantization", "--output_model",
           str(out)]
    cmd += list(extra)
    if target > 0:
        cmd += ["--auto_precision", str(target)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    print(proc.stdout[-4000:], proc.stderr[-2000:])
    if proc.returncode != 0:
        print(f"target {target}: quantize failed ({proc.returncode})")
        return
    q = quality(ref, run_ort(out, held), chars)
    line = f"target {target:g}: {100 * q['strings']:.1f} % strings, {q['sqnr']:.2f} dB, {seconds:.0f} s"
    if target > 0:
        npi = yaml.safe_load((folder / "q_amp" / "node_precision.yaml").read_text())
        names = set(npi["FP16NodeInstanceNames"])
        weighted = weighted_outputs(model)
        line += (f"; fp16: {len(names & set(weighted))}/{len(weighted)} weighted layers, "
                 f"{len(names - set(weighted))} other nodes")
        for backend in backends:
            outs, secs = compiled(model, folder, lst, backend, held)
            c = quality(ref, outs, chars)
            line += (f"; compiled {backend}: {100 * c['strings']:.1f} % strings, "
                     f"{c['sqnr']:.2f} dB ({secs:.0f} s)")
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="0,20")
    parser.add_argument("--backends", default="cpu,interpreter")
    parser.add_argument("--work", help="folder to keep the outputs in (default: a temporary one)")
    parser.add_argument("--quantize-flags", default="", help="more aicc quantize flags for "
                        "every target, e.g. '--bias_correction'")
    args = parser.parse_args(argv)
    model = ocr_lines.model_path()
    if not model.exists():
        raise SystemExit(f"{model} is missing: run `make zoo` first")
    chars = ocr_lines.dictionary(model)
    _, cal = ocr_lines.lines(64, seed=0)
    _, held = ocr_lines.lines(48, seed=1)
    ref = run_ort(model, held)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        lst = write_list(work, cal)
        backends = [b for b in args.backends.split(",") if b]
        for t in args.targets.split(","):
            one(float(t), model, work, lst, held, ref, chars, backends,
                args.quantize_flags.split())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
