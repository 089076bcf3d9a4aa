"""Sharded calibration on Dask: samples/s in one process and on local clusters of 1 and 2 worker
processes, the size of a partial profile, the client's cost of receiving and merging one, the
scheduler's cost of one task, and a cost model of calibrating 10 million samples on 100 workers
computed from those measurements.

Model: PP-OCRv4 recognition (``ocr-rec`` of the zoo, ``benchmarks/zoo_lib.py``: rapidocr-onnxruntime
1.4.4, ``ch_PP-OCRv4_rec_infer.onnx``, input 1x3x48x320) from the zoo cache (``$AICC_ZOO_CACHE``,
default ``~/.cache/aicc-zoo``; fetched there like ``make zoo`` does when missing), or
``--model PATH``; samples are random images (calibration time does not depend on the pixel
values). Engine ``cpu`` (onnxruntime, every float tensor observed). The same profile comes out of
every configuration (checked). Run::

    .venv/bin/python benchmarks/calibration_dask.py [--samples 128] [--model PATH]

Every number printed under "measured" was timed or sized in this run; the lines under "model" are
arithmetic on those numbers with the assumptions stated beside them (linear scaling over workers,
the local cluster's per-task overhead). On a 2-core machine shared with other work, the 2-worker
rate is bounded by the cores left over; the projection uses the 1-worker per-sample time, which is
what one more worker adds.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))   # zoo_lib.py sits beside this file
import zoo_lib  # noqa: E402

SPEC = zoo_lib.BY_KEY["ocr-rec"]
SHAPE = SPEC.inputs["x"][0]
#: trivial tasks timed to measure the scheduler's per-task cost (submit to result, in order)
NOOP_TASKS = 200
#: partial profiles received and merged to time the client's share of a shard
MERGES = 20


def _model(arg: str | None) -> str:
    if arg:
        return arg
    try:
        return str(zoo_lib.model_path(SPEC))
    except (OSError, RuntimeError) as e:
        raise SystemExit(f"PP-OCRv4 rec not in the zoo cache {zoo_lib.cache_dir()} and not "
                         f"fetched ({e}); set ${zoo_lib.CACHE_ENV} or pass --model") from None


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


def _task_overhead(client) -> float:
    """Seconds per trivial task, submitted and collected one after another (measured)."""
    client.submit(abs, -1, pure=False).result()         # connections warm
    t0 = time.perf_counter()
    for i in range(NOOP_TASKS):
        client.submit(abs, -i, pure=False).result()
    return (time.perf_counter() - t0) / NOOP_TASKS


def _sharded(program, feeds, workers: int):
    """(profile, seconds, largest worker memory in bytes, seconds per trivial task)."""
    import distributed

    from aicc.passes.quantization.dask_shards import array_items, calibrate_sharded
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
        overhead = _task_overhead(client)
    cluster.close()
    return profile, elapsed, max(mem), overhead


def _partial(program, feeds) -> tuple[int, float]:
    """(bytes of one pickled partial profile, seconds for the client to unpickle and merge one),
    both measured on a partial of 8 samples: a partial holds fixed-size lattice counts per
    tensor, so its size and merge time barely depend on how many samples the shard had."""
    from aicc.passes.quantization.dask_shards import _Merger, _payload, run_shard
    part = run_shard(_payload(program), hashlib.sha256(b"bench").hexdigest(), 0,
                     [("arrays", None, f) for f in feeds[:8]],
                     {"num_bins": 512, "batch": 0, "engine": "cpu"})
    blob = pickle.dumps(part, protocol=5)
    merger = _Merger()
    merger.add(pickle.loads(blob))                       # the first shard is adopted, not merged
    t0 = time.perf_counter()
    for _ in range(MERGES):
        merger.add(pickle.loads(blob))
    return len(blob), (time.perf_counter() - t0) / MERGES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    model = _model(args.model)
    from aicc.passes.quantization.runner import calibrate_program
    from aicc.quant import dump_profile_yaml

    program = _program(model)
    feeds = _samples(args.samples)
    calibrate_program(program, feeds[:2], engine="cpu", progress=False)     # warm-up
    t0 = time.perf_counter()
    one = calibrate_program(program, feeds, engine="cpu", progress=False)
    rows = [("1 process", time.perf_counter() - t0, None)]
    overhead = {}
    for workers in (1, 2):
        prof, t, mem, overhead[workers] = _sharded(program, feeds, workers)
        assert dump_profile_yaml(prof) == dump_profile_yaml(one), "profiles differ"
        rows.append((f"dask local:{workers}", t, mem))
    n = len(feeds)
    print(f"model {Path(model).name} {SHAPE}, {n} samples, {len(one.tensors)} tensors, "
          f"engine cpu, {os.cpu_count()} cores")
    print("measured:")
    for label, t, mem in rows:
        extra = f", worker memory {mem / 2**20:.0f} MiB after the run" if mem else ""
        print(f"  {label:<14} {n / t:7.1f} samples/s ({t:.2f} s){extra}")
    print("  profiles: identical in all three runs")
    partial, merge = _partial(program, feeds)
    print(f"  partial profile: {partial / 2**20:.2f} MiB pickled (exact lattice counts, smallest "
          f"int type); the client unpickles and merges one in {merge * 1e3:.1f} ms "
          f"(mean of {MERGES})")
    print(f"  scheduler: {overhead[1] * 1e3:.2f} ms per trivial task on local:1, "
          f"{overhead[2] * 1e3:.2f} ms on local:2 (submit to result, {NOOP_TASKS} in a row)")
    yaml_size = len(dump_profile_yaml(one))
    print(f"  final profile YAML {yaml_size / 2**20:.2f} MiB")
    _cost_model(per_sample=rows[1][1] / n, partial=partial, merge=merge,
                task=max(overhead.values()), model_bytes=os.path.getsize(model),
                worker_mem=rows[1][2] or 0, sample_bytes=int(np.prod(SHAPE)) * 4)


def _cost_model(*, per_sample: float, partial: int, merge: float, task: float,
                model_bytes: int, worker_mem: int, sample_bytes: int) -> None:
    """10 million samples on 100 workers: arithmetic on the measured numbers, assumptions
    printed beside each line."""
    from aicc.passes.quantization.dask_shards import default_shard_size
    samples, workers = 10_000_000, 100
    shard = default_shard_size(samples, workers)
    shards = math.ceil(samples / shard)
    compute = samples * per_sample / workers
    print("\nmodel: 10,000,000 samples on 100 workers (one core each like this CPU; assumes "
          "the 1-worker rate scales linearly)")
    print(f"  shards: {shards} of {shard} samples (default_shard_size: ~4 per worker, at most "
          "4096)")
    print(f"  compute: {compute / 3600:.2f} h per worker (10M x {per_sample * 1e3:.1f} ms "
          f"measured / 100)")
    client = shards * merge
    print(f"  client merges: {shards} x {merge * 1e3:.1f} ms measured = {client:.1f} s in total, "
          f"{client / compute:.2%} of the compute time (overlapping it)")
    print(f"  scheduling: {shards} x {task * 1e3:.2f} ms measured per task on a local cluster = "
          f"{shards * task:.1f} s (a remote scheduler adds its network round trip per shard)")
    results = shards * partial
    print(f"  network, partial profiles: {shards} x {partial / 2**20:.2f} MiB = "
          f"{results / 2**30:.1f} GiB into the client over {compute / 3600:.2f} h "
          f"({results / compute / 2**20:.2f} MiB/s)")
    print(f"  network, model: {workers} x {model_bytes / 2**20:.1f} MiB = "
          f"{workers * model_bytes / 2**30:.2f} GiB once")
    print(f"  network, data: {samples * sample_bytes / 2**40:.2f} TiB of samples either way "
          f"(read by path from the shared filesystem, or --dask-ship-data through the client, "
          f"whose link then needs {samples * sample_bytes / compute / 2**20:.0f} MiB/s)")
    print(f"  memory per worker: {worker_mem / 2**20:.0f} MiB as measured on local:1 (model, "
          f"onnxruntime session, observers), plus one shard of {shard} x "
          f"{sample_bytes / 2**10:.0f} KiB = {shard * sample_bytes / 2**20:.0f} MiB if shipped; "
          "observers have a fixed size, so it does not grow with the sample count")


if __name__ == "__main__":
    main()
