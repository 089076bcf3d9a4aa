"""The Python API of quantization: a float ONNX model plus samples (or a profile, or encodings) in,
a QDQ ONNX model out. ``aicc quantize`` is a thin command line over ``quantize_model``.

    import aicc.quantization as q
    model, program = q.quantize_model("model.onnx", samples=[{"x": a}, {"x": b}],
                                      per_channel=True)

The pipeline it runs is ``[input-shape] fold-constants fold-batchnorm [cle] [quant-overrides]
[int32-sandwich] [adaround] [bias-correction] [calibrate] quantize cleanup``: the same
simplifications as ``aicc compile``'s default pipeline before calibration, so a profile dumped
by one can be loaded by the other. ``algorithms=["cle"]`` equalizes weight ranges;
``["cle-activations"]`` (per-channel weights, with samples) the activations between layers.
Samples are any iterable of feed dicts (streamed: a generator is read once, one sample at a
time), or an input list file. Shards calibrated apart merge with ``aicc.quant.merge_profiles``
(or give several ``profile`` files).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from . import ir
from .errors import ConfigError
from .pipeline import Pipeline, run_pipeline
from .plugins import AUTOLOAD_ENV, Registries, load_registries
from .program import Program
from .quant.aimet import EncodingsFile

__all__ = ["quantize_pipeline", "quantize_model", "save_model_atomic"]


def _minmax_only(options: dict[str, Any]) -> bool:
    """Whether the quantize options read only each activation's min and max."""
    from .quant import parse_calibration_method
    return parse_calibration_method(options.get("calibration", "None")) == "None" and \
        options.get("act_quantizer", "") != "enhanced"


def quantize_pipeline(*, input_list: str | Path | None = None, calibrate: bool = False,
                      profile: Sequence[str | Path] = (),
                      overrides: str | Path | EncodingsFile | None = None,
                      int32: bool = False, input_shapes: Sequence[str] = (),
                      algorithms: Sequence[str] = (), num_bins: int | None = None,
                      progress: bool = True, engine: str = "auto",
                      adaround: Mapping[str, Any] | None = None,
                      adaround_samples_given: bool = False,
                      bias_correction: Mapping[str, Any] | None = None,
                      dask: str | None = None, dask_ship_data: bool = False,
                      only_quantized: bool = False,
                      **options: Any) -> list[tuple[str, dict]]:
    """The (pass, options) list ``quantize_model`` runs; ``options`` go to ``quantize``.
    ``adaround`` runs on the input list unless samples of its own are given, and so does
    ``bias_correction`` (a dict of the ``bias-correction`` pass options). Min-max
    calibration (``calibration`` None, no ``enhanced`` mode, no ``num_bins``) measures ranges
    only; ``only_quantized`` observes only what ``quantize`` with ``options`` encodes (the
    caller provides ``options`` as the analysis ``QUANTIZE_OPTIONS``)."""
    steps: list[tuple[str, dict]] = []
    if input_shapes:
        steps.append(("input-shape", {"shapes": list(input_shapes)}))
    steps += [("fold-constants", {}), ("fold-batchnorm", {})]
    for algo in algorithms:
        steps.append(_algorithm_step(algo, input_list, calibrate, engine, options))
    if overrides:       # a path, or the EncodingsFile read once by quantize_model
        ov = overrides if isinstance(overrides, EncodingsFile) else str(overrides)
        steps.append(("quant-overrides", {"file": ov}))
        if int32:
            steps.append(("int32-sandwich", {"overrides": ov}))
    if adaround is not None:
        ada = {"engine": engine, **adaround}
        if input_list is not None and not adaround_samples_given:
            ada.setdefault("input_list", str(input_list))
        steps.append(("adaround", ada))
    if bias_correction is not None:
        bc = {"engine": engine, **bias_correction}
        if input_list is not None:
            bc.setdefault("input_list", str(input_list))
        steps.append(("bias-correction", bc))
    if input_list is not None or calibrate:
        cal: dict[str, Any] = {"progress": progress, "engine": engine}
        if input_list is not None:
            cal["input_list"] = str(input_list)
        if num_bins is not None:
            cal["num_bins"] = num_bins
        elif _minmax_only(options):
            cal["histograms"] = False    # min-max reads no histogram: skip the binning (most
            #                              of calibration's time on large models)
        if only_quantized:
            cal["only_quantized"] = True
        if dask:
            cal["dask"] = dask
        if dask_ship_data:
            cal["dask_ship_data"] = True
        steps.append(("calibrate", cal))
    q = dict(options)
    if profile:
        q["profile"] = [str(p) for p in profile]
    steps.append(("quantize", q))
    steps.append(("cleanup", {}))
    return steps


#: algorithm names that run a pass under another name: ``cle-activations`` is ``cle`` with
#: ``objective=activations``
ALGORITHM_PASSES = {"cle-activations": "cle"}


def _algorithm_step(algo: str, input_list: str | Path | None, calibrate: bool, engine: str,
                    options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The (pass, options) of a pre-quantization algorithm. ``cle-activations`` equalizes the
    activations between layers on the calibration samples (``cle`` with
    ``objective=activations``), for per-channel weights, which weight-range equalization (plain
    ``cle``, kept for every quantization setting) cannot help."""
    if algo != "cle-activations":
        return algo, {}
    if not options.get("per_channel"):
        raise ConfigError("cle-activations is for per-channel weights (with per-tensor weights, "
                          "plain cle equalizes their ranges)", field="algorithms",
                          hint="quantize with per_channel=True, or use cle")
    if input_list is None and not calibrate:
        raise ConfigError("cle-activations measures the activations on calibration samples, "
                          "and none were given", field="algorithms",
                          hint="give calibration samples (an input list)")
    out: dict[str, Any] = {"objective": "activations", "engine": engine,
                           "act_bitwidth": int(options.get("act_bitwidth", 8)),
                           "weight_bitwidth": int(options.get("weight_bitwidth", 8))}
    if input_list is not None:
        out["input_list"] = str(input_list)
    return "cle", out


#: The built-in registries by plugin-autoload setting, loaded once per process.
_DEFAULT_REGISTRIES: dict[str | None, Registries] = {}


def _default_registries() -> Registries:
    """``load_registries()``, kept per process (per ``AICC_DISABLE_PLUGIN_AUTOLOAD`` value):
    importing and registering every plugin is a fixed cost that would otherwise be paid on each
    ``quantize_model`` call."""
    key = os.environ.get(AUTOLOAD_ENV)
    regs = _DEFAULT_REGISTRIES.get(key)
    if regs is None:
        regs = _DEFAULT_REGISTRIES[key] = load_registries()
    return regs


def _encodings_file(overrides: str | Path | EncodingsFile | None) -> EncodingsFile | None:
    """The overrides file read once (checked before any work), or the instance given."""
    if not overrides or isinstance(overrides, EncodingsFile):
        return overrides or None
    return EncodingsFile.read(overrides)


def _has_int32(overrides: EncodingsFile | None) -> bool:
    return overrides is not None and any(not e.is_float and e.bitwidth == 32
                                         for e in overrides.value.activations.values())


def quantize_model(model: str | Path | bytes | onnx.ModelProto, *,
                   samples: Iterable[Mapping[str, np.ndarray]] | None = None,
                   input_list: str | Path | None = None,
                   profile: Sequence[str | Path] = (),
                   overrides: str | Path | EncodingsFile | None = None,
                   input_shapes: Sequence[str] = (), algorithms: Sequence[str] = (),
                   num_bins: int | None = None, progress: bool = True,
                   engine: str = "auto", registries: Registries | None = None,
                   adaround: Mapping[str, Any] | None = None,
                   adaround_samples: Iterable[Mapping[str, np.ndarray]] | None = None,
                   bias_correction: Mapping[str, Any] | None = None,
                   dask: Any = None, dask_ship_data: bool = False,
                   **options: Any) -> tuple[onnx.ModelProto, Program]:
    """Quantize ``model``; returns the QDQ model and the Program (``program.encodings`` holds
    the encodings used). ``options`` are the ``quantize`` pass options (``per_channel=True``,
    ``act_bitwidth=16``, ``calibration="Percentile"``, ...); ``adaround`` (a dict of the
    ``adaround`` pass options, ``{}`` for the defaults) rounds Conv/Gemm/MatMul weights with
    AdaRound on the calibration samples, or on ``adaround_samples``; ``bias_correction`` (a dict
    of the ``bias-correction`` pass options, ``{}`` for the defaults) shifts each Conv/Gemm bias
    by the mean output error its quantized weights make on the calibration samples (after
    AdaRound's rounding when both are given); ``engine`` runs the calibration
    samples (``auto``: onnxruntime where it runs the graph, else ``interpreter``, the
    reference; or ``cpu``: onnxruntime). ``dask`` calibrates in
    shards on Dask: ``"local"``, ``"local:N"``, a scheduler address or a ``distributed.Client``
    (the profile, hence the model, is the same as without it); ``dask_ship_data`` sends an input
    list's files from here instead of workers reading them by path. Without ``registries``,
    the built-in plugins are loaded on the first call and reused by later ones."""
    if samples is not None and input_list is not None:
        raise ConfigError("give samples or an input list, not both", field="quantize_model")
    registries = registries or _default_registries()
    for algo in algorithms:
        if ALGORITHM_PASSES.get(algo, algo) not in registries.passes:
            raise ConfigError(f"algorithm '{algo}' is not available (no pass '{algo}' is "
                              "registered)", field="algorithms")
    if isinstance(bias_correction, bool):        # True: the defaults; False: none
        bias_correction = {} if bias_correction else None
    elif bias_correction is not None and not isinstance(bias_correction, Mapping):
        raise ConfigError(f"expected a dict of bias-correction options or a bool, got "
                          f"{type(bias_correction).__name__}", field="bias_correction")
    if isinstance(model, onnx.ModelProto):
        loaded = ir.load_model(model.SerializeToString())
    else:
        loaded = ir.load_model(model)
    overrides = _encodings_file(overrides)
    # observe only what quantize encodes: its settings decide that, so not with overrides
    # (AMP re-quantizes one calibration under other overrides: it calibrates everything)
    only = (samples is not None or input_list is not None) and overrides is None
    steps = quantize_pipeline(input_list=input_list, calibrate=samples is not None,
                              profile=profile, overrides=overrides, int32=_has_int32(overrides),
                              input_shapes=input_shapes, algorithms=algorithms,
                              num_bins=num_bins, progress=progress, engine=engine,
                              adaround=adaround,
                              adaround_samples_given=adaround_samples is not None,
                              bias_correction=bias_correction,
                              dask=dask if isinstance(dask, str) else None,
                              dask_ship_data=dask_ship_data, only_quantized=only, **options)
    pipeline = Pipeline.build(steps, registries.passes, source="quantize_model")
    from aicc.passes.quantization.analyses import (ADAROUND_SAMPLES, CALIBRATION_SAMPLES,
                                                   DASK_CLIENT, QUANTIZE_OPTIONS)
    provided: dict[Any, Any] = {}
    if only:
        provided[QUANTIZE_OPTIONS] = dict(steps[-2][1])
    if samples is not None:
        provided[CALIBRATION_SAMPLES] = samples
    if adaround_samples is not None:
        if adaround is None:
            raise ConfigError("adaround_samples without adaround", field="quantize_model")
        provided[ADAROUND_SAMPLES] = adaround_samples
    if dask is not None and not isinstance(dask, str):
        if samples is None and input_list is None:
            raise ConfigError("dask calibrates samples, and none were given",
                              field="quantize_model", hint="give samples or input_list")
        provided[DASK_CLIENT] = dask
    program = run_pipeline(pipeline, Program.from_model(loaded), registries=registries,
                           provided=provided)
    return program.to_model(), program


def save_model_atomic(model: onnx.ModelProto, path: str | Path) -> list[Path]:
    """Save ``model`` at ``path`` (weights beside it past 2 GiB) through a temporary folder next
    to it and renames, so a failure never leaves a half-written model."""
    from .fileio import fsync_dir, output_error

    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"folder '{folder}' does not exist", where=str(path))
    try:
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{path.name}.tmp"))
    except OSError as e:
        raise output_error(path, e) from None
    try:
        names = ir.save_model(model, tmp / path.name)
        written = []
        for name in names:
            try:
                os.replace(tmp / name, folder / name)
            except OSError as e:
                raise output_error(folder / name, e) from None
            written.append(folder / name)
        fsync_dir(folder)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
