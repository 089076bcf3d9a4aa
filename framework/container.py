"""The program container (QPC): a directory with a manifest and one folder per specialization.

Written to a temporary sibling and renamed at the end, so a failed compile never leaves a half
container; an existing directory is replaced only if it is itself a container (or empty). Loading
checks the format version and the SHA-256 of every file the manifest names. Writing is
deterministic: the same program and options give byte-identical containers.

Layout::

    manifest.json          format, versions, program metadata, specializations, file checksums
    weights.bin            (several specializations only) every shared initializer, stored once
    <specialization>/      one folder per specialization: model.onnx + backend artifacts

With several specializations, every initializer of at least ``SHARED_MIN_BYTES`` is stored once in
``weights.bin``, deduplicated by content (dtype, dims and bytes, hashed), and each ``model.onnx``
refers to it as ONNX external data with ``location: weights.bin``, a location relative to the
*container root* (the manifest marks such specializations ``"external_data": "container"``). So a
weight that 16 specializations share costs its bytes once. ``load_spec_model`` loads these models
through aicc's safe loader with the container root as the external-data folder, so no location ever
needs ``..``. (To open such a model in another tool, load its external data from the container
root, e.g. ``onnx.load(path, load_external_data=False)`` then
``onnx.external_data_helper.load_external_data_for_model(model, root)``.) A single specialization
keeps its weights inside its ``model.onnx``.
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

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "SHARED_WEIGHTS", "SHARED_MIN_BYTES",
           "ContainerWriter", "read_manifest", "load_spec_model"]

FORMAT = "aicc-qpc"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: The container-root file holding the initializers specializations share.
SHARED_WEIGHTS = "weights.bin"
#: Initializers smaller than this stay inside each model.onnx (not worth an indirection).
SHARED_MIN_BYTES = 1024
_ALIGN = 64


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
        self._blobs: dict[bytes, tuple[int, int]] = {}  # content hash -> (offset, length)
        self._weights_size = 0
        self.shared_stats = {"tensors": 0, "references": 0, "bytes": 0}

    @staticmethod
    def _replaceable(path: Path) -> bool:
        return path.is_dir() and not path.is_symlink() and (
            (path / MANIFEST).is_file() or not any(path.iterdir()))

    def folder(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_model(self, folder: str, model: onnx.ModelProto, *,
                  shared_weights: bool = False) -> None:
        """Write ``model`` as ``folder/model.onnx``. With ``shared_weights`` its large
        initializers move to the root ``weights.bin`` (once per distinct content); ``model`` is
        changed in place to refer to them."""
        if shared_weights:
            self._share_weights(model)
        for name in ir.save_model(model, self.folder(folder) / "model.onnx"):
            self.files[f"{folder}/{name}"] = ""

    def _share_weights(self, model: onnx.ModelProto) -> None:
        path = self.tmp / SHARED_WEIGHTS
        with open(path, "ab") as f:
            for tensor in model.graph.initializer:
                if tensor.data_location == onnx.TensorProto.EXTERNAL or \
                        not tensor.HasField("raw_data") or \
                        len(tensor.raw_data) < SHARED_MIN_BYTES:
                    continue
                data = tensor.raw_data
                h = hashlib.sha256()
                h.update(f"{tensor.data_type}:{list(tensor.dims)}:".encode())
                h.update(data)
                key = h.digest()
                if key not in self._blobs:
                    pad = (-self._weights_size) % _ALIGN
                    f.write(b"\0" * pad)
                    f.write(data)
                    self._blobs[key] = (self._weights_size + pad, len(data))
                    self._weights_size += pad + len(data)
                    self.shared_stats["tensors"] += 1
                    self.shared_stats["bytes"] += len(data)
                offset, length = self._blobs[key]
                self.shared_stats["references"] += 1
                tensor.ClearField("raw_data")
                del tensor.external_data[:]
                for k, v in (("location", SHARED_WEIGHTS), ("offset", str(offset)),
                             ("length", str(length))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = k, v
                tensor.data_location = onnx.TensorProto.EXTERNAL
        self.files[SHARED_WEIGHTS] = ""

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


def load_spec_model(container: str | Path, folder: str, *,
                    external_data: str = "folder") -> onnx.ModelProto:
    """The lowered graph of one specialization, loaded through aicc's safe loader.

    ``external_data`` (the manifest's value for the specialization) says where its external-data
    locations are relative to: ``folder`` (its own folder) or ``container`` (the container root,
    where the shared ``weights.bin`` lives).
    """
    container = Path(container)
    if external_data not in ("folder", "container"):
        raise ContainerError(f"specialization '{folder}' has unknown external_data "
                             f"{external_data!r}", where=container,
                             hint="expected 'folder' or 'container'; recompile the model")
    base = container if external_data == "container" else container / folder
    return ir.load_model(container / folder / "model.onnx", base_dir=base, check_shapes=False)
