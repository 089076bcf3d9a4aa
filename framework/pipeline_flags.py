"""Flags meet an explicit pipeline: each flag-configured pass is configured inside the pipeline the
user gave, or the compile is refused naming the pass to add. A flag is never ignored.

Flags (``-onnx-define-symbol``, ``-batchsize``, the feature flags of ``aicc compile`` and the
options of ``aicc.compile``) ask for passes with options. With the default pipeline those passes
are placed by their declared order (``compiler.default_pipeline``). With ``--passes``,
``--pipeline`` or ``pipeline=[...]`` the user has placed the passes; then, for every flag step:

- the pipeline has no such pass: refused, naming the pass and the flags' options, so the user can
  add it where it belongs;
- the pass appears more than once: refused (which one the flag means is ambiguous);
- otherwise the flag's options are merged into that step. An option the pipeline already sets
  to a different value is a conflict and refused; the same value is fine.

The merged pipeline is what runs, what ``--print-pipeline`` prints and what the manifest records,
so that text runs again as printed, without the flags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConfigError
from .options import build_options, format_value, options_to_dict
from .pipeline import Pipeline, Step

__all__ = ["configure_explicit_pipeline", "canonical_symbols"]


def canonical_symbols(items: Sequence[str]) -> list[str]:
    """``["batch,4", "seq=16"]`` -> ``["batch=4", "seq=16"]`` (checked; repeats refused), the
    form ``bind-symbols`` prints and reads back."""
    from .passes.bind_symbols import parse_symbol_values

    return [f"{k}={v}" for k, v in parse_symbol_values(list(items)).items()]


def _describe(name: str, options: Mapping[str, Any]) -> str:
    if not options:
        return name
    return name + "{" + " ".join(f"{k}={format_value(v)}" for k, v in options.items()) + "}"


def configure_explicit_pipeline(pipeline: Pipeline,
                                flag_steps: Sequence[tuple[str, Mapping[str, Any], str]]
                                ) -> Pipeline:
    """``pipeline`` with each ``(pass name, options, flags)`` step merged into its pass (see the
    module docstring); ``flags`` names the flags that asked for it, for messages."""
    steps = list(pipeline.steps)
    for name, options, flags in flag_steps:
        where = [i for i, s in enumerate(steps) if s.name == name]
        wanted = _describe(name, options)
        if not where:
            raise ConfigError(f"{flags} configure pass '{name}', which the explicit pipeline "
                              "does not have", where=pipeline.source,
                              hint=f"add {wanted} to the pipeline where it belongs, or drop "
                                   "the flags")
        if len(where) > 1:
            raise ConfigError(f"{flags} configure pass '{name}', which the pipeline has "
                              f"{len(where)} times", where=pipeline.source,
                              hint=f"give its options in the pipeline ({wanted}) and drop the "
                                   "flags")
        step = steps[where[0]]
        merged = options_to_dict(step.options, only_changed=True)
        for key, value in options.items():
            if key in merged and merged[key] != value:
                raise ConfigError(f"pass '{name}': option '{key}' is "
                                  f"{format_value(merged[key])} in the pipeline but "
                                  f"{format_value(value)} from {flags}", where=pipeline.source,
                                  hint="give it in one place only")
            merged[key] = value
        opts = build_options(step.cls.Options, merged, owner=f"pass '{name}' ({flags})")
        steps[where[0]] = Step(step.name, step.cls, opts, step.plugin)
    return Pipeline(steps, list(pipeline.instruments), pipeline.source)
