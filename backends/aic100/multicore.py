"""How ``-aic-num-cores`` are used: a lowered graph and the options into the fastest plan over the
multi-core partitions, and the sentence the report prints to say why that one.

Partitions, for ``N`` cores and a batch of ``B`` samples:

- **one program** over all ``N`` cores (``plan.search`` for each number of data-parallel groups
  the batch allows): operator-split (every core works on every step of one inference), the
  batch split over data-parallel groups (each group a slice of the batch), or both;
- **data-parallel activations**: ``k`` copies of a program for ``N / k`` cores, each running whole
  inferences (inferences dealt round robin, as ``aicc run -a`` deals them to activations). Tried
  when the batch holds at least ``k`` samples (a smaller batch asks for latency, which copies do
  not shorten). A small model scales close to linearly this way: each copy pays the per-step
  costs once per batch instead of every core paying them for a slice of it.

The default picks the most inferences per second (ties: fewer copies, then as ``plan.search``
orders them); the backend option ``multicore`` restricts the choice ("split": one program only,
"activations": copies only, any batch). Every partition tried is kept in ``Plan.alternatives``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from aicc.errors import BackendError

from .hardware import Hardware
from .lower import Lowered
from .plan import Plan, PlanOptions, group_counts, mode_name, search

__all__ = ["build_plan", "partition_reason"]

logger = logging.getLogger(__name__)


def _copy_counts(low: Lowered, opts: PlanOptions) -> list[int]:
    n, batch = opts.num_cores, max(1, low.batch)
    if opts.multicore == "split" or n == 1:
        return [1]
    counts = [k for k in range(1, n + 1) if n % k == 0]
    if opts.multicore == "activations":
        return [k for k in counts if k > 1]
    return [k for k in counts if k == 1 or batch >= k]


def build_plan(low: Lowered, hw: Hardware, opts: PlanOptions) -> Plan:
    """The fastest plan over the partitions of ``opts.num_cores`` (see the module docstring)."""
    if opts.num_cores > hw.cores:
        raise BackendError(f"-aic-num-cores={opts.num_cores} exceeds the {hw.cores} cores of "
                           f"{hw.name}", where="backend 'aic100'",
                           hint="use fewer cores" + ("" if hw.sku == "pro" else
                                                     ", or sku=pro if the card is a Pro"))
    tried: list[dict[str, Any]] = []
    errors: list[BackendError] = []
    best: Plan | None = None
    for copies in _copy_counts(low, opts):
        sub = opts if copies == 1 else dataclasses.replace(opts,
                                                          num_cores=opts.num_cores // copies)
        for g in group_counts(low, sub.num_cores):
            entry = {"copies": copies, "groups": g, "cores": sub.num_cores // g,
                     "mode": mode_name(copies, g, sub.num_cores // g)}
            tried.append(entry)
            try:
                plan = search(low, hw, sub, g)
            except BackendError as e:  # this partition does not fit; others may
                errors.append(e)
                entry["error"] = str(e)
                continue
            if copies > 1:
                plan.copies, plan.options = copies, opts
                plan.cost = plan.evaluate(1)
            ips = plan.cost.inferences_per_s
            entry["inferences_per_s"] = round(ips, 3)
            if best is None or ips > best.cost.inferences_per_s * (1 + 1e-12) or (
                    copies == best.copies and ips >= best.cost.inferences_per_s * (1 - 1e-12)):
                best = plan
    if best is None:
        raise errors[0]
    best.alternatives = tried
    logger.debug("aic100 plan: %s", best.mode)
    return best


def _batch_text(low: Lowered) -> str:
    if low.batch <= 1:
        return f"batch {max(low.batch, 1)}"
    return f"batch {low.batch}" + ("" if low.batch_separable else
                                   ", and an op mixes samples along dim 0")


def partition_reason(plan: Plan) -> str:
    """Why this partition: the alternatives ``build_plan`` weighed, for the report."""
    mine = plan.cost.inferences_per_s if plan.cost else 0.0
    others = [a for a in plan.alternatives
              if (a["copies"], a["groups"]) != (plan.copies, plan.groups)]
    if plan.cores_used == 1:
        return "one core: nothing to partition"
    if not others:
        why = ("the batch cannot be split" if plan.low.batch <= 1 or not
               plan.low.batch_separable else "no other partition fits")
        return f"{plan.mode}: {why} ({_batch_text(plan.low)})"
    parts = []
    for a in others:
        shape = f"{a['copies']}x{a['groups']}x{a['cores']}"
        if "inferences_per_s" in a:
            ratio = mine / a["inferences_per_s"] if a["inferences_per_s"] else float("inf")
            parts.append(f"{a['mode']} [{shape}] {ratio:.2f}x slower")
        else:
            parts.append(f"{a['mode']} [{shape}] does not fit")
    return (f"{plan.mode} [copies x groups x cores {plan.copies}x{plan.groups}x{plan.cores}] is "
            f"the fastest for batch {max(1, plan.low.batch)}; " + ", ".join(parts))
