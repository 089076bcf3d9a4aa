"""mxint8 custom I/O (KV caches): the byte layout, the round-trip error bound, and graph decode /
encode equal to the numpy (host) conversion bit for bit on onnxruntime and the interpreter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicc.customio import HostConversions, MX_BLOCK, mx_decode, mx_encode
from aicc.testing import run_model, run_pass
from precision_builders import LLM_YAML, kv_model


def test_byte_layout_of_one_block():
    x = np.zeros(32, np.float32)
    x[:4] = [1.5, -0.75, 3.0, 0.02]          # max |x| = 3.0 -> floor(log2 3) = 1 -> E = 128
    enc = mx_encode(x)
    assert enc.shape == (1, 33) and enc.dtype == np.uint8
    assert enc[0, 0] == 128                   # shared exponent byte (E8M0, bias 127)
    m = enc[0, 1:].view(np.int8)              # mantissas have 6 fraction bits: step 2^(1-6)
    assert list(m[:4]) == [48, -24, 96, 1]    # 1.5/step, -0.75/step, 3/step, round(0.64)
    assert enc[0, 2] == 256 - 24              # two's complement byte
    np.testing.assert_array_equal(mx_decode(enc, 32)[:3], [1.5, -0.75, 3.0])


def test_zero_blocks_padding_and_saturation():
    x = np.zeros((2, 40), np.float32)         # 40 values: 2 blocks, the second padded
    x[1, 39] = 1.99999                        # rounds to 128 at E = 127: saturates to 127
    enc = mx_encode(x)
    assert enc.shape == (2, 2, 33)
    assert enc[0, :, 0].tolist() == [0, 0]    # all-zero blocks use exponent byte 0
    dec = mx_decode(enc, 40)
    assert dec.shape == (2, 40) and dec[1, 39] == pytest.approx(127 / 64)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.floats(-40, 40), st.integers(0, 2 ** 31))
def test_round_trip_error_is_within_half_a_step(length, log_scale, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((3, length)) * np.float32(2.0 ** log_scale)).astype(np.float32)
    dec = mx_decode(mx_encode(x), length)
    nb = -(-length // MX_BLOCK)
    pad = np.zeros((3, nb * MX_BLOCK - length), np.float32)
    xb = np.concatenate([x, pad], 1).reshape(3, nb, MX_BLOCK)
    db = np.concatenate([dec, pad], 1).reshape(3, nb, MX_BLOCK)
    amax = np.abs(xb).max(-1, keepdims=True)
    # half a step is amax/128 at most; saturation at the top of a block costs one step, amax/64
    assert np.all(np.abs(db - xb) <= amax / 64 + 1e-45)
    # and re-encoding what was decoded is stable
    np.testing.assert_array_equal(mx_encode(dec), mx_encode(x))


@pytest.mark.parametrize("length,opset", [(64, 17), (40, 18), (40, 13), (5, 11)])
@pytest.mark.parametrize("backend", ["cpu", "interpreter"])
def test_graph_conversions_equal_the_host_ones(tmp_path, length, opset, backend):
    (tmp_path / "kv.yaml").write_text(LLM_YAML)
    model = kv_model(length, opset)
    program = run_pass(model, "custom-io", {"config": str(tmp_path / "kv.yaml"),
                                            "conversions": "device"})
    graph = program.graphs["default"]
    nb = -(-length // MX_BLOCK)
    assert [(t.name, str(t.dtype), t.shape) for t in graph.inputs] == \
        [("past_key.0", "uint8", ["batch", 2, 8, nb, 33])]
    rng = np.random.default_rng(length)
    x = (rng.standard_normal((3, 2, 8, length))
         * np.exp(rng.uniform(-30, 30, (3, 2, 8, 1)))).astype(np.float32)
    x[0, 0, 0] = 0
    feeds = {"past_key.0": mx_encode(x)}
    host = HostConversions(program.custom_io)
    host.host = host.records            # run the same steps on the host for comparison
    got = run_model(program.to_model(), feeds, backend=backend)
    ref = host.convert(run_model(model, host.convert(feeds), backend=backend))
    np.testing.assert_array_equal(got["past_key.0_RetainedState"],
                                  ref["past_key.0_RetainedState"])
    # the model halves the cache: decoding the output gives half the decoded input
    np.testing.assert_array_equal(mx_decode(got["past_key.0_RetainedState"], length),
                                  mx_decode(feeds["past_key.0"], length) * np.float32(0.5))


def test_llm_example_repeats_merge(tmp_path, caplog):
    (tmp_path / "kv.yaml").write_text(LLM_YAML)
    program = run_pass(kv_model(), "custom-io", {"config": str(tmp_path / "kv.yaml")})
    assert [(r["name"], r["precision"], r["direction"]) for r in program.custom_io] == [
        ("past_key.0", "mxint8", "input"), ("past_key.0_RetainedState", "mxint8", "output")]
    assert program.graphs["default"].inputs[0].dtype == np.float32   # host: graph unchanged


def test_mxint8_with_nhwc_layout(tmp_path):
    (tmp_path / "kv.yaml").write_text("- IOName: past_key.0\n  Precision: mxint8\n"
                                      "  Layout: NHWC\n")
    model = kv_model(16, 17, batch=1)
    program = run_pass(model, "custom-io", {"config": str(tmp_path / "kv.yaml"),
                                            "conversions": "device"})
    # NHWC of [1, 2, 8, 16] is [1, 8, 16, 2]; its last axis (2) is cut into one block
    assert program.graphs["default"].inputs[0].shape == [1, 8, 16, 1, 33]
    x = np.random.default_rng(0).standard_normal((1, 8, 16, 2)).astype(np.float32)
    out = run_model(program.to_model(), {"past_key.0": mx_encode(x)})
    np.testing.assert_array_equal(out["past_key.0_RetainedState"],
                                  mx_decode(mx_encode(x), 2).transpose(0, 3, 1, 2) * 0.5)


def test_retained_kv_cache_in_mxint8(tmp_path):
    """The seed's LLM flow: the KV cache stays mxint8 across calls (-retained-state)."""
    from aicc.cli import main
    import aicc

    (tmp_path / "kv.onnx").write_bytes(kv_model(64, 17, batch=1).SerializeToString())
    (tmp_path / "kv.yaml").write_text(LLM_YAML)
    x = np.random.default_rng(0).standard_normal((1, 2, 8, 64)).astype(np.float32)
    states = []
    for extra in ([], ["-aic-preproc"]):
        qpc = tmp_path / f"kv{len(extra)}.qpc"
        assert main(["compile", f"-m={tmp_path / 'kv.onnx'}",
                     f"-custom-IO-list-file={tmp_path / 'kv.yaml'}", "-retained-state",
                     f"-aic-binary-dir={qpc}", "-compile-only"] + extra) == 0
        session = aicc.load(qpc)
        session.run({"past_key.0": mx_encode(x)})
        state = session.state["past_key.0"]
        assert (state.dtype, state.shape) == (np.uint8, (1, 2, 8, 2, 33))
        session.run({})                       # fed back as it is: halved once more
        states.append(session.state["past_key.0"])
        np.testing.assert_array_equal(mx_decode(states[-1], 64),
                                      mx_decode(mx_encode(x), 64) * np.float32(0.25))
    np.testing.assert_array_equal(states[0], states[1])
