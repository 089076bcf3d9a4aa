"""The facts the quantization passes share through the pipeline's analysis cache
(``aicc.analyses``): what calibration measured, what AdaRound learned, and the samples and Dask
client a Python caller provides (``run_pipeline(..., provided={CALIBRATION_SAMPLES: ...})``)."""

from __future__ import annotations

from aicc.analyses import Analysis

__all__ = ["CALIBRATION_SAMPLES", "ADAROUND_SAMPLES", "DASK_CLIENT", "CALIBRATION_PROFILE",
           "ADAROUND_ROUNDING", "BIAS_CORRECTION", "QUANTIZE_OPTIONS"]

#: an iterable of feed dicts (the Python API's calibration samples)
CALIBRATION_SAMPLES = Analysis("calibration samples", program_bound=False)
#: samples for AdaRound only (a config's dataset); else calibration's
ADAROUND_SAMPLES = Analysis("adaround samples", program_bound=False)
#: a ``distributed.Client`` (or address) the Python API calibrates on
DASK_CLIENT = Analysis("dask client", program_bound=False)
#: the profile ``calibrate`` measured, which ``quantize`` uses (valid for the graph measured)
CALIBRATION_PROFILE = Analysis("calibration profile")
#: the ``AdaRounder`` whose learned roundings ``quantize`` applies
ADAROUND_ROUNDING = Analysis("adaround rounding")
#: the ``BiasCorrector`` (``bias-correction``) whose bias shifts ``quantize`` applies
BIAS_CORRECTION = Analysis("bias correction")
#: the options of the ``quantize`` step that reads this run's calibration (a mapping, as given
#: to that pass): ``calibrate`` with ``only_quantized`` observes only what they encode
QUANTIZE_OPTIONS = Analysis("quantize options", program_bound=False)
