"""Raw/.npy tensors and input lists: BAD_INPUTS.md 23-29 are refused with file and line."""

from __future__ import annotations

import os

import numpy as np
import pytest

from aicc.data import parse_input_args, parse_input_list, read_tensor_file
from aicc.errors import DataError
from aicc.program import TensorDesc

DESC = TensorDesc("x", "float32", [2, 3])


def test_raw_roundtrip(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    a.tofile(tmp_path / "a.raw")
    np.testing.assert_array_equal(read_tensor_file(tmp_path / "a.raw", DESC), a)


def test_raw_size_not_multiple_of_dtype(tmp_path):
    (tmp_path / "a.raw").write_bytes(b"\0" * 23)
    with pytest.raises(DataError, match="has 23 bytes.*needs 24"):
        read_tensor_file(tmp_path / "a.raw", DESC)


def test_raw_wrong_element_count(tmp_path):
    np.zeros(12, np.float32).tofile(tmp_path / "a.raw")
    with pytest.raises(DataError, match="has 48 bytes; input 'x' \\(float32, \\[2, 3\\]\\) needs 24"):
        read_tensor_file(tmp_path / "a.raw", DESC)


def test_npy_wrong_dtype_is_not_reinterpreted(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 3), np.int8))
    with pytest.raises(DataError, match="holds int8, input 'x' is float32"):
        read_tensor_file(tmp_path / "a.npy", DESC)


def test_npy_wrong_shape(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(DataError, match="shape \\[3, 2\\]"):
        read_tensor_file(tmp_path / "a.npy", DESC)


def test_npy_object_arrays_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a plain .npy"):
        read_tensor_file(tmp_path / "a.npy", DESC)


def test_special_files_refused(tmp_path):
    with pytest.raises(DataError, match="not a regular file"):
        read_tensor_file(tmp_path, DESC)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DataError, match="not a regular file"):
        read_tensor_file(tmp_path / "fifo", DESC)
    with pytest.raises(DataError, match="not a regular file"):
        read_tensor_file("/dev/zero", DESC)
    with pytest.raises(DataError, match="not found"):
        read_tensor_file(tmp_path / "missing.raw", DESC)


def test_symbolic_shape_needs_npy(tmp_path):
    np.zeros(6, np.float32).tofile(tmp_path / "a.raw")
    with pytest.raises(DataError, match="symbolic shape"):
        read_tensor_file(tmp_path / "a.raw", TensorDesc("x", "float32", ["batch", 3]))


def _files(tmp_path, *names):
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        np.zeros(6, np.float32).tofile(tmp_path / n)


def test_input_list_formats(tmp_path):
    _files(tmp_path, "a.raw", "b.raw", "sub/c.raw", "d.raw")
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"#out_layer\r\n%out_tensor t2\r\na.raw b.raw  \r\n\r\n"
                    b"y:=sub/c.raw x:=d.raw\n")
    parsed = parse_input_list(lst, ["x", "y"])
    assert parsed.output_layers == ["out_layer"] and parsed.output_tensors == ["out_tensor", "t2"]
    assert parsed.samples[0] == {"x": tmp_path / "a.raw", "y": tmp_path / "b.raw"}
    assert parsed.samples[1] == {"x": tmp_path / "d.raw", "y": tmp_path / "sub" / "c.raw"}
    assert parsed.lines == [3, 5]


@pytest.mark.parametrize("content,match", [
    ("a.raw\n", "line 1: no file for input\\(s\\) y"),
    ("a.raw b.raw a.raw\n", "line 1: 3 files for 2 inputs"),
    ("\n\nz:=a.raw y:=b.raw\n", "line 3: no input named 'z'"),
    ("a.raw missing.raw\n", "line 1: data file 'missing.raw' not found"),
    ("x:=a.raw x:=b.raw\n", "given twice"),
    ("\n  \n", "no samples"),
])
def test_input_list_errors(tmp_path, content, match):
    _files(tmp_path, "a.raw", "b.raw")
    lst = tmp_path / "list.txt"
    lst.write_text(content)
    with pytest.raises(DataError, match=match):
        parse_input_list(lst, ["x", "y"])


def test_missing_input_list(tmp_path):
    with pytest.raises(DataError, match="not found"):
        parse_input_list(tmp_path / "nope.txt", ["x"])


def test_input_args(tmp_path):
    assert parse_input_args(["a", "y:=b"], ["x", "y"]) == {"x": tmp_path.__class__("a"),
                                                         "y": tmp_path.__class__("b")}
    with pytest.raises(DataError, match="no input named 'q'"):
        parse_input_args(["q:=a"], ["x"])
    with pytest.raises(DataError, match="no file for input"):
        parse_input_args([], ["x"])
