"""The demo: compile the bundled digits classifier with aicc, run the container, and compare its
accuracy with onnxruntime on the original model."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

import aicc

HERE = Path(__file__).resolve().parent
MODEL = HERE / "digits_mobilenet.onnx"
OUT = HERE.parent / "demo-out"


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


def main() -> int:
    images = np.load(HERE / "data" / "digits_test_images.npy", allow_pickle=False)
    labels = np.load(HERE / "data" / "digits_test_labels.npy", allow_pickle=False)
    OUT.mkdir(exist_ok=True)

    reference = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    ref_logits = reference.run(None, {"image": images})[0]
    print(f"model: {MODEL.name}, {len(labels)} test images")
    print(f"  onnxruntime, original model      accuracy {accuracy(ref_logits, labels):.4f}")

    for backend in ("cpu", "interpreter"):
        qpc = OUT / f"digits-{backend}.qpc"
        try:
            aicc.compile(MODEL, backend=backend, output=qpc)
        except aicc.AiccError as e:
            print(f"  aicc {backend:<12} skipped: {e}")
            continue
        session = aicc.load(qpc)
        logits = session.run({"image": images})["logits"]
        diff = float(np.abs(logits - ref_logits).max())
        print(f"  aicc {backend:<12} compiled     accuracy {accuracy(logits, labels):.4f}  "
              f"(max |logit diff| vs onnxruntime {diff:.2e}; container {qpc.relative_to(HERE.parent)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
