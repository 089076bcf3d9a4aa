"""Greedy text generation on a compiled LLM container: prompt token ids in, new token ids out.

The container follows the KV-style interface of the vendor's LLM flow (QEfficient's export):
inputs ``input_ids`` and ``position_ids`` ``[batch_size, seq_len]`` plus the KV cache inputs
``past_key.N`` / ``past_value.N``, outputs ``logits`` ``[batch_size, seq_len, vocab]`` and
``past_key.N_RetainedState`` / ``past_value.N_RetainedState``; one specialization for prefill
(``seq_len`` = a prompt chunk) and one for decode (``seq_len = 1``), sharing ``batch_size`` and
``ctx_len``.

``generate`` runs the prompt through the prefill specialization in chunks of its ``seq_len`` (the
last chunk padded, padding marked by position -1, which the model neither attends to nor writes
into the cache), then one decode step per new token. With a container compiled with
``-retained-state`` the KV cache never leaves the Session: each step's ``*_RetainedState`` outputs
become the next step's cache inside ``Session.run``. Without it, this helper feeds the outputs back
itself (the cache then passes through Python on every step).

The helper drives a ``Session`` from outside (``aicc.generate(session, ...)``): the runtime knows
nothing of LLMs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import DataError
from .runtime import Session, SpecInfo

__all__ = ["generate"]

_SUFFIX = "_RetainedState"


def _seq_shape(spec: SpecInfo, name: str) -> tuple[int, int] | None:
    for d in spec.inputs:
        if d.name == name and d.shape is not None and len(d.shape) == 2 and \
                all(isinstance(x, int) for x in d.shape):
            return int(d.shape[0]), int(d.shape[1])
    return None


def generate(session: Session, prompt_ids: Sequence[int] | np.ndarray, max_new_tokens: int, *,
             input_ids: str = "input_ids", position_ids: str = "position_ids",
             logits: str = "logits", pad_id: int = 0) -> np.ndarray:
    """Greedy-decode ``max_new_tokens`` tokens after ``prompt_ids``; returns their ids.

    ``prompt_ids`` is 1-D (one sequence; the result is 1-D) or 2-D ``[batch, length]`` (the
    batch must match a specialization's ``batch_size``). The retained state is reset first, so
    every call starts a new sequence. Refuses prompts that do not fit the cache (``ctx_len``).
    """
    prompt = np.asarray(prompt_ids)
    if prompt.dtype.kind not in "iu" or prompt.ndim not in (1, 2) or prompt.size == 0:
        raise DataError(f"prompt_ids must be a non-empty 1-D or 2-D array of token ids, got "
                        f"{prompt.dtype} {list(prompt.shape)}", where="generate")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
            or max_new_tokens < 1:
        raise DataError(f"max_new_tokens={max_new_tokens!r}; expected a positive integer",
                        where="generate")
    squeeze = prompt.ndim == 1
    prompt = prompt.reshape(1, -1) if squeeze else prompt
    batch, length = prompt.shape
    shapes = {s.name: _seq_shape(s, input_ids) for s in session.specs}
    fitting = {n: sh for n, sh in shapes.items() if sh is not None and sh[0] == batch}
    if not fitting:
        have = ", ".join(f"{n}: {list(sh) if sh else '?'}" for n, sh in shapes.items())
        raise DataError(f"no specialization takes {input_ids} with batch {batch}",
                        where="generate", hint=f"{input_ids} shapes: {have}")
    decode = [n for n, sh in fitting.items() if sh[1] == 1]
    if not decode:
        raise DataError(f"no decode specialization ({input_ids} [{batch}, 1])", where="generate",
                        hint="add a specialization with seq_len 1")
    prefill_name = max(fitting, key=lambda n: fitting[n][1])
    chunk = fitting[prefill_name][1]
    ctx = session.specialization(decode[0]).symbols.get("ctx_len")
    if ctx is not None and length + max_new_tokens - 1 > int(ctx):
        raise DataError(f"{length} prompt tokens + {max_new_tokens} new ones do not fit "
                        f"ctx_len {ctx}", where="generate",
                        hint="compile a specialization with a larger ctx_len")
    runner = _Runner(session)
    token_dtype = _dtype(session, input_ids)
    pos_dtype = _dtype(session, position_ids)
    last = None
    for start in range(0, length, chunk):
        ids = prompt[:, start:start + chunk]
        n = ids.shape[1]
        pad = chunk - n
        feed_ids = np.concatenate([ids, np.full((batch, pad), pad_id)], axis=1) if pad else ids
        pos = np.concatenate([np.arange(start, start + n), np.full(pad, -1)])
        out = runner.run({input_ids: feed_ids.astype(token_dtype),
                          position_ids: np.broadcast_to(pos, (batch, chunk)).astype(pos_dtype)})
        last = out[logits][:, n - 1]
    tokens = np.empty((batch, max_new_tokens), np.int64)
    tokens[:, 0] = np.argmax(last, axis=-1)
    for step in range(1, max_new_tokens):
        pos = length + step - 1
        out = runner.run({input_ids: tokens[:, step - 1:step].astype(token_dtype),
                          position_ids: np.full((batch, 1), pos, pos_dtype)})
        tokens[:, step] = np.argmax(out[logits][:, 0], axis=-1)
    return tokens[0] if squeeze else tokens


def _dtype(session: Session, name: str) -> np.dtype:
    for d in session.specs[0].inputs:
        if d.name == name:
            return np.dtype(d.dtype)
    raise DataError(f"the program has no input '{name}'", where="generate",
                    hint="inputs: " + ", ".join(d.name for d in session.specs[0].inputs))


class _Runner:
    """Runs steps; keeps the KV cache itself only when the session does not retain it."""

    def __init__(self, session: Session):
        self.session = session
        self.host: dict[str, np.ndarray] | None = None
        self.pairs: list[tuple[str, str]] = []
        if session.retained:
            session.reset_state()
            return
        outs = {d.name for d in session.specs[0].outputs}
        self.pairs = [(d.name, d.name + _SUFFIX) for d in session.specs[0].inputs
                      if d.name + _SUFFIX in outs]
        if not self.pairs:
            raise DataError("the program has no *_RetainedState outputs to carry the KV cache",
                            where="generate", hint="export the model in the KV-cache style")
        self.host = {}

    def run(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        if self.host is None:
            return self.session.run(feeds)
        if not self.host:  # first step: zero cache of the specialization these feeds select
            fits = [s for s in self.session.specs if s.matches(feeds)]
            if not fits:
                self.session.select(feeds)  # raises, listing the shapes there are
            descs = {d.name: d for d in fits[0].inputs}
            for inp, _ in self.pairs:
                self.host[inp] = np.zeros(descs[inp].shape, np.dtype(descs[inp].dtype))
        out = self.session.run({**feeds, **self.host})
        for inp, res in self.pairs:
            self.host[inp] = out[res]
        return out
