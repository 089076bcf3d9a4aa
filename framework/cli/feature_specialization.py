"""Network specialization flags of ``aicc compile``: ``-network-specialization-config``,
``-json-input-file`` and ``-retained-state``, turned into the ``specialize`` pass and request
fields.

``-network-specialization-config=FILE`` adds ``specialize{config=FILE}`` at the ``specialize``
stage (after ``bind-symbols``, so ``-onnx-define-symbol`` values bind first); the file is checked
before any work. ``-json-input-file=FILE`` (vendor runner format) is checked against the compiled
specializations (every inference must fit one) and, without ``-compile-only``, drives the
post-compile run instead of random data; calibration reads it through
``aicc.data.parse_json_input_file``. ``-retained-state`` keeps ``X_RetainedState`` outputs inside
the session and feeds them back as input ``X`` (recorded in the manifest).

As the vendor documents, specializations need host pre-/postprocessing, so ``-aic-preproc`` is
refused with them, and their data comes from ``-json-input-file``, not ``-input-list-file``.
"""

from __future__ import annotations

from typing import Any

from ..compiler import CompileRequest
from ..errors import UsageError
from ..specconfig import parse_specialization_config
from .flags import Flag

__all__ = ["FLAGS", "contribute", "INPUT_LIST_DESTS", "PREPROC_DESTS"]

FLAGS = [
    Flag(("-network-specialization-config", "--network-specialization-config"),
         "network_specialization_config",
         help="compile one specialization per entry of this JSON file; run time picks the one "
              "whose input shapes match", metavar="FILE"),
    Flag(("-json-input-file", "--json-input-file"), "json_input_file",
         help="inference inputs in the vendor runner's JSON form (one list per inference); "
              "checked against the specializations, used instead of random data",
         metavar="FILE"),
    Flag(("-retained-state", "--retained-state"), "retained_state", "switch",
         help="keep outputs named X_RetainedState in the session and feed them back as input X "
              "(LLM KV cache)"),
]

#: ``args`` keys tried for other features' flags (``-input-list-file``, ``-aic-preproc``) when
#: no loaded feature module declares them; a module that does is found by the flag's spelling.
INPUT_LIST_DESTS = ("input_list_file", "input_list")
PREPROC_DESTS = ("aic_preproc",)


def _given(args: dict[str, Any], spelling: str, fallbacks: tuple[str, ...]) -> bool:
    """Whether the flag ``spelling`` (declared by any feature module, whatever its dest) or one
    of the ``fallbacks`` keys was given."""
    from .compile_cmd import COMPILE_FLAGS, _features

    for flag in COMPILE_FLAGS + [f for m in _features() for f in m.FLAGS]:
        if spelling in flag.names and args.get(flag.dest):
            return True
    return any(args.get(d) for d in fallbacks)


def contribute(args: dict[str, Any], req: CompileRequest) -> None:
    """Add the specialize pass and the request fields the flags ask for."""
    config = args.get("network_specialization_config")
    if config:
        if _given(args, "-aic-preproc", PREPROC_DESTS):
            raise UsageError("-aic-preproc cannot be used with -network-specialization-config",
                             where="aicc compile",
                             hint="specializations need host pre-/postprocessing")
        if _given(args, "-input-list-file", INPUT_LIST_DESTS):
            raise UsageError("-input-list-file cannot be used with "
                             "-network-specialization-config", where="aicc compile",
                             hint="give the data as -json-input-file, one input set per "
                                  "inference")
        parse_specialization_config(config)  # a bad file fails before any work starts
        req.feature_steps.append(("specialize", "specialize", {"config": str(config)}))
    if args.get("json_input_file"):
        req.json_input_file = args["json_input_file"]
    if args.get("retained_state"):
        req.retained_state = True
