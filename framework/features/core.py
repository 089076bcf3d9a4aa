"""The core options of a compile: the model, the backend, the output, the pipeline and its
instruments, symbols and the batch size. Declared through the same hook as every feature, so the
CLI, compile config files and ``aicc.compile`` spell them the same way.
"""

from __future__ import annotations

from typing import Any

from ..config import Option
from ..errors import UsageError, option_ref
from ..hookspecs import hookimpl
from ..options import parse_text_value
from ..specconfig import MAX_SYMBOL_VALUE

__all__ = ["OPTIONS"]


def _symbols(items: list[str]) -> list[str]:
    from aicc.passes.bind_symbols import parse_symbol_values
    parse_symbol_values(list(items))          # bad values fail before any work
    return list(items)


def _backend_options(value: Any) -> dict[str, Any]:
    """``--backend-option KEY=VALUE`` items or a mapping, as a mapping."""
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, Any] = {}
    for item in value:
        key, sep, text = str(item).partition("=")
        if not sep:
            raise UsageError(f"{item!r} is not KEY=VALUE", where=option_ref("backend_options"))
        out[key] = parse_text_value(text)
    return out


OPTIONS = [
    Option("model", Any, "the ONNX model: a path (or, in Python, bytes or a ModelProto)",
           flags=("-m", "-model", "--model"), path=True, metavar="PATH"),
    Option("target", str, "backend to compile for (default cpu); Python also takes backend=",
           flags=("--backend",), default="cpu", metavar="NAME"),
    Option("output", str, "the container directory to write",
           flags=("-aic-binary-dir", "--output", "-o"), path=True, metavar="DIR"),
    Option("backend_options", list[str] | dict, "backend options, KEY=VALUE (repeatable)",
           flags=("--backend-option",), repeat=True, check=_backend_options, metavar="KEY=VALUE"),
    Option("symbols", list[str], "bind symbolic dimensions: NAME,VALUE or NAME=VALUE "
           "(repeatable); Python also takes a mapping", flags=("-onnx-define-symbol",
                                                           "--define-symbol"),
           repeat=True, check=_symbols, metavar="NAME,VALUE"),
    Option("batchsize", int, "value of dimension 0 of every input whose batch dimension is "
           "symbolic", flags=("-batchsize", "--batchsize"), minimum=1, maximum=MAX_SYMBOL_VALUE,
           metavar="N"),
    Option("pipeline", Any, "the passes to run instead of the default: a YAML/TOML pipeline "
           "file (Python: also a list of names or (name, options) pairs)",
           flags=("--pipeline",), metavar="FILE"),
    Option("passes", str, "the passes to run, in text form: name{opt=value},name",
           flags=("--passes",), metavar="TEXT"),
    Option("time_passes", bool, "print time per pass", flags=("--time-passes",)),
    Option("dump_ir_after", list[str], "dump ONNX after these passes: all|A,B",
           flags=("--dump-ir-after",), separator=",", metavar="all|NAME[,NAME]"),
    Option("dump_ir_dir", str, "folder for dump_ir_after (default aicc-ir)",
           flags=("--dump-ir-dir",), path=True, metavar="DIR"),
    Option("verify_each", str, "check graphs after every pass; numeric also compares outputs",
           flags=("--verify-each",), choices=("structure", "numeric"),
           optional_value="structure"),
    Option("instruments", list, "instruments by name, or (name, options) pairs"),
    # command-line actions around the compile (aicc.cli.compile_cmd acts on them)
    Option("compile_only", bool, "only write the container; do not run it on random data",
           flags=("-compile-only", "--compile-only"), cli_only=True),
    Option("print_pipeline", bool, "print the resolved pipeline (in --passes form) and exit",
           flags=("--print-pipeline",), cli_only=True),
    Option("operators_supported", str, "list the operators the chosen backend runs (opsets, "
           "element types) and exit; FRAMEWORK must be onnx",
           flags=("-operators-supported", "--operators-supported"), cli_only=True,
           metavar="FRAMEWORK"),
]


@hookimpl
def aicc_add_options(options):
    options.add(*OPTIONS)


@hookimpl
def aicc_configure(config, request):
    """The request's core fields; instruments in the order time, dump, verify, then named."""
    request.backend = config.get("target")
    for name, value in (config.get("backend_options") or {}).items():
        request.set_backend_option(name, value, key="backend_options")
    request.output = config.get("output")
    request.symbols = list(config.get("symbols") or [])
    request.batchsize = config.get("batchsize") or 0
    if config.given("passes") and config.given("pipeline"):
        raise UsageError(f"{option_ref('passes')} and {option_ref('pipeline')} both given",
                         hint="use one of them")
    request.pipeline_text = config.get("passes")
    request.pipeline = config.get("pipeline")
    instruments: list[tuple[str, dict]] = []
    if config.get("time_passes"):
        instruments.append(("time-passes", {}))
    if config.given("dump_ir_after"):
        opts: dict[str, Any] = {"after": list(config.get("dump_ir_after"))}
        if config.given("dump_ir_dir"):
            opts["dir"] = config.get("dump_ir_dir")
        instruments.append(("dump-ir", opts))
    if config.given("verify_each"):
        instruments.append(("verify-each", {"numeric": config.get("verify_each") == "numeric"}))
    for item in config.get("instruments") or []:
        instruments.append((item, {}) if isinstance(item, str) else (item[0], dict(item[1])))
    request.instruments = instruments
