"""AMP's Pareto plot: ``pareto.png`` is a real PNG of the front when matplotlib (the ``plot``
extra, which ``make test`` installs) is present, and its absence is one line saying how to get it,
never an error that would lose the AMP result."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from aicc.cli.quantize_amp import _plot

FRONT = SimpleNamespace(front=[{"cost": 1.0, "metric": 12.5}, {"cost": 0.4, "metric": 9.0},
                               {"cost": 0.7, "metric": 11.0}], target=10.0)


def test_the_front_is_plotted_as_a_png(tmp_path):
    message = _plot(FRONT, tmp_path)
    png = tmp_path / "pareto.png"
    assert message == f"amp: wrote {png}"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_without_matplotlib_the_result_stands_and_the_hint_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # import matplotlib -> ImportError
    message = _plot(FRONT, tmp_path)
    assert "matplotlib is not installed" in message and "aicc[plot]" in message
    assert not (tmp_path / "pareto.png").exists()
