"""Network specialization cost: compile time and container size for 1, 4 and 16 specializations of
the dynamic CNN example, against compiling each shape into a container of its own.

The model is ``examples/dynamic_cnn.py`` widened (128 channels, 1000 classes: about 1.1 MB of
weights) so that weights dominate a container. For N specializations (batch x height x width) it
compiles one container with ``-network-specialization-config`` (compile only) on the ``cpu`` and
on the ``interpreter`` backend and, in the same run, the peer: N separate single-shape containers
(``-onnx-define-symbol``, ``cpu``), which is what one would do without specializations. Targets
(DESIGN.md section 3 and the issue):

- compile time grows no worse than linearly: time per specialization at N=16 within 1.5x of N=1.
  Checked on the ``interpreter`` backend, whose compile is cheap, so the figure is aicc's own work
  (specialize, passes, lowering, container). On ``cpu`` each specialization keeps an onnxruntime
  session, and every live session's intra-op thread pool spin-waits after its work: on a machine
  with few, busy cores, creating session k then slows with k (onnxruntime's
  ``session.intra_op.allow_spinning``); the cpu column is printed, not judged;
- each extra specialization adds much less than one copy of the weights (< 10% of it), where the
  peer adds a full copy.

Run::

    python benchmarks/specialization.py            # N = 1, 4, 16; best of 3
    python benchmarks/specialization.py --quick    # N = 1, 4; one repetition
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("AICC_DISABLE_PLUGIN_AUTOLOAD", "1")

import onnx  # noqa: E402

from aicc.compiler import CompileRequest, compile_model  # noqa: E402
from aicc.pass_order import Requested
from aicc.container import SHARED_MIN_BYTES  # noqa: E402
from aicc.plugins import load_registries  # noqa: E402

__all__ = ["shapes", "measure", "main"]

ROOT = Path(__file__).resolve().parent.parent
TIME_TARGET = 1.5  # time per specialization at the largest N vs N=1
SIZE_TARGET = 0.10  # bytes added per extra specialization, as a share of one weight copy


def _cnn() -> onnx.ModelProto:
    spec = importlib.util.spec_from_file_location("dynamic_cnn", ROOT / "examples" /
                                                  "dynamic_cnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(channels=128, classes=1000)


def shapes(n: int) -> list[dict[str, int]]:
    """``n`` distinct (batch, height, width) bindings, smallest first."""
    out = []
    for batch in (1, 2, 4, 8):
        for size in (32, 48, 64, 96):
            out.append({"batch": batch, "height": size, "width": size})
    return out[:n]


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _best(fn, repeat: int) -> tuple[float, Path]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure(model: onnx.ModelProto, n: int, work: Path, registries, repeat: int) -> dict:
    config = work / f"spec{n}.json"
    config.write_text(json.dumps({"specializations": shapes(n)}))

    def together(backend: str = "cpu") -> Path:
        out = work / f"together{n}-{backend}"
        path, _, _ = compile_model(CompileRequest(
            model=model, output=out, backend=backend,
            passes=[Requested("specialize", {"config": str(config)})]), registries)
        return path

    def apart() -> list[Path]:
        paths = []
        for i, sym in enumerate(shapes(n)):
            path, _, _ = compile_model(CompileRequest(
                model=model, output=work / f"apart{n}-{i}",
                symbols=[f"{k}={v}" for k, v in sym.items()]), registries)
            paths.append(path)
        return paths

    t_together, qpc = _best(together, repeat)
    t_interp, _ = _best(lambda: together("interpreter"), repeat)
    t_apart, qpcs = _best(apart, repeat)
    return {"n": n, "time": t_together, "interp": t_interp, "size": _dir_size(qpc),
            "peer_time": t_apart, "peer_size": sum(_dir_size(p) for p in qpcs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 4 and one repetition")
    args = parser.parse_args(argv)
    counts = (1, 4) if args.quick else (1, 4, 16)
    repeat = 1 if args.quick else 3
    model = _cnn()
    weights = sum(len(t.raw_data) for t in model.graph.initializer
                  if len(t.raw_data) >= SHARED_MIN_BYTES)
    registries = load_registries()
    work = Path(tempfile.mkdtemp(prefix="aicc-spec-bench-"))
    try:
        compile_model(CompileRequest(model=model, symbols=["batch=1", "height=8", "width=8"]),
                      registries)  # warm-up: imports, onnxruntime start-up
        rows = [measure(model, n, work, registries, repeat) for n in counts]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"dynamic CNN (128 channels, 1000 classes): {weights / 1e6:.2f} MB of weights; "
          f"best of {repeat}")
    print(f"{'specs':>5} {'cpu s':>8} {'s/spec':>7} {'interp s':>9} {'s/spec':>7} "
          f"{'container MB':>13} {'peer s':>8} {'peer MB':>8} {'size vs peer':>13}")
    for r in rows:
        print(f"{r['n']:>5} {r['time']:>8.3f} {r['time'] / r['n']:>7.3f} {r['interp']:>9.3f} "
              f"{r['interp'] / r['n']:>7.3f} {r['size'] / 1e6:>13.3f} {r['peer_time']:>8.3f} "
              f"{r['peer_size'] / 1e6:>8.3f} {r['size'] / r['peer_size']:>12.2f}x")
    first, last = rows[0], rows[-1]
    per_spec = (last["interp"] / last["n"]) / (first["interp"] / first["n"])
    cpu_per_spec = (last["time"] / last["n"]) / (first["time"] / first["n"])
    added = (last["size"] - first["size"]) / (last["n"] - first["n"])
    peer_added = (last["peer_size"] - first["peer_size"]) / (last["n"] - first["n"])
    ok_time = per_spec <= TIME_TARGET
    ok_size = added <= SIZE_TARGET * weights
    print(f"time per specialization at N={last['n']} vs N=1 (interpreter): {per_spec:.2f}x "
          f"(target <= {TIME_TARGET}x): {'ok' if ok_time else 'MISSED'}; on cpu: "
          f"{cpu_per_spec:.2f}x (onnxruntime sessions, see the module docstring)")
    print(f"bytes added per extra specialization: {added / 1e3:.1f} kB = "
          f"{100 * added / weights:.1f}% of one weight copy (target <= {100 * SIZE_TARGET:.0f}%; "
          f"separate containers add "
          f"{100 * peer_added / weights:.0f}%): {'ok' if ok_size else 'MISSED'}")
    return 0 if ok_time and ok_size else 1


if __name__ == "__main__":
    sys.exit(main())
