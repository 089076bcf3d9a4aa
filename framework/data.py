"""Input data from files: raw tensors, .npy arrays and QNN-style input lists.

Dtype and shape always come from the program (the model, bound symbols, custom I/O), never from
the file: a file of the wrong size or dtype is refused with expected and actual sizes, never
reinterpreted. Only regular files are read, and ``.npy`` files are loaded without pickles.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError
from .program import TensorDesc

__all__ = ["read_tensor_file", "InputList", "parse_input_list", "parse_input_args"]


def _regular_size(path: Path, where: str) -> int:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"data file '{path}' not found", where=where) from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"'{path}' is not a regular file", where=where)
    return st.st_size


def read_tensor_file(path: str | Path, desc: TensorDesc, *, where: str | None = None,
                     shape: list[int] | None = None) -> np.ndarray:
    """Read one input tensor: a ``.npy`` file, or raw little-endian bytes of desc's dtype/shape."""
    path = Path(path)
    where = where or str(path)
    shape = shape if shape is not None else desc.shape
    size = _regular_size(path, where)
    dtype = np.dtype(desc.dtype)
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise DataError(f"'{path}' is not a plain .npy array ({e})", where=where) from None
        if arr.dtype != dtype:
            raise DataError(f"'{path}' holds {arr.dtype}, input '{desc.name}' is {dtype}",
                            where=where, hint="convert the data; aicc never reinterprets it")
        if shape is not None and all(isinstance(d, int) for d in shape) and \
                list(arr.shape) != list(shape):
            raise DataError(f"'{path}' has shape {list(arr.shape)}, input '{desc.name}' expects "
                            f"{list(shape)}", where=where)
        return arr
    if shape is None or not all(isinstance(d, int) for d in shape):
        raise DataError(f"input '{desc.name}' has symbolic shape {shape}; a raw file cannot say "
                        "its shape", where=where,
                        hint="bind the symbols (-onnx-define-symbol) or use a .npy file")
    expected = math.prod(shape) * dtype.itemsize
    if size != expected:
        raise DataError(f"'{path}' has {size} bytes; input '{desc.name}' ({dtype}, "
                        f"{list(shape)}) needs {expected}", where=where)
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
    _regular_size(path, str(path))
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
