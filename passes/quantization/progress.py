"""The calibration progress bar: samples counted in, a bar redrawn on a terminal out."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``calibrating [#####.....] 12/32`` on a terminal (stderr), redrawn at most 10 times a
    second; silent when stderr is not a terminal (pipes, CI logs)."""

    def __init__(self, total: int | None, stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.stream = stream or sys.stderr
        self.active = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.count = 0
        self._last = 0.0

    def step(self) -> None:
        self.count += 1
        if not self.active:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and self.count != self.total:
            return
        self._last = now
        if self.total:
            filled = int(30 * self.count / self.total)
            bar = "#" * filled + "." * (30 - filled)
            self.stream.write(f"\rcalibrating [{bar}] {self.count}/{self.total}")
        else:
            self.stream.write(f"\rcalibrating: {self.count} samples")
        self.stream.flush()

    def done(self) -> None:
        if self.active:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()
