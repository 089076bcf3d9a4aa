"""``cle`` on the example model and a badly balanced copy of it, under simulated int8, and through
the CLI.

int8 is simulated by the evaluation harness in benchmarks/cle.py (QDQ fake quantization with
aicc.quant encodings: per-tensor symmetric int8 weights, tf-mode uint8 activations calibrated on
examples/data/digits_calib), the same code that prints the benchmark table.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from aicc.cli import main
from aicc.pass_order import Requested
from aicc.errors import PassError
from aicc.testing import check_pass
from cle_builders import cnn, layer_ranges, run_cle

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("aicc_benchmark_cle", ROOT / "benchmarks" /
                                                  "cle.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(harness):
    images, labels = harness.test_split()
    example = onnx.load(harness.EXAMPLE_MODEL)
    return {"images": images, "labels": labels, "calib": harness.calibration_samples(),
            "example": example, "reference": harness.predict(example, images)}


def _int8(harness, data, model, per_channel=False):
    q = harness.fake_quant_model(model, data["calib"], per_channel=per_channel)
    return harness.evaluate(q, data["images"], data["labels"], data["reference"])


def _spread(model):
    return {name: float(r[0].max() / r[0].min()) for name, r in layer_ranges(model).items()}


def test_cle_example_exact_mode_preserves_while_equalizing(data):
    feeds = [{"image": data["images"][:64]}]
    after = check_pass(data["example"], "cle", feeds=feeds)
    folded, _ = run_cle(data["example"], passes=["fold-batchnorm"])
    before, now = _spread(folded.to_model()), _spread(after.to_model())
    for name in ("conv0", "dw1", "pw1", "dw2"):
        assert now[name] < before[name], (name, before[name], now[name])
    _, counters = run_cle(data["example"])
    assert counters["triplets equalized"] == 2
    assert counters["bounded relus kept exact"] == 4


def test_cle_mismatched_model_int8_recovers(harness, data):
    """Per-channel ranges spread over 1e-2..1e2 (function kept): per-tensor int8 collapses, and
    after cle it is back within 1 point of float top-1."""
    model = harness.mismatched_model(data["example"])
    float_top1, float_sqnr = harness.evaluate(model, data["images"], data["labels"],
                                              data["reference"])
    assert float_sqnr > 100                            # the same function as the example model
    broken, _ = _int8(harness, data, run_cle(model, passes=["fold-batchnorm"])[0].to_model())
    assert broken < float_top1 - 50
    fixed, _ = _int8(harness, data, run_cle(model)[0].to_model())
    assert fixed >= float_top1 - 1.0


def test_cle_mismatched_model_with_the_quantize_pass(harness, data, registries):
    """The same through aicc's own quantize pipeline (``algorithms=["cle"]``)."""
    if "quantize" not in registries.passes:
        pytest.skip("the quantize pass is not registered")
    from aicc.quantization import quantize_model
    model = harness.mismatched_model(data["example"])
    samples = [{"image": data["calib"][i:i + 1]} for i in range(len(data["calib"]))]
    float_top1, _ = harness.evaluate(model, data["images"], data["labels"], data["reference"])
    top1 = {}
    for algorithms in ((), ("cle",)):
        qdq, _ = quantize_model(model, samples=samples, algorithms=algorithms,
                                act_quantizer="tf", param_quantizer="symmetric", progress=False,
                                registries=registries)
        top1[algorithms] = harness.evaluate(qdq, data["images"], data["labels"],
                                            data["reference"])[0]
    assert top1[()] < float_top1 - 50
    assert top1[("cle",)] >= float_top1 - 1.0


def test_cle_exact_mode_keeps_the_float_function_and_replace_mode_does_not(harness, data):
    """The promise of ``relu6_mode``: exact keeps the float model's outputs (float rounding
    only), replace (ReLU6 -> Relu, the vendor's way) changes them where an activation exceeded
    6, which it does on the test images. Under int8 the two modes are then a measurement: 33.53
    vs 33.48 dB output SQNR today, too close to order (the old assertion, exact > replace, rested
    on 0.05 dB), so the documented check is that they stay within 0.5 dB of each other."""
    exact, _ = run_cle(data["example"], {"relu6_mode": "exact"})
    replace, _ = run_cle(data["example"], {"relu6_mode": "replace"})
    evaluate = harness.evaluate
    _, float_exact = evaluate(exact.to_model(), data["images"], data["labels"], data["reference"])
    _, float_replace = evaluate(replace.to_model(), data["images"], data["labels"],
                                data["reference"])
    assert float_exact > 100 and float_replace < 80, (float_exact, float_replace)
    _, sqnr_exact = _int8(harness, data, exact.to_model())
    _, sqnr_replace = _int8(harness, data, replace.to_model())
    assert abs(sqnr_exact - sqnr_replace) <= 0.5, (sqnr_exact, sqnr_replace)


# ------------------------------------------------------------------------------ CLI
def _save(model, path):
    onnx.save(model, path)
    return str(path)


def test_cle_cli_no_candidate_compiles_and_says_so(tmp_path, caplog):
    model = _save(cnn([{"out": 4, "act": "Sigmoid"}, {"out": 3}], batch=1), tmp_path / "m.onnx")
    with caplog.at_level(logging.INFO, logger="aicc.passes.equalization.cle"):
        code = main(["compile", f"-m={model}", "--passes", "cle,cleanup",
                     f"-aic-binary-dir={tmp_path / 'qpc'}", "-compile-only"])
    assert code == 0
    assert "cle: no candidate in graph 'default'" in caplog.text


def test_cle_cli_refuses_quantized_model(tmp_path, capsys):
    model = cnn([{"out": 4, "bn": False}, {"out": 3, "bn": False}], batch=1)
    graph = model.graph
    w = next(t for t in graph.initializer if t.name == "w0")
    values = numpy_helper.to_array(w)
    graph.initializer.remove(w)
    graph.initializer.extend([numpy_helper.from_array(np.round(values * 20).astype(np.int8), "q"),
                              numpy_helper.from_array(np.array(0.05, np.float32), "s")])
    graph.node.insert(0, helper.make_node("DequantizeLinear", ["q", "s"], ["w0"], name="deq"))
    path = _save(model, tmp_path / "q.onnx")
    code = main(["compile", f"-m={path}", "--passes", "cle", "-compile-only",
                 f"-aic-binary-dir={tmp_path / 'qpc'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "node 'deq' (DequantizeLinear) is quantized" in err
    assert not (tmp_path / "qpc").exists()


def test_cle_cli_options_and_listing(example_model_path, capsys):
    text = "cle{relu6_mode=replace max_iterations=7},cleanup"
    assert main(["compile", f"-m={example_model_path}", "--passes", text,
                 "--print-pipeline"]) == 0
    assert capsys.readouterr().out.strip() == text
    assert main(["passes"]) == 0
    listing = capsys.readouterr().out
    assert "cle  [plugin aicc.passes.equalization.cle" in listing
    assert "--relu6_mode" in listing and "--high_bias_absorption" in listing


def test_cle_quantized_refusal_names_graph_and_node():
    model = cnn([{"out": 4, "bn": False}, {"out": 3, "bn": False}])
    model.graph.node.append(helper.make_node("QuantizeLinear", ["a1", "s"], ["qa"], name="qout"))
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.1, np.float32), "s"))
    model.graph.output.append(helper.make_tensor_value_info("qa", onnx.TensorProto.UINT8,
                                                            [2, 3, 6, 6]))
    with pytest.raises(PassError) as info:
        run_cle(model)
    assert str(info.value).startswith("graph 'default': cle needs a float model, and node "
                                      "'qout' (QuantizeLinear) is quantized")


def test_cle_fits_the_default_pipeline_equalize_stage(registries):
    """What `aicc quantize --algorithms cle` will use: cle at stage 'equalize', after BN folding."""
    from aicc.compiler import default_pipeline
    from aicc.pipeline import Pipeline
    steps = default_pipeline(registries, requested=[Requested("cle", {"relu6_mode": "replace"})])
    names = Pipeline.build(steps, registries.passes).names()
    assert names.index("fold-batchnorm") < names.index("cle") < names.index("cleanup")
