"""Fitting the cost model's free constants to published figures, and the file that keeps them:
scenarios (published figure + candidate plans) in, constants, errors and an error band out.

A **scenario** is one published figure and the plans that could have produced it: for a
throughput figure (MLPerf Offline) every candidate is a plan with a batch and a number of
activations filling the card, and the prediction is the best candidate's samples per second (the
submitter tuned the configuration; we assume they found the best one the model knows of); for a
latency figure (SingleStream p90) the prediction is the lowest end-to-end latency of one inference
(device latency plus inputs and outputs over PCIe).

**The fit** (``fit``) minimises, over the logarithms of the free constants (``FREE_CONSTANTS``),

    sum over fitted figures  (log(predicted / published) / DATA_SIGMA)**2
  + sum over constants       (log(constant / prior) / PRIOR_SIGMA[constant])**2

with ``scipy.optimize.least_squares`` (bounded: efficiencies at most 1). Two figures cannot pin
eight constants, so the second sum (a log-normal prior around the data file's ASSUMED values)
keeps the constants the figures do not constrain where the physics put them, and moves the ones
they do by as little as it takes. The candidates' plans are fixed during one fit; the caller plans
again with the fitted constants and refits until the chosen configurations stop changing.

**The file** (``hw/fit/<hardware file>``) keeps the constants, the procedure, every figure with
its source, prediction and error, and the error band (largest held-out error of each kind) that
reports print beside their figures. It is written by ``benchmarks/aic100_fidelity.py --write``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .hardware import FREE_CONSTANTS, Hardware, fit_path
from .plan import Plan

__all__ = ["Published", "Candidate", "Scenario", "FitResult", "predict", "fit", "write_fit",
           "DATA_SIGMA", "PRIOR_SIGMA"]

#: relative spread allowed to a fitted figure (log scale)
DATA_SIGMA = 0.02
#: spread of each constant's log-normal prior around its ASSUMED value (log scale)
PRIOR_SIGMA = {"tensor_efficiency": math.log(2), "block_exponent": math.log(2),
               "vector_efficiency": math.log(2),
               "ddr_efficiency": math.log(2), "noc_efficiency": math.log(2),
               "step_overhead_cycles": math.log(4), "tile_overhead_cycles": math.log(4),
               "sync_cycles": math.log(4), "pipeline_depth": math.log(2)}
_LOWER = {"pipeline_depth": 1.0}


@dataclass(frozen=True)
class Published:
    """A figure someone measured on the real card."""

    key: str            # e.g. "resnet50-offline-v1.1"
    label: str          # what a reader sees
    value: float
    kind: str           # "throughput" (samples/s) or "latency" (ms)
    source: str


@dataclass
class Candidate:
    """One way to run a scenario: a plan, its batch and how many activations fill the card."""

    plan: Plan
    batch: int
    activations: int

    def config(self) -> dict[str, int]:
        return {"batch": self.batch, "cores_per_activation": self.plan.options.num_cores,
                "activations": self.activations}

    def describe(self) -> str:
        p = self.plan
        return (f"batch {self.batch}, {p.options.num_cores} core(s) x {self.activations} "
                f"activation(s), {p.mode}")


@dataclass
class Scenario:
    figure: Published
    candidates: list[Candidate]
    fitted: bool        # True: the fit sees it; False: held out


def predict(scenario: Scenario, hw: Hardware) -> tuple[float, Candidate]:
    """The scenario's figure under ``hw``'s constants, and the candidate that gives it."""
    best: tuple[float, Candidate] | None = None
    for c in scenario.candidates:
        cost = c.plan.evaluate(c.activations, hw=hw)
        if scenario.figure.kind == "throughput":
            value = cost.inferences_per_s * c.batch
            better = best is None or value > best[0]
        else:
            value = cost.e2e_latency_s * 1e3
            better = best is None or value < best[0]
        if better:
            best = (value, c)
    assert best is not None, f"scenario {scenario.figure.key} has no candidates"
    return best


@dataclass
class FitResult:
    constants: dict[str, float]
    prior: dict[str, float]
    errors: dict[str, float] = field(default_factory=dict)       # key -> relative error
    predicted: dict[str, float] = field(default_factory=dict)
    chosen: dict[str, str] = field(default_factory=dict)
    configs: dict[str, dict[str, int]] = field(default_factory=dict)
    cost: float = 0.0
    evaluations: int = 0

    def band(self, scenarios: Sequence[Scenario], kind: str) -> float:
        held = [abs(self.errors[s.figure.key]) for s in scenarios
                if not s.fitted and s.figure.kind == kind]
        return max(held) if held else float("nan")


def _names() -> list[str]:
    return [name for name, _ in FREE_CONSTANTS]


def fit(scenarios: Sequence[Scenario], prior_hw: Hardware, start: Hardware | None = None
        ) -> FitResult:
    """Fit the free constants on the scenarios marked ``fitted`` (see the module docstring)."""
    from scipy.optimize import least_squares

    names = _names()
    prior = prior_hw.constants()
    x0 = np.log([(start or prior_hw).constants()[n] for n in names])
    lower = np.log([_LOWER.get(n, 1e-3) for n in names])
    upper = np.log([ub if ub is not None else 1e7 for _, ub in FREE_CONSTANTS])
    x0 = np.clip(x0, lower + 1e-9, upper - 1e-9)
    fitted = [s for s in scenarios if s.fitted]
    sig = np.array([PRIOR_SIGMA[n] for n in names])
    mu = np.log([prior[n] for n in names])

    def hw_of(x: np.ndarray) -> Hardware:
        return prior_hw.with_constants(dict(zip(names, np.exp(x))))

    def residuals(x: np.ndarray) -> np.ndarray:
        hw = hw_of(x)
        data = [math.log(predict(s, hw)[0] / s.figure.value) / DATA_SIGMA for s in fitted]
        return np.concatenate([np.array(data), (x - mu) / sig])

    res = least_squares(residuals, x0, bounds=(lower, upper), method="trf", x_scale=1.0,
                        diff_step=1e-4, xtol=1e-10, ftol=1e-10, max_nfev=400)
    out = FitResult(constants={n: float(v) for n, v in zip(names, np.exp(res.x))},
                    prior=dict(prior), cost=float(res.cost), evaluations=int(res.nfev))
    evaluate_all(out, scenarios, hw_of(res.x))
    return out


def evaluate_all(result: FitResult, scenarios: Sequence[Scenario], hw: Hardware) -> None:
    """Fill ``result``'s predictions, errors and chosen configurations under ``hw``."""
    for s in scenarios:
        value, cand = predict(s, hw)
        result.predicted[s.figure.key] = value
        result.errors[s.figure.key] = value / s.figure.value - 1.0
        result.chosen[s.figure.key] = cand.describe()
        result.configs[s.figure.key] = cand.config()


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_fit(hardware_file: str, result: FitResult, scenarios: Sequence[Scenario],
              notes: Sequence[str], procedure: str,
              writer: Callable[[str, str], None] | None = None) -> str:
    """The fit file's text (written to ``hw/fit/<hardware_file>`` unless ``writer`` is given)."""
    lines = ["# Fitted constants of the aic100 cost model. Written by",
             "#   .venv/bin/python benchmarks/aic100_fidelity.py --write",
             "# Do not edit by hand: change the procedure or the data and run it again.",
             "#", *[f"# {line}" for line in procedure.splitlines()], "",
             "[constants]"]
    for name in _names():
        lines.append(f"# prior (ASSUMED, hw/{hardware_file}): {result.prior[name]:g}")
        lines.append(f"{name} = {result.constants[name]:.6g}")
    lines += ["", "# largest relative error of the held-out figures, by kind: reports print it "
                  "beside their figures", "[band]",
              f"throughput = {result.band(scenarios, 'throughput'):.4f}",
              f"latency = {result.band(scenarios, 'latency'):.4f}", ""]
    for s in scenarios:
        f = s.figure
        lines += [f"[figures.{_toml_str(f.key)}]", f"label = {_toml_str(f.label)}",
                  f"source = {_toml_str(f.source)}", f"kind = {_toml_str(f.kind)}",
                  f"role = {_toml_str('fitted' if s.fitted else 'held-out')}",
                  f"published = {f.value:g}", f"predicted = {result.predicted[f.key]:.6g}",
                  f"error = {result.errors[f.key]:.4f}",
                  f"configuration = {_toml_str(result.chosen[f.key])}",
                  *[f"{k} = {v}" for k, v in result.configs[f.key].items()], ""]
    if notes:
        lines += ["[notes]", "text = [" + ", ".join(_toml_str(n) for n in notes) + "]", ""]
    text = "\n".join(lines)
    if writer is not None:
        writer(str(fit_path(hardware_file)), text)
    else:
        from aicc.fileio import write_text_atomic

        fit_path(hardware_file).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(fit_path(hardware_file), text)
    return text
