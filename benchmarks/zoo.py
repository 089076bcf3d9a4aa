"""``make zoo``: third-party ONNX models from pinned wheels through every aicc backend, one table.

For each model of ``zoo_lib.MODELS`` (or those named on the command line): onnxruntime on the
original model (the reference), then ``cpu``, ``interpreter``, ``aic100`` (``-convert-to-fp16
-aic-num-cores=4``, with four calibration samples so nodes overflowing fp16 stay fp32) and
``aicc quantize`` (int8 per-channel, 16 samples, the output run in onnxruntime). A cell is the
relative error against onnxruntime (SQNR in dB for int8) or ``ERR``; the errors' first lines and
the compile/run times (next to onnxruntime's) follow the table. Targets (issue 12): cpu <= 1e-4,
interpreter <= 1e-3, aic100 fp16 <= 5e-2 with finite outputs, and every int8 model loads. A model
whose reference moves more than that between onnxruntime with and without its own graph
optimizations (column "ort noise": fused kernels round differently; PP-OCR's detector moves by
2e-3) is held to twice that noise instead.

``--fp16-no-samples`` adds three columns: ``aicc.compile(model, target=T, fp16=True,
input_shapes=...)`` with no sample data (how most users compile), loaded and run on sample 0, for
T in interpreter, aic100 and cpu (onnxruntime computes some fp16 ops in fp32), held to 5e-2; the
warnings aicc logged for them are listed under "notes" (a wrong answer must at least warn).

Run: ``.venv/bin/python benchmarks/zoo.py [KEY ...] [--only cpu,interpreter,aic100,int8]
[--fp16-no-samples]``.
The cache of wheels and extracted models is ``$AICC_ZOO_CACHE`` (default ``~/.cache/aicc-zoo``).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import zoo_lib  # noqa: E402

STEPS = ("cpu", "interpreter", "aic100", "int8")
#: ``--fp16-no-samples``: ``aicc.compile(..., fp16=True)`` with no sample data, per target
FP16_STEPS = ("fp16-interpreter", "fp16-aic100", "fp16-cpu")
TARGETS = {"cpu": 1e-4, "interpreter": 1e-3, "aic100": 5e-2,
           **{s: 5e-2 for s in FP16_STEPS}}


def _cell(step: str, res: zoo_lib.Result, ref: zoo_lib.Result, noise: float) -> str:
    if not res.ok:
        return "ERR"
    if step == "int8":
        db = zoo_lib.sqnr_db(res.outputs, ref.outputs)
        return "inf dB" if db == math.inf else f"{db:.1f} dB"
    err = zoo_lib.relative_error(res.outputs, ref.outputs)
    mark = "" if err <= max(TARGETS[step], 2 * noise) else " !"
    return ("inf" if err == math.inf else f"{err:.1e}") + mark


def _times(res: zoo_lib.Result) -> str:
    if not res.ok:
        return "-"
    return f"{res.compile_s:.1f}s/{res.run_s * 1e3:.1f}ms"


def run(keys: list[str], steps: tuple[str, ...], work: Path) -> int:
    header = ["model", "ort run", "ort noise", *steps]
    rows, errors, times, notes = [], [], [], []
    for key in keys:
        spec = zoo_lib.BY_KEY[key]
        print(f"[zoo] {key} ...", file=sys.stderr, flush=True)
        try:
            path = zoo_lib.model_path(spec)
        except Exception as e:
            rows.append([key, "fetch ERR", "-"] + ["-"] * len(steps))
            errors.append(f"{key}: fetch: {e}")
            continue
        ref = zoo_lib.run_onnxruntime(path, zoo_lib.make_feeds(spec, 0))
        if not ref.ok:
            rows.append([key, "ERR", "-"] + ["-"] * len(steps))
            errors.append(f"{key}: onnxruntime: {ref.error}")
            continue
        plain = zoo_lib.run_onnxruntime(path, zoo_lib.make_feeds(spec, 0), 0, optimize=False)
        noise = zoo_lib.relative_error(plain.outputs, ref.outputs) if plain.ok else 0.0
        row = [key, f"{ref.run_s * 1e3:.1f}ms", f"{noise:.0e}"]
        trow = [key, f"{ref.compile_s:.2f}s/{ref.run_s * 1e3:.1f}ms"]
        for step in steps:
            res = (zoo_lib.run_quantize(spec, work / key / step) if step == "int8"
                   else zoo_lib.run_fp16(spec, step[len("fp16-"):], work / key / step)
                   if step in FP16_STEPS
                   else zoo_lib.run_backend(spec, step, work / key / step))
            row.append(_cell(step, res, ref, noise))
            trow.append(_times(res))
            if not res.ok:
                errors.append(f"{key}: {step}: {res.error}")
            elif res.note:
                notes.append(f"{key}: {step}: {res.note}")
        rows.append(row)
        times.append(trow)
    _table(header, rows)
    print("\nrelative error = max|y - ort| / max|ort| over outputs ('!' misses the target: "
          "cpu 1e-4, interpreter 1e-3, aic100 and fp16-* 5e-2, or twice the ort noise if larger); "
          "int8 = SQNR vs ort;\nort noise = the same measure between onnxruntime with and without its "
          "graph optimizations")
    print("\ncompile / run times (onnxruntime: session creation / run):")
    _table(["model", "ort", *steps], times)
    if notes:
        print("\nnotes:")
        for n in notes:
            print(f"  {n}")
    if errors:
        print("\nerrors (first line):")
        for e in errors:
            print(f"  {e}")
    ok = sum(c not in ("ERR", "-") and not c.endswith("!") for r in rows for c in r[3:])
    print(f"\n{ok}/{len(rows) * len(steps)} cells ok")
    return 0


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="model keys (default: all): "
                        + ", ".join(zoo_lib.BY_KEY))
    parser.add_argument("--only", default=",".join(STEPS), help="steps to run: cpu,interpreter,"
                        "aic100,int8")
    parser.add_argument("--fp16-no-samples", action="store_true",
                        help="also compile with fp16=True and no sample data (the Python API, "
                             "as most users do) for the interpreter, aic100 and cpu: columns "
                             + ", ".join(FP16_STEPS))
    parser.add_argument("--work", help="folder for containers and samples (default: temporary)")
    args = parser.parse_args(argv)
    unknown = [k for k in args.models if k not in zoo_lib.BY_KEY]
    steps = tuple(s for s in args.only.split(",") if s)
    if args.fp16_no_samples:
        steps += tuple(s for s in FP16_STEPS if s not in steps)
    if unknown or any(s not in STEPS + FP16_STEPS for s in steps):
        parser.error(f"unknown model or step: {unknown or steps}")
    keys = args.models or list(zoo_lib.BY_KEY)
    if args.work:
        return run(keys, steps, Path(args.work))
    with tempfile.TemporaryDirectory(prefix="aicc-zoo-") as tmp:
        return run(keys, steps, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
