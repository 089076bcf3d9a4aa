"""Text-line images for PP-OCRv4's recognizer (rapidocr-onnxruntime 1.4.4), rendered here, and
CTC decoding with the dictionary that ships inside that wheel's model (metadata key
``character``, which rapidocr itself reads).

Lines are rendered with Pillow (a dev dependency, pinned in requirements.lock) in the DejaVu fonts
of the machine (``/usr/share/fonts/truetype/dejavu``; a Pillow default font otherwise), black
or dark text on light backgrounds with a little noise and varied fonts, sizes and offsets, then
preprocessed as rapidocr does: height 48, aspect kept, padded right to width 320, RGB scaled to
[-1, 1], NCHW float32. Texts are drawn from a fixed seed: English words, numbers, dates and
prices, so the float model reads most of them and the quantized one can be compared with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

HEIGHT, WIDTH = 48, 320
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
_WORDS = ("invoice total amount paid balance order number customer address street city "
          "phone email date time price quantity item description tax discount shipping "
          "account bank transfer receipt station platform ticket return single adult child "
          "monday friday january october north south west east report page section").split()


def model_path(cache: Path | None = None) -> Path:
    """PP-OCRv4 rec in the zoo cache (``$AICC_ZOO_CACHE`` or ``~/.cache/aicc-zoo``)."""
    import os
    root = Path(cache or os.environ.get("AICC_ZOO_CACHE", Path.home() / ".cache" / "aicc-zoo"))
    return (root / "models" / "rapidocr_onnxruntime-1.4.4" / "rapidocr_onnxruntime" / "models"
            / "ch_PP-OCRv4_rec_infer.onnx")


def dictionary(path: Path) -> list[str]:
    """The CTC classes: blank, the model's ``character`` metadata lines, then a space (rapidocr's
    ``use_space_char``)."""
    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise ValueError(f"{path}: no 'character' metadata (not rapidocr's PP-OCR rec model?)")
    return ["blank"] + meta["character"].splitlines() + [" "]


def ctc_decode(probs: np.ndarray, chars: list[str]) -> list[str]:
    """Greedy CTC: argmax per step, repeats merged, blanks (class 0) dropped; one string per
    batch row of ``probs`` (N, T, C)."""
    out = []
    for row in np.argmax(probs, axis=-1):
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != 0
        out.append("".join(chars[i] for i in row[keep] if i < len(chars)))
    return out


def _text(rng: np.random.Generator) -> str:
    kind = rng.integers(4)
    if kind == 0:
        return " ".join(rng.choice(_WORDS, size=rng.integers(1, 4)))
    if kind == 1:
        return f"{rng.choice(_WORDS).capitalize()} {rng.integers(10, 99999)}"
    if kind == 2:
        return f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/{rng.integers(1990, 2030)}"
    return f"{rng.choice(_WORDS)}: ${rng.integers(1, 999)}.{rng.integers(0, 100):02d}"


def _fonts() -> list:
    from PIL import ImageFont
    files = sorted(FONT_DIR.glob("DejaVuSans*.ttf")) + sorted(FONT_DIR.glob("DejaVuSerif*.ttf"))
    if not files:
        return [lambda size: ImageFont.load_default(size)]
    return [lambda size, f=f: ImageFont.truetype(str(f), size) for f in files]


def _render(text: str, rng: np.random.Generator, fonts: list) -> np.ndarray:
    from PIL import Image, ImageDraw
    font = fonts[rng.integers(len(fonts))](int(rng.integers(26, 36)))
    left, top, right, bottom = font.getbbox(text)
    pad = int(rng.integers(4, 12))
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    bg = tuple(int(v) for v in rng.integers(200, 256, size=3))
    fg = tuple(int(v) for v in rng.integers(0, 70, size=3))
    img = Image.new("RGB", (w, h), bg)
    ImageDraw.Draw(img).text((pad - left, pad - top), text, fill=fg, font=font)
    width = min(WIDTH, max(1, round(w * HEIGHT / h)))
    img = img.resize((width, HEIGHT), Image.BILINEAR)
    arr = np.asarray(img, np.float32)
    arr = np.clip(arr + rng.normal(0, 4, arr.shape), 0, 255)
    out = np.zeros((3, HEIGHT, WIDTH), np.float32)
    out[:, :, :width] = ((arr / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    return out


def lines(count: int, seed: int) -> tuple[list[str], list[np.ndarray]]:
    """``count`` (text, 1x3x48x320 float32 input) pairs from ``seed``."""
    rng = np.random.default_rng(seed)
    fonts = _fonts()
    texts = [_text(rng) for _ in range(count)]
    return texts, [_render(t, rng, fonts)[None] for t in texts]
