"""How -aic-num-cores is used: the default picks the fastest partition for the batch (operator
split, the batch split over groups, or data-parallel activations), the report says why, and the
multicore option restricts the choice."""

from __future__ import annotations

import numpy as np
import pytest

from aic100_models import compile_aic
from aicc.backends.aic100.workloads import mobilenet
from aicc.backends.interpreter.engine import Interpreter


@pytest.fixture(scope="module")
def mnet():
    return mobilenet(batch=8)


def test_batch8_mobilenet_scales_with_the_default_choice(mnet):
    one = compile_aic(mnet, num_cores=1).cost.inferences_per_s
    exe = compile_aic(mnet, num_cores=4)
    assert exe.cost.inferences_per_s >= 3.0 * one
    assert exe.plan.mode.startswith("data-parallel activations")
    # the one-program partitions were costed and lost; the report says so
    tried = {(a["copies"], a["groups"], a["cores"]) for a in exe.plan.alternatives}
    assert {(1, 1, 4), (1, 4, 1), (4, 1, 1)} <= tried
    line = next(x for x in exe.report() if x.startswith("  partition: "))
    assert "is the fastest for batch 8" in line and "operator-split [1x1x4]" in line
    assert "x slower" in line and "-ols=1 (" in line and "-mos=1 (" in line
    assert "multicore=auto" in line


def test_split_keeps_one_program(mnet):
    exe = compile_aic(mnet, num_cores=4, multicore="split")
    assert exe.plan.copies == 1 and exe.plan.cores_used == 4
    auto = compile_aic(mnet, num_cores=4)
    assert auto.cost.inferences_per_s > exe.cost.inferences_per_s
    # copies trade latency for throughput: one copy runs a whole batch on its own core
    assert auto.cost.latency_s > exe.cost.latency_s


def test_batch_smaller_than_the_copies_keeps_latency(mnet):
    small = mobilenet(batch=1)
    exe = compile_aic(small, num_cores=4)
    assert exe.plan.copies == 1
    forced = compile_aic(small, num_cores=4, multicore="activations")
    assert forced.plan.copies > 1


def test_copies_compute_what_the_interpreter_does():
    model = mobilenet(batch=4, image=32, width=0.25)
    exe = compile_aic(model, num_cores=4, multicore="activations")
    assert exe.plan.copies > 1
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float16)
    got, ref = exe.run({"image": x})["logits"], Interpreter(model).run({"image": x})["logits"]
    np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), rtol=2e-3,
                               atol=2e-3)
