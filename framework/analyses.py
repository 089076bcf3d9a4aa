"""Facts about a Program that passes compute once and share: the analysis cache of a pipeline run.

An ``Analysis`` is a named fact: computed on demand (``compute``), or provided by a pass that
produces it (``calibrate`` provides the calibration profile, ``fold-batchnorm`` the statistics of
the BatchNormalizations it folded) or by the caller (calibration samples given through the Python
API). A program-bound fact stops being valid when a later pass modifies the program, unless that
pass declares it preserved (``Pass.preserves`` or ``PassResult.preserved``); facts about the run's
inputs (``program_bound=False``) stay. The pass manager drops what a pass invalidated after it ran,
so a pass can never read a fact about a program that has since changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import PassError

__all__ = ["Analysis", "AnalysisCache"]

T = TypeVar("T")


@dataclass(frozen=True)
class Analysis(Generic[T]):
    """A named fact. ``compute(program)`` builds it on demand (None: only a pass or the caller
    provides it); ``program_bound`` facts are dropped when the program changes."""

    name: str
    description: str = ""
    compute: Callable[[Any], T] | None = None
    program_bound: bool = True


class AnalysisCache:
    """The facts of one pipeline run, each stamped with the pass index that produced it."""

    def __init__(self, provided: Mapping[Analysis, Any] | None = None):
        self._facts: dict[str, tuple[Analysis, Any, int]] = {}
        self._clock = 0     # stamps facts; advanced when a pass starts (nested passes too)
        for analysis, value in (provided or {}).items():
            self.put(analysis, value)

    def put(self, analysis: Analysis[T], value: T) -> None:
        """Record ``value`` as the current fact ``analysis`` (produced by the running pass)."""
        self._facts[analysis.name] = (analysis, value, self._clock)

    def peek(self, analysis: Analysis[T], default: Any = None) -> T | Any:
        """The fact if it is known and valid, else ``default``; never computes."""
        entry = self._facts.get(analysis.name)
        return entry[1] if entry is not None else default

    def get(self, analysis: Analysis[T], program: Any) -> T:
        """The fact, computed now (and kept) if it is not known."""
        entry = self._facts.get(analysis.name)
        if entry is not None:
            return entry[1]
        if analysis.compute is None:
            raise PassError(f"no {analysis.name} is available: a pass that provides it must run "
                            "earlier in the pipeline")
        value = analysis.compute(program)
        self.put(analysis, value)
        return value

    def copy(self) -> "AnalysisCache":
        """The same facts, for a run over a copy of the same program (e.g. AMP's trials)."""
        other = AnalysisCache()
        other._facts = dict(self._facts)
        other._clock = self._clock
        return other

    def __contains__(self, analysis: Analysis) -> bool:
        return analysis.name in self._facts

    def start_pass(self) -> int:
        """A pass starts: returns its stamp (facts it produces carry it or a later one)."""
        self._clock += 1
        return self._clock

    def invalidate(self, preserved: Iterable[Analysis | str], *, started: int) -> list[str]:
        """After the pass stamped ``started`` modified the program: drop the program-bound facts
        that existed before it ran and that it did not preserve; returns the names dropped."""
        keep = {a if isinstance(a, str) else a.name for a in preserved}
        dropped = [name for name, (analysis, _, produced) in self._facts.items()
                   if analysis.program_bound and produced < started and name not in keep]
        for name in dropped:
            del self._facts[name]
        return dropped
