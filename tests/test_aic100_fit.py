"""The cost model's fit: the procedure recovers figures made with known constants, the fitted
file is what the backend reads, and reports print its error band (see also the slow
test_aic100_fidelity.py, which checks the stored fit against the published figures)."""

from __future__ import annotations

import tomllib

import pytest

from aicc.backends.aic100.fit import Candidate, Published, Scenario, fit, write_fit
from aicc.backends.aic100.hardware import fit_path, load_hardware
from aicc.backends.aic100.lower import lower
from aicc.backends.aic100.multicore import build_plan
from aicc.backends.aic100.plan import PlanOptions
from aicc.backends.aic100.workloads import resnet50
from aic100_models import compile_aic


@pytest.fixture(scope="module")
def plans():
    hw = load_hardware("2.0", "standard", fitted=False)
    out = {}
    for batch in (1, 4):
        low = lower(resnet50(batch=batch, image=64, width=0.25, precision="int8",
                             int8_input=True))
        for cores in (1, 2):
            out[batch, cores] = build_plan(low, hw, PlanOptions(num_cores=cores,
                                                                multicore="split"))
    return hw, out


def _scenarios(hw, plans, truth):
    """Figures as a card with constants ``truth`` would publish them."""
    real = hw.with_constants(truth)
    thr = [Candidate(p, b, 14 // c) for (b, c), p in plans.items()]
    lat = [Candidate(p, 1, 1) for (b, c), p in plans.items() if b == 1]
    value_t = max(c.plan.evaluate(c.activations, hw=real).inferences_per_s * c.batch
                  for c in thr)
    value_l = min(c.plan.evaluate(1, hw=real).e2e_latency_s * 1e3 for c in lat)
    return [Scenario(Published("t", "throughput", value_t, "throughput", "synthetic"), thr,
                     True),
            Scenario(Published("l", "latency", value_l, "latency", "synthetic"), lat, False)]


def test_fit_reaches_the_figures_it_is_given(plans):
    hw, ps = plans
    truth = {"tensor_efficiency": 0.5, "ddr_efficiency": 0.7}
    scen = _scenarios(hw, ps, truth)
    result = fit(scen, hw)
    assert abs(result.errors["t"]) < 0.03  # fitted within the data spread
    # slower than the ASSUMED constants say: the fit moved some of them that way
    slower = hw.with_constants(result.constants)
    best = max(c.plan.evaluate(c.activations, hw=slower).inferences_per_s * c.batch
               for c in scen[0].candidates)
    assumed = max(c.plan.evaluate(c.activations).inferences_per_s * c.batch
                  for c in scen[0].candidates)
    assert best < assumed * 0.9
    assert set(result.constants) == set(hw.constants())
    assert result.band(scen, "latency") == pytest.approx(abs(result.errors["l"]))
    text = write_fit("aic100.toml", result, scen, ["a note"], "procedure text",
                     writer=lambda path, text: None)
    data = tomllib.loads(text)
    assert data["constants"]["tensor_efficiency"] == pytest.approx(
        result.constants["tensor_efficiency"], rel=1e-5)
    assert data["figures"]["t"]["role"] == "fitted" and data["figures"]["l"]["role"] == "held-out"
    assert data["figures"]["t"]["cores_per_activation"] in (1, 2)


def test_the_backend_reads_the_stored_fit():
    path = fit_path("aic100.toml")
    data = tomllib.loads(path.read_text())
    hw = load_hardware("2.0", "standard")
    assert hw.constants_source == "fit/aic100.toml"
    assert hw.constants() == pytest.approx(data["constants"])
    assert hw.error_band == pytest.approx(data["band"]["throughput"])
    prior = load_hardware("2.0", "standard", fitted=False)
    assert prior.constants_source == "assumed" and prior.error_band is None
    roles = {f["role"] for f in data["figures"].values()}
    assert roles == {"fitted", "held-out"}


def test_reports_print_the_error_band_beside_every_throughput():
    exe = compile_aic(resnet50(batch=1, image=32, width=0.125, precision="int8"), num_cores=1)
    band = f"±{load_hardware('2.0', 'standard').error_band * 100:.0f}% expected, held-out check"
    line = next(x for x in exe.report() if "Inf/Sec" in x)
    assert line.count(band) == 2  # inferences/s and samples/s
