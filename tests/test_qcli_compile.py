"""Quantization flags of ``aicc compile``: -dump-profile / -load-profile / -convert-to-quantize /
-external-quantization flows, the how-to-quantize flags, and their refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import aicc
from aicc.cli import main
from aicc.compiler import configure, default_pipeline
from aicc.config import CompileConfig
from aicc.errors import UsageError

from quant_builders import DIGITS, DIGITS_LIST, DIGITS_TEST, small_cnn, samples

SHAPE = "--input-shape=image=1,1,8,8"


def _compile(argv, capsys):
    code = main(["compile", f"-m={DIGITS}", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("prof") / "pgq.yaml"
    assert main(["compile", f"-m={DIGITS}", SHAPE, f"-input-list-file={DIGITS_LIST}",
                 f"-dump-profile={path}"]) == 0
    return path


def test_dump_profile_writes_only_the_profile(profile, tmp_path, capsys):
    data = yaml.safe_load(profile.read_text())
    assert data["format"] == "aicc-profile" and data["num_histogram_bins"] == 512
    assert {t["name"] for t in data["tensors"]} >= {"image", "bn0", "relu0", "logits"}
    out = tmp_path / "p.yaml"
    code, stdout, _ = _compile([SHAPE, f"-input-list-file={DIGITS_LIST}", f"-dump-profile={out}",
                                "-num-histogram-bins=64"], capsys)
    assert code == 0 and f"quantization profile is dumped at {out}" in stdout
    assert yaml.safe_load(out.read_text())["num_histogram_bins"] == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]   # no container


def test_load_profile_compiles_a_quantized_container(profile, tmp_path, capsys):
    qpc = tmp_path / "qpc"
    # the batch may be bound differently from the dump: the graph hash ignores shapes
    code, _, err = _compile([f"-load-profile={profile},{profile}", "-enable-channelwise",
                             "-quantization-schema-constants=symmetric",
                             "-quantization-calibration=Percentile",
                             "-percentile-calibration-value=99.9",
                             f"-aic-binary-dir={qpc}", "-compile-only"], capsys)
    assert code == 0, err
    manifest = json.loads((qpc / "manifest.json").read_text())
    enc = manifest["program"]["encodings"]
    assert enc["settings"]["per_channel"] and enc["settings"]["method"] == "Percentile"
    assert enc["settings"]["const_schema"] == "symmetric"
    assert len(enc["params"]["conv0_bnfold_w"]["scale"]) == 16
    x = np.load(DIGITS_TEST)[:8]
    ref = aicc.load(aicc.compile(DIGITS, output=tmp_path / "float")).run({"image": x})["logits"]
    got = aicc.load(qpc).run({"image": x})["logits"]
    assert np.mean(ref.argmax(1) == got.argmax(1)) >= 7 / 8


def test_convert_to_quantize_and_int16(tmp_path, capsys):
    qpc = tmp_path / "qpc"
    code, stdout, err = _compile([SHAPE, f"-input-list-file={DIGITS_LIST}",
                                  "-convert-to-quantize", "-quantization-precision=Int16",
                                  "-quantization-precision-bias=Int8", "-enable-rowwise",
                                  f"-aic-binary-dir={qpc}"], capsys)
    assert code == 0, err
    assert "ran graph 'default' once" in stdout
    enc = json.loads((qpc / "manifest.json").read_text())["program"]["encodings"]
    assert enc["activations"]["relu0"]["bitwidth"] == 16
    assert enc["params"]["conv0_bnfold_b"]["bitwidth"] == 8
    assert len(enc["params"]["fc.weight"]["scale"]) == 10 and \
        isinstance(enc["params"]["conv0_bnfold_w"]["scale"], float)


def test_external_quantization_full_and_partial(profile, tmp_path, capsys):
    from aicc.quantization import quantize_model
    from quant_builders import digits_calibration
    enc_file = tmp_path / "enc.json"
    quantize_model(DIGITS, samples=digits_calibration(), progress=False,
                   export_encodings=str(enc_file))
    qpc = tmp_path / "full"
    code, _, err = _compile([f"-external-quantization={enc_file}", f"-aic-binary-dir={qpc}",
                             "-compile-only"], capsys)
    assert code == 0, err
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"activation_encodings": {"bn2": [{"bitwidth": 32,
                                                                     "dtype": "float"}]},
                                   "param_encodings": {}}))
    qpc = tmp_path / "partial"
    code, _, err = _compile([SHAPE, f"-external-quantization={partial}",
                             f"-input-list-file={DIGITS_LIST}", f"-aic-binary-dir={qpc}",
                             "-compile-only"], capsys)
    assert code == 0, err
    enc = json.loads((qpc / "manifest.json").read_text())["program"]["encodings"]
    assert enc["float_ops"] == {"pw1": 32} and enc["overrides"]["file"] == str(partial)
    # with a loaded profile instead of samples
    code, _, err = _compile([f"-external-quantization={partial}", f"-load-profile={profile}",
                             f"-aic-binary-dir={tmp_path / 'p2'}", "-compile-only"], capsys)
    assert code == 0, err
    # partial without samples or profile: the other tensors have no statistics
    code, _, err = _compile([f"-external-quantization={partial}",
                             f"-aic-binary-dir={tmp_path / 'p3'}", "-compile-only"], capsys)
    assert code == 2 and "no calibration statistics for tensor 'image'" in err
    assert not (tmp_path / "p3").exists()


def test_profile_of_another_graph_is_refused(tmp_path, capsys):
    import onnx
    other = tmp_path / "other.onnx"
    onnx.save(small_cnn(), other)
    lst = tmp_path / "list.txt"
    from quant_builders import write_input_list
    lst = write_input_list(tmp_path / "d", samples(small_cnn(), 2))
    prof = tmp_path / "other.yaml"
    assert main(["compile", f"-m={other}", f"-input-list-file={lst}",
                 f"-dump-profile={prof}"]) == 0
    capsys.readouterr()
    code, _, err = _compile([f"-load-profile={prof}", f"-aic-binary-dir={tmp_path / 'q'}"],
                            capsys)
    assert code == 2
    assert f"{prof}: graph_hash: profile belongs to another graph" in err
    assert err.count("\n") == 1 and not (tmp_path / "q").exists()


def test_print_pipeline_orders_the_steps(profile, capsys):
    code, out, _ = _compile([SHAPE, "-batchsize=1", f"-load-profile={profile}",
                             "--print-pipeline"], capsys)
    assert code == 0
    from aicc.pipeline import parse_pipeline_text
    steps = [e["name"] for e in parse_pipeline_text(out.strip())]
    assert steps == ["bind-symbols", "input-shape", "fold-constants", "fold-batchnorm",
                     "quantize", "cleanup"]


@pytest.mark.parametrize("argv, message", [
    (["-quantization-calibration=MSE"], "-quantization-calibration says how to quantize, and "
                                        "nothing is quantized"),
    ([f"-input-list-file={DIGITS_LIST}"], "-input-list-file gives calibration samples, and "
                                          "nothing calibrates"),
    (["-dump-profile=p.yaml"], "-dump-profile needs calibration samples"),
    ([f"-input-list-file={DIGITS_LIST}", "-dump-profile=p.yaml", "-aic-binary-dir=q"],
     "-dump-profile only writes the profile"),
    ([f"-input-list-file={DIGITS_LIST}", "-dump-profile=p.yaml", "-enable-channelwise"],
     "choose these when loading it"),
    (["-load-profile=p.yaml", "-dump-profile=q.yaml"], "both given"),
    (["-load-profile=p.yaml", "-convert-to-quantize"], "-convert-to-quantize calibrates"),
    (["-load-profile=p.yaml", "-percentile-calibration-value=99"],
     "needs -quantization-calibration=Percentile"),
    (["-load-profile=p.yaml", "-quantization-calibration=Percentile",
      "-percentile-calibration-value=101"], "percentile 101.0 is outside [90, 100]"),
    (["-load-profile=p.yaml", "-quantization-precision=Int4"], "unknown value 'Int4'"),
    (["-load-profile=p.yaml", "-quantization-schema-activations=sym"],
     "unknown quantization schema 'sym'"),
    (["-load-profile=p.yaml", "-num-histogram-bins=64"], "nothing calibrates"),
    (["--input-shape=image=1,1,8"], "input 'image' has rank 4"),
    (["-external-quantization=missing.json"], "missing.json: quantization overrides not found"),
])
def test_refusals(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = _compile(argv, capsys)
    assert code == 2, err
    assert message in err and err.count("\n") == 1, err


def test_quantization_feature_adds_passes_in_declared_order(tmp_path, registries):
    enc = tmp_path / "e.json"
    enc.write_text(json.dumps({"activation_encodings": {"a": [{"bitwidth": 32, "dtype": "int"}]},
                               "param_encodings": {}}))
    config = CompileConfig.from_python(registries.options, {
        "model": "m.onnx", "input_list": "l.txt", "input_shapes": ["x=1,2"],
        "quantization": {"encodings": str(enc)}})
    req = configure(config, registries)
    assert [s.name for s in req.passes] == [
        "input-shape", "quant-overrides", "int32-sandwich", "calibrate", "quantize"]
    steps = [name for name, _ in default_pipeline(registries, requested=req.passes)]
    assert steps == ["input-shape", "quant-overrides", "fold-constants", "fold-batchnorm",
                     "int32-sandwich", "calibrate", "quantize", "cleanup"]
    from aicc.cli.compile_cmd import build_config
    _, config, _, _ = build_config(["-m=m.onnx", "-dump-custom-IO-config-template=t.yaml",
                                    "-load-profile=p.yaml"])
    with pytest.raises(UsageError, match="dump_custom_io_template writes a template"):
        configure(config, registries)
    # the template dump reads the activation schema and calibration flags
    _, config, _, _ = build_config(["-m=m.onnx", "-dump-custom-IO-config-template=t.yaml",
                                    "-quantization-schema-activations=asymmetric",
                                    "-quantization-calibration=MSE"])
    configure(config, registries)


def test_profile_with_network_specializations(tmp_path, capsys, registries):
    """The vendor's flow: dump with -network-specialization-config and -json-input-file, then
    load the same way; one profile covers every specialization."""
    from spec_helpers import write_two_size_conv
    path, config = write_two_size_conv(tmp_path)
    rng = np.random.default_rng(0)
    runs = []
    for i, size in enumerate((4, 8)):
        rng.standard_normal((1, 3, size, size)).astype(np.float32).tofile(tmp_path / f"{i}.raw")
        runs.append([{"path": f"{i}.raw", "io-direction": "in", "map-to": "x",
                      "data-type": "float32", "dims": [1, 3, size, size]}])
    jin = tmp_path / "io.json"
    jin.write_text(json.dumps({"IO-files": runs}))
    prof = tmp_path / "profile.pgq"
    base = ["compile", f"-m={path}", f"-network-specialization-config={config}",
            f"-json-input-file={jin}"]
    assert main(base + [f"-dump-profile={prof}"]) == 0, capsys.readouterr().err
    assert f"quantization profile is dumped at {prof}" in capsys.readouterr().out
    qpc = tmp_path / "qpc"
    assert main(base + [f"-load-profile={prof}", f"-aic-binary-dir={qpc}"]) == 0, \
        capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.count("ran graph") == 2
    manifest = json.loads((qpc / "manifest.json").read_text())
    assert len(manifest["specializations"]) == 2
    assert "x" in manifest["program"]["encodings"]["activations"]
    # an input list cannot feed several specializations
    code = main(base[:-1] + [f"-input-list-file={jin}", f"-dump-profile={prof}"])
    assert code == 2 and "-input-list-file cannot be used" in capsys.readouterr().err


def test_quantized_containers_are_byte_identical(tmp_path, capsys):
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        code, _, err = _compile([SHAPE, f"-input-list-file={DIGITS_LIST}",
                                 "-convert-to-quantize",
                                 "-quantization-calibration=KLMinimizationV2",
                                 f"-aic-binary-dir={d}", "-compile-only"], capsys)
        assert code == 0, err
    files = sorted(p.relative_to(dirs[0]) for p in dirs[0].rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(dirs[1]) for p in dirs[1].rglob("*")
                                     if p.is_file())
    for f in files:
        assert (dirs[0] / f).read_bytes() == (dirs[1] / f).read_bytes(), f
