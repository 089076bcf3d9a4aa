"""Quantization across specializations rests on one fact: every specialization names its tensors
as the original graph does, so one profile (dumped over all specializations) gives the same
encodings to the same tensors in each of them."""

from __future__ import annotations

import numpy as np
import pytest

from aicc.analyses import AnalysisCache
from aicc.passes.quantization.analyses import CALIBRATION_PROFILE
from aicc import ir
from aicc.backends.interpreter import Interpreter
from aicc.instruments import random_feeds
from aicc.pipeline import Pipeline, run_pipeline
from aicc.program import Program
from spec_helpers import SEED_CONFIG, SEED_NAMES, SEED_SHAPES, load_example, write_json


@pytest.fixture(scope="module")
def cnn():
    return load_example("dynamic_cnn").build()


def _specialized(model, config, registries, extra=("fold-constants", "fold-batchnorm", "cleanup"),
                 analyses=None):
    program = Program.from_model(ir.load_model(model.SerializeToString()))
    pipeline = Pipeline.build([("specialize", {"config": str(config)}), *extra],
                              registries.passes)
    return run_pipeline(pipeline, program, registries=registries, analyses=analyses)


def _observed(program, name):
    seen: dict[str, tuple] = {}
    Interpreter(program.to_model(name)).run(
        random_feeds(program, name, seed=0),
        observe=lambda tensor, value: seen.setdefault(tensor, value.shape))
    return seen


def test_every_specialization_observes_the_same_tensor_names(cnn, tmp_path, registries):
    program = _specialized(cnn, write_json(tmp_path / "s.json", SEED_CONFIG), registries)
    observed = {name: _observed(program, name) for name in program.graphs}
    names = [sorted(o) for o in observed.values()]
    assert len(names[0]) >= 8
    assert all(n == names[0] for n in names)
    # the same names, with each specialization's own shapes
    assert observed[SEED_NAMES[1]]["image"] == SEED_SHAPES[1]
    assert observed[SEED_NAMES[2]]["logits"] == (2, 10)


def test_llm_prefill_and_decode_share_tensor_names(tmp_path, registries):
    llm = load_example("tiny_llm")
    program = _specialized(llm.build(), write_json(tmp_path / "s.json", llm.SPECIALIZATIONS),
                           registries)
    prefill, decode = (set(_observed(program, n)) for n in ("prefill", "decode"))
    assert prefill == decode and "past_key.1_RetainedState" in prefill


def test_one_profile_over_all_specializations(cnn, tmp_path, registries):
    """With the calibrate pass: a JSON input file with a sample per specialization gives one
    profile whose tensors exist, by name, in every specialization."""
    if "calibrate" not in registries.passes:
        pytest.skip("the calibrate pass has not landed yet")
    runs = []
    for i, shape in enumerate(SEED_SHAPES):
        np.random.default_rng(i).standard_normal(shape).astype(np.float32).tofile(
            tmp_path / f"x{i}.raw")
        runs.append([{"path": f"x{i}.raw", "io-direction": "in", "map-to": "image",
                      "data-type": "float", "dims": list(shape)}])
    inputs = write_json(tmp_path / "inputs.json", {"IO-files": runs})
    scratch = AnalysisCache()
    program = _specialized(cnn, write_json(tmp_path / "s.json", SEED_CONFIG), registries,
                           extra=("fold-constants", "fold-batchnorm",
                                  ("calibrate", {"json_input_file": str(inputs),
                                                 "progress": False})),
                           analyses=scratch)
    profile = scratch.peek(CALIBRATION_PROFILE)
    assert "image" in profile and "logits" in profile
    for graph in program.graphs.values():
        assert set(profile.tensors) <= set(graph.tensors())
