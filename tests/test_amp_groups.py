"""AMP's quantizer groups (``aicc.quant.amp_groups``) on a small attention block: a group covers
the nodes downstream of its weighted layer up to the next one (attention MatMuls of two
activations, Softmax, residual Adds), the input arithmetic before the first layer is a group of
its own, every group at fp16 leaves nothing quantized, the node-precision file lists the
activation-only nodes, and ``aicc compile`` with the exported files reproduces the quantize-time
model on the cpu and interpreter backends."""

from __future__ import annotations


import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

import aicc
from aicc import ir
from aicc.cli import main
from aicc.quant.amp import Candidate
from aicc.quant.amp_flow import QuantizedVariants, write_bridge
from aicc.quant.amp_groups import amp_groups

from quant_builders import run_unoptimized, sqnr_db, write_input_list

HI, LO = Candidate(16, "float", 16, "float"), Candidate(8, "int", 8, "int")
T, D = 8, 16
#: group -> its member nodes (the weighted layer first)
EXPECTED = {"pre_scale": ["pre_scale", "pre_bias"], "q": ["q"],
            "k": ["k", "kt", "scores", "attn", "ctx"], "v": ["v"],
            "proj": ["proj", "res", "out"]}


def attention_block(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """x[1,T,D] -> x*s+b -> q,k,v MatMuls -> softmax(q k^T) v -> proj -> +residual -> Tanh. At
    opset 12 the Softmax takes axis 1 (over the flattened scores), which onnx's version converter
    spells at opset 13 (per-channel weights need it) as Flatten/Softmax/Reshape: tensors the
    model does not have."""
    rng = np.random.default_rng(seed)
    f = lambda *s: (rng.standard_normal(s) * 0.4).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(f(D) + 1.0, "scale"), numpy_helper.from_array(f(D), "shift")]
    inits += [numpy_helper.from_array(f(D, D), f"w{n}") for n in "qkvo"]
    node = helper.make_node
    nodes = [node("Mul", ["x", "scale"], ["xs"], name="pre_scale"),
             node("Add", ["xs", "shift"], ["pre"], name="pre_bias"),
             node("MatMul", ["pre", "wq"], ["qv"], name="q"),
             node("MatMul", ["pre", "wk"], ["kv"], name="k"),
             node("MatMul", ["pre", "wv"], ["vv"], name="v"),
             node("Transpose", ["kv"], ["ktv"], name="kt", perm=[0, 2, 1]),
             node("MatMul", ["qv", "ktv"], ["sv"], name="scores"),
             node("Softmax", ["sv"], ["av"], name="attn", axis=-1 if opset >= 13 else 1),
             node("MatMul", ["av", "vv"], ["cv"], name="ctx"),
             node("MatMul", ["cv", "wo"], ["pv"], name="proj"),
             node("Add", ["pv", "pre"], ["rv"], name="res"),
             node("Tanh", ["rv"], ["y"], name="out")]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, T, D])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, T, D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _work(folder, opset: int) -> dict:
    model = attention_block(opset=opset)
    path = folder / "attn.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.standard_normal((1, T, D)).astype(np.float32) * 2} for _ in range(16)]
    return {"folder": folder, "model": model, "path": path, "feeds": feeds,
            "list": write_input_list(folder / "cal", feeds)}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return _work(tmp_path_factory.mktemp("ampg"), 17)


def _variants(work):
    return QuantizedVariants(work["model"], samples=iter(work["feeds"]), progress=False,
                             per_channel=True, calibration="None")


@pytest.fixture(scope="module")
def variants(work):
    return _variants(work)


def test_groups_cover_the_nodes_downstream_of_each_layer():
    graph = ir.import_graph(attention_block())
    groups = amp_groups(graph)
    assert {g.name: [n.name for n in g.nodes] for g in groups} == EXPECTED
    by_name = {g.name: g for g in groups}
    assert by_name["pre_scale"].layer is None and by_name["pre_scale"].inputs == ["x"]
    assert by_name["k"].layer.name == "k"
    # attention's two-activation MatMuls are not weighted layers but count as work: T*T*D MACs
    assert by_name["k"].work == T * D * D + T * D + T * T * D + T * T + T * D * T


def test_every_group_at_fp16_leaves_nothing_quantized(variants, work):
    """Old groups (weighted layers only) left the input arithmetic, the attention MatMuls, the
    Softmax and the residual Add quantized: every layer in fp16 stayed at the int8 level."""
    assert sorted(variants.groups) == sorted(EXPECTED)
    model, _ = variants.build({g: HI for g in variants.groups})
    assert not [n.name for n in model.graph.node if n.op_type == "QuantizeLinear"]
    ref = run_unoptimized(variants.float_model, work["feeds"])
    assert sqnr_db(ref, run_unoptimized(model, work["feeds"])) > 50          # fp16 rounding only
    int8, _ = variants.build({g: LO for g in variants.groups})
    assert sqnr_db(ref, run_unoptimized(int8, work["feeds"])) < 40


def _bridge(variants, work, fp16_group: str):
    """``fp16_group`` in fp16, the rest int8: the QDQ model and the exported files."""
    choice = {g: HI if g == fp16_group else LO for g in variants.groups}
    model, program = variants.build(choice)
    fp16 = [variants.groups[fp16_group]]
    files, names = write_bridge(work["folder"] / "bridge", fp16, program, variants.original,
                                variants.fp16_interior(fp16))
    return model, files, names


@pytest.fixture(scope="module")
def bridge(variants, work):
    return _bridge(variants, work, "k")          # the attention group


def test_the_node_precision_file_lists_the_activation_only_nodes(bridge):
    _, files, names = bridge
    assert names == ["kv", "ktv", "sv", "av", "cv"]         # first outputs, model order
    assert yaml.safe_load(files[0].read_text()) == {"FP16NodeInstanceNames": names}


def test_compile_reproduces_the_grouped_choice(bridge, work, tmp_path):
    _compile_and_compare(bridge, work, tmp_path)


def test_compile_reproduces_a_choice_made_after_an_opset_conversion(tmp_path):
    """The converter's Flatten/Softmax/Reshape tensors are calibrated by AMP but are no tensors
    of the model ``aicc compile`` reads: the encodings file leaves them out (it named them, and
    compile refused the file)."""
    work = _work(tmp_path, 12)
    variants = _variants(work)
    assert any(t.startswith("_v_") for t in variants.program.graph().tensors())
    _compile_and_compare(_bridge(variants, work, "proj"), work, tmp_path)


def _compile_and_compare(bridge, work, tmp_path):
    amp_model, files, _ = bridge
    ref = run_unoptimized(work["path"], work["feeds"])
    amp_out = run_unoptimized(amp_model, work["feeds"])
    results = {}
    for backend in ("cpu", "interpreter"):
        qpc = tmp_path / backend
        code = main(["compile", f"-m={work['path']}", f"-node-precision-info={files[0]}",
                     f"-external-quantization={files[1]}", f"-input-list-file={work['list']}",
                     "-quantization-schema-activations=asymmetric", "-enable-channelwise",
                     f"--backend={backend}", f"-aic-binary-dir={qpc}"])
        assert code == 0
        sess = aicc.load(qpc)
        results[backend] = np.concatenate([sess.run(f)["y"] for f in work["feeds"]])
    # the same integer grid and fp16 nodes on both; fp16 rounding (onnxruntime's fp16 kernels
    # accumulate in fp32, the interpreter's in numpy's fp16) moves a few values across an int8
    # step at the fp16 -> int8 conversion, and the int8 projection after it spreads the step
    agree = np.abs(results["cpu"] - results["interpreter"]) <= 2e-2
    assert agree.mean() >= 0.98
    assert sqnr_db(results["cpu"], results["interpreter"]) >= 30
    for out in results.values():
        # conversions fp16 -> int8 are calibrated again by the compile flow: within 1 dB
        assert abs(sqnr_db(ref, out) - sqnr_db(ref, amp_out)) <= 1.0


def test_auto_precision_reports_layers_and_other_nodes_apart(work, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    code = main(["quantize", "--input_model", str(work["path"]), "--input_list",
                 str(work["list"]), "--use_per_channel_quantization", "--output_model", str(out),
                 "--auto_precision", "45"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert sqnr_db(run_unoptimized(work["path"], work["feeds"]), run_unoptimized(out, work["feeds"])) >= 45
    line = next(s for s in stdout.splitlines() if s.startswith("amp: chose"))
    names = yaml.safe_load((tmp_path / "q_amp" / "node_precision.yaml").read_text())
    assert f"{len(names['FP16NodeInstanceNames'])} nodes in the node-precision file" in line
    assert "of 4 weighted layers and" in line and "other nodes" in line
    assert "-enable-channelwise" in stdout.splitlines()[-1]       # the compile command


def test_per_channel_encodings_raise_an_old_opset_without_the_channelwise_flag(tmp_path):
    """Per-channel weight encodings from -external-quantization need DequantizeLinear's axis
    (opset 13) whether or not -enable-channelwise is given: an opset-12 model used to reach the
    backend with an axis its opset does not have, and onnxruntime refused the graph."""
    work = _work(tmp_path, 12)
    _, files, _ = _bridge(_variants(work), work, "proj")
    code = main(["compile", f"-m={work['path']}", f"-external-quantization={files[1]}",
                 f"-input-list-file={work['list']}", "--backend=cpu",
                 f"-aic-binary-dir={tmp_path / 'qpc'}"])
    assert code == 0
    sess = aicc.load(tmp_path / "qpc")
    ref = run_unoptimized(work["path"], work["feeds"])
    out = np.concatenate([sess.run(f)["y"] for f in work["feeds"]])
    assert sqnr_db(ref, out) > 15                       # an int8 model of the block


def test_an_integer_candidate_changes_only_the_quantized_activations_of_a_group(variants):
    """A16/W8 for the input arithmetic: the input and the group's output get 16 bits; ``xs``,
    which int8 leaves inside the fused ``x * scale + shift``, stays unquantized (an override
    would split the kernel)."""
    a16 = Candidate(16, "int", 8, "int")
    table = variants.table({g: a16 if g in ("pre_scale", "k") else LO for g in variants.groups})
    assert "xs" not in variants.quantized()
    assert {"x", "pre"} <= set(table["activations"]) and "xs" not in table["activations"]
    assert {"kv", "sv", "cv"} <= set(table["activations"]) and not table["params"]
    assert all(e == {"dtype": "int", "bitwidth": 16} for e in table["activations"].values())


def test_groups_of_nodes_with_one_name_are_told_apart():
    graph = ir.import_graph(attention_block())
    for node in graph.nodes:
        if node.name in ("q", "k", "v", "pre_scale"):
            node.name = "mm" if node.name != "pre_scale" else "mm#2"
    names = [g.name for g in amp_groups(graph)]
    assert names == ["mm#2", "mm", "mm#3", "mm#4", "proj"]
