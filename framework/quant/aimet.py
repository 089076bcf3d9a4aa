"""AIMET / QNN quantization-encodings JSON (``--quantization_overrides``) <-> an EncodingsTable.

Two forms are read and written:

- the dict form (versions 0.4.0 .. 0.6.1, and files without a version), shown on the QNN page::

    {"version": "0.6.1",
     "activation_encodings": {"<tensor>": [{"bitwidth": 8, "dtype": "int",
                                            "is_symmetric": "False", "min": -1.0, "max": 1.0,
                                            "scale": ..., "offset": -128}]},
     "param_encodings": {...}, "excluded_layers": [...], "quantizer_args": {...}}

  one entry per tensor, or one per channel (per-channel); ``dtype: float`` with bitwidth 16/32 keeps
  the tensor in float; an int entry with only a bitwidth asks for that bitwidth with a calibrated
  range. As the QNN page says, "scale and offset will be calculated from the provided bw, min, and
  max parameters regardless if they are provided or not": aicc recomputes them with the ``tf``
  rules (``modes.tf_encoding``: step = (max - min) / (2^bw - 1), offset = round(-min / step), range
  shifted so that zero is an integer); given scale/offset are only checked to be numbers. The
  page's first example carries legacy positive offsets (``input:0`` ``offset: 127``,
  ``Conv2d/weights`` 140): those are ``trunc(-min / step)`` of old exporters (127.99999... -> 127);
  the recomputed offset is -128 (zero_point 128 in uint8), the ``round`` the page's own algorithm
  prescribes.
- the list form (version 1.0.0)::

    {"version": "1.0.0",
     "activation_encodings": [{"name": "x", "dtype": "INT", "enc_type": "PER_TENSOR", "bw": 8,
                               "is_sym": false, "scale": [0.01], "offset": [-128]}],
     "param_encodings": [...]}

  which has no min/max: scale and offset are taken as given.

Offset convention (converted here): AIMET/QNN write ``real = (q + offset) * scale`` with ``q`` the
*unsigned* integer, so ``offset <= 0``; aicc stores ONNX's ``zero_point = -offset`` for unsigned
storage. Symmetric encodings whose offset is -2^(bw-1) are stored signed with zero_point 0 (int8);
other encodings unsigned (uint8), since the file does not record a storage type (``with_storage``
changes it). Per-channel entries carry no axis: the consumer sets it (``Encoding.with_axis``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from ..configfile import load_json, load_yaml
from ..errors import ConfigError, did_you_mean
from ..options import FileValue
from .encodings import Encoding, check_bitwidth, combine_channels, qrange
from .modes import tf_encoding

__all__ = [
    "EncodingsTable",
    "EncodingsFile",
    "load_aimet_file",
    "parse_aimet_encodings",
    "export_aimet_encodings",
    "loads_aimet_json",
    "AIMET_FORMS",
]

logger = logging.getLogger(__name__)

AIMET_FORMS = ("0.6.1", "1.0.0")
_TOP_KEYS = ("version", "activation_encodings", "param_encodings", "excluded_layers",
             "quantizer_args", "producer")
_SECTIONS = ("activation_encodings", "param_encodings")
_LEGACY_KEYS = ("bitwidth", "dtype", "is_symmetric", "max", "min", "offset", "scale")
_V1_KEYS = ("name", "dtype", "enc_type", "bw", "is_sym", "scale", "offset", "block_size",
            "compressed_bw", "per_block_int_scale")
_V1_ENC_TYPES = ("PER_TENSOR", "PER_CHANNEL")
_V1_UNSUPPORTED = ("PER_BLOCK", "LPBQ", "VECTOR")


@dataclasses.dataclass
class EncodingsTable:
    """Encodings by tensor name: activations (op outputs, graph inputs) and params (weights,
    biases). ``excluded_layers`` and ``quantizer_args`` are kept as read, for reports."""

    activations: dict[str, Encoding] = dataclasses.field(default_factory=dict)
    params: dict[str, Encoding] = dataclasses.field(default_factory=dict)
    version: str | None = None
    excluded_layers: list[str] = dataclasses.field(default_factory=list)
    quantizer_args: dict[str, Any] = dataclasses.field(default_factory=dict)

    def get(self, name: str) -> Encoding | None:
        """The encoding of ``name`` (params first, then activations), or None."""
        return self.params.get(name, self.activations.get(name))

    def __contains__(self, name: object) -> bool:
        return name in self.params or name in self.activations

    def __len__(self) -> int:
        return len(self.params) + len(self.activations)

    def names(self) -> list[str]:
        return list(self.activations) + [n for n in self.params if n not in self.activations]

    def check_param_channels(self, name: str, expected: int, *, where: str | None = None) -> None:
        """Refuse a per-channel override of ``name`` whose entry count is not ``expected``."""
        enc = self.get(name)
        if enc is not None:
            enc.check_channels(expected, where=where, field=f"tensor '{name}'")

    def isclose(self, other: EncodingsTable, *, rel_tol: float = 1e-9) -> bool:
        """Same names and encodings up to float rounding (axis and storage compared as stored)."""
        for mine, theirs in ((self.activations, other.activations), (self.params, other.params)):
            if list(mine) != list(theirs):
                return False
            if not all(mine[k].isclose(theirs[k], rel_tol=rel_tol) for k in mine):
                return False
        return True


# ------------------------------------------------------------------------------ value checks
def _err(msg: str, where: str, field: str, hint: str | None = None) -> ConfigError:
    return ConfigError(msg, where=where, field=field, hint=hint)


def _number(value: Any, where: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(f"expected a number, got {type(value).__name__} {value!r}", where, field)
    value = float(value)
    if not math.isfinite(value):
        raise _err(f"expected a finite number, got {value}", where, field)
    return value


def _integer(value: Any, where: str, field: str) -> int:
    v = _number(value, where, field)
    if not v.is_integer():
        raise _err(f"expected an integer, got {value!r}", where, field)
    return int(v)


def _flag(value: Any, where: str, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _err(f"expected True or False, got {value!r}", where, field,
               'write "True"/"False" (0.x files) or true/false')


def _keys(entry: Any, allowed: tuple[str, ...], where: str, field: str) -> dict:
    if not isinstance(entry, dict):
        raise _err(f"expected an object, got {type(entry).__name__}", where, field)
    for key in entry:
        if key not in allowed:
            raise _err(f"unknown key {key!r}", where, f"{field}.{key}",
                       did_you_mean(str(key), allowed))
    return entry


def _dtype(value: Any, where: str, field: str) -> str:
    if isinstance(value, str) and value.strip().lower() in ("int", "float"):
        return value.strip().lower()
    raise _err(f"dtype must be 'int' or 'float', got {value!r}", where, field)


def _bitwidth(value: Any, dtype: str, where: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(f"bitwidth must be an integer, got {value!r}", where, field)
    return check_bitwidth(value, dtype=dtype, where=where, field=field)


def _from_scale_offset(scales: list[float], offsets: list[int], bw: int, sym: bool,
                       per_channel: bool, where: str, field: str) -> Encoding:
    """AIMET (scale, offset) pairs -> Encoding: zero_point = -offset (unsigned storage)."""
    hi_u = qrange(bw, False)[1]
    zps = []
    for i, off in enumerate(offsets):
        if not 0 <= -off <= hi_u:
            at = f"{field}.offset" + (f"[{i}]" if per_channel else "")
            raise _err(f"offset {off} puts zero outside the {bw}-bit range (must be in "
                       f"[{-hi_u}, 0])", where, at)
        zps.append(-off)
    for i, s in enumerate(scales):
        if s <= 0:
            raise _err(f"scale must be > 0, got {s}", where,
                       f"{field}.scale" + (f"[{i}]" if per_channel else ""))
    half = 1 << (bw - 1)
    enc = Encoding(bitwidth=bw, signed=False, symmetric=sym,
                   scale=tuple(scales) if per_channel else scales[0],
                   zero_point=tuple(zps) if per_channel else zps[0])
    if sym and all(z == half for z in zps):
        enc = enc.with_storage(True)
    return enc


# ------------------------------------------------------------------------------ 0.x dict form
def _legacy_entry(entry: Any, where: str, field: str) -> Encoding:
    entry = _keys(entry, _LEGACY_KEYS, where, field)
    dtype = _dtype(entry.get("dtype", "int"), where, f"{field}.dtype")
    if "bitwidth" not in entry:
        raise _err("missing 'bitwidth'", where, field)
    bw = _bitwidth(entry["bitwidth"], dtype, where, f"{field}.bitwidth")
    if dtype == "float":
        return Encoding.float_(bw)
    sym = _flag(entry.get("is_symmetric", False), where, f"{field}.is_symmetric")
    for key in ("scale", "offset"):
        if key in entry:
            _number(entry[key], where, f"{field}.{key}")
    if ("min" in entry) != ("max" in entry):
        missing = "max" if "min" in entry else "min"
        raise _err(f"missing '{missing}' (min and max go together)", where, field)
    if "min" in entry:
        lo = _number(entry["min"], where, f"{field}.min")
        hi = _number(entry["max"], where, f"{field}.max")
        if lo > hi:
            raise _err(f"min {lo} > max {hi}", where, field)
        # recomputed from bw/min/max as the QNN page says (tf rules), whatever scale/offset say
        enc = tf_encoding(lo, hi, bw, signed=False, name=field)
        half = 1 << (bw - 1)
        enc = dataclasses.replace(enc, symmetric=sym)
        if sym and enc.zero_point == half:
            enc = enc.with_storage(True)
        return enc
    if "scale" in entry or "offset" in entry:
        if not ("scale" in entry and "offset" in entry):
            raise _err("give min and max (or both scale and offset)", where, field)
        scale = _number(entry["scale"], where, f"{field}.scale")
        offset = _integer(entry["offset"], where, f"{field}.offset")
        return _from_scale_offset([scale], [offset], bw, sym, False, where, field)
    # bitwidth only: integer with a range still to be calibrated
    return Encoding(bitwidth=bw, signed=sym or bw == 32, symmetric=sym)


def _legacy_tensor(name: str, entries: Any, where: str, field: str) -> Encoding:
    if not isinstance(entries, list):
        raise _err(f"expected a list of encodings, got {type(entries).__name__}", where, field)
    if not entries:
        raise _err("empty list of encodings", where, field,
                   "give one encoding (per-tensor) or one per channel")
    encs = [_legacy_entry(e, where, f"{field}[{i}]") for i, e in enumerate(entries)]
    if len(encs) == 1:
        return encs[0]
    first = encs[0]
    for i, e in enumerate(encs):
        if e.is_float or not e.is_resolved:
            raise _err("per-channel entries must be integer encodings with min and max", where,
                       f"{field}[{i}]")
        if e.bitwidth != first.bitwidth:
            raise _err(f"channel bitwidth {e.bitwidth} differs from channel 0's "
                       f"{first.bitwidth}", where, f"{field}[{i}].bitwidth")
        if e.symmetric != first.symmetric:
            raise _err("channels differ in is_symmetric", where, f"{field}[{i}].is_symmetric")
    return combine_channels(encs, axis=None)


def _parse_legacy(data: dict, where: str, table: EncodingsTable) -> None:
    for section, target in (("activation_encodings", table.activations),
                            ("param_encodings", table.params)):
        sec = data[section]
        if not isinstance(sec, dict):
            raise _err(f"expected an object mapping tensor names to encodings, got "
                       f"{type(sec).__name__}", where, section,
                       "version 1.0.0 files use lists; set \"version\": \"1.0.0\"")
        for name, entries in sec.items():
            target[name] = _legacy_tensor(name, entries, where, f"{section}['{name}']")


# ------------------------------------------------------------------------------ 1.0.0 list form
def _v1_entry(entry: Any, where: str, field: str) -> tuple[str, Encoding]:
    entry = _keys(entry, _V1_KEYS, where, field)
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _err("missing or empty 'name'", where, field)
    field = f"{field} ('{name}')"
    if "dtype" not in entry:
        raise _err("missing 'dtype'", where, field)
    dtype = _dtype(entry["dtype"], where, f"{field}.dtype")
    if "bw" not in entry:
        raise _err("missing 'bw'", where, field)
    bw = _bitwidth(entry["bw"], dtype, where, f"{field}.bw")
    enc_type = entry.get("enc_type", "PER_TENSOR")
    if not isinstance(enc_type, str) or enc_type.upper() not in _V1_ENC_TYPES + _V1_UNSUPPORTED:
        raise _err(f"unknown enc_type {enc_type!r}", where, f"{field}.enc_type",
                   did_you_mean(str(enc_type), _V1_ENC_TYPES + _V1_UNSUPPORTED))
    enc_type = enc_type.upper()
    if enc_type in _V1_UNSUPPORTED:
        raise _err(f"enc_type {enc_type} is not supported yet", where, f"{field}.enc_type",
                   "supported: PER_TENSOR, PER_CHANNEL")
    if dtype == "float":
        if enc_type != "PER_TENSOR":
            raise _err("float encodings are per-tensor", where, f"{field}.enc_type")
        return name, Encoding.float_(bw)
    sym = _flag(entry.get("is_sym", False), where, f"{field}.is_sym")
    lists = {}
    for key in ("scale", "offset"):
        if key not in entry:
            raise _err(f"missing '{key}'", where, field)
        value = entry[key]
        if not isinstance(value, list):
            raise _err(f"expected a list, got {type(value).__name__}", where, f"{field}.{key}")
        if not value:
            raise _err("empty list", where, f"{field}.{key}")
        lists[key] = value
    scales = [_number(v, where, f"{field}.scale[{i}]") for i, v in enumerate(lists["scale"])]
    offsets = [_integer(v, where, f"{field}.offset[{i}]") for i, v in enumerate(lists["offset"])]
    if len(scales) != len(offsets):
        raise _err(f"{len(scales)} scales but {len(offsets)} offsets", where, field)
    per_channel = enc_type == "PER_CHANNEL"
    if not per_channel and len(scales) != 1:
        raise _err(f"PER_TENSOR needs exactly one scale, got {len(scales)}", where,
                   f"{field}.scale", "use enc_type PER_CHANNEL for one scale per channel")
    return name, _from_scale_offset(scales, offsets, bw, sym, per_channel, where, field)


def _parse_v1(data: dict, where: str, table: EncodingsTable) -> None:
    for section, target in (("activation_encodings", table.activations),
                            ("param_encodings", table.params)):
        sec = data[section]
        if not isinstance(sec, list):
            raise _err(f"expected a list of encodings, got {type(sec).__name__}", where, section,
                       "0.x files map names to lists; version 1.0.0 lists entries with a 'name'")
        for i, entry in enumerate(sec):
            name, enc = _v1_entry(entry, where, f"{section}[{i}]")
            if name in target:
                raise _err(f"tensor '{name}' listed twice", where, f"{section}[{i}]")
            target[name] = enc


# ------------------------------------------------------------------------------ public API
def parse_aimet_encodings(data: Any, *, where: str) -> EncodingsTable:
    """An already-loaded AIMET encodings document (either form) -> EncodingsTable.

    Errors are ConfigErrors naming ``where`` (the file) and the field (section, tensor, entry, key).
    """
    if not isinstance(data, dict):
        raise _err(f"expected a JSON object at the top level, got {type(data).__name__}", where,
                   "(top level)")
    for key in data:
        if key not in _TOP_KEYS:
            raise _err(f"unknown top-level key {key!r}", where, str(key),
                       did_you_mean(str(key), _TOP_KEYS))
    for section in _SECTIONS:
        if section not in data:
            raise _err(f"missing section '{section}'", where, section,
                       "both activation_encodings and param_encodings must be present "
                       "(either may be empty)")
    version = data.get("version")
    if version is not None and not isinstance(version, str):
        raise _err(f"version must be a string, got {version!r}", where, "version")
    table = EncodingsTable(version=version)
    excluded = data.get("excluded_layers", [])
    if not isinstance(excluded, list) or not all(isinstance(x, str) for x in excluded):
        raise _err("expected a list of layer names", where, "excluded_layers")
    table.excluded_layers = list(excluded)
    qargs = data.get("quantizer_args", {})
    if not isinstance(qargs, dict):
        raise _err("expected an object", where, "quantizer_args")
    table.quantizer_args = dict(qargs)
    if version is None:
        lists = isinstance(data["activation_encodings"], list) or \
            isinstance(data["param_encodings"], list)
        (_parse_v1 if lists else _parse_legacy)(data, where, table)
    elif re.fullmatch(r"0\.\d+(\.\d+)?", version):
        _parse_legacy(data, where, table)
    elif re.fullmatch(r"1\.0(\.\d+)?", version):
        _parse_v1(data, where, table)
    else:
        raise _err(f"encodings version {version!r} is not supported", where, "version",
                   "supported: 0.4.0 - 0.6.1 (dict form) and 1.0.0 (list form)")
    return table


def loads_aimet_json(text: str, *, where: str) -> EncodingsTable:
    """Parse AIMET encodings JSON text strictly: duplicate keys and NaN/Infinity are refused."""
    def pairs(items: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for k, v in items:
            if k in out:
                raise _err(f"duplicate key {k!r}", where, str(k))
            out[k] = v
        return out

    def constant(name: str) -> Any:
        raise _err(f"{name} is not a valid number here", where, "(json)")

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as e:
        raise ConfigError(f"not valid JSON: {e.msg}", where=where,
                          field=f"line {e.lineno} column {e.colno}") from e
    return parse_aimet_encodings(data, where=where)


def load_aimet_file(path: str | Path) -> EncodingsTable:
    """An AIMET encodings file (JSON; YAML if it ends in .yaml/.yml), read with aicc's hardened
    loaders (duplicate keys, NaN/Infinity, size and encoding checked), then validated."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        data = load_yaml(path, what=EncodingsFile.what)
    else:
        data = load_json(path, what=EncodingsFile.what)
    return parse_aimet_encodings(data, where=str(path))


class EncodingsFile(FileValue):
    """An AIMET encodings file (``quantization.encodings``, ``--quantization_overrides``), read
    once: ``value`` is its EncodingsTable, which the passes given the instance only read."""

    what = "quantization overrides"

    @classmethod
    def parse(cls, path: str | Path) -> EncodingsTable:
        return load_aimet_file(path)


def _legacy_export_entry(enc: Encoding) -> list[dict]:
    if enc.is_float:
        return [{"bitwidth": enc.bitwidth, "dtype": "float"}]
    if not enc.is_resolved:
        return [{"bitwidth": enc.bitwidth, "dtype": "int",
                 "is_symmetric": str(enc.symmetric)}]
    out = []
    for ch in enc.channels():
        out.append({"bitwidth": ch.bitwidth, "dtype": "int", "is_symmetric": str(ch.symmetric),
                    "max": ch.max, "min": ch.min, "offset": ch.aimet_offset, "scale": ch.scale})
    return out


def _v1_export_entry(name: str, enc: Encoding) -> dict:
    if enc.is_float:
        return {"name": name, "dtype": "FLOAT", "enc_type": "PER_TENSOR", "bw": enc.bitwidth}
    if not enc.is_resolved:
        raise ConfigError(f"tensor '{name}' has no calibrated range; the 1.0.0 form needs scale "
                          "and offset", hint="export after calibration, or use form 0.6.1")
    chans = enc.channels()
    return {"name": name, "dtype": "INT",
            "enc_type": "PER_CHANNEL" if enc.per_channel else "PER_TENSOR",
            "bw": enc.bitwidth, "is_sym": enc.symmetric,
            "scale": [c.scale for c in chans], "offset": [c.aimet_offset for c in chans]}


def export_aimet_encodings(table: EncodingsTable, form: str = "0.6.1") -> dict:
    """EncodingsTable -> a JSON-ready dict in the 0.6.1 dict form or the 1.0.0 list form.

    ``parse_aimet_encodings`` reads the result back to the same table (up to float rounding in
    the 0.6.1 form, which recomputes scale and offset from min and max; per-channel axes are not
    recorded by either form, and asymmetric encodings come back with unsigned storage).
    """
    if form not in AIMET_FORMS:
        raise ConfigError(f"unknown AIMET encodings form {form!r}", field="form",
                          hint=f"valid: {', '.join(AIMET_FORMS)}")
    if form == "0.6.1":
        return {"version": "0.6.1",
                "activation_encodings": {n: _legacy_export_entry(e)
                                         for n, e in table.activations.items()},
                "param_encodings": {n: _legacy_export_entry(e) for n, e in table.params.items()},
                "excluded_layers": list(table.excluded_layers)}
    return {"version": "1.0.0",
            "activation_encodings": [_v1_export_entry(n, e) for n, e in table.activations.items()],
            "param_encodings": [_v1_export_entry(n, e) for n, e in table.params.items()],
            "excluded_layers": list(table.excluded_layers)}
