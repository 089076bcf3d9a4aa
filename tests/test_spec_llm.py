"""LLM specializations: the tiny decoder-only example compiled with a prefill and a decode
specialization and -retained-state generates the same greedy tokens as onnxruntime on the original
model, with the KV cache kept inside the Session between calls."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from aicc.pass_order import Requested
from onnx import TensorProto, helper

import aicc
from aicc.cli import main
from aicc.container import read_manifest
from aicc.errors import ConfigError, DataError
from spec_helpers import load_example, write_json

llm = load_example("tiny_llm")
PROMPT = np.array([3, 14, 15, 9, 26, 5, 35, 8], np.int64)


@pytest.fixture(scope="module")
def model():
    return llm.build()


@pytest.fixture(scope="module")
def qpc(tmp_path_factory, model):
    tmp = tmp_path_factory.mktemp("llm")
    config = write_json(tmp / "spec.json", llm.SPECIALIZATIONS)
    return aicc.compile(model, output=tmp / "qpc", specializations=config, retained_state=True)


def test_greedy_tokens_match_onnxruntime_for_32_steps(qpc, model):
    session = aicc.load(qpc)
    tokens = aicc.generate(session, PROMPT, 32)
    reference = llm.reference_generate(model, PROMPT, 32, ctx_len=64)
    assert tokens.tolist() == reference.tolist()
    assert len(set(tokens.tolist())) > 5  # a real sequence, not one token repeated
    runs = {name: stats["runs"] for name, stats in session.stats().items()}
    assert runs == {"prefill": 1, "decode": 31}
    assert session.last_specialization == "decode"


def test_the_example_cache_agrees_with_full_recomputation(model):
    """The model's KV-cache logic itself: decoding step by step equals recomputing the whole
    sequence (fresh cache) with onnxruntime, token by token."""
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString())
    tokens = llm.reference_generate(model, PROMPT, 12, ctx_len=32).tolist()
    seq = PROMPT.tolist() + tokens
    zeros = {n: np.zeros((1, llm.HEADS, 32, llm.HEAD_DIM), np.float32) for n in llm.kv_names()}
    logits = sess.run(["logits"], {"input_ids": np.array([seq[:-1]], np.int64),
                                   "position_ids": np.arange(len(seq) - 1)[None], **zeros})[0]
    assert np.argmax(logits[0, len(PROMPT) - 1:], axis=-1).tolist() == tokens


def test_chunked_and_padded_prefill(qpc, model):
    """11 prompt tokens with an 8-token prefill: two chunks, the second padded (position -1)."""
    prompt = np.array([5, 1, 60, 33, 2, 9, 17, 40, 22, 8, 31], np.int64)
    session = aicc.load(qpc)
    tokens = aicc.generate(session, prompt, 20)
    assert tokens.tolist() == llm.reference_generate(model, prompt, 20, ctx_len=64).tolist()
    assert session.stats()["prefill"]["runs"] == 2


def test_retained_state_stays_in_the_session(qpc):
    manifest = read_manifest(qpc)
    assert manifest["retained_state"] == [{"input": n, "output": n + "_RetainedState"}
                                          for n in llm.kv_names()]
    assert manifest["program"]["compile_options"]["retained_state"] is True
    session = aicc.load(qpc)
    assert [d.name for d in session.inputs] == ["input_ids", "position_ids"]
    assert [d.name for d in session.outputs] == ["logits"]
    assert not session.state
    out = session.run({"input_ids": PROMPT[None], "position_ids": np.arange(8)[None]})
    assert list(out) == ["logits"] and session.last_specialization == "prefill"
    assert sorted(session.state) == sorted(llm.kv_names())
    key = session.state["past_key.0"]
    assert key.shape == (1, llm.HEADS, 64, llm.HEAD_DIM)
    assert np.abs(key[:, :, :8]).sum() > 0 and not key[:, :, 8:].any()
    step = session.run({"input_ids": np.array([[7]]), "position_ids": np.array([[8]])})
    assert session.last_specialization == "decode" and step["logits"].shape == (1, 1, llm.VOCAB)
    assert session.state["past_key.0"][:, :, 8].any()
    with pytest.raises(TypeError):
        session.state["past_key.0"] = key  # a read-only view
    session.reset_state()
    assert not session.state


def test_explicit_state_overrides_the_retained_one(qpc, model):
    session = aicc.load(qpc)
    session.run({"input_ids": PROMPT[None], "position_ids": np.arange(8)[None]})
    zeros = {n: np.zeros((1, llm.HEADS, 64, llm.HEAD_DIM), np.float32) for n in llm.kv_names()}
    got = session.run({"input_ids": PROMPT[None], "position_ids": np.arange(8)[None], **zeros})
    import onnxruntime as ort
    ref = ort.InferenceSession(model.SerializeToString()).run(
        ["logits"], {"input_ids": PROMPT[None], "position_ids": np.arange(8)[None], **zeros})[0]
    np.testing.assert_allclose(got["logits"], ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(DataError, match="input 'past_key.0' is float64"):
        session.run({"input_ids": PROMPT[None], "position_ids": np.arange(8)[None],
                     "past_key.0": np.zeros((1, 2, 64, 16))})


def test_without_retained_state_the_caller_carries_the_cache(tmp_path, model):
    config = write_json(tmp_path / "spec.json", llm.SPECIALIZATIONS)
    qpc = aicc.compile(model, output=tmp_path / "q", specializations=config)
    assert read_manifest(qpc)["retained_state"] == []
    session = aicc.load(qpc)
    with pytest.raises(DataError, match="missing input\\(s\\) past_key.0"):
        session.run({"input_ids": PROMPT[None], "position_ids": np.arange(8)[None]})
    tokens = aicc.generate(session, PROMPT, 16)
    assert tokens.tolist() == llm.reference_generate(model, PROMPT, 16, ctx_len=64).tolist()


def test_state_of_another_cache_size_is_refused(tmp_path, model):
    config = write_json(tmp_path / "spec.json", {"specializations": [
        {"name": "prefill", "symbols": {"batch_size": 1, "seq_len": 8, "ctx_len": 32}},
        {"name": "decode32", "symbols": {"batch_size": 1, "seq_len": 1, "ctx_len": 32}},
        {"name": "decode64", "symbols": {"batch_size": 1, "seq_len": 1, "ctx_len": 64}}]})
    session = aicc.load(aicc.compile(model, output=tmp_path / "q", specializations=config,
                                     retained_state=True))
    with pytest.raises(DataError, match="fit specializations decode32, decode64 whose "
                                        "retained-state shapes differ"):
        session.run({"input_ids": np.array([[1]]), "position_ids": np.array([[0]])})
    session.run({"input_ids": PROMPT[None], "position_ids": np.arange(8)[None]})
    step = {"input_ids": np.array([[1]]), "position_ids": np.array([[8]])}
    session.run(step)
    assert session.last_specialization == "decode32"  # the state's shape decides
    zeros = {n: np.zeros((1, llm.HEADS, 64, llm.HEAD_DIM), np.float32) for n in llm.kv_names()}
    session.run({**step, **zeros})
    assert session.last_specialization == "decode64"


def test_cli_compile_and_run_with_retained_state(tmp_path, model, capsys):
    path = tmp_path / "tiny_llm.onnx"
    onnx.save_model(model, path)
    config = write_json(tmp_path / "spec.json", llm.SPECIALIZATIONS)
    qpc = tmp_path / "qpc"
    assert main(["compile", f"-m={path}", f"-aic-binary-dir={qpc}", "-retained-state",
                 f"-network-specialization-config={config}", "-compile-only"]) == 0
    PROMPT[None].tofile(tmp_path / "ids.raw")
    np.arange(8, dtype=np.int64)[None].tofile(tmp_path / "pos.raw")
    np.array([[7]], np.int64).tofile(tmp_path / "ids1.raw")
    np.array([[8]], np.int64).tofile(tmp_path / "pos1.raw")

    def buf(name, file, dims):
        return {"path": file, "io-direction": "in", "map-to": name, "data-type": "int64",
                "dims": dims}
    inputs = write_json(tmp_path / "inputs.json", {"IO-files": [
        [buf("input_ids", "ids.raw", [1, 8]), buf("position_ids", "pos.raw", [1, 8])],
        [buf("input_ids", "ids1.raw", [1, 1]), buf("position_ids", "pos1.raw", [1, 1])]]})
    out = tmp_path / "out"
    assert main(["run", "-t", str(qpc), f"-json-input-file={inputs}",
                 "--write-output-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "inference 0:" in text and "(specialization 'prefill')" in text
    assert "inference 1:" in text and "(specialization 'decode')" in text
    assert sorted(p.name for p in out.iterdir()) == ["logits-inf-0.raw", "logits-inf-1.raw"]
    session = aicc.load(qpc)  # the same two steps through the API
    session.run({"input_ids": PROMPT[None], "position_ids": np.arange(8)[None]})
    ref = session.run({"input_ids": np.array([[7]]), "position_ids": np.array([[8]])})["logits"]
    np.testing.assert_array_equal(np.fromfile(out / "logits-inf-1.raw", np.float32)
                                  .reshape(1, 1, -1), ref)


def _tiny(outputs, inputs=("x",), out_shape=(2,), out_type=TensorProto.FLOAT):
    nodes = [helper.make_node("Identity", [inputs[0]], [o], name=f"id{i}")
             for i, o in enumerate(outputs)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(i, TensorProto.FLOAT, [2]) for i in inputs],
        [helper.make_tensor_value_info(o, out_type, list(out_shape)) for o in outputs])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("model_, message", [
    (_tiny(["y"]), "-retained-state: no output is named '*_RetainedState' (outputs: y)"),
    (_tiny(["cache_RetainedState"]), "output 'cache_RetainedState' has no input 'cache' to "
                                     "feed back"),
])
def test_retained_state_errors(tmp_path, model_, message):
    with pytest.raises(ConfigError) as info:
        aicc.compile(model_, output=tmp_path / "q", retained_state=True)
    assert message in str(info.value)
    assert not (tmp_path / "q").exists()


def test_retained_state_shape_must_match(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Concat", ["x", "x"], ["x_RetainedState"], name="c", axis=0)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("x_RetainedState", TensorProto.FLOAT, [4])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    with pytest.raises(ConfigError, match="is float32 \\[4\\] but input 'x' is float32 \\[2\\]"):
        aicc.compile(m, output=tmp_path / "q", retained_state=True)


def test_generate_refuses_what_does_not_fit(qpc, tmp_path, model):
    session = aicc.load(qpc)
    with pytest.raises(DataError, match="60 prompt tokens \\+ 10 new ones do not fit ctx_len 64"):
        aicc.generate(session, np.arange(60) % 64, 10)
    with pytest.raises(DataError, match="no specialization takes input_ids with batch 2"):
        aicc.generate(session, np.zeros((2, 4), np.int64), 3)
    with pytest.raises(DataError, match="non-empty 1-D or 2-D array of token ids"):
        aicc.generate(session, np.array([1.5, 2.0]), 3)
    with pytest.raises(DataError, match="max_new_tokens=0"):
        aicc.generate(session, PROMPT, 0)
    config = write_json(tmp_path / "p.json", {"specializations": [
        {"name": "prefill", "symbols": {"batch_size": 1, "seq_len": 8, "ctx_len": 64}}]})
    only_prefill = aicc.load(aicc.compile(model, output=tmp_path / "p", specializations=config,
                                          retained_state=True))
    with pytest.raises(DataError, match="no decode specialization"):
        aicc.generate(only_prefill, PROMPT, 3)


def test_example_script_runs(capsys):
    assert llm.main() == 0
    assert "same greedy tokens" in capsys.readouterr().out


def _teacher_forced_logits(run, prompt, tokens):
    """Last-position logits of the prefill and of each decode step fed the reference tokens."""
    steps = [(prompt[None], np.arange(len(prompt))[None])]
    steps += [(np.array([[t]]), np.array([[len(prompt) + i]])) for i, t in enumerate(tokens[:-1])]
    return np.array([run(ids, pos)[0, -1] for ids, pos in steps])


@pytest.mark.parametrize("conversions", ["host", "device"])
@pytest.mark.parametrize("precision, tolerance", [("float16", 2e-3), ("mxint8", 5e-2)])
def test_compressed_kv_cache_with_custom_io(tmp_path, model, registries, precision, tolerance,
                                           conversions):
    """The KV custom I/O file of the vendor's LLM flow: the cache crosses the boundary (and is
    retained) in float16 or mxint8, converted by the Session (host) or in the graph (device).
    Tolerance, on teacher-forced logits over 32 steps: float16 2e-3 (observed 4.6e-4), mxint8
    5e-2 (observed 1.9e-2); float16 keeps every greedy token."""
    if "custom-io" not in registries.passes:
        pytest.skip("custom I/O (float16 / mxint8 KV cache) has not landed yet")
    kv = llm.kv_names()
    custom = tmp_path / "kv_custom_io.yaml"
    custom.write_text("".join(f"- IOName: {n}\n  Precision: {precision}\n"
                              for n in kv + [k + "_RetainedState" for k in kv]))
    config = write_json(tmp_path / "spec.json", llm.SPECIALIZATIONS)
    from aicc.compiler import CompileRequest, compile_model
    qpc, _, _ = compile_model(CompileRequest(
        model=model, output=tmp_path / "q", retained_state=True, passes=[
            Requested("specialize", {"config": str(config)}),
            Requested("custom-io", {"config": str(custom), "conversions": conversions})]),
        registries)
    session = aicc.load(qpc)
    assert [d.name for d in session.inputs] == ["input_ids", "position_ids"]
    kinds = {np.dtype(d.dtype) for d in session.specs[0].inputs if d.name in kv}
    assert kinds == {np.dtype("float16" if precision == "float16" else "uint8")}
    tokens = aicc.generate(session, PROMPT, 32)
    assert {v.dtype for v in session.state.values()} == kinds
    reference = llm.reference_generate(model, PROMPT, 32, ctx_len=64)
    if precision == "float16":
        assert tokens.tolist() == reference.tolist()
    import onnxruntime as ort
    ort_sess = ort.InferenceSession(model.SerializeToString())
    cache = {n: np.zeros((1, llm.HEADS, 64, llm.HEAD_DIM), np.float32) for n in kv}

    def ref_step(ids, pos):
        out = ort_sess.run(None, {"input_ids": ids, "position_ids": pos, **cache})
        cache.update(zip(kv, out[1:]))
        return out[0]

    session.reset_state()
    got = _teacher_forced_logits(lambda i, p: session.run({"input_ids": i, "position_ids": p})
                                 ["logits"], PROMPT, reference.tolist())
    want = _teacher_forced_logits(ref_step, PROMPT, reference.tolist())
    assert np.abs(got - want).max() <= tolerance


def test_example_specializations_file_matches_the_module(tmp_path):
    path = write_json(tmp_path / "s.json", json.dumps(llm.SPECIALIZATIONS))
    from aicc.specconfig import parse_specialization_config
    entries = parse_specialization_config(path)
    assert [(e.name, e.symbols["seq_len"]) for e in entries] == [("prefill", 8), ("decode", 1)]
