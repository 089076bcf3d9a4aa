"""Train the bundled example model ``digits_mobilenet.onnx`` and its data.

This script produces every file under ``examples/`` that the tests and demos
use as a small, real, *trained* network:

* ``examples/digits_mobilenet.onnx`` - a tiny MobileNet-like classifier for
  scikit-learn's bundled 8x8 handwritten digits (``sklearn.datasets.load_digits``,
  1797 images, no download).  It keeps its BatchNormalization nodes (they are
  *not* folded into the convolutions), so compiler passes have something to fuse.
* ``examples/data/digits_test_images.npy`` / ``digits_test_labels.npy`` - the
  360-image held-out test split (images already normalised).
* ``examples/data/digits_calib/`` - 32 raw float32 calibration samples drawn
  from the *train* split plus a QNN-style ``input_list.txt``.

Architecture (opset 17, IR version 8; input ``image`` float32 [batch,1,8,8],
output ``logits`` float32 [batch,10])::

    conv0  Conv 3x3, 1->16, pad 1      -> bn0 -> relu0 (Clip 0..6)
    dw1    Conv 3x3 depthwise (g=16)   -> bn1 -> relu1
    pw1    Conv 1x1, 16->32            -> bn2 -> relu2
    dw2    Conv 3x3 depthwise (g=32), stride 2 -> bn3 -> relu3
    pw2    Conv 1x1, 32->32            -> bn4 -> relu4
    gap    GlobalAveragePool -> flatten (Flatten axis=1)
    fc     Gemm 32->10 (transB=1)      -> logits

The ONNX graph is built node by node with ``onnx.helper`` from the trained
parameters (``torch.onnx.export`` is deliberately not used: it folds
BatchNorm and pulls in extra dependencies), so its structure and names are
exactly what is written below.

Input normalisation (the model expects the *normalised* input)::

    x = (pixels / 16 - INPUT_MEAN) / INPUT_STD      # pixels are 0..16

Everything is seeded and single-threaded, so re-running the script reproduces
the same files.  It trains in a few seconds on two CPU cores.

Retrain (torch is only needed here, never by the test suite)::

    python3 -m venv /tmp/trainvenv
    /tmp/trainvenv/bin/pip install torch==2.13.0 scikit-learn onnx==1.23.2 \
        onnxruntime==1.31.1 numpy
    /tmp/trainvenv/bin/python examples/train_digits.py
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

# --------------------------------------------------------------------------
# Fixed settings
# --------------------------------------------------------------------------
SEED = 0
TEST_SIZE = 360  # 1797 - 360 = 1437 training images
INPUT_MEAN = 0.3053  # mean of load_digits().images / 16, rounded
INPUT_STD = 0.3760  # std of load_digits().images / 16, rounded
EPOCHS = 40
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4
BN_EPS = 1e-5
NUM_CALIB = 32
OPSET = 17
IR_VERSION = 8
ACCURACY_TARGET = 0.95

EXAMPLES_DIR = Path(__file__).resolve().parent
DATA_DIR = EXAMPLES_DIR / "data"
MODEL_PATH = EXAMPLES_DIR / "digits_mobilenet.onnx"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------
def normalise(pixels: np.ndarray) -> np.ndarray:
    """Map raw digit pixels (0..16) to the model's input scale, as float32 NCHW."""
    x = (pixels.astype(np.float64) / 16.0 - INPUT_MEAN) / INPUT_STD
    return x.reshape(-1, 1, 8, 8).astype(np.float32)


def load_split():
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images,
        digits.target,
        test_size=TEST_SIZE,
        random_state=SEED,
        stratify=digits.target,
    )
    return (
        normalise(x_train),
        y_train.astype(np.int64),
        normalise(x_test),
        y_test.astype(np.int64),
    )


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------
def conv_bn_relu6(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=True),
        nn.BatchNorm2d(cout, eps=BN_EPS),
        nn.ReLU6(),
    )


class DigitsMobileNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # (onnx name prefix of the conv, its BN and its Clip) -> block
        self.blocks = nn.ModuleList(
            [
                conv_bn_relu6(1, 16, 3),  # conv0 / bn0 / relu0
                conv_bn_relu6(16, 16, 3, groups=16),  # dw1 / bn1 / relu1
                conv_bn_relu6(16, 32, 1),  # pw1 / bn2 / relu2
                conv_bn_relu6(32, 32, 3, stride=2, groups=32),  # dw2 / bn3 / relu3
                conv_bn_relu6(32, 32, 1),  # pw2 / bn4 / relu4
            ]
        )
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        x = x.mean(dim=(2, 3))  # GlobalAveragePool + Flatten
        return self.fc(x)


CONV_NAMES = ["conv0", "dw1", "pw1", "dw2", "pw2"]


def train(model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    model.train()  # BN uses batch statistics and updates its running stats
    for epoch in range(EPOCHS):
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), BATCH_SIZE):
            idx = perm[i : i + BATCH_SIZE]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if epoch % 10 == 9 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1:3d}  train loss {total / len(xt):.4f}")
    model.eval()


# --------------------------------------------------------------------------
# ONNX export by hand
# --------------------------------------------------------------------------
def build_onnx(model: DigitsMobileNet) -> onnx.ModelProto:
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def init(name: str, value: torch.Tensor | np.ndarray) -> str:
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        # np.array (not np.ascontiguousarray, which turns 0-d scalars into shape [1])
        inits.append(numpy_helper.from_array(np.array(arr, order="C"), name))
        return name

    # ReLU6 bounds, shared by every Clip (opset >= 11: min/max are inputs)
    relu_min = init("relu6_min", np.array(0.0, dtype=np.float32))
    relu_max = init("relu6_max", np.array(6.0, dtype=np.float32))

    x = "image"
    for i, (name, block) in enumerate(zip(CONV_NAMES, model.blocks)):
        conv, bn = block[0], block[1]
        k = conv.kernel_size[0]
        nodes.append(
            helper.make_node(
                "Conv",
                [x, init(f"{name}.weight", conv.weight), init(f"{name}.bias", conv.bias)],
                [name],
                name=name,
                kernel_shape=[k, k],
                strides=list(conv.stride),
                pads=[conv.padding[0]] * 4,
                dilations=[1, 1],
                group=conv.groups,
            )
        )
        bn_name, relu_name = f"bn{i}", f"relu{i}"
        nodes.append(
            helper.make_node(
                "BatchNormalization",
                [
                    name,
                    init(f"{bn_name}.scale", bn.weight),
                    init(f"{bn_name}.bias", bn.bias),
                    init(f"{bn_name}.mean", bn.running_mean),
                    init(f"{bn_name}.var", bn.running_var),
                ],
                [bn_name],
                name=bn_name,
                epsilon=bn.eps,
            )
        )
        nodes.append(helper.make_node("Clip", [bn_name, relu_min, relu_max], [relu_name], name=relu_name))
        x = relu_name

    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flatten"], name="flatten", axis=1))
    nodes.append(
        helper.make_node(
            "Gemm",
            ["flatten", init("fc.weight", model.fc.weight), init("fc.bias", model.fc.bias)],
            ["logits"],
            name="fc",
            alpha=1.0,
            beta=1.0,
            transB=1,
        )
    )

    graph = helper.make_graph(
        nodes,
        "digits_mobilenet",
        inputs=[helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
        doc_string="Tiny MobileNet-like classifier for sklearn's 8x8 digits (BatchNorm kept unfused).",
    )
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="aicc-examples/train_digits.py",
        producer_version="1",
        doc_string=(
            "Input: (pixels/16 - %.4f) / %.4f, NCHW [batch,1,8,8]. Output: class logits for digits 0-9."
            % (INPUT_MEAN, INPUT_STD)
        ),
    )
    m.ir_version = IR_VERSION
    onnx.helper.set_model_props(
        m,
        {
            "input_mean": f"{INPUT_MEAN:.4f}",
            "input_std": f"{INPUT_STD:.4f}",
            "input_scale": "pixels / 16 (raw digits pixels are 0..16)",
            "dataset": "sklearn.datasets.load_digits",
            "labels": "0,1,2,3,4,5,6,7,8,9",
        },
    )
    m = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    onnx.checker.check_model(m, full_check=True)
    return m


# --------------------------------------------------------------------------
# Data files
# --------------------------------------------------------------------------
def write_data(x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    np.save(DATA_DIR / "digits_test_images.npy", x_test.astype(np.float32))
    np.save(DATA_DIR / "digits_test_labels.npy", y_test.astype(np.int64))

    calib_dir = DATA_DIR / "digits_calib"
    calib_dir.mkdir(parents=True, exist_ok=True)
    for old in calib_dir.glob("sample_*.raw"):
        old.unlink()
    rng = np.random.default_rng(SEED)
    picks = np.sort(rng.choice(len(x_train), size=NUM_CALIB, replace=False))
    lines = []
    for j, idx in enumerate(picks):
        fname = f"sample_{j:02d}.raw"
        x_train[idx : idx + 1].astype("<f4").tofile(calib_dir / fname)  # [1,1,8,8]
        lines.append(fname)
    (calib_dir / "input_list.txt").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="train and evaluate only; write no file")
    args = ap.parse_args()

    t0 = time.perf_counter()
    seed_everything(SEED)
    x_train, y_train, x_test, y_test = load_split()
    print(f"train {x_train.shape}  test {x_test.shape}")

    model = DigitsMobileNet()
    train(model, x_train, y_train)

    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_test)).numpy()
    torch_acc = float((torch_logits.argmax(1) == y_test).mean())

    # BN must carry real learned parameters, not the identity defaults
    for i, block in enumerate(model.blocks):
        bn = block[1]
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight)), f"bn{i} gamma untrained"
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var)), f"bn{i} var untrained"

    onnx_model = build_onnx(model)
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    ort_logits = sess.run(["logits"], {"image": x_test})[0]
    ort_acc = float((ort_logits.argmax(1) == y_test).mean())
    max_diff = float(np.abs(ort_logits - torch_logits).max())

    print(f"torch eval accuracy        : {torch_acc:.4f} ({int(round(torch_acc * len(y_test)))}/{len(y_test)})")
    print(f"onnxruntime accuracy       : {ort_acc:.4f} ({int(round(ort_acc * len(y_test)))}/{len(y_test)})")
    print(f"max |logit diff| torch/ort : {max_diff:.2e}")
    assert np.array_equal(ort_logits.argmax(1), torch_logits.argmax(1)), "torch and onnxruntime disagree"
    assert max_diff < 1e-3, "torch and onnxruntime logits differ"
    assert ort_acc >= ACCURACY_TARGET, f"accuracy {ort_acc:.4f} below target {ACCURACY_TARGET}"

    if not args.no_write:
        onnx.save(onnx_model, MODEL_PATH)
        write_data(x_train, x_test, y_test)
        print(f"wrote {MODEL_PATH.relative_to(EXAMPLES_DIR.parent)} ({MODEL_PATH.stat().st_size} bytes)")
        print(f"wrote {DATA_DIR.relative_to(EXAMPLES_DIR.parent)}/")
    print(f"done in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
