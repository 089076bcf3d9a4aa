"""The stored fit of the aic100 cost model (``backends/aic100/hw/fit/aic100.toml``) against the
published MLPerf figures: rebuilding the workloads the benchmark fitted on and planning each
figure's recorded configuration with the stored constants gives the stored predictions, the
fitted figures are within 15% of the published ones, and each held-out figure within 30% unless
the file's notes say why it misses.

Deterministic: the cost model is arithmetic over the plan (no wall time). Slow: it builds
ResNet-50 and BERT-large (BERT quantized through aicc's passes one layer at a time, as the
benchmark does) and plans six configurations.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from aicc.backends.aic100.fit import predict
from aicc.backends.aic100.hardware import fit_path, load_hardware
from spec_helpers import script_module

pytestmark = pytest.mark.slow

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "aic100_fidelity.py"


@pytest.fixture(scope="module")
def bench():
    with script_module(BENCHMARK, "aic100_fidelity") as module:
        yield module


def test_stored_fit_reproduces_and_stays_within_bounds(bench):
    data = tomllib.loads(fit_path(bench.HARDWARE_FILE).read_text())
    figures = data["figures"]
    assert set(figures) == set(bench.FIGURES)
    notes = " ".join(data.get("notes", {}).get("text", []))
    hw = {sku: load_hardware("2.0", sku) for sku in ("standard", "pro")}
    only = {k: {"batch": f["batch"], "cores_per_activation": f["cores_per_activation"]}
            for k, f in figures.items()}
    scen = bench.scenarios(bench.workloads(), hw, only=only)
    assert {s.figure.key for s in scen} == set(figures)
    for s in scen:
        stored = figures[s.figure.key]
        value, cand = predict(s, hw["pro" if "pro" in s.figure.key else "standard"])
        assert cand.activations == stored["activations"], s.figure.key
        assert value == pytest.approx(stored["predicted"], rel=1e-4), s.figure.key
        error = value / s.figure.value - 1
        assert error == pytest.approx(stored["error"], abs=2e-4)
        if s.fitted:
            assert stored["role"] == "fitted" and abs(error) <= 0.15, (s.figure.key, error)
        else:
            assert stored["role"] == "held-out"
            assert abs(error) <= 0.30 or f"{s.figure.label}:" in notes, (
                s.figure.key, error)
