"""Per-channel int8 output SQNR on the model zoo: ``aicc quantize`` (every flag at its default
but ``--use_per_channel_quantization``) next to onnxruntime's ``quantize_static`` (QDQ, per
channel, uint8 activations, int8 weights, min-max), same calibration samples, same held-out
samples, both quantized models run in onnxruntime against the float model in onnxruntime.

Samples are the zoo's synthetic inputs (``zoo_lib.make_feeds``): seeds 1..N calibrate, seeds
100..103 are held out; SQNR is ``zoo_lib.sqnr_db`` (the worst float output) over the held-out
samples stacked. Each quantizer runs in a child process (a crash or a refusal is a table cell,
not the end of the run). No wall-time assertion: times are printed for information. Run::

    .venv/bin/python benchmarks/zoo_sqnr.py [--models ocr-cls,orientation] [--samples 16] \
        [--aicc-flags "--algorithms cle"] [--no-ort]

``--aicc-flags`` adds flags to ``aicc quantize`` (to compare an algorithm with the default);
``--no-ort`` skips onnxruntime's column.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo_lib  # noqa: E402

HELD_OUT = (100, 101, 102, 103)


def _feeds(spec, seeds) -> list[dict[str, np.ndarray]]:
    return [zoo_lib.make_feeds(spec, s) for s in seeds]


def _quantize_aicc(spec, samples: int, work: Path, flags: list[str]) -> Path:
    from aicc.cli import main
    listing = zoo_lib._write_samples(spec, work / "calib", list(range(1, samples + 1)))
    out = work / "aicc.onnx"
    dims = [a for name, (shape, _) in spec.inputs.items() if shape
            for a in ("--input_dim", name, ",".join(map(str, shape)))]
    if main(["quantize", "--input_model", str(zoo_lib.model_path(spec)), "--output_model",
             str(out), "--input_list", str(listing), "--use_per_channel_quantization", *dims,
             *flags]):
        raise RuntimeError("aicc quantize failed (see stderr)")
    return out


def _quantize_ort(spec, samples: int, work: Path, flags: list[str]) -> Path:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(_feeds(spec, range(1, samples + 1)))

        def get_next(self):
            return next(self.it, None)
    out = work / "ort.onnx"
    quantize_static(str(zoo_lib.model_path(spec)), str(out), Reader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax)
    return out


def _outputs(path: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    runs = [s.run(names, f) for f in feeds]
    return {n: np.concatenate([np.atleast_1d(r[i]) for r in runs]) for i, n in enumerate(names)}


def child(key: str, tool: str, samples: int, folder: str, flags: list[str]) -> dict:
    spec = zoo_lib.BY_KEY[key]
    work = Path(folder) / key / tool
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    path = (_quantize_aicc if tool == "aicc" else _quantize_ort)(spec, samples, work, flags)
    seconds = time.perf_counter() - t0
    held = _feeds(spec, HELD_OUT)
    ref = _outputs(zoo_lib.model_path(spec), held)
    ref = {k: v for k, v in ref.items() if np.issubdtype(v.dtype, np.floating)}
    got = _outputs(path, held)
    return {"sqnr": zoo_lib.sqnr_db(got, ref), "seconds": seconds}


def _spawn(key: str, tool: str, samples: int, folder: str, flags: str) -> dict:
    if tool == "skip":
        return {"error": "skipped"}
    proc = subprocess.run([sys.executable, __file__, "--child", key, tool, str(samples), folder,
                           flags],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "AICC_DISABLE_PLUGIN_AUTOLOAD": "1"})
    for line in proc.stdout.splitlines():
        if line.startswith("ZOO-SQNR "):
            return json.loads(line[len("ZOO-SQNR "):])
    tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return {"error": tail[:70]}


def _cell(r: dict) -> str:
    if r.get("error") == "skipped":
        return f"{'-':>9}"
    if "error" in r:
        return f"{'failed':>9}"
    return f"{r['sqnr']:>9.2f}" if math.isfinite(r["sqnr"]) else f"{r['sqnr']:>9}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(m.key for m in zoo_lib.MODELS))
    p.add_argument("--samples", type=int, default=16, help="calibration samples per model")
    p.add_argument("--aicc-flags", default="", help="more aicc quantize flags")
    p.add_argument("--no-ort", action="store_true", help="skip onnxruntime's column")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        key, tool, samples, folder, flags = args.child
        print("ZOO-SQNR " + json.dumps(child(key, tool, int(samples), folder, flags.split())))
        return 0
    keys = args.models.split(",")
    unknown = [k for k in keys if k not in zoo_lib.BY_KEY]
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(zoo_lib.BY_KEY)}")
    print(f"{'model':<18}{'aicc dB':>9}{'ort dB':>9}{'aicc-ort':>10}{'aicc s':>8}{'ort s':>8}"
          "  note")
    with tempfile.TemporaryDirectory() as folder:
        for key in keys:
            a, o = (_spawn(key, t, args.samples, folder, args.aicc_flags)
                    for t in ("aicc", "skip" if args.no_ort else "ort"))
            both = "error" not in a and "error" not in o
            diff = f"{a['sqnr'] - o['sqnr']:>+10.2f}" if both and math.isfinite(
                a["sqnr"] - o["sqnr"]) else f"{'-':>10}"
            secs = "".join(f"{r['seconds']:>8.1f}" if "error" not in r else f"{'-':>8}"
                           for r in (a, o))
            note = "; ".join(f"{t}: {r['error']}" for t, r in (("aicc", a), ("ort", o))
                             if "error" in r and r["error"] != "skipped")
            print(f"{key:<18}{_cell(a)}{_cell(o)}{diff}{secs}  {note}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
