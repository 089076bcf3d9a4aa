"""One configuration for every entrance (aicc.config.CompileConfig): a compile config file, flags
and Python keywords are checked the same way, with errors naming the file, key or flag, and
contradictions refused rather than resolved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import aicc
from aicc.cli import main
from aicc.config import CompileConfig
from aicc.errors import AiccError, ConfigError, UsageError
from test_feature_plugins import same_tree

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits_mobilenet.onnx"


def test_config_file_paths_resolve_against_the_file(tmp_path):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "io.yaml").write_text("- IOName: image\n  Precision: float16\n")
    (folder / "compile.yaml").write_text(f"model: {EXAMPLE}\ncustom_io: io.yaml\n"
                                         "time_passes: false\n")
    api = aicc.compile(config=folder / "compile.yaml", output=tmp_path / "api.qpc")
    assert main(["compile", f"--config={folder / 'compile.yaml'}",
                 f"-aic-binary-dir={tmp_path / 'cli.qpc'}", "-compile-only"]) == 0
    assert main(["compile", f"-m={EXAMPLE}", f"-custom-IO-list-file={folder / 'io.yaml'}",
                 f"-aic-binary-dir={tmp_path / 'flags.qpc'}", "-compile-only"]) == 0
    assert same_tree(api, tmp_path / "cli.qpc") and same_tree(api, tmp_path / "flags.qpc")


def test_an_option_given_twice_is_refused(tmp_path, capsys):
    conf = tmp_path / "c.yaml"
    conf.write_text(f"model: {EXAMPLE}\nfp16: true\n")
    assert main(["compile", f"--config={conf}", "-convert-to-fp16"]) == 2
    err = capsys.readouterr().err
    assert f"{conf}: fp16 and -convert-to-fp16 both set 'fp16'" in err and err.count("\n") == 1
    with pytest.raises(UsageError, match="both set 'fp16'"):
        aicc.compile(config=conf, fp16=True)
    with pytest.raises(AiccError, match="backend= and target= both given"):
        aicc.compile(EXAMPLE, backend="cpu", target="interpreter")
    assert main(["compile", f"-m={EXAMPLE}", "-aic-hw", "--backend=cpu"]) == 2
    assert "-aic-hw sets 'target' to 'aic100' but --backend says 'cpu'" in \
        capsys.readouterr().err


@pytest.mark.parametrize("text,match", [
    ("num_corse: 2\n", "unknown option 'num_corse' \\(did you mean 'num_cores'\\?\\)"),
    ("quantization: true\n", "'quantization' takes a mapping of its options"),
    ("quantization: {per_chanel: true}\n",
     "unknown option 'quantization.per_chanel' \\(did you mean 'per_channel'\\?\\)"),
    ("compile_only: true\n", "'compile_only' is a command-line action: -compile-only"),
    ("num_cores: '4'\n", "num_cores: got '4' \\(str\\), expected int"),
    ("- model.onnx\n", "expected a mapping of options, got list"),
    ("fp16: true\nfp16: false\n", "duplicate key 'fp16' on lines 1 and 2"),
])
def test_bad_config_files_name_the_file_and_key(tmp_path, capsys, text, match):
    conf = tmp_path / "c.yaml"
    conf.write_text(text)
    assert main(["compile", f"-m={EXAMPLE}", f"--config={conf}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {conf}") and err.count("\n") == 1, err
    import re
    assert re.search(match, err), err


def test_python_keywords_are_typed_and_checked(tmp_path):
    with pytest.raises(ConfigError, match="^num_cores: got '4' \\(str\\), expected int"):
        aicc.compile(EXAMPLE, target="aic100", num_cores="4")
    with pytest.raises(UsageError, match="^num_cores: 0 is below the minimum 1"):
        aicc.compile(EXAMPLE, target="aic100", num_cores=0)
    with pytest.raises(UsageError, match="^quantization.precision: unknown value 'int4'"):
        aicc.compile(EXAMPLE, quantization=dict(precision="int4"))
    with pytest.raises(ConfigError, match="'dump_custom_io_template' is a command-line action"):
        aicc.compile(EXAMPLE, dump_custom_io_template="t.yaml")
    # case-folded choices keep the declared spelling
    assert CompileConfig.from_python(aicc.plugins.load_registries().options, {
        "quantization": {"precision": "int16"}}).get("quantization.precision") == "Int16"


def test_specialization_file_is_read_once_and_errors_name_it(tmp_path, monkeypatch):
    import aicc.specconfig as specconfig
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"specializations": [{"batch": "1"}, {"batch": "2"}]}))
    reads = []
    original = specconfig.load_json
    monkeypatch.setattr(specconfig, "load_json", lambda p, **kw: reads.append(p) or
                        original(p, **kw))
    aicc.compile(EXAMPLE, specializations=spec, output=tmp_path / "q")
    assert reads == [spec]
    spec.write_text(json.dumps({"specializations": [{"batch": "x"}]}))
    with pytest.raises(ConfigError, match=f"^{spec}: entry 1: symbol 'batch' has value 'x'"):
        aicc.compile(EXAMPLE, specializations=spec)


def test_dump_profile_alone_compiles_nothing_and_with_calibrate_both(tmp_path):
    from quant_builders import DIGITS_LIST
    common = dict(input_shapes=["image=1,1,8,8"], input_list=str(DIGITS_LIST))
    assert aicc.compile(EXAMPLE, quantization=dict(dump_profile=tmp_path / "a.yaml"),
                        **common) is None
    assert (tmp_path / "a.yaml").is_file()
    qpc = aicc.compile(EXAMPLE, quantization=dict(dump_profile=tmp_path / "b.yaml",
                                                  calibrate=True), **common)
    assert (tmp_path / "b.yaml").is_file() and (qpc / "manifest.json").is_file()


@pytest.mark.parametrize("options", [
    dict(target="aic100", num_cores=2, fp16=True, backend_options={"ols": 2}),
    dict(input_list="l.txt", quantization=dict(calibrate=True, per_channel=True),
         keep_original_precision=["Softmax"], fp16=True),
    dict(custom_io="IO", aic_preproc=True, quantization=dict(profile=["p.yaml"])),
])
def test_features_do_not_depend_on_the_order_plugins_configure_in(tmp_path, options):
    """Hooks register and configure; they never decide order (DESIGN §4): the request is the
    same whichever order the plugins' aicc_configure run in."""
    from aicc.compiler import configure
    (tmp_path / "io.yaml").write_text("- IOName: image\n  Precision: float16\n")
    if options.get("custom_io") == "IO":
        options = {**options, "custom_io": tmp_path / "io.yaml"}
    regs = aicc.plugins.load_registries()
    config = CompileConfig.from_python(regs.options, {"model": str(EXAMPLE), **options})
    forward = configure(config, regs)
    regs.configurers.reverse()
    backward = configure(config, regs)
    regs.configurers.reverse()
    from aicc.compiler import default_pipeline
    assert default_pipeline(regs, requested=forward.passes) == \
        default_pipeline(regs, requested=backward.passes)
    assert forward.backend == backward.backend
    assert forward.backend_options == backward.backend_options


def test_two_options_one_command_spells_alike_are_named_once():
    from aicc.errors import VOCABULARY, option_ref, render_options
    token = VOCABULARY.set({"input_shapes": "--input_dim", "symbols": "--input_dim"})
    try:
        text = f"bind it with {option_ref('input_shapes')} or {option_ref('symbols')}"
        assert render_options(text) == "bind it with --input_dim"
    finally:
        VOCABULARY.reset(token)
