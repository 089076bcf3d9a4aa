"""The bundled demo writes under the current directory (issue 13 item 9), never into the
repository it is run from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_writes_under_the_current_directory(tmp_path):
    had_demo_out = (ROOT / "demo-out").exists()
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "AICC_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "demo-out" / "digits-cpu.qpc" / "manifest.json").is_file()
    assert (tmp_path / "demo-out" / "digits-int8-aic100.qpc" / "manifest.json").is_file()
    assert "container demo-out/digits-cpu.qpc" in out.stdout
    # nothing written under the repository (other tests may add caches there meanwhile)
    assert (ROOT / "demo-out").exists() == had_demo_out
