"""Resize in an fp16 program runs on aic100: its roi and scales inputs are float32 by ONNX's type
rules whatever the data's type, and are parameters the planner reads, not float32 arithmetic.
(Before, the AIC100's precision check refused every Resize with scales after -convert-to-fp16.)"""

from __future__ import annotations

import pytest

from onnx_node_cases import FP16_PIPELINE, fp16_close, op_list_cases, run_public


@pytest.mark.parametrize("name", ["test_resize_upsample_scales_linear",
                                  "test_resize_downsample_scales_cubic",
                                  "test_resize_upsample_scales_nearest"])
def test_resize_with_float32_scales_runs_in_fp16_on_aic100(name, tmp_path):
    cases = op_list_cases("aic100")
    assert name in cases, f"aic100 no longer claims every op of {name}"
    run_public(cases[name], "aic100", pipeline=FP16_PIPELINE, compare=fp16_close,
               folder=tmp_path)
