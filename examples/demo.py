"""The demo: compile the bundled digits classifier with aicc, run the container, and compare its
accuracy with onnxruntime on the original model.

Containers and files go to ``demo-out/`` under the current directory, or to ``--out DIR``::

    python examples/demo.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

import aicc

HERE = Path(__file__).resolve().parent
MODEL = HERE / "digits_mobilenet.onnx"
#: where the demo writes; set by main() (``--out``, default ``./demo-out``)
OUT = Path("demo-out")


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path.cwd() / "demo-out",
                        help="folder for the containers (default: ./demo-out)")
    OUT = parser.parse_args(argv).out.resolve()
    images = np.load(HERE / "data" / "digits_test_images.npy", allow_pickle=False)
    labels = np.load(HERE / "data" / "digits_test_labels.npy", allow_pickle=False)
    OUT.mkdir(parents=True, exist_ok=True)

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
              f"(max |logit diff| vs onnxruntime {diff:.2e}; container {_shown(qpc)})")
    precision_variants(images, labels, ref_logits)
    int8_on_simulated_aic100(images, labels)
    return 0


def precision_variants(images: np.ndarray, labels: np.ndarray, ref_logits: np.ndarray) -> None:
    """fp16 (-convert-to-fp16) and an int8 NHWC input (custom I/O, host conversions).

    The input's int8 Scale/Offset cover the test images' range [lo, hi] on the 256 int8 levels,
    in the vendor convention real = (q - Offset) * Scale: Scale = (hi - lo) / 255 and
    Offset = round(-128 - lo / Scale), so lo maps to -128 and hi to 127.
    """
    lo, hi = float(images.min()), float(images.max())
    scale = (hi - lo) / 255.0
    offset = int(round(-128 - lo / scale))
    custom_io = OUT / "digits_int8_nhwc.yaml"
    custom_io.write_text(f"- IOName: image\n  Layout: NHWC\n  Precision: int8\n"
                         f"  Scale: {scale!r}\n  Offset: {offset}\n")
    q = np.clip(np.rint(images / np.float32(scale)) + offset, -128, 127).astype(np.int8)
    nhwc = np.ascontiguousarray(q.transpose(0, 2, 3, 1))
    variants = [
        ("fp16", [("convert-fp16", {"all": True}), "fold-constants", "fold-batchnorm", "cleanup"],
         images),
        ("int8 NHWC input", ["fold-constants", "fold-batchnorm",
                             ("custom-io", {"config": str(custom_io)}), "cleanup"], nhwc),
    ]
    for name, pipeline, feed in variants:
        qpc = OUT / f"digits-{name.split()[0]}-{name.split()[-1]}.qpc"
        aicc.compile(MODEL, pipeline=pipeline, output=qpc)
        session = aicc.load(qpc)
        logits = session.run({"image": feed})["logits"]
        diff = float(np.abs(logits - ref_logits).max())
        shape = "x".join(str(d) for d in session.inputs[0].shape)
        print(f"  aicc cpu {name:<17} accuracy {accuracy(logits, labels):.4f}  (input "
              f"{session.inputs[0].dtype} {shape}; max |logit diff| {diff:.2e})")


def int8_on_simulated_aic100(images: np.ndarray, labels: np.ndarray) -> None:
    """Profile-guided int8 (the 32 calibration samples of data/digits_calib) compiled with the
    vendor's flags for the simulated AIC100 on 4 cores, then run image by image."""
    from aicc.cli import main as cli

    calib = HERE / "data" / "digits_calib" / "input_list.txt"
    qpc = OUT / "digits-int8-aic100.qpc"
    code = cli(["compile", f"-m={MODEL}", "-onnx-define-symbol=batch,1",
                f"-input-list-file={calib}", "-convert-to-quantize", "-enable-channelwise",
                "-aic-hw", "-aic-num-cores=4", f"-aic-binary-dir={qpc}", "-compile-only"])
    if code != 0:
        print("  aicc aic100 int8 skipped (compile failed, see above)")
        return
    session = aicc.load(qpc)
    logits = np.concatenate([session.run({"image": images[i:i + 1]})["logits"]
                             for i in range(len(images))])
    print(f"  aicc aic100 int8 (4 cores)   accuracy {accuracy(logits, labels):.4f}  "
          f"(per-channel int8 calibrated on 32 samples; simulated device report:)")
    for line in session.stats()[session.last_specialization].get("report", [])[:4]:
        print(f"      {line}")


if __name__ == "__main__":
    sys.exit(main())
