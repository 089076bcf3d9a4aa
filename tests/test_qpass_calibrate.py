"""The ``calibrate`` pass: the graph is left as it was, statistics are exact and stream, samples
come from input lists, JSON input files or Python iterables, and bad data is refused first."""

from __future__ import annotations

import io
import json
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aicc.analyses import AnalysisCache
from aicc.passes.quantization.analyses import CALIBRATION_PROFILE, CALIBRATION_SAMPLES
from aicc import ir
from aicc.backends.interpreter.engine import Interpreter
from aicc.errors import ConfigError, DataError
from aicc.passes.quantization.runner import _ProgressBar
from aicc.passes.quantization.calibrate import (calibrate_program, graph_hash,
                                   program_hash)
from aicc.pipeline import Pipeline, run_pipeline
from aicc.program import Program
from aicc.quant import load_profile_yaml, merge_profiles
from aicc.testing import check_pass, run_pass

from quant_builders import samples, small_cnn, write_input_list
from tolerance import assert_reordered_close

#: the largest float32 sum in small_cnn: a 3x3 convolution over 8 channels
SMALL_CNN_TERMS = 8 * 3 * 3


def _program(model: onnx.ModelProto) -> Program:
    return Program.from_model(ir.load_model(model.SerializeToString()))


def _observed(model: onnx.ModelProto, feeds_list) -> dict[str, np.ndarray]:
    """Every float tensor of every run, concatenated (the reference statistics)."""
    seen: dict[str, list[np.ndarray]] = {}
    engine = Interpreter(model)
    for feeds in feeds_list:
        engine.run(feeds, observe=lambda n, a: seen.setdefault(n, []).append(a.ravel().copy())
                   if a.dtype.kind == "f" and n not in {i.name for i in model.graph.initializer}
                   else None)
    return {n: np.concatenate(v) for n, v in seen.items()}


def test_graph_is_unchanged_and_outputs_equal(registries, tmp_path):
    model = small_cnn()
    lst = write_input_list(tmp_path, samples(model, 4))
    before = _program(model).to_model().SerializeToString(deterministic=True)
    after = check_pass(model, "calibrate", {"input_list": str(lst)}, registries=registries)
    assert after.to_model().SerializeToString(deterministic=True) == before


def test_profile_holds_exact_min_max_of_every_float_tensor(registries):
    model = small_cnn()
    feeds = samples(model, 12)
    # one sample per run, as the reference runs them: the same sums in the same order, so the
    # statistics are exact (stacked runs are compared up to summation order below)
    # (the interpreter engine: the reference the exact comparison is about)
    profile = calibrate_program(_program(model), feeds, progress=False, batch=1,
                                engine="interpreter")
    ref = _observed(model, feeds)
    assert set(profile.tensors) == set(ref)
    for name, values in ref.items():
        st = profile[name]
        assert (st.min, st.max) == (float(values.min()), float(values.max())), name
        assert st.count == values.size
    assert profile.graph_hash == program_hash(_program(model))


def test_stacked_runs_give_the_same_statistics(registries):
    model = small_cnn(batch="N")
    feeds = samples(model, 20)
    one = calibrate_program(_program(model), feeds, progress=False, batch=1)
    many = calibrate_program(_program(model), feeds, progress=False, batch=0)
    for name, st in one.tensors.items():
        # BLAS may sum a stacked batch in another order than one sample: equal up to that
        assert_reordered_close([many[name].min, many[name].max], [st.min, st.max],
                               terms=SMALL_CNN_TERMS, what=name)
        assert many[name].count == st.count
        np.testing.assert_allclose(np.cumsum(many[name].histogram.counts),
                                   np.cumsum(st.histogram.counts), atol=st.count * 0.02)


def test_samples_are_not_stacked_when_the_graph_mixes_them(registries):
    # ReduceSum over the batch axis: stacking two samples would change every tensor after it
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("ReduceSum", ["x", "ax"], ["s"], keepdims=1),
                               helper.make_node("Mul", ["x", "s"], ["y"])], "g", [x], [y],
                              [numpy_helper.from_array(np.array([0], np.int64), "ax")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = samples(model, 6)
    profile = calibrate_program(_program(model), feeds, progress=False)
    ref = _observed(model, feeds)
    for name, values in ref.items():
        assert (profile[name].min, profile[name].max) == (float(values.min()),
                                                          float(values.max()))


def test_memory_does_not_grow_with_the_number_of_samples():
    model = small_cnn()
    program = _program(model)

    def stream(n):
        rng = np.random.default_rng(0)
        for _ in range(n):
            yield {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}

    peaks = []
    for n in (300, 1200):      # both past the per-tensor buffer of 64k values
        tracemalloc.start()
        calibrate_program(program, stream(n), progress=False, batch=1)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < peaks[0] * 1.5, peaks


def test_graph_hash_covers_structure_and_weights_not_shapes():
    a, b = small_cnn(seed=0), small_cnn(seed=0, batch="N")
    assert graph_hash(_program(a).graph()) == graph_hash(_program(b).graph())
    assert graph_hash(_program(a).graph()) != graph_hash(_program(small_cnn(seed=1)).graph())
    renamed = _program(a)
    renamed.graph().nodes[0].name = "other"
    assert graph_hash(renamed.graph()) == graph_hash(_program(a).graph())
    changed = _program(a)
    changed.graph().nodes[1].op = "Sigmoid"
    assert graph_hash(changed.graph()) != graph_hash(_program(a).graph())


def test_dump_profile_and_merge_shards(registries, tmp_path):
    model = small_cnn()
    feeds = samples(model, 10)
    program = _program(model)
    # one sample per run: the shards compute exactly what the whole run does, so merging must
    # give its statistics bit for bit (stacking would let BLAS reorder sums by batch size)
    halves = [calibrate_program(program, feeds[:5], progress=False, batch=1),
              calibrate_program(program, feeds[5:], progress=False, batch=1)]
    whole = calibrate_program(program, feeds, progress=False, batch=1)
    merged = merge_profiles(halves)
    for name, st in whole.tensors.items():
        assert (merged[name].min, merged[name].max, merged[name].count) == \
            (st.min, st.max, st.count)
    lst = write_input_list(tmp_path, feeds)
    out = tmp_path / "prof.yaml"
    prog = run_pass(model, "calibrate", {"input_list": str(lst), "dump_profile": str(out)},
                    registries=registries)
    loaded = load_profile_yaml(out.read_text(), where=str(out),
                               expected_graph_hash=program_hash(prog))
    assert set(loaded.tensors) == set(whole.tensors)
    assert not list(tmp_path.glob(".prof.yaml*"))      # written through a renamed temp file


def test_python_samples_provided_to_the_pipeline(registries):
    model = small_cnn()
    pipe = Pipeline.build([("calibrate", {"max_samples": 3})], registries.passes)
    scratch = AnalysisCache({CALIBRATION_SAMPLES: iter(samples(model, 10))})
    run_pipeline(pipe, _program(model), registries=registries, analyses=scratch)
    assert scratch.peek(CALIBRATION_PROFILE)["x"].count == 3 * 3 * 8 * 8


def test_input_list_forms_npy_and_named(registries, tmp_path):
    model = small_cnn()
    feeds = samples(model, 3)
    for sub, kw in (("raw", {}), ("npy", {"npy": True}), ("named", {"named": True})):
        lst = write_input_list(tmp_path / sub, feeds, **kw)
        text = lst.read_text()
        lst.write_text("# out_layer\n%y\n\n" + text.replace("\n", "\r\n"))
        prog = Program.from_model(ir.load_model(model.SerializeToString()))
        pipe = Pipeline.build([("calibrate", {"input_list": str(lst)})], registries.passes)
        scratch = AnalysisCache()
        run_pipeline(pipe, prog, registries=registries, analyses=scratch)
        assert scratch.peek(CALIBRATION_PROFILE)["x"].count == 3 * 3 * 8 * 8, sub


def _calibrate_list(registries, model, lst):
    run_pass(model, "calibrate", {"input_list": str(lst)}, registries=registries)


def test_input_list_errors_come_before_any_run(registries, tmp_path, monkeypatch):
    model = small_cnn()
    feeds = samples(model, 3)
    lst = write_input_list(tmp_path, feeds)
    ran = []
    monkeypatch.setattr("aicc.passes.quantization.runner._GraphRunner.add", lambda self, f: ran.append(f))
    # a raw file of the wrong size on the last line
    (tmp_path / "x_2.raw").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match=r"list.txt: line 3: .*x_2.raw' has 100 bytes; input 'x' "
                                        r"\(float32, \[1, 3, 8, 8\]\) needs 768"):
        _calibrate_list(registries, model, lst)
    assert ran == []
    # a path that does not exist
    lst.write_text("x_0.raw\nmissing.raw\n")
    with pytest.raises(DataError, match="list.txt: line 2: data file 'missing.raw' not found"):
        _calibrate_list(registries, model, lst)
    # an empty list (comments and blank lines only)
    lst.write_text("# only comments\n\n")
    with pytest.raises(DataError, match="input list has no samples"):
        _calibrate_list(registries, model, lst)
    # an .npy of another dtype
    np.save(tmp_path / "wrong.npy", feeds[0]["x"].astype(np.float64))
    lst.write_text("wrong.npy\n")
    with pytest.raises(DataError, match="holds float64, input 'x' is float32"):
        _calibrate_list(registries, model, lst)
    assert ran == []


def test_symbolic_input_needs_a_shape_for_raw_files(registries, tmp_path):
    model = small_cnn(batch="N")
    lst = write_input_list(tmp_path, samples(model, 2))
    with pytest.raises(DataError, match="symbolic shape.*bind it with input_shapes or symbols"):
        _calibrate_list(registries, model, lst)
    prog = run_pass(model, "input-shape", {"shapes": ["x=1,3,8,8"]}, registries=registries)
    pipe = Pipeline.build([("calibrate", {"input_list": str(lst)})], registries.passes)
    run_pipeline(pipe, prog, registries=registries)


def test_sample_sources_are_exclusive_and_required(registries, tmp_path):
    model = small_cnn()
    with pytest.raises(ConfigError, match="no calibration samples"):
        run_pass(model, "calibrate", {}, registries=registries)
    lst = write_input_list(tmp_path, samples(model, 1))
    pipe = Pipeline.build([("calibrate", {"input_list": str(lst)})], registries.passes)
    with pytest.raises(ConfigError, match="several sample sources"):
        run_pipeline(pipe, _program(model), registries=registries,
                     analyses=AnalysisCache({CALIBRATION_SAMPLES: samples(model, 1)}))
    with pytest.raises(DataError, match="calibration sample 0 \\(x\\[2, 3\\]\\) fits no graph"):
        calibrate_program(_program(model), [{"x": np.zeros((2, 3), np.float32)}],
                          progress=False)


def test_nonfinite_data_is_counted_not_binned():
    model = small_cnn()
    feeds = samples(model, 2)
    feeds[0]["x"][0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    profile = calibrate_program(_program(model), feeds, progress=False)
    assert profile["x"].nonfinite == 3 and np.isfinite(profile["x"].max)


def test_progress_bar_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    pipe, tty = io.StringIO(), Tty()
    for stream in (pipe, tty):
        bar = _ProgressBar(3, stream=stream)
        for _ in range(3):
            bar.step()
        bar.done()
    assert pipe.getvalue() == ""
    assert "3/3" in tty.getvalue()


def test_several_specializations_give_one_profile(registries, tmp_path):
    # a fully convolutional model with symbolic height/width, two specializations
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "h", "w"])
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["c"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    config = tmp_path / "spec.json"
    config.write_text(json.dumps({"specializations": [{"h": "4", "w": "4"},
                                                      {"h": "8", "w": "8"}]}))
    runs = []
    for i, size in enumerate((4, 8, 8)):
        arr = rng.standard_normal((1, 3, size, size)).astype(np.float32)
        arr.tofile(tmp_path / f"in{i}.raw")
        runs.append([{"path": f"in{i}.raw", "io-direction": "in", "map-to": "x",
                      "data-type": "float32", "dims": [1, 3, size, size]}])
    jin = tmp_path / "inputs.json"
    jin.write_text(json.dumps({"IO-files": runs}))
    pipe = Pipeline.build([("specialize", {"config": str(config)}),
                           ("calibrate", {"json_input_file": str(jin)})], registries.passes)
    scratch = AnalysisCache()
    prog = run_pipeline(pipe, _program(model), registries=registries, analyses=scratch)
    assert len(prog.graphs) == 2
    assert scratch.peek(CALIBRATION_PROFILE)["x"].count == 3 * (16 + 64 + 64)
    # a specialization without a sample is refused
    jin.write_text(json.dumps({"IO-files": runs[:1]}))
    with pytest.raises(DataError, match="no inference has the shapes of specialization"):
        run_pipeline(pipe, _program(model), registries=registries)


def test_onnxruntime_engine_gives_the_same_statistics(registries):
    model = small_cnn(batch="N")
    feeds = samples(model, 6)
    ref = calibrate_program(_program(model), feeds, progress=False)
    got = calibrate_program(_program(model), feeds, progress=False, engine="cpu")
    assert set(got.tensors) == set(ref.tensors)
    for name, st in ref.tensors.items():
        # onnxruntime's kernels sum in their own order: equal up to that
        assert_reordered_close([got[name].min, got[name].max], [st.min, st.max],
                               terms=SMALL_CNN_TERMS, what=name)
        assert got[name].count == st.count
    with pytest.raises(ConfigError, match="unknown calibration engine 'gpu'"):
        calibrate_program(_program(model), feeds, progress=False, engine="gpu")
