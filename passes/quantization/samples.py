"""Calibration samples: an input list, the vendor's JSON input file or custom-I/O host conversion
in; checked, streamed feed dicts out (read one sample at a time)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from aicc.errors import option_ref
from aicc.data import check_tensor_file, parse_input_list, read_tensor_file
from aicc.program import Program, TensorDesc

__all__ = ["input_list_samples", "json_input_samples", "host_conversion", "SYMBOLIC_HINT"]

SYMBOLIC_HINT = (f"bind it with {option_ref('input_shapes')} or {option_ref('symbols')}, or use "
                 ".npy files")


def input_list_samples(path: str | Path, inputs: list[TensorDesc]
                       ) -> tuple[int, Callable[[], Iterator[dict[str, np.ndarray]]]]:
    """An input list checked in full (every file's size or header against ``inputs``) and a
    factory of a stream of feed dicts that reads one sample's files at a time.

    Returns ``(number of samples, factory)``; nothing is read before the check passed.
    """
    descs = {d.name: d for d in inputs}
    lst = parse_input_list(path, list(descs))
    for line, sample in zip(lst.lines, lst.samples):
        for name, file in sample.items():
            check_tensor_file(file, descs[name], where=f"{lst.path}: line {line}",
                              symbolic_hint=SYMBOLIC_HINT)

    def stream() -> Iterator[dict[str, np.ndarray]]:
        for line, sample in zip(lst.lines, lst.samples):
            yield {n: read_tensor_file(p, descs[n], where=f"{lst.path}: line {line}")
                   for n, p in sample.items()}
    return len(lst.samples), stream


def json_input_samples(path: str | Path, program: Program
                       ) -> tuple[int, Callable[[], Iterator[dict[str, np.ndarray]]]]:
    """Samples of the vendor's JSON input file (``-json-input-file``), read and checked by
    ``aicc.data.parse_json_input_file``: every inference must fit a specialization and every
    specialization needs at least one inference."""
    from aicc.data import parse_json_input_file, program_input_descs, spec_input_shapes

    samples = parse_json_input_file(path, program_input_descs(program, interface=True),
                                    shapes=spec_input_shapes(program, interface=True),
                                    require_all_shapes=True)
    return len(samples), lambda: iter(samples)


def host_conversion(program: Program) -> Callable[[dict], dict] | None:
    """Custom I/O converted on the host: samples come as callers give them (custom dtype and
    layout) and are converted to the graph's inputs, as the Session does at run time."""
    if not program.custom_io:
        return None
    from aicc.customio import HostConversions
    host = HostConversions.from_meta({"custom_io": program.custom_io})
    return host.convert if host is not None and host.host else None
