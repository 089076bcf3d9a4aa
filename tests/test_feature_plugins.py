"""Features are plugins: a flag and its pass in one file (tests/plugins/output_scale.py) work
through the CLI, a compile config file and ``aicc.compile`` alike, with errors in each caller's
vocabulary, and the three entrances build byte-identical containers."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest

import aicc
from aicc.cli import main
from aicc.errors import ConfigError

PLUGIN = Path(__file__).parent / "plugins" / "output_scale.toml"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits_mobilenet.onnx"


def same_tree(a: Path, b: Path) -> bool:
    """Byte-identical folders (every file, recursively)."""
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def test_a_plugin_flag_and_its_pass_through_every_entrance(tmp_path):
    cli, api, cfg = tmp_path / "cli.qpc", tmp_path / "api.qpc", tmp_path / "cfg.qpc"
    assert main(["compile", f"-m={EXAMPLE}", f"--plugins={PLUGIN}", "-output-scale=2",
                 f"-aic-binary-dir={cli}", "-compile-only"]) == 0
    aicc.compile(EXAMPLE, plugins=[PLUGIN], output_scale=2.0, output=api)
    (tmp_path / "c.yaml").write_text(f"model: {EXAMPLE}\noutput_scale: 2.0\n")
    assert main(["compile", f"--config={tmp_path / 'c.yaml'}", f"--plugins={PLUGIN}",
                 f"-aic-binary-dir={cfg}", "-compile-only"]) == 0
    assert same_tree(cli, api) and same_tree(cli, cfg)
    plain = aicc.load(aicc.compile(EXAMPLE, output=tmp_path / "plain.qpc"))
    scaled = aicc.load(api)
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    (name,) = [d.name for d in plain.inputs]
    want = {k: 2 * v for k, v in plain.run({name: x}).items()}
    got = scaled.run({name: x})
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6)
    assert "scale-outputs{factor=2.0},cleanup" in (api / "manifest.json").read_text()


def test_plugin_option_errors_name_the_option_as_each_caller_spelled_it(tmp_path, capsys):
    assert main(["compile", f"-m={EXAMPLE}", f"--plugins={PLUGIN}", "--output-scale=-1"]) == 2
    assert "error: --output-scale: -1.0 is not a positive factor" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="^output_scale: -1.0 is not a positive factor"):
        aicc.compile(EXAMPLE, plugins=[PLUGIN], output_scale=-1.0)
    (tmp_path / "c.yaml").write_text("output_scale: -1\n")
    assert main(["compile", f"-m={EXAMPLE}", f"--plugins={PLUGIN}",
                 f"--config={tmp_path / 'c.yaml'}"]) == 2
    assert f"{tmp_path / 'c.yaml'}: output_scale: -1.0 is not" in capsys.readouterr().err
    # without the plugin the option does not exist, in either vocabulary
    assert main(["compile", f"-m={EXAMPLE}", "-output-scale=2"]) == 2
    assert "unknown flag -output-scale" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown option 'output_scale'"):
        aicc.compile(EXAMPLE, output_scale=2.0)


def test_the_plugin_pass_is_placed_by_its_declared_order(capsys):
    assert main(["compile", f"-m={EXAMPLE}", f"--plugins={PLUGIN}", "-output-scale=3",
                 "-convert-to-fp16", "--print-pipeline"]) == 0
    text = capsys.readouterr().out.strip()
    assert text == ("convert-fp16{all=true},fold-constants,fold-batchnorm,"
                    "scale-outputs{factor=3.0},cleanup")


def _plugin_file(tmp_path, name, body):
    (tmp_path / f"{name}.py").write_text("from aicc import hookimpl\n"
                                         "from aicc.config import Option\n" + body)
    toml = tmp_path / f"{name}.toml"
    toml.write_text(f'[plugins]\npaths = ["."]\nmodules = ["{name}"]\n')
    return toml


@pytest.mark.parametrize("name,body,match", [
    ("clash_key", "@hookimpl\ndef aicc_add_options(options):\n"
     "    options.add(Option('fp16', bool))\n",
     "option 'fp16' is declared twice: by plugin 'aicc.features.precision' and by plugin"),
    ("clash_flag", "@hookimpl\ndef aicc_add_options(options):\n"
     "    options.add(Option('mine', bool, flags=('-convert-to-fp16',)))\n",
     "flag -convert-to-fp16 is declared twice: for 'fp16' and for 'mine'"),
    ("raise_add", "@hookimpl\ndef aicc_add_options(options):\n"
     "    raise RuntimeError('boom')\n",
     "plugin 'raise_add' raised in aicc_add_options: RuntimeError: boom"),
    ("raise_configure", "@hookimpl\ndef aicc_configure(config, request):\n"
     "    raise KeyError('x')\n",
     "plugin 'raise_configure' raised configuring the compile: KeyError"),
])
def test_a_plugin_that_clashes_or_raises_is_named(tmp_path, capsys, name, body, match):
    import re
    toml = _plugin_file(tmp_path, name, body)
    assert main(["compile", f"-m={EXAMPLE}", f"--plugins={toml}", "-compile-only",
                 f"-aic-binary-dir={tmp_path / 'q'}"]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and err.count("\n") == 1, err
