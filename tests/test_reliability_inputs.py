"""Issue 18, inputs: every bad input is a clean exit 2; limits are known before allocation; no
code runs from the current directory; onnxruntime sends no telemetry and prints nothing of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicc
from aicc import _external_data, ir
from aicc.cli import main
from aicc.errors import ConfigError, ModelError
from builders import add_model
from quant_builders import samples, small_cnn, write_input_list


def _save(model, path):
    onnx.save(model, path)
    return path


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# -- 9. malformed models -----------------------------------------------------------------------

@pytest.mark.parametrize("offset", ["²", "٣", "-1", "1e3"])
def test_external_data_offset_that_is_not_ascii_digits_is_refused(tmp_path, capsys, offset):
    model = add_model((1, 3))
    t = model.graph.initializer[0]
    (tmp_path / "w.bin").write_bytes(t.raw_data)
    t.ClearField("raw_data")
    for k, v in (("location", "w.bin"), ("offset", offset), ("length", "12")):
        e = t.external_data.add()
        e.key, e.value = k, v
    t.data_location = TensorProto.EXTERNAL
    path = _save(model, tmp_path / "m.onnx")
    assert main(["compile", f"-m={path}", "-compile-only", f"-aic-binary-dir={tmp_path / 'q'}"]) \
        == 2
    assert "not a non-negative integer" in _err(capsys)


@pytest.mark.parametrize("data_type", [0, 77])
def test_unknown_tensor_data_type_is_refused(tmp_path, capsys, data_type):
    model = add_model((1, 3))
    model.graph.initializer[0].data_type = data_type
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert main(["compile", f"-m={path}", "-compile-only", f"-aic-binary-dir={tmp_path / 'q'}"]) \
        == 2
    assert f"unknown tensor data_type {data_type}" in _err(capsys)


def test_deeply_nested_specialization_config_is_refused(tmp_path, capsys):
    config = tmp_path / "spec.json"
    config.write_text("[" * 100_000 + "]" * 100_000)
    model = _save(add_model(), tmp_path / "m.onnx")
    assert main(["compile", f"-m={model}", f"-network-specialization-config={config}",
                 "-compile-only", f"-aic-binary-dir={tmp_path / 'q'}"]) == 2
    assert "nested too deeply" in _err(capsys)


def test_deeply_nested_plugin_file_is_refused(tmp_path, capsys):
    plugins = tmp_path / "p.toml"
    plugins.write_text("[plugins]\nmodules = " + "[" * 100_000 + "]" * 100_000 + "\n")
    model = _save(add_model(), tmp_path / "m.onnx")
    assert main(["compile", f"-m={model}", f"--plugins={plugins}"]) == 2
    assert "nested too deeply" in _err(capsys)


# -- 8. size bombs and limits ------------------------------------------------------------------

def _bomb(side: int) -> onnx.ModelProto:
    """y = x + ReduceSum(ConstantOfShape([side, side])): a tiny model, a huge intermediate."""
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="big",
                              value=numpy_helper.from_array(np.array([1.0], np.float32))),
             helper.make_node("ReduceSum", ["big"], ["s"], name="sum", keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "bomb", [helper.make_tensor_value_info("x", 1, [1])],
                              [helper.make_tensor_value_info("y", 1, [1])],
                              [numpy_helper.from_array(np.array([side, side], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_size_bomb_is_not_folded(tmp_path):
    model = _bomb(30000)
    assert len(model.SerializeToString()) < 256
    qpc = aicc.compile(model, output=tmp_path / "q.qpc", pipeline=["fold-constants", "cleanup"])
    kept = onnx.load(qpc / "default" / "model.onnx")
    assert "ConstantOfShape" in {n.op_type for n in kept.graph.node}  # 3.6 GB never allocated


def test_size_bomb_in_a_graph_with_control_flow_is_not_folded(tmp_path):
    model = _bomb(30000)
    branch = lambda v: helper.make_graph(  # noqa: E731
        [helper.make_node("Constant", [], [f"o{v}"], name=f"k{v}",
                          value=numpy_helper.from_array(np.array([v], np.float32)))],
        f"b{v}", [], [helper.make_tensor_value_info(f"o{v}", 1, [1])])
    g = model.graph
    g.node.extend([helper.make_node("Greater", ["x", "zero"], ["c"], name="gt"),
                   helper.make_node("Squeeze", ["c"], ["c0"], name="sq"),
                   helper.make_node("If", ["c0"], ["z"], name="if", then_branch=branch(1),
                                    else_branch=branch(2))])
    g.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), "zero"))
    g.output.append(helper.make_tensor_value_info("z", 1, [1]))
    qpc = aicc.compile(model, output=tmp_path / "q.qpc", pipeline=["fold-constants", "cleanup"])
    kept = onnx.load(qpc / "default" / "model.onnx")
    assert "ConstantOfShape" in {n.op_type for n in kept.graph.node}


@pytest.mark.parametrize("limit, folded", [(1 << 30, True), (1000, False)])
def test_intermediate_limit_decides_folding_and_results_agree(tmp_path, limit, folded):
    import onnxruntime as ort
    model = _bomb(100)  # a 40 kB intermediate
    qpc = aicc.compile(model, output=tmp_path / "q.qpc",
                       pipeline=[("fold-constants", {"max_intermediate_bytes": limit}), "cleanup"])
    ops = {n.op_type for n in onnx.load(qpc / "default" / "model.onnx").graph.node}
    assert ("ConstantOfShape" not in ops) == folded
    x = np.array([0.5], np.float32)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(aicc.load(qpc).run({"x": x})["y"], ref)  # exact: integers


@pytest.mark.parametrize("flag", ["-onnx-define-symbol=batch,1000000000000",
                                  "-batchsize=1000000000000", "-onnx-define-symbol=batch,²"])
def test_absurd_symbol_values_are_refused_before_work(tmp_path, capsys, flag):
    model = _save(add_model(), tmp_path / "m.onnx")
    assert main(["compile", f"-m={model}", flag, f"-aic-binary-dir={tmp_path / 'q'}"]) == 2
    assert "2147483647" in _err(capsys)
    assert not (tmp_path / "q").exists()


def test_absurd_symbol_values_are_refused_by_the_api(tmp_path):
    with pytest.raises(ConfigError, match="at most 2147483647"):
        aicc.compile(add_model(), output=tmp_path / "q", symbols={"batch": 10**12})


def test_random_inputs_larger_than_memory_are_refused_before_allocation(tmp_path, capsys):
    model = _save(add_model(), tmp_path / "m.onnx")
    code = main(["compile", f"-m={model}", "-batchsize=2147483647",
                 f"-aic-binary-dir={tmp_path / 'q'}"])
    assert code == 2 and "random inputs" in capsys.readouterr().err


# -- 8. models past 2 GiB (the thresholds lowered so the test writes kilobytes) ------------------

def test_model_past_the_protobuf_limit_compiles_and_runs(tmp_path, monkeypatch):
    import onnxruntime as ort
    from aicc.backends import cpu
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 256)).astype(np.float32)  # 64 KiB
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "big",
                              [helper.make_tensor_value_info("x", 1, [2, 64])],
                              [helper.make_tensor_value_info("y", 1, [2, 256])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "big.onnx"
    onnx.save(model, path, save_as_external_data=True, location="big.data", size_threshold=0)
    monkeypatch.setattr(ir, "_TWO_GIB", 32 * 1024)     # "2 GiB" is now 32 KiB
    monkeypatch.setattr(ir, "_SAVE_MARGIN", 0)
    monkeypatch.setattr(_external_data, "_READ_CHUNK", 4096)  # chunked external-data reads
    monkeypatch.setattr(cpu, "_EXTERNAL_MIN_BYTES", 1024)
    checked = []
    real_check = onnx.checker.check_model
    monkeypatch.setattr(onnx.checker, "check_model",
                        lambda m, *a, **k: (checked.append(m), real_check(m, *a, **k))[1])
    qpc = aicc.compile(path, output=tmp_path / "q.qpc")
    assert str(path) in checked  # checked by path, never serialized past the limit
    assert sorted(p.name for p in (qpc / "default").iterdir()) == ["model.onnx",
                                                                   "model.weights.bin"]
    x = rng.standard_normal((2, 64)).astype(np.float32)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(aicc.load(qpc).run({"x": x})["y"], ref, rtol=1e-5, atol=1e-5)


def test_pread_all_reads_in_chunks(tmp_path, monkeypatch):
    data = os.urandom(10_000)
    (tmp_path / "f").write_bytes(data)
    monkeypatch.setattr(_external_data, "_READ_CHUNK", 1000)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert _external_data._pread_all(fd, 9_000, 500) == data[500:9500]
    finally:
        os.close(fd)


def test_large_model_given_as_bytes_is_refused(monkeypatch):
    monkeypatch.setattr(ir, "_TWO_GIB", 16)
    with pytest.raises(ModelError, match="over 2 GiB must be loaded from its file"):
        ir.load_model(add_model((1, 3)).SerializeToString())


# -- 9. plugins and backends -------------------------------------------------------------------

def _plugin(tmp_path, body, module="p18"):
    folder = tmp_path / "plugin"
    folder.mkdir(exist_ok=True)
    (folder / f"{module}.py").write_text(textwrap.dedent(body))
    toml = folder / f"{module}.toml"
    toml.write_text(f'[plugins]\npaths = ["."]\nmodules = ["{module}"]\n')
    return toml


def test_plugin_calling_sys_exit_at_import_is_an_error(tmp_path, capsys):
    toml = _plugin(tmp_path, "import sys\nsys.exit(0)\n", module="quitter")
    model = _save(add_model(), tmp_path / "m.onnx")
    assert main(["compile", f"-m={model}", f"--plugins={toml}",
                 f"-aic-binary-dir={tmp_path / 'q'}"]) == 2
    err = _err(capsys)
    assert "plugin 'quitter' failed to import" in err and "sys.exit(0)" in err


BAD_BACKEND = '''
import numpy as np
import aicc
from aicc.backends.cpu import CpuBackend
from aicc.hookspecs import hookimpl

class Exe(aicc.Executable):
    def run(self, feeds):
        return {MODE}
    def stats(self):
        return {{}}

class Bad(CpuBackend):
    name = "bad"
    def compile(self, model, *, program_meta, spec_options):
        return Exe()

@hookimpl
def aicc_register_backends(registry):
    registry.add(Bad)
'''


@pytest.mark.parametrize("mode, message", [
    ('{"y": np.zeros((1, 3), np.float32), "z": np.zeros(1)}', "returned outputs"),
    ('{"y": np.zeros((5, 3), np.float32)}', "of shape [5, 3]"),
    ('{"y": np.zeros((1, 3), np.float64)}', "as float64"),
    ("None", "returned outputs NoneType")])
def test_compile_checks_what_the_backend_returns(tmp_path, capsys, mode, message):
    toml = _plugin(tmp_path, BAD_BACKEND.format(MODE=mode), module=f"bad{abs(hash(mode))}")
    model = _save(add_model((1, 3)), tmp_path / "m.onnx")
    assert main(["compile", f"-m={model}", "--backend=bad", f"--plugins={toml}"]) == 2
    err = capsys.readouterr().err
    assert "backend 'bad'" in err and message in err


GOOD_BACKEND = '''
from aicc.backends.cpu import CpuBackend
from aicc.hookspecs import hookimpl

class Mine(CpuBackend):
    name = "mine"

@hookimpl
def aicc_register_backends(registry):
    registry.add(Mine)
'''


def test_run_loads_the_plugins_of_a_plugin_backend(tmp_path, capsys):
    toml = _plugin(tmp_path, GOOD_BACKEND, module="minebackend")
    model = _save(add_model((1, 3)), tmp_path / "m.onnx")
    qpc = tmp_path / "q"
    assert main(["compile", f"-m={model}", "--backend=mine", f"--plugins={toml}",
                 f"-aic-binary-dir={qpc}", "-compile-only"]) == 0
    assert main(["run", "-t", str(qpc)]) == 2  # without the plugin: named, not a traceback
    assert "mine" in capsys.readouterr().err
    assert main(["run", "-t", str(qpc), f"--plugins={toml}"]) == 0


# -- 6. code from the current directory --------------------------------------------------------

def test_entry_point_in_the_current_directory_does_not_run(tmp_path):
    dist = tmp_path / "evil-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[aicc]\nevil = evil_plugin\n")
    marker = tmp_path / "ran"
    (tmp_path / "evil_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    env = {k: v for k, v in os.environ.items() if k != "AICC_DISABLE_PLUGIN_AUTOLOAD"}
    code = "import aicc.plugins as p; print(p.load_registries().plugins)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists() and "evil" not in proc.stdout


# -- 7. onnxruntime: no telemetry, no log lines of its own -------------------------------------

def test_aicc_turns_onnxruntime_telemetry_off():
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    proc = subprocess.run([sys.executable, "-c", "import os, aicc; "
                           "print(os.environ['ORT_DISABLE_TELEMETRY'])"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "1"


def test_cpu_runtime_failure_prints_only_aiccs_line(tmp_path, capfd):
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"], name="r")], "g",
                              [helper.make_tensor_value_info("x", 1, [2, 3]),
                               helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", 1, ["a", "b"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    qpc = aicc.compile(_save(model, tmp_path / "m.onnx"), output=tmp_path / "q")
    x = tmp_path / "x.raw"
    np.ones((2, 3), np.float32).tofile(x)
    s = tmp_path / "s.raw"
    np.array([4, 4], np.int64).tofile(s)
    capfd.readouterr()
    assert main(["run", "-t", str(qpc), "-i", f"x:={x}", "-i", f"s:={s}"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: backend 'cpu': onnxruntime failed") and \
        len(err.strip().splitlines()) == 1, err


# -- 11. paths inside a pipeline file ----------------------------------------------------------

def test_pipeline_file_paths_resolve_against_its_folder(tmp_path, monkeypatch):
    model = small_cnn()
    cfg = tmp_path / "cfg"
    write_input_list(cfg, samples(model, 2))
    (cfg / "pipeline.yaml").write_text(
        "passes:\n  - name: calibrate\n    options: {input_list: list.txt, "
        "dump_profile: profile.yaml}\n  - cleanup\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    aicc.compile(model, output=tmp_path / "q", pipeline=cfg / "pipeline.yaml")
    assert (cfg / "profile.yaml").is_file() and not (elsewhere / "profile.yaml").exists()
