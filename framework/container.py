"""The program container (QPC): a directory with a manifest and one folder per specialization.

Written to a temporary sibling and renamed at the end, so a failed compile never leaves a half
container; an existing directory is replaced only if it is itself a container (or empty). Loading
checks the format version and the SHA-256 of every file the manifest names. Writing is
deterministic: the same program and options give byte-identical containers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx

from . import __version__, ir
from .errors import ContainerError

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "ContainerWriter", "read_manifest",
           "load_spec_model"]

FORMAT = "aicc-qpc"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ContainerWriter:
    """Collects a container in a temporary folder beside ``target``; ``commit`` renames it in."""

    def __init__(self, target: str | Path):
        self.target = Path(target)
        if self.target.exists() and not self._replaceable(self.target):
            raise ContainerError("exists and is not an aicc container; refusing to replace it",
                                 where=self.target, hint="choose another output directory")
        parent = self.target.resolve().parent
        if not parent.is_dir():
            raise ContainerError("parent folder does not exist", where=self.target)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=parent))
        self.files: dict[str, str] = {}

    @staticmethod
    def _replaceable(path: Path) -> bool:
        return path.is_dir() and not path.is_symlink() and (
            (path / MANIFEST).is_file() or not any(path.iterdir()))

    def folder(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_model(self, folder: str, model: onnx.ModelProto) -> None:
        for name in ir.save_model(model, self.folder(folder) / "model.onnx"):
            self.files[f"{folder}/{name}"] = ""

    def add_files(self, folder: str, names: list[str]) -> None:
        for name in names:
            self.files[f"{folder}/{name}"] = ""

    def commit(self, manifest: dict[str, Any]) -> Path:
        for rel in list(self.files):
            self.files[rel] = _sha256(self.tmp / rel)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                    "aicc_version": __version__, **manifest,
                    "files": dict(sorted(self.files.items()))}
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.rename(self.target, old)
        os.rename(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "ContainerWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self.tmp.exists():
            self.abort()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and verify a container: format, version, and every file's checksum."""
    path = Path(path)
    mpath = path / MANIFEST
    if not path.is_dir():
        raise ContainerError("not a container directory", where=path)
    if not mpath.is_file():
        raise ContainerError(f"no {MANIFEST}", where=path, hint="is this an aicc container?")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ContainerError(f"{MANIFEST} is not valid JSON ({e})", where=path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ContainerError(f"{MANIFEST} is not an aicc container manifest", where=path)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ContainerError(f"container format version {manifest.get('format_version')} is not "
                             f"supported (this aicc reads {FORMAT_VERSION})", where=path,
                             hint="recompile the model with this aicc")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ContainerError(f"{MANIFEST} lists no files", where=path)
    root = path.resolve()
    for rel, digest in files.items():
        file = (path / rel)
        if ".." in Path(rel).parts or Path(rel).is_absolute() or \
                root not in file.resolve().parents:
            raise ContainerError(f"manifest names a file outside the container: {rel!r}",
                                 where=path)
        if not file.is_file():
            raise ContainerError(f"file '{rel}' is missing", where=path,
                                 hint="the container is incomplete; recompile it")
        if _sha256(file) != digest:
            raise ContainerError(f"file '{rel}' was altered (checksum mismatch)", where=path,
                                 hint="recompile the model")
    return manifest


def load_spec_model(container: str | Path, folder: str) -> onnx.ModelProto:
    """The lowered graph of one specialization, loaded through aicc's safe loader."""
    return ir.load_model(Path(container) / folder / "model.onnx", check_shapes=False)
