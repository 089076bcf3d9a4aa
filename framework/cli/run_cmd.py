"""``aicc run``: run a container on raw/.npy inputs, an input list, a JSON input file, or random
data.

With several specializations each inference runs the one whose input shapes match its data, and
the specialization that ran is printed; ``-json-input-file`` (the vendor runner's format) says the
shape of every buffer, so it suits specializations best.

Prints the latency of each inference and inferences per second. ``--write-output-dir`` receives one
raw file per output per inference (plus ``.npy`` with ``--write-output-format npy``), written to a
temporary sibling (each file written, fsynced and its size checked: a full disk is an error, never
an empty file) and renamed at the end. Files are named after the outputs, sanitised; outputs whose
sanitised names would collide (``a/b`` and ``a_b``) get a suffix of their name's hash instead.

``--plugins FILE`` loads the plugins a container's backend comes from, as ``aicc compile`` does.

A backend may add its own figures: the lines of ``Executable.stats()["report"]`` are printed after
the run (a simulated device reports inferences per second, latency, core utilization, DDR
traffic), and the JSON files of ``stats()["files"]`` (a profiling trace) go to
``--aic-profiling-out-dir`` or else ``--write-output-dir``. ``-a N`` runs N activations on a
backend that simulates them (its options have ``activations``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data import (merged_input_descs, parse_input_args, parse_input_list,
                    parse_json_input_file, read_tensor_file)
from ..errors import UsageError
from ..fileio import (fsync_dir, output_error, unique_file_names, write_array, write_npy,
                      write_text)
from ..plugins import load_registries
from ..runtime import Session
from .flags import Flag, FlagParser, int_value

__all__ = ["run_run"]

RUN_FLAGS = [
    Flag(("-t", "--test-data", "--qpc"), "qpc", help="the container directory", metavar="DIR"),
    Flag(("-i", "--input-file"), "inputs", "repeat",
         help="an input file (raw or .npy), in input order or NAME:=FILE", metavar="FILE"),
    Flag(("--input-list-file", "--input_list"), "input_list",
         help="a QNN-style input list: one inference per line", metavar="FILE"),
    Flag(("-json-input-file", "--json-input-file"), "json_input",
         help="inputs in the vendor runner's JSON form: one list of buffers per inference",
         metavar="FILE"),
    Flag(("--write-output-dir",), "output_dir", help="write every output here", metavar="DIR"),
    Flag(("--write-output-format",), "output_format", help="raw (default) or npy (raw + .npy)",
         metavar="raw|npy"),
    Flag(("-n", "--num-iter"), "iterations", convert=int_value("-n"),
         help="number of inferences (default: one per input set, or 1)", metavar="N"),
    Flag(("--backend",), "backend", help="run on another backend than the one compiled for",
         metavar="NAME"),
    Flag(("-a", "--aic-num-of-activations"), "activations", convert=int_value("-a"),
         help="copies of the program on their own cores (backends that simulate a device)",
         metavar="N"),
    Flag(("--aic-profiling-out-dir",), "profiling_dir",
         help="folder for profiling files a backend produces (default: --write-output-dir)",
         metavar="DIR"),
    Flag(("--plugins",), "plugins", "repeat",
         help="a TOML file of extra plugin modules (e.g. the container's backend)",
         metavar="FILE"),
    Flag(("-h", "--help"), "help", "switch", help="show this help"),
]


def run_run(argv: Sequence[str]) -> int:
    parser = FlagParser("run", RUN_FLAGS)
    args = parser.parse(argv)
    if args["help"]:
        print(parser.help_text())
        return 0
    fmt = _check_args(args)
    session = _open_session(args)
    samples = _read_samples(args, session)
    count = args["iterations"] if args["iterations"] is not None else len(samples)
    if count <= 0:
        raise UsageError(f"{count} is not a positive number of inferences", where="-n")
    latencies, wall, stats, written = _run_and_write(session, samples, count, args, fmt)
    _print_summary(count, latencies, wall, stats, written)
    return 0


def _check_args(args: dict) -> str:
    """Refuse what cannot run before opening anything; returns the output format."""
    if not args["qpc"]:
        raise UsageError("no container given", where="aicc run", hint="pass -t DIR")
    fmt = args["output_format"] or "raw"
    if fmt not in ("raw", "npy"):
        raise UsageError(f"unknown format {fmt!r}", where="--write-output-format",
                         hint="raw or npy")
    given = [f for f, k in (("-i", "inputs"), ("--input-list-file", "input_list"),
                            ("-json-input-file", "json_input")) if args[k]]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} both given", where="aicc run",
                         hint="give the inputs one way")
    return fmt


def _open_session(args: dict) -> Session:
    """The container's Session on the chosen backend (plugins loaded, ``-a`` applied)."""
    registries = load_registries(args["plugins"]) if args["plugins"] else None
    session = Session(args["qpc"], args["backend"], registries=registries)
    if "float16" in session.program_meta.get("node_precision", {}).values() and \
            not session.backend.fp16_as_device:
        print(f"note: backend '{session.backend_name}' computes this fp16 program "
              f"{session.backend.fp16_compute}; results can differ from the device's "
              "(--backend interpreter computes as the device does)")
    if args["activations"] is not None:
        session = _with_activations(session, args["activations"])
    return session


def _read_samples(args: dict, session: Session) -> list[dict[str, np.ndarray]]:
    """The input sets, one per inference: from the JSON file, the -i files, the input list, or
    one random set."""
    held = {i for i, _ in session.retained}
    merged = merged_input_descs([[d for d in s.inputs if d.name not in held]
                                 for s in session.specs])
    descs = {d.name: d for d in merged}
    names = list(descs)
    if args["json_input"]:
        return parse_json_input_file(args["json_input"], merged, shapes={
            s.name: {d.name: d.shape for d in s.inputs} for s in session.specs})
    if args["inputs"]:
        files = parse_input_args(args["inputs"], names)
        return [{n: read_tensor_file(p, descs[n], where=f"-i {p}") for n, p in files.items()}]
    if args["input_list"]:
        lst = parse_input_list(args["input_list"], names)
        return [{n: read_tensor_file(p, descs[n], where=f"{lst.path}: line {line}")
                 for n, p in sample.items()} for line, sample in zip(lst.lines, lst.samples)]
    return [_random_sample(session)]


def _random_sample(session: Session) -> dict[str, np.ndarray]:
    """Seeded standard-normal floats (zeros for other dtypes), symbolic dimensions set to 1."""
    rng = np.random.default_rng(0)
    sample = {}
    for d in session.inputs:
        shape = [s if isinstance(s, int) else 1 for s in (d.shape or [])]
        dtype = np.dtype(d.dtype)
        sample[d.name] = (rng.standard_normal(shape).astype(dtype) if dtype.kind == "f"
                          else np.zeros(shape, dtype))
    return sample


def _run_and_write(session: Session, samples: list[dict[str, np.ndarray]], count: int,
                   args: dict, fmt: str) -> tuple[list[float], float, dict, list[Path]]:
    """Run ``count`` inferences, writing outputs and backend files; the output folder appears
    complete or not at all. Returns (latencies, wall seconds, backend stats, files written)."""
    out_tmp = None
    stems = unique_file_names([d.name for s in session.specs for d in s.outputs])
    if args["output_dir"]:
        out_tmp = _output_tmp(Path(args["output_dir"]))
    try:
        latencies, wall = _infer(session, samples, count, out_tmp, stems, fmt)
        stats = session.stats()
        files_dir = Path(args["profiling_dir"]) if args["profiling_dir"] else out_tmp
        written = [p if files_dir != out_tmp else Path(args["output_dir"]) / p.name
                   for p in _write_backend_files(stats, files_dir)]
        if out_tmp is not None:
            _commit_outputs(out_tmp, Path(args["output_dir"]))
            out_tmp = None
    finally:
        if out_tmp is not None:
            shutil.rmtree(out_tmp, ignore_errors=True)
    return latencies, wall, stats, written


def _infer(session: Session, samples: list[dict[str, np.ndarray]], count: int,
           out_tmp: Path | None, stems: dict[str, str], fmt: str) -> tuple[list[float], float]:
    """The inference loop: prints each latency, writes each output into ``out_tmp``."""
    latencies = []
    total_start = time.perf_counter()
    for i in range(count):
        outputs = session.run(samples[i % len(samples)])
        latencies.append(session.last_latency_s)
        print(f"inference {i}: {session.last_latency_s * 1e3:.3f} ms "
              f"(specialization '{session.last_specialization}')")
        if out_tmp is not None:
            for name, arr in outputs.items():
                stem = f"{stems[name]}-inf-{i}"
                write_array(out_tmp / f"{stem}.raw", arr)
                if fmt == "npy":
                    write_npy(out_tmp / f"{stem}.npy", arr)
    return latencies, time.perf_counter() - total_start


def _print_summary(count: int, latencies: list[float], wall: float, stats: dict,
                   written: list[Path]) -> None:
    mean = sum(latencies) / len(latencies)
    print(f"{count} inference(s): mean latency {mean * 1e3:.3f} ms, "
          f"{count / wall:.1f} inferences/second")
    for name, spec_stats in stats.items():  # a backend's own figures (e.g. a simulated device)
        lines = spec_stats.get("report") or []
        if lines and len(stats) > 1:
            print(f"specialization '{name}':")
        for line in lines:
            print(line)
    for path in written:
        print(f"wrote {path}")
    if not written and any(st.get("files") for st in stats.values()):
        print("profiling files not written: pass --aic-profiling-out-dir DIR or "
              "--write-output-dir DIR")


def _output_tmp(target: Path) -> Path:
    """The temporary sibling that collects ``--write-output-dir``'s files before the rename."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError("exists and is not an empty directory", where=target,
                         hint="choose a new output directory")
    parent = target.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"parent folder '{target.parent}' does not exist",
                         where="--write-output-dir", hint="create it first")
    try:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    except OSError as e:
        raise output_error(target, e) from None


def _commit_outputs(tmp: Path, target: Path) -> None:
    try:
        if target.exists():
            target.rmdir()
        os.rename(tmp, target)
    except OSError as e:
        raise output_error(target, e, "cannot move the outputs into place") from None
    fsync_dir(target)
    fsync_dir(target.resolve().parent)


def _with_activations(session: Session, count: int) -> Session:
    """The session again, its backend running ``count`` activations (``-a``)."""
    import dataclasses

    if count <= 0:
        raise UsageError(f"{count} is not a positive number of activations", where="-a")
    fields = {f.name for f in dataclasses.fields(session.backend.Options)}
    if "activations" not in fields:
        raise UsageError(f"backend '{session.backend_name}' runs one activation", where="-a",
                         hint="-a applies to a simulated device (backend aic100)")
    options = {**dataclasses.asdict(session.backend.options), "activations": count}
    return Session(session.path, session.backend_name, backend_options=options,
                   registries=session.registries)


def _write_backend_files(stats: dict, folder: Path | None) -> list[Path]:
    """Write the files backends return in ``stats()["files"]`` (JSON data) into ``folder``."""
    import json

    wanted = [(spec, name, data) for spec, st in stats.items()
              for name, data in (st.get("files") or {}).items()]
    if not wanted or folder is None:
        return []
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the folder: {e.strerror}",
                         where=folder) from None
    keys = [f"{spec}-{name}" if len(stats) > 1 else name for spec, name, _ in wanted]
    stems = unique_file_names(keys)
    out = []
    for key, (_, _, data) in zip(keys, wanted):
        file = folder / stems[key]
        write_text(file, json.dumps(data) + "\n")
        out.append(file)
    return out
