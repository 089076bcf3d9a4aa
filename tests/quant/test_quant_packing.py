"""Packed 4-bit storage (QNN --pack_4_bit_weights layout)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aicc.errors import DataError
from aicc.quant import pack_4bit, packed_size, unpack_4bit


def test_doc_example_10_4():
    # Unpacked = (0000 1010, 0000 0100) -> Packed = (0100 1010)
    packed = pack_4bit(np.array([10, 4], dtype=np.uint8), signed=False)
    assert packed.tolist() == [0b0100_1010]
    assert unpack_4bit(packed, 2, signed=False).tolist() == [10, 4]


def test_doc_per_channel_27_values_take_14_bytes():
    # (3, 3, 3, 32): 32 output channels, 27 values each -> ceil(27 / 2) = 14 bytes per channel
    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, size=(3, 3, 3, 32)).astype(np.int8)
    packed = pack_4bit(q, signed=True, axis=3)
    assert packed.shape == (32, 14) and packed.dtype == np.uint8
    assert packed_size(q.shape, axis=3) == 32 * 14
    assert packed_size(q.shape) == (27 * 32) // 2
    # channel 5 holds exactly q[..., 5] in order, low nibble first, padded with a zero nibble
    ch = q[..., 5].ravel()
    assert packed[5, 0] == ((int(ch[0]) & 0xF) | ((int(ch[1]) & 0xF) << 4))
    assert packed[5, 13] >> 4 == 0
    back = unpack_4bit(packed, 27, signed=True, shape=q.shape, axis=3)
    np.testing.assert_array_equal(back, q)


def test_signed_nibbles_sign_extend():
    q = np.array([-8, 7, -1, 0, 3], dtype=np.int8)
    packed = pack_4bit(q, signed=True)
    assert packed.tolist() == [0x78, 0x0F, 0x03]
    np.testing.assert_array_equal(unpack_4bit(packed, 5, signed=True), q)


def test_out_of_range_values_refused():
    with pytest.raises(DataError, match=r"outside \[-8, 7\]"):
        pack_4bit(np.array([8], dtype=np.int8), signed=True)
    with pytest.raises(DataError, match=r"outside \[0, 15\]"):
        pack_4bit(np.array([-1], dtype=np.int8), signed=False)
    with pytest.raises(DataError, match="integer values"):
        pack_4bit(np.array([1.0]), signed=False)
    with pytest.raises(DataError, match="expected 2"):
        unpack_4bit(np.zeros(3, dtype=np.uint8), 4, signed=False)


@settings(max_examples=150, deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=7),
       signed=st.booleans(), per_channel=st.booleans(), data=st.data())
def test_property_pack_unpack_round_trip(shape, signed, per_channel, data):
    lo, hi = (-8, 7) if signed else (0, 15)
    q = data.draw(hnp.arrays(np.int8 if signed else np.uint8, shape, elements=st.integers(lo, hi)))
    if per_channel:
        axis = data.draw(st.integers(-len(shape), len(shape) - 1))
        packed = pack_4bit(q, signed=signed, axis=axis)
        per = q.size // shape[axis]
        assert packed.shape == (shape[axis], (per + 1) // 2)
        assert packed.size == packed_size(shape, axis)
        back = unpack_4bit(packed, per, signed=signed, shape=shape, axis=axis)
    else:
        packed = pack_4bit(q, signed=signed)
        assert packed.size == (q.size + 1) // 2 == packed_size(shape)
        back = unpack_4bit(packed, q.size, signed=signed, shape=shape)
    assert back.dtype == (np.int8 if signed else np.uint8)
    np.testing.assert_array_equal(back, q)
