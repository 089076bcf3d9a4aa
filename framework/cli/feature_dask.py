"""The Dask flags, declared once for ``aicc compile`` (``-dask=ADDRESS``, ``-dask-ship-data``)
and ``aicc quantize`` (``--dask ADDRESS``, ``--dask-ship-data``): calibration runs in shards on a
Dask cluster (``local``, ``local:N`` or a scheduler address) and gives the same profile; with
``aicc compile`` the specializations also compile in parallel there.

Both commands take ``FLAGS`` and read them with ``calibrate_options(args, where)``; for
``aicc compile`` this module is also a feature module (``contribute``), which adds the options to
the ``calibrate`` step the quantization flags asked for.
"""

from __future__ import annotations

from typing import Any

from ..compiler import CompileRequest
from ..errors import UsageError
from .flags import Flag

__all__ = ["FLAGS", "contribute", "calibrate_options"]

FLAGS = [
    Flag(("--dask", "-dask"), "dask",
         help="calibrate in shards on Dask: local (one worker per core), local:N, or a "
              "scheduler address such as tcp://HOST:8786 (pip install aicc[dask])",
         metavar="ADDRESS"),
    Flag(("--dask-ship-data", "-dask-ship-data"), "dask_ship_data", "switch",
         help="with --dask: send the input files from here instead of workers reading them "
              "by path (no shared filesystem)"),
]


def calibrate_options(args: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``calibrate`` pass options the Dask flags ask for (empty without ``--dask``)."""
    if args.get("dask_ship_data") and not args.get("dask"):
        raise UsageError("--dask-ship-data needs --dask", where=where,
                         hint="add --dask local:N or --dask tcp://HOST:8786")
    if not args.get("dask"):
        return {}
    from ..distributed import parse_dask_spec
    parse_dask_spec(args["dask"])
    opts: dict[str, Any] = {"dask": args["dask"]}
    if args.get("dask_ship_data"):
        opts["dask_ship_data"] = True
    return opts


def contribute(args: dict[str, Any], req: CompileRequest) -> None:
    """``-dask``: calibration (if any) runs in shards, and the specializations (if several and a
    container is written) compile in parallel, on the same cluster address."""
    opts = calibrate_options(args, "aicc compile")
    if not opts:
        return
    steps = [options for _, name, options in req.feature_steps if name == "calibrate"]
    if steps:
        steps[0].update(opts)
    elif opts.get("dask_ship_data"):
        raise UsageError("-dask-ship-data sends calibration data, and nothing calibrates",
                         where="-dask-ship-data")
    if not req.pipeline_only:
        req.dask = opts["dask"]
    if not steps and not req.output:
        raise UsageError("-dask runs calibration or compiles specializations into a "
                         "container, and neither happens", where="-dask",
                         hint="add -aic-binary-dir=DIR, or -dump-profile / -convert-to-quantize")
