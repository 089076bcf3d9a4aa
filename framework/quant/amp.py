"""AMP (automatic mixed precision): quantizer groups, candidate precisions, a model builder and a
metric in; the cheapest assignment of candidates to groups that keeps the metric above a target,
and the Pareto front of (cost, metric) points the search evaluated, out.

A quantizer group is a set of nodes that change precision together (on aicc's flow: a weighted
layer and the nodes downstream of it up to the next one, ``amp_groups``). A candidate is
``[[act_bw, act_dtype], [param_bw, param_dtype]]`` as in AIMET's templates. The cost of an
assignment is bit-operations: per group, its work (multiply-accumulates, one per output element
for elementwise nodes) x activation bits x parameter bits, relative to every group at the most
precise candidate (1.0).

Phase 1 measures each group's sensitivity: the metric of the model with every group at the most
precise candidate except that one, at each cheaper candidate. Phase 2 orders these moves from the
least to the most harmful and searches along the path "the first i moves applied" for the largest
i whose metric still meets the target (a move is applied only when it lowers the group's bits:
with fp16 and A16/W16 both given, the one listed second in precision order is never chosen over
the first at the same cost) (``Binary``: bisection, assuming the metric falls along the
path; ``Interpolation``: the split point interpolated between the metrics at both ends;
``BruteForce``: every point). With ``phase2_reverse`` the path starts from every group at the
cheapest candidate and raises the most sensitive groups first, searching for the fewest raises.
Phase 1 results are cached in a JSON file keyed by everything that decides them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["Candidate", "parse_candidates", "AmpResult", "run_amp", "front_table",
           "SEARCH_ALGOS"]

logger = logging.getLogger(__name__)

SEARCH_ALGOS = ("Binary", "Interpolation", "BruteForce")


@dataclasses.dataclass(frozen=True, order=True)
class Candidate:
    act_bw: int
    act_dtype: str
    param_bw: int
    param_dtype: str

    @property
    def label(self) -> str:
        if self.act_dtype == self.param_dtype == "float":
            return f"fp{self.act_bw}" if self.act_bw == self.param_bw else \
                f"A-fp{self.act_bw}/W-fp{self.param_bw}"
        return f"A{self.act_dtype[0]}{self.act_bw}/W{self.param_dtype[0]}{self.param_bw}"

    @property
    def bits(self) -> int:
        return self.act_bw * self.param_bw

    @property
    def is_float(self) -> bool:
        return self.act_dtype == "float" or self.param_dtype == "float"

    @property
    def wide(self) -> bool:
        """An integer candidate with 4/16-bit activations or 16-bit weights (opset-21 types)."""
        return not self.is_float and (self.act_bw in (4, 16) or self.param_bw == 16)


def parse_candidates(data: Sequence[Any], *, where: str | Path, field: str) -> list[Candidate]:
    """``[[[bw, dtype], [bw, dtype]], ...]`` -> Candidates, most precise first."""
    out: list[Candidate] = []
    for i, c in enumerate(data):
        try:
            (ab, ad), (pb, pd) = c
            cand = Candidate(int(ab), str(ad), int(pb), str(pd))
        except (TypeError, ValueError):
            raise ConfigError(f"entry {i}: expected [[act_bw, dtype], [param_bw, dtype]], got "
                              f"{c!r}", where=where, field=field) from None
        if (cand.act_dtype == "float") != (cand.param_dtype == "float"):
            raise ConfigError(f"entry {i}: {c!r} mixes a float and an integer side; aicc keeps "
                              "a float layer's weights and output float together", where=where,
                              field=field)
        if cand in out:
            raise ConfigError(f"entry {i}: {c!r} is listed twice", where=where, field=field)
        out.append(cand)
    if len(out) < 2:
        raise ConfigError("give at least two candidates", where=where, field=field)
    return sorted(out, key=lambda c: (-c.bits, c.is_float))


@dataclasses.dataclass
class AmpResult:
    choice: dict[str, Candidate]
    cost: float
    metric: float
    target: float
    baseline: float
    front: list[dict[str, Any]]
    phase1: dict[str, dict[str, float]]
    met: bool
    cached: bool = False


def front_table(result: AmpResult) -> str:
    """The Pareto front as a text table (cost ascending)."""
    lines = [f"{'point':>5}  {'groups changed':>14}  {'relative bit-ops':>16}  {'metric':>10}"]
    for i, p in enumerate(sorted(result.front, key=lambda p: p["cost"])):
        mark = "  <- chosen" if p["cost"] == result.cost and p["metric"] == result.metric else ""
        lines.append(f"{i:>5}  {p['changed']:>14}  {p['cost']:>16.4f}  {p['metric']:>10.4f}"
                     f"{mark}")
    return "\n".join(lines)


def _cost(choice: dict[str, Candidate], macs: dict[str, int], top: Candidate) -> float:
    total = sum(macs.values()) * top.bits
    return sum(macs[g] * c.bits for g, c in choice.items()) / total if total else 1.0


class _Search:
    def __init__(self, evaluate: Callable[[dict[str, Candidate]], float], groups: list[str],
                 macs: dict[str, int], cands: list[Candidate], target: float):
        self.evaluate, self.groups, self.macs = evaluate, groups, macs
        self.cands, self.target = cands, target
        self.front: list[dict[str, Any]] = []
        self.seen: dict[int, float] = {}
        #: assignment -> metric: path points that apply no move in between are one model
        self.scored: dict[tuple, float] = {}

    def point(self, i: int, choice: dict[str, Candidate], changed: int) -> float:
        if i not in self.seen:
            key = tuple(sorted(choice.items()))
            if key not in self.scored:
                self.scored[key] = self.evaluate(choice)
                self.front.append({"changed": changed, "cost": _cost(choice, self.macs,
                                                                      self.cands[0]),
                                   "metric": self.scored[key], "index": i})
            self.seen[i] = self.scored[key]
        return self.seen[i]

    def largest_ok(self, n: int, at: Callable[[int], float], algo: str) -> int:
        """The largest i in [0, n] with at(i) >= target, given at(0) does (monotone path)."""
        if algo == "BruteForce":
            return max(i for i in range(n + 1) if at(i) >= self.target)
        lo, hi = 0, n
        if at(hi) >= self.target:
            return hi
        while hi - lo > 1:
            if algo == "Interpolation":
                f_lo, f_hi = at(lo), at(hi)
                frac = (f_lo - self.target) / (f_lo - f_hi) if f_lo > f_hi else 0.5
                mid = min(hi - 1, max(lo + 1, lo + int(frac * (hi - lo))))
            else:
                mid = (lo + hi) // 2
            if at(mid) >= self.target:
                lo = mid
            else:
                hi = mid
        return lo


def _phase1(evaluate, groups, cands, cache: Path | None, key: str, clean: bool
            ) -> tuple[dict[str, dict[str, float]], bool]:
    if cache is not None and cache.is_file() and not clean:
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return data["phase1"], True
        except (OSError, ValueError):
            logger.warning("AMP cache %s unreadable; phase 1 runs again", cache)
    top = cands[0]
    out: dict[str, dict[str, float]] = {}
    for g in groups:
        out[g] = {}
        for c in cands[1:]:
            choice = {h: top for h in groups}
            choice[g] = c
            out[g][c.label] = evaluate(choice)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "phase1": out}, indent=1))
        tmp.replace(cache)
    return out, False


def run_amp(evaluate_phase1: Callable[[dict[str, Candidate]], float],
            evaluate_phase2: Callable[[dict[str, Candidate]], float], *, groups: list[str],
            macs: dict[str, int], candidates: list[Candidate], target: float, baseline: float,
            algo: str = "Binary", reverse: bool = False, cache: Path | None = None,
            cache_key: str = "", clean_start: bool = False) -> AmpResult:
    """Phase 1 and phase 2 (see the module docstring); ``evaluate_*`` score an assignment."""
    if algo not in SEARCH_ALGOS:
        raise ConfigError(f"unknown search algorithm {algo!r}", field="amp_search_algo",
                          hint="valid: " + ", ".join(SEARCH_ALGOS))
    key = hashlib.sha256((cache_key + json.dumps([dataclasses.astuple(c) for c in candidates])
                          + json.dumps(groups)).encode()).hexdigest()
    phase1, cached = _phase1(evaluate_phase1, groups, candidates, cache, key, clean_start)
    top, low = candidates[0], candidates[-1]
    moves = sorted(((m, g, c) for g in groups for c in candidates[1:]
                    for m in [phase1[g][c.label]]), key=lambda t: (-t[0], t[1]))
    search = _Search(evaluate_phase2, groups, macs, candidates, target)

    def forward(i: int) -> dict[str, Candidate]:
        choice = {g: top for g in groups}
        for _, g, c in moves[:i]:
            if c.bits < choice[g].bits:       # a move that saves nothing is not taken
                choice[g] = c
        return choice

    sensitivity = sorted(groups, key=lambda g: (min(phase1[g].values()), g))

    def backward(j: int) -> dict[str, Candidate]:
        choice = {g: low for g in groups}
        for g in sensitivity[:j]:
            choice[g] = top
        return choice
    if reverse:
        n = len(groups)
        at = lambda k: search.point(k, backward(n - k), n - (n - k))  # noqa: E731
    else:
        n = len(moves)
        at = lambda k: search.point(k, forward(k), k)  # noqa: E731
    met = at(0) >= target
    best = search.largest_ok(n, at, algo) if met else 0
    choice = backward(n - best) if reverse else forward(best)
    return AmpResult(choice=choice, cost=_cost(choice, macs, top), metric=search.seen[best],
                     target=target, baseline=baseline, front=search.front, phase1=phase1,
                     met=met, cached=cached)


def sqnr_db(reference: Sequence[Any], outputs: Sequence[Any]) -> float:
    """Output SQNR in dB over all samples and outputs (inf when equal)."""
    import numpy as np
    sig = sum(float(np.sum(np.asarray(r, np.float64) ** 2)) for r in reference)
    noise = sum(float(np.sum((np.asarray(r, np.float64) - np.asarray(o, np.float64)) ** 2))
                for r, o in zip(reference, outputs))
    if noise == 0:
        return math.inf
    return 10 * math.log10(sig / noise) if sig > 0 else -math.inf
