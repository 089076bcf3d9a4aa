"""AIMET / QNN encodings JSON: the examples of seeds/quantization.txt, the 1.0.0 form, bad files."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicc.errors import ConfigError
from aicc.quant import (
    Encoding,
    EncodingsTable,
    export_aimet_encodings,
    loads_aimet_json,
    parse_aimet_encodings,
    per_channel_encoding,
    schema_encoding,
    symmetric_encoding,
    tf_encoding,
)

WHERE = "overrides.json"

# The "Quantization Overrides" example of the QNN page.
DOC_OVERRIDES = json.loads("""
{
   "activation_encodings": {
       "Conv1:0": [
           {
               "bitwidth": 8,
               "max": 12.82344407824954,
               "min": 0.0,
               "offset": 0,
               "scale": 0.050288015993135454
           }
       ],
       "input:0": [
           {
               "bitwidth": 8,
               "max": 0.9960872825108046,
               "min": -1.0039304197656937,
               "offset": 127,
               "scale": 0.007843206675594112
           }
       ]
   },
   "param_encodings": {
       "Conv2d/weights": [
           {
               "bitwidth": 8,
               "max": 1.700559472933134,
               "min": -2.1006477158567995,
               "offset": 140,
               "scale": 0.01490669485799974
           }
       ]
   }
}
""")

# "Case 1: Asymmetric encodings without per-channel quantization"
DOC_CASE1 = {"features.9.conv.3.weight": [{
    "bitwidth": 8, "is_symmetric": "False", "max": 3.0387749017453665, "min": -2.059169834735364,
    "offset": -103, "scale": 0.019991940143061618}]}

# "Case 2: Per-channel quantization encodings with 3 output channels"
DOC_CASE2 = {"features.8.conv.3.weight": [
    {"bitwidth": 8, "is_symmetric": "True", "max": 0.7011175155639648,
     "min": -0.7066381259227362, "offset": -128.0, "scale": 0.005520610358771377},
    {"bitwidth": 8, "is_symmetric": "True", "max": 0.5228064656257629,
     "min": -0.5269230519692729, "offset": -128.0, "scale": 0.004116586343509945},
    {"bitwidth": 8, "is_symmetric": "True", "max": 0.7368279099464417,
     "min": -0.7426297045129491, "offset": -128.0, "scale": 0.005801794566507415},
]}

# The mixed-precision example (second form, with a version).
DOC_MIXED = {
    "activation_encodings": {"conv2_1": [{"bitwidth": 32, "dtype": "float"}]},
    "param_encodings": {"conv2_w_0": [{"bitwidth": 32, "dtype": "float"}],
                        "conv2_b_0": [{"bitwidth": 32, "dtype": "float"}]},
    "version": "0.5.0",
}


def test_doc_overrides_scale_recomputed_from_bw_min_max():
    table = parse_aimet_encodings(DOC_OVERRIDES, where=WHERE)
    conv1 = table.activations["Conv1:0"]
    assert conv1.scale == 0.050288015993135454
    assert conv1.zero_point == 0 and conv1.aimet_offset == 0 and conv1.min == 0.0
    assert conv1.max == pytest.approx(12.82344407824954, rel=1e-15)

    inp = table.activations["input:0"]
    assert inp.scale == 0.007843206675594112
    # recomputed offset: round(-min / scale) = round(127.99999557) = 128, i.e. AIMET offset -128
    # and ONNX uint8 zero point 128. The page's "offset": 127 is the legacy positive, truncated
    # form of the same quantity (trunc(127.99999557) = 127); it is ignored, as the page says.
    assert inp.zero_point == 128 and inp.aimet_offset == -128 and not inp.signed
    assert int(1.0039304197656937 / inp.scale) == 127
    assert inp.dequantize(inp.quantize(0.0)) == 0.0

    w = table.params["Conv2d/weights"]
    assert w.scale == 0.01490669485799974
    # round(140.91975) = 141; the page's 140 is trunc(140.91975)
    assert w.zero_point == 141 and w.aimet_offset == -141
    assert int(2.1006477158567995 / w.scale) == 140


def test_doc_case1_asymmetric_offset():
    table = parse_aimet_encodings({"activation_encodings": {}, "param_encodings": DOC_CASE1},
                                  where=WHERE)
    enc = table.params["features.9.conv.3.weight"]
    assert enc.scale == pytest.approx(0.019991940143061618, rel=1e-12)
    assert enc.aimet_offset == -103 and enc.zero_point == 103
    assert not enc.symmetric and not enc.per_channel
    assert enc.min == pytest.approx(-2.059169834735364, rel=1e-12)
    assert enc.max == pytest.approx(3.0387749017453665, rel=1e-12)


def test_doc_case2_per_channel():
    table = parse_aimet_encodings({"activation_encodings": {}, "param_encodings": DOC_CASE2},
                                  where=WHERE)
    enc = table.params["features.8.conv.3.weight"]
    assert enc.per_channel and enc.num_channels == 3 and enc.axis is None
    assert enc.symmetric and enc.signed and enc.storage_dtype == "int8"
    assert enc.zero_point == (0, 0, 0)
    assert enc.aimet_offset == (-128, -128, -128)     # offset == -2^(bitwidth-1)
    for got, entry in zip(enc.scale, DOC_CASE2["features.8.conv.3.weight"], strict=True):
        assert got == pytest.approx(entry["scale"], rel=1e-12)
    table.check_param_channels("features.8.conv.3.weight", 3, where=WHERE)
    with pytest.raises(ConfigError, match="overrides.json: tensor 'features.8.conv.3.weight': "
                                          "per-channel encoding has 3 entries but the tensor has "
                                          "32 channels"):
        table.check_param_channels("features.8.conv.3.weight", 32, where=WHERE)
    w = np.ones((3, 2, 2, 2)) * np.array([0.7, -0.5, 0.1])[:, None, None, None]
    fq = enc.with_axis(0).fake_quantize(w)
    assert np.allclose(fq, w, atol=0.0031)


def test_doc_mixed_precision_examples():
    table = parse_aimet_encodings(DOC_MIXED, where=WHERE)
    assert table.version == "0.5.0"
    assert table.activations["conv2_1"] == Encoding.float_(32)
    assert table.get("conv2_w_0").is_float
    first = {
        "activation_encodings": {"data_0": [{"bitwidth": 8, "dtype": "int"}],
                                 "conv2_1": [{"bitwidth": 32, "dtype": "float"}]},
        "param_encodings": {"conv1_w_0": [{"bitwidth": 8, "dtype": "int"}],
                            "conv2_w_0": [{"bitwidth": 16, "dtype": "float"}]},
    }
    table = parse_aimet_encodings(first, where=WHERE)
    data0 = table.activations["data_0"]
    assert data0.dtype == "int" and data0.bitwidth == 8 and not data0.is_resolved
    assert table.params["conv2_w_0"].storage_dtype == "float16"


V1_DOC = {
    "version": "1.0.0",
    "activation_encodings": [
        {"name": "input", "dtype": "INT", "enc_type": "PER_TENSOR", "is_sym": False, "bw": 8,
         "scale": [0.03099999949336052], "offset": [0.0]},
        {"name": "layer1_output", "dtype": "INT", "enc_type": "PER_TENSOR", "is_sym": True,
         "bw": 8, "scale": [0.025], "offset": [-128.0]},
        {"name": "act16", "bw": 16, "dtype": "INT", "enc_type": "PER_TENSOR", "is_sym": False,
         "offset": [-35799], "scale": [6.05e-05]},
        {"name": "keep_fp16", "dtype": "FLOAT", "bw": 16, "enc_type": "PER_TENSOR"},
    ],
    "param_encodings": [
        {"name": "conv1.weight", "dtype": "INT", "enc_type": "PER_CHANNEL", "is_sym": True,
         "bw": 8, "scale": [0.012, 0.015, 0.011], "offset": [-128.0, -128.0, -128.0]},
        {"name": "fc1.weight", "bw": 4, "dtype": "INT", "enc_type": "PER_CHANNEL", "is_sym": True,
         "offset": [-8, -8], "scale": [0.0405, 0.0397]},
    ],
    "excluded_layers": [],
    "quantizer_args": {"activation_bitwidth": 8},
}


def test_v1_list_form():
    table = parse_aimet_encodings(V1_DOC, where=WHERE)
    inp = table.activations["input"]
    assert inp.zero_point == 0 and inp.storage_dtype == "uint8" and inp.min == 0.0
    sym = table.activations["layer1_output"]
    assert sym.signed and sym.zero_point == 0 and sym.min == pytest.approx(-3.2)
    a16 = table.activations["act16"]
    assert a16.storage_dtype == "uint16" and a16.zero_point == 35799
    assert table.activations["keep_fp16"].storage_dtype == "float16"
    w = table.params["conv1.weight"]
    assert w.per_channel and w.num_channels == 3 and w.scale == (0.012, 0.015, 0.011)
    assert w.zero_point == (0, 0, 0) and w.signed
    w4 = table.params["fc1.weight"]
    assert w4.storage_dtype == "int4" and w4.qmin == -8 and w4.aimet_offset == (-8, -8)
    assert table.quantizer_args == {"activation_bitwidth": 8}


def _table() -> EncodingsTable:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 3, 3, 3))
    t = EncodingsTable()
    t.activations["x"] = tf_encoding(-1.8, 0.5)
    t.activations["relu"] = schema_encoding("symmetric_with_uint8", 0.0, 6.0)
    t.activations["neg"] = tf_encoding(-20.0, -6.0, 16)
    t.activations["fp"] = Encoding.float_(16)
    t.params["w"] = per_channel_encoding(w, axis=0)
    t.params["w4"] = per_channel_encoding(w, axis=0, bitwidth=4)
    t.params["b"] = symmetric_encoding(-3.0, 2.0)
    return t


@pytest.mark.parametrize("form", ["0.6.1", "1.0.0"])
def test_export_round_trip(form):
    table = _table()
    out = export_aimet_encodings(table, form=form)
    text = json.dumps(out)                       # JSON-ready
    back = loads_aimet_json(text, where="exported.json")
    # AIMET files record no per-channel axis
    expect = EncodingsTable(
        activations=dict(table.activations),
        params={k: v.with_axis(None) for k, v in table.params.items()})
    assert back.isclose(expect, rel_tol=1e-12)
    assert out["version"] == form


def test_export_0_6_1_shape():
    out = export_aimet_encodings(_table(), form="0.6.1")
    x = out["activation_encodings"]["x"]
    assert x == [{"bitwidth": 8, "dtype": "int", "is_symmetric": "False",
                  "max": pytest.approx(0.496078, abs=1e-6),
                  "min": pytest.approx(-1.803922, abs=1e-6), "offset": -200,
                  "scale": pytest.approx(0.009020, abs=1e-6)}]
    assert len(out["param_encodings"]["w"]) == 4
    assert all(e["offset"] == -128 and e["is_symmetric"] == "True"
               for e in out["param_encodings"]["w"])
    assert out["activation_encodings"]["fp"] == [{"bitwidth": 16, "dtype": "float"}]


def test_export_1_0_0_needs_calibrated_ranges():
    t = EncodingsTable(activations={"a": Encoding(bitwidth=8)})
    with pytest.raises(ConfigError, match="no calibrated range"):
        export_aimet_encodings(t, form="1.0.0")
    assert export_aimet_encodings(t)["activation_encodings"]["a"][0]["bitwidth"] == 8
    with pytest.raises(ConfigError, match="unknown AIMET encodings form"):
        export_aimet_encodings(t, form="2.0.0")


@settings(max_examples=100, deadline=None)
@given(a=st.floats(-1e4, 1e4), b=st.floats(-1e4, 1e4), bw=st.sampled_from([4, 8, 16]),
       sym=st.booleans())
def test_property_legacy_round_trip(a, b, bw, sym):
    lo, hi = min(a, b), max(a, b)
    enc = symmetric_encoding(lo, hi, bw) if sym else tf_encoding(lo, hi, bw)
    table = EncodingsTable(activations={"t": enc})
    back = parse_aimet_encodings(export_aimet_encodings(table), where=WHERE)
    assert back.activations["t"].isclose(enc, rel_tol=1e-9, abs_tol=1e-12)


# ------------------------------------------------------------------ bad files


def _doc() -> dict:
    return copy.deepcopy(DOC_OVERRIDES)


def test_unknown_top_level_key():
    data = _doc()
    data["activation_encoding"] = {}
    with pytest.raises(ConfigError, match="overrides.json: activation_encoding: unknown top-level "
                                          "key 'activation_encoding'.*did you mean "
                                          "'activation_encodings'"):
        parse_aimet_encodings(data, where=WHERE)


@pytest.mark.parametrize("section", ["activation_encodings", "param_encodings"])
def test_missing_section(section):
    data = _doc()
    del data[section]
    with pytest.raises(ConfigError, match=f"missing section '{section}'.*may be empty"):
        parse_aimet_encodings(data, where=WHERE)


@pytest.mark.parametrize("key,value,msg", [
    ("min", "0.5", r"activation_encodings\['Conv1:0'\]\[0\]\.min: expected a number, got str"),
    ("max", None, r"\.max: expected a number, got NoneType"),
    ("max", True, r"\.max: expected a number, got bool"),
    ("max", float("inf"), r"\.max: expected a finite number"),
    ("scale", "x", r"\.scale: expected a number"),
    ("bitwidth", 3, r"\.bitwidth: unsupported integer bitwidth 3 \(supported: 4, 8, 16, 32\)"),
    ("bitwidth", 64, r"unsupported integer bitwidth 64"),
    ("bitwidth", "8", r"bitwidth must be an integer"),
    ("min", 20.0, r"min 20\.0 > max"),
    ("is_symmetric", "yes", r"is_symmetric: expected True or False"),
    ("dtype", "int8", r"dtype must be 'int' or 'float'"),
    ("bitwdth", 8, r"unknown key 'bitwdth'.*did you mean 'bitwidth'"),
])
def test_bad_entry_values(key, value, msg):
    data = _doc()
    data["activation_encodings"]["Conv1:0"][0][key] = value
    with pytest.raises(ConfigError, match=msg):
        parse_aimet_encodings(data, where=WHERE)


def test_bad_structures():
    data = _doc()
    data["param_encodings"]["Conv2d/weights"] = []
    with pytest.raises(ConfigError, match=r"param_encodings\['Conv2d/weights'\]: empty list"):
        parse_aimet_encodings(data, where=WHERE)
    data = _doc()
    data["param_encodings"]["Conv2d/weights"] = {"bitwidth": 8}
    with pytest.raises(ConfigError, match="expected a list of encodings"):
        parse_aimet_encodings(data, where=WHERE)
    data = _doc()
    del data["activation_encodings"]["Conv1:0"][0]["max"]
    with pytest.raises(ConfigError, match="missing 'max'"):
        parse_aimet_encodings(data, where=WHERE)
    with pytest.raises(ConfigError, match="expected a JSON object at the top level"):
        parse_aimet_encodings([], where=WHERE)
    with pytest.raises(ConfigError, match="float bitwidth 8"):
        parse_aimet_encodings({"activation_encodings": {"a": [{"bitwidth": 8, "dtype": "float"}]},
                               "param_encodings": {}}, where=WHERE)


def test_per_channel_entries_must_agree():
    case2 = copy.deepcopy(DOC_CASE2)
    case2["features.8.conv.3.weight"][1]["bitwidth"] = 16
    with pytest.raises(ConfigError, match=r"\[1\]\.bitwidth: channel bitwidth 16 differs"):
        parse_aimet_encodings({"activation_encodings": {}, "param_encodings": case2}, where=WHERE)
    case2 = copy.deepcopy(DOC_CASE2)
    del case2["features.8.conv.3.weight"][2]["min"]
    del case2["features.8.conv.3.weight"][2]["max"]
    del case2["features.8.conv.3.weight"][2]["scale"]
    del case2["features.8.conv.3.weight"][2]["offset"]
    with pytest.raises(ConfigError, match="per-channel entries must be integer encodings"):
        parse_aimet_encodings({"activation_encodings": {}, "param_encodings": case2}, where=WHERE)


def test_versions():
    data = _doc()
    data["version"] = "2.0.0"
    with pytest.raises(ConfigError, match="version '2.0.0' is not supported"):
        parse_aimet_encodings(data, where=WHERE)
    data["version"] = 1.0
    with pytest.raises(ConfigError, match="version must be a string"):
        parse_aimet_encodings(data, where=WHERE)
    data["version"] = "1.0.0"        # says list form, holds dicts
    with pytest.raises(ConfigError, match="expected a list of encodings, got dict"):
        parse_aimet_encodings(data, where=WHERE)
    v1 = copy.deepcopy(V1_DOC)
    v1["version"] = "0.6.1"
    with pytest.raises(ConfigError, match="version 1.0.0 files use lists"):
        parse_aimet_encodings(v1, where=WHERE)
    del v1["version"]                # no version: the form is inferred
    assert len(parse_aimet_encodings(v1, where=WHERE)) == 6


@pytest.mark.parametrize("mutate,msg", [
    (lambda e: e.update(enc_type="PER_BLOCK"), "enc_type PER_BLOCK is not supported yet"),
    (lambda e: e.update(enc_type="PER_CHANEL"), "unknown enc_type.*PER_CHANNEL"),
    (lambda e: e.update(scale=[0.1, 0.2], offset=[0, 0]), "PER_TENSOR needs exactly one scale"),
    (lambda e: e.update(offset=[-300]), "offset -300 puts zero outside the 8-bit range"),
    (lambda e: e.update(offset=[5]), "offset 5 puts zero outside"),
    (lambda e: e.update(offset=[-1.5]), r"offset\[0\]: expected an integer"),
    (lambda e: e.update(scale=[0.0]), "scale must be > 0"),
    (lambda e: e.update(scale=[]), "empty list"),
    (lambda e: e.update(scale=0.1), "expected a list"),
    (lambda e: e.pop("bw"), "missing 'bw'"),
    (lambda e: e.pop("name"), "missing or empty 'name'"),
    (lambda e: e.update(bw=3), "unsupported integer bitwidth 3"),
    (lambda e: e.update(extra=1), "unknown key 'extra'"),
])
def test_v1_bad_entries(mutate, msg):
    v1 = copy.deepcopy(V1_DOC)
    mutate(v1["activation_encodings"][0])
    with pytest.raises(ConfigError, match=msg):
        parse_aimet_encodings(v1, where=WHERE)


def test_v1_duplicate_name_and_channel_mismatch():
    v1 = copy.deepcopy(V1_DOC)
    v1["activation_encodings"].append(copy.deepcopy(v1["activation_encodings"][0]))
    with pytest.raises(ConfigError, match="tensor 'input' listed twice"):
        parse_aimet_encodings(v1, where=WHERE)
    v1 = copy.deepcopy(V1_DOC)
    v1["param_encodings"][0]["offset"] = [-128, -128]
    with pytest.raises(ConfigError, match="3 scales but 2 offsets"):
        parse_aimet_encodings(v1, where=WHERE)


def test_json_text_loader_strictness():
    with pytest.raises(ConfigError, match="duplicate key 'Conv1:0'"):
        loads_aimet_json('{"activation_encodings": {"Conv1:0": [], "Conv1:0": []}, '
                         '"param_encodings": {}}', where=WHERE)
    with pytest.raises(ConfigError, match="NaN is not a valid number"):
        loads_aimet_json('{"activation_encodings": {"a": [{"bitwidth": 8, "min": NaN, '
                         '"max": 1}]}, "param_encodings": {}}', where=WHERE)
    with pytest.raises(ConfigError, match="overrides.json: line 1 column 2: not valid JSON"):
        loads_aimet_json("{,}", where=WHERE)


def test_degenerate_override_range_is_widened_not_zero():
    data = {"activation_encodings": {"c": [{"bitwidth": 8, "min": 0.0, "max": 0.0}]},
            "param_encodings": {}}
    enc = parse_aimet_encodings(data, where=WHERE).activations["c"]
    assert enc.scale > 0 and math.isfinite(enc.scale)
