"""The Dask flags of ``aicc quantize`` (``--dask ADDRESS``, ``--dask-ship-data``): calibration
runs in shards on a Dask cluster (``local``, ``local:N`` or a scheduler address) and gives the same
profile. (``aicc compile`` takes the same options from the ``dask`` feature plugin,
``aicc.features.dask``.)
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from .flags import Flag

__all__ = ["FLAGS", "calibrate_options"]

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
