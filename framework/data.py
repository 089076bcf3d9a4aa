"""Input data from files: raw tensors, .npy arrays, QNN-style input lists and the vendor runner's
JSON input files (``-json-input-file``, one inner list of buffers per inference).

Dtype and shape always come from the program (the model, bound symbols, custom I/O), never from
the file: a file of the wrong size or dtype is refused with expected and actual sizes, never
reinterpreted. Only regular files are read, and ``.npy`` files are loaded without pickles.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ml_dtypes  # noqa: F401  (names bfloat16, float8_*, int4, ... as numpy dtypes)
import numpy as np

from .errors import ConfigError, DataError, did_you_mean, option_ref
from .program import TensorDesc

if TYPE_CHECKING:
    from .program import Program

__all__ = ["read_tensor_file", "InputList", "parse_input_list", "parse_input_args",
           "parse_json_input_file", "spec_input_shapes", "match_shapes", "merged_input_descs",
           "program_input_descs", "JSON_DATA_TYPES", "regular_file_size",
           "check_tensor_file"]


def regular_file_size(path: Path, where: str) -> int:
    """The size of a regular file; anything else (missing, a directory, a FIFO) is refused."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"data file '{path}' not found", where=where) from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"'{path}' is not a regular file", where=where)
    return st.st_size


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    return tuple(shape), np.dtype(dtype)


_SYMBOLIC_HINT = (f"bind the symbols ({option_ref('symbols')}), or use a .npy file or "
                  f"{option_ref('json_input_file')}")


def _npy_carries(stored: np.dtype, dtype: np.dtype) -> bool:
    """.npy cannot name ml_dtypes' types (bfloat16, float8, int4, ...): ``np.save`` writes their
    arrays as plain void ``|V<size>``. Such a file is accepted for an input of one of those types
    when the item size matches: the bytes are the values, nothing is converted."""
    return (dtype.kind == "V" and dtype.names is None and stored.kind == "V"
            and stored.names is None and stored.itemsize == dtype.itemsize
            and stored.subdtype is None)


def check_tensor_file(path: str | Path, desc: TensorDesc, *, where: str | None = None,
                      shape: list[int] | None = None, symbolic_hint: str = _SYMBOLIC_HINT
                      ) -> None:
    """Refuse what ``read_tensor_file`` would, from the file's size or .npy header alone, so a
    whole input list can be checked before any sample is read."""
    path = Path(path)
    where = where or str(path)
    shape = shape if shape is not None else desc.shape
    size = regular_file_size(path, where)
    dtype = np.dtype(desc.dtype)
    static = shape is not None and all(isinstance(d, int) for d in shape)
    if path.suffix == ".npy":
        try:
            fshape, fdtype = _npy_header(path)
        except (ValueError, OSError) as e:
            raise DataError(f"'{path}' is not a plain .npy array ({e})", where=where) from None
        if fdtype.hasobject:
            raise DataError(f"'{path}' is not a plain .npy array (it holds Python objects)",
                            where=where)
        if fdtype != dtype and not _npy_carries(fdtype, dtype):
            raise DataError(f"'{path}' holds {fdtype}, input '{desc.name}' is {dtype}",
                            where=where, hint="convert the data; aicc never reinterprets it")
        if static and list(fshape) != list(shape):
            raise DataError(f"'{path}' has shape {list(fshape)}, input '{desc.name}' expects "
                            f"{list(shape)}", where=where)
        return
    if not static:
        raise DataError(f"input '{desc.name}' has symbolic shape {shape}; a raw file cannot say "
                        "its shape", where=where, hint=symbolic_hint)
    expected = math.prod(shape) * dtype.itemsize
    if size != expected:
        raise DataError(f"'{path}' has {size} bytes; input '{desc.name}' ({dtype}, "
                        f"{list(shape)}) needs {expected}", where=where)


def read_tensor_file(path: str | Path, desc: TensorDesc, *, where: str | None = None,
                     shape: list[int] | None = None) -> np.ndarray:
    """Read one input tensor: a ``.npy`` file, or raw little-endian bytes of desc's dtype/shape."""
    path = Path(path)
    shape = shape if shape is not None else desc.shape
    check_tensor_file(path, desc, where=where, shape=shape)
    dtype = np.dtype(desc.dtype)
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise DataError(f"'{path}' is not a plain .npy array ({e})",
                            where=where or str(path)) from None
        return arr.view(dtype) if _npy_carries(arr.dtype, dtype) else arr
    return np.fromfile(path, dtype=dtype.newbyteorder("<"), count=math.prod(shape)) \
        .astype(dtype, copy=False).reshape(shape)


@dataclass
class InputList:
    """A parsed input list: per sample, input name -> file; plus requested outputs."""

    path: Path
    samples: list[dict[str, Path]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    output_layers: list[str] = field(default_factory=list)
    output_tensors: list[str] = field(default_factory=list)


def parse_input_list(path: str | Path, input_names: list[str]) -> InputList:
    """Parse the QNN input-list format.

    One line per sample: paths in input order, or ``name:=path`` pairs, separated by spaces;
    ``#name ...`` lines name output layers and ``%name ...`` lines output tensors; blank lines,
    CRLF endings and trailing spaces are fine; relative paths resolve against the list's folder.
    """
    path = Path(path)
    regular_file_size(path, str(path))
    text = path.read_bytes()
    try:
        lines = text.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError("input list is not UTF-8 text", where=path) from None
    result = InputList(path)
    base = path.resolve().parent
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            result.output_layers.extend(line[1:].split())
            continue
        if line.startswith("%"):
            result.output_tensors.extend(line[1:].split())
            continue
        where = f"{path}: line {number}"
        sample: dict[str, Path] = {}
        tokens = line.split()
        for position, token in enumerate(tokens):
            name, sep, file = token.partition(":=")
            if not sep:
                if position >= len(input_names):
                    raise DataError(f"{len(tokens)} files for {len(input_names)} inputs "
                                    f"({', '.join(input_names)})", where=where)
                name, file = input_names[position], token
            elif name not in input_names:
                raise DataError(f"no input named '{name}'", where=where,
                                hint=f"inputs: {', '.join(input_names)}")
            if name in sample:
                raise DataError(f"input '{name}' is given twice", where=where)
            p = Path(file)
            p = p if p.is_absolute() else base / p
            if not p.exists():
                raise DataError(f"data file '{file}' not found (looked in {p.parent})",
                                where=where)
            sample[name] = p
        missing = [n for n in input_names if n not in sample]
        if missing:
            raise DataError(f"no file for input(s) {', '.join(missing)}", where=where,
                            hint=f"give {len(input_names)} files, or name:=path pairs")
        result.samples.append(sample)
        result.lines.append(number)
    if not result.samples:
        raise DataError("input list has no samples", where=path)
    return result


def parse_input_args(items: list[str], input_names: list[str]) -> dict[str, Path]:
    """``-i FILE`` arguments: in input order, or ``name:=FILE``."""
    sample: dict[str, Path] = {}
    for position, item in enumerate(items):
        name, sep, file = item.partition(":=")
        if not sep:
            if position >= len(input_names):
                raise DataError(f"{len(items)} input files for {len(input_names)} inputs", where="-i")
            name, file = input_names[position], item
        elif name not in input_names:
            raise DataError(f"no input named '{name}'", where="-i",
                            hint=f"inputs: {', '.join(input_names)}")
        sample[name] = Path(file)
    missing = [n for n in input_names if n not in sample]
    if missing:
        raise DataError(f"no file for input(s) {', '.join(missing)}", where="-i")
    return sample


#: ``data-type`` names of JSON input files -> numpy dtypes (the vendor's names and numpy's).
JSON_DATA_TYPES = {
    "float": "float32", "float32": "float32", "fp32": "float32",
    "float16": "float16", "half": "float16", "fp16": "float16",
    "double": "float64", "float64": "float64",
    "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16",
    "int32": "int32", "uint32": "uint32", "int64": "int64", "uint64": "uint64", "bool": "bool",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    **{n: n for n in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")},
}
_JSON_ENTRY_KEYS = ("path", "io-direction", "map-to", "data-type", "elem-size", "dims")


def merged_input_descs(specs: Sequence[Sequence[TensorDesc]]) -> list[TensorDesc]:
    """One descriptor per input over several specializations' inputs: the first's name and
    dtype, with each dim kept where all agree and None (any) where they differ."""
    out = []
    for i, first in enumerate(specs[0]):
        shapes = [s[i].shape for s in specs]
        if any(sh is None for sh in shapes) or len({len(sh) for sh in shapes}) != 1:
            shape = None
        else:
            shape = [col[0] if all(c == col[0] for c in col) else None for col in zip(*shapes)]
        out.append(TensorDesc(first.name, first.dtype, shape, first.layout))
    return out


def _graph_input_descs(program: "Program", graph: Any, interface: bool) -> list[TensorDesc]:
    from .program import describe_tensor
    descs = [describe_tensor(t) for t in graph.inputs]
    if interface and program.custom_io:
        from .customio import HostConversions
        descs = HostConversions.from_meta({"custom_io": program.custom_io}).interface(descs)
    return descs


def program_input_descs(program: "Program", *, interface: bool = False) -> list[TensorDesc]:
    """The inputs of a (possibly specialized) Program, merged over its graphs. With
    ``interface``, as callers of the compiled program give them: custom I/O converted on the host
    shows its custom dtype and layout (convert such data with ``HostConversions.convert``)."""
    return merged_input_descs([_graph_input_descs(program, g, interface)
                               for g in program.graphs.values()])


def spec_input_shapes(program: "Program", *, interface: bool = False
                      ) -> dict[str, dict[str, list[Any]]]:
    """Per graph (specialization) of ``program``, its input shapes by input name (``interface``:
    as in ``program_input_descs``)."""
    return {name: {d.name: list(d.shape) if d.shape is not None else None
                   for d in _graph_input_descs(program, g, interface)}
            for name, g in program.graphs.items()}


def _dims_fit(dims: Sequence[int], shape: Sequence[Any] | None) -> bool:
    if shape is None:
        return True
    return len(dims) == len(shape) and all(
        not isinstance(s, int) or s < 0 or s == d for d, s in zip(dims, shape))


def match_shapes(feeds: Mapping[str, np.ndarray],
                 shapes: Mapping[str, Mapping[str, Sequence[Any] | None]]) -> str | None:
    """The first specialization (by ``spec_input_shapes``) whose inputs fit ``feeds``, or None."""
    for name, spec in shapes.items():
        if all(_dims_fit(arr.shape, spec.get(n)) for n, arr in feeds.items() if n in spec):
            return name
    return None


def _shape_list(spec: Mapping[str, Any]) -> str:
    return ", ".join(f"{n}{list(s) if s is not None else '?'}" for n, s in spec.items())


def parse_json_input_file(path: str | Path, inputs: Sequence[TensorDesc], *,
                          shapes: Mapping[str, Mapping[str, Sequence[Any] | None]] | None = None,
                          require_all_shapes: bool = False,
                          optional: Collection[str] = ()) -> list[dict[str, np.ndarray]]:
    """Read a vendor JSON input file: one feeds dict per inference, data checked and loaded.

    The file is ``{"IO-files": [[{"path", "io-direction": "in", "map-to": INPUT,
    "data-type" and/or "elem-size", "dims": [...]}, ...], ...]}``; paths are relative to the JSON
    file's folder. ``inputs`` give the names and dtypes the program takes (a ``data-type`` or
    ``elem-size`` that disagrees is refused, never reinterpreted) and static dims that must match.
    With ``shapes`` (see ``spec_input_shapes``), each inference must fit one specialization, and
    with ``require_all_shapes`` every specialization needs at least one inference (calibration).
    Inputs in ``optional`` (retained state) may be left out.
    """
    from .configfile import load_json

    path = Path(path)
    data = load_json(path, what="JSON input file")
    if not isinstance(data, dict) or "IO-files" not in data:
        raise ConfigError('expected an object with an "IO-files" list', where=path,
                          hint='write {"IO-files": [[{"path": ..., "io-direction": "in", '
                               '"map-to": ..., "data-type": ..., "dims": [...]}]]}')
    for key in data:
        if key != "IO-files":
            raise ConfigError(f"unknown key '{key}'", where=path,
                              hint=did_you_mean(key, ["IO-files"]))
    runs = data["IO-files"]
    if not isinstance(runs, list) or not runs:
        raise ConfigError('"IO-files" must be a non-empty list (one list per inference)',
                          where=path)
    descs = {d.name: d for d in inputs}
    required = [n for n in descs if n not in set(optional)]
    result: list[dict[str, np.ndarray]] = []
    matched: set[str] = set()
    for i, run in enumerate(runs, start=1):
        where_run = f"inference {i}"
        if not isinstance(run, list) or not run:
            raise ConfigError("must be a non-empty list of input buffers", where=path,
                              field=where_run)
        feeds: dict[str, np.ndarray] = {}
        for j, entry in enumerate(run, start=1):
            feeds_name, arr = _json_entry(entry, path, f"{where_run}: entry {j}", descs)
            if feeds_name in feeds:
                raise ConfigError(f"input '{feeds_name}' is given twice", where=path,
                                  field=f"{where_run}: entry {j}")
            feeds[feeds_name] = arr
        missing = [n for n in required if n not in feeds]
        if missing:
            raise ConfigError(f"no buffer for input(s) {', '.join(missing)}", where=path,
                              field=where_run)
        if shapes is not None:
            spec = match_shapes(feeds, shapes)
            if spec is None:
                got = ", ".join(f"{n}{list(a.shape)}" for n, a in feeds.items())
                have = "; ".join(f"{s}: {_shape_list(v)}" for s, v in shapes.items())
                raise DataError(f"no specialization takes {got}", where=path, field=where_run,
                                hint=f"available: {have}")
            matched.add(spec)
        result.append(feeds)
    if require_all_shapes and shapes is not None:
        lacking = [s for s in shapes if s not in matched]
        if lacking:
            raise DataError(f"no inference has the shapes of specialization(s) "
                            f"{', '.join(lacking)}", where=path,
                            hint="give at least one input set per specialization: "
                                 + "; ".join(f"{s}: {_shape_list(shapes[s])}" for s in lacking))
    return result


def _json_entry(entry: Any, path: Path, where: str,
                descs: Mapping[str, TensorDesc]) -> tuple[str, np.ndarray]:
    from .configfile import resolve_relative

    if not isinstance(entry, dict):
        raise ConfigError(f"is {type(entry).__name__}, expected an object", where=path,
                          field=where)
    for key in entry:
        if key not in _JSON_ENTRY_KEYS:
            raise ConfigError(f"unknown key '{key}'", where=path, field=where,
                              hint=did_you_mean(key, _JSON_ENTRY_KEYS))
    for key in ("path", "io-direction", "map-to", "dims"):
        if key not in entry:
            raise ConfigError(f"has no '{key}'", where=path, field=where)
    direction = entry["io-direction"]
    if direction != "in":
        raise ConfigError(f"io-direction {direction!r} is not supported", where=path,
                          field=where, hint="list input buffers only (\"io-direction\": \"in\"); "
                                            "use --write-output-dir for outputs")
    name = entry["map-to"]
    if not isinstance(name, str) or name not in descs:
        raise ConfigError(f"map-to {name!r} names no input of the program", where=path,
                          field=where, hint=did_you_mean(str(name), descs))
    desc = descs[name]
    dtype = np.dtype(desc.dtype)
    if "data-type" not in entry and "elem-size" not in entry:
        raise ConfigError("has neither 'data-type' nor 'elem-size'", where=path, field=where,
                          hint=f"input '{name}' is {dtype}")
    if "data-type" in entry:
        text = entry["data-type"]
        if not isinstance(text, str) or text.lower() not in JSON_DATA_TYPES:
            raise ConfigError(f"unknown data-type {text!r}", where=path, field=where,
                              hint=did_you_mean(str(text), JSON_DATA_TYPES))
        if np.dtype(JSON_DATA_TYPES[text.lower()]) != dtype:
            raise DataError(f"data-type {text} does not match input '{name}' ({dtype})",
                            where=path, field=where,
                            hint="convert the data; aicc never reinterprets it")
    if "elem-size" in entry:
        size = entry["elem-size"]
        if isinstance(size, bool) or not isinstance(size, int) or size != dtype.itemsize:
            raise DataError(f"elem-size {size!r} does not match input '{name}' ({dtype}, "
                            f"{dtype.itemsize} bytes)", where=path, field=where)
    dims = entry["dims"]
    if not isinstance(dims, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                             and 0 < d <= 2**31 - 1 for d in dims):
        raise ConfigError(f"dims {dims!r} must be a list of positive integers", where=path,
                          field=where)
    if not _dims_fit(dims, desc.shape):
        shape = list(desc.shape) if desc.shape is not None else "?"
        raise DataError(f"dims {dims} do not fit input '{name}' {shape}", where=path, field=where)
    file = entry["path"]
    if not isinstance(file, str) or not file:
        raise ConfigError(f"path {file!r} must be a non-empty string", where=path, field=where)
    arr = read_tensor_file(resolve_relative(path, file), desc, where=f"{path}: {where}",
                           shape=list(dims))
    return name, arr
