"""Quantization passes (calibrate, quantize, quant-overrides, adaround, int32-sandwich) and
the helpers only they use: the QDQ planner and writer, the calibration runners, opset needs."""
