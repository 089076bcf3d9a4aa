"""Simulated AIC100 benchmark: a ResNet-50-shaped int8 model in, simulated throughput beside the
published MLPerf figures out.

For batch 1 and 8 on 1, 4, 8, 14 and 16 cores of a Cloud AI 100 Pro (the 14-core row also on a
Standard card) it prints the simulated samples per second of one activation, of the whole card
(as many activations as the card has room for: 16 // cores, how qaic-runner's ``-a`` fills a
card), the published MLPerf Inference ResNet-50 Offline figure beside it and their ratio, the
plan (data-parallel activations x data-parallel groups x cores per group), and the simulator's
own wall time per simulated inference: the cost model alone, and with ``--execute`` the int8
numerics too (numpy; slow at full size). ``benchmarks/aic100_fidelity.py`` fits the cost model
to the published figures and checks it on held-out ones.

Published figures (MLPerf Inference, ResNet-50 Offline, one card): about 22,700 samples/s in
v1.1 (Cloud AI 100, 2021) and about 23,900 samples/s per Pro card in v3.0 (2023).

The model is ResNet-50 v1.5 at 224x224 (4.1 GMAC, 25.5 M parameters) with random weights in QDQ
form, int8 input (benchmark submissions feed preprocessed, quantized images) and
``-multicast-weights``. ``--quick`` uses 112x112 images.

The numerics run with one BLAS thread (set here before numpy loads, unless the environment says
otherwise): the per-core pieces are small matrix products, which several BLAS threads slow down.

Run: ``.venv/bin/python benchmarks/aic100.py [--execute] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from aicc.backends.aic100 import Aic100Backend  # noqa: E402
from aicc.backends.aic100.hardware import load_hardware  # noqa: E402
from aicc.backends.aic100.profile import band_text  # noqa: E402
from aicc.backends.aic100.workloads import resnet50  # noqa: E402

__all__ = ["main", "MLPERF"]

#: MLPerf Inference ResNet-50 Offline, samples/s of one card
MLPERF = {"v1.1 Cloud AI 100": 22_700, "v3.0 Cloud AI 100 Pro": 23_900}
CORES = (1, 4, 8, 14, 16)


def _compile(model, cores: int, sku: str, activations: int = 1):
    backend = Aic100Backend(Aic100Backend.Options(
        num_cores=cores, sku=sku, multicast_weights=True, activations=activations))
    return backend.compile(model, program_meta={}, spec_options={})


def _row(model, batch: int, cores: int, sku: str, execute: bool, reference: int) -> str:
    t0 = time.perf_counter()
    exe = _compile(model, cores, sku)
    compile_s = time.perf_counter() - t0
    card = 16 if sku == "pro" else 14
    acts = card // cores
    t0 = time.perf_counter()
    full = exe.plan.evaluate(acts)
    cost_s = time.perf_counter() - t0
    one = exe.cost.inferences_per_s * batch
    whole = full.inferences_per_s * batch
    wall = f"cost {cost_s * 1e3:6.2f} ms"
    if execute:
        feeds = {"image": np.random.default_rng(0).integers(-60, 60, exe.plan.low.tensors[
            "image"].shape).astype(np.int8)}
        t0 = time.perf_counter()
        exe.run(feeds)
        wall += f", numerics {(time.perf_counter() - t0) * 1e3:8.1f} ms"
    plan = f"{exe.plan.copies}x{exe.plan.groups}x{exe.plan.cores}"
    return (f"{batch:>5} {sku:>8} {cores:>5} {plan:>8} {one:>10,.0f} {acts:>4} {whole:>10,.0f} "
            f"{reference:>8,} {whole / reference:>6.2f} {exe.cost.latency_s * 1e3:>8.3f} "
            f"{compile_s:>6.2f} s   {wall} / inference")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execute", action="store_true",
                        help="also run the int8 numerics once per row (slow at full size)")
    parser.add_argument("--quick", action="store_true", help="112x112 images")
    args = parser.parse_args(argv)
    image = 112 if args.quick else 224
    print(f"ResNet-50-shaped int8 (QDQ, int8 input, {image}x{image}), simulated Cloud AI 100, "
          "-multicast-weights; MLPerf: ResNet-50 Offline samples/s per card")
    print("  (samples/s = simulated inferences/s x batch; 'card' = activations x cores filling "
          "the card; ratio = card / MLPerf; plan = copies x groups x cores)")
    print(f"  every samples/s figure: {band_text(load_hardware('2.0', 'standard'))}")
    header = (f"{'batch':>5} {'sku':>8} {'cores':>5} {'plan':>8} {'1 act':>10} {'acts':>4} "
              f"{'card':>10} {'MLPerf':>8} {'ratio':>6} {'lat ms':>8} {'compile':>8}   "
              "simulator wall time")
    print(header)
    print("-" * len(header))
    for batch in (1, 8):
        model = resnet50(batch=batch, image=image, precision="int8", int8_input=True)
        for cores in CORES:
            print(_row(model, batch, cores, "pro", args.execute, MLPERF["v3.0 Cloud AI 100 Pro"]))
            sys.stdout.flush()
        print(_row(model, batch, 14, "standard", args.execute, MLPERF["v1.1 Cloud AI 100"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
