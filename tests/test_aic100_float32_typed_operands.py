"""Operands that ONNX types float32 whatever the data's type do not make an fp16 program "compute
in float32" on aic100: Resize's roi and scales (parameters the planner reads) and
LayerNormalization's Mean/InvStdDev outputs (its ``stash_type`` is float32 or bfloat16, never
fp16; the device's fp32 accumulators hold them). Before, the AIC100's precision check refused
every such Resize and LayerNormalization after -convert-to-fp16."""

from __future__ import annotations

import pytest

from onnx_node_cases import FP16_PIPELINE, fp16_close, op_list_cases, run_public


@pytest.mark.parametrize("name", ["test_resize_upsample_scales_linear",
                                  "test_resize_downsample_scales_cubic",
                                  "test_resize_upsample_scales_nearest",
                                  "test_layer_normalization_2d_axis1",
                                  "test_layer_normalization_4d_axis_negative_1"])
def test_float32_typed_operands_run_in_fp16_on_aic100(name, tmp_path):
    cases = op_list_cases("aic100")
    assert name in cases, f"aic100 no longer claims every op of {name}"
    run_public(cases[name], "aic100", pipeline=FP16_PIPELINE, compare=fp16_close,
               folder=tmp_path)
