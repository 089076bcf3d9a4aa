"""Dask: ``dask`` (``-dask``/``--dask``: ``local``, ``local:N`` or a scheduler address) and
``dask_ship_data`` (``-dask-ship-data``). Calibration (if any) runs in shards there and gives the
same profile (the quantization feature passes the options to ``calibrate``); the specializations
(if several and a container is written) compile in parallel there, into the same bytes.
"""

from __future__ import annotations

from ..config import Option
from ..errors import UsageError, option_ref
from ..hookspecs import hookimpl

__all__ = ["OPTIONS"]


def _address(text: str) -> str:
    from ..distributed import parse_dask_spec
    parse_dask_spec(text)
    return text


OPTIONS = [
    Option("dask", str, "calibrate in shards and compile specializations in parallel on Dask: "
           "local (one worker per core), local:N, or a scheduler address such as "
           "tcp://HOST:8786 (pip install aicc[dask])", flags=("--dask", "-dask"),
           check=_address, metavar="ADDRESS"),
    Option("dask_ship_data", bool, "with dask: send the input files from here instead of "
           "workers reading them by path (no shared filesystem)",
           flags=("--dask-ship-data", "-dask-ship-data")),
]


@hookimpl
def aicc_add_options(options):
    options.add(*OPTIONS)


@hookimpl
def aicc_check_request(config, request):
    """Checks the Dask options are given for something (calibration, which the quantization
    feature asked for, or several specializations into a container); the work is done by the
    calibrate step and the compile driver (``request.dask``)."""
    if config.get("dask_ship_data") and not config.given("dask"):
        raise UsageError(f"{option_ref('dask_ship_data')} needs {option_ref('dask')}",
                         hint="add local:N or tcp://HOST:8786")
    if not config.given("dask"):
        return
    calibrating = request.pass_options("calibrate") is not None
    if config.get("dask_ship_data") and not calibrating:
        raise UsageError(f"{option_ref('dask_ship_data')} sends calibration data, and nothing "
                         "calibrates")
    specializations = config.get("specializations", None)
    several = specializations is not None and len(specializations.value) > 1
    if not calibrating and not (several and request.output):
        raise UsageError(f"{option_ref('dask')} runs calibration or compiles several "
                         "specializations into a container, and neither happens",
                         hint=f"add {option_ref('output')} with several specializations, or "
                              "calibrate")
    if not request.pipeline_only:
        request.dask = config.get("dask")
