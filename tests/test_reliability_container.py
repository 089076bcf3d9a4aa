"""Issue 18, the container: nothing lost, nothing escapes it, nothing changed runs.

A folder that is not an aicc container is never replaced; the manifest is untrusted input (every
folder and file confined to the container, its structure checked); files are hashed again when
read at the first run; a killed compile's debris is cleaned up or restored by the next compile or
load, which says what it did; threads making the first run build one executable.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

import aicc
from aicc.cli import main
from aicc.container import read_manifest
from aicc.errors import ContainerError
from builders import add_model


def _model(tmp_path, shape=(2, 3), name="m.onnx"):
    path = tmp_path / name
    onnx.save(add_model(shape), path)
    return path


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def _rewrite_manifest(qpc, change):
    path = qpc / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


# -- 1. data loss -------------------------------------------------------------------------------

@pytest.mark.parametrize("manifest", ['{"name": "web app", "version": "1.0"}',
                                      '{"format": "aicc-qpc"}', "not json"])
def test_folder_with_a_foreign_manifest_is_never_replaced(tmp_path, capsys, manifest):
    project = tmp_path / "webapp"
    project.mkdir()
    (project / "manifest.json").write_text(manifest)
    (project / "index.html").write_text("<html>precious</html>")
    code = main(["compile", f"-m={_model(tmp_path)}", f"-aic-binary-dir={project}",
                 "-compile-only"])
    err = capsys.readouterr().err
    assert code == 2 and "refusing to replace it" in err and len(err.strip().splitlines()) == 1
    assert (project / "index.html").read_text() == "<html>precious</html>"
    assert (project / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "webapp"]  # no debris


def test_container_holding_a_user_file_is_not_replaced(tmp_path, capsys):
    qpc = aicc.compile(_model(tmp_path), output=tmp_path / "q.qpc")
    (qpc / "notes.txt").write_text("mine")
    code = main(["compile", f"-m={_model(tmp_path)}", f"-aic-binary-dir={qpc}", "-compile-only"])
    assert code == 2 and "notes.txt" in capsys.readouterr().err
    assert (qpc / "notes.txt").read_text() == "mine"


# -- 4. integrity between load and first run ---------------------------------------------------

def test_model_changed_between_load_and_first_run_is_refused(tmp_path):
    qpc = aicc.compile(_model(tmp_path), output=tmp_path / "q.qpc")
    session = aicc.load(qpc)
    other = add_model((2, 3))
    other.graph.initializer[0].raw_data = np.full(3, 100, np.float32).tobytes()
    (qpc / "default" / "model.onnx").write_bytes(other.SerializeToString())
    with pytest.raises(ContainerError, match="changed since the container was loaded"):
        session.run({"x": np.ones((2, 3), np.float32)})


def test_container_recompiled_under_a_running_session_is_refused(tmp_path):
    qpc = aicc.compile(_model(tmp_path), output=tmp_path / "q.qpc")
    session = aicc.load(qpc)
    aicc.compile(_model(tmp_path, (4, 3), "m4.onnx"), output=qpc)
    with pytest.raises(ContainerError, match="checksum mismatch"):
        session.run({"x": np.ones((2, 3), np.float32)})
    fresh = aicc.load(qpc).run({"x": np.ones((4, 3), np.float32)})["y"]
    np.testing.assert_array_equal(fresh, np.ones((4, 3)) + np.arange(3))


# -- 5. confinement and structure of the manifest ---------------------------------------------

@pytest.mark.parametrize("listed", [False, True])
@pytest.mark.parametrize("folder", ["../outside", str(Path("/tmp").resolve()),
                                    "a/../../outside", "."])
def test_specialization_folder_outside_the_container_is_refused(tmp_path, capsys, folder,
                                                                listed):
    qpc = aicc.compile(_model(tmp_path), output=tmp_path / "q.qpc")
    outside = tmp_path / "outside"
    shutil.copytree(qpc / "default", outside)

    def change(m):
        m["specializations"][0]["folder"] = folder
        if listed:  # also give it a checksum (unlisted, it would run unchecked)
            m["files"][f"{folder}/model.onnx"] = m["files"]["default/model.onnx"]
    _rewrite_manifest(qpc, change)
    assert main(["run", "-t", str(qpc)]) == 2
    err = capsys.readouterr().err
    assert "outside the container" in err or "not a folder inside" in err


def test_specialization_folder_through_a_symlink_is_refused(tmp_path, capsys):
    qpc = aicc.compile(_model(tmp_path), output=tmp_path / "q.qpc")
    shutil.move(qpc / "default", tmp_path / "elsewhere")
    (qpc / "default").symlink_to(tmp_path / "elsewhere")
    assert main(["run", "-t", str(qpc)]) == 2
    assert "symbolic link" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["specializations", "program", "backend"])
def test_manifest_missing_a_key_is_a_clean_error(tmp_path, capsys, key):
    qpc = aicc.compile(_model(tmp_path), output=tmp_path / "q.qpc")
    _rewrite_manifest(qpc, lambda m: m.pop(key))
    assert main(["run", "-t", str(qpc)]) == 2
    err = capsys.readouterr().err
    assert f"'{key}' is missing" in err and "Traceback" not in err


def test_malformed_specialization_entry_is_a_clean_error(tmp_path, capsys):
    qpc = aicc.compile(_model(tmp_path), output=tmp_path / "q.qpc")
    _rewrite_manifest(qpc, lambda m: m["specializations"][0]["inputs"].append({"name": "z"}))
    assert main(["run", "-t", str(qpc)]) == 2
    assert "specializations[0]" in capsys.readouterr().err


def test_deeply_nested_manifest_is_a_clean_error(tmp_path, capsys):
    qpc = tmp_path / "q.qpc"
    qpc.mkdir()
    (qpc / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["run", "-t", str(qpc)]) == 2
    assert "nested too deeply" in capsys.readouterr().err


# -- 10. debris of killed compiles -------------------------------------------------------------

def test_load_restores_a_container_left_between_the_two_renames(tmp_path, caplog):
    qpc = aicc.compile(_model(tmp_path), output=tmp_path / "q.qpc")
    hidden = tmp_path / f".q.qpc.old-{_dead_pid()}"
    qpc.rename(hidden)
    with caplog.at_level(logging.WARNING, logger="aicc.container"):
        session = aicc.load(qpc)
    assert "restored container" in caplog.text
    np.testing.assert_array_equal(session.run({"x": np.zeros((2, 3), np.float32)})["y"],
                                  np.tile(np.arange(3, dtype=np.float32), (2, 1)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "q.qpc"]


def test_next_compile_removes_debris_and_says_so(tmp_path, caplog):
    model = _model(tmp_path)
    qpc = aicc.compile(model, output=tmp_path / "q.qpc")
    pid = _dead_pid()
    (tmp_path / f".q.qpc.tmp-{pid}-abc123").mkdir()
    (tmp_path / f".q.qpc.tmp-{pid}-abc123" / "manifest.json").write_text("{}")
    shutil.copytree(qpc, tmp_path / f".q.qpc.old-{pid}")
    live = tmp_path / ".q.qpc.tmp-1-live"  # pid 1 is alive: a compile still running
    live.mkdir()
    with caplog.at_level(logging.WARNING, logger="aicc.container"):
        assert main(["compile", f"-m={model}", f"-aic-binary-dir={qpc}", "-compile-only"]) == 0
    assert caplog.text.count("removed '.q.qpc.") == 2 and "interrupted" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == [".q.qpc.tmp-1-live", "m.onnx", "q.qpc"]
    read_manifest(qpc)


# -- 11. threads making the first run ----------------------------------------------------------

def test_threads_making_the_first_run_build_one_executable(tmp_path):
    qpc = aicc.compile(_model(tmp_path), output=tmp_path / "q.qpc")
    session = aicc.load(qpc)
    loads = []
    real = session.backend.load

    def counting(*args, **kwargs):
        loads.append(1)
        return real(*args, **kwargs)
    session.backend.load = counting
    barrier = threading.Barrier(8)
    results, errors = [], []

    def worker():
        barrier.wait()
        try:
            results.append(session.run({"x": np.ones((2, 3), np.float32)})["y"])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 8 and len(loads) == 1


def test_shared_weights_changed_between_two_first_runs_are_refused(tmp_path):
    from spec_helpers import SEED_CONFIG, SEED_SHAPES, load_example, write_json
    cnn = load_example("dynamic_cnn").build(channels=32)
    qpc = aicc.compile(cnn, output=tmp_path / "q",
                       specializations=write_json(tmp_path / "spec.json", SEED_CONFIG))
    session = aicc.load(qpc)
    session.run({"image": np.zeros(SEED_SHAPES[0], np.float32)})  # reads weights.bin, verified
    data = bytearray((qpc / "weights.bin").read_bytes())
    data[100] ^= 1
    (qpc / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(ContainerError, match="'weights.bin' changed since"):
        session.run({"image": np.zeros(SEED_SHAPES[1], np.float32)})
