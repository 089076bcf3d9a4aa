"""Run-time guards: conditions on the input values that a compiled graph assumes, checked by the
session on every run.

A compile can specialize on more than shapes. When the bound input shapes leave one branch of a
data-dependent If unable to run at all (silero-vad given 512-sample frames: its 8 kHz network
then feeds its LSTM a rank-5 tensor, and onnxruntime fails on every input with sr = 8000),
``predicate-if`` keeps the other branch only and adds a boolean graph output that is true exactly
when the inputs take the kept branch. ``Program.guards`` records it per graph::

    {"default": [{"output": "aicc_guard/If_0", "node": "If_0", "kept": "then_branch",
                  "pruned": "else_branch", "reason": "node 'LSTM_1' (LSTM): ..."}]}

The session strips guard outputs from what it returns and refuses a run whose guard is false,
naming the If and the reason, as onnxruntime would have failed on it: such a program never
answers for inputs it was not compiled for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import ContainerError, DataError

__all__ = ["GUARD_PREFIX", "guard_names", "check_guards", "read_guards"]

#: prefix of the graph outputs that carry guards
GUARD_PREFIX = "aicc_guard/"


_KEYS = ("output", "node", "kept", "pruned", "reason")


def read_guards(meta: Mapping[str, Any], where: Any) -> dict[str, list[dict[str, str]]]:
    """``meta["guards"]`` of a container's manifest, checked (the manifest is untrusted input):
    a ContainerError names what is malformed."""
    guards = meta.get("guards", {})
    ok = isinstance(guards, dict) and all(
        isinstance(v, list) and all(isinstance(g, dict) and all(isinstance(g.get(k), str)
                                                                for k in _KEYS) for g in v)
        for v in guards.values())
    if not ok:
        raise ContainerError("malformed run-time guards", where=where, field="program.guards",
                             hint="the container is damaged; recompile it")
    return guards


def guard_names(guards: Mapping[str, Sequence[Mapping[str, Any]]], graph: str) -> set[str]:
    """The names of the guard outputs of ``graph``."""
    return {g["output"] for g in guards.get(graph, ())}


def check_guards(guards: Sequence[Mapping[str, Any]], results: Mapping[str, Any]) -> None:
    """Refuse (DataError) a run in which a guard output is false."""
    for g in guards:
        value = np.asarray(results[g["output"]])
        if value.size and bool(value.reshape(-1)[0]):
            continue
        raise DataError(f"the input values take the {g['pruned']} of If '{g['node']}', which "
                        f"this program left out: with its bound shapes that branch cannot run "
                        f"({g['reason']}); onnxruntime fails on these inputs too",
                        where="feeds",
                        hint="compile with input shapes that branch accepts, or use a backend "
                             "that runs If (interpreter, cpu)")
