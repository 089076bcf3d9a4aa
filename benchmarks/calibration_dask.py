"""Sharded calibration on Dask: samples/s in one process and on local clusters of 1 and 2 worker
processes, the size of a partial profile, and a cost model of calibrating 10 million samples on
100 workers built from those measurements.

Model: PP-OCRv4 recognition (rapidocr-onnxruntime 1.4.4, ``ch_PP-OCRv4_rec_infer.onnx``, input
1x3x48x320) from the zoo cache (``~/.cache/aicc-zoo``, or ``--model PATH``); samples are random
images (calibration time does not depend on the pixel values). Engine ``cpu`` (onnxruntime, every
float tensor observed). The same profile comes out of every configuration (checked). Run::

    .venv/bin/python benchmarks/calibration_dask.py [--samples 128] [--model PATH]

On a 2-core machine shared with other work, the 2-worker rate is bounded by the cores left over;
the projection uses the 1-worker per-sample time, which is what one more worker adds.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import pickle
import time
from pathlib import Path

import numpy as np

ZOO = Path.home() / ".cache" / "aicc-zoo" / "models"
PATTERN = "rapidocr_onnxruntime-*/rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
SHAPE = (1, 3, 48, 320)


def _program(path: str):
    from aicc import ir
    from aicc.pipeline import Pipeline, run_pipeline
    from aicc.plugins import load_registries
    from aicc.program import Program

    regs = load_registries()
    steps = [("input-shape", {"shapes": [f"x={','.join(map(str, SHAPE))}"]}),
             ("fold-constants", {}), ("fold-batchnorm", {})]
    pipeline = Pipeline.build(steps, regs.passes, source="benchmark")
    return run_pipeline(pipeline, Program.from_model(ir.load_model(path)), registries=regs)


def _samples(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.uniform(-1, 1, SHAPE).astype(np.float32)} for _ in range(n)]


def _sharded(program, feeds, workers: int):
    import distributed

    from aicc.passes.quantization.dask_shards import _shrink, array_items, calibrate_sharded, run_shard
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    with distributed.Client(cluster) as client:
        # warm-up: every worker loads the model once (as it would for the first shard)
        calibrate_sharded(program, array_items(feeds[:workers * 2]), client, total=2 * workers,
                          num_bins=512, engine="cpu", shard_size=1, progress=False)
        t0 = time.perf_counter()
        profile = calibrate_sharded(program, array_items(feeds), client, total=len(feeds),
                                    num_bins=512, engine="cpu", shard_size=64, progress=False)
        elapsed = time.perf_counter() - t0
        mem = [w["metrics"]["memory"] for w in client.scheduler_info()["workers"].values()]
    cluster.close()
    del _shrink, run_shard
    return profile, elapsed, max(mem)


def _partial_size(program, feeds) -> int:
    from aicc.passes.quantization.dask_shards import _payload, run_shard
    import hashlib
    part = run_shard(_payload(program), hashlib.sha256(b"bench").hexdigest(), 0, 
                     [("arrays", None, f) for f in feeds[:8]],
                     {"num_bins": 512, "batch": 0, "engine": "cpu"})
    return len(pickle.dumps(part, protocol=5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    model = args.model or next(iter(sorted(glob.glob(str(ZOO / PATTERN)))), None)
    if model is None:
        raise SystemExit("PP-OCRv4 rec not found: pip download --no-deps "
                         "rapidocr-onnxruntime==1.4.4 and unpack it under ~/.cache/aicc-zoo/"
                         "models, or pass --model")
    from aicc.passes.quantization.runner import calibrate_program
    from aicc.quant import dump_profile_yaml

    program = _program(model)
    feeds = _samples(args.samples)
    calibrate_program(program, feeds[:2], engine="cpu", progress=False)     # warm-up
    t0 = time.perf_counter()
    one = calibrate_program(program, feeds, engine="cpu", progress=False)
    t_one = time.perf_counter() - t0
    rows = [("1 process", t_one, None)]
    for workers in (1, 2):
        prof, t, mem = _sharded(program, feeds, workers)
        assert dump_profile_yaml(prof) == dump_profile_yaml(one), "profiles differ"
        rows.append((f"dask local:{workers}", t, mem))
    n = len(feeds)
    print(f"model {Path(model).name} {SHAPE}, {n} samples, {len(one.tensors)} tensors, "
          f"engine cpu, {os.cpu_count()} cores")
    for label, t, mem in rows:
        extra = f", worker memory {mem / 2**20:.0f} MiB" if mem else ""
        print(f"  {label:<14} {n / t:7.1f} samples/s ({t:.2f} s){extra}")
    print("  profiles: identical in all three runs")
    part = _partial_size(program, feeds)
    yaml_size = len(dump_profile_yaml(one))
    _cost_model(per_sample=rows[1][1] / n, partial=part,
                profile_yaml=yaml_size, model_bytes=os.path.getsize(model),
                worker_mem=rows[1][2] or 0, sample_bytes=int(np.prod(SHAPE)) * 4)


def _cost_model(*, per_sample: float, partial: int, profile_yaml: int, model_bytes: int,
                worker_mem: int, sample_bytes: int) -> None:
    """10 million samples on 100 workers, from the measured numbers (assumptions printed)."""
    from aicc.passes.quantization.dask_shards import default_shard_size
    samples, workers = 10_000_000, 100
    shard = default_shard_size(samples, workers)
    shards = math.ceil(samples / shard)
    compute = samples * per_sample / workers
    results = shards * partial
    print("\ncost model: 10,000,000 samples on 100 workers (one core each, this CPU)")
    print(f"  measured: {per_sample * 1e3:.1f} ms per sample per worker; partial profile "
          f"{partial / 2**20:.2f} MiB pickled (exact lattice counts, smallest int type); "
          f"final profile YAML {profile_yaml / 2**20:.2f} MiB")
    print(f"  shards: {shards} of {shard} samples (default: ~4 per worker, at most 4096)")
    print(f"  time: {compute / 3600:.2f} h of compute per worker "
          f"(10M x {per_sample * 1e3:.1f} ms / 100); per-shard scheduling (~ms) and the "
          f"client's merges ({shards} x ~{partial / 2**20 * 5:.0f} ms) are negligible")
    print(f"  network, partial profiles: {shards} x {partial / 2**20:.2f} MiB = "
          f"{results / 2**30:.1f} GiB into the client over {compute / 3600:.2f} h "
          f"({results / compute / 2**20:.2f} MiB/s)")
    print(f"  network, model: {workers} x {model_bytes / 2**20:.1f} MiB = "
          f"{workers * model_bytes / 2**30:.2f} GiB once")
    print(f"  network, data: {samples * sample_bytes / 2**40:.2f} TiB of samples either way "
          f"(read by path from the shared filesystem, or --dask-ship-data through the client, "
          f"whose link then needs {samples * sample_bytes / compute / 2**20:.0f} MiB/s)")
    print(f"  memory per worker: {worker_mem / 2**20:.0f} MiB measured (model, onnxruntime "
          f"session, observers, one shard of {shard} samples x {sample_bytes / 2**10:.0f} KiB "
          f"= {shard * sample_bytes / 2**20:.0f} MiB if shipped); does not grow with samples")


if __name__ == "__main__":
    main()
