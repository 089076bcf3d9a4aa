"""Shared fixtures: tests never autoload installed plugins, and build models from text."""

from __future__ import annotations

import os

os.environ.setdefault("AICC_DISABLE_PLUGIN_AUTOLOAD", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from aicc.plugins import load_registries  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODEL = ROOT / "examples" / "digits_mobilenet.onnx"


@pytest.fixture(scope="session")
def registries():
    return load_registries()


@pytest.fixture(scope="session")
def example_model_path() -> Path:
    return EXAMPLE_MODEL
