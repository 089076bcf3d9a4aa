"""Replacing a container folder safely: what may be replaced, the commit lock, crash recovery.

A compile writes its container into ``.NAME.tmp-PID-XXXX`` beside the target ``NAME`` and commits
it with two renames under a lock on the parent folder: the old container to ``.NAME.old-PID``,
the new one to ``NAME``; then the old one is deleted. A process killed at any point leaves the old
container or the complete new one, plus debris that ``recover`` (run by the next compile into, or
load of, ``NAME``) cleans up or restores, saying what it did. Debris of a process still alive (a
concurrent compile) is left alone; the lock makes concurrent commits take turns.

Only an aicc container (its manifest's ``format`` is ``aicc-qpc`` and the folder holds nothing
the manifest does not list) or an empty folder is ever replaced: a web app's or any other
project's ``manifest.json`` is never taken for one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import ContainerError

__all__ = ["commit_lock", "recover", "replace_problem", "tmp_prefix", "old_name"]

logger = logging.getLogger("aicc.container")

FORMAT = "aicc-qpc"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; renames still atomic
    fcntl = None  # type: ignore[assignment]


def tmp_prefix(target: Path) -> str:
    return f".{target.name}.tmp-{os.getpid()}-"


def old_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.old-{os.getpid()}")


@contextlib.contextmanager
def commit_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (the parent of a container) while committing."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def replace_problem(path: Path) -> str | None:
    """Why ``path`` may not be replaced by a new container, or None when it may (an empty
    folder, or an aicc container holding only what its manifest lists)."""
    if path.is_symlink() or not path.is_dir():
        return "exists and is not a folder"
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return None
    manifest = path / MANIFEST
    if MANIFEST not in entries:
        return "is a folder that is not an aicc container (no manifest.json)"
    try:
        if not manifest.is_file() or manifest.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError
        data = json.loads(manifest.read_bytes())
    except (OSError, ValueError, RecursionError):
        return "holds a manifest.json that is not an aicc container manifest"
    if not isinstance(data, dict) or data.get("format") != FORMAT or \
            not isinstance(data.get("files"), dict):
        return "holds a manifest.json that is not an aicc container manifest"
    listed = {str(rel).split("/", 1)[0] for rel in data["files"]} | {MANIFEST}
    extra = [e for e in entries if e not in listed]
    if extra:
        return f"holds '{extra[0]}', which its manifest does not list"
    return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _debris(target: Path) -> list[tuple[str, int, Path]]:
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(tmp|old)-(\d+)(?:-.*)?$")
    found = []
    for entry in target.parent.iterdir():
        m = pattern.match(entry.name)
        if m:
            found.append((m.group(1), int(m.group(2)), entry))
    # restore candidates first, newest first
    return sorted(found, key=lambda d: (d[0] != "old", -d[2].lstat().st_mtime, d[2].name))


def recover(target: str | Path) -> list[str]:
    """Clean up or restore what interrupted compiles of ``target`` left; return what was done
    (each also logged as a warning)."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        return []
    done: list[str] = []
    try:
        with commit_lock(parent):
            for kind, pid, entry in _debris(target):
                if not _alive(pid) and entry.exists():
                    done += _clean(kind, pid, entry, target)
    except OSError as e:  # e.g. a read-only folder: loading still works, nothing is cleaned
        logger.debug("no recovery of %s: %s", target, e)
    for line in done:
        logger.warning("%s", line)
    return done


def _clean(kind: str, pid: int, entry: Path, target: Path) -> list[str]:
    """Restore ``entry`` as ``target`` (an old container whose replacement never arrived) or
    remove it; return what was done."""
    if kind == "old" and not os.path.lexists(target) and \
            replace_problem(entry) is None and (entry / MANIFEST).is_file():
        os.rename(entry, target)
        return [f"restored container '{target}' from '{entry.name}', left by a compile that "
                f"was interrupted (process {pid})"]
    shutil.rmtree(entry, ignore_errors=True)
    if entry.exists():
        return []
    what = "the previous container" if kind == "old" else "an unfinished container"
    return [f"removed '{entry.name}' ({what} left by interrupted process {pid})"]


def problem_error(path: Path, problem: str) -> ContainerError:
    return ContainerError(f"{problem}; refusing to replace it", where=path,
                          hint="choose another output directory")
