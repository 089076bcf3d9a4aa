"""Issue 18, writes: a full disk is a clean error (exit 2, one line, nothing half-written), never
empty files with exit 0; outputs whose names collide after sanitising never overwrite each other.

The full disk is simulated portably with ``RLIMIT_FSIZE`` in a subprocess (a write past the limit
fails with EFBIG; aicc ignores SIGXFSZ so the write fails instead of the process dying).
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicc
from aicc import fileio
from aicc.cli import main
from aicc.errors import OutputError
from builders import add_model
from quant_builders import DIGITS, DIGITS_LIST


def _cli(args, *, fsize=None, cwd=None):
    """``aicc ARGS`` in a subprocess whose files may not grow past ``fsize`` bytes."""
    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    env = {**os.environ, "AICC_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-c", "import sys; from aicc.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", *map(str, args)],
                          capture_output=True, text=True, preexec_fn=limit, cwd=cwd, env=env,
                          timeout=300)


def _one_line_error(proc):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    return lines[0]


def _wide_model(path, width=4096):
    """y = x + c on [1, width] floats: 16 KiB per output."""
    onnx.save(add_model((1, width)), path)
    return path


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- 2. full disk -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["raw", "npy"])
def test_run_outputs_on_a_full_disk_exit_2_and_leave_nothing(tmp_path, fmt):
    qpc = aicc.compile(_wide_model(tmp_path / "w.onnx"), output=tmp_path / "q.qpc")
    out = tmp_path / "out"
    proc = _cli(["run", "-t", qpc, "-n", "5", f"--write-output-dir={out}",
                 f"--write-output-format={fmt}"], fsize=8192)
    line = _one_line_error(proc)
    assert "cannot write" in line and "y-inf-0" in line
    assert _siblings(tmp_path) == ["q.qpc", "w.onnx"]  # no output dir, no temporary one


@pytest.mark.slow
def test_compile_on_a_full_disk_exits_2_and_keeps_the_old_container(tmp_path):
    small = tmp_path / "small.onnx"
    onnx.save(add_model((1, 3)), small)
    qpc = aicc.compile(small, output=tmp_path / "q.qpc")
    before = {p.name: p.read_bytes() for p in qpc.rglob("*") if p.is_file()}
    proc = _cli(["compile", f"-m={_wide_model(tmp_path / 'w.onnx', 8192)}",
                 f"-aic-binary-dir={qpc}", "-compile-only"], fsize=16 * 1024)
    line = _one_line_error(proc)
    assert "cannot write" in line and "model.onnx" in line
    assert {p.name: p.read_bytes() for p in qpc.rglob("*") if p.is_file()} == before
    assert _siblings(tmp_path) == ["q.qpc", "small.onnx", "w.onnx"]


@pytest.mark.slow
def test_dump_profile_on_a_full_disk_exits_2(tmp_path):
    profile = tmp_path / "p.yaml"
    proc = _cli(["compile", f"-m={DIGITS}", "--input-shape=image=1,1,8,8",
                 f"-input-list-file={DIGITS_LIST}", f"-dump-profile={profile}"], fsize=4096)
    line = _one_line_error(proc)
    assert "cannot write" in line and "p.yaml" in line
    assert _siblings(tmp_path) == []


def test_write_bytes_reports_a_failed_write_and_removes_the_file(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fileio.os, "write", full)
    with pytest.raises(OutputError, match="No space left on device.*free some space"):
        fileio.write_array(tmp_path / "y.raw", np.ones(10, np.float32))
    assert not (tmp_path / "y.raw").exists()


def test_write_array_is_little_endian_and_exact(tmp_path):
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    assert fileio.write_array(tmp_path / "a.raw", arr) == 24
    np.testing.assert_array_equal(np.fromfile(tmp_path / "a.raw", "<i4").reshape(2, 3), arr)


# -- 3. colliding output names -----------------------------------------------------------------

def _two_output_model(path, names):
    nodes = [helper.make_node("Add", ["x", f"c{i}"], [n], name=f"add{i}")
             for i, n in enumerate(names)]
    inits = [numpy_helper.from_array(np.full(3, i + 1, np.float32), f"c{i}")
             for i in range(len(names))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, 3])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3])
                               for n in names], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("names", [["a/b", "a_b"], ["o" * 130 + "1", "o" * 130 + "2"],
                                   ["Out", "out"]])
def test_outputs_colliding_after_sanitising_get_their_own_files(tmp_path, capsys, names):
    qpc = aicc.compile(_two_output_model(tmp_path / "m.onnx", names), output=tmp_path / "q.qpc")
    x = tmp_path / "x.raw"
    np.zeros((1, 3), np.float32).tofile(x)
    out = tmp_path / "out"
    assert main(["run", "-t", str(qpc), "-i", str(x), f"--write-output-dir={out}"]) == 0
    files = sorted(out.iterdir())
    assert len(files) == 2
    values = sorted(float(np.fromfile(f, np.float32)[0]) for f in files)
    assert values == [1.0, 2.0]  # both outputs kept, neither overwrote the other


def test_unique_file_names_keep_unique_names_as_before():
    stems = fileio.unique_file_names(["logits", "a/b", ".hidden", "x" * 200])
    assert stems == {"logits": "logits", "a/b": "a_b", ".hidden": "hidden", "x" * 200: "x" * 120}


# -- 9. paths that cannot be written -----------------------------------------------------------

def test_write_output_dir_with_a_missing_parent_is_refused(tmp_path, capsys):
    qpc = aicc.compile(_wide_model(tmp_path / "w.onnx", 3), output=tmp_path / "q.qpc")
    code = main(["run", "-t", str(qpc), f"--write-output-dir={tmp_path / 'a' / 'b' / 'out'}"])
    err = capsys.readouterr().err
    assert code == 2 and "parent folder" in err and "--write-output-dir" in err


def test_dump_ir_dir_naming_a_file_is_refused(tmp_path, capsys):
    model = _wide_model(tmp_path / "w.onnx", 3)
    afile = tmp_path / "afile"
    afile.write_text("keep")
    code = main(["compile", f"-m={model}", "--dump-ir-after=all", f"--dump-ir-dir={afile}"])
    err = capsys.readouterr().err
    assert code == 2 and "is not a folder" in err and afile.read_text() == "keep"


def test_a_failed_compile_without_output_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """``aicc.compile(model)`` makes a temporary folder for its container; when the compile fails
    the folder holds nothing and is removed, so failed calls do not accumulate empty folders."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(aicc.AiccError):
        aicc.compile(model)
    assert list(tmp_path.iterdir()) == []
    path = aicc.compile(add_model())
    assert path.exists() and path.parent.parent == tmp_path
