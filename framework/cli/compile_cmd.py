"""``aicc compile``: the vendor's qaic-compile flags plus GNU long options.

Without ``-compile-only`` the compiled program is then run once on random data and its timing is
printed, as the vendor tool does; with it, only the container is written.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from ..compiler import CompileRequest, compile_model, configure, prepare
from ..config import CompileConfig
from ..errors import VOCABULARY, UsageError, option_ref
from ..guards import guard_names
from ..instruments import random_feeds
from ..plugins import load_registries
from ..program import describe_tensor
from ..runtime import check_backend_outputs
from .flags import Flag, FlagParser, config_from_args, option_flags

__all__ = ["run_compile", "CLI_FLAGS", "NOT_YET"]

#: Vendor flags that belong to features of other open issues: refused, never ignored.
NOT_YET: dict[str, str] = {}

#: Flags of the command itself; every other flag is a compile option some plugin declared
#: (``aicc_add_options``: the core options in ``aicc.features.core``, then each feature's).
CLI_FLAGS = [
    Flag(("--config",), "config", help="a compile config file (YAML/TOML/JSON): the options "
                                       "aicc.compile takes, by their Python names",
         metavar="FILE"),
    Flag(("--plugins",), "plugins", "repeat", help="a TOML file of extra plugin modules",
         metavar="FILE"),
    Flag(("-h", "--help"), "help", "switch", help="show this help"),
]
for _flag in CLI_FLAGS:
    _flag.section = "the command"


def _prescan(argv: Sequence[str]) -> list[str]:
    """The ``--plugins`` files, needed before the flags they may add can be parsed."""
    plugins, args = [], list(argv)
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name == "--plugins":
            if eq:
                plugins.append(value)
            elif i + 1 < len(args):
                plugins.append(args[i + 1])
    return plugins


def build_config(argv: Sequence[str]) -> tuple[Any, Any, dict[str, Any], FlagParser]:
    """(registries, CompileConfig, command args, parser) of an ``aicc compile`` command line."""
    registries = load_registries(_prescan(argv))
    parser = FlagParser("compile", option_flags(registries.options) + CLI_FLAGS,
                        not_yet=NOT_YET)
    args = parser.parse(argv)
    config = config_from_args(registries.options, args, parser.spelled)
    if args["config"]:
        config = CompileConfig.from_file(registries.options, args["config"]).merged(config)
    vocabulary = VOCABULARY.get(None)     # set by aicc.cli.main for the command's run
    if vocabulary is not None:
        vocabulary.update(config.vocabulary())
    return registries, config, args, parser


def run_compile(argv: Sequence[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        registries = load_registries(_prescan(argv))
        print(FlagParser("compile", option_flags(registries.options) + CLI_FLAGS,
                         not_yet=NOT_YET).help_text())
        return 0
    registries, config, args, _ = build_config(argv)
    if config.get("operators_supported"):
        return listing(config, args["plugins"])
    if not config.get("model") and not config.get("print_pipeline"):
        raise UsageError("no model given", where="aicc compile", hint="pass -m=model.onnx")
    req = configure(config, registries, args["plugins"])
    if req.standalone is not None:
        return req.standalone()
    if config.get("print_pipeline"):
        _, pipeline, _, _ = prepare(req, registries)
        print(pipeline.to_text())
        return 0
    if not req.output and config.get("compile_only"):
        raise UsageError("-compile-only needs an output directory", where="aicc compile",
                         hint="pass -aic-binary-dir=DIR")
    start = time.perf_counter()
    path, program, executables = compile_model(req, registries)
    elapsed = time.perf_counter() - start
    if req.pipeline_only:      # e.g. -dump-profile: the pipeline's own output is the result
        print(req.pipeline_only)
        return 0
    if path is not None:
        print(f"compiled {req.model} for backend '{req.backend}' in {elapsed:.2f} s: {path}")
    if config.get("compile_only"):  # nothing runs; a simulated device still reports its estimate
        for exe in executables.values():
            for line in exe.stats().get("report") or ():
                print(line)
        return 0
    _run_once(req, program, executables)
    sys.stdout.flush()
    return 0


def _run_once(req: CompileRequest, program: Any, executables: dict[str, Any]) -> None:
    """Run the compiled program once (on -json-input-file, -input-list-file or random data) and
    print each run's time and output shapes, as the vendor tool does."""
    if req.json_input_file:
        runs = _json_runs(program, req.json_input_file)
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
        hidden = guard_names(program.guards, name)    # checked by sessions, not shown here
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in outputs.items() if k not in hidden)
        print(f"ran graph '{name}' once on {what}: {ms:.3f} ms -> {shapes}")
        for line in exe.stats().get("report") or ():  # e.g. a simulated device's figures
            print(line)


def _json_runs(program: Any, path: Any) -> list[tuple[str, dict, str]]:
    from ..customio import HostConversions
    from ..data import match_shapes, parse_json_input_file, program_input_descs, spec_input_shapes

    shapes = spec_input_shapes(program, interface=True)
    host = HostConversions.from_meta({"custom_io": program.custom_io})
    runs = []
    for i, feeds in enumerate(parse_json_input_file(path, program_input_descs(program,
                                                                              interface=True),
                                                    shapes=shapes,
                                                    optional=_state_inputs(program)), 1):
        name = match_shapes(feeds, shapes)
        feeds = host.convert(feeds) if host is not None else feeds  # custom -> graph I/O
        runs.append((name, feeds, f"inference {i} of {path}"))
    return runs


def listing(config: Any, plugins: list[str]) -> int:
    """``-operators-supported=onnx``: the operators of the backend the other options choose."""
    from .ops_cmd import print_listing

    framework = config.get("operators_supported")
    if framework.lower() != "onnx":
        raise UsageError(f"unknown framework {framework!r}",
                         where=option_ref("operators_supported"),
                         hint="aicc compiles ONNX models: use -operators-supported=onnx")
    ignored = [k for k in config.given_keys() if k not in ("operators_supported", "target")]
    if ignored:  # a flag is never ignored: the listing compiles nothing
        raise UsageError(f"{option_ref('operators_supported')} lists operators and compiles "
                         f"nothing, so {option_ref(ignored[0])} would do nothing",
                         where=option_ref("operators_supported"),
                         hint="run the listing alone (with -aic-hw or --backend), then compile")
    print_listing(config.get("target"), plugins)
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
