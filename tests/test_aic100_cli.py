"""aic100 through the command line: device flags, the report after a run, activations, profiling
files, per-specialization -ols, and refusals (exit 2, one line, no output)."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aic100_models import conv_chain
from aicc.cli import main
from spec_helpers import load_example, write_json


def _compile(tmp_path, model_path, *flags, out="qpc"):
    qpc = tmp_path / out
    code = main(["compile", f"-m={model_path}", f"-aic-binary-dir={qpc}", *flags])
    return code, qpc


def _plan(qpc, spec="default"):
    return json.loads((qpc / spec / "plan.json").read_text())


FP16 = ("-aic-hw", "-convert-to-fp16", "-batchsize=4")


def test_compile_only_writes_the_plan(tmp_path, example_model_path, capsys):
    code, qpc = _compile(tmp_path, example_model_path, *FP16, "-aic-num-cores=4",
                         "-compile-only")
    assert code == 0
    out = capsys.readouterr().out
    # nothing runs, but the simulated figures (a cost model, no numerics) are reported
    assert "for backend 'aic100'" in out and "ran graph" not in out
    assert "Inf/Sec" in out and "held-out check" in out and "simulator wall time" not in out
    manifest = json.loads((qpc / "manifest.json").read_text())
    assert manifest["backend"] == "aic100" and "default/plan.json" in manifest["files"]
    assert manifest["backend_options"]["num_cores"] == 4
    assert _plan(qpc)["partition"]["cores_used"] == 4


def test_every_device_flag_reaches_the_plan(tmp_path, example_model_path, capsys):
    code, qpc = _compile(tmp_path, example_model_path, *FP16, "-aic-hw-version=2.0",
                         "-aic-num-cores=2", "-ols=2", "-mos=2", "-multicast-weights",
                         "-stats-batchsize=8", "-aic-profiling-type=latency",
                         "-size-split-granularity=512", "-vtcm-working-set-limit-ratio=0.5",
                         "-aic-enable-depth-first", "-compile-only")
    assert code == 0, capsys.readouterr().err
    plan = _plan(qpc)
    assert plan["options"] == {"num_cores": 2, "ols": 2, "mos": 2, "multicast_weights": True,
                               "size_split_granularity_kib": 512,
                               "vtcm_working_set_limit_ratio": 0.5, "depth_first": True,
                               "multicore": "auto"}
    assert plan["profiling"] == "latency" and plan["stats_batchsize"] == 8
    assert plan["hardware"]["version"] == "2.0" and plan["memory"]["vtcm_budget_bytes"] == 4 << 20


def test_compile_runs_once_and_prints_the_device_figures(tmp_path, example_model_path, capsys):
    code, _ = _compile(tmp_path, example_model_path, *FP16, "-aic-num-cores=2",
                       "-stats-batchsize=8", "-aic-profiling-type=stats")
    assert code == 0
    out = capsys.readouterr().out
    assert "ran graph 'default' once on random data" in out
    assert re.search(r"Inf/Sec [\d.]+ \(.*?\) \(simulated; [\d.]+ samples/s \(.*?\) at stats batch size 8\)", out)
    for text in ("latency per inference", "core utilization", "DDR traffic",
                 "per-op statistics", "conv0"):
        assert text in out


def test_run_reports_activations_and_writes_the_trace(tmp_path, example_model_path, capsys):
    code, qpc = _compile(tmp_path, example_model_path, *FP16, "-aic-num-cores=2",
                         "-aic-profiling-type=trace", "-compile-only",
                         "--backend-option", "multicore=split")
    assert code == 0
    capsys.readouterr()
    prof = tmp_path / "prof"
    assert main(["run", "-t", str(qpc), "-n", "3", "-a", "3",
                 "--aic-profiling-out-dir", str(prof)]) == 0
    out = capsys.readouterr().out
    assert "2 core(s) x 3 activation(s)" in out and "Inf/Sec" in out
    assert f"wrote {prof / 'aic100-trace.json'}" in out
    trace = json.loads((prof / "aic100-trace.json").read_text())
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["pid"] for e in events} == {0, 1, 2} and {e["tid"] for e in events} == {0, 1}
    # next to the outputs by default; said when there is nowhere to write it
    outdir = tmp_path / "outs"
    assert main(["run", "-t", str(qpc), "--write-output-dir", str(outdir)]) == 0
    assert (outdir / "aic100-trace.json").is_file() and (outdir / "logits-inf-0.raw").is_file()
    capsys.readouterr()
    assert main(["run", "-t", str(qpc)]) == 0
    assert "profiling files not written" in capsys.readouterr().out


def test_specializations_take_their_own_ols(tmp_path, capsys):
    dyn = load_example("dynamic_cnn")
    model = tmp_path / "cnn.onnx"
    onnx.save(dyn.build(), model)
    config = write_json(tmp_path / "specs.json", {"specializations": [
        {"batch": "1", "height": "32", "width": "32", "compile_opts": "-ols=1"},
        {"batch": "2", "height": "32", "width": "32", "compile_opts": "-ols=4"}]})
    code, qpc = _compile(tmp_path, model, "-aic-hw", "-convert-to-fp16", "-aic-num-cores=2",
                         f"-network-specialization-config={config}", "-compile-only")
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((qpc / "manifest.json").read_text())
    ols = {s["name"]: _plan(qpc, s["folder"])["options"]["ols"]
           for s in manifest["specializations"]}
    assert sorted(ols.values()) == [1, 4]
    assert main(["run", "-t", str(qpc)]) == 0


def _unsupported_model(path):
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8])], [helper.make_tensor_value_info(
            "v", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(np.array([2], np.int64), "k")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("flags,match", [
    (("-aic-hw", "-batchsize=2"), r"compute in float32.*-convert-to-fp16"),
    (("-aic-hw", "-convert-to-fp16"), r"symbolic dimension 'batch'.*-batchsize=N"),
    ((*FP16, "-aic-num-cores=15"), r"15 cores requested but AIC100 standard.*has 14"),
    ((*FP16, "--backend-option", "sku=pro", "-aic-num-cores=17"), r"17 cores.*pro.*has 16"),
    ((*FP16, "-aic-hw-version=1.0"), r"unknown hardware version '1.0' \(known versions: 2.0\)"),
    (("-aic-num-cores=2",), r"-aic-num-cores configures the AIC100 device.*add -aic-hw"),
    (("-aic-enable-depth-first",), r"add -aic-hw"),
    ((*FP16, "-aic-profiling-type=flame"), r"-aic-profiling-type: unknown value 'flame' \(valid: stats, trace, latency\)"),
    ((*FP16, "-size-split-granularity=4096"), r"-size-split-granularity: 4096 is above the maximum 2048"),
    ((*FP16, "-vtcm-working-set-limit-ratio=1.5"), r"1.5 is not in \(0, 1\]"),
    ((*FP16, "-mos=0"), r"-mos: 0 is below the minimum 1"),
    ((*FP16, "--backend", "cpu"), r"-aic-hw sets 'target' to 'aic100' but --backend says 'cpu'"),
    ((*FP16, "-aic-num-cores=2", "--backend-option", "num_cores=2"), r"-aic-num-cores and --backend-option both set the backend option 'num_cores'"),
])
def test_refusals(tmp_path, example_model_path, capsys, flags, match):
    code, qpc = _compile(tmp_path, example_model_path, *flags)
    assert code == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not qpc.exists() and not any(p.name.startswith(".qpc") for p in tmp_path.iterdir())


def test_refusals_of_the_graph(tmp_path, capsys):
    _unsupported_model(tmp_path / "topk.onnx")
    code, qpc = _compile(tmp_path, tmp_path / "topk.onnx", "-aic-hw")
    assert code == 2 and not qpc.exists()
    assert "node 'top' (TopK)" in capsys.readouterr().err
    onnx.save(conv_chain(size=256), tmp_path / "convs.onnx")
    code, qpc = _compile(tmp_path, tmp_path / "convs.onnx", "-aic-hw",
                         "-vtcm-working-set-limit-ratio=0.3", "-size-split-granularity=2048")
    err = capsys.readouterr().err
    assert code == 2 and not qpc.exists()
    assert "step 'conv0' (Conv) cannot fit" in err and "tensor 'x'" in err and "short by" in err


def test_run_refuses_activations_it_cannot_give(tmp_path, example_model_path, capsys):
    code, qpc = _compile(tmp_path, example_model_path, *FP16, "-aic-num-cores=4",
                         "-compile-only")
    assert code == 0
    assert main(["run", "-t", str(qpc), "-a", "4"]) == 2
    assert "4 activations x 4 cores = 16 cores" in capsys.readouterr().err
    code, cpu = _compile(tmp_path, example_model_path, "-batchsize=4", "-compile-only",
                         out="cpu")
    assert code == 0
    capsys.readouterr()
    assert main(["run", "-t", str(cpu), "-a", "2"]) == 2
    assert "backend 'cpu' runs one activation" in capsys.readouterr().err
