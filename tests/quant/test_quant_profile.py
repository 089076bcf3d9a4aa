"""Calibration profile (-dump-profile / -load-profile): format, validation, merging shards."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aicc.errors import ConfigError
from aicc.quant import (
    PROFILE_FORMAT,
    Profile,
    TensorObserver,
    dump_profile_yaml,
    load_profile_yaml,
    merge_profiles,
    parse_profile,
    profile_to_dict,
)

HASH = "3f2a9c00deadbeef"
WHERE = "pgq.yaml"


def _profile(arrays: dict[str, np.ndarray], bins: int = 16, batches: int = 1,
             graph_hash: str = HASH) -> Profile:
    observers = []
    for name, x in arrays.items():
        o = TensorObserver(name, bins)
        for b in np.array_split(x, batches):
            o.update(b)
        observers.append(o)
    return Profile.from_observers(observers, graph_hash=graph_hash, tools_version="0.1.0")


def _doc() -> dict:
    rng = np.random.default_rng(0)
    return profile_to_dict(_profile({"conv0": rng.normal(size=100), "relu0": rng.uniform(size=50)}))


def test_dump_load_round_trip():
    rng = np.random.default_rng(1)
    p = _profile({"in": rng.normal(size=1000), "out": np.array([1.0, np.nan, 3.0])}, bins=32)
    text = dump_profile_yaml(p)
    assert text.startswith(f"format: {PROFILE_FORMAT}\nversion: 1\n")
    back = load_profile_yaml(text, where=WHERE, expected_graph_hash=HASH)
    assert list(back.tensors) == ["in", "out"]
    assert back.num_histogram_bins == 32 and back.tools_version == "0.1.0"
    for name in p.tensors:
        a, b = p[name], back[name]
        assert (a.min, a.max, a.nonfinite) == (b.min, b.max, b.nonfinite)
        np.testing.assert_array_equal(a.histogram.counts, b.histogram.counts)
    assert back["out"].nonfinite == 1
    data = yaml.safe_load(text)
    assert all(isinstance(c, int) for c in data["tensors"][0]["histogram"])


def test_digit_only_hash_survives_yaml():
    p = _profile({"x": np.arange(5.0)}, graph_hash="0123456789")
    back = load_profile_yaml(dump_profile_yaml(p), where=WHERE, expected_graph_hash="0123456789")
    assert back.graph_hash == "0123456789"


def test_profile_from_another_graph_refused():
    with pytest.raises(ConfigError, match="pgq.yaml: graph_hash: profile belongs to another graph "
                                          r"\(.*re-run calibration"):
        parse_profile(_doc(), where=WHERE, expected_graph_hash="ffff")
    parse_profile(_doc(), where=WHERE, expected_graph_hash=HASH.upper())   # hex case-insensitive


@pytest.mark.parametrize("mutate,msg", [
    (lambda d: d.update(extra=1), "extra: unknown key 'extra'"),
    (lambda d: d.update(num_histogram_bin=1) or d.pop("num_histogram_bins"),
     "unknown key 'num_histogram_bin'.*did you mean 'num_histogram_bins'"),
    (lambda d: d.pop("graph_hash"), "missing key 'graph_hash'"),
    (lambda d: d.update(format="glow-profile"), "not an aicc profile"),
    (lambda d: d.update(version=2), "profile version 2 is not supported"),
    (lambda d: d.update(version="1"), "version: expected an integer"),
    (lambda d: d.update(graph_hash="not hex!"), "graph_hash: expected a hexadecimal string"),
    (lambda d: d.update(graph_hash=1234), "graph_hash: expected a hexadecimal string"),
    (lambda d: d.update(tools_version=0.1), "tools_version: expected a string"),
    (lambda d: d.update(num_histogram_bins=0), "num_histogram_bins: must be >= 1"),
    (lambda d: d.update(num_histogram_bins=True), "num_histogram_bins: expected an integer"),
    (lambda d: d.update(tensors={}), "tensors: expected a list"),
    (lambda d: d["tensors"][0].update(histogram=[1] * 15),
     r"tensors\[0\] \('conv0'\).histogram: histogram has 15 bins, num_histogram_bins is 16"),
    (lambda d: d["tensors"][0]["histogram"].__setitem__(3, -2),
     r"histogram\[3\]: negative count -2"),
    (lambda d: d["tensors"][0]["histogram"].__setitem__(3, float("nan")),
     r"histogram\[3\]: expected a finite number"),
    (lambda d: d["tensors"][0]["histogram"].__setitem__(3, "7"),
     r"histogram\[3\]: expected a number"),
    (lambda d: d["tensors"][1].update(min="1e-3"), "YAML 1.1 reads 1e-3 as a string"),
    (lambda d: d["tensors"][1].update(max=float("inf")), "expected a finite number"),
    (lambda d: d["tensors"][1].update(min=5.0), r"min 5.0 > max"),
    (lambda d: d["tensors"][1].update(mx=1), "unknown key 'mx'.*did you mean 'max'"),
    (lambda d: d["tensors"][1].pop("histogram"), "missing key 'histogram'"),
    (lambda d: d["tensors"][1].update(name=""), "name must be a non-empty string"),
    (lambda d: d["tensors"][1].update(name="conv0"), "tensor 'conv0' listed twice"),
    (lambda d: d["tensors"][1].update(nonfinite=-1), "nonfinite: must be >= 0"),
    (lambda d: d["tensors"].append("x"), r"tensors\[2\]: expected a mapping"),
])
def test_bad_profiles(mutate, msg):
    d = _doc()
    mutate(d)
    with pytest.raises(ConfigError, match=msg):
        parse_profile(d, where=WHERE)


def test_bad_yaml_text():
    with pytest.raises(ConfigError, match="pgq.yaml: not valid YAML"):
        load_profile_yaml("!!python/object/apply:os.system ['true']", where=WHERE)
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_profile_yaml("- 1\n- 2\n", where=WHERE)
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_profile_yaml("", where=WHERE)


def test_merge_refuses_other_graph_and_bins():
    a = _profile({"x": np.arange(4.0)})
    b = _profile({"x": np.arange(4.0)}, graph_hash="abcd")
    with pytest.raises(ConfigError, match="profile 1 belongs to another graph"):
        merge_profiles([a, b])
    c = _profile({"x": np.arange(4.0)}, bins=8)
    with pytest.raises(ConfigError, match="profile 1 has 8 histogram bins, profile 0 16"):
        merge_profiles([a, c])


def test_merge_keeps_tensors_of_either_shard():
    a = _profile({"x": np.arange(4.0)})
    b = _profile({"y": -np.arange(4.0)})
    m = merge_profiles([a, b])
    assert list(m.tensors) == ["x", "y"] and m["y"].min == -3.0
    assert a["x"].histogram.counts.sum() == 4      # inputs untouched


@settings(max_examples=80, deadline=None)
@given(a=hnp.arrays(np.float64, st.integers(1, 300), elements=st.floats(-1e4, 1e4)),
       b=hnp.arrays(np.float64, st.integers(1, 300), elements=st.floats(-1e4, 1e4)),
       bins=st.sampled_from([1, 7, 64]), batches=st.integers(1, 4))
def test_property_merged_shards_equal_concatenated(a, b, bins, batches):
    whole = _profile({"t": np.concatenate([a, b])}, bins=bins)
    shards = merge_profiles([_profile({"t": a}, bins=bins, batches=batches),
                             _profile({"t": b}, bins=bins, batches=batches)])
    assert shards["t"].min == whole["t"].min and shards["t"].max == whole["t"].max
    assert shards["t"].count == pytest.approx(whole["t"].count, rel=1e-12)
    assert np.all(shards["t"].histogram.counts >= 0)
    # and the merged profile survives its own format
    back = parse_profile(copy.deepcopy(profile_to_dict(shards)), where=WHERE,
                         expected_graph_hash=HASH)
    assert back["t"].count == pytest.approx(whole["t"].count, rel=1e-12)
