"""Smoke tests of benchmarks/compile_scaling.py: its graph builder at a tiny size, the compile of
that graph through aicc against onnxruntime on the original, and one pass of its report.

Nothing here asserts on wall time.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import aicc
from aicc.compiler import CompileRequest, compile_model
from spec_helpers import script_module

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "compile_scaling.py"


@pytest.fixture(scope="module")
def bench():
    with script_module(BENCHMARK, "compile_scaling") as module:
        yield module


@pytest.fixture(scope="module")
def model(bench) -> onnx.ModelProto:
    return bench.build_cnn(200)


def _feeds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input": rng.standard_normal((1, 4, 4, 4)).astype(np.float32)}


def test_builder_makes_a_valid_model_of_the_asked_size(bench, model):
    onnx.checker.check_model(model, full_check=True)
    assert len(model.graph.node) == 12 * bench.NODES_PER_BLOCK == 192
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "BatchNormalization", "Relu", "Clip", "Add", "Reshape", "Shape",
            "Concat"} <= ops
    assert model.ByteSize() < 200_000  # weights stay tiny
    # Sizes scale: ~1k nodes is ~1k nodes.
    assert abs(len(bench.build_cnn(1000).graph.node) - 1000) < bench.NODES_PER_BLOCK


def test_compile_preserves_outputs_and_folds(model, tmp_path):
    reference = ort.InferenceSession(model.SerializeToString(),
                                     providers=["CPUExecutionProvider"])
    path, program, _ = compile_model(CompileRequest(model=model, backend="cpu",
                                                    output=tmp_path / "cnn.qpc"))
    ops = [n.op for n in program.graphs["default"].nodes]
    for gone in ("BatchNormalization", "Shape", "Concat", "Sqrt", "Div"):
        assert gone not in ops, f"{gone} was not folded"
    assert len(ops) == 12 * 8
    assert ops.count("Clip") == 6  # the activations of the even blocks; the scales' Clips fold
    session = aicc.load(path)
    out_name = model.graph.output[0].name
    for seed in range(3):
        feeds = _feeds(seed)
        want = reference.run([out_name], feeds)[0]
        got = session.run(feeds)[out_name]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_compile_with_public_api(model, tmp_path):
    qpc = aicc.compile(model, backend="cpu", output=tmp_path / "api.qpc")
    out_name = model.graph.output[0].name
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run([out_name], _feeds())[0]
    np.testing.assert_allclose(aicc.load(qpc).run(_feeds())[out_name], want,
                               rtol=1e-4, atol=1e-5)


def test_report_runs_at_tiny_sizes(bench):
    registries = bench.bench_registries()
    rows = [bench.measure(n, 1, 1, registries) for n in (60, 120)]
    assert [r.nodes for r in rows] == [4 * bench.NODES_PER_BLOCK, 8 * bench.NODES_PER_BLOCK]
    assert set(rows[0].aicc.passes) == {"fold-constants", "fold-batchnorm", "cleanup"}
    assert rows[0].aicc.nodes_after == 4 * 8
    out = io.StringIO()
    ratio = bench.print_report(rows, out)
    text = out.getvalue()
    assert "scaling ratio" in text and "ms per 1k nodes" in text and "verdict" in text
    assert ratio > 0


def test_cpu_quantized_benchmark_prints_the_ratio(capsys):
    """benchmarks/cpu_quantized.py (issue 13): both paths run on the example and their outputs
    differ by at most one quantization step on this CPU when its integer kernels are exact."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "cpu_quantized.py"
    with script_module(path, "cpu_quantized_bench") as module:
        assert module.main(["--quick", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("digits")]
    assert len(rows) == 2 and all(r[-2].endswith("x") for r in rows)
    from aicc.backends._cpu_quant import u8s8_saturates
    if not u8s8_saturates():
        assert all(float(r[-1]) <= 1.0 for r in rows)


CALIBRATION_DASK = BENCHMARK.with_name("calibration_dask.py")


def test_calibration_dask_takes_the_model_from_aicc_zoo_cache(tmp_path, monkeypatch):
    """The zoo cache is ``$AICC_ZOO_CACHE`` (as for benchmarks/zoo.py), not always ~/.cache."""
    with script_module(CALIBRATION_DASK, "calibration_dask") as bench:
        spec = bench.SPEC
        model = tmp_path / "models" / spec.wheel.stem / spec.member
        model.parent.mkdir(parents=True)
        model.write_bytes(b"")
        monkeypatch.setenv("AICC_ZOO_CACHE", str(tmp_path))
        assert bench._model(None) == str(model)
        assert bench._model("other.onnx") == "other.onnx"


def test_calibration_dask_prints_the_merge_cost_it_measured(capsys):
    """The cost model's merge and scheduling lines use the measured times given, labelled so;
    nothing in it is an assumed figure ("~")."""
    with script_module(CALIBRATION_DASK, "calibration_dask") as bench:
        bench._cost_model(per_sample=0.02, partial=3 << 20, merge=0.0042, task=0.0017,
                          model_bytes=10 << 20, worker_mem=300 << 20, sample_bytes=184320)
    text = capsys.readouterr().out
    assert "x 4.2 ms measured" in text and "x 1.70 ms measured per task" in text
    assert "~" not in text.replace("~4 per worker", "") and "negligible" not in text
