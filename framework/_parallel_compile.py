"""Specializations compiled in parallel on Dask: lowered graphs in, each backend's saved artifacts
(file name -> bytes) out, in graph order, for the client to write into the container.

Each task builds the backend from its name and options (plugins as the client loaded them, so a
cluster needs the same plugin files at the same paths), compiles one graph and saves the
executable into a scratch folder whose files it returns. The client writes the models and these
files exactly as the serial loop does, so the container is byte-identical to a serial compile.
The executables ``compile_model`` returns are then loaded from the container on first use
(``LazyExecutables``): a backend with saved artifacts (``aic100``'s plan) reads them; one without
(``cpu``, ``interpreter``) compiles again in this process only if they are used. Loading is the
serial compile's work again (``aic100`` re-plans to check its saved plan), so what a
``-compile-only`` run prints, each executable's ``stats()`` (``aic100``'s estimate), comes from the
worker that compiled it: nothing is loaded until a graph runs or is asked for more.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

__all__ = ["compile_on_dask", "LazyExecutables"]

#: Per worker process: registries by plugin files.
_REGISTRIES: dict[tuple[str, ...], Any] = {}


def _compile_remote(backend_name: str, backend_options: dict[str, Any], plugins: tuple[str, ...],
                    model_bytes: bytes, meta: dict[str, Any], spec_options: dict[str, Any]
                    ) -> tuple[dict[str, bytes], dict[str, Any]]:
    """(saved artifacts by file name, the fresh executable's ``stats()``)."""
    from .options import build_options
    from .plugins import load_registries

    registries = _REGISTRIES.get(plugins)
    if registries is None:
        registries = _REGISTRIES[plugins] = load_registries(list(plugins))
    entry = registries.backends.get(backend_name)
    backend = entry.cls(build_options(entry.cls.Options, backend_options,
                                      owner=f"backend '{backend_name}'"))
    model = onnx.load_model_from_string(model_bytes)
    executable = backend.compile(model, program_meta=meta, spec_options=spec_options)
    with tempfile.TemporaryDirectory(prefix="aicc-spec-") as tmp:
        names = executable.save(Path(tmp))
        return {name: (Path(tmp) / name).read_bytes() for name in names}, executable.stats()


def compile_on_dask(spec: Any, backend: Any, plugins: Sequence[str | Path],
                    models: Mapping[str, onnx.ModelProto], meta: dict[str, Any],
                    spec_options: Mapping[str, dict[str, Any]]
                    ) -> tuple[dict[str, dict[str, bytes]], dict[str, dict[str, Any]]]:
    """Compile every graph of ``models`` on Dask: (artifacts, the executables' ``stats()``), by
    graph name in ``models`` order. A failure anywhere cancels the rest and raises the
    backend's error."""
    from .distributed import DaskProgress, dask_client
    from .options import options_to_dict

    options = options_to_dict(backend.options)
    plugin_files = tuple(str(p) for p in plugins)
    with dask_client(spec) as client:
        futures = {name: client.submit(_compile_remote, backend.name, options, plugin_files,
                                       model.SerializeToString(), meta,
                                       dict(spec_options.get(name, {})), pure=False,
                                       key=f"aicc-compile-{i}-{name}")
                   for i, (name, model) in enumerate(models.items())}
        bar = DaskProgress(client, len(futures), what="compiling specializations")
        try:
            out, stats = {}, {}
            for name, fut in futures.items():
                out[name], stats[name] = fut.result()
                bar.step(0)
            return out, stats
        except BaseException:
            client.cancel(list(futures.values()), force=True)
            raise
        finally:
            bar.close()


class LazyExecutables(Mapping):
    """Executables of a container compiled elsewhere, loaded from it on first use.

    Each item is a ``_Remote`` stand-in: its ``stats()`` are the compiling worker's until the
    executable is loaded, which running it (or any other use) does."""

    def __init__(self, backend: Any, path: Path, program: Any, folders: Mapping[str, str],
                 stats: Mapping[str, dict[str, Any]]):
        self.backend, self.path, self.program, self.folders = backend, path, program, folders
        self._stats = dict(stats)
        self._items: dict[str, _Remote] = {}

    def _load(self, name: str) -> Any:
        return self.backend.load(self.path / self.folders[name], self.program.to_model(name),
                                 program_meta=self.program.meta(),
                                 spec_options=self.program.spec_options.get(name, {}))

    def __getitem__(self, name: str) -> Any:
        if name not in self.folders:
            raise KeyError(name)
        if name not in self._items:
            self._items[name] = _Remote(lambda: self._load(name), self._stats.get(name))
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.folders)

    def __len__(self) -> int:
        return len(self.folders)


class _Remote:
    """An executable compiled on a worker: ``stats()`` as the worker reported them until the
    executable is loaded (by ``run`` or any other attribute)."""

    def __init__(self, load: Any, stats: dict[str, Any] | None):
        self._load, self._stats, self._exe = load, stats, None

    @property
    def loaded(self) -> bool:
        return self._exe is not None

    def _executable(self) -> Any:
        if self._exe is None:
            self._exe = self._load()
        return self._exe

    def stats(self) -> dict[str, Any]:
        if self._exe is None and self._stats is not None:
            return dict(self._stats)
        return self._executable().stats()

    def __getattr__(self, name: str) -> Any:     # run, save, first_nonfinite, plan, ...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._executable(), name)
