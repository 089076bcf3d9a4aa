"""Calibration + quantization benchmark: aicc vs onnxruntime's ``quantize_static``, same model, same
samples, same run; time, peak memory and output SQNR against the float model.

Workloads:

* ``digits-32``: the example model with its 32 calibration samples (the input list);
* ``digits-512``: the same model with 512 samples, the 32 augmented (one-pixel shifts, noise);
* ``ppocr-rec-64``: PP-OCRv4's text recognizer as shipped in rapidocr-onnxruntime 1.4.4 (opset 12,
  weights in ``Constant`` nodes; from the zoo cache, ``make zoo`` fetches it) with 64 text lines
  rendered by ``benchmarks/ocr_lines.py`` for calibration and 48 other lines held out; quality
  adds the share of held-out CTC-decoded strings equal to the float model's (``str %``; also
  with leading/trailing spaces ignored, ``strip %``: most differences are a blank-vs-space at a
  line's ends). Weights per channel;
* ``resnet18-64``: a ResNet-18-shaped CNN (random weights, the builder of
  ``benchmarks/interpreter.py``, BatchNorm folded beforehand so both tools quantize the same
  weights) at 1x3x64x64 with 64 synthetic samples (``--quick``: 16).

Methods: min-max (aicc ``None`` vs onnxruntime ``MinMax``), percentile 99.999 on both, and entropy
(aicc ``KLMinimization`` vs onnxruntime ``Entropy``). Both tools read the samples from a generator
one at a time and write a QDQ model file; the clock covers that whole call (calibration and
quantization). Timed runs alternate between the tools (``--repeat`` rounds; the least time,
CPU time and memory of each tool are kept), so a busy machine slows every tool alike. Each
measurement runs in a fresh process so that peak memory is its own: the
peak resident set during the call (VmHWM, reset just before it) minus the resident set at its
start (libraries imported, data ready), and the peak of Python-traced
allocations (tracemalloc, measured in a second run because tracing slows allocation). Output SQNR
is of the quantized model's outputs (run with onnxruntime) against the float model's on held-out
inputs (the 360 test images for digits, 16 other synthetic images for ResNet); accuracy for
digits. Settings match onnxruntime's defaults: QDQ, asymmetric 8-bit activations (aicc schema
``asymmetric``), symmetric int8 weights on [-127, 127] (aicc ``param_quantizer=symmetric``), int32
biases; weights per tensor for digits and per channel for the ResNet (whose folded BatchNorm
spreads channel ranges; per tensor, which weight-rounding draw a layer gets moves the ResNet's
SQNR by about +-1 dB either way, which would swamp the comparison). Tools:
``aicc`` with its default engine (``auto``: onnxruntime under aicc's observers where it runs the
graph), ``aicc-interp`` on the numpy interpreter (the reference engine), ``aicc-cpu`` forcing
onnxruntime, and ``ort``, onnxruntime's ``quantize_static`` (``--tools``; ort always runs).
Method ``auto`` is aicc's per-tensor choice (no onnxruntime counterpart; its ratio is against
onnxruntime's min-max).

Targets: aicc at least 2x faster than onnxruntime for min-max at equal or better SQNR; histogram
methods without onnxruntime's memory growth. Run::

    .venv/bin/python benchmarks/calibration.py [--quick] [--workloads digits-512,resnet18-64]
    .venv/bin/python benchmarks/calibration.py --workloads ppocr-rec-64 --methods minmax,auto
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DIGITS = EXAMPLES / "digits_mobilenet.onnx"
#: aicc with the interpreter (the reference engine), aicc with onnxruntime running the samples,
#: and onnxruntime's quantize_static
TOOLS = ("aicc", "aicc-cpu", "ort")
#: ``aicc`` runs with the default engine (``auto``: onnxruntime where it runs the graph);
#: ``aicc-interp`` on the interpreter, the reference (slow on large models; ``--tools``).
ALL_TOOLS = ("aicc", "aicc-interp", "aicc-cpu", "ort")
METHODS = {"minmax": ("None", "MinMax"), "percentile": ("Percentile", "Percentile"),
           "entropy": ("KLMinimization", "Entropy"),
           # aicc's default range method; onnxruntime has none like it (its cells are skipped)
           "auto": ("Auto", None)}
PERCENTILE = 99.999


# --- workloads -----------------------------------------------------------------------------------

def _digits_calibration() -> list[np.ndarray]:
    folder = EXAMPLES / "data" / "digits_calib"
    return [np.fromfile(folder / f"sample_{i:02d}.raw", "<f4").reshape(1, 1, 8, 8)
            for i in range(32)]


def _resnet(folder: Path) -> Path:
    """The ResNet model file, built once by the parent (children only read it), with its
    BatchNormalization folded so that both tools quantize the same Conv weights (onnxruntime
    would otherwise keep BN in float after per-tensor int8 Convs, aicc folds it first)."""
    path = folder / "resnet18_64.onnx"
    if path.exists():
        return path
    spec = importlib.util.spec_from_file_location("aicc_bench_interpreter",
                                                  ROOT / "benchmarks" / "interpreter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from aicc.quantization import save_model_atomic
    from aicc.testing import run_pass
    program = run_pass(module.build_resnet18(size=64, classes=100), "fold-batchnorm")
    save_model_atomic(program.to_model(), path)
    return path


def _ppocr(quick: bool) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ocr_lines
    path = ocr_lines.model_path()
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `make zoo` (or benchmarks/zoo.py) first")
    count = 16 if quick else 64
    _, cal = ocr_lines.lines(count, seed=0)
    texts, held = ocr_lines.lines(48, seed=1)
    return {"model": path, "input": "x", "gen": lambda: iter(cal), "count": count,
            "test": held, "labels": None, "per_channel": True,
            "chars": ocr_lines.dictionary(path), "texts": texts}


def workload(name: str, folder: Path, quick: bool) -> dict:
    """Model path, input name, a seeded sample generator factory and held-out inputs."""
    if name == "ppocr-rec-64":
        return _ppocr(quick)
    if name.startswith("digits"):
        base = _digits_calibration()
        count = 32 if name == "digits-32" else 512

        def gen():
            rng = np.random.default_rng(0)
            for i in range(count):
                x = base[i % 32]
                if i >= 32:
                    x = np.roll(x, tuple(rng.integers(-1, 2, 2)), axis=(2, 3))
                    x = x + rng.normal(0, 0.05, x.shape).astype(np.float32)
                yield x.astype(np.float32)
        test = np.load(EXAMPLES / "data" / "digits_test_images.npy")
        labels = np.load(EXAMPLES / "data" / "digits_test_labels.npy")
        return {"model": DIGITS, "input": "image", "gen": gen, "count": count,
                "test": [test[i:i + 1] for i in range(len(test))], "labels": labels,
                "per_channel": False}
    count = 16 if quick else 64

    def gen():
        rng = np.random.default_rng(0)
        for _ in range(count):
            yield rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    rng = np.random.default_rng(99)
    test = [rng.standard_normal((1, 3, 64, 64)).astype(np.float32) for _ in range(16)]
    return {"model": _resnet(folder), "input": "input", "gen": gen, "count": count,
            "test": test, "labels": None, "per_channel": True}


# --- one measurement (child process) --------------------------------------------------------------

def _status_kb(field: str) -> int:
    """A ``/proc/self/status`` memory field in kB (VmRSS: now; VmHWM: peak of this process)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0). ru_maxrss cannot be used: it carries the
    parent's peak over fork and exec."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _run_aicc(w: dict, method: str, out: Path, engine: str = "interpreter") -> None:
    from aicc.quantization import quantize_model, save_model_atomic
    # onnxruntime's settings: asymmetric 8-bit activations, symmetric int8 weights on
    # [-127, 127] (QNN's symmetric mode, the same grid onnxruntime uses)
    opts = {"calibration": METHODS[method][0], "activation_schema": "asymmetric",
            "param_quantizer": "symmetric", "engine": engine, "per_channel": w["per_channel"]}
    if method == "percentile":
        opts["percentile"] = PERCENTILE
    model, _ = quantize_model(w["model"], samples=({w["input"]: x} for x in w["gen"]()),
                              progress=False, **opts)
    save_model_atomic(model, out)


def _run_ort(w: dict, method: str, out: Path) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = ({w["input"]: x} for x in w["gen"]())

        def get_next(self):
            return next(self.it, None)

    extra = {}
    if method == "percentile":
        extra = {"CalibPercentile": PERCENTILE}
    quantize_static(str(w["model"]), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=w["per_channel"], calibrate_method=getattr(CalibrationMethod,
                                                                METHODS[method][1]),
                    extra_options=extra)


def child(workload_name: str, tool: str, method: str, folder: str, quick: bool,
          traced: bool) -> dict:
    logging.disable(logging.WARNING)
    folder_p = Path(folder)
    w = workload(workload_name, folder_p, quick)
    out = folder_p / f"{workload_name}-{tool}-{method}{'-t' if traced else ''}.onnx"
    run = {"aicc": lambda *a: _run_aicc(*a, engine="auto"), "ort": _run_ort,
           "aicc-interp": _run_aicc, "aicc-cpu": lambda *a: _run_aicc(*a, engine="cpu")}[tool]
    import onnxruntime.quantization  # noqa: F401  (imports outside the measured window)
    import aicc.quantization  # noqa: F401
    from aicc.plugins import load_registries
    load_registries()
    _reset_peak_rss()
    before = _status_kb("VmRSS")
    if traced:
        tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    run(w, method, out)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    traced_peak = tracemalloc.get_traced_memory()[1] if traced else None
    if traced:
        tracemalloc.stop()
    growth = _status_kb("VmHWM") - before
    return {"seconds": seconds, "cpu_seconds": cpu, "rss_growth_kb": growth,
            "traced_peak": traced_peak, "model": str(out)}


def quality(w: dict, model_path: str) -> dict:
    import onnxruntime as ort
    ref = ort.InferenceSession(str(w["model"]), providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    a = np.concatenate([ref.run(None, {w["input"]: x})[0] for x in w["test"]]).astype(np.float64)
    b = np.concatenate([q.run(None, {w["input"]: x})[0] for x in w["test"]]).astype(np.float64)
    out = {"sqnr_db": float(10 * np.log10(np.sum(a ** 2) / max(np.sum((a - b) ** 2), 1e-30)))}
    if w["labels"] is not None:
        out["accuracy"] = float(np.mean(b.argmax(1) == w["labels"]))
        out["float_accuracy"] = float(np.mean(a.argmax(1) == w["labels"]))
    if "chars" in w:
        from ocr_lines import ctc_decode
        ra = ctc_decode(a.reshape(len(w["test"]), -1, len(w["chars"])), w["chars"])
        rb = ctc_decode(b.reshape(len(w["test"]), -1, len(w["chars"])), w["chars"])
        out["strings_equal"] = float(np.mean([x == y for x, y in zip(ra, rb)]))
        out["strings_equal_stripped"] = float(np.mean([x.strip() == y.strip()
                                                       for x, y in zip(ra, rb)]))
        out["float_reads"] = float(np.mean([x.strip() == t for x, t in zip(ra, w["texts"])]))
    return out


# --- driver --------------------------------------------------------------------------------------

def _spawn(args: list[str]) -> dict:
    env = dict(os.environ, AICC_DISABLE_PLUGIN_AUTOLOAD="1")
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer ResNet samples")
    parser.add_argument("--workloads", default="digits-32,digits-512,resnet18-64")
    parser.add_argument("--methods", default="minmax,percentile,entropy")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per cell (best kept)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"of {', '.join(ALL_TOOLS)} (ort is always run)")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, tool, method, folder, quick, traced = args.child
        print(json.dumps(child(name, tool, method, folder, quick == "1", traced == "1")))
        return 0
    tools = [t for t in args.tools.split(",") if t != "ort"] + ["ort"]
    unknown = set(tools) - set(ALL_TOOLS)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; valid: {', '.join(ALL_TOOLS)}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.workloads.split(","):
            rows += _workload_rows(name, folder, args, tools)
    print("\nratio = onnxruntime min-max time / aicc time (wall, best of --repeat, the tools "
          "run interleaved; higher is better for aicc); cpu s = CPU time of all threads (least "
          "of the runs); RSS +MB = growth of the peak resident set during the call (least of "
          "the runs); traced MB = peak of tracemalloc; str % = held-out "
          "decoded strings equal to float (strip %: ignoring leading/trailing spaces).")
    _targets(rows)
    return 0


def _workload_rows(name: str, folder: str, args, tools: list[str]) -> list[dict]:
    w = workload(name, Path(folder), args.quick)
    rows = []
    print(f"\n{name}: {w['count']} samples, model {Path(w['model']).name}")
    print(f"  {'method':<11}{'tool':<12}{'time s':>8}{'ratio':>8}{'cpu s':>8}{'RSS +MB':>9}"
          f"{'traced MB':>10}{'SQNR dB':>9}{'acc %':>8}{'str %':>7}{'strip %':>8}")
    ort_minmax = None
    for method in args.methods.split(","):
        cells = {}
        run = [t for t in tools if not (t == "ort" and METHODS[method][1] is None)]
        best: dict[str, dict] = {}
        for _ in range(args.repeat):    # tools interleaved: a noisy machine hits all alike
            for tool in run:
                r = _spawn([name, tool, method, folder, "1" if args.quick else "0", "0"])
                if tool not in best:
                    best[tool] = {**r, "runs": [r]}
                    continue
                runs = best[tool]["runs"] + [r]
                best[tool] = {**min(runs, key=lambda x: x["seconds"]), "runs": runs,
                              "cpu_seconds": min(x["cpu_seconds"] for x in runs),
                              "rss_growth_kb": min(x["rss_growth_kb"] for x in runs)}
        for tool in run:
            timed = best[tool]
            traced = _spawn([name, tool, method, folder, "1" if args.quick else "0", "1"])
            cells[tool] = {**timed, "traced_peak": traced["traced_peak"],
                           **quality(w, timed["model"])}
        if method == "minmax" and "ort" in cells:
            ort_minmax = cells["ort"]["seconds"]
        for tool, c in cells.items():
            base = cells["ort"]["seconds"] if "ort" in cells else ort_minmax
            ratio = f"{base / c['seconds']:>7.2f}x" if base else f"{'-':>8}"
            acc = f"{100 * c['accuracy']:.2f}" if "accuracy" in c else "-"
            strs = (f"{100 * c['strings_equal']:>7.1f}{100 * c['strings_equal_stripped']:>8.1f}"
                    if "strings_equal" in c else f"{'-':>7}{'-':>8}")
            print(f"  {method:<11}{tool:<12}{c['seconds']:>8.3f}{ratio}{c['cpu_seconds']:>8.3f}"
                  f"{c['rss_growth_kb'] / 1024:>9.1f}{c['traced_peak'] / 2**20:>10.2f}"
                  f"{c['sqnr_db']:>9.2f}{acc:>8}{strs}")
            rows.append({"workload": name, "method": method, "tool": tool, **c})
    if w["labels"] is not None and rows:
        print(f"  float accuracy: {100 * rows[0]['float_accuracy']:.2f} %")
    if "chars" in w and rows:
        print(f"  float reads {100 * rows[0]['float_reads']:.1f} % of the held-out lines exactly")
    return rows


def _targets(rows: list[dict]) -> None:
    for r in rows:
        if r["tool"] == "ort" or r["method"] != "minmax":
            continue
        o = next((x for x in rows if x["tool"] == "ort" and x["method"] == "minmax"
                  and x["workload"] == r["workload"]), None)
        if o is None:
            continue
        ok = r["seconds"] * 2 <= o["seconds"] and r["sqnr_db"] >= o["sqnr_db"] - 0.05 and \
            r["rss_growth_kb"] <= o["rss_growth_kb"]
        print(f"min-max target, {r['tool']} on {r['workload']} (>= 2x faster, SQNR not lower, "
              f"peak memory not higher): {'met' if ok else 'NOT met'} "
              f"({o['seconds'] / r['seconds']:.2f}x, {r['sqnr_db'] - o['sqnr_db']:+.2f} dB, "
              f"{(r['rss_growth_kb'] - o['rss_growth_kb']) / 1024:+.0f} MB)")


if __name__ == "__main__":
    sys.exit(main())
