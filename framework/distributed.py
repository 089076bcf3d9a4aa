"""A Dask client from what the user gave (``local``, ``local:N``, a scheduler address, or a
``distributed.Client``), plus the progress line of distributed work.

Dask is optional (``pip install aicc[dask]``): it is imported only when ``--dask`` (or
``dask=``) is used, and its absence is a one-line error naming the extra. ``local`` and
``local:N`` start a ``LocalCluster`` of worker processes (one thread each: the engines use their
own threads) that is closed when the work ends; an address connects to a running scheduler
(``dask scheduler`` + ``dask worker ADDRESS`` on each machine) and leaves it running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from .errors import ConfigError, UsageError

__all__ = ["dask_client", "import_distributed", "DaskProgress", "parse_dask_spec"]

logger = logging.getLogger(__name__)


def import_distributed() -> Any:
    """The ``distributed`` module, or a one-line error saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise UsageError("--dask needs Dask, which is not installed", where="--dask",
                         hint="pip install aicc[dask]") from None
    return distributed


def parse_dask_spec(spec: str) -> tuple[str, int | None]:
    """``local`` -> ("local", None); ``local:N`` -> ("local", N); else ("address", None)."""
    text = spec.strip()
    if not text:
        raise UsageError("empty Dask address", where="--dask",
                         hint="local, local:N or tcp://HOST:8786")
    if text == "local":
        return "local", None
    if text.startswith("local:"):
        count = text[len("local:"):]
        if not count.isdigit() or int(count) < 1:
            raise UsageError(f"{spec!r}: the number of local workers must be a positive "
                             "integer", where="--dask", hint="e.g. local:4")
        return "local", int(count)
    if "://" not in text and ":" not in text:
        raise UsageError(f"{spec!r} is neither local[:N] nor a scheduler address",
                         where="--dask", hint="e.g. local:4 or tcp://HOST:8786")
    return "address", None


@contextlib.contextmanager
def dask_client(spec: Any) -> Iterator[Any]:
    """A connected ``distributed.Client`` for ``spec``; a cluster started here is closed at the
    end, an existing client or scheduler is left as it was."""
    distributed = import_distributed()
    if isinstance(spec, distributed.Client):
        yield spec
        return
    if not isinstance(spec, str):
        raise ConfigError(f"dask must be an address string or a distributed.Client, got "
                          f"{type(spec).__name__}", field="dask")
    kind, count = parse_dask_spec(spec)
    if kind == "local":
        workers = count or os.cpu_count() or 1
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                           processes=True, dashboard_address=None)
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = distributed.Client(spec.strip(), timeout="20s")
    except OSError as e:
        raise UsageError(f"cannot reach the Dask scheduler at {spec}: {e}", where="--dask",
                         hint="start it with `dask scheduler` and workers with "
                              "`dask worker ADDRESS`") from None
    try:
        yield client
    finally:
        client.close()


def _worker_memory(client: Any) -> list[int]:
    try:
        info = client.scheduler_info()
    except Exception:       # progress is best left out rather than fail the work
        return []
    return [int(w.get("metrics", {}).get("memory", 0)) for w in info.get("workers", {}).values()]


class DaskProgress:
    """``calibrating: 12/40 shards, 3100 samples/s, workers 210-260 MiB`` on a terminal (stderr),
    redrawn at most twice a second; silent when stderr is not a terminal."""

    def __init__(self, client: Any, total: int, what: str = "calibrating",
                 stream: TextIO | None = None, enabled: bool = True):
        self.client, self.total, self.what = client, total, what
        self.stream = stream or sys.stderr
        self.active = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self.done_shards = 0
        self.samples = 0
        self._last = 0.0

    def line(self) -> str:
        rate = self.samples / max(time.monotonic() - self.start, 1e-9)
        text = f"{self.what}: {self.done_shards}/{self.total} shards, {rate:.0f} samples/s"
        mem = _worker_memory(self.client)
        if mem:
            text += f", {len(mem)} workers {min(mem) >> 20}-{max(mem) >> 20} MiB"
        return text

    def step(self, samples: int) -> None:
        self.done_shards += 1
        self.samples += samples
        now = time.monotonic()
        if not self.active or (now - self._last < 0.5 and self.done_shards != self.total):
            return
        self._last = now
        self.stream.write("\r" + self.line()[:100].ljust(100))
        self.stream.flush()

    def close(self) -> None:
        if self.active:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
