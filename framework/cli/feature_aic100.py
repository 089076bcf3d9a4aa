"""Device flags of ``aicc compile`` turned into the ``aic100`` backend and its options: ``-aic-hw``,
``-aic-hw-version``, ``-aic-num-cores``, ``-ols``, ``-mos``, ``-multicast-weights``,
``-stats-batchsize``, ``-aic-profiling-type``, ``-size-split-granularity``,
``-vtcm-working-set-limit-ratio`` and ``-aic-enable-depth-first``.

``-aic-hw`` compiles for the simulated device (``--backend aic100`` does the same); without it the
program runs on the host and the other device flags are refused, since they would do nothing.
Values are checked here, before any work; the version, the card (``--backend-option sku=pro``)
and the core count are checked against the hardware descriptions when the backend is built, which
also happens before any work. A flag and a
``--backend-option`` setting the same option are refused as a contradiction.
"""

from __future__ import annotations

from typing import Any

from ..compiler import CompileRequest
from ..errors import UsageError
from .flags import Flag, int_value

__all__ = ["FLAGS", "contribute", "OPTION_OF"]

PROFILING_TYPES = ("stats", "trace", "latency")


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a number", where="-vtcm-working-set-limit-ratio") \
            from None
    if not 0.0 < value <= 1.0:
        raise UsageError(f"{text} is not in (0, 1]", where="-vtcm-working-set-limit-ratio",
                         hint="the fraction of each core's VTCM the plan may use")
    return value


FLAGS = [
    Flag(("-aic-hw", "--aic-hw"), "aic_hw", "switch",
         help="compile for the (simulated) Cloud AI 100 device instead of the host"),
    Flag(("-aic-hw-version", "--aic-hw-version"), "aic_hw_version",
         help="hardware version (2.0: AIC100)", metavar="VERSION"),
    Flag(("-aic-num-cores", "--aic-num-cores"), "aic_num_cores",
         convert=int_value("-aic-num-cores"), help="AI cores one activation runs on",
         metavar="N"),
    Flag(("-ols", "--ols"), "ols", convert=int_value("-ols"),
         help="split operations into N times more pieces for finer parallelism", metavar="N"),
    Flag(("-mos", "--mos"), "mos", convert=int_value("-mos"),
         help="effort to reduce on-chip memory use (resident VTCM divided by N)", metavar="N"),
    Flag(("-multicast-weights", "--multicast-weights"), "multicast_weights", "switch",
         help="read DDR tensors several cores need once and multicast them"),
    Flag(("-stats-batchsize", "--stats-batchsize"), "stats_batchsize",
         convert=int_value("-stats-batchsize"),
         help="samples per inference in the reported throughput", metavar="N"),
    Flag(("-aic-profiling-type", "--aic-profiling-type"), "aic_profiling_type",
         help="device profiling: stats (per-op table), trace (Chrome trace), latency "
              "(percentiles)", metavar="stats|trace|latency"),
    Flag(("-size-split-granularity", "--size-split-granularity"), "size_split_granularity",
         convert=int_value("-size-split-granularity"),
         help="tile size in KiB for streaming tensors through VTCM (512 to 2048)",
         metavar="KIB"),
    Flag(("-vtcm-working-set-limit-ratio", "--vtcm-working-set-limit-ratio"),
         "vtcm_working_set_limit_ratio", convert=_ratio,
         help="fraction of each core's VTCM the plan may use (0 to 1)", metavar="R"),
    Flag(("-aic-enable-depth-first", "--aic-enable-depth-first"), "aic_enable_depth_first",
         "switch", help="run chains of row-split ops tile by tile, keeping intermediates on chip"),
]

#: flag spelling -> (args key, backend option)
OPTION_OF = {
    "-aic-hw-version": ("aic_hw_version", "hw_version"),
    "-aic-num-cores": ("aic_num_cores", "num_cores"),
    "-ols": ("ols", "ols"),
    "-mos": ("mos", "mos"),
    "-multicast-weights": ("multicast_weights", "multicast_weights"),
    "-stats-batchsize": ("stats_batchsize", "stats_batchsize"),
    "-aic-profiling-type": ("aic_profiling_type", "profiling"),
    "-size-split-granularity": ("size_split_granularity", "size_split_granularity"),
    "-vtcm-working-set-limit-ratio": ("vtcm_working_set_limit_ratio",
                                      "vtcm_working_set_limit_ratio"),
    "-aic-enable-depth-first": ("aic_enable_depth_first", "depth_first"),
}

_POSITIVE = ("-aic-num-cores", "-ols", "-mos", "-stats-batchsize")


def _check(flag: str, value: Any) -> None:
    if flag in _POSITIVE and value <= 0:
        raise UsageError(f"{value} is not a positive integer", where=flag)
    if flag == "-size-split-granularity" and not 512 <= value <= 2048:
        raise UsageError(f"{value} KiB is outside 512 to 2048", where=flag)
    if flag == "-aic-profiling-type" and value not in PROFILING_TYPES:
        raise UsageError(f"unknown profiling type {value!r}", where=flag,
                         hint=f"one of {', '.join(PROFILING_TYPES)}")


def contribute(args: dict[str, Any], req: CompileRequest) -> None:
    """Select the aic100 backend and pass the device flags on as its options."""
    given = {flag: args.get(key) for flag, (key, _) in OPTION_OF.items()
             if args.get(key) is not None and args.get(key) is not False}
    explicit = args.get("backend")
    device = bool(args.get("aic_hw")) or explicit == "aic100"
    if args.get("aic_hw") and explicit not in (None, "aic100"):
        raise UsageError(f"-aic-hw compiles for the aic100 device but --backend says "
                         f"'{explicit}'", where="aicc compile",
                         hint="drop one of them")
    if not device:
        if given:
            flag = next(iter(given))
            raise UsageError(f"{flag} configures the AIC100 device, but the program runs on the "
                             f"host (backend '{req.backend}')", where="aicc compile",
                             hint="add -aic-hw to compile for the device")
        return
    options = dict(req.backend_options)
    for flag, value in given.items():
        _check(flag, value)
        name = OPTION_OF[flag][1]
        if name in options:
            raise UsageError(f"{flag} and --backend-option {name}=... both given",
                             where="aicc compile", hint="give it once")
        options[name] = value
    req.backend = "aic100"
    req.backend_options = options
