"""The ``--config`` YAML of ``--apply_algorithms`` (qairt-quantizer's AIMET templates: ``datasets``,
``adaround``, ``amp``, ``autoquant``) in, a validated ``AlgorithmConfig`` out; plus the loading of
data loaders named by Python import paths.

The file is read with aicc's strict YAML loader (``aicc.configfile``: no Python tags, no aliases,
no duplicate keys, YAML-1.2 scalars). Every key of the three templates is checked for its type;
unknown keys are refused with the nearest valid one. Callbacks are import paths,
``package.module.function`` or ``path/to/file.py:function`` (a relative path is resolved against
the config file's folder); they are imported only when the algorithm that uses them runs.
A loader is any iterable of samples: a feed dict, one array (single-input models), or a tuple or
list of arrays in input order; torch tensors work through ``numpy.asarray``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..configfile import load_yaml, resolve_relative
from ..errors import ConfigError, did_you_mean

__all__ = ["AlgorithmConfig", "load_algorithm_config", "import_callback", "dataset_samples",
           "labeled_batches", "SECTIONS"]

_CALLBACK = "callback"       # a type tag: an import path string
_CANDIDATES = "candidates"   # [[[bw, dtype], [bw, dtype]], ...]

#: Per section: key -> type tag (a Python type, a tuple of types, or one of the tags above).
_ADAROUND_OPTIONAL = {"default_param_bw": int, "param_bw_override_list": list,
                      "ignore_quant_ops_list": list, "default_quant_scheme": str,
                      "default_config_file": str, "num_batches": int,
                      # AIMET AdaroundParameters names, for the optimiser itself
                      "default_num_iterations": int, "default_reg_param": float,
                      "default_beta_range": list, "default_warm_start": float}
_AMP_OPTIONAL = {"eval_callback_for_phase1": _CALLBACK, "clean_start": bool,
                 "forward_pass_callback": _CALLBACK, "use_all_amp_candidates": bool,
                 "phase2_reverse": bool, "amp_search_algo": str}
_AUTOQUANT_AMP_OPTIONAL = {"num_samples_for_phase_1": int, "forward_fn": _CALLBACK,
                           "num_samples_for_phase_2": int}
_AUTOQUANT_OPTIONAL = {"param_bw": int, "output_bw": int, "quant_scheme": str,
                       "rounding_mode": str, "config_file": str, "cache_id": str,
                       "strict_validation": bool}
SECTIONS: dict[str, dict[str, Any]] = {
    "datasets": {},
    "adaround": {"dataset": str, "num_batches": int,
                 "optional_adaround_args": _ADAROUND_OPTIONAL},
    "amp": {"dataset": str, "candidates": _CANDIDATES, "allowed_accuracy_drop": float,
            "eval_callback_for_phase2": _CALLBACK, "optional_amp_args": _AMP_OPTIONAL},
    "autoquant": {"dataset": str, "eval_callback": _CALLBACK, "eval_dataset": str,
                  "allowed_accuracy_drop": float, "amp_candidates": _CANDIDATES,
                  "optional_autoquant_args": _AUTOQUANT_OPTIONAL,
                  "optional_amp_args": _AUTOQUANT_AMP_OPTIONAL,
                  "optional_adaround_args": _ADAROUND_OPTIONAL},
}
_REQUIRED = {"adaround": ("dataset", "num_batches"),
             "amp": ("dataset", "candidates", "allowed_accuracy_drop",
                     "eval_callback_for_phase2"),
             "autoquant": ("dataset", "eval_callback", "eval_dataset", "allowed_accuracy_drop",
                           "amp_candidates")}
_DATASET_KEYS = {"dataloader_callback": _CALLBACK, "dataloader_kwargs": dict}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping", _CALLBACK: "an import path "
               "('module.function' or 'file.py:function')",
               _CANDIDATES: "a list of [[act_bw, act_dtype], [param_bw, param_dtype]]"}
_IMPORT_PATH = re.compile(r"^(?:[A-Za-z_][\w.]*\.[A-Za-z_]\w*|[^:]+\.py:[A-Za-z_]\w*)$")


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
    """The parsed file: ``sections`` hold the validated mappings, keyed as in the file."""

    path: Path
    datasets: dict[str, dict[str, Any]]
    sections: dict[str, dict[str, Any]]

    def section(self, name: str) -> dict[str, Any] | None:
        return self.sections.get(name)

    def dataset(self, name: str, key: str) -> dict[str, Any]:
        if name not in self.datasets:
            raise ConfigError(f"dataset '{name}' is not defined under 'datasets'",
                              where=self.path, field=key,
                              hint=did_you_mean(name, self.datasets))
        return self.datasets[name]


def _check_value(value: Any, tag: Any, path: Path, key: str) -> Any:
    ok = {str: lambda v: isinstance(v, str) and v.strip() != "",
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
          and math.isfinite(v),
          bool: lambda v: isinstance(v, bool), list: lambda v: isinstance(v, list),
          dict: lambda v: isinstance(v, dict),
          _CALLBACK: lambda v: isinstance(v, str) and bool(_IMPORT_PATH.match(v.strip())),
          _CANDIDATES: _is_candidates}[tag]
    if not ok(value):
        raise ConfigError(f"expected {_TYPE_NAMES[tag]}, got {value!r}", where=path, field=key)
    return float(value) if tag is float else value


def _is_candidates(v: Any) -> bool:
    def pair(p: Any) -> bool:
        return isinstance(p, list) and len(p) == 2 and isinstance(p[0], int) and \
            not isinstance(p[0], bool) and p[1] in ("int", "float") and \
            (p[0] in (4, 8, 16, 32) if p[1] == "int" else p[0] in (16, 32))
    return isinstance(v, list) and len(v) > 0 and all(
        isinstance(c, list) and len(c) == 2 and pair(c[0]) and pair(c[1]) for c in v)


def _check_mapping(data: Any, spec: dict[str, Any], path: Path, prefix: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {data!r}", where=path, field=prefix)
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = f"{prefix}.{key}"
        if key not in spec:
            raise ConfigError("unknown key", where=path, field=field,
                              hint=did_you_mean(str(key), spec))
        tag = spec[key]
        out[key] = _check_mapping(value, tag, path, field) if isinstance(tag, dict) \
            else _check_value(value, tag, path, field)
    return out


def _check_section(name: str, data: Any, path: Path) -> dict[str, Any]:
    out = _check_mapping(data, SECTIONS[name], path, name)
    for key in _REQUIRED.get(name, ()):
        if key not in out:
            raise ConfigError(f"'{key}' is required", where=path, field=f"{name}.{key}")
    if name == "adaround" and out["num_batches"] < 1:
        raise ConfigError(f"must be at least 1, got {out['num_batches']}", where=path,
                          field="adaround.num_batches")
    for key in ("allowed_accuracy_drop",):
        if key in out and not 0 <= out[key] <= 1:
            raise ConfigError(f"is a fraction in [0, 1], got {out[key]}", where=path,
                              field=f"{name}.{key}")
    algo = out.get("optional_amp_args", {}).get("amp_search_algo")
    if algo is not None and algo not in ("Binary", "Interpolation", "BruteForce"):
        raise ConfigError(f"unknown search algorithm {algo!r}", where=path,
                          field=f"{name}.optional_amp_args.amp_search_algo",
                          hint=did_you_mean(algo, ("Binary", "Interpolation", "BruteForce")))
    return out


def load_algorithm_config(path: str | Path) -> AlgorithmConfig:
    """Read and validate a ``--config`` file (every key of the seed's templates)."""
    path = Path(path)
    data = load_yaml(path, what="algorithm config")
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping with 'datasets' and algorithm sections",
                          where=path)
    sections: dict[str, dict[str, Any]] = {}
    datasets: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key not in SECTIONS:
            raise ConfigError("unknown section", where=path, field=str(key),
                              hint=did_you_mean(str(key), SECTIONS))
        if key == "datasets":
            if not isinstance(value, dict) or not value:
                raise ConfigError("expected a mapping of dataset names", where=path,
                                  field="datasets")
            for dname, spec in value.items():
                field = f"datasets.{dname}"
                datasets[str(dname)] = _check_mapping(spec, _DATASET_KEYS, path, field)
                if "dataloader_callback" not in datasets[str(dname)]:
                    raise ConfigError("'dataloader_callback' is required", where=path,
                                      field=f"{field}.dataloader_callback")
        else:
            sections[key] = _check_section(key, value, path)
    cfg = AlgorithmConfig(path, datasets, sections)
    for name, sec in sections.items():
        for key in ("dataset", "eval_dataset"):
            if key in sec:
                cfg.dataset(sec[key], f"{name}.{key}")
    return cfg


def import_callback(spec: str, *, config: Path, key: str) -> Callable[..., Any]:
    """The function an import path names; failures name the config file and key."""
    spec = spec.strip()
    try:
        if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
            file, func = spec.rsplit(":", 1)
            fpath = resolve_relative(config, file)
            if not fpath.is_file():
                raise ConfigError(f"callback file '{fpath}' not found", where=config, field=key)
            mod_name = f"_aicc_callback_{abs(hash(str(fpath)))}"
            loader_spec = importlib.util.spec_from_file_location(mod_name, fpath)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            loader_spec.loader.exec_module(module)
        else:
            mod, _, func = spec.rpartition(".")
            module = importlib.import_module(mod)
    except ConfigError:
        raise
    except Exception as e:  # the user's code: any failure is reported as theirs
        raise ConfigError(f"cannot import callback '{spec}': {type(e).__name__}: {e}",
                          where=config, field=key) from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ConfigError(f"'{spec}': module has no function '{func}'", where=config, field=key)
    return fn


def _as_feeds(item: Any, inputs: Sequence[tuple[str, tuple]], where: Path, key: str
              ) -> list[dict[str, np.ndarray]]:
    """One loader item as feed dicts (a batch of a model with batch 1 is split)."""
    names = [n for n, _ in inputs]
    if isinstance(item, Mapping):
        unknown = [k for k in item if k not in names]
        if unknown:
            raise ConfigError(f"sample names input '{unknown[0]}'", where=where, field=key,
                              hint=did_you_mean(str(unknown[0]), names))
        arrays = {k: np.asarray(v) for k, v in item.items()}
    else:
        values = list(item) if isinstance(item, (tuple, list)) else [item]
        if len(values) != len(names):
            raise ConfigError(f"a sample has {len(values)} arrays, the model has "
                              f"{len(names)} inputs ({', '.join(names)})", where=where, field=key)
        arrays = {n: np.asarray(v) for n, v in zip(names, values)}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ConfigError(f"sample lacks input '{missing[0]}'", where=where, field=key)
    shapes = dict(inputs)
    batch = None
    for n, a in arrays.items():
        want = shapes[n]
        fixed = [d if isinstance(d, int) else None for d in want]
        if _fits(a.shape, fixed):
            continue
        if fixed and fixed[0] == 1 and a.ndim == len(fixed) and _fits((1,) + a.shape[1:], fixed):
            batch = a.shape[0] if batch is None else batch
            if a.shape[0] == batch:
                continue
        raise ConfigError(f"input '{n}': sample of shape {list(a.shape)}, the model takes "
                          f"{list(want)}", where=where, field=key)
    arrays = {n: a.astype(np.float32) if a.dtype == np.float64 else a for n, a in arrays.items()}
    if batch is None:
        return [arrays]
    return [{n: a[i:i + 1] for n, a in arrays.items()} for i in range(batch)]


def _fits(shape: tuple, want: Sequence[int | None]) -> bool:
    return len(shape) == len(want) and all(w is None or w == s for s, w in zip(shape, want))


def dataset_samples(cfg: AlgorithmConfig, name: str, key: str,
                    inputs: Sequence[tuple[str, tuple]], limit: int = 0
                    ) -> Iterator[dict[str, np.ndarray]]:
    """Feed dicts from dataset ``name`` (``limit`` loader items at most; 0 = all). The callback
    is imported and called now; the loader is read as the stream is."""
    ds = cfg.dataset(name, key)
    cb_key = f"datasets.{name}.dataloader_callback"
    fn = import_callback(ds["dataloader_callback"], config=cfg.path, key=cb_key)
    try:
        loader = fn(**ds.get("dataloader_kwargs", {}))
        items = iter(loader)
    except Exception as e:
        raise ConfigError(f"the data loader callback failed: {type(e).__name__}: {e}",
                          where=cfg.path, field=cb_key) from None
    return _stream(items, inputs, cfg.path, cb_key, limit)


def _stream(items: Iterator[Any], inputs: Sequence[tuple[str, tuple]], where: Path, key: str,
            limit: int) -> Iterator[dict[str, np.ndarray]]:
    count = 0
    while not limit or count < limit:
        try:
            item = next(items)
        except StopIteration:
            break
        except Exception as e:
            raise ConfigError(f"the data loader failed: {type(e).__name__}: {e}",
                              where=where, field=key) from None
        count += 1
        yield from _as_feeds(item, inputs, where, key)
    if count == 0:
        raise ConfigError("the data loader yielded no samples", where=where, field=key)


def labeled_batches(cfg: AlgorithmConfig, name: str, key: str,
                    inputs: Sequence[tuple[str, tuple]], limit: int = 0
                    ) -> list[tuple[list[dict[str, np.ndarray]], Any]]:
    """``(feed dicts, labels)`` per item of a labeled dataset (items are ``(inputs, labels)``)."""
    ds = cfg.dataset(name, key)
    cb_key = f"datasets.{name}.dataloader_callback"
    fn = import_callback(ds["dataloader_callback"], config=cfg.path, key=cb_key)
    out = []
    try:
        for item in fn(**ds.get("dataloader_kwargs", {})):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ConfigError("a labeled loader yields (inputs, labels) pairs, got "
                                  f"{type(item).__name__}", where=cfg.path, field=cb_key)
            out.append((_as_feeds(item[0], inputs, cfg.path, cb_key), item[1]))
            if limit and len(out) >= limit:
                break
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"the data loader failed: {type(e).__name__}: {e}", where=cfg.path,
                          field=cb_key) from None
    if not out:
        raise ConfigError("the data loader yielded no samples", where=cfg.path, field=cb_key)
    return out
