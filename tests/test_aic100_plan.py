"""aic100 partitioning, memory plan, cost model, profiling and the plan saved in a container."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicc
from aic100_models import bind, compile_aic, conv_chain, matmul_chain, to_fp16
from aicc.backends.aic100 import Aic100Backend
from aicc.backends.aic100.multicore import partition_reason
from aicc.backends.aic100.workloads import resnet50
from aicc.backends.interpreter.engine import Interpreter
from aicc.compiler import CompileRequest, compile_model
from aicc.errors import BackendError, ContainerError


@pytest.fixture(scope="module")
def digits_fp16(example_model_path, registries):
    return to_fp16(onnx.load(example_model_path), registries)


@pytest.fixture(scope="module")
def mm():
    return matmul_chain()


@pytest.fixture(scope="module")
def convs():
    return conv_chain(size=256)


def _axes(exe, op):
    return {sp.axis for sp in exe.plan.steps if sp.step.op == op}


# --- partitioning ---------------------------------------------------------------------------

def test_data_parallel_when_the_batch_allows(digits_fp16, registries):
    # a tiny model: per-step costs dominate, so copies running whole inferences win
    exe = compile_aic(bind(digits_fp16, 4, registries), num_cores=4)
    assert exe.plan.mode == "data-parallel activations (4 copies)" and exe.plan.copies == 4
    assert exe.plan.cores_used == 4 and exe.plan.cores_per_copy == 1
    # one program over the cores: the batch splits over data-parallel groups
    exe = compile_aic(bind(digits_fp16, 4, registries), num_cores=4, multicore="split")
    assert exe.plan.mode == "data-parallel" and exe.plan.groups == 4 and exe.plan.copies == 1
    # batch 1: no copies (they would not shorten the latency), operator split
    exe = compile_aic(bind(digits_fp16, 1, registries), num_cores=4)
    assert exe.plan.groups == 1 and exe.plan.mode == "operator-split"
    assert "batch 1" in partition_reason(exe.plan)


def test_no_data_parallelism_across_a_batch_reduction():
    w = numpy_helper.from_array(np.ones((16, 16), np.float16), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("Softmax", ["m"], ["y"], axis=0, name="softmax")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT16, [4, 16])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT16, [4, 16])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    exe = compile_aic(model, num_cores=4)
    assert not exe.plan.low.batch_separable and exe.plan.groups == 1
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float16)
    ref = Interpreter(model).run({"x": x})["y"]
    np.testing.assert_allclose(exe.run({"x": x})["y"], ref, rtol=1e-3)


def test_operator_split_picks_rows_or_channels(mm, convs):
    # big activations, small weights: split output rows; big weights: split output channels
    assert _axes(compile_aic(convs, num_cores=4, multicore="split"), "Conv") == {"rows"}
    assert _axes(compile_aic(mm, num_cores=4, multicore="split"), "MatMul") == {"channels"}


def test_more_cores_more_throughput_until_the_work_runs_out(convs, digits_fp16, registries):
    ips = [compile_aic(convs, num_cores=n).cost.inferences_per_s for n in (1, 2, 4, 8, 14)]
    assert all(a < b for a, b in zip(ips, ips[1:])), ips
    small = bind(digits_fp16, 1, registries)
    few, many = (compile_aic(small, num_cores=n).cost.inferences_per_s for n in (4, 14))
    assert many < few * 1.2  # an 8x8 image has little to split


def test_ols_cuts_finer_pieces_and_specializations_override_it(convs):
    base = compile_aic(convs, num_cores=4)
    finer = compile_aic(convs, num_cores=4, ols=4)
    conv = [sp for sp in finer.plan.steps if sp.step.op == "Conv"][0]
    assert conv.pieces == 16 and [sp.pieces for sp in base.plan.steps][0] == 4
    assert finer.cost.latency_s != base.cost.latency_s
    assert sum(sum(s.tiles) for s in finer.cost.steps) > sum(sum(s.tiles) for s in
                                                             base.cost.steps)
    per_spec = compile_aic(convs, spec_options={"ols": 4}, num_cores=4, ols=1)
    assert per_spec.plan_json() == finer.plan_json()


# --- memory plan ----------------------------------------------------------------------------

def _check_memory(exe):
    plan = exe.plan
    budget = plan.memory["vtcm_budget_bytes"]
    on_chip = [a for a in plan.allocations if a.placement == "vtcm"]
    for a in plan.allocations:
        assert a.placement in ("vtcm", "ddr", "host") and 0 <= a.first <= a.last
        assert (a.placement == "host") == (a.kind == "io")
    for a in on_chip:
        assert a.offset is not None and a.offset + a.bytes_per_core <= budget
    for i, a in enumerate(on_chip):
        for b in on_chip[i + 1:]:
            if a.last < b.first or b.last < a.first or not a.bytes_per_core or \
                    not b.bytes_per_core:
                continue
            assert a.offset + a.bytes_per_core <= b.offset or \
                b.offset + b.bytes_per_core <= a.offset, (a, b)
    assert plan.memory["vtcm_peak_bytes"] <= budget


@pytest.mark.parametrize("opts", [{}, {"num_cores": 4}, {"mos": 2}, {"depth_first": True},
                                  {"vtcm_working_set_limit_ratio": 0.5}])
def test_memory_plan_places_every_tensor_without_overlap(mm, convs, opts):
    for model in (mm, convs):
        _check_memory(compile_aic(model, **opts))


def test_lifetimes_follow_the_schedule(convs):
    plan = compile_aic(convs).plan
    life = {a.name: (a.first, a.last) for a in plan.allocations}
    assert life["r0"] == (0, 1)  # written by step 0 (conv0 + relu0), read by step 1
    assert life["w3"] == (0, len(plan.steps) - 1)  # weights stay for the program


def test_mos_trades_on_chip_memory_for_ddr_traffic(mm):
    plans = [compile_aic(mm, mos=m) for m in (1, 2, 4)]
    resident = [p.plan.memory["vtcm_resident_peak_bytes"] for p in plans]
    ddr = [p.cost.ddr_bytes for p in plans]
    assert resident[0] > resident[1] > resident[2]
    assert ddr[0] < ddr[1] < ddr[2]
    assert plans[0].cost.inferences_per_s > plans[2].cost.inferences_per_s


def test_vtcm_ratio_limits_what_stays_on_chip(mm):
    full, half = compile_aic(mm), compile_aic(mm, vtcm_working_set_limit_ratio=0.5)
    assert half.plan.memory["vtcm_budget_bytes"] == 4 << 20
    assert half.plan.memory["vtcm_peak_bytes"] <= 4 << 20 < full.plan.memory["vtcm_peak_bytes"]
    assert half.cost.ddr_bytes > full.cost.ddr_bytes


def test_granularity_changes_tiles_and_what_fits(mm, convs):
    small, large = (compile_aic(mm, size_split_granularity=g) for g in (512, 2048))
    assert small.plan.memory["streamed_weight_bytes"] < large.plan.memory["streamed_weight_bytes"]
    assert small.cost.latency_s != large.cost.latency_s
    compile_aic(convs, vtcm_working_set_limit_ratio=0.3, size_split_granularity=512)
    with pytest.raises(BackendError, match=r"step 'conv0' \(Conv\) cannot fit: its smallest "
                                           r"working set is 6216 KiB \(largest: tensor 'x', "
                                           r"tile 2048 KiB\) but the VTCM budget is 2458 KiB; "
                                           r"short by 3758 KiB"):
        compile_aic(convs, vtcm_working_set_limit_ratio=0.3, size_split_granularity=2048)


def test_depth_first_keeps_intermediates_on_chip(convs):
    plain, depth = compile_aic(convs), compile_aic(convs, depth_first=True)
    assert plain.plan.memory["ddr_activation_buffers"] == 3
    assert depth.plan.memory["ddr_activation_buffers"] == 0
    assert depth.plan.memory["depth_first_bands"] == 3
    assert depth.cost.ddr_bytes < plain.cost.ddr_bytes / 3
    assert depth.cost.inferences_per_s > plain.cost.inferences_per_s


def test_multicast_reads_shared_tensors_once(mm):
    # channel-split MatMuls: every core reads the whole input from DDR, or one read multicast
    plain = compile_aic(mm, num_cores=4, vtcm_working_set_limit_ratio=0.5)
    multi = compile_aic(mm, num_cores=4, vtcm_working_set_limit_ratio=0.5,
                        multicast_weights=True)
    assert multi.cost.ddr_bytes < plain.cost.ddr_bytes
    assert multi.cost.inferences_per_s > plain.cost.inferences_per_s


def test_an_op_whose_smallest_tile_exceeds_vtcm_cannot_fit():
    k = 1 << 22  # one row of x and one column of w are 8 MiB each in fp16
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="wide")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT16, [1, k])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT16, [1, 1])],
        [numpy_helper.from_array(np.ones((k, 1), np.float16), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(BackendError, match=r"step 'wide' \(MatMul\) cannot fit: .*tensor '[xw]'"
                                           r", tile 8192 KiB\).*short by"):
        compile_aic(model)


# --- cost model -----------------------------------------------------------------------------

def test_ddr_bandwidth_is_shared_by_activations(mm):
    one = compile_aic(mm, mos=4)
    eight = compile_aic(mm, mos=4, activations=8)
    assert "DDR" in eight.cost.bound
    limit = 136.5e9 / eight.cost.ddr_bytes
    assert 0.8 * limit < eight.cost.inferences_per_s <= limit * 1.000001
    assert one.cost.inferences_per_s < eight.cost.inferences_per_s < \
        8 * one.cost.inferences_per_s


def test_resnet50_int8_cost_scales_with_cores():
    model = resnet50(batch=2, precision="int8", int8_input=True)
    ips = {n: compile_aic(model, num_cores=n, sku="pro", multicast_weights=True)
           .cost.inferences_per_s * 2 for n in (1, 4, 16)}
    assert ips[1] < ips[4] < ips[16]
    assert 1_000 < ips[1] and ips[16] < 48_000  # below the 16-core int8 peak


def test_stats_batchsize_scales_the_reported_samples(digits_fp16, registries):
    model = bind(digits_fp16, 2, registries)
    exe = compile_aic(model, stats_batchsize=5)
    sim = exe.stats()["simulated"]
    assert sim["stats_batchsize"] == 5
    assert sim["samples_per_s"] == pytest.approx(sim["inferences_per_s"] * 5, rel=1e-6)
    assert "at stats batch size 5" in "\n".join(exe.report())
    assert compile_aic(model).stats()["simulated"]["stats_batchsize"] == 2


# --- profiling ------------------------------------------------------------------------------

def test_stats_profile_has_a_row_per_step(digits_fp16, registries):
    exe = compile_aic(bind(digits_fp16, 2, registries), profiling="stats")
    lines = exe.report()
    start = next(i for i, line in enumerate(lines) if "per-op statistics" in line)
    table = lines[start + 2:]
    assert len(table) == len(exe.plan.steps)
    assert any(" conv0 " in row and "Conv+Clip" in row for row in table)


def test_trace_profile_is_a_chrome_trace_with_a_track_per_core(digits_fp16, registries):
    model = bind(digits_fp16, 4, registries)
    exe = compile_aic(model, profiling="trace", num_cores=4, activations=2, multicore="split")
    feeds = {"image": np.zeros((4, 1, 8, 8), np.float32)}
    for _ in range(3):
        exe.run(feeds)
    trace = json.loads(json.dumps(exe.stats()["files"]["aic100-trace.json"]))
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert events and all({"name", "ph", "ts", "dur", "pid", "tid"} <= set(e) for e in events)
    assert {e["tid"] for e in events} == {0, 1, 2, 3}
    assert {e["pid"] for e in events} == {0, 1}  # two activations
    assert {e["args"]["inference"] for e in events} == {0, 1, 2}
    names = [e for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"]
    assert len(names) == 8


def test_latency_profile_reports_percentiles(mm):
    exe = compile_aic(mm, profiling="latency")
    x = np.zeros((64, 1024), np.float16)
    for _ in range(4):
        exe.run({"x": x})
    text = "\n".join(exe.report())
    assert "latency percentiles over 4 inference(s), simulated: p50" in text
    assert "simulator wall time: p50" in text


# --- ops and the container -----------------------------------------------------------------

def test_unsupported_op_is_named_before_anything_runs():
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT16, [1, 8])], [helper.make_tensor_value_info(
            "v", TensorProto.FLOAT16, [1, 2])],
        [numpy_helper.from_array(np.array([2], np.int64), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert Aic100Backend().unsupported_nodes(model) == ["node 'top' (TopK)"]
    with pytest.raises(BackendError, match=r"1 node\(s\) the AIC100 cannot run: node 'top' "
                                           r"\(TopK\)"):
        compile_aic(model)


def test_3d_convolution_is_refused_at_compile():
    w = numpy_helper.from_array(np.ones((2, 2, 3, 3, 3), np.float16), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c3d")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16,
                                                             [1, 2, 4, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)],
                              [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(BackendError, match=r"node 'c3d' \(Conv, 3-D\).*1-D and 2-D"):
        compile_aic(model)


def test_every_supported_op_has_an_interpreter_kernel():
    from aicc.backends.interpreter.kernels import supported_op_types
    assert Aic100Backend.op_types <= supported_op_types()


def _container(tmp_path, model, **options):
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    out, _, exes = compile_model(CompileRequest(model=str(path), backend="aic100",
                                                backend_options=options,
                                                output=tmp_path / "qpc"))
    return out, exes["default"]


def test_plan_is_saved_and_verified_on_load(tmp_path, digits_fp16, registries):
    model = bind(digits_fp16, 2, registries)
    qpc, exe = _container(tmp_path, model, num_cores=2, ols=2)
    saved = json.loads((qpc / "default" / "plan.json").read_text())
    assert saved["format"] == "aicc-aic100-plan" and saved["options"]["ols"] == 2
    assert saved["partition"]["cores_used"] == 2 and saved == exe.plan_json()
    session = aicc.load(qpc)
    feeds = {"image": np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)}
    np.testing.assert_array_equal(session.run(feeds)["logits"], exe.run(feeds)["logits"])
    # a plan.json that does not belong to the graph (checksum updated so only the plan differs)
    saved["options"]["ols"] = 3
    text = json.dumps(saved)
    (qpc / "default" / "plan.json").write_text(text)
    manifest = json.loads((qpc / "manifest.json").read_text())
    manifest["files"]["default/plan.json"] = hashlib.sha256(text.encode()).hexdigest()
    (qpc / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ContainerError, match="plan.json does not match the plan"):
        aicc.load(qpc).run(feeds)


def test_a_cpu_container_runs_on_the_device(tmp_path, digits_fp16, registries):
    model = bind(digits_fp16, 2, registries)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    out, _, _ = compile_model(CompileRequest(model=str(path), output=tmp_path / "cpu"))
    feeds = {"image": np.zeros((2, 1, 8, 8), np.float32)}
    device = aicc.load(out, backend="aic100")
    np.testing.assert_allclose(device.run(feeds)["logits"], aicc.load(out).run(feeds)["logits"],
                               rtol=1e-2, atol=1e-2)


def test_same_inputs_same_container_bytes(tmp_path, digits_fp16, registries):
    model = bind(digits_fp16, 4, registries)
    texts = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        qpc, _ = _container(tmp_path / str(i), model, num_cores=4, multicast_weights=True)
        texts.append((qpc / "default" / "plan.json").read_bytes())
    assert texts[0] == texts[1]
