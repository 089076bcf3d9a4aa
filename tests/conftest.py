"""Shared fixtures: tests never autoload installed plugins, build models from text, and keep
their temporary files (``aicc.compile`` without an output, the CLI's subprocesses) under pytest's
own base folder, which pytest prunes, instead of leaving them in the system's."""

from __future__ import annotations

import os

os.environ.setdefault("AICC_DISABLE_PLUGIN_AUTOLOAD", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from hypothesis import settings  # noqa: E402

from aicc.plugins import load_registries  # noqa: E402

#: Property tests draw the same examples on every run and machine (``make test``, CI), so a
#: failure is reproducible and a submission never fails on an example no one saw before;
#: ``AICC_HYPOTHESIS=explore`` (``make fuzz``) draws new ones and remembers failures locally.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("AICC_HYPOTHESIS", "repeatable"))

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODEL = ROOT / "examples" / "digits_mobilenet.onnx"


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_under_pytest(tmp_path_factory):
    """Point ``tempfile`` and child processes' ``TMPDIR`` at a folder pytest owns."""
    import tempfile

    folder = tmp_path_factory.mktemp("system-tmp")
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(folder)
    os.environ["TMPDIR"] = str(folder)
    yield
    tempfile.tempdir = saved[0]
    if saved[1] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved[1]


@pytest.fixture(scope="session")
def registries():
    return load_registries()


@pytest.fixture(scope="session")
def example_model_path() -> Path:
    return EXAMPLE_MODEL
