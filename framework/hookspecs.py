"""The hooks aicc plugins implement. Every hook *registers* or *configures*; none decides order.

pluggy calls implementations in reverse registration order, so nothing here may depend on that
order: pass order lives only in the pipeline, and registries refuse duplicate names, naming both
plugins. Implement a hook in your plugin module with ``@aicc.hookimpl`` and list the module in
``plugins.toml`` or a ``--plugins`` file, or expose it as an entry point in group ``aicc``.

Hook implementations must accept the parameters exactly as named below, without defaults
(pluggy silently passes nothing to a parameter that has a default).
"""

from __future__ import annotations

import pluggy

__all__ = ["hookspec", "hookimpl", "PROJECT"]

PROJECT = "aicc"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def aicc_register_passes(registry):
    """Register pass classes: call ``registry.add(PassClass)`` once per pass.

    A pass class subclasses ``aicc.Pass`` and declares ``name``, ``Options``, ``scope`` and
    ``semantics``. Registering a name that another plugin registered is an error that names both.
    """


@hookspec
def aicc_register_backends(registry):
    """Register backend classes: call ``registry.add(BackendClass)`` once per backend.

    A backend class subclasses ``aicc.Backend`` and declares ``name``, ``Options`` and what it
    supports. Duplicate names are refused as for passes.
    """


@hookspec
def aicc_register_instruments(registry):
    """Register pass instruments: call ``registry.add(InstrumentClass)`` once per instrument.

    An instrument wraps every pass of a pipeline run (timing, IR dumps, verification). It is
    enabled by name from the CLI or a pipeline file; instruments run in the order they are
    enabled, ``before_*`` calls in that order and ``after_*`` calls in reverse.
    """


@hookspec
def aicc_add_options(options):
    """Declare compile options: call ``options.add(aicc.config.Option(...))`` once per option,
    or ``options.alias(key, flags, value, help)`` for a flag that sets an option to a constant.

    An option has one Python name (grouped ones are ``group.name``) and any number of flag
    spellings; the CLI, compile config files and ``aicc.compile`` keywords all reach it. A key or
    flag declared by two plugins is an error naming both.
    """


@hookspec
def aicc_configure(config, request):
    """Turn this plugin's options into the compile: ``request.add_pass(name, options)`` (placed
    by the passes' declared order), ``request.set_backend_option(...)``, request fields.

    ``config`` is the validated ``aicc.config.CompileConfig``; read any plugin's options by key
    (``config.get("dask")``). Refuse bad combinations with ``aicc.errors.option_ref(key)`` in the
    message, so each caller reads the option as they spelled it. Called once per compile; a
    plugin must not depend on another's having run first (read other plugins' choices in
    ``aicc_check_request``).
    """


@hookspec
def aicc_check_request(config, request):
    """After every plugin configured the compile: refuse (or complete) what depends on the
    choices of other plugins, e.g. ``-dask`` with nothing to calibrate or distribute. Called once
    per compile; the request is final after it.
    """
