"""Sharded calibration on a LocalCluster of 2 worker processes: the profile, hence the quantized
model, equals the one-process one; a killed worker is survived; bad files fail cleanly."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import threading
import time

import numpy as np
import onnx
import pytest

import aicc.quantization as q
from aicc.cli import main
from aicc.errors import DataError, UsageError
from aicc.passes.quantization.dask_shards import array_items, calibrate_sharded, list_items
from aicc.passes.quantization.calibrate import calibrate_program
from aicc.program import Program
from aicc.quant import dump_profile_yaml

from quant_builders import DIGITS, samples, small_cnn, write_input_list

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def cnn():
    model = small_cnn(batch="N")
    return model, samples(model, 200)


def _program(model: onnx.ModelProto) -> Program:
    from aicc import ir
    return Program.from_model(ir.load_model(model.SerializeToString()))


def test_sharded_profile_is_the_one_process_profile(client, cnn):
    model, feeds = cnn
    one = calibrate_program(_program(model), feeds, progress=False)
    sharded = calibrate_sharded(_program(model), array_items(feeds), client, total=len(feeds),
                                num_bins=512, shard_size=64, progress=False)
    # 4 shards (64, 64, 64, 8 samples) on 2 workers: the same YAML, byte for byte
    assert dump_profile_yaml(sharded) == dump_profile_yaml(one)


def test_sharded_ranges_of_some_tensors_are_the_one_process_ones(client, cnn):
    """Range-only calibration of a subset (min-max ``aicc quantize``): the same profile, with
    the same tensors skipped."""
    model, feeds = cnn
    some = {"x", "r1", "mp", "res", "y"}
    one = calibrate_program(_program(model), feeds, progress=False, histograms=False,
                            observe=some)
    sharded = calibrate_sharded(_program(model), array_items(feeds), client, total=len(feeds),
                                num_bins=512, shard_size=64, progress=False, histograms=False,
                                observe=some)
    assert set(sharded.tensors) == some and sharded.skipped
    assert dump_profile_yaml(sharded) == dump_profile_yaml(one)


@pytest.mark.parametrize("method", ["None", "Percentile", "MSE"])
def test_quantized_model_is_byte_identical(client, cnn, method):
    model, feeds = cnn
    ref, _ = q.quantize_model(model, samples=feeds, calibration=method, progress=False)
    got, _ = q.quantize_model(model, samples=iter(feeds), calibration=method, progress=False,
                              dask=client)
    assert got.SerializeToString() == ref.SerializeToString()


@pytest.mark.parametrize("ship", [False, True])
def test_cli_quantize_by_path_and_shipped(client, cnn, tmp_path, capsys, ship):
    model, feeds = cnn
    lst = write_input_list(tmp_path / "data", feeds[:130])
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    base = ["quantize", "-i", str(src), "--input_list", str(lst),
            "--act_quantizer_calibration", "percentile", "--input_dim", "x", "1,3,8,8"]
    assert main(base + ["-o", str(tmp_path / "one.onnx")]) == 0
    extra = ["--dask", client.scheduler.address] + (["--dask-ship-data"] if ship else [])
    assert main(base + ["-o", str(tmp_path / "dask.onnx")] + extra) == 0, capsys.readouterr()
    assert (tmp_path / "dask.onnx").read_bytes() == (tmp_path / "one.onnx").read_bytes()


def test_missing_file_fails_cleanly_and_writes_nothing(client, tmp_path, capsys):
    feeds = [{"image": np.zeros((1, 1, 8, 8), np.float32)}] * 70
    lst = write_input_list(tmp_path / "data", feeds)
    (tmp_path / "data" / "image_66.raw").unlink()
    prof = tmp_path / "p.yaml"
    code = main(["compile", f"-m={DIGITS}", "--input-shape=image=1,1,8,8",
                 f"-input-list-file={lst}", f"-dump-profile={prof}",
                 f"-dask={client.scheduler.address}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "line 67" in err and "image_66.raw" in err and "not found" in err
    assert not prof.exists()


def test_malformed_file_found_by_a_worker_fails_cleanly(client, tmp_path, capsys):
    feeds = [{"image": np.zeros((1, 1, 8, 8), np.float32)}] * 130
    lst = write_input_list(tmp_path / "data", feeds)
    (tmp_path / "data" / "image_100.raw").write_bytes(b"\0" * 12)   # checked on the worker
    prof = tmp_path / "p.yaml"
    code = main(["compile", f"-m={DIGITS}", "--input-shape=image=1,1,8,8",
                 f"-input-list-file={lst}", f"-dump-profile={prof}",
                 f"-dask={client.scheduler.address}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "line 101" in err and "image_100.raw" in err and "has 12 bytes" in err
    assert not prof.exists() and not list(tmp_path.glob(".p.yaml*"))


@pytest.mark.slow
def test_killed_worker_is_survived(client, cnn):
    model, _ = cnn
    feeds = samples(model, 1024, seed=3)
    one = calibrate_program(_program(model), feeds, progress=False)
    pids = client.run(os.getpid)
    result: dict = {}

    def run():
        try:
            result["profile"] = calibrate_sharded(_program(model), array_items(feeds), client,
                                                  total=len(feeds), num_bins=512,
                                                  shard_size=64, progress=False)
        except BaseException as e:     # reported below
            result["error"] = e
    thread = threading.Thread(target=run)
    thread.start()
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and thread.is_alive() and time.monotonic() < deadline:
        busy = [w for w, keys in client.processing().items()
                if any("aicc-calibrate-shard" in str(k) for k in keys)]
        if busy:
            victim = pids[busy[0]]
            os.kill(victim, signal.SIGKILL)         # mid-shard
        time.sleep(0.02)
    thread.join(120)
    assert victim is not None, "no shard was seen running"
    assert "error" not in result, result.get("error")
    assert dump_profile_yaml(result["profile"]) == dump_profile_yaml(one)
    client.wait_for_workers(2, timeout=60)


def test_ctrl_c_cancels_and_returns_nothing(client, cnn, monkeypatch):
    model, feeds = cnn
    from aicc import distributed as aicc_distributed

    def interrupt(self, samples):
        raise KeyboardInterrupt
    monkeypatch.setattr(aicc_distributed.DaskProgress, "step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        calibrate_sharded(_program(model), array_items(feeds), client, total=len(feeds),
                          num_bins=512, shard_size=64, progress=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            "aicc-calibrate-shard" in str(k) for keys in client.processing().values()
            for k in keys):
        time.sleep(0.05)
    assert not any("aicc-calibrate-shard" in str(k) for keys in client.processing().values()
                   for k in keys)


def test_list_items_check_the_list_before_submitting(tmp_path):
    model = small_cnn(batch=1)
    lst = tmp_path / "list.txt"
    lst.write_text("nowhere.raw\n")
    with pytest.raises(DataError, match="line 1"):
        list_items(lst, _program(model), ship_data=False)


@pytest.mark.parametrize("argv, message", [
    (["--dask-ship-data"], "--dask-ship-data needs --dask"),
    (["--dask", "local:0"], "positive integer"),
    (["--dask", "elsewhere"], "neither local"),
])
def test_cli_refuses_bad_dask_flags(tmp_path, capsys, argv, message):
    code = main(["quantize", "-i", str(DIGITS), "-o", str(tmp_path / "o.onnx"),
                 "--input_list", "x.txt", *argv])
    assert code == 2 and message in capsys.readouterr().err


def test_compile_dask_with_nothing_to_do_is_refused(capsys):
    assert main(["compile", f"-m={DIGITS}", "-dask=local:2"]) == 2
    assert "neither happens" in capsys.readouterr().err


def test_missing_dask_names_the_extra(monkeypatch):
    import sys

    from aicc.distributed import import_distributed
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(UsageError, match=r"pip install aicc\[dask\]"):
        import_distributed()


def test_specializations_compile_in_parallel_into_the_same_container(client, tmp_path, capsys,
                                                                       monkeypatch):
    import aicc
    from spec_helpers import SEED_CONFIG, load_example, write_json
    src = tmp_path / "cnn.onnx"
    onnx.save(load_example("dynamic_cnn").build(channels=8), src)
    config = write_json(tmp_path / "spec.json", SEED_CONFIG)
    base = ["compile", f"-m={src}", f"-network-specialization-config={config}",
            "-convert-to-fp16", "-aic-hw", "-compile-only"]
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert main(base + [f"-aic-binary-dir={serial}"]) == 0, capsys.readouterr().err
    serial_out = capsys.readouterr().out
    # -compile-only after a Dask compile: nothing is compiled or loaded again here (the workers
    # did it), and the estimate printed is the workers' report, as the serial compile prints it
    from aicc.backends.aic100 import Aic100Backend
    here = []
    for method in ("compile", "load"):
        monkeypatch.setattr(Aic100Backend, method, lambda *a, m=method, **k: here.append(m))
    assert main(base + [f"-aic-binary-dir={parallel}", f"-dask={client.scheduler.address}"]) \
        == 0, capsys.readouterr().err
    monkeypatch.undo()
    assert here == []
    parallel_out = capsys.readouterr().out
    report = [line for line in serial_out.splitlines() if not line.startswith("compiled ")]
    assert report and report == [line for line in parallel_out.splitlines()
                                 if not line.startswith("compiled ")]
    files = sorted(p.relative_to(serial) for p in serial.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(parallel) for p in parallel.rglob("*") if p.is_file())
    assert any(f.name != "model.onnx" and f.parent != Path(".") for f in files)  # artifacts
    for f in files:
        assert (serial / f).read_bytes() == (parallel / f).read_bytes(), f
    feeds = {"image": np.random.default_rng(0).normal(size=(1, 3, 56, 56)).astype(np.float32)}
    a = aicc.load(serial).run(feeds)
    b = aicc.load(parallel).run(feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_progress_shows_shards_rate_and_worker_memory_on_a_terminal_only():
    import io

    from aicc.distributed import DaskProgress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    class FakeClient:
        def scheduler_info(self):
            return {"workers": {"a": {"metrics": {"memory": 300 << 20}},
                                "b": {"metrics": {"memory": 200 << 20}}}}
    tty = Tty()
    bar = DaskProgress(FakeClient(), 2, stream=tty)
    bar.step(64)
    bar.step(64)
    bar.close()
    text = tty.getvalue()
    assert "2/2 shards" in text and "samples/s" in text and "2 workers 200-300 MiB" in text
    pipe = io.StringIO()
    quiet = DaskProgress(FakeClient(), 2, stream=pipe)
    quiet.step(64)
    quiet.close()
    assert pipe.getvalue() == ""


def test_json_input_with_specializations_gives_the_same_profile(client, tmp_path, capsys):
    import json

    from spec_helpers import write_two_size_conv
    src, config = write_two_size_conv(tmp_path)
    rng = np.random.default_rng(0)
    runs = []
    for i in range(150):          # 3 shards of 64; both graphs get samples in every shard
        size = (4, 8)[i % 2]
        rng.standard_normal((1, 3, size, size)).astype(np.float32).tofile(tmp_path / f"{i}.raw")
        runs.append([{"path": f"{i}.raw", "io-direction": "in", "map-to": "x",
                      "data-type": "float32", "dims": [1, 3, size, size]}])
    jin = tmp_path / "io.json"
    jin.write_text(json.dumps({"IO-files": runs}))
    base = ["compile", f"-m={src}", f"-network-specialization-config={config}",
            f"-json-input-file={jin}"]
    one, sharded = tmp_path / "one.yaml", tmp_path / "sharded.yaml"
    assert main(base + [f"-dump-profile={one}"]) == 0, capsys.readouterr().err
    assert main(base + [f"-dump-profile={sharded}", f"-dask={client.scheduler.address}"]) == 0, \
        capsys.readouterr().err
    assert sharded.read_text() == one.read_text()
