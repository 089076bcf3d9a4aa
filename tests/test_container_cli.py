"""Containers are atomic, deterministic and verified; `aicc compile` and `aicc run` behave like the
vendor tools and refuse bad input with one line and exit code 2."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import aicc
from aicc import ir
from aicc.cli import main
from aicc.container import read_manifest
from aicc.errors import ContainerError, DataError
from aicc.program import Program
from builders import add_model


def _images(example_model_path, n=8):
    return np.load(example_model_path.parent / "data" / "digits_test_images.npy")[:n]


def _compile(tmp_path, example_model_path, name="qpc", *extra):
    out = tmp_path / name
    assert main(["compile", f"-m={example_model_path}", f"-aic-binary-dir={out}",
                 "-compile-only", *extra]) == 0
    return out


def test_compile_run_matches_onnxruntime(tmp_path, example_model_path):
    import onnxruntime as ort
    qpc = _compile(tmp_path, example_model_path)
    images = _images(example_model_path, 32)
    got = aicc.load(qpc).run({"image": images})["logits"]
    ref = ort.InferenceSession(str(example_model_path)).run(None, {"image": images})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_program_metadata_roundtrips_through_container(tmp_path, example_model_path):
    qpc = aicc.compile(example_model_path, output=tmp_path / "q", symbols={"batch": 2})
    manifest = read_manifest(qpc)
    graphs = {"default": ir.import_graph(ir.load_model(qpc / "default" / "model.onnx"))}
    program = Program.from_meta(graphs, manifest["program"])
    assert program.meta() == manifest["program"]
    assert program.symbols == {"batch": 2}
    assert manifest["specializations"][0]["inputs"][0]["shape"] == [2, 1, 8, 8]


def test_containers_are_byte_identical(tmp_path, example_model_path):
    a = _compile(tmp_path, example_model_path, "a")
    b = _compile(tmp_path, example_model_path, "b")
    for rel in ["manifest.json", "default/model.onnx"]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


def test_missing_and_altered_files_are_refused(tmp_path, example_model_path, capsys):
    qpc = _compile(tmp_path, example_model_path)
    model = qpc / "default" / "model.onnx"
    data = model.read_bytes()
    model.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ContainerError, match="altered"):
        aicc.load(qpc)
    assert main(["run", "-t", str(qpc)]) == 2
    assert "was altered" in capsys.readouterr().err
    model.unlink()
    with pytest.raises(ContainerError, match="missing"):
        aicc.load(qpc)


def test_container_version_and_manifest_checks(tmp_path, example_model_path):
    qpc = _compile(tmp_path, example_model_path)
    manifest = json.loads((qpc / "manifest.json").read_text())
    manifest["format_version"] = 99
    (qpc / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ContainerError, match="version 99"):
        aicc.load(qpc)
    manifest["format_version"] = 1
    manifest["files"]["../escape"] = "0"
    (qpc / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ContainerError, match="outside the container"):
        aicc.load(qpc)
    with pytest.raises(ContainerError, match="no manifest.json"):
        aicc.load(tmp_path)


def test_failed_compile_leaves_nothing(tmp_path, example_model_path, capsys):
    out = tmp_path / "q"
    code = main(["compile", f"-m={example_model_path}", f"-aic-binary-dir={out}",
                 "--passes", "bind-symbols{symbols=[nope=3]}", "-compile-only"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no symbol 'nope'" in err and len(err.splitlines()) == 1
    assert os.listdir(tmp_path) == []


def test_existing_container_is_replaced_but_other_dirs_are_not(tmp_path, example_model_path):
    qpc = _compile(tmp_path, example_model_path)
    _compile(tmp_path, example_model_path)  # replacing a container is fine
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(ContainerError, match="not an aicc container"):
        aicc.compile(example_model_path, output=precious)
    assert (precious / "thesis.txt").exists() and qpc.exists()


@pytest.mark.parametrize("argv,match", [
    (["compile", "-m=/nonexistent.onnx", "-aic-binary-dir=OUT"], "model file not found"),
    (["compile", "-m=EMPTY", "-aic-binary-dir=OUT"], "model file is empty"),
    (["compile", "-m=MODEL", "-aic-binary-dir=OUT", "--passes", "fold-everything"],
     "unknown pass 'fold-everything'"),
    (["compile", "-m=MODEL", "-aic-binary-dir=OUT", "--passes", "cleanup{remove_unused=true}"],
     "unknown option 'remove_unused'.*remove_unused_inputs"),
    (["compile", "-m=MODEL", "-aic-binary-dir=OUT", "--passes", "fold-constants{size_threshold=x}"],
     "expected int"),
    (["compile", "-m=MODEL", "-aic-binary-dir=OUT", "-compile-onyl"], "unknown flag -compile-onyl.*compile-only"),
    (["compile", "-m=MODEL", "-aic-binary-dir=OUT", "-onnx-define-symbol=batch,two"],
     "expected a positive integer"),
    (["compile", "-m=MODEL", "-aic-binary-dir=OUT", "-onnx-define-symbol=seq,4"],
     "no symbol 'seq'"),
    (["compile", "-m=MODEL", "-aic-binary-dir=OUT", "-batchsize=abc"], "not an integer"),
    (["compile", "-m=MODEL", "-aic-binary-dir=OUT", "-multicast-weights"],
     "-multicast-weights configures the AIC100 device.*add -aic-hw"),
    (["compile", "-m=MODEL", "-aic-binary-dir=OUT", "-aic-hw", "-aic-num-cores=40"],
     "40 cores requested but AIC100 standard"),
    (["compile", "-m=MODEL", "-aic-binary-dir=OUT", "--backend", "gpu"], "unknown backend 'gpu'"),
    (["compile", "-m=MODEL", "-aic-binary-dir=OUT", "--backend-option", "threads=-1"],
     "below the minimum"),
    (["compile", "-m=MODEL", "-aic-binary-dir=OUT", "--pipeline", "PIPE"], "expected a list of passes"),
    (["frobnicate"], "unknown command"),
])
def test_cli_user_errors(tmp_path, example_model_path, capsys, argv, match):
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "pipe.yaml").write_text("42\n")
    subs = {"OUT": str(tmp_path / "out"), "MODEL": str(example_model_path),
            "EMPTY": str(tmp_path / "empty.onnx"), "PIPE": str(tmp_path / "pipe.yaml")}
    argv = [a if "=" not in a or not a.startswith("-") else a for a in argv]
    argv = [_sub(a, subs) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    import re
    assert re.search(match, err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _sub(arg, subs):
    for key, value in subs.items():
        if arg == key or arg.endswith("=" + key):
            return arg[: len(arg) - len(key)] + value
    return arg


def test_debug_shows_traceback(tmp_path, capsys):
    assert main(["compile", "-m=/nonexistent.onnx", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_compile_without_compile_only_runs_once(tmp_path, example_model_path, capsys):
    assert main(["compile", f"-m={example_model_path}", f"-aic-binary-dir={tmp_path / 'q'}",
                 "-onnx-define-symbol=batch,2", "--time-passes"]) == 0
    out = capsys.readouterr().out
    assert "ran graph 'default' once on random data" in out and "logits[2, 10]" in out


def test_print_pipeline_roundtrips(tmp_path, example_model_path, capsys):
    assert main(["compile", f"-m={example_model_path}", "-batchsize=4", "--print-pipeline"]) == 0
    text = capsys.readouterr().out.strip()
    assert text == "bind-symbols{batchsize=4},fold-constants,fold-batchnorm,cleanup"
    assert main(["compile", f"-m={example_model_path}", "--passes", text, "--print-pipeline"]) == 0
    assert capsys.readouterr().out.strip() == text


def test_run_with_raw_inputs_list_and_outputs(tmp_path, example_model_path, capsys):
    qpc = _compile(tmp_path, example_model_path, "q", "-batchsize=1")
    images = _images(example_model_path, 3)
    for i in range(3):
        images[i:i + 1].tofile(tmp_path / f"img{i}.raw")
    (tmp_path / "list.txt").write_text("img0.raw\r\n\r\nimage:=img1.raw  \n#logits\nimg2.raw\n")
    out = tmp_path / "outs"
    assert main(["run", "-t", str(qpc), "--input-list-file", str(tmp_path / "list.txt"),
                 "--write-output-dir", str(out), "--write-output-format", "npy"]) == 0
    text = capsys.readouterr().out
    assert "3 inference(s)" in text and "inferences/second" in text
    ref = aicc.load(qpc).run({"image": images[2:3]})["logits"]
    np.testing.assert_array_equal(np.fromfile(out / "logits-inf-2.raw", np.float32).reshape(1, 10), ref)
    np.testing.assert_array_equal(np.load(out / "logits-inf-2.npy"), ref)
    assert main(["run", "-t", str(qpc), "-i", str(tmp_path / "img0.raw"), "-n", "5"]) == 0
    assert "5 inference(s)" in capsys.readouterr().out


def test_run_input_of_wrong_size(tmp_path, example_model_path, capsys):
    qpc = _compile(tmp_path, example_model_path, "q", "-batchsize=1")
    np.zeros(10, np.float32).tofile(tmp_path / "bad.raw")
    assert main(["run", "-t", str(qpc), "-i", str(tmp_path / "bad.raw"),
                 "--write-output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "has 40 bytes; input 'image' (float32, [1, 1, 8, 8]) needs 256" in err
    assert not (tmp_path / "o").exists()
    np.zeros(64, np.int8).tofile(tmp_path / "int8.raw")
    assert main(["run", "-t", str(qpc), "-i", str(tmp_path / "int8.raw")]) == 2


def test_session_feed_checks(tmp_path):
    qpc = aicc.compile(add_model(), output=tmp_path / "q", batchsize=2)
    session = aicc.load(qpc)
    with pytest.raises(DataError, match="missing input"):
        session.run({})
    with pytest.raises(DataError, match="unknown input"):
        session.run({"x": np.zeros((2, 3), np.float32), "z": np.zeros(1)})
    with pytest.raises(DataError, match="is float64, the program takes float32"):
        session.run({"x": np.zeros((2, 3))})
    with pytest.raises(DataError, match=r"no specialization takes x\[5,3\].*x\[2,3\]"):
        session.run({"x": np.zeros((5, 3), np.float32)})
    np.testing.assert_array_equal(session.run({"x": np.zeros((2, 3), np.float32)})["y"],
                                  np.tile(np.arange(3, dtype=np.float32), (2, 1)))


def test_backend_returning_wrong_outputs_is_named(tmp_path):
    from aicc.backend import Backend, Executable
    from aicc.plugins import load_registries

    class Liar(Executable):
        def run(self, feeds):
            return {"y": np.zeros((2, 3), np.float64)}

    class LiarBackend(Backend):
        name = "liar"

        def compile(self, model, *, program_meta, spec_options):
            return Liar()

    class Plugin:
        @aicc.hookimpl
        def aicc_register_backends(self, registry):
            registry.add(LiarBackend)

    regs = load_registries(extra_plugins=[Plugin()])
    from aicc.compiler import CompileRequest, compile_model
    path, _, _ = compile_model(CompileRequest(model=add_model(shape=(2, 3)), backend="liar",
                                              output=tmp_path / "q"), regs)
    session = aicc.Session(path, registries=regs)
    from aicc.errors import BackendError
    with pytest.raises(BackendError, match="backend 'liar' returned output 'y' as float64"):
        session.run({"x": np.zeros((2, 3), np.float32)})


def test_run_on_another_backend(tmp_path, example_model_path):
    qpc = _compile(tmp_path, example_model_path)
    with pytest.raises(aicc.AiccError, match="unknown backend"):
        aicc.load(qpc, backend="nope")


def test_compile_api_defaults(tmp_path, example_model_path):
    path = aicc.compile(example_model_path)
    try:
        assert (path / "manifest.json").exists()
    finally:
        shutil.rmtree(path.parent)


def test_cpu_backend_options_apply(tmp_path, example_model_path):
    qpc = aicc.compile(example_model_path, output=tmp_path / "q",
                       backend_options={"threads": 1, "optimization_level": "disable",
                                        "allow_spinning": False})
    manifest = read_manifest(qpc)
    assert manifest["backend_options"] == {"threads": 1, "optimization_level": "disable",
                                           "allow_spinning": False, "quantized_kernels": "auto"}
    session = aicc.load(qpc)
    session.run({"image": _images(example_model_path, 2)})
    exe = session.executable(session.specs[0])
    options = exe.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
