"""Input makers of the model zoo: realistic inputs for third-party models, from a seeded rng.

Images look like photos or text lines (smooth shading, strokes, texture) in the range the model's
preprocessing produces; a text detector gets a page of rendered text lines (a detector shown noise
answers with the sigmoid's tail only, which hid a wrong fp16 answer on PP-OCRv4 det); audio is
speech-like (harmonics under a syllable envelope, some noise) at the scale the model's caller feeds (floats in [-1, 1] or int16-scaled); features are smooth over
the last axis with a given mean and spread; file bytes are the bytes of text-like source code.
Each maker is ``(shape, rng) -> array``; see ``zoo_lib.MODELS`` for which model gets which.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["Maker", "image", "text_page", "audio", "features", "file_bytes", "zeros",
           "constant"]

#: An input maker: (shape, rng) -> array.
Maker = Callable[[tuple[int, ...], np.random.Generator], np.ndarray]


def image(lo: float, hi: float) -> Maker:
    """A photo-like image in [lo, hi]: smooth shading, edges and texture, channels correlated."""
    def make(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        n, c, h, w = shape
        yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
        out = np.empty(shape, np.float32)
        for b in range(n):
            base = np.zeros((h, w))
            for _ in range(6):  # a few soft blobs and stripes: shading and text-like strokes
                fx, fy, ph = rng.uniform(0.5, 12, 2).tolist() + [rng.uniform(0, 6.3)]
                base += rng.uniform(0.2, 1) * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
            base += (rng.random((h, w)) < 0.02) * rng.uniform(-3, 3)
            for ch in range(c):
                plane = base + 0.3 * rng.standard_normal() + 0.15 * rng.standard_normal((h, w))
                plane = (plane - plane.min()) / max(np.ptp(plane), 1e-6)
                out[b, ch] = lo + (hi - lo) * plane
        return out
    return make


def text_page(mean: tuple[float, ...], std: tuple[float, ...]) -> Maker:
    """A light page with dark text lines rendered at random places (``ocr_lines.py``, Pillow),
    normalized per channel as ``(x - mean) / std`` for x in [0, 1]."""
    from ocr_lines import lines

    def make(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        n, c, h, w = shape
        out = np.empty(shape, np.float32)
        for b in range(n):
            page = np.full((c, h, w), rng.uniform(0.85, 1.0), np.float32)
            _, rendered = lines(int(rng.integers(3, 8)), seed=int(rng.integers(2 ** 31)))
            for line in rendered:
                line = (line[0, :c] + 1.0) / 2.0                    # [-1, 1] -> [0, 1]
                used = np.flatnonzero(np.abs(line - 0.5).max(axis=(0, 1)) > 1e-6)
                lh, lw = line.shape[1], min(int(used[-1]) + 1 if used.size else 1, w)
                if lh > h:
                    continue
                y, x = int(rng.integers(0, h - lh + 1)), int(rng.integers(0, w - lw + 1))
                page[:, y:y + lh, x:x + lw] = line[:, :, :lw]
            out[b] = (page - np.reshape(mean, (c, 1, 1))) / np.reshape(std, (c, 1, 1))
        return out
    return make


def audio(scale: float) -> Maker:
    """Speech-like audio: a few harmonics with a syllable envelope plus noise, peak ``scale``."""
    def make(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        t = np.arange(shape[-1]) / 16000.0
        rows = []
        for _ in range(math.prod(shape[:-1])):
            f0 = rng.uniform(90, 250)
            sig = sum(rng.uniform(0.1, 1) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6))
                      for k in range(1, 6))
            sig = sig * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
            sig = sig + 0.05 * rng.standard_normal(t.shape)
            rows.append(sig / np.abs(sig).max() * scale * rng.uniform(0.5, 0.95))
        return np.asarray(rows, np.float32).reshape(shape)
    return make


def features(mean: float, std: float) -> Maker:
    """Features (embeddings, spectrogram frames): smooth over the last axis, mean/std given."""
    def make(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        x = rng.standard_normal(shape)
        x = (x + np.roll(x, 1, axis=-1) + np.roll(x, -1, axis=-1)) / math.sqrt(3)
        return (mean + std * x).astype(np.float32)
    return make


def file_bytes() -> Maker:
    """The byte values (as floats) of a text-like file: words, punctuation, newlines."""
    words = [b"def", b"return", b"import", b"the", b"class", b"value", b"=", b"(", b")", b":",
             b"self", b"for", b"in", b"if", b"else", b"0", b"1", b"#", b"print", b"data"]

    def make(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        out = np.empty(shape, np.float32)
        for row in np.ndindex(shape[:-1]):
            text = b""
            while len(text) < shape[-1]:
                text += words[rng.integers(len(words))] + (b"\n    " if rng.random() < 0.15
                                                           else b" ")
            out[row] = np.frombuffer(text[:shape[-1]], np.uint8)
        return out
    return make


def zeros(dtype: str = "float32") -> Maker:
    return lambda shape, rng: np.zeros(shape, dtype)


def constant(value: float, dtype: str) -> Maker:
    return lambda shape, rng: np.full(shape, value, dtype)
