"""Pipelines are validated before work, print back as text, and run with instruments; plugins
register through hooks, clash loudly, and are named when they break the contract."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from aicc import ir
from aicc.cli import main
from aicc.errors import ConfigError, PassError, PluginError
from aicc.instruments import DumpIR, TimePasses, VerifyEach
from aicc.options import build_options
from aicc.pipeline import Pipeline, parse_pipeline_text, run_pipeline
from aicc.plugins import load_registries
from aicc.program import Program
from builders import conv_bn_model


def _program():
    return Program.from_model(ir.load_model(conv_bn_model().SerializeToString()))


def test_build_from_list_and_print_roundtrip(registries):
    p = Pipeline.build(["fold-constants", ("fold-batchnorm", {}),
                        {"name": "bind-symbols", "options": {"symbols": ["batch=2"]}},
                        {"name": "cleanup", "options": {"remove_unused_inputs": True}}],
                       registries.passes)
    text = p.to_text()
    assert text == ("fold-constants,fold-batchnorm,bind-symbols{symbols=[batch=2]},"
                    "cleanup{remove_unused_inputs=true}")
    again = Pipeline.from_text(text, registries.passes)
    assert again.to_text() == text


def test_text_form_parses_lists_and_numbers():
    entries = parse_pipeline_text("a{x=1 y=[p,q] z=2.5 w=true},b")
    assert entries == [{"name": "a", "options": {"x": 1, "y": ["p", "q"], "z": 2.5, "w": True}},
                       {"name": "b", "options": {}}]


def test_unknown_pass_suggests(registries):
    with pytest.raises(ConfigError, match="unknown pass 'fold-batchnrom'.*fold-batchnorm"):
        Pipeline.build(["fold-batchnrom"], registries.passes)


def test_unknown_option_suggests(registries):
    with pytest.raises(ConfigError, match="unknown option 'size_treshold'.*size_threshold"):
        Pipeline.build([("fold-constants", {"size_treshold": 3})], registries.passes)


def test_option_of_wrong_type(registries):
    with pytest.raises(ConfigError, match="fold-constants.*size_threshold.*expected int"):
        Pipeline.build([("fold-constants", {"size_threshold": "big"})], registries.passes)
    with pytest.raises(ConfigError, match="below the minimum"):
        Pipeline.build([("fold-constants", {"size_threshold": -1})], registries.passes)


def test_pipeline_file_yaml_and_toml(tmp_path, registries):
    y = tmp_path / "p.yaml"
    y.write_text("passes:\n  - fold-batchnorm\n  - name: cleanup\ninstruments: [time-passes]\n")
    p = Pipeline.from_file(y, registries.passes)
    assert p.names() == ["fold-batchnorm", "cleanup"] and p.instruments == ["time-passes"]
    t = tmp_path / "p.toml"
    t.write_text('[[passes]]\nname = "fold-constants"\n[passes.options]\nfold_shapes = false\n')
    assert Pipeline.from_file(t, registries.passes).to_text() == "fold-constants{fold_shapes=false}"


def test_pipeline_file_not_a_list(tmp_path, registries):
    f = tmp_path / "p.yaml"
    f.write_text("cleanup: true\n")
    with pytest.raises(ConfigError, match="unknown key 'cleanup'"):
        Pipeline.from_file(f, registries.passes)
    f.write_text("just-a-string\n")
    with pytest.raises(ConfigError, match="expected a list of passes"):
        Pipeline.from_file(f, registries.passes)


def test_instruments_time_dump_verify(tmp_path, registries, capsys):
    p = Pipeline.build(["fold-batchnorm", "cleanup"], registries.passes)
    timing = TimePasses()
    dump = DumpIR(build_options(DumpIR.Options, {"after": ["all"], "dir": str(tmp_path / "ir")},
                                owner="dump-ir"))
    verify = VerifyEach(build_options(VerifyEach.Options, {"numeric": True}, owner="v"),
                        registries)
    run_pipeline(p, _program(), registries=registries, instruments=[timing, dump, verify])
    assert sorted(f.name for f in (tmp_path / "ir").iterdir()) == [
        "00-input-default.onnx", "01-fold-batchnorm-default.onnx", "02-cleanup-default.onnx"]
    err = capsys.readouterr().err
    assert "fold-batchnorm" in err and "batchnorms folded=1" in err


def test_dump_ir_refuses_pass_not_in_pipeline(tmp_path, registries):
    p = Pipeline.build(["cleanup"], registries.passes)
    dump = DumpIR(build_options(DumpIR.Options, {"after": ["cle"], "dir": str(tmp_path)},
                                owner="dump-ir"))
    with pytest.raises(PassError, match="not in the pipeline"):
        run_pipeline(p, _program(), registries=registries, instruments=[dump])


PLUGIN = '''
import numpy as np
import onnx_graphsurgeon as gs
import aicc
from aicc.hookspecs import hookimpl


class DoubleOutputs(aicc.Pass):
    """Claims to preserve outputs but multiplies them by two: verify-each must catch it."""
    name = "{name}"
    description = "test pass from a third-party plugin"
    semantics = "preserving"

    def run_graph(self, graph, program, ctx):
        out = graph.outputs[0]
        mid = gs.Variable(out.name + "_pre", dtype=out.dtype, shape=out.shape)
        producer = out.inputs[0]
        producer.outputs[0] = mid
        two = gs.Constant(out.name + "_two", np.array(2.0, dtype=np.float32))
        graph.nodes.append(gs.Node("Mul", name="double", inputs=[mid, two], outputs=[out]))
        ctx.count("outputs doubled")


@hookimpl
def aicc_register_passes(registry):
    registry.add(DoubleOutputs)
'''


def _plugin_dir(tmp_path, module="thirdparty_pass", pass_name="double-outputs", body=None):
    folder = tmp_path / "plugin"
    folder.mkdir(exist_ok=True)
    (folder / f"{module}.py").write_text(body if body is not None
                                         else PLUGIN.replace("{name}", pass_name))
    toml = folder / f"{module}.toml"
    toml.write_text(f'[plugins]\npaths = ["."]\nmodules = ["{module}"]\n')
    return toml


def test_third_party_pass_listed_and_run(tmp_path, capsys, example_model_path):
    toml = _plugin_dir(tmp_path)
    assert main(["passes", "--plugins", str(toml)]) == 0
    out = capsys.readouterr().out
    assert "double-outputs  [plugin thirdparty_pass; scope graph; semantics preserving]" in out
    qpc = tmp_path / "qpc"
    assert main(["compile", "-m", str(example_model_path), "--plugins", str(toml),
                 "--passes", "double-outputs", "-aic-binary-dir", str(qpc), "-compile-only"]) == 0
    import aicc
    images = np.load(example_model_path.parent / "data" / "digits_test_images.npy")[:4]
    doubled = aicc.load(qpc).run({"image": images})["logits"]
    plain = aicc.load(aicc.compile(example_model_path, output=tmp_path / "plain")).run(
        {"image": images})["logits"]
    np.testing.assert_allclose(doubled, 2 * plain, rtol=1e-5, atol=1e-5)


def test_verify_numeric_names_the_breaking_pass(tmp_path, capsys, example_model_path):
    toml = _plugin_dir(tmp_path)
    code = main(["compile", "-m", str(example_model_path), "--plugins", str(toml),
                 "--passes", "fold-batchnorm,double-outputs,cleanup", "--verify-each=numeric",
                 "-aic-binary-dir", str(tmp_path / "q"), "-compile-only"])
    err = capsys.readouterr().err
    assert code == 2
    assert "pass 'double-outputs' (plugin 'thirdparty_pass') broke its 'preserving' promise" in err
    assert not (tmp_path / "q").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".q")] == []


def test_duplicate_pass_name_names_both_plugins(tmp_path):
    toml = _plugin_dir(tmp_path, module="clash_plugin", pass_name="cleanup")
    with pytest.raises(PluginError, match="'cleanup' is registered twice: by plugin "
                                          "'aicc.passes.cleanup' and by plugin 'clash_plugin'"):
        load_registries([toml])


def test_plugin_that_fails_to_import(tmp_path, capsys):
    toml = _plugin_dir(tmp_path, module="broken_plugin", body="import does_not_exist_xyz\n")
    assert main(["passes", "--plugins", str(toml)]) == 2
    err = capsys.readouterr().err
    assert "plugin 'broken_plugin' failed to import" in err and "Traceback" not in err


def test_plugin_raising_while_registering(tmp_path):
    body = textwrap.dedent('''
        from aicc.hookspecs import hookimpl
        @hookimpl
        def aicc_register_passes(registry):
            raise RuntimeError("boom")
    ''')
    toml = _plugin_dir(tmp_path, module="raising_plugin", body=body)
    with pytest.raises(PluginError, match="plugin 'raising_plugin' raised in "
                                          "aicc_register_passes: RuntimeError: boom"):
        load_registries([toml])


def test_misspelled_hook_is_an_error(tmp_path):
    body = textwrap.dedent('''
        from aicc.hookspecs import hookimpl
        @hookimpl
        def aicc_register_pases(registry):
            pass
    ''')
    toml = _plugin_dir(tmp_path, module="typo_plugin", body=body)
    with pytest.raises(PluginError, match="aicc_register_pases"):
        load_registries([toml])


def test_plugin_pass_returning_garbage_is_named(tmp_path, registries):
    body = textwrap.dedent('''
        import aicc
        from aicc.hookspecs import hookimpl
        class Garbage(aicc.Pass):
            name = "garbage"
            scope = "program"
            def run(self, program, ctx):
                return {"not": "a program"}
        @hookimpl
        def aicc_register_passes(registry):
            registry.add(Garbage)
    ''')
    regs = load_registries([_plugin_dir(tmp_path, module="garbage_plugin", body=body)])
    p = Pipeline.build(["garbage"], regs.passes)
    with pytest.raises(PassError, match="pass 'garbage' \\(plugin 'garbage_plugin'\\) returned "
                                        "dict, expected a PassResult, a Program or None"):
        run_pipeline(p, _program(), registries=regs)


def test_plugin_pass_leaving_dangling_edge_is_named(tmp_path):
    body = textwrap.dedent('''
        import aicc
        from aicc.hookspecs import hookimpl
        class Dangle(aicc.Pass):
            name = "dangle"
            def run_graph(self, graph, program, ctx):
                graph.nodes = graph.nodes[1:]
        @hookimpl
        def aicc_register_passes(registry):
            registry.add(Dangle)
    ''')
    regs = load_registries([_plugin_dir(tmp_path, module="dangle_plugin", body=body)])
    with pytest.raises(PassError, match="pass 'dangle' \\(plugin 'dangle_plugin'\\) broke graph"):
        run_pipeline(Pipeline.build(["dangle"], regs.passes), _program(), registries=regs)


def test_plugins_file_errors(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[plugins]\nmodule = ["x"]\n')
    with pytest.raises(ConfigError, match="modules"):
        load_registries([f])
    f.write_text('[plugins]\nmodules = ["not a module"]\n')
    with pytest.raises(ConfigError, match="not a module path"):
        load_registries([f])


def test_ordering_requirements(registries):
    import aicc
    from aicc.registry import Registry

    class Needs(aicc.Pass):
        name = "needs-cleanup"
        requires = ("cleanup",)

    reg = Registry("pass")
    reg.add(Needs)
    for e in registries.passes.entries():
        reg.add(e.cls)
    with pytest.raises(ConfigError, match="needs pass 'cleanup' before it"):
        Pipeline.build(["needs-cleanup", "cleanup"], reg)
    Pipeline.build(["cleanup", "needs-cleanup"], reg)


def test_entry_point_also_listed_in_plugins_file_loads_once(tmp_path, monkeypatch, caplog):
    """Issue 13 item 8: a plugin installed as an entry point and listed in --plugins is one
    plugin, loaded once with a note (it used to be a fatal error dumping every plugin)."""
    import importlib
    import logging

    from aicc import plugins as plugins_mod

    toml = _plugin_dir(tmp_path, module="twice_plugin", pass_name="twice-pass")
    monkeypatch.syspath_prepend(str(toml.parent))
    module = importlib.import_module("twice_plugin")
    monkeypatch.setattr(plugins_mod, "_entry_point_plugins",
                        lambda: [("twice (twice_plugin)", module)])
    with caplog.at_level(logging.WARNING, logger="aicc.plugins"):
        regs = load_registries([toml])
    assert regs.passes.get("twice-pass").plugin == "twice_plugin"
    assert regs.plugins.count("twice_plugin") == 1 and len(regs.plugins) == len(set(regs.plugins))
    assert "plugin 'twice (twice_plugin)' from entry points is 'twice_plugin', already loaded; " \
           "loaded once" in caplog.text
