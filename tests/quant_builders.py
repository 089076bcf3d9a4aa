"""Models and data for the calibration / quantization tests (built with onnx.helper, seeded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits_mobilenet.onnx"
DIGITS_LIST = ROOT / "examples" / "data" / "digits_calib" / "input_list.txt"
DIGITS_TEST = ROOT / "examples" / "data" / "digits_test_images.npy"
DIGITS_LABELS = ROOT / "examples" / "data" / "digits_test_labels.npy"


def _model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model


def small_cnn(seed: int = 0, batch: int | str = 1, opset: int = 17) -> onnx.ModelProto:
    """x[b,3,8,8] -> Conv -> Relu -> MaxPool -> Conv -> Relu -> Add(residual) -> GAP -> Flatten
    -> Gemm(transB=1) -> y[b,10]."""
    rng = np.random.default_rng(seed)
    f = lambda *s: (rng.standard_normal(s) * 0.5).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(f(8, 3, 3, 3), "w1"), numpy_helper.from_array(f(8), "b1"),
             numpy_helper.from_array(f(8, 8, 3, 3) * 0.5, "w2"),
             numpy_helper.from_array(f(8), "b2"),
             numpy_helper.from_array(f(10, 8), "wfc"), numpy_helper.from_array(f(10), "bfc")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["mp"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Conv", ["mp", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Add", ["r2", "mp"], ["res"], name="res"),
        helper.make_node("GlobalAveragePool", ["res"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "wfc", "bfc"], ["y"], name="fc", transB=1),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                        [batch, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], inits,
                  opset)


def branchy_model(seed: int = 0) -> onnx.ModelProto:
    """MatMul with a shared weight, Add(x, x), Reshape/Transpose, and a Concat whose inputs
    feed nothing else: x[2,4] -> ... -> y[2,12]."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((4, 6)) * 0.5).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "bias"),
             numpy_helper.from_array(np.array([2, 3, 2], dtype=np.int64), "shape3"),
             numpy_helper.from_array(np.array([2, 6], dtype=np.int64), "shape2")]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m1"], name="mm1"),
        helper.make_node("Add", ["m1", "bias"], ["a1"], name="addb"),
        helper.make_node("MatMul", ["x", "w"], ["m2"], name="mm2"),      # shares w
        helper.make_node("Add", ["m2", "m2"], ["twice"], name="twice"),  # same tensor twice
        helper.make_node("Reshape", ["a1", "shape3"], ["r3"], name="reshape"),
        helper.make_node("Transpose", ["r3"], ["t3"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("Reshape", ["t3", "shape2"], ["back"], name="reshape_back"),
        helper.make_node("Relu", ["twice"], ["rl"], name="relu"),
        helper.make_node("Concat", ["back", "rl"], ["y"], name="concat", axis=1),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 12])], inits)


def samples(model: onnx.ModelProto, n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """``n`` seeded normal feeds for every input of ``model`` (symbolic dims take 1)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        feed = {}
        for vi in model.graph.input:
            dims = [d.dim_value if d.HasField("dim_value") else 1
                    for d in vi.type.tensor_type.shape.dim]
            feed[vi.name] = rng.standard_normal(dims).astype(np.float32)
        out.append(feed)
    return out


def write_input_list(folder: Path, feeds: list[dict[str, np.ndarray]], *, named: bool = False,
                     npy: bool = False) -> Path:
    """Raw (or .npy) files of ``feeds`` plus an input list naming them (relative paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, feed in enumerate(feeds):
        parts = []
        for name, arr in feed.items():
            file = f"{name}_{i}.{'npy' if npy else 'raw'}"
            if npy:
                np.save(folder / file, arr)
            else:
                arr.astype(arr.dtype.newbyteorder("<")).tofile(folder / file)
            parts.append(f"{name}:={file}" if named else file)
        lines.append(" ".join(parts))
    path = folder / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def digits_calibration() -> list[dict[str, np.ndarray]]:
    folder = DIGITS_LIST.parent
    return [{"image": np.fromfile(folder / f"sample_{i:02d}.raw", "<f4").reshape(1, 1, 8, 8)}
            for i in range(32)]


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - got) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def run_unoptimized(model, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The first output of ``model`` (a ModelProto or a path) on each feed dict, concatenated,
    from onnxruntime with its graph optimizations off (QDQ as written)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString() if isinstance(model, onnx.ModelProto)
                             else str(model), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, f)[0] for f in feeds])
