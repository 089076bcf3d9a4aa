"""Durable writes: every file aicc produces that matters goes through this module.

Container files, run outputs, profiles, encodings, templates and quantized models are written
with ``os.write`` in a loop (no buffered writer that may drop a failure at close, as
``ndarray.tofile`` does), flushed to disk with ``fsync``, and their size checked against what was
meant to be written. A failure (a full disk, a quota, a file-size limit, a read-only folder)
removes the partial file and raises ``OutputError`` naming the file, never an internal error and
never an empty file with exit code 0.

``write_atomic`` adds a temporary sibling and a rename, so a reader sees the old file or the
complete new one.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .errors import OutputError

__all__ = ["unique_file_names", "write_bytes", "write_text", "write_array", "write_npy",
           "write_atomic", "write_text_atomic", "fsync_dir", "output_error", "CHUNK"]

#: Largest single ``os.write`` (Linux writes at most 2 GiB - 4 KiB per call anyway).
CHUNK = 64 * 1024 * 1024

_HINTS = {
    errno.ENOSPC: "free some space on that file system, or write elsewhere",
    errno.EDQUOT: "the disk quota is used up; free some space or write elsewhere",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f)",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EACCES: "no permission to write there",
}


def output_error(path: str | Path, err: OSError, what: str = "cannot write") -> OutputError:
    """The one-line error for an OSError met while writing ``path``."""
    reason = err.strerror or str(err)
    return OutputError(f"{what}: {reason}", where=path, hint=_HINTS.get(err.errno))


def _buffers(data: bytes | memoryview | Iterable[bytes | memoryview]
             ) -> Iterable[memoryview]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = [data]
    for item in data:
        view = memoryview(item).cast("B")
        for start in range(0, len(view), CHUNK):
            yield view[start:start + CHUNK]


def write_bytes(path: str | Path, data: bytes | memoryview | Iterable[bytes | memoryview], *,
                mode: int = 0o644) -> int:
    """Write ``data`` (bytes or an iterable of buffers) to ``path``, fsync it and check its
    size; return the size. On failure the partial file is removed and ``OutputError`` raised."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                     mode)
    except OSError as e:
        raise output_error(path, e) from None
    total = 0
    try:
        for view in _buffers(data):
            while len(view):
                written = os.write(fd, view)
                if written <= 0:  # pragma: no cover - os.write raises rather than return 0
                    raise OSError(errno.EIO, "short write")
                total += written
                view = view[written:]
        os.fsync(fd)
        size = os.fstat(fd).st_size
        if size != total:
            raise OSError(errno.EIO, f"wrote {total} bytes but the file holds {size}")
    except OSError as e:
        os.close(fd)
        _unlink_quietly(path)
        raise output_error(path, e) from None
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)
    return total


def write_text(path: str | Path, text: str) -> int:
    """``write_bytes`` of ``text`` encoded as UTF-8."""
    return write_bytes(path, text.encode("utf-8"))


def write_array(path: str | Path, array: np.ndarray) -> int:
    """A tensor as a raw little-endian file (what ``tofile`` writes, but checked)."""
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not _little()):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    flat = arr.reshape(-1)
    if flat.dtype.hasobject:
        raise OutputError(f"cannot write an object array ({flat.dtype})", where=path)
    return write_bytes(path, flat.view(np.uint8) if flat.size else b"")


def write_npy(path: str | Path, array: np.ndarray) -> int:
    """A tensor as a ``.npy`` file (no pickles)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return write_bytes(path, buf.getbuffer())


def unique_file_names(names: Iterable[str], *, max_len: int = 120) -> dict[str, str]:
    """A distinct safe file stem for every name, in order: the sanitised name when it is unique
    (ignoring case, for case-insensitive file systems), else the sanitised name shortened and
    suffixed with 8 hex digits of the name's SHA-256. ``a/b`` and ``a_b``, or two names equal in
    their first ``max_len`` characters, never share a file."""
    import hashlib

    names = list(dict.fromkeys(names))

    def clean(name: str) -> str:
        text = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".")
        return text or "_"

    stems = {n: clean(n)[:max_len] for n in names}
    counts: dict[str, int] = {}
    for stem in stems.values():
        counts[stem.lower()] = counts.get(stem.lower(), 0) + 1
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        stem = stems[name]
        if counts[stem.lower()] > 1:
            digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            stem = f"{clean(name)[:max_len - 9]}~{digest}"
        while stem.lower() in taken:  # pragma: no cover - a hash collision on top
            stem += "_"
        taken.add(stem.lower())
        out[name] = stem
    return out


def _little() -> bool:
    import sys
    return sys.byteorder == "little"


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where folders cannot be
    opened, e.g. on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place; the
    folder must exist. Readers see the old file or the complete new one, never a half."""
    from .errors import ConfigError

    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"folder '{folder}' does not exist", where=str(path))
    if path.is_dir():
        raise ConfigError("is a directory", where=str(path), hint="name a file")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise output_error(path, e) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        raise output_error(path, e) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(folder)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``text`` written to ``path`` through a temporary sibling and a rename."""
    return write_atomic(path, lambda tmp: write_text(tmp, text))


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
