"""The aicc exception hierarchy: every user-facing failure is one of these.

A user error (bad model, bad config, bad flag, bad data) is an ``AiccError`` whose message reads
``FILE: FIELD: what is wrong (hint)``; the CLI prints it on one line and exits 2. Anything else that
escapes is an internal error (exit 1).
"""

from __future__ import annotations

import contextvars
import difflib
import re
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
    "option_ref",
    "render_options",
    "VOCABULARY",
]

#: How error messages name compile options: option key -> the spelling the caller used. Empty
#: (the default) names options by their Python key (``quantization.per_channel``), as a Python
#: caller spells them; the CLI maps each key to the flag spelling the user typed
#: (``-enable-channelwise``). Set per command run (``aicc.cli.main``).
VOCABULARY: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("aicc_vocabulary")

_REF = re.compile("\u2039([A-Za-z0-9_.]+)\u203a")
_SAME_TWICE = re.compile(r"(?<![\w-])(-{1,2}[\w-]+) or \1(?![\w-])")


def option_ref(key: str) -> str:
    """A compile option named inside an error message, rendered in the caller's vocabulary when
    the error is shown: ``option_ref("quantization.per_channel")`` reads
    ``quantization.per_channel`` to a Python caller and ``-enable-channelwise`` on the CLI."""
    return f"\u2039{key}\u203a"


def render_options(text: str) -> str:
    """``text`` with every ``option_ref`` replaced by the caller's spelling of that option."""
    names = VOCABULARY.get({})

    def spell(m: re.Match) -> str:
        try:
            return names[m.group(1)]      # a CLI vocabulary looks flags up on demand
        except KeyError:
            return m.group(1)
    # two options one caller spells alike (aicc quantize's --input_dim binds shapes and symbols)
    return _SAME_TWICE.sub(r"\1", _REF.sub(spell, text))


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
        self._initial = self.raw_format()
        super().__init__(self._initial)

    def raw_format(self) -> str:
        """The one-line form with option references left unrendered (for re-wrapping)."""
        parts = [p for p in (self.where, self.field) if p]
        text = ": ".join(parts + [self.message])
        if self.hint:
            text += f" ({self.hint})"
        return text

    def format(self) -> str:
        return render_options(self.raw_format())

    def __str__(self) -> str:
        if self.args and self.args[0] != self._formatted:   # a caller replaced the text
            return render_options(str(self.args[0]))
        return self.format()

    @property
    def _formatted(self) -> str:
        return self.__dict__.get("_initial", "")


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
