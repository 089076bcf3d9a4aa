"""The program container (QPC): a directory with a manifest and one folder per specialization.

Written to a temporary sibling and renamed at the end, so a failed compile never leaves a half
container; an existing directory is replaced only if it is itself an aicc container (or empty),
and a killed compile's debris is cleaned up or restored by the next compile or load
(``aicc._qpc_commit``). Every file is written durably (``aicc.fileio``). Writing is
deterministic: the same program and options give byte-identical containers.

The manifest is untrusted input: loading checks its structure, the format version, that every
file and folder it names stays inside the container (no ``..``, absolute paths or symbolic
links), and the SHA-256 of every file, at load and again whenever a file is read later
(``ContainerFiles``), so a file changed or a container recompiled under a running Session is
refused rather than run.

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

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx

from . import _qpc_commit as _commit
from . import ir
from .errors import ContainerError
from .fileio import fsync_dir, output_error, write_text
from .version import __version__

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "SHARED_WEIGHTS", "SHARED_MIN_BYTES",
           "ContainerWriter", "ContainerFiles", "read_manifest", "load_spec_model"]

FORMAT = _commit.FORMAT  # "aicc-qpc"
FORMAT_VERSION = 1
MANIFEST = _commit.MANIFEST
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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ContainerWriter:
    """Collects a container in a temporary folder beside ``target``; ``commit`` renames it in."""

    def __init__(self, target: str | Path):
        self.target = Path(target)
        parent = self.target.resolve().parent
        if not parent.is_dir():
            raise ContainerError("parent folder does not exist", where=self.target,
                                 hint="create it first")
        try:
            _commit.recover(self.target)
            problem = _commit.replace_problem(self.target) if self.target.exists() else None
            if problem:
                raise _commit.problem_error(self.target, problem)
            self.tmp = Path(tempfile.mkdtemp(prefix=_commit.tmp_prefix(self.target), dir=parent))
        except OSError as e:
            raise output_error(self.target, e) from None
        self.files: dict[str, str] = {}
        self._blobs: dict[bytes, tuple[int, int]] = {}  # content hash -> (offset, length)
        self._weights_size = 0
        self.shared_stats = {"tensors": 0, "references": 0, "bytes": 0}

    def folder(self, name: str) -> Path:
        if not _plain_name(name):
            raise ContainerError(f"unsafe folder name {name!r}", where=self.target)
        path = self.tmp / name
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise output_error(path, e) from None
        return path

    def add_model(self, folder: str, model: onnx.ModelProto, *,
                  shared_weights: bool = False) -> None:
        """Write ``model`` as ``folder/model.onnx``. With ``shared_weights`` its large
        initializers move to the root ``weights.bin`` (once per distinct content); ``model`` is
        changed in place to refer to them."""
        if shared_weights:
            try:
                self._share_weights(model)
            except OSError as e:
                raise output_error(self.tmp / SHARED_WEIGHTS, e) from None
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
            f.flush()
            os.fsync(f.fileno())
        if path.stat().st_size != self._weights_size:
            raise OSError(errno.EIO, f"{SHARED_WEIGHTS} holds {path.stat().st_size} bytes, "
                                     f"expected {self._weights_size}")
        self.files[SHARED_WEIGHTS] = ""

    def add_files(self, folder: str, names: list[str]) -> None:
        for name in names:
            self.files[f"{folder}/{name}"] = ""

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Hash and fsync every file, write the manifest, and rename the container into place
        (under the parent folder's lock, so concurrent compiles take turns)."""
        try:
            for rel in list(self.files):
                self.files[rel] = _sha256(self.tmp / rel)
                _fsync(self.tmp / rel)
        except OSError as e:
            raise output_error(self.tmp / rel, e, "cannot read back") from None
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                    "aicc_version": __version__, **manifest,
                    "files": dict(sorted(self.files.items()))}
        write_text(self.tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for folder in {rel.split("/", 1)[0] for rel in self.files if "/" in rel}:
            fsync_dir(self.tmp / folder)
        fsync_dir(self.tmp)
        parent = self.tmp.parent
        old = None
        try:
            with _commit.commit_lock(parent):
                if os.path.lexists(self.target):
                    problem = _commit.replace_problem(self.target)
                    if problem:
                        raise _commit.problem_error(self.target, problem)
                    old = _commit.old_name(self.target)
                    os.rename(self.target, old)
                os.rename(self.tmp, self.target)
                fsync_dir(parent)
        except OSError as e:
            if old is not None and not os.path.lexists(self.target):
                try:
                    os.rename(old, self.target)   # the old container stays where it was
                except OSError:
                    pass                          # the next compile or load recovers it
            raise output_error(self.target, e, "cannot move the container into place") from None
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


def _plain_name(name: Any) -> bool:
    """A single path component that is safe as a file or folder name inside the container."""
    return isinstance(name, str) and bool(name) and name not in (".", "..") and \
        "/" not in name and "\\" not in name and "\0" not in name and ":" not in name


def _confined(root: Path, rel: Any, where: Path) -> Path:
    """``root/rel`` for a relative path of plain components, none a symbolic link."""
    parts = rel.split("/") if isinstance(rel, str) else None
    if not parts or not all(_plain_name(p) for p in parts):
        raise ContainerError(f"manifest names a path outside the container: {rel!r}",
                             where=where, hint="the container is damaged or forged; recompile")
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise ContainerError(f"'{rel}' goes through a symbolic link", where=where,
                                 hint="the container is damaged or forged; recompile")
    return current


def _load_manifest_json(path: Path, mpath: Path) -> Any:
    try:
        if mpath.stat().st_size > _commit.MAX_MANIFEST_BYTES:
            raise ContainerError(f"{MANIFEST} is over {_commit.MAX_MANIFEST_BYTES} bytes",
                                 where=path)
        return json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ContainerError(f"{MANIFEST} is not valid JSON ({e})", where=path) from None
    except RecursionError:
        raise ContainerError(f"{MANIFEST} is nested too deeply", where=path) from None
    except OSError as e:
        raise ContainerError(f"cannot read {MANIFEST}: {e.strerror}", where=path) from None


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and verify a container: structure, format, version, confinement of every path, and
    every file's checksum. A killed compile's debris beside it is cleaned up first."""
    path = Path(path)
    mpath = path / MANIFEST
    _commit.recover(path)  # e.g. a compile killed between its two renames
    if not path.is_dir():
        raise ContainerError("not a container directory", where=path)
    if not mpath.is_file():
        raise ContainerError(f"no {MANIFEST}", where=path, hint="is this an aicc container?")
    manifest = _load_manifest_json(path, mpath)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ContainerError(f"{MANIFEST} is not an aicc container manifest", where=path)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ContainerError(f"container format version {manifest.get('format_version')} is not "
                             f"supported (this aicc reads {FORMAT_VERSION})", where=path,
                             hint="recompile the model with this aicc")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ContainerError(f"{MANIFEST} lists no files", where=path)
    _check_structure(manifest, path)
    for rel, digest in files.items():
        file = _confined(path, rel, path)
        if not file.is_file():
            raise ContainerError(f"file '{rel}' is missing", where=path,
                                 hint="the container is incomplete; recompile it")
        if not isinstance(digest, str) or _sha256(file) != digest:
            raise ContainerError(f"file '{rel}' was altered (checksum mismatch)", where=path,
                                 hint="recompile the model")
    return manifest


_REQUIRED = {"backend": str, "program": dict, "specializations": list}
_SPEC_REQUIRED = {"name": str, "folder": str, "inputs": list, "outputs": list}


def _check_structure(manifest: dict[str, Any], path: Path) -> None:
    """The keys the loader relies on, with their types; spec folders confined and hashed."""
    hint = "the container is damaged or from another tool; recompile it"
    for key, kind in _REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            what = "missing" if key not in manifest else f"not a {kind.__name__}"
            raise ContainerError(f"'{key}' is {what}", where=path / MANIFEST, hint=hint)
    if not manifest["specializations"]:
        raise ContainerError("'specializations' is empty", where=path / MANIFEST, hint=hint)
    for i, spec in enumerate(manifest["specializations"]):
        field = f"specializations[{i}]"
        if not isinstance(spec, dict):
            raise ContainerError("not an object", where=path / MANIFEST, field=field, hint=hint)
        for key, kind in _SPEC_REQUIRED.items():
            if not isinstance(spec.get(key), kind):
                raise ContainerError(f"'{key}' is missing or not a {kind.__name__}",
                                     where=path / MANIFEST, field=field, hint=hint)
        folder = spec["folder"]
        if not _plain_name(folder):
            raise ContainerError(f"folder {folder!r} is not a folder inside the container",
                                 where=path / MANIFEST, field=field, hint=hint)
        if f"{folder}/model.onnx" not in manifest["files"]:
            raise ContainerError(f"'{folder}/model.onnx' has no checksum in the manifest",
                                 where=path / MANIFEST, field=field, hint=hint)
        if spec.get("external_data", "folder") not in ("folder", "container"):
            raise ContainerError(f"unknown external_data {spec.get('external_data')!r}",
                                 where=path / MANIFEST, field=field,
                                 hint="expected 'folder' or 'container'; recompile the model")


class ContainerFiles:
    """Reads files of a loaded container, checking each against the SHA-256 the manifest gave
    at load time; a file changed since (or a container recompiled in the same place) is refused.

    Within one ``reader()`` a file is read once (a shared ``weights.bin`` serves many tensors).
    A file is hashed when it is read; once verified, later reads (other specializations sharing
    ``weights.bin``) skip the hash only while its identity and kernel-kept times (device, inode,
    size, mtime, ctime) are those it had when it was hashed, which no write leaves unchanged.
    """

    def __init__(self, root: str | Path, files: dict[str, str]):
        self.root = Path(root)
        self.files = dict(files)
        self._verified: dict[str, tuple[int, ...]] = {}

    def reader(self):
        cache: dict[str, bytes] = {}
        root = self.root.resolve()

        def read(path: Path) -> bytes:
            try:
                rel = Path(path).resolve().relative_to(root).as_posix()
            except ValueError:
                raise ContainerError(f"'{path}' lies outside the container",
                                     where=self.root) from None
            if rel not in cache:
                if rel not in self.files:
                    raise ContainerError(f"'{rel}' is not listed in the manifest",
                                         where=self.root, hint="recompile the model")
                cache[rel] = self._read_verified(rel)
            return cache[rel]
        return read

    def _read_verified(self, rel: str) -> bytes:
        with open(_confined(self.root, rel, self.root), "rb") as f:
            before = _signature(os.fstat(f.fileno()))
            data = f.read()
            after = _signature(os.fstat(f.fileno()))
        if before != after or self._verified.get(rel) != after:
            if hashlib.sha256(data).hexdigest() != self.files[rel] or before != after:
                raise ContainerError(f"file '{rel}' changed since the container was loaded "
                                     "(checksum mismatch)", where=self.root,
                                     hint="load the container again, or recompile it")
            self._verified[rel] = after
        return data


def _signature(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def load_spec_model(container: str | Path, folder: str, *,
                    external_data: str = "folder",
                    files: ContainerFiles | None = None) -> onnx.ModelProto:
    """The lowered graph of one specialization, loaded through aicc's safe loader.

    ``external_data`` (the manifest's value for the specialization) says where its external-data
    locations are relative to: ``folder`` (its own folder) or ``container`` (the container root,
    where the shared ``weights.bin`` lives). With ``files`` every file read is checked against
    the checksums the container had when it was loaded.
    """
    container = Path(container)
    if external_data not in ("folder", "container"):
        raise ContainerError(f"specialization '{folder}' has unknown external_data "
                             f"{external_data!r}", where=container,
                             hint="expected 'folder' or 'container'; recompile the model")
    model_path = _confined(container, f"{folder}/model.onnx", container)
    base = container if external_data == "container" else container / folder
    return ir.load_model(model_path, base_dir=base, check_shapes=False,
                         read_file=files.reader() if files is not None else None)
