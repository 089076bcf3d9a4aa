"""The calibration profile (``-dump-profile`` / ``-load-profile``): TensorStats <-> versioned YAML.

Modelled on Glow's profiles: per tensor output its name, min, max and a histogram of
``num_histogram_bins`` equal bins spanning exactly [min, max], under a header that names the format,
its version, the aicc version that wrote it and a hash of the graph it belongs to::

    format: aicc-profile
    version: 1
    tools_version: 0.1.0
    graph_hash: 3f2a...
    num_histogram_bins: 512
    tensors:
    - name: conv0
      min: -1.5
      max: 7.25
      histogram: [3, 0, 17, ...]
      nonfinite: 0          # optional: NaN/Inf values seen and left out
    - name: conv1
      min: 0.0
      max: 3.5
      count: 4096           # instead of a histogram: calibrated without histograms

A tensor calibrated without histograms (min-max calibration reads none, so ``aicc quantize``
skips the binning) is written with ``count`` (its number of finite values) instead of
``histogram``: the profile says what it lacks, and a later setting whose range method needs the
histogram refuses that tensor instead of reading a one-bin one. Likewise a calibration that
observed only the tensors its quantize settings encode lists the others under ``skipped``
(optional, a list of names); quantizing one of them later is refused.

A profile whose ``graph_hash`` is not the graph being compiled is refused. Profiles of the same
graph calibrated apart (dataset shards, several runs) merge: min of mins, max of maxes, and
histograms re-binned onto the union range and summed. Counts are floats after re-binning; whole
counts are written as integers.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import yaml

from ..errors import ConfigError, did_you_mean, option_ref
from .histogram import Histogram, TensorStats
from .observers import TensorObserver

__all__ = [
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "MAX_HISTOGRAM_BINS",
    "Profile",
    "parse_profile",
    "profile_to_dict",
    "dump_profile_yaml",
    "load_profile_yaml",
    "merge_profiles",
]

PROFILE_FORMAT = "aicc-profile"
PROFILE_VERSION = 1
MAX_HISTOGRAM_BINS = 1 << 16
_TOP_KEYS = ("format", "version", "tools_version", "graph_hash", "num_histogram_bins", "tensors")
_OPTIONAL_TOP_KEYS = ("skipped",)
_TENSOR_KEYS = ("name", "min", "max", "histogram", "count", "nonfinite")
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclasses.dataclass(eq=False)
class Profile:
    """Calibration statistics of one graph, by tensor name (in the order they were recorded)."""

    graph_hash: str
    tools_version: str
    num_histogram_bins: int
    tensors: dict[str, TensorStats] = dataclasses.field(default_factory=dict)
    #: the file(s) it was read from, for errors about its contents (None: calibrated here)
    source: str | None = None

    #: float tensors calibration did not observe (the settings it calibrated for quantize none
    #: of them); a later setting that needs one of them refuses the profile
    skipped: tuple[str, ...] = ()

    @classmethod
    def from_observers(cls, observers: Iterable[TensorObserver], *, graph_hash: str,
                       tools_version: str, skipped: Iterable[str] = ()) -> Profile:
        """A profile from calibration observers (all with the same number of bins)."""
        observers = list(observers)
        bins = {o.num_bins for o in observers}
        if len(bins) > 1:
            raise ValueError(f"observers disagree on the number of bins: {sorted(bins)}")
        num_bins = bins.pop() if bins else 512
        return cls(graph_hash, tools_version, num_bins, {o.name: o.stats() for o in observers},
                   skipped=tuple(skipped))

    def __getitem__(self, name: str) -> TensorStats:
        return self.tensors[name]

    def __contains__(self, name: object) -> bool:
        return name in self.tensors


def _count(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def profile_to_dict(profile: Profile) -> dict:
    """The YAML-ready form (plain Python types only)."""
    tensors = []
    for st in profile.tensors.values():
        entry: dict[str, Any] = {"name": st.name, "min": float(st.min), "max": float(st.max)}
        if st.binned:
            entry["histogram"] = [_count(c) for c in st.histogram.counts]
        else:
            entry["count"] = st.count
        if st.nonfinite:
            entry["nonfinite"] = int(st.nonfinite)
        tensors.append(entry)
    out = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION,
           "tools_version": profile.tools_version, "graph_hash": profile.graph_hash,
           "num_histogram_bins": profile.num_histogram_bins, "tensors": tensors}
    if profile.skipped:
        out["skipped"] = list(profile.skipped)
    return out


def dump_profile_yaml(profile: Profile) -> str:
    """The profile as YAML text (safe_dump; histograms in flow style, one tensor per block)."""
    return yaml.safe_dump(profile_to_dict(profile), sort_keys=False, default_flow_style=None,
                          width=100)


def load_profile_yaml(text: str, *, where: str, expected_graph_hash: str | None = None) -> Profile:
    """Parse profile YAML text with ``yaml.safe_load`` (the CLI uses aicc's hardened loader)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", where=where) from e
    return parse_profile(data, where=where, expected_graph_hash=expected_graph_hash)


def _err(msg: str, where: str, field: str | None, hint: str | None = None) -> ConfigError:
    return ConfigError(msg, where=where, field=field, hint=hint)


def _number(value: Any, where: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = None
        if isinstance(value, str):
            hint = "YAML 1.1 reads 1e-3 as a string; write 1.0e-3"
        raise _err(f"expected a number, got {type(value).__name__} {value!r}", where, field, hint)
    value = float(value)
    if not math.isfinite(value):
        raise _err(f"expected a finite number, got {value}", where, field)
    return value


def _int(value: Any, where: str, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(f"expected an integer, got {value!r}", where, field)
    if value < minimum:
        raise _err(f"must be >= {minimum}, got {value}", where, field)
    return value


def _hash(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise _err(f"expected a hexadecimal string, got {value!r}", where, field,
                   "quote it in YAML so that digits-only hashes stay strings")
    return value.lower()


def parse_profile(data: Any, *, where: str, expected_graph_hash: str | None = None) -> Profile:
    """An already-loaded profile document -> Profile, validated field by field.

    Refused: another format or a newer version, unknown keys, a ``graph_hash`` other than
    ``expected_graph_hash`` (when given), non-numeric / non-finite / negative values, a histogram
    whose length is not ``num_histogram_bins``, both or neither of ``histogram`` and ``count``,
    min > max, a tensor listed twice.
    """
    if not isinstance(data, Mapping):
        raise _err(f"expected a mapping at the top level, got {type(data).__name__}", where, None)
    for key in data:
        if key not in _TOP_KEYS + _OPTIONAL_TOP_KEYS:
            raise _err(f"unknown key {key!r}", where, str(key),
                       did_you_mean(str(key), _TOP_KEYS + _OPTIONAL_TOP_KEYS))
    for key in _TOP_KEYS:
        if key not in data:
            raise _err(f"missing key '{key}'", where, key)
    if data["format"] != PROFILE_FORMAT:
        raise _err(f"not an aicc profile (format {data['format']!r})", where, "format",
                   f"expected format: {PROFILE_FORMAT}")
    version = _int(data["version"], where, "version", 1)
    if version != PROFILE_VERSION:
        raise _err(f"profile version {version} is not supported (this aicc reads version "
                   f"{PROFILE_VERSION})", where, "version",
                   f"re-create the profile with {option_ref('quantization.dump_profile')}")
    tools_version = data["tools_version"]
    if not isinstance(tools_version, str):
        raise _err(f"expected a string, got {tools_version!r}", where, "tools_version",
                   "quote it in YAML")
    graph_hash = _hash(data["graph_hash"], where, "graph_hash")
    if expected_graph_hash is not None and graph_hash != expected_graph_hash.lower():
        raise _err("profile belongs to another graph", where, "graph_hash",
                   f"profile hash {graph_hash[:16]}..., "
                   f"this graph {expected_graph_hash.lower()[:16]}...; "
                   f"re-run calibration with {option_ref('quantization.dump_profile')} on this "
                   "model")
    bins = _int(data["num_histogram_bins"], where, "num_histogram_bins", 1)
    if bins > MAX_HISTOGRAM_BINS:
        raise _err(f"{bins} bins is more than the maximum {MAX_HISTOGRAM_BINS}", where,
                   "num_histogram_bins")
    tensors = data["tensors"]
    if not isinstance(tensors, list):
        raise _err(f"expected a list of tensors, got {type(tensors).__name__}", where, "tensors")
    profile = Profile(graph_hash, tools_version, bins, source=where,
                      skipped=_skipped(data.get("skipped", []), where))
    for i, entry in enumerate(tensors):
        st = _tensor_entry(entry, i, bins, where)
        if st.name in profile.tensors:
            raise _err(f"tensor '{st.name}' listed twice", where,
                       f"tensors[{i}] ('{st.name}')")
        profile.tensors[st.name] = st
    both = [n for n in profile.skipped if n in profile.tensors]
    if both:
        raise _err(f"tensor '{both[0]}' is both listed and skipped", where, "skipped")
    return profile


def _tensor_entry(entry: Any, i: int, bins: int, where: str) -> TensorStats:
    """One ``tensors`` entry, validated: a histogram of ``bins`` bins, or a count (range only)."""
    field = f"tensors[{i}]"
    if not isinstance(entry, Mapping):
        raise _err(f"expected a mapping, got {type(entry).__name__}", where, field)
    name = entry.get("name")
    if isinstance(name, str) and name:
        field = f"tensors[{i}] ('{name}')"
    for key in entry:
        if key not in _TENSOR_KEYS:
            raise _err(f"unknown key {key!r}", where, f"{field}.{key}",
                       did_you_mean(str(key), _TENSOR_KEYS))
    for key in ("name", "min", "max"):
        if key not in entry:
            raise _err(f"missing key '{key}'", where, field)
    if "histogram" not in entry and "count" not in entry:
        raise _err("missing key 'histogram' (or 'count', for a tensor calibrated without "
                   "histograms)", where, field)
    if "histogram" in entry and "count" in entry:
        raise _err("both 'histogram' and 'count' given; a tensor has one or the other",
                   where, field)
    if not isinstance(name, str) or not name:
        raise _err(f"name must be a non-empty string, got {name!r}", where, f"{field}.name")
    lo = _number(entry["min"], where, f"{field}.min")
    hi = _number(entry["max"], where, f"{field}.max")
    if lo > hi:
        raise _err(f"min {lo} > max {hi}", where, field)
    nonfinite = _int(entry.get("nonfinite", 0), where, f"{field}.nonfinite", 0)
    if "count" in entry:
        count = _int(entry["count"], where, f"{field}.count", 0)
        if count == 0 and (lo, hi) != (0.0, 0.0):
            raise _err(f"count 0 with range [{lo}, {hi}]", where, f"{field}.count",
                       "a tensor with no finite values has min 0 and max 0")
        return TensorStats(name, Histogram(lo, hi, [float(count)]), nonfinite, binned=False)
    hist = entry["histogram"]
    if not isinstance(hist, list):
        raise _err(f"expected a list of counts, got {type(hist).__name__}", where,
                   f"{field}.histogram")
    if len(hist) != bins:
        raise _err(f"histogram has {len(hist)} bins, num_histogram_bins is {bins}", where,
                   f"{field}.histogram")
    counts = np.empty(bins)
    for j, c in enumerate(hist):
        v = _number(c, where, f"{field}.histogram[{j}]")
        if v < 0:
            raise _err(f"negative count {c}", where, f"{field}.histogram[{j}]")
        counts[j] = v
    return TensorStats(name, Histogram(lo, hi, counts), nonfinite)


def _skipped(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise _err("expected a list of tensor names", where, "skipped")
    return tuple(dict.fromkeys(value))


def merge_profiles(profiles: Iterable[Profile], *, where: str | None = None) -> Profile:
    """One profile of the union of the data of several profiles of the same graph.

    min/max are exact (min of mins, max of maxes); histograms are re-binned onto the union range and
    summed, so totals are exact. Tensors present in only some profiles are kept as they are.
    """
    profiles = list(profiles)
    if not profiles:
        raise ValueError("merge_profiles: nothing to merge")
    first = profiles[0]
    _check_skipped(profiles, where)
    merged = Profile(first.graph_hash, first.tools_version, first.num_histogram_bins,
                     {k: TensorStats(v.name, v.histogram.copy(), v.nonfinite, v.binned)
                      for k, v in first.tensors.items()}, source=where,
                     skipped=tuple(dict.fromkeys(n for p in profiles for n in p.skipped)))
    for i, p in enumerate(profiles[1:], start=1):
        if p.graph_hash.lower() != first.graph_hash.lower():
            raise ConfigError(f"profile {i} belongs to another graph than profile 0", where=where,
                              field="graph_hash", hint="merge only profiles of the same model")
        if p.num_histogram_bins != first.num_histogram_bins:
            raise ConfigError(f"profile {i} has {p.num_histogram_bins} histogram bins, profile 0 "
                              f"{first.num_histogram_bins}", where=where,
                              field="num_histogram_bins",
                              hint="calibrate every shard with the same "
                                   f"{option_ref('quantization.num_bins')}")
        for name, st in p.tensors.items():
            if name in merged.tensors:
                merged.tensors[name] = merged.tensors[name].merge(st)
            else:
                merged.tensors[name] = TensorStats(name, st.histogram.copy(), st.nonfinite,
                                                   st.binned)
    return merged


def _check_skipped(profiles: list[Profile], where: str | None) -> None:
    """A tensor one profile skipped and another measured would merge into statistics of part of
    the data: refused (calibrate every part with the same settings)."""
    for i, p in enumerate(profiles):
        for j, q in enumerate(profiles):
            clash = next((n for n in p.skipped if n in q.tensors), None)
            if clash is not None:
                raise ConfigError(f"profile {i} skipped tensor '{clash}', which profile {j} "
                                  "measured", where=where, field="skipped",
                                  hint="calibrate every part with the same settings")
