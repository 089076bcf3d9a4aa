"""The aic100 target's compile options: ``-aic-hw`` (sets ``target`` to ``aic100``, as
``--backend aic100`` does) and the device options ``hw_version`` (``-aic-hw-version``),
``num_cores`` (``-aic-num-cores``), ``ols``, ``mos``, ``multicast_weights``, ``stats_batchsize``,
``profiling`` (``-aic-profiling-type``), ``size_split_granularity``,
``vtcm_working_set_limit_ratio`` and ``depth_first`` (``-aic-enable-depth-first``).

Each becomes the aic100 backend option of the same name (``aicc backends`` lists them); without
the aic100 target they are refused, since they would do nothing. The version, the card and the
core count are checked against the hardware descriptions when the backend is built, before any
work. An option also given as ``backend_options`` is refused as a contradiction.
"""

from __future__ import annotations

from aicc.config import Option
from aicc.errors import UsageError, option_ref
from aicc.hookspecs import hookimpl

__all__ = ["OPTIONS"]


def _ratio(value: float) -> float:
    if not 0.0 < value <= 1.0:
        raise UsageError(f"{value} is not in (0, 1]",
                         hint="the fraction of each core's VTCM the plan may use")
    return value


OPTIONS = [
    Option("hw_version", str, "hardware version (2.0: AIC100)",
           flags=("-aic-hw-version", "--aic-hw-version"), metavar="VERSION"),
    Option("num_cores", int, "AI cores one activation runs on",
           flags=("-aic-num-cores", "--aic-num-cores"), minimum=1, metavar="N"),
    Option("ols", int, "split operations into N times more pieces for finer parallelism",
           flags=("-ols", "--ols"), minimum=1, metavar="N"),
    Option("mos", int, "effort to reduce on-chip memory use (resident VTCM divided by N)",
           flags=("-mos", "--mos"), minimum=1, metavar="N"),
    Option("multicast_weights", bool, "read DDR tensors several cores need once and multicast "
           "them", flags=("-multicast-weights", "--multicast-weights")),
    Option("stats_batchsize", int, "samples per inference in the reported throughput",
           flags=("-stats-batchsize", "--stats-batchsize"), minimum=1, metavar="N"),
    Option("profiling", str, "device profiling: stats (per-op table), trace (Chrome trace), "
           "latency (percentiles)", choices=("stats", "trace", "latency"),
           flags=("-aic-profiling-type", "--aic-profiling-type"), metavar="stats|trace|latency"),
    Option("size_split_granularity", int, "tile size in KiB for streaming tensors through VTCM "
           "(512 to 2048)", flags=("-size-split-granularity", "--size-split-granularity"),
           minimum=512, maximum=2048, metavar="KIB"),
    Option("vtcm_working_set_limit_ratio", float, "fraction of each core's VTCM the plan may "
           "use (0 to 1]", check=_ratio, flags=("-vtcm-working-set-limit-ratio",
                                                "--vtcm-working-set-limit-ratio"), metavar="R"),
    Option("depth_first", bool, "run chains of row-split ops tile by tile, keeping "
           "intermediates on chip", flags=("-aic-enable-depth-first", "--aic-enable-depth-first")),
]


@hookimpl
def aicc_add_options(options):
    options.alias("target", ("-aic-hw", "--aic-hw"), "aic100",
                  "compile for the (simulated) Cloud AI 100 device instead of the host")
    options.add(*OPTIONS)


@hookimpl
def aicc_configure(config, request):
    given = [o.name for o in OPTIONS if config.given(o.name)]
    target = config.get("target")
    if target != "aic100":
        if given:
            raise UsageError(f"{option_ref(given[0])} configures the AIC100 device, but the "
                             f"program runs on the host (backend '{target}')",
                             hint="add -aic-hw (target='aic100') to compile for the device")
        return
    for name in given:
        request.set_backend_option(name, config.get(name), key=name)
