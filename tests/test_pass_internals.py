"""Unit tests of the helper modules behind cle (equalization.patterns, equalization.rewrite) and quantize
(quantization.plan): what they find, name and refuse, independently of the passes that use them."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from aicc import ir
from aicc.errors import ConfigError
from aicc.options import build_options
from aicc.passes.equalization import patterns as _cle_patterns, rewrite as _cle_rewrite
from aicc.passes.quantization import plan as _quant_plan
from aicc.passes.quantization.quantize import Quantize
from cle_builders import cnn


def _graph(model):
    return ir.import_graph(ir.load_model(model.SerializeToString()))


def test_find_chains_links_relu_layers_and_reports_why_not():
    # conv -> relu -> conv -> sigmoid -> conv: one link, then a non-homogeneous activation
    model = cnn([{"out": 4, "bn": False, "act": "Relu"}, {"out": 4, "bn": False, "act": "Sigmoid"},
                 {"out": 2, "bn": False, "act": None}])
    chains, skipped = _cle_patterns.find_chains(_graph(model))
    assert len(chains) == 1 and len(chains[0]) == 1
    link = chains[0][0]
    assert link.first.kind == "conv" and link.second.node.op == "Conv"
    assert any("Sigmoid" in reason for _, reason in skipped)


def test_refuse_non_float_names_the_node():
    graph = gs.Graph(nodes=[], inputs=[], outputs=[])
    x = gs.Variable("x", dtype=np.float32, shape=[1])
    q = gs.Variable("q", dtype=np.uint8, shape=[1])
    graph.nodes.append(gs.Node("QuantizeLinear", name="ql", inputs=[
        x, gs.Constant("s", np.array(0.1, np.float32))], outputs=[q]))
    graph.inputs, graph.outputs = [x], [q]
    with pytest.raises(Exception, match="ql"):
        _cle_patterns.refuse_non_float(graph, "graph 'default'")


def test_editor_names_are_fresh():
    graph = _graph(cnn([{"out": 2, "bn": False}]))
    editor = _cle_rewrite.Editor(graph)
    taken = next(iter(graph.tensors()))
    first, second = editor.name(taken), editor.name(taken)
    assert first != taken and second not in (taken, first)
    assert editor.const("k", np.ones(2, np.float32)).name == "k"


def test_quant_settings_validate_combinations():
    opts = build_options(Quantize.Options, {"act_quantizer": "enhanced",
                                            "calibration": "Percentile"}, owner="quantize")
    with pytest.raises(ConfigError, match="enhanced"):
        _quant_plan.QuantSettings.from_options(opts)
    settings = _quant_plan.QuantSettings.from_options(
        build_options(Quantize.Options, {}, owner="quantize"))
    assert settings.act_bw == 8 and settings.method == "None"
