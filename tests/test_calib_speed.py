"""Calibration that measures only what quantization reads (issue 14, speed): min-max calibration
keeps ranges without histograms, and ``aicc quantize`` observes only the tensors it encodes.
Results must not change, and a profile that lacks something a later setting needs says so and
is refused."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from aicc import ir
from aicc.errors import ConfigError
from aicc.analyses import AnalysisCache
from aicc.passes.quantization.analyses import (CALIBRATION_PROFILE, CALIBRATION_SAMPLES,
                                               QUANTIZE_OPTIONS)
from aicc.passes.quantization.calibrate import calibrate_program
from aicc.pipeline import Pipeline, run_pipeline
from aicc.plugins import load_registries
from aicc.program import Program
from aicc.quant import TensorObserver, dump_profile_yaml, load_profile_yaml, merge_profiles
from aicc.quantization import quantize_model, quantize_pipeline
from quant_builders import _model, samples, small_cnn
from tolerance import assert_reordered_close


def hardswish_cnn(seed: int = 0):
    """x -> Conv -> HardSwish spelled out (Add 3, Clip 0..6, Mul, Div 6) -> Conv -> y: the
    HardSwish's inside is one fused expression, never quantized."""
    rng = np.random.default_rng(seed)
    f = lambda *s: (rng.standard_normal(s) * 0.5).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(f(4, 3, 3, 3), "w1"), numpy_helper.from_array(f(4), "b1"),
             numpy_helper.from_array(f(2, 4, 1, 1), "w2"),
             numpy_helper.from_array(np.array(3.0, np.float32), "three"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Add", ["c1", "three"], ["a"], name="add3"),
             helper.make_node("Clip", ["a", "zero", "six"], ["r6"], name="relu6"),
             helper.make_node("Mul", ["c1", "r6"], ["m"], name="mul"),
             helper.make_node("Div", ["m", "six"], ["hs"], name="div6"),
             helper.make_node("Conv", ["hs", "w2"], ["y"], name="conv2")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])], inits)


def _program(model):
    return Program.from_model(ir.load_model(model.SerializeToString()))


def _quantize(model, feeds, *, only_quantized: bool, engine: str = "interpreter", **options):
    """quantize_model's pipeline, with the observed tensors chosen here."""
    regs = load_registries()
    steps = quantize_pipeline(calibrate=True, progress=False, engine=engine,
                              only_quantized=only_quantized, **options)
    provided = {CALIBRATION_SAMPLES: feeds}
    if only_quantized:
        provided[QUANTIZE_OPTIONS] = dict(steps[-2][1])
    analyses = AnalysisCache()
    for key, value in provided.items():
        analyses.put(key, value)
    program = _program(model)
    for part in (steps[:-2], steps[-2:]):      # up to calibrate, then quantize and cleanup
        pipeline = Pipeline.build(part, regs.passes, source="test")
        program = run_pipeline(pipeline, program, registries=regs, analyses=analyses)
        if part[-1][0] == "calibrate":
            profile = analyses.peek(CALIBRATION_PROFILE)
    return program, profile


def _encodings(program):
    return {k: program.encodings[k] for k in ("activations", "params", "conversions")}


@pytest.mark.parametrize("calibration", ["None", "Auto", "Percentile"])
def test_observing_only_quantized_tensors_keeps_the_encodings(calibration):
    model = hardswish_cnn()
    feeds = samples(model, 6)
    all_, every = _quantize(model, feeds, only_quantized=False, calibration=calibration,
                            num_bins=512, per_channel=True)
    only, some = _quantize(model, feeds, only_quantized=True, calibration=calibration,
                           per_channel=True)
    assert _encodings(only) == _encodings(all_)
    # the HardSwish's inside was not observed (and is not quantized either way)
    inside = {"a", "r6", "m"}
    assert inside <= set(every.tensors) and not every.skipped
    assert set(some.skipped) == inside and not inside & set(some.tensors)
    assert not inside & set(all_.encodings["activations"])
    # min-max measured ranges only; the others histograms
    assert all(st.binned == (calibration != "None") for st in some.tensors.values())


def _close(got: dict, ref: dict) -> None:
    """Encodings equal but for float rounding of the ranges (scales within 1e-6 relative)."""
    assert set(got) == set(ref)
    for name, e in ref.items():
        g = got[name]
        assert {k: v for k, v in g.items() if k not in ("scale", "min", "max")} == \
            {k: v for k, v in e.items() if k not in ("scale", "min", "max")}, name
        np.testing.assert_allclose(g.get("scale", 1.0), e.get("scale", 1.0), rtol=1e-6,
                                   err_msg=name)


def test_observing_fewer_tensors_on_onnxruntime_changes_only_float_rounding():
    """On onnxruntime, a tensor that is no graph output any more may be computed by a fused
    kernel (another summation order): ranges may move by float rounding, nothing more."""
    model = hardswish_cnn()
    feeds = samples(model, 6)
    all_, _ = _quantize(model, feeds, only_quantized=False, engine="cpu", per_channel=True)
    only, _ = _quantize(model, feeds, only_quantized=True, engine="cpu", per_channel=True)
    _close(only.encodings["activations"], all_.encodings["activations"])
    _close(only.encodings["params"], all_.encodings["params"])


def test_minmax_without_histograms_keeps_the_encodings_of_a_binned_calibration():
    """The public path: quantize_model's min-max default (ranges only, quantized tensors only)
    against a full 512-bin calibration of every tensor."""
    model = small_cnn()
    feeds = samples(model, 8)
    _, fast = quantize_model(model, samples=feeds, progress=False, engine="interpreter")
    full, profile = _quantize(model, feeds, only_quantized=False, num_bins=512)
    assert all(st.binned for st in profile.tensors.values())
    assert _encodings(fast) == _encodings(full)


def test_calibration_records_what_it_skipped_and_lacks():
    model = hardswish_cnn()
    feeds = samples(model, 4)
    profile = calibrate_program(_program(model), feeds, progress=False, histograms=False,
                                observe={"x", "c1", "hs", "y"})
    assert set(profile.tensors) == {"x", "c1", "hs", "y"}
    assert set(profile.skipped) == {"a", "r6", "m"}
    assert not any(st.binned for st in profile.tensors.values())
    assert profile["c1"].count == 4 * 4 * 36
    text = dump_profile_yaml(profile)
    data = yaml.safe_load(text)
    assert data["skipped"] == list(profile.skipped)
    assert "histogram" not in data["tensors"][0] and data["tensors"][0]["count"] == 4 * 3 * 36
    back = load_profile_yaml(text, where="p.yaml")
    assert back.skipped == profile.skipped
    for name, st in profile.tensors.items():
        assert (back[name].min, back[name].max, back[name].count, back[name].binned) == \
            (st.min, st.max, st.count, False)


def _dumped(tmp_path, model, **kw):
    from aicc.passes.quantization.calibrate import program_hash
    from aicc.testing import run_pass
    program = run_pass(run_pass(_program(model), "fold-constants"), "fold-batchnorm")
    profile = calibrate_program(program, samples(model, 4), progress=False, **kw)
    assert profile.graph_hash == program_hash(program)
    path = tmp_path / "profile.yaml"
    path.write_text(dump_profile_yaml(profile))
    return path


def test_reused_profile_without_histograms_is_refused_by_a_histogram_method(tmp_path):
    model = hardswish_cnn()
    path = _dumped(tmp_path, model, histograms=False)
    quantize_model(model, profile=[path], progress=False)           # min-max: fine
    with pytest.raises(ConfigError, match=r"only its range .* calibration method "
                                          r"'Percentile' needs its histogram") as e:
        quantize_model(model, profile=[path], calibration="Percentile")
    assert str(path) in str(e.value)
    with pytest.raises(ConfigError, match="act_quantizer 'enhanced' needs its histogram"):
        quantize_model(model, profile=[path], act_quantizer="enhanced")


def test_reused_profile_with_skipped_tensors_is_refused_when_they_are_needed(tmp_path):
    model = hardswish_cnn()
    path = _dumped(tmp_path, model, observe={"x", "c1", "hs", "y"})
    quantize_model(model, profile=[path], progress=False)       # the same settings: fine
    with pytest.raises(ConfigError, match=r"tensor '(a|r6|m)': the calibration profile "
                                          r"skipped this tensor") as e:
        quantize_model(model, profile=[path], fuse_elementwise=False)
    assert str(path) in str(e.value)


def test_engines_agree_on_ranges_without_histograms():
    model = small_cnn()
    feeds = samples(model, 6)
    ref = calibrate_program(_program(model), feeds, progress=False, engine="interpreter",
                            histograms=False)
    got = calibrate_program(_program(model), feeds, progress=False, engine="cpu",
                            histograms=False)
    assert set(got.tensors) == set(ref.tensors)
    for name, a in ref.tensors.items():
        b = got[name]
        assert_reordered_close([b.min, b.max], [a.min, a.max], terms=8 * 3 * 3, what=name)
        assert (a.count, a.binned, b.binned) == (b.count, False, False)


def test_range_only_observer_matches_the_binned_one():
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal(n).astype(np.float32) for n in (10, 70000, 3)]
    parts[1][5] = np.nan
    parts[2][0] = np.inf
    binned, ranged = TensorObserver("t", 64), TensorObserver("t", 64, binned=False)
    for p in parts:
        binned.update(p)
        ranged.update(p)
    a, b = binned.stats(), ranged.stats()
    assert (a.min, a.max, a.count, a.nonfinite) == (b.min, b.max, b.count, b.nonfinite)
    assert ranged.nbytes() == 0 and not b.binned
    other = TensorObserver("t", 64, binned=False)
    other.update(np.array([-9.0, 2.0, 0.0, 1.0, 1.0], np.float32))
    ranged.merge(other)
    assert (ranged.min, ranged.max, ranged.stats().count) == (-9.0, a.max, a.count + 5)
    with pytest.raises(ValueError, match="range only"):
        binned.merge(other)


def _profile_doc(**tensor):
    entry = {"name": "t", "min": -1.0, "max": 2.0, **tensor}
    return {"format": "aicc-profile", "version": 1, "tools_version": "0", "graph_hash": "ab",
            "num_histogram_bins": 4, "tensors": [entry]}


@pytest.mark.parametrize("doc, msg", [
    (_profile_doc(), "missing key 'histogram' \\(or 'count'"),
    (_profile_doc(count=3, histogram=[1, 1, 1, 0]), "both 'histogram' and 'count'"),
    (_profile_doc(count=-1), "must be >= 0"),
    (_profile_doc(count=1.5), "expected an integer"),
    (_profile_doc(count=0), "count 0 with range"),
    ({**_profile_doc(count=3), "skipped": "t2"}, "expected a list of tensor names"),
    ({**_profile_doc(count=3), "skipped": ["t"]}, "tensor 't' is both listed and skipped"),
])
def test_bad_range_only_profiles(doc, msg):
    with pytest.raises(ConfigError, match=msg):
        load_profile_yaml(yaml.safe_dump(doc), where="p.yaml")


def test_profiles_that_skipped_what_another_measured_do_not_merge():
    a = load_profile_yaml(yaml.safe_dump({**_profile_doc(count=3), "skipped": ["u"]}),
                          where="a.yaml")
    doc = _profile_doc(count=2)
    doc["tensors"][0]["name"] = "u"
    b = load_profile_yaml(yaml.safe_dump(doc), where="b.yaml")
    with pytest.raises(ConfigError, match="profile 0 skipped tensor 'u', which profile 1 "
                                          "measured"):
        merge_profiles([a, b])
    binned = load_profile_yaml(yaml.safe_dump(_profile_doc(histogram=[1, 0, 0, 2])),
                               where="c.yaml")
    merged = merge_profiles([binned, a])
    assert not merged["t"].binned and merged["t"].count == 6


def test_compile_min_max_calibration_without_histograms_keeps_the_encodings(tmp_path,
                                                                            monkeypatch):
    """``aicc compile`` calibrating and quantizing in one run, min-max, no profile kept: ranges
    only, the same encodings as with 512-bin histograms."""
    import json

    import aicc
    import aicc.passes.quantization.calibrate as cal
    from quant_builders import DIGITS, DIGITS_LIST
    seen = []

    def spy(*args, **kw):
        seen.append(kw["histograms"])
        return calibrate_program(*args, **kw)
    monkeypatch.setattr(cal, "calibrate_program", spy)
    common = dict(input_shapes=["image=1,1,8,8"], input_list=str(DIGITS_LIST))
    aicc.compile(str(DIGITS), output=tmp_path / "fast",
                 quantization=dict(calibrate=True, per_channel=True), **common)
    aicc.compile(str(DIGITS), output=tmp_path / "full",
                 quantization=dict(calibrate=True, per_channel=True, num_bins=512), **common)
    assert seen == [False, True]
    fast, full = (json.loads((tmp_path / d / "manifest.json").read_text())["program"]
                  ["encodings"] for d in ("fast", "full"))
    assert fast["activations"] and fast["activations"] == full["activations"]
    assert fast["params"] == full["params"]
