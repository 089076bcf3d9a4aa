"""A model's external data, read safely: the tensors' ``external_data`` entries in, their bytes in
``raw_data`` out, never from outside the model's folder.

Absolute locations, ``..``, symbolic links on the way, hard links, non-regular files and offsets or
lengths that do not fit the file are refused (BAD_INPUTS.md); the file is opened without following
links and read in chunks (one ``pread`` stops short of 2 GiB). Part of ``aicc.ir.load_model``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import onnx

from .errors import ModelError

__all__ = ["read_external"]

_EXTERNAL_KEYS = {"location", "offset", "length", "checksum"}
#: Largest single read (``os.pread`` returns at most 2 GiB - 4 KiB on Linux).
_READ_CHUNK = 1 << 30


def _external_info(tensor: onnx.TensorProto, what: str, where: str) -> dict[str, object]:
    info: dict[str, object] = {}
    for entry in tensor.external_data:
        if entry.key not in _EXTERNAL_KEYS:
            raise ModelError(f"unknown external-data key '{entry.key}'", where=where, field=what)
        info[entry.key] = entry.value
    if "location" not in info or not info["location"]:
        raise ModelError("external data has no location", where=where, field=what)
    for key in ("offset", "length"):
        if key in info:
            text = str(info[key])
            if not (text.isascii() and text.isdigit()):  # not '²', '٣' or '-1'
                raise ModelError(f"external-data {key} {text!r} is not a non-negative integer",
                                 where=where, field=what)
            info[key] = int(text)
    return info


def _safe_external_path(base: Path, location: str, what: str, where: str) -> Path:
    """Resolve ``location`` inside ``base``, refusing anything that could leave it."""
    loc = Path(location)
    if loc.is_absolute() or location.startswith(("/", "\\")) or ":" in location:
        raise ModelError(f"external-data location {location!r} is an absolute path", where=where,
                         field=what, hint="external data must sit in the model's folder")
    if any(part == ".." for part in Path(os.path.normpath(location)).parts) or \
            any(part == ".." for part in loc.parts):
        raise ModelError(f"external-data location {location!r} escapes the model's folder",
                         where=where, field=what,
                         hint="external data must sit in the model's folder")
    base_real = base.resolve()
    current = base_real
    for part in loc.parts:
        if part in ("", "."):
            continue
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            raise ModelError(f"external-data file {location!r} not found", where=where,
                             field=what) from None
        if stat.S_ISLNK(st.st_mode):
            raise ModelError(f"external-data location {location!r} goes through a symbolic link",
                             where=where, field=what, hint="copy the data file into the folder")
    st = os.lstat(current)
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"external-data location {location!r} is not a regular file",
                         where=where, field=what)
    if st.st_nlink > 1:
        raise ModelError(f"external-data file {location!r} has {st.st_nlink} hard links",
                         where=where, field=what,
                         hint="a hard link may point outside the folder; copy the file instead")
    if base_real not in current.resolve().parents:
        raise ModelError(f"external-data location {location!r} escapes the model's folder",
                         where=where, field=what)
    return current


def read_external(base: Path, tensor: onnx.TensorProto, what: str, where: str,
                  read_file: Callable[[Path], bytes] | None = None) -> None:
    """Replace ``tensor``'s external reference (relative to folder ``base``) by its bytes;
    ``read_file`` reads (and verifies) a whole file when given."""
    info = _external_info(tensor, what, where)
    path = _safe_external_path(base, str(info["location"]), what, where)
    if read_file is not None:  # the whole file, verified by the caller, then sliced
        blob = read_file(path)
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else len(blob) - offset
        if offset > len(blob) or offset + length > len(blob):
            raise ModelError(f"external data [{offset}, {offset + length}) lies beyond the end of "
                             f"{info['location']!r} ({len(blob)} bytes)", where=where, field=what)
        _set_raw(tensor, blob[offset:offset + length])
        return
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            raise ModelError(f"external-data file {info['location']!r} changed while opening",
                             where=where, field=what)
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else st.st_size - offset
        if offset > st.st_size or offset + length > st.st_size:
            raise ModelError(f"external data [{offset}, {offset + length}) lies beyond the end of "
                             f"{info['location']!r} ({st.st_size} bytes)", where=where, field=what)
        data = _pread_all(fd, length, offset)
        if len(data) != length:
            raise ModelError(f"external-data file {info['location']!r} ended early ({len(data)} "
                             f"of {length} bytes read)", where=where, field=what)
    finally:
        os.close(fd)
    _set_raw(tensor, data)


def _set_raw(tensor: onnx.TensorProto, data: bytes) -> None:
    tensor.raw_data = data
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset``, read in chunks (one ``pread`` stops short of 2 GiB)."""
    if length <= _READ_CHUNK:
        return os.pread(fd, length, offset)
    parts = []
    done = 0
    while done < length:
        part = os.pread(fd, min(_READ_CHUNK, length - done), offset + done)
        if not part:
            break
        parts.append(part)
        done += len(part)
    return b"".join(parts)
