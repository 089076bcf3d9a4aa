"""Sharded calibration on Dask: samples in, split into shards of whole blocks, calibrated by the
workers, partial observers back, one profile out, equal to the one-process profile.

Why the result is the same profile, not an approximation of it:

- a shard is a run of whole ``BLOCK``-sample blocks, and a block's engine runs depend only on its
  own samples (``Calibration``): each worker computes, bit for bit, the activations one process
  computes for those samples (same engine, same model bytes, same stacking groups);
- observers keep exact integer counts on a power-of-two bin lattice and exact min/max
  (``LatticeHistogram``), so merging shards in any order gives the state one process reaches;
  the profile's ``[min, max]`` histogram is read from that state. So every calibration method
  (min-max, percentile, KL, MSE, SQNR) sees the same profile, and the quantized model is the
  same bytes. (The only float rounding left is inside the engine, which is the same code.)

Workers load the program once per process (kept by key) and find the engine among the built-in
backends by name (``aicc.backend.Observers``), and read input-list files by path (a
shared filesystem), or get the arrays from the client (``ship_data``; always for Python samples
and ``-json-input-file`` entries, which the client has already read). A shard naming a missing or
malformed file fails with the usual one-line error (file and list line), every other shard is
cancelled and no profile is made; so does Ctrl-C. A worker that dies is replaced by Dask, which
re-runs its shards (calibration is pure, so the result is unchanged).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aicc.program import Program
from aicc.quant import Profile, TensorObserver

from aicc.passes.quantization.runner import (BLOCK, Calibration, _float_activations, check_calibration_args,
                            host_conversion, profile_of)

__all__ = ["calibrate_sharded", "list_items", "array_items", "default_shard_size"]

logger = logging.getLogger(__name__)

#: Largest default shard (samples): bounds the work a lost worker takes with it.
_MAX_DEFAULT_SHARD = 64 * BLOCK

#: Per worker process: the last program calibrated (key -> (program, engine cache)).
_WORKER_STATE: dict[str, tuple[Program, dict]] = {}


# ------------------------------------------------------------------------------ sample items
def list_items(path: str | Path, program: Program, ship_data: bool) -> tuple[int, Iterator]:
    """An input list as shard items: ``("paths", where, {input: path})`` read by the worker, or
    ``("arrays", None, feeds)`` read here when the data is shipped. The list is parsed (and every
    file's existence checked) before anything is submitted."""
    from aicc.data import parse_input_list, program_input_descs, read_tensor_file

    descs = {d.name: d for d in program_input_descs(program, interface=True)}
    lst = parse_input_list(path, list(descs))

    def items() -> Iterator[tuple[str, str | None, dict]]:
        for line, sample in zip(lst.lines, lst.samples):
            where = f"{lst.path}: line {line}"
            if ship_data:
                yield "arrays", None, {n: read_tensor_file(p, descs[n], where=where)
                                       for n, p in sample.items()}
            else:
                yield "paths", where, {n: str(p) for n, p in sample.items()}
    return len(lst.samples), items()


def array_items(samples: Iterable[Mapping[str, np.ndarray]]) -> Iterator:
    return (("arrays", None, feeds) for feeds in samples)


def default_shard_size(total: int | None, workers: int) -> int:
    """Whole blocks, about four shards per worker, at most ``_MAX_DEFAULT_SHARD`` samples."""
    if not total:
        return 4 * BLOCK
    blocks = -(-total // BLOCK)
    per = -(-blocks // max(1, 4 * workers))
    return min(per * BLOCK, _MAX_DEFAULT_SHARD)


# ------------------------------------------------------------------------------ worker side
def _payload(program: Program) -> dict[str, Any]:
    return {"meta": program.meta(),
            "models": {n: program.to_model(n).SerializeToString() for n in program.graphs}}


def _worker_program(payload: dict[str, Any], key: str) -> tuple[Program, dict]:
    state = _WORKER_STATE.get(key)
    if state is None:
        import onnx

        from aicc import ir
        graphs = {n: ir.import_graph(onnx.load_model_from_string(b))
                  for n, b in payload["models"].items()}
        _WORKER_STATE.clear()
        state = _WORKER_STATE[key] = (Program.from_meta(graphs, payload["meta"]), {})
    return state


def _shard_feeds(program: Program, items: list) -> Iterator[Mapping[str, np.ndarray]]:
    """Feed dicts of a shard; files named by path are all checked before the first is read."""
    from aicc.data import check_tensor_file, program_input_descs, read_tensor_file
    from aicc.passes.quantization.samples import SYMBOLIC_HINT

    descs = {d.name: d for d in program_input_descs(program, interface=True)}
    for kind, where, sample in items:
        if kind == "paths":
            for n, p in sample.items():
                check_tensor_file(p, descs[n], where=where, symbolic_hint=SYMBOLIC_HINT)
    for kind, where, sample in items:
        if kind == "paths":
            yield {n: read_tensor_file(p, descs[n], where=where) for n, p in sample.items()}
        else:
            yield sample


def _identity(value: Any) -> Any:
    return value


def _shrink(observer: TensorObserver) -> TensorObserver:
    """Counts in the smallest integer type that holds them (what travels back is small)."""
    if observer.lattice is None:        # range only: nothing to shrink
        return observer
    counts = observer.lattice.counts
    observer.lattice.counts = counts.astype(np.min_scalar_type(int(counts.max(initial=0))))
    return observer


def run_shard(payload: Any, key: str, start: int, items: list, options: dict) -> dict[str, Any]:
    """Calibrate one shard on a worker: its observers, samples per graph and sample count."""
    program, engines = _worker_program(payload, key)
    cal = Calibration(program, num_bins=options["num_bins"], batch=options["batch"],
                      engine=options["engine"], engines=engines,
                      histograms=options["histograms"], observe=options["observe"])
    convert = host_conversion(program)
    for offset, feeds in enumerate(_shard_feeds(program, items)):
        cal.add(start + offset, convert(dict(feeds)) if convert is not None else feeds)
    return {"observers": [_shrink(o) for o in cal.finish()], "counts": cal.counts,
            "seen": cal.seen}


# ------------------------------------------------------------------------------ client side
def _shards(items: Iterator, size: int, max_samples: int) -> Iterator[tuple[int, list]]:
    if max_samples:
        items = itertools.islice(items, max_samples)
    start = 0
    while True:
        chunk = list(itertools.islice(items, size))
        if not chunk:
            return
        yield start, chunk
        start += len(chunk)


class _Merger:
    def __init__(self) -> None:
        self.observers: dict[str, TensorObserver] = {}
        self.counts: dict[str, int] = {}
        self.seen = 0

    def add(self, part: dict[str, Any]) -> None:
        for o in part["observers"]:
            mine = self.observers.get(o.name)
            if mine is None:
                if o.lattice is not None:
                    o.lattice.counts = o.lattice.counts.astype(np.int64)
                self.observers[o.name] = o
            else:
                mine.merge(o)
        for name, n in part["counts"].items():
            self.counts[name] = self.counts.get(name, 0) + n
        self.seen += part["seen"]


def calibrate_sharded(program: Program, items: Iterator, client_spec: Any, *,
                      total: int | None = None, num_bins: int, batch: int = 0,
                      engine: str = "auto", max_samples: int = 0,
                      shard_size: int = 0, progress: bool = True, histograms: bool = True,
                      observe: Iterable[str] | None = None) -> Profile:
    """The profile of ``items`` (from ``list_items`` / ``array_items``) calibrated on Dask.

    ``client_spec``: ``local``, ``local:N``, a scheduler address or a ``distributed.Client``.
    ``shard_size``: samples per shard, rounded up to whole blocks (0: ``default_shard_size``).
    At most two shards per worker are in flight, so a generator is read as the work goes.
    ``histograms`` and ``observe``: as ``calibrate_program``'s.
    """
    from aicc.distributed import DaskProgress, dask_client, import_distributed

    check_calibration_args(engine, num_bins)
    distributed = import_distributed()
    if max_samples and total:
        total = min(total, max_samples)
    body = _payload(program)
    digest = hashlib.sha256(json.dumps(body["meta"], sort_keys=True, default=str).encode())
    for name in sorted(body["models"]):
        digest.update(name.encode() + b"\0" + body["models"][name])
    key = digest.hexdigest()        # the worker's program cache: exactly this program
    options = {"num_bins": num_bins, "batch": batch, "engine": engine,
               "histograms": histograms,
               "observe": None if observe is None else sorted(observe)}
    merger = _Merger()
    with dask_client(client_spec) as client:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        size = -(-shard_size // BLOCK) * BLOCK if shard_size else \
            default_shard_size(total, workers)
        n_shards = -(-total // size) if total else 0
        # a task (not scattered data): a worker that dies with it does not lose it for good,
        # the scheduler recomputes it from the task; workers then copy it from each other
        payload = client.submit(_identity, body, pure=False, key=f"aicc-calibrate-program-{key}")
        bar = DaskProgress(client, n_shards, enabled=progress)
        pending = distributed.as_completed()
        in_flight: list[Any] = []
        # one id per call: a shared scheduler treats an existing key as the same task, so two
        # calibrations of one model with other data must never share shard names
        run_id = uuid.uuid4().hex[:12]
        try:
            for start, chunk in _shards(items, size, max_samples):
                # the shard travels inside its task (not scattered): if its worker dies, the
                # scheduler still holds it and re-runs the task elsewhere
                with warnings.catch_warnings():     # "large object in task graph": on purpose
                    warnings.simplefilter("ignore", UserWarning)
                    fut = client.submit(run_shard, payload, key, start, chunk, options,
                                        pure=False,
                                        key=f"aicc-calibrate-shard-{start}-{key[:8]}-{run_id}")
                in_flight.append(fut)
                pending.add(fut)
                while pending.count() >= 2 * workers:
                    _collect(next(pending), merger, bar, in_flight)
            for fut in pending:
                _collect(fut, merger, bar, in_flight)
        except BaseException:       # a failed shard, Ctrl-C: nothing more runs, nothing is kept
            client.cancel(in_flight, force=True)
            raise
        finally:
            bar.close()
    names: list[str] = []
    for graph in program.graphs.values():
        names += [n for n in _float_activations(graph) if n not in names]
    counts = {n: merger.counts.get(n, 0) for n in program.graphs}
    observers = [merger.observers[n] for n in names if n in merger.observers]
    skipped = [n for n in names if observe is not None and n not in observe]
    return profile_of(program, observers, counts, merger.seen, skipped)


def _collect(fut: Any, merger: _Merger, bar: Any, in_flight: list) -> None:
    part = fut.result()             # re-raises a shard's error (DataError: file and line)
    in_flight.remove(fut)
    merger.add(part)
    bar.step(part["seen"])
