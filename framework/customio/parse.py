"""Reading the custom I/O list: the loaded YAML document in, validated ``CustomIOEntry`` values out.

Every rule of the vendor's format (``seeds/custom-io.txt``) is checked here, each refusal naming the
file, the entry and the field; checks against the model run when its inputs and outputs are given.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..configfile import load_yaml
from ..errors import ConfigError, did_you_mean, option_ref
from ..program import TensorDesc
from .vocabulary import KEYS, LAYOUTS, MODEL_PRECISION, PRECISIONS, REFUSED_PRECISIONS

__all__ = ["CustomIOEntry", "parse_custom_io", "load_custom_io"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CustomIOEntry:
    """One validated entry: which model input or output, and its custom layout and precision.

    ``scale``/``offset`` are kept only for int8 (vendor convention ``real = (q - offset) * scale``).
    ``entry`` is the 1-based position of the entry in the file (the first, for merged repeats).
    """

    name: str
    direction: str
    layout: str | None = None
    precision: str | None = None
    scale: float | None = None
    offset: int | None = None
    entry: int = 0

    def settings(self) -> tuple:
        return (self.layout, self.precision, self.scale, self.offset)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_custom_io(data: Any, path: str | Path, inputs: Sequence[TensorDesc] | None,
                    outputs: Sequence[TensorDesc] | None, *, external_quantization: bool = False,
                    notes: list[str] | None = None) -> list[CustomIOEntry]:
    """Validate a loaded custom I/O document against the model's I/O (every rule of the seed).

    With ``inputs``/``outputs`` None only the file itself is checked (keys, types, values,
    repeats), as the CLI does before any work starts; the pass checks against the model.
    With ``external_quantization``, int8 entries need no Scale/Offset (the external encodings
    supply them) and any given are ignored. Merged repeats and ignored fields are appended to
    ``notes`` (and logged).
    """
    model = _ModelIO(inputs, outputs)
    path = Path(path)
    notes = notes if notes is not None else []
    _check_document(data, path)
    result: dict[str, CustomIOEntry] = {}
    for i, raw in enumerate(data, start=1):
        entry = _parse_entry(i, raw, path, model, external_quantization, notes)
        if _is_repeat(result, entry, path, notes):
            continue
        result[entry.name] = entry
    return list(result.values())


def load_custom_io(path: str | Path, inputs: Sequence[TensorDesc], outputs: Sequence[TensorDesc],
                   **kw: Any) -> list[CustomIOEntry]:
    """Read (hardened YAML) and validate a custom I/O list file."""
    return parse_custom_io(load_yaml(path, what="custom I/O list file"), path, inputs, outputs,
                           **kw)


class _ModelIO:
    """The model's inputs and outputs by name, which entries must name.

    Without the model (``known`` False) any name is accepted as an input of unknown shape.
    """

    def __init__(self, inputs: Sequence[TensorDesc] | None,
                 outputs: Sequence[TensorDesc] | None):
        self.known = inputs is not None and outputs is not None
        self.inputs, self.outputs = list(inputs or []), list(outputs or [])
        self.by_name = {d.name: ("input", d) for d in self.inputs}
        for d in self.outputs:
            self.by_name[d.name] = ("both", d) if d.name in self.by_name else ("output", d)

    def lookup(self, name: str, path: Path, field: str) -> tuple[str, TensorDesc]:
        """(direction, descriptor) of the tensor an entry names; refuses unknown names and
        tensors that are both an input and an output."""
        if not self.known:
            self.by_name.setdefault(name, ("input", TensorDesc(name, "float32", None)))
        if name not in self.by_name:
            close = did_you_mean(name, self.by_name)
            raise ConfigError(
                "no such model input or output", where=path, field=field,
                hint=(f"{close} " if close.startswith("did") else "")
                + f"inputs are {', '.join(d.name for d in self.inputs) or 'none'}; outputs are "
                  f"{', '.join(d.name for d in self.outputs) or 'none'}")
        direction, desc = self.by_name[name]
        if direction == "both":
            raise ConfigError(f"'{name}' is both a model input and a model output; custom I/O "
                              "cannot change one side only", where=path, field=field)
        return direction, desc


def _check_document(data: Any, path: Path) -> None:
    if not isinstance(data, list):
        raise ConfigError(f"expected a list of entries (- IOName: ...), got {type(data).__name__}",
                          where=path,
                          hint=f"see {option_ref('dump_custom_io_template')} for the format")
    if not data:
        raise ConfigError("the file lists no entries", where=path,
                          hint="list the inputs and outputs to change, or drop the flag")


def _parse_entry(i: int, raw: Any, path: Path, model: _ModelIO, external_quantization: bool,
                 notes: list[str]) -> CustomIOEntry:
    """Entry ``i`` of the file, validated (repeats are the caller's business)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping (IOName, Layout, Precision, Scale, Offset), got "
                          f"{type(raw).__name__} {raw!r}", where=path, field=f"entry {i}")
    name = raw.get("IOName")
    field = _where_entry(i, name)
    _check_keys(raw, path, field)
    if "IOName" not in raw:
        raise ConfigError("missing IOName", where=path, field=field)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"IOName must be a non-empty string, got {name!r}", where=path,
                          field=field, hint="quote names that look like numbers")
    direction, desc = model.lookup(name, path, field)
    layout = _layout(raw.get("Layout"), desc, model.known, path, field)
    precision = _precision(raw.get("Precision"), path, field)
    if precision is not None and model.known:
        _check_precision_fits(precision, desc, layout, path, field)
    scale, offset = _scale_offset(raw, precision, external_quantization, path, field, notes)
    if layout is None and precision is None:
        _note(notes, f"{path}: {field}: neither Layout nor Precision given; nothing changes")
    return CustomIOEntry(name, direction, layout, precision, scale, offset, i)


def _where_entry(i: int, name: Any) -> str:
    return f"entry {i}" + (f" (IOName '{name}')" if isinstance(name, str) and name else "")


def _check_keys(raw: dict, path: Path, field: str) -> None:
    for key in raw:
        if key not in KEYS:
            same = [k for k in KEYS if k.lower() == str(key).lower()]
            raise ConfigError(f"unknown key {key!r}", where=path, field=field,
                              hint=f"did you mean '{same[0]}'? keys are case-sensitive"
                              if same else did_you_mean(str(key), KEYS))


def _layout(layout: Any, desc: TensorDesc, model_known: bool, path: Path,
            field: str) -> str | None:
    if layout is None:
        return None
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ConfigError(f"Layout {layout!r} is not supported", where=path, field=field,
                          hint="NCHW or NHWC; skip the field for other layouts")
    rank = None if desc.shape is None else len(desc.shape)
    if rank != 4 and model_known:
        raise ConfigError(f"Layout applies only to rank-4 tensors; '{desc.name}' has "
                          f"{'unknown rank' if rank is None else f'rank {rank}'}",
                          where=path, field=field, hint="skip the Layout field")
    return layout


def _precision(precision: Any, path: Path, field: str) -> str | None:
    """The Precision field checked on its own: a string naming a supported precision."""
    if precision is None:
        return None
    if not isinstance(precision, str):
        raise ConfigError(f"Precision must be a string, got {precision!r}", where=path,
                          field=field, hint=f"one of {', '.join(PRECISIONS)}")
    if precision in REFUSED_PRECISIONS:
        raise ConfigError(f"Precision {precision} is refused: {REFUSED_PRECISIONS[precision]}",
                          where=path, field=field, hint=f"one of {', '.join(PRECISIONS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"Precision {precision!r} is not supported", where=path,
                          field=field, hint=did_you_mean(precision, PRECISIONS))
    return precision


def _check_precision_fits(precision: str, desc: TensorDesc, layout: str | None, path: Path,
                          field: str) -> None:
    """The Precision checked against the model tensor it changes."""
    if desc.dtype not in MODEL_PRECISION:
        raise ConfigError(f"Precision can change only for float, float16 or int8 model "
                          f"I/O; '{desc.name}' is {desc.dtype}", where=path, field=field,
                          hint="skip the Precision field for this tensor")
    if precision != "mxint8":
        return
    if desc.dtype == "int8":
        raise ConfigError("mxint8 applies to float or float16 tensors (KV caches); "
                          f"'{desc.name}' is int8", where=path, field=field)
    axis = 1 if layout == "NHWC" else -1
    if not desc.shape or not isinstance(desc.shape[axis], int):
        raise ConfigError(f"mxint8 needs a static size along the blocked (last) axis; "
                          f"'{desc.name}' has shape {desc.shape}", where=path, field=field,
                          hint=f"bind the symbol with {option_ref('symbols')}")


def _scale_offset(raw: dict, precision: str | None, external_quantization: bool, path: Path,
                  field: str, notes: list[str]) -> tuple[float | None, int | None]:
    """Scale and Offset: required for int8 (unless external quantization supplies them), else
    ignored with a note."""
    scale, offset = raw.get("Scale"), raw.get("Offset")
    if scale is not None:
        scale = _number(scale, path, f"{field}: Scale")
    if offset is not None:
        offset = _offset(offset, path, f"{field}: Offset")
    if precision == "int8" and not external_quantization:
        missing = [k for k, v in (("Scale", scale), ("Offset", offset)) if v is None]
        if missing:
            raise ConfigError(f"Precision int8 needs Scale and Offset; {' and '.join(missing)} "
                              "missing", where=path, field=field,
                              hint="real = (q - Offset) * Scale; see "
                                   "-dump-custom-IO-config-template=FILE,PROFILE")
    elif scale is not None or offset is not None:
        why = ("external quantization supplies them" if precision == "int8"
               else f"they apply only to int8, not {precision or 'an unchanged precision'}")
        _note(notes, f"{path}: {field}: Scale/Offset ignored ({why})")
        scale = offset = None
    return scale, offset


def _number(value: Any, path: Path, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = "write a number such as 0.12" + (
            " (quote-free)" if isinstance(value, str) else "")
        raise ConfigError(f"Scale must be a number, got {type(value).__name__} {value!r}",
                          where=path, field=field, hint=hint)
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"Scale must be a positive finite number, got {value}", where=path,
                          field=field)
    return value


def _offset(value: Any, path: Path, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"Offset must be an integer, got {type(value).__name__} {value!r}",
                          where=path, field=field, hint="int8 offsets are integers in [-128, 127]")
    if not -128 <= value <= 127:
        raise ConfigError(f"Offset {value} is outside the int8 range [-128, 127]", where=path,
                          field=field)
    return value


def _is_repeat(seen: dict[str, CustomIOEntry], entry: CustomIOEntry, path: Path,
               notes: list[str]) -> bool:
    """Whether ``entry`` repeats an earlier one with the same settings (merged, with a note);
    a repeat with different settings is refused."""
    first = seen.get(entry.name)
    if first is None:
        return False
    field = _where_entry(entry.entry, entry.name)
    if first.settings() != entry.settings():
        raise ConfigError(f"'{entry.name}' is listed twice with different settings (entry "
                          f"{first.entry}: {_describe(first)}; entry {entry.entry}: "
                          f"{_describe(entry)})", where=path, field=field,
                          hint="keep one entry per input or output")
    _note(notes, f"{path}: {field}: repeats entry {first.entry} with the same settings; merged")
    return True


def _describe(e: CustomIOEntry) -> str:
    parts = [f"Layout {e.layout}" if e.layout else "", f"Precision {e.precision}" if e.precision
             else "", f"Scale {e.scale}" if e.scale is not None else "",
             f"Offset {e.offset}" if e.offset is not None else ""]
    return ", ".join(p for p in parts if p) or "no change"


def _note(notes: list[str], text: str) -> None:
    logger.info("%s", text)
    notes.append(text)
