"""What keeping QDQ unfused costs on the ``cpu`` backend: onnxruntime's fused integer kernels vs
the float path (``quantized_kernels=float``), same QDQ models, same inputs, same run.

On x86 CPUs without VNNI, ``quantized_kernels=auto`` picks the float path because onnxruntime's
u8s8 integer kernels saturate there (see ``backends/_cpu_quant.py``); on CPUs with VNNI it keeps
the integer kernels. This script measures both paths on whatever CPU it runs on and prints the
ratio, so the price of the guarantee is known: run it on a VNNI machine to see what a saturating
machine gives up (there the integer path is not an option: its answers are wrong), and on a
non-VNNI machine to see the float path against the (wrong) integer one.

Workloads (QDQ models written by ``aicc.quantization.quantize_model``, int8 per-channel):

* ``digits``: the bundled example at batch 1 and batch 64;
* ``resnet18-64``: a ResNet-18-shaped CNN (random weights, the builder of
  ``benchmarks/interpreter.py``) at 1x3x64x64, calibrated on 8 synthetic samples.

For each, the median of ``--repeat`` timed runs (after warm-up) per path, one intra-op thread
each (``--threads``), and the largest output difference between the paths in quantization steps
of the output's encoding is reported (0-1 on a VNNI machine; large where integer saturates).

    .venv/bin/python benchmarks/cpu_quantized.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _digits_samples() -> list[dict[str, np.ndarray]]:
    folder = EXAMPLES / "data" / "digits_calib"
    return [{"image": np.fromfile(folder / f"sample_{i:02d}.raw", "<f4").reshape(1, 1, 8, 8)}
            for i in range(32)]


def _quantize(model, samples) -> onnx.ModelProto:
    from aicc.quantization import quantize_model
    qmodel, _ = quantize_model(model, samples=samples, per_channel=True, progress=False)
    return qmodel


def _resnet() -> onnx.ModelProto:
    spec = importlib.util.spec_from_file_location("aicc_bench_interpreter",
                                                  ROOT / "benchmarks" / "interpreter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_resnet18(size=64, classes=100)


def workloads(quick: bool) -> list[tuple[str, onnx.ModelProto, dict[str, np.ndarray]]]:
    out = []
    digits = onnx.load(EXAMPLES / "digits_mobilenet.onnx")
    test = np.load(EXAMPLES / "data" / "digits_test_images.npy")
    q = _quantize(digits, _digits_samples())     # the batch dimension stays symbolic
    for batch in (1, 64):
        out.append((f"digits b{batch}", q, {"image": test[:batch]}))
    if not quick:
        rng = np.random.default_rng(0)
        samples = [{"input": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)}
                   for _ in range(8)]
        q = _quantize(_resnet(), samples)
        out.append(("resnet18-64", q, {"input": samples[0]["input"]}))
    return out


def _session(model: onnx.ModelProto, kernels: str, threads: int):
    """An aicc ``cpu`` executable; "integer" forces onnxruntime's fused path (as before
    issue 13), "float" is ``quantized_kernels=float``."""
    from aicc.backends.cpu import CpuBackend
    if kernels == "integer":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"]).run
    backend = CpuBackend(CpuBackend.Options(threads=threads, quantized_kernels="float"))
    exe = backend.compile(model, program_meta={}, spec_options={})

    def run(_names, feeds):
        return list(exe.run(feeds).values())
    return run


def _time(run, feeds, repeat: int) -> float:
    for _ in range(3):
        run(None, feeds)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(None, feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _output_step(model: onnx.ModelProto) -> float:
    """Scale of the QuantizeLinear feeding the last DequantizeLinear before the output, else 0."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    scales = [float(np.max(inits[n.input[1]])) for n in model.graph.node
              if n.op_type == "QuantizeLinear" and n.input[1] in inits]
    return scales[-1] if scales else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only, fewer repetitions")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per session")
    parser.add_argument("--repeat", type=int, default=0, help="timed runs (default 200/50)")
    args = parser.parse_args(argv)
    from aicc.backends._cpu_quant import u8s8_saturates
    saturates = u8s8_saturates()
    print(f"onnxruntime's u8s8 integer kernels on this CPU: "
          f"{'SATURATE (auto picks float)' if saturates else 'exact (auto keeps integer)'}")
    print(f"  {'workload':14s} {'integer ms':>11s} {'float ms':>9s} {'float/int':>9s} "
          f"{'max diff (steps)':>16s}")
    for name, model, feeds in workloads(args.quick):
        repeat = args.repeat or (50 if args.quick or "resnet" in name else 200)
        runs = {k: _session(model, k, args.threads) for k in ("integer", "float")}
        ms = {k: _time(r, feeds, repeat) * 1e3 for k, r in runs.items()}
        outs = {k: r(None, feeds)[0] for k, r in runs.items()}
        step = _output_step(model)
        diff = float(np.max(np.abs(outs["integer"] - outs["float"])))
        steps = f"{diff / step:.1f}" if step else f"{diff:.3g} (abs)"
        print(f"  {name:14s} {ms['integer']:11.3f} {ms['float']:9.3f} "
              f"{ms['float'] / ms['integer']:8.2f}x {steps:>16s}")
    print("float/int > 1: the float path is that much slower than onnxruntime's integer kernels.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
