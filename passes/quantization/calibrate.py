"""``calibrate``: sample inputs in, a calibration profile (per-tensor min, max, histogram) out;
the graphs are left untouched.

Samples come from exactly one source: a QNN input list (``input_list``, ``-input-list-file``), the
vendor's JSON input file (``json_input_file``, ``-json-input-file``, needed with several
specializations), or, through the Python API, any iterable of feed dicts provided to the
pipeline run (``run_pipeline(..., provided={CALIBRATION_SAMPLES: samples})``). Every file an
input list names is checked against the input's dtype and shape (from the model, bound symbols or
``--input-shape``) before anything runs.

Each sample runs through onnxruntime where it runs the graph (``engine=auto``, the default) or the
numpy interpreter (``engine=interpreter``, the reference; or
onnxruntime with every float tensor as an output, ``engine=cpu``, faster on large CNNs) with an
observer on every float tensor (graph inputs and node outputs). When exact, samples are stacked
along axis 0 into fewer, larger runs (checked on the first two samples; ``batch``). Statistics
stream: small tensors are buffered up to a fixed number of elements before they reach their
``TensorObserver``, so memory depends on the graph, never on the number of samples. With several
specializations (graphs), each sample goes to the graph whose input shapes it fits, and all graphs
feed one set of observers keyed by tensor name, so the result is one profile (clones keep tensor
names). With custom I/O converted on the host, samples are given in the custom format and
converted as the runtime Session would.

What is measured: with ``histograms`` (the default) every observed tensor's histogram, which
every range method can read; without, only each tensor's range and count (min-max calibration
reads nothing more; the binning is most of calibration's time on large models). With
``only_quantized``, only the tensors the pipeline's ``quantize`` step will encode are observed
(its options come through the analysis ``QUANTIZE_OPTIONS``; without overrides): the insides of
fused elementwise expressions and shape computations, most of a real model's tensors, are
neither copied out of onnxruntime nor reduced. The profile records what it lacks (tensors
without a histogram, the tensors skipped), so a dumped profile refuses a later setting that
needs what it does not have.

The profile goes to the analysis ``CALIBRATION_PROFILE`` (the ``quantize`` pass reads it there)
and, with ``dump_profile``, to a YAML file written atomically. Its ``graph_hash`` is
``program_hash``: see ``graph_hash`` for what it covers and why.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from aicc.backend import Observers
from aicc.errors import ConfigError, option_ref
from aicc.hookspecs import hookimpl
from aicc.options import build_options, option
from aicc.pass_base import Pass, PassContext, PassResult
from aicc.program import Program
from aicc.quant import DEFAULT_NUM_BINS, dump_profile_yaml
from aicc.quant.profile import MAX_HISTOGRAM_BINS

from aicc.passes.quantization.analyses import (CALIBRATION_PROFILE, CALIBRATION_SAMPLES,
                                               DASK_CLIENT, QUANTIZE_OPTIONS)
from aicc.passes.quantization.opset import needs_new_opset, prepare_opset
from aicc.passes.quantization.plan import QuantSettings, quantized_activations
from aicc.passes.quantization.runner import (ENGINES, calibrate_program, graph_hash, host_conversion,
                            input_list_samples, json_input_samples, program_hash,
                            write_text_atomic)

__all__ = ["Calibrate", "calibrate_program", "graph_hash", "program_hash", "input_list_samples",
           "json_input_samples", "write_text_atomic"]

logger = logging.getLogger(__name__)



class Calibrate(Pass):
    name = "calibrate"
    description = "run calibration samples through the interpreter (or onnxruntime) and " \
                  "record a profile (graphs unchanged)"
    scope = "program"
    #: statistics of the graph that will be quantized: after every rewrite of it
    after = ("int32-sandwich", "custom-io", "convert-fp16", "fold-batchnorm", "cle")
    semantics = "preserving"

    @dataclasses.dataclass(frozen=True)
    class Options:
        input_list: str = option("", "a QNN input list of calibration samples "
                                     "(-input-list-file)", path=True)
        json_input_file: str = option("", "the vendor's JSON input file of samples "
                                          "(-json-input-file)", path=True)
        num_bins: int = option(DEFAULT_NUM_BINS, "histogram bins per tensor "
                                                 "(-num-histogram-bins)",
                               minimum=1, maximum=MAX_HISTOGRAM_BINS)
        dump_profile: str = option("", "also write the profile to this YAML file "
                                       "(-dump-profile)", path=True)
        max_samples: int = option(0, "use at most this many samples (0: all)", minimum=0)
        batch: int = option(0, "samples stacked per run: 0 = as many as is exact (checked on "
                               "the first two), 1 = one at a time", minimum=0)
        engine: str = option("auto", "what runs the samples: auto (onnxruntime where it runs "
                                     "the graph, else the interpreter), interpreter (the numpy "
                                     "reference) or cpu (onnxruntime)", choices=ENGINES)
        progress: bool = option(True, "show a progress bar on a terminal")
        histograms: bool = option(True, "bin values into histograms; off: each tensor's range "
                                        "only (all min-max calibration reads)")
        only_quantized: bool = option(False, "observe only the tensors the quantize step will "
                                             "encode (its options given as the analysis "
                                             "QUANTIZE_OPTIONS); the profile lists the others "
                                             "as skipped")
        dask: str = option("", "calibrate on Dask: local, local:N or a scheduler address "
                               "(--dask); empty: in this process")
        dask_ship_data: bool = option(False, "with dask: the client reads the input list's "
                                             "files and sends them (no shared filesystem)")
        shard_size: int = option(0, "with dask: samples per shard, in whole blocks of 64 "
                                    "(0: about four shards per worker)", minimum=0)

    def run(self, program: Program, ctx: PassContext) -> PassResult:
        opts = ctx.options
        python_samples = ctx.analyses.peek(CALIBRATION_SAMPLES)
        given = [s for s, v in (("input_list", opts.input_list),
                                ("json_input_file", opts.json_input_file),
                                ("samples given in Python", python_samples is not None)) if v]
        if not given:
            raise ConfigError("no calibration samples", field="pass 'calibrate'",
                              hint=f"give input_list ({option_ref('input_list')}), "
                                   f"json_input_file ({option_ref('json_input_file')}) or "
                                   "samples through the Python API")
        if len(given) > 1:
            raise ConfigError(f"several sample sources given ({', '.join(given)})",
                              field="pass 'calibrate'", hint="give exactly one")
        dask = ctx.analyses.peek(DASK_CLIENT) or opts.dask
        if not dask and (opts.dask_ship_data or opts.shard_size):
            raise ConfigError("dask_ship_data and shard_size apply to calibration on Dask, and "
                              "no dask address was given", field="pass 'calibrate'",
                              hint="add --dask local:N (or a scheduler address)")
        observe = _observed(program, ctx) if opts.only_quantized else None
        if dask:
            profile = self._sharded(program, opts, python_samples, dask, observe)
        else:
            profile = self._local(program, opts, python_samples, ctx.observers, observe)
        ctx.analyses.put(CALIBRATION_PROFILE, profile)
        ctx.count("tensors profiled", len(profile.tensors))
        if opts.dump_profile:
            write_text_atomic(opts.dump_profile, dump_profile_yaml(profile))
            logger.info("quantization profile is dumped at %s", opts.dump_profile)
        return PassResult(modified=False)     # it measures; the program is unchanged


    @staticmethod
    def _local(program: Program, opts: Any, python_samples: Any, backends: Observers,
               observe: set[str] | None) -> Any:
        total: int | None = None
        if opts.input_list:
            if len(program.graphs) > 1:
                raise ConfigError("an input list cannot feed several specializations",
                                  where=opts.input_list,
                                  hint=f"describe the samples with {option_ref('json_input_file')}")
            from aicc.data import program_input_descs
            total, factory = input_list_samples(opts.input_list,
                                                program_input_descs(program, interface=True))
            samples: Iterable[Mapping[str, np.ndarray]] = factory()
        elif opts.json_input_file:
            total, factory = json_input_samples(opts.json_input_file, program)
            samples = factory()
        else:
            samples = python_samples
            total = len(samples) if hasattr(samples, "__len__") else None
        convert = host_conversion(program)
        if convert is not None:
            samples = (convert(dict(f)) for f in samples)
        return calibrate_program(program, samples, num_bins=opts.num_bins, total=total,
                                 progress=opts.progress, max_samples=opts.max_samples,
                                 batch=opts.batch, engine=opts.engine, backends=backends,
                                 histograms=opts.histograms, observe=observe)

    @staticmethod
    def _sharded(program: Program, opts: Any, python_samples: Any, dask: Any,
                 observe: set[str] | None) -> Any:
        """The same profile, calibrated in shards on Dask (see ``_calib_dask``)."""
        from aicc.passes.quantization.dask_shards import array_items, calibrate_sharded, list_items

        if opts.input_list:
            if len(program.graphs) > 1:
                raise ConfigError("an input list cannot feed several specializations",
                                  where=opts.input_list,
                                  hint=f"describe the samples with {option_ref('json_input_file')}")
            total, items = list_items(opts.input_list, program, opts.dask_ship_data)
        elif opts.json_input_file:
            total, factory = json_input_samples(opts.json_input_file, program)
            items = array_items(factory())
        else:
            total = len(python_samples) if hasattr(python_samples, "__len__") else None
            items = array_items(python_samples)
        return calibrate_sharded(program, items, dask, total=total, num_bins=opts.num_bins,
                                 batch=opts.batch, engine=opts.engine,
                                 max_samples=opts.max_samples, shard_size=opts.shard_size,
                                 progress=opts.progress, histograms=opts.histograms,
                                 observe=observe)


def _observed(program: Program, ctx: PassContext) -> set[str]:
    """The tensors the pipeline's quantize step will read statistics of (``only_quantized``)."""
    given = ctx.analyses.peek(QUANTIZE_OPTIONS)
    if given is None or ctx.registries is None:
        raise ConfigError("only_quantized needs the quantize step's options (the analysis "
                          "QUANTIZE_OPTIONS)", field="pass 'calibrate': option 'only_quantized'",
                          hint="give them with run_pipeline(..., provided=...), or drop "
                               "only_quantized")
    if program.encodings.get("overrides") or program.encodings.get("int32"):
        raise ConfigError("only_quantized plans without overrides, and this program has them",
                          field="pass 'calibrate': option 'only_quantized'",
                          hint="drop only_quantized")
    cls = ctx.registries.passes.get("quantize").cls
    s = QuantSettings.from_options(build_options(cls.Options, given, owner="pass 'quantize'"))
    scratch = PassContext(options=None, logger=logger)    # its counters are quantize's to keep
    names: set[str] = set()
    for gname, graph in program.graphs.items():
        where = f"graph '{gname}'"
        names |= quantized_activations(graph, s, scratch, where)
        if needs_new_opset(graph, s):
            # quantize plans on the graph at the opset its settings need: what onnx's version
            # converter rewrites there (ReduceMean's axes become an input at 18, ...) must not
            # leave it a tensor this calibration skipped
            seen, s_seen = prepare_opset(graph.copy(), s, where=where,
                                         ir_version=program.ir_version, quiet=True)
            names |= quantized_activations(seen, s_seen, scratch, where)
    return names


@hookimpl
def aicc_register_passes(registry):
    registry.add(Calibrate)
