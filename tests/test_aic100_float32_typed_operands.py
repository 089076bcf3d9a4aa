"""Operands that ONNX types float32 whatever the data's type do not make an fp16 program "compute
in float32" on aic100: Resize's roi and scales (parameters the planner reads) and
LayerNormalization's Mean/InvStdDev outputs (its ``stash_type`` is float32 or bfloat16, never
fp16; the device's fp32 accumulators hold them). Before, the AIC100's precision check refused
every such Resize and LayerNormalization after -convert-to-fp16."""

from __future__ import annotations

import pytest

from onnx_node_cases import FP16_PIPELINE, fp16_close, op_list_cases, run_public


@pytest.mark.parametrize("name", ["test_layer_normalization_2d_axis1",
                                  "test_layer_normalization_4d_axis_negative_1"])
def test_layernorm_statistics_run_in_fp16_on_aic100(name, tmp_path):
    cases = op_list_cases("aic100")
    assert name in cases, f"aic100 no longer claims every op of {name}"
    run_public(cases[name], "aic100", pipeline=FP16_PIPELINE, compare=fp16_close,
               folder=tmp_path)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_with_constant_float32_scales_runs_in_fp16_on_aic100(mode, tmp_path):
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from aicc import load
    from aicc.compiler import CompileRequest, compile_model

    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode=mode)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    path, _, _ = compile_model(CompileRequest(model=model, backend="aic100",
                                              pipeline=FP16_PIPELINE,
                                              output=tmp_path / "r.qpc"))
    got = load(path).run({"x": x})["y"]
    # fp16 inputs and arithmetic: within 8 fp16 ulps of the output's scale (onnx_node_cases)
    np.testing.assert_allclose(got, ref, rtol=0, atol=8 * 2.0**-10 * np.abs(ref).max())
