"""Network specialization: ``specializations`` (``-network-specialization-config``),
``json_input_file`` (``-json-input-file``) and ``retained_state`` (``-retained-state``).

``specializations`` adds the ``specialize`` pass (placed after the symbol bindings, so
``-onnx-define-symbol`` values bind first); the file is read once, here, and the pass receives
the parsed config. ``json_input_file`` (the vendor runner's format) is checked against the compiled
specializations (every inference must fit one) and, on the CLI without ``-compile-only``, drives
the post-compile run instead of random data; calibration reads it as its samples.
``retained_state`` keeps ``X_RetainedState`` outputs inside the session and feeds them back as
input ``X`` (recorded in the manifest).

As the vendor documents, specializations need host pre-/postprocessing, so ``aic_preproc`` is
refused with them, and their data comes from ``json_input_file``, not ``input_list``.
"""

from __future__ import annotations

from ..config import Option
from ..errors import UsageError, option_ref
from ..hookspecs import hookimpl
from ..specconfig import SpecializationFile

__all__ = ["OPTIONS"]

OPTIONS = [
    Option("specializations", SpecializationFile, "compile one specialization per entry of "
           "this JSON file; run time picks the one whose input shapes match",
           flags=("-network-specialization-config", "--network-specialization-config"),
           path=True, metavar="FILE"),
    Option("json_input_file", str, "inference inputs in the vendor runner's JSON form (one list "
           "per inference); checked against the specializations, used instead of random data",
           flags=("-json-input-file", "--json-input-file"), path=True, metavar="FILE"),
    Option("retained_state", bool, "keep outputs named X_RetainedState in the session and feed "
           "them back as input X (LLM KV cache)", flags=("-retained-state", "--retained-state")),
]


@hookimpl
def aicc_add_options(options):
    options.add(*OPTIONS)


@hookimpl
def aicc_configure(config, request):
    spec = config.get("specializations")
    if spec is not None:
        if config.get("aic_preproc", None):
            raise UsageError(f"{option_ref('aic_preproc')} cannot be used with "
                             f"{option_ref('specializations')}",
                             hint="specializations need host pre-/postprocessing")
        if config.given("input_list"):
            raise UsageError(f"{option_ref('input_list')} cannot be used with "
                             f"{option_ref('specializations')}",
                             hint=f"give the data as {option_ref('json_input_file')}, one input "
                                  "set per inference")
        request.add_pass("specialize", {"config": spec}, by="specializations")
    if config.given("json_input_file"):
        request.json_input_file = config.get("json_input_file")
    if config.get("retained_state"):
        request.retained_state = True
