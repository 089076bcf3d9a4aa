"""``aicc compile``: the vendor's qaic-compile flags plus GNU long options.

Without ``-compile-only`` the compiled program is then run once on random data and its timing is
printed, as the vendor tool does; with it, only the container is written.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..compiler import CompileRequest, compile_model, prepare
from ..errors import UsageError
from ..instruments import random_feeds
from ..options import parse_text_value
from ..program import describe_tensor
from ..runtime import check_backend_outputs
from ..specconfig import MAX_SYMBOL_VALUE
from .flags import Flag, FlagParser, int_value

__all__ = ["run_compile", "COMPILE_FLAGS", "NOT_YET"]

#: Vendor flags that belong to features of other open issues: refused, never ignored.
NOT_YET: dict[str, str] = {}

COMPILE_FLAGS = [
    Flag(("-m", "-model", "--model"), "model", help="the ONNX model to compile", metavar="PATH"),
    Flag(("-aic-binary-dir", "--output", "-o"), "output",
         help="the container directory to write", metavar="DIR"),
    Flag(("--backend",), "backend", help="backend to compile for (default cpu)", metavar="NAME"),
    Flag(("--backend-option",), "backend_option", "repeat",
         help="a backend option, KEY=VALUE (repeatable)", metavar="KEY=VALUE"),
    Flag(("-onnx-define-symbol", "--define-symbol"), "symbols", "repeat",
         help="bind a symbolic dimension: NAME,VALUE (repeatable)", metavar="NAME,VALUE"),
    Flag(("-batchsize", "--batchsize"), "batchsize", convert=int_value("-batchsize"),
         help="value of dimension 0 of every input whose batch dimension is symbolic",
         metavar="N"),
    Flag(("-compile-only", "--compile-only"), "compile_only", "switch",
         help="only write the container; do not run it on random data"),
    Flag(("--pipeline",), "pipeline", help="a YAML/TOML pipeline file", metavar="FILE"),
    Flag(("--passes",), "passes", help="a pipeline in text form: name{opt=value},name",
         metavar="TEXT"),
    Flag(("--print-pipeline",), "print_pipeline", "switch",
         help="print the resolved pipeline (in --passes form) and exit"),
    Flag(("--time-passes",), "time_passes", "switch", help="print time per pass"),
    Flag(("--dump-ir-after",), "dump_ir_after", help="dump ONNX after these passes: all|A,B",
         metavar="all|NAME[,NAME]"),
    Flag(("--dump-ir-dir",), "dump_ir_dir", help="folder for --dump-ir-after (default aicc-ir)",
         metavar="DIR"),
    Flag(("--verify-each",), "verify_each", "switch", optional_value="numeric",
         help="check graphs after every pass; =numeric also compares outputs"),
    Flag(("--plugins",), "plugins", "repeat", help="a TOML file of extra plugin modules",
         metavar="FILE"),
    Flag(("-h", "--help"), "help", "switch", help="show this help"),
]


#: Modules that add feature flags to `aicc compile`. Each exports ``FLAGS`` (a list of Flag) and
#: ``contribute(args, request)``, which turns its parsed flags into pipeline steps
#: (``request.feature_steps``), backend choices or options, refusing bad combinations. A module
#: may also export ``standalone(args)``: work that replaces compiling (e.g. writing a template);
#: it returns an exit code to stop there, or None to go on.
FEATURE_MODULES: list[str] = [
    "aicc.cli.feature_specialization",
    "aicc.cli.feature_precision",
    "aicc.cli.feature_quantization",
    "aicc.cli.feature_aic100",
    "aicc.cli.feature_dask",        # after feature_quantization: adds to its calibrate step
    "aicc.cli.ops_cmd",
]


def _features() -> list[Any]:
    return [importlib.import_module(m) for m in FEATURE_MODULES]


def _request(args: dict) -> CompileRequest:
    if not args["model"] and not args["print_pipeline"] and not args["operators_supported"]:
        raise UsageError("no model given", where="aicc compile", hint="pass -m=model.onnx")
    if args["passes"] and args["pipeline"]:
        raise UsageError("--passes and --pipeline both given", where="aicc compile",
                         hint="use one of them")
    if args["batchsize"] is not None and not 0 < args["batchsize"] <= MAX_SYMBOL_VALUE:
        raise UsageError(f"{args['batchsize']} is not a batch size from 1 to {MAX_SYMBOL_VALUE}",
                         where="-batchsize")
    if args["symbols"]:
        from ..passes.bind_symbols import parse_symbol_values
        parse_symbol_values(list(args["symbols"]))  # refuse bad values before any work
    backend_options = {}
    for item in args["backend_option"]:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{item!r} is not KEY=VALUE", where="--backend-option")
        backend_options[key] = parse_text_value(value)
    instruments = []
    if args["time_passes"]:
        instruments.append(("time-passes", {}))
    if args["dump_ir_after"]:
        opts = {"after": [p for p in args["dump_ir_after"].split(",") if p]}
        if args["dump_ir_dir"]:
            opts["dir"] = args["dump_ir_dir"]
        instruments.append(("dump-ir", opts))
    if args["verify_each"]:
        if args["verify_each"] not in (True, "numeric"):
            raise UsageError(f"unknown mode {args['verify_each']!r}", where="--verify-each",
                             hint="use --verify-each or --verify-each=numeric")
        instruments.append(("verify-each", {"numeric": args["verify_each"] == "numeric"}))
    req = CompileRequest(
        model=args["model"] or "", backend=args["backend"] or "cpu",
        backend_options=backend_options, pipeline=args["pipeline"],
        pipeline_text=args["passes"], output=args["output"], symbols=args["symbols"],
        batchsize=args["batchsize"] or 0, instruments=instruments, plugins=args["plugins"])
    for feature in _features():
        feature.contribute(args, req)
    return req


def run_compile(argv: Sequence[str]) -> int:
    flags = COMPILE_FLAGS + [f for feature in _features() for f in feature.FLAGS]
    parser = FlagParser("compile", flags, not_yet=NOT_YET)
    args = parser.parse(argv)
    if args["help"]:
        print(parser.help_text())
        return 0
    req = _request(args)
    for feature in _features():
        code = feature.standalone(args) if hasattr(feature, "standalone") else None
        if code is not None:
            return code
    if args["print_pipeline"]:
        _, pipeline, _, _ = prepare(req)
        print(pipeline.to_text())
        return 0
    if not req.output and args["compile_only"]:
        raise UsageError("-compile-only needs an output directory", where="aicc compile",
                         hint="pass -aic-binary-dir=DIR")
    start = time.perf_counter()
    path, program, executables = compile_model(req)
    elapsed = time.perf_counter() - start
    if req.pipeline_only:      # e.g. -dump-profile: the pipeline's own output is the result
        print(req.pipeline_only)
        return 0
    if path is not None:
        print(f"compiled {req.model} for backend '{req.backend}' in {elapsed:.2f} s: {path}")
    if args["compile_only"]:  # nothing runs; a simulated device still reports its estimate
        for exe in executables.values():
            for line in exe.stats().get("report") or ():
                print(line)
        return 0
    if req.json_input_file:
        from ..data import (match_shapes, parse_json_input_file, program_input_descs,
                            spec_input_shapes)
        from ..customio import HostConversions
        shapes = spec_input_shapes(program, interface=True)
        host = HostConversions.from_meta({"custom_io": program.custom_io})
        runs = []
        for i, feeds in enumerate(parse_json_input_file(req.json_input_file,
                                                        program_input_descs(program,
                                                                            interface=True),
                                                        shapes=shapes,
                                                        optional=_state_inputs(program)), 1):
            name = match_shapes(feeds, shapes)
            feeds = host.convert(feeds) if host is not None else feeds  # custom -> graph I/O
            runs.append((name, feeds, f"inference {i} of {req.json_input_file}"))
    elif req.run_input_list:
        runs = _input_list_runs(program, req.run_input_list)
    else:
        runs = [(name, random_feeds(program, name, seed=0), "random data")
                for name in executables]
    for name, feeds, what in runs:
        exe = executables[name]
        feeds = _with_zero_state(program, name, feeds)
        t0 = time.perf_counter()
        outputs = exe.run(feeds)
        ms = (time.perf_counter() - t0) * 1e3
        check_backend_outputs(f"backend '{req.backend}'",
                              [describe_tensor(t) for t in program.graphs[name].outputs], outputs)
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in outputs.items())
        print(f"ran graph '{name}' once on {what}: {ms:.3f} ms -> {shapes}")
        for line in exe.stats().get("report") or ():  # e.g. a simulated device's figures
            print(line)
    sys.stdout.flush()
    return 0


def _input_list_runs(program: Any, path: Any) -> list[tuple[str, dict, str]]:
    """One run per line of a QNN input list (files in the program's interface I/O, converted to
    the graph's I/O as the Session would)."""
    from ..customio import HostConversions
    from ..data import program_input_descs
    from ..passes.quantization.calibrate import input_list_samples

    _, samples = input_list_samples(path, program_input_descs(program, interface=True))
    host = HostConversions.from_meta({"custom_io": program.custom_io})
    (name,) = list(program.graphs)      # -input-list-file cannot go with specializations
    return [(name, host.convert(feeds) if host is not None else feeds,
             f"sample {i} of {path}") for i, feeds in enumerate(samples(), 1)]


def _state_inputs(program: Any) -> list[str]:
    """Inputs fed back from ``*_RetainedState`` outputs when compiled with -retained-state."""
    if not program.compile_options.get("retained_state"):
        return []
    from ..compiler import retained_state_pairs
    return [p["input"] for p in retained_state_pairs(program)]


def _with_zero_state(program: Any, graph: str, feeds: dict) -> dict:
    import numpy as np
    from ..ir import tensor_dtype
    missing = {t.name: t for t in program.graphs[graph].inputs if t.name not in feeds}
    return {**feeds, **{n: np.zeros(t.shape, tensor_dtype(t)) for n, t in missing.items()}}
