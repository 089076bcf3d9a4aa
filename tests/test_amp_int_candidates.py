"""AMP's integer candidates (``aicc.quant.amp_flow``) on a small opset-13 block whose ReduceMean
takes ``axes`` as an attribute (as PP-OCRv4 rec's LayerNorms do): a group at A16/W8 quantizes its
activations at 16 bits and its weight at 8 in the output model, A8/W16 the reverse and its other
constants (a LayerNorm-like scale) with the weight; the graph reaches opset 21 through onnx's
version converter (a plain bump refused ReduceMean's ``axes``); and the bridge files (no fp16
node, 16-bit encodings) make ``aicc compile`` reproduce the choice on the cpu and interpreter
backends. The search never takes a move that saves no bits (fp16 and A16/W16 cost the same)."""

from __future__ import annotations


import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicc
from aicc.cli import main
from aicc.quant.amp import Candidate, parse_candidates, run_amp
from aicc.quant.amp_flow import QuantizedVariants, write_bridge

from quant_builders import run_unoptimized, sqnr_db, write_input_list

A8W8, A16W8 = Candidate(8, "int", 8, "int"), Candidate(16, "int", 8, "int")
A8W16, A16W16 = Candidate(8, "int", 16, "int"), Candidate(16, "int", 16, "int")
FP16 = Candidate(16, "float", 16, "float")
T, D = 8, 16
BITS = {TensorProto.UINT8: 8, TensorProto.INT8: 8, TensorProto.UINT16: 16, TensorProto.INT16: 16}


def norm_block(seed: int = 0) -> onnx.ModelProto:
    """x[1,T,D] -> MatMul w1 -> (h - ReduceMean(h, axes=[-1])) * gamma -> MatMul w2 -> Tanh."""
    rng = np.random.default_rng(seed)
    f = lambda *s: (rng.standard_normal(s) * 0.5).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(f(D, D), "w1"), numpy_helper.from_array(f(D, D), "w2"),
             numpy_helper.from_array(f(D) + 1.0, "gamma")]
    node = helper.make_node
    nodes = [node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             node("ReduceMean", ["h"], ["mu"], name="mean", axes=[-1], keepdims=1),
             node("Sub", ["h", "mu"], ["c"], name="center"),
             node("Mul", ["c", "gamma"], ["n"], name="scale"),
             node("MatMul", ["n", "w2"], ["o"], name="mm2"),
             node("Tanh", ["o"], ["y"], name="out")]
    graph = helper.make_graph(nodes, "norm", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, T, D])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, T, D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ampint")
    model = norm_block()
    path = folder / "norm.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.standard_normal((1, T, D)).astype(np.float32)} for _ in range(16)]
    return {"folder": folder, "model": model, "path": path, "feeds": feeds,
            "list": write_input_list(folder / "cal", feeds)}


@pytest.fixture(scope="module")
def variants(work):
    return QuantizedVariants(work["model"], samples=iter(work["feeds"]), progress=False,
                             per_channel=True, calibration="None", wide=True)


def _bits(model: onnx.ModelProto) -> dict[str, int]:
    """Quantized tensor (a QuantizeLinear's input or a DequantizeLinear's integer constant) ->
    the bits of its integer type."""
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            out[n.input[0]] = BITS[inits[n.input[2]].data_type]
        elif n.op_type == "DequantizeLinear" and n.input[0] in inits:
            out[n.input[0].rsplit("_quantized", 1)[0]] = BITS[inits[n.input[0]].data_type]
    return out


def test_the_graph_reaches_opset_21_before_calibration(variants):
    assert sorted(variants.groups) == ["mm1", "mm2"]
    assert variants.program.graph().opset == 21


def test_a16w8_quantizes_activations_at_16_bits_and_the_weight_at_8(variants):
    model, _ = variants.build({"mm1": A16W8, "mm2": A8W8})
    bits = _bits(model)
    assert bits["h"] == bits["n"] == 16                     # the group's activations
    assert bits["w1"] == bits["gamma"] == 8
    assert bits["o"] == bits["w2"] == 8                     # the other group stays at A8/W8


def test_a8w16_gives_the_groups_constants_16_bits(variants):
    model, _ = variants.build({"mm1": A8W16, "mm2": A8W8})
    bits = _bits(model)
    assert bits["w1"] == bits["gamma"] == 16                # the scale goes with the weight
    assert bits["h"] == bits["w2"] == 8


def test_a16w16_everywhere_is_a_16_bit_model(variants, work):
    ref = run_unoptimized(variants.float_model, work["feeds"])
    wide, _ = variants.build({g: A16W16 for g in variants.groups})
    narrow, _ = variants.build({g: A8W8 for g in variants.groups})
    assert sqnr_db(ref, run_unoptimized(wide, work["feeds"])) > sqnr_db(ref, run_unoptimized(narrow, work["feeds"])) + 30


def test_compile_reproduces_an_integer_choice(variants, work, tmp_path):
    """Old code: ``aicc compile`` refused the 16-bit encodings (raising opset 13 to 21 would
    change ReduceMean's meaning)."""
    model, program = variants.build({"mm1": A16W16, "mm2": A8W8})
    files, names = write_bridge(tmp_path / "bridge", [], program, variants.original)
    assert names == [] and [f.name for f in files] == ["encodings.json"]     # no fp16 node
    ref = run_unoptimized(work["path"], work["feeds"])
    amp_out = run_unoptimized(model, work["feeds"])
    results = {}
    for backend in ("cpu", "interpreter"):
        qpc = tmp_path / backend
        code = main(["compile", f"-m={work['path']}", f"-external-quantization={files[0]}",
                     f"-input-list-file={work['list']}",
                     "-quantization-schema-activations=asymmetric", "-enable-channelwise",
                     f"--backend={backend}", f"-aic-binary-dir={qpc}"])
        assert code == 0
        results[backend] = np.concatenate([aicc.load(qpc).run(f)["y"] for f in work["feeds"]])
        # the same encodings: the compiled model is AMP's up to float rounding order
        assert sqnr_db(amp_out, results[backend]) > 60
    assert sqnr_db(ref, results["cpu"]) == pytest.approx(sqnr_db(ref, amp_out), abs=0.1)


def test_a_move_that_saves_no_bits_is_not_taken():
    """With fp16 and A16/W16 (both 256 bits) the old search applied the free moves to fp16 of
    phase 1's order, putting groups in fp16 for nothing."""
    groups = ["a", "b", "c"]
    harm = {(g, c): h for g, c, h in [("a", FP16, 0.0), ("b", FP16, 0.0), ("c", FP16, 0.0),
                                       ("a", A8W8, 1.0), ("b", A8W8, 5.0), ("c", A8W8, 0.5)]}

    calls = []

    def metric(choice):
        calls.append(tuple(sorted(choice.items())))
        return 10.0 - sum(harm.get((g, c), 0.0) for g, c in choice.items())
    cands = parse_candidates([[[16, "float"], [16, "float"]], [[16, "int"], [16, "int"]],
                              [[8, "int"], [8, "int"]]], where="test", field="candidates")
    assert cands == [A16W16, FP16, A8W8]          # most precise first, integer before float
    res = run_amp(metric, metric, groups=groups, macs={g: 1 for g in groups},
                  candidates=cands, target=8.4, baseline=10.0)
    assert res.choice == {"a": A8W8, "b": A16W16, "c": A8W8}
    phase2 = calls[len(groups) * 2:]
    assert len(phase2) == len(set(phase2)) == len(res.front)    # one model scored once


LOADERS = '''
import numpy as np
import onnxruntime as ort

def labeled(model, inputs):
    x = np.load(inputs)
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return [(x, np.concatenate([s.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))]))]

def closeness(output, target):
    return 1.0 - float(np.linalg.norm(output - target) / np.linalg.norm(target))
'''


def test_the_seed_config_with_integer_candidates_round_trips(work, tmp_path, capsys):
    """``--apply_algorithms amp --config`` with AutoQuant's integer candidates: the choice is
    written as 16-bit encodings alone (no node-precision file), and the compile command AMP
    prints reproduces AMP's model."""
    (tmp_path / "loaders.py").write_text(LOADERS)
    np.save(tmp_path / "x.npy", np.concatenate([f["x"] for f in work["feeds"]]))
    cfg = tmp_path / "amp.yaml"
    cfg.write_text(f"""
datasets:
    lines:
        dataloader_callback: 'loaders.py:labeled'
        dataloader_kwargs: {{model: '{work['path']}', inputs: '{tmp_path / 'x.npy'}'}}
amp:
    dataset: lines
    candidates: [[[16, 'int'], [16, 'int']], [[16, 'int'], [8, 'int']], [[8, 'int'], [8, 'int']]]
    allowed_accuracy_drop: 0.01
    eval_callback_for_phase2: 'loaders.py:closeness'
""")
    out = tmp_path / "q.onnx"
    code = main(["quantize", "--input_model", str(work["path"]), "--input_list",
                 str(work["list"]), "--use_per_channel_quantization", "--output_model", str(out),
                 "--apply_algorithms", "amp", "--config", str(cfg)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    model = onnx.load(out)
    assert 16 in _bits(model).values() and 8 in _bits(model).values()      # mixed
    folder = tmp_path / "q_amp"
    assert not (folder / "node_precision.yaml").exists()
    command = stdout.splitlines()[-1].split("to compile this choice: ")[1].split()
    assert not [a for a in command if a.startswith("-node-precision-info")]
    qpc = tmp_path / "qpc"
    assert command[:3] == ["aicc", "compile", "-m=MODEL"]
    assert main(["compile", f"-m={work['path']}", *command[3:], "--backend=interpreter",
                 f"-aic-binary-dir={qpc}"]) == 0
    got = np.concatenate([aicc.load(qpc).run(f)["y"] for f in work["feeds"]])
    assert sqnr_db(run_unoptimized(out, work["feeds"]), got) > 60
