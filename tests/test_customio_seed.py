"""The seed's custom I/O example end to end: container I/O, numbers against onnxruntime on the
original model, host (default) and device (-aic-preproc) conversions, ``aicc run`` on raw files."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

import aicc
from aicc import ir
from aicc.cli import main
from aicc.program import TensorDesc
from precision_builders import SEED_YAML, save, seed_model

SCALE, OFFSET = 0.12, 3

EXPECTED_INPUTS = [TensorDesc("input_0", "int8", [1, 4, 5, 3], "NHWC"),
                   TensorDesc("input_1", "float32", [1, 4, 5, 3], "NHWC"),
                   TensorDesc("input_2", "int64", [1, 4, 5, 3], "NHWC")]
EXPECTED_OUTPUTS = [TensorDesc("output_0", "float16", [1, 4, 5, 3], "NHWC"),
                    TensorDesc("output_1", "float16", [1, 3], None),
                    TensorDesc("output_2", "int64", [1, 3], None)]


@pytest.fixture(scope="module")
def seed_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seed")
    model = save(seed_model(), folder / "seed.onnx")
    (folder / "custom_io.yaml").write_text(SEED_YAML)
    return folder, model


def _compile(folder, model, mode):
    qpc = folder / f"seed-{mode}.qpc"
    argv = ["compile", f"-m={model}", f"-custom-IO-list-file={folder / 'custom_io.yaml'}",
            f"-aic-binary-dir={qpc}", "-compile-only"]
    if mode == "device":
        argv.append("-aic-preproc")
    assert main(argv) == 0
    return qpc


def _float_data(seed=0):
    """Model-format (NCHW) data, input_0 inside the int8 grid's range."""
    rng = np.random.default_rng(seed)
    shape = (1, 3, 4, 5)
    lo, hi = (-128 - OFFSET) * SCALE, (127 - OFFSET) * SCALE
    return {"input_0": rng.uniform(lo, hi, shape).astype(np.float32),
            "input_1": rng.standard_normal(shape).astype(np.float32),
            "input_2": rng.integers(-3, 4, shape).astype(np.int64)}


def _custom(data):
    """The same data in the seed's custom I/O: int8 NHWC (vendor Scale/Offset), float NHWC, int64
    NHWC."""
    q = np.clip(np.rint(data["input_0"] / np.float32(SCALE)) + OFFSET, -128, 127).astype(np.int8)
    nhwc = (0, 2, 3, 1)
    return {"input_0": np.ascontiguousarray(q.transpose(nhwc)),
            "input_1": np.ascontiguousarray(data["input_1"].transpose(nhwc)),
            "input_2": np.ascontiguousarray(data["input_2"].transpose(nhwc))}


def _reference(model_path, data):
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, data)))


@pytest.mark.parametrize("mode", ["host", "device"])
def test_seed_container_io_is_the_custom_io(seed_files, mode):
    folder, model = seed_files
    qpc = _compile(folder, model, mode)
    session = aicc.load(qpc)
    assert session.inputs == EXPECTED_INPUTS
    assert session.outputs == EXPECTED_OUTPUTS
    manifest = json.loads((qpc / "manifest.json").read_text())
    program = manifest["program"]
    # the manifest keeps the model's I/O and the custom I/O side by side
    assert [(t["name"], t["dtype"], t["shape"]) for t in program["model_inputs"]] == [
        ("input_0", "float32", [1, 3, 4, 5]), ("input_1", "float32", [1, 3, 4, 5]),
        ("input_2", "int64", [1, 3, 4, 5])]
    records = {r["name"]: r for r in program["custom_io"]}
    assert set(records) == {"input_0", "input_1", "input_2", "output_0", "output_1"}
    assert {r["conversions"] for r in records.values()} == {mode}
    assert records["input_0"]["steps"] == [
        {"op": "transpose", "perm": [0, 3, 1, 2]},
        {"op": "dequantize", "scale": SCALE, "zero_point": OFFSET}]
    spec = manifest["specializations"][0]
    graph_inputs = [(t["name"], t["dtype"], t["shape"]) for t in spec["inputs"]]
    if mode == "device":   # the compiled graph itself takes the custom tensors
        assert graph_inputs == [(d.name, d.dtype, d.shape) for d in EXPECTED_INPUTS]
        graph = ir.load_model(qpc / spec["folder"] / "model.onnx")
        ops = [n.op_type for n in graph.graph.node]
        assert ops.count("Transpose") == 4 and "DequantizeLinear" in ops
    else:                  # the backend sees the model's I/O; the session converts on the host
        assert graph_inputs[0] == ("input_0", "float32", [1, 3, 4, 5])


@pytest.mark.parametrize("mode", ["host", "device"])
def test_seed_numbers_match_onnxruntime_on_the_original_model(seed_files, mode):
    folder, model = seed_files
    session = aicc.load(_compile(folder, model, mode))
    data = _float_data()
    got = session.run(_custom(data))
    ref = _reference(model, data)
    nchw = (0, 3, 1, 2)
    step = SCALE / 2   # input_0 went through int8: within one rounding step (half an int8 step)
    out0 = got["output_0"].transpose(nchw).astype(np.float32)
    assert got["output_0"].dtype == np.float16
    np.testing.assert_allclose(out0, ref["output_0"], atol=step + 1e-6, rtol=2 ** -10)
    np.testing.assert_allclose(got["output_1"].astype(np.float32), ref["output_1"],
                               atol=step + 1e-6, rtol=2 ** -10)
    np.testing.assert_array_equal(got["output_2"], ref["output_2"])
    # on the dequantized data the original model gives the same numbers, up to the fp16 output
    deq = dict(data, input_0=((_custom(data)["input_0"].astype(np.float32) - OFFSET)
                              * np.float32(SCALE)).transpose(nchw))
    exact = _reference(model, deq)
    np.testing.assert_array_equal(got["output_0"], exact["output_0"].astype(np.float16)
                                  .transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(got["output_1"], exact["output_1"].astype(np.float16))


def test_host_and_device_conversions_give_the_same_numbers(seed_files):
    folder, model = seed_files
    host = aicc.load(_compile(folder, model, "host"))
    device = aicc.load(_compile(folder, model, "device"))
    interp = aicc.load(folder / "seed-device.qpc", backend="interpreter")
    for seed in range(3):
        feeds = _custom(_float_data(seed))
        a, b, c = host.run(feeds), device.run(feeds), interp.run(feeds)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
            np.testing.assert_array_equal(a[name], c[name])


def test_aicc_run_reads_and_writes_custom_raw_files(seed_files, tmp_path, capsys):
    folder, model = seed_files
    qpc = _compile(folder, model, "host")
    feeds = _custom(_float_data(7))
    args = ["run", "-t", str(qpc), "--write-output-dir", str(tmp_path / "out")]
    for name, arr in feeds.items():
        arr.tofile(tmp_path / f"{name}.raw")
        args += ["-i", f"{name}:={tmp_path / f'{name}.raw'}"]
    assert main(args) == 0
    expected = aicc.load(qpc).run(feeds)
    out0 = np.fromfile(tmp_path / "out" / "output_0-inf-0.raw", dtype=np.float16)
    np.testing.assert_array_equal(out0.reshape(1, 4, 5, 3), expected["output_0"])
    # a float file where the custom input is int8 is refused, never reinterpreted
    feeds["input_0"].astype(np.float32).tofile(tmp_path / "input_0.raw")
    assert main(["run", "-t", str(qpc), "-i", f"input_0:={tmp_path / 'input_0.raw'}",
                 "-i", f"input_1:={tmp_path / 'input_1.raw'}",
                 "-i", f"input_2:={tmp_path / 'input_2.raw'}"]) == 2
    assert "input 'input_0' (int8, [1, 4, 5, 3]) needs 60" in capsys.readouterr().err


def test_session_refuses_model_format_feeds(seed_files):
    folder, model = seed_files
    session = aicc.load(_compile(folder, model, "host"))
    with pytest.raises(aicc.AiccError, match="input 'input_0' is float32, the program takes int8"):
        session.run(_float_data())


def test_seed_float64_in_the_table_is_refused_with_a_hint(tmp_path):
    """The seed's table says float64 where its YAML says float16; float64 is refused."""
    from aicc.customio import parse_custom_io

    program = aicc.Program.from_model(seed_model())
    with pytest.raises(aicc.AiccError, match="Precision 'float64' is not supported.*float16"):
        parse_custom_io([{"IOName": "output_0", "Precision": "float64"}], tmp_path / "c.yaml",
                        program.model_inputs, program.model_outputs)


def test_feature_steps_and_pipeline_text(seed_files, capsys):
    folder, model = seed_files
    yaml = folder / "custom_io.yaml"
    assert main(["compile", f"-m={model}", f"-custom-IO-list-file={yaml}", "-aic-preproc",
                 "--print-pipeline"]) == 0
    text = capsys.readouterr().out.strip()
    assert f"custom-io{{config={yaml} conversions=device}}" in text
    assert text.index("custom-io") > text.index("fold-batchnorm")
