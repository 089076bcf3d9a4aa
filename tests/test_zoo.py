"""The smallest models of the zoo (``benchmarks/zoo_lib.py``) through every backend, compared with
onnxruntime on the original model: issue 12's targets, cpu <= 1e-4, interpreter <= 1e-3, aic100
fp16 <= 5e-2 (relative to the largest reference magnitude), and an int8 model that loads in
onnxruntime (SQNR >= 10 dB as a sanity bound; quantization quality is another issue's).

The pinned openwakeword wheel is downloaded into the zoo cache ($AICC_ZOO_CACHE, default
~/.cache/aicc-zoo) when missing; later runs read the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from spec_helpers import script_module

LIB = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo_lib.py"
TARGETS = {"cpu": 1e-4, "interpreter": 1e-3, "aic100": 5e-2}


@pytest.fixture(scope="module")
def zoo():
    with script_module(LIB, "zoo_lib") as module:
        yield module


@pytest.mark.parametrize("key", ["oww-alexa",
                                 pytest.param("oww-embedding", marks=pytest.mark.slow)])
def test_small_zoo_models_run_on_every_backend(zoo, key, tmp_path):
    spec = zoo.BY_KEY[key]
    path = zoo.model_path(spec)
    ref = zoo.run_onnxruntime(path, zoo.make_feeds(spec, 0), repeats=0)
    assert ref.ok, ref.error
    for backend, target in TARGETS.items():
        res = zoo.step_backend(spec, backend, tmp_path / backend)
        assert res["ok"], (backend, res.get("error"))
        assert all(np.isfinite(a).all() for a in res["outputs"].values()), backend
        err = zoo.relative_error(res["outputs"], ref.outputs)
        assert err <= target, (backend, err)
    res = zoo.step_quantize(spec, 4, tmp_path / "int8")
    assert res["ok"], res.get("error")
    assert zoo.sqnr_db(res["outputs"], ref.outputs) >= 10.0


@pytest.mark.parametrize("backend", ["interpreter", "aic100", "cpu"])
def test_fp16_without_samples_step(zoo, backend, tmp_path):
    """``zoo.py --fp16-no-samples``: ``aicc.compile(..., fp16=True)`` with no sample data, run on
    sample 0, within the fp16 target of onnxruntime on the original model."""
    spec = zoo.BY_KEY["oww-alexa"]
    ref = zoo.run_onnxruntime(zoo.model_path(spec), zoo.make_feeds(spec, 0), repeats=0)
    res = zoo.step_fp16(spec, backend, tmp_path)
    assert res["ok"] and res["note"] == ""          # no warning: nothing leaves fp16's range
    assert zoo.relative_error(res["outputs"], ref.outputs) <= TARGETS["aic100"]


def test_feeds_are_realistic_and_reproducible(zoo):
    image = zoo.make_feeds(zoo.BY_KEY["ocr-det"], 3)["x"]
    assert image.shape == (1, 3, 320, 320) and image.dtype == np.float32
    assert -2.2 < image.min() < -1.5 and 2.0 < image.max() < 2.7    # ImageNet-normalized range
    assert np.array_equal(image, zoo.make_feeds(zoo.BY_KEY["ocr-det"], 3)["x"])
    audio = zoo.make_feeds(zoo.BY_KEY["oww-melspec"], 0)["input"]
    assert 10000 < np.abs(audio).max() <= 32767                      # int16-scaled samples
    vad = zoo.make_feeds(zoo.BY_KEY["silero-vad"], 0)
    assert vad["sr"].dtype == np.int64 and vad["sr"].shape == () and int(vad["sr"]) == 16000
    text = zoo.make_feeds(zoo.BY_KEY["magika"], 0)["bytes"]
    assert set(np.unique(text)) <= set(range(256)) and (text == ord(" ")).any()


def test_measures(zoo):
    ref = {"y": np.array([1.0, -2.0, 4.0])}
    assert zoo.relative_error({"y": np.array([1.0, -2.0, 4.4])}, ref) == pytest.approx(0.1)
    assert zoo.relative_error({"y": np.array([1.0, np.inf, 4.0])}, ref) == np.inf
    assert zoo.relative_error({"y": np.zeros(2)}, ref) == np.inf        # shape mismatch
    noise = np.array([0.0, 0.0, 0.04])
    assert zoo.sqnr_db({"y": ref["y"] + noise}, ref) == pytest.approx(
        10 * np.log10(21.0 / 0.0016))
