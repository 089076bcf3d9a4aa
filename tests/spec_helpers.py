"""Helpers of the network-specialization tests: the example builders and small file writers."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
from pathlib import Path
from collections.abc import Iterator
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load_example(name: str) -> Any:
    """Import ``examples/<name>.py`` (the examples are scripts, not a package)."""
    module_name = f"aicc_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def script_module(path: Path, name: str) -> Iterator[Any]:
    """Import the script at ``path`` as module ``name`` (benchmarks are scripts, not a package);
    registered in ``sys.modules`` while in use (dataclasses look their module up by name).
    ``sys.path`` is restored after the import: a script that puts its own folder first (to import
    its neighbours) must not make ``benchmarks/interpreter.py`` shadow ``tests/interpreter``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    saved = list(sys.path)
    try:
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path[:] = saved
        yield module
    finally:
        sys.modules.pop(name, None)


def write_json(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=1))
    return path


SEED_CONFIG = {"specializations": [
    {"batch": "1", "height": "56", "width": "56"},
    {"batch": "1", "height": "112", "width": "112"},
    {"batch": "2", "height": "56", "width": "56"},
]}
SEED_SHAPES = [(1, 3, 56, 56), (1, 3, 112, 112), (2, 3, 56, 56)]
SEED_NAMES = ["spec0-batch1-height56-width56", "spec1-batch1-height112-width112",
              "spec2-batch2-height56-width56"]


def write_two_size_conv(folder: Path, sizes: tuple[int, ...] = (4, 8)) -> tuple[Path, Path]:
    """``dyn.onnx`` (x[1,3,h,h] -> Conv 3x3 -> Relu -> y[1,4,h,h]) and ``spec.json`` with one
    specialization per size in ``sizes``, written into ``folder``; returns both paths."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "h"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "h", "h"])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "dyn.onnx"
    onnx.save(model, path)
    config = write_json(folder / "spec.json",
                        {"specializations": [{"h": str(s)} for s in sizes]})
    return path, config
