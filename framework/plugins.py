"""Loading plugins (plugins.toml, --plugins files, entry points) and filling the registries.

Built-in passes and backends register through the same hooks as third-party ones. Plugins load only
from places the user listed: the project's ``plugins.toml``, ``--plugins FILE`` (a TOML of module
paths), and installed packages' entry points in group ``aicc`` (off when the environment variable
``AICC_DISABLE_PLUGIN_AUTOLOAD`` is set, as pytest does with its own). Entry points are looked up
only in ``sys.path`` entries other than the current directory, so a folder one happens to run
Python in cannot plant a plugin. A plugin that fails to import, raises, or calls ``sys.exit``
while importing or registering is reported by name.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import dataclasses
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .config import OptionTable
from .configfile import load_toml, resolve_relative
from .errors import AiccError, ConfigError, PluginError, did_you_mean
from .registry import Registry

__all__ = ["Registries", "load_registries", "plugin_modules_from_file", "DEFAULT_PLUGINS_FILE",
           "AUTOLOAD_ENV"]

logger = logging.getLogger(__name__)

AUTOLOAD_ENV = "AICC_DISABLE_PLUGIN_AUTOLOAD"
DEFAULT_PLUGINS_FILE = Path(__file__).resolve().parent.parent / "plugins.toml"


@dataclass
class Registries:
    """The registries a run uses, filled once from the loaded plugins."""

    passes: Registry
    backends: Registry
    instruments: Registry
    plugins: list[str]
    #: compile options declared by the plugins (``aicc_add_options``)
    options: OptionTable = dataclasses.field(default_factory=OptionTable)
    #: ``(plugin, hook implementation)`` of aicc_configure and aicc_check_request
    configurers: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    checkers: list[tuple[str, Any]] = dataclasses.field(default_factory=list)

    def configure(self, config: Any, request: Any) -> None:
        """Let every plugin turn its options into the compile ``request``, then check it."""
        for plugin, function in self.configurers + self.checkers:
            try:
                function(config=config, request=request)
            except AiccError:
                raise
            except (Exception, SystemExit) as e:
                raise PluginError(f"plugin '{plugin}' raised configuring the compile: "
                                  f"{_failure(e)}") from e


def plugin_modules_from_file(path: str | Path) -> tuple[list[str], list[Path]]:
    """The module paths a plugins TOML lists, and the folders it adds to the import path.

    Format: ``[plugins]`` with ``modules = ["package.module", ...]`` and optionally
    ``paths = ["folder", ...]`` (resolved against the TOML file's folder) for plugins that are
    not installed packages.
    """
    data = load_toml(path, what="plugins file")
    unknown = set(data) - {"plugins"}
    if unknown:
        raise ConfigError(f"unknown section '{sorted(unknown)[0]}'", where=path,
                          hint="expected only [plugins] with modules = [...]")
    section = data.get("plugins")
    if not isinstance(section, dict) or not isinstance(section.get("modules"), list):
        raise ConfigError("expected [plugins] with modules = [\"package.module\", ...]",
                          where=path)
    extra = set(section) - {"modules", "paths"}
    if extra:
        raise ConfigError(f"unknown key '{sorted(extra)[0]}'", where=path, field="[plugins]",
                          hint=did_you_mean(sorted(extra)[0], ["modules", "paths"]))
    modules = section["modules"]
    for i, m in enumerate(modules):
        if not isinstance(m, str) or not all(p.isidentifier() for p in m.split(".")):
            raise ConfigError(f"entry {i + 1} ({m!r}) is not a module path", where=path,
                              field="plugins.modules")
    paths = section.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ConfigError("'paths' must be a list of folders", where=path, field="plugins.paths")
    folders = [resolve_relative(path, p) for p in paths]
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"plugin folder '{folder}' does not exist", where=path,
                              field="plugins.paths")
    return list(modules), folders


class _Host:
    """A pluggy PluginManager plus the small typed facade core code calls hooks through."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.order: list[str] = []

    def add_module(self, module_path: str, source: str) -> None:
        if self.pm.has_plugin(module_path):
            logger.debug("plugin %s listed again in %s; loaded once", module_path, source)
            return
        try:
            module = importlib.import_module(module_path)
        except (Exception, SystemExit) as e:  # any import failure is the plugin's, by name
            raise PluginError(f"plugin '{module_path}' failed to import: "
                              f"{_failure(e)}", where=source) from e
        self._register(module, module_path, source)

    def add_object(self, plugin: object, name: str, source: str) -> None:
        if self.pm.is_registered(plugin):
            # e.g. an installed entry point that a plugins file also lists: one plugin, once
            first = self.pm.get_name(plugin)
            logger.warning("plugin '%s' from %s is '%s', already loaded; loaded once",
                           name, source, first)
            return
        self._register(plugin, name, source)

    def _register(self, plugin: object, name: str, source: str) -> None:
        try:
            self.pm.register(plugin, name=name)
        except ValueError as e:
            raise PluginError(f"plugin '{name}' could not be registered: {e}", where=source) from e
        except pluggy.PluginValidationError as e:
            raise PluginError(f"plugin '{name}' has an invalid hook: {e}", where=source) from e
        self.order.append(name)

    def check(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as e:
            raise PluginError(f"{e}", hint="hook names start with aicc_register_") from e

    def add_options(self, table: OptionTable) -> None:
        """Call every plugin's ``aicc_add_options`` in registration order, with attribution."""
        self.register_into("aicc_add_options", table, keyword="options")

    def implementations(self, hook: str) -> list[tuple[str, Any]]:
        return [(impl.plugin_name, impl.function)
                for impl in getattr(self.pm.hook, hook).get_hookimpls()]

    def register_into(self, hook_name: str, registry: Registry | OptionTable, *,
                      keyword: str = "registry") -> None:
        """Call one registration hook of every plugin, in registration order, with attribution
        (``registry.current_plugin`` names the plugin whose call it is)."""
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            registry.current_plugin = impl.plugin_name
            try:
                impl.function(**{keyword: registry})
            except AiccError:
                raise
            except (Exception, SystemExit) as e:
                raise PluginError(f"plugin '{impl.plugin_name}' raised in {hook_name}: "
                                  f"{_failure(e)}") from e
        registry.current_plugin = "<python>"


def _failure(e: BaseException) -> str:
    if isinstance(e, SystemExit):
        return f"it called sys.exit({e.code!r})"
    return f"{type(e).__name__}: {e}"


def _trusted_path() -> list[str]:
    """``sys.path`` without the current directory: ``python -c``, the REPL and scripts run from
    a folder put it (as ``''``) first, and a ``*.dist-info`` lying there must not become an
    installed plugin that runs on ``import aicc`` use."""
    cwd = os.path.realpath(os.getcwd())
    out = []
    for entry in sys.path:
        if entry in ("", ".") or os.path.realpath(entry) == cwd:
            continue
        out.append(entry)
    return out


def _entry_point_plugins() -> Iterable[tuple[str, object]]:
    if os.environ.get(AUTOLOAD_ENV):
        return []
    seen: set[str] = set()
    eps = []
    for dist in importlib.metadata.distributions(path=_trusted_path()):
        name = (dist.metadata["Name"] or "").lower()
        if name in seen:  # the first on the path wins, as importlib's own entry_points()
            continue
        seen.add(name)
        eps += [ep for ep in dist.entry_points if ep.group == hookspecs.PROJECT]
    found = []
    for ep in sorted(eps, key=lambda e: e.name):
        try:
            found.append((f"{ep.name} ({ep.value})", ep.load()))
        except (Exception, SystemExit) as e:
            raise PluginError(f"entry-point plugin '{ep.name}' ({ep.value}) failed to load: "
                              f"{_failure(e)}") from e
    return found


def load_registries(plugin_files: Iterable[str | Path] = (), *,
                    extra_plugins: Iterable[object] = (),
                    base_file: str | Path | None = None) -> Registries:
    """Load the plugins (base file, then ``plugin_files``, entry points, objects) and register."""
    host = _Host()
    base = Path(base_file) if base_file is not None else DEFAULT_PLUGINS_FILE
    if not base.exists():
        raise PluginError("the built-in plugin list is missing", where=base,
                          hint="reinstall aicc with `pip install -e .` from its repository")
    for source in [base, *map(Path, plugin_files)]:
        modules, folders = plugin_modules_from_file(source)
        for folder in folders:
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
        for module in modules:
            host.add_module(module, str(source))
    for name, plugin in _entry_point_plugins():
        host.add_object(plugin, name, "entry points")
    for i, plugin in enumerate(extra_plugins):
        host.add_object(plugin, getattr(plugin, "__name__", f"plugin-{i}"), "python")
    host.check()
    regs = Registries(Registry("pass"), Registry("backend"), Registry("instrument"), host.order)
    host.register_into("aicc_register_passes", regs.passes)
    host.register_into("aicc_register_backends", regs.backends)
    host.register_into("aicc_register_instruments", regs.instruments)
    host.add_options(regs.options)
    regs.configurers = host.implementations("aicc_configure")
    regs.checkers = host.implementations("aicc_check_request")
    return regs
