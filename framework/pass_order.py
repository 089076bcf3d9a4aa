"""Where each pass of a generated pipeline runs: a stable topological order of declarations.

Passes declare ``after`` (passes that, when present, run before them) and ``before`` (passes that,
when present, run after them); ``"*"`` in ``after`` means after every step that does not itself
say ``after = ("*",)`` (``cleanup``), and in ``before`` before every step that does not itself say
``before = ("*",)`` (``bind-symbols``, which binds shapes first). A step may add constraints of its
own (``Requested.after``/``before``) on top of its class's.

The order is the topological order that keeps the requested order wherever the constraints allow
(Kahn's algorithm taking the earliest requested ready step), so the same request always gives the
same pipeline, a plugin's pass lands where its declarations put it, and passes nothing relates keep
the order in which features asked for them. A cycle is refused, naming the passes in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["Requested", "order_steps"]

ANY = "*"


@dataclass
class Requested:
    """A pass a feature (or the driver) asks for: name, options, and extra ordering of its own."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    #: who asked (a feature's name), for error messages
    by: str = "aicc"


def _constraints(step: Requested, cls: type) -> tuple[set[str], set[str]]:
    return (set(getattr(cls, "after", ())) | set(step.after),
            set(getattr(cls, "before", ())) | set(step.before))


def _edges(steps: Sequence[Requested], classes: Sequence[type]) -> list[set[int]]:
    """``succ[i]``: the steps that must run after step ``i``."""
    n = len(steps)
    after = [_constraints(s, c)[0] for s, c in zip(steps, classes)]
    before = [_constraints(s, c)[1] for s, c in zip(steps, classes)]
    succ: list[set[int]] = [set() for _ in range(n)]
    for j in range(n):
        for i in range(n):
            if i == j:
                continue
            name_i, name_j = steps[i].name, steps[j].name
            if name_i in after[j] or name_j in before[i]:
                succ[i].add(j)
            if ANY in after[j] and ANY not in after[i]:
                succ[i].add(j)
            if ANY in before[i] and ANY not in before[j]:
                succ[i].add(j)
    return succ


def order_steps(steps: Sequence[Requested], classes: Sequence[type]) -> list[Requested]:
    """``steps`` (with their pass classes) in the stable topological order of their
    declarations; a cycle is a ConfigError naming the passes in it."""
    succ = _edges(steps, classes)
    indegree = [0] * len(steps)
    for targets in succ:
        for j in targets:
            indegree[j] += 1
    ready = sorted(i for i, d in enumerate(indegree) if d == 0)
    order: list[int] = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for j in sorted(succ[i]):
            indegree[j] -= 1
            if indegree[j] == 0:
                ready.append(j)
        ready.sort()
    if len(order) < len(steps):
        stuck = [steps[i].name for i in range(len(steps)) if i not in set(order)]
        raise ConfigError(f"the passes {', '.join(stuck)} declare an order that contradicts "
                          "itself (each must run before another of them)",
                          where="pipeline order",
                          hint="check the 'after'/'before' of these passes and their plugins")
    return [steps[i] for i in order]
