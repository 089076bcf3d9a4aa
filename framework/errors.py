"""The aicc exception hierarchy: every user-facing failure is one of these.

A user error (bad model, bad config, bad flag, bad data) is an ``AiccError`` whose message reads
``FILE: FIELD: what is wrong (hint)``; the CLI prints it on one line and exits 2. Anything else that
escapes is an internal error (exit 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "AiccError",
    "ConfigError",
    "ModelError",
    "PassError",
    "BackendError",
    "ContainerError",
    "PluginError",
    "DataError",
    "OutputError",
    "UsageError",
    "NotYetSupportedError",
    "did_you_mean",
]


class AiccError(Exception):
    """A user error: something in the input (model, config, flag, data) is wrong.

    ``where`` is the file (or flag) the problem is in, ``field`` the key, node, tensor or line
    inside it, ``hint`` what to do about it. ``str()`` gives the one-line form the CLI prints.
    """

    exit_code = 2

    def __init__(self, message: str, *, where: str | Path | None = None, field: str | None = None,
                 hint: str | None = None):
        self.message = message
        self.where = str(where) if where is not None else None
        self.field = field
        self.hint = hint
        super().__init__(self.format())

    def format(self) -> str:
        parts = [p for p in (self.where, self.field) if p]
        text = ": ".join(parts + [self.message])
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigError(AiccError):
    """A configuration file, pipeline or option is malformed or invalid."""


class UsageError(AiccError):
    """A command-line flag is unknown, malformed or contradicts another."""


class NotYetSupportedError(UsageError):
    """A known vendor flag whose feature is not implemented yet; refused, never ignored."""


class ModelError(AiccError):
    """The ONNX model cannot be loaded, is unsafe, or is not valid."""


class DataError(AiccError):
    """Input data (raw files, input lists, feeds) does not fit the program."""


class PassError(AiccError):
    """A pass could not do its job, or broke the promise it declared."""


class BackendError(AiccError):
    """A backend cannot compile or run the program it was given."""


class ContainerError(AiccError):
    """A compiled program container is missing, altered, or of another version."""


class OutputError(AiccError):
    """A file aicc was asked to write could not be written (full disk, quota, size limit,
    read-only or missing folder); nothing half-written is left behind."""


class PluginError(AiccError):
    """A plugin failed to import, raised while registering, or clashed with another."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A hint naming the nearest valid spelling, or listing the valid ones when none is close."""
    candidates = sorted(set(candidates))
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if not candidates:
        return "there are none"
    shown = ", ".join(candidates[:12]) + (", ..." if len(candidates) > 12 else "")
    return f"valid: {shown}"
