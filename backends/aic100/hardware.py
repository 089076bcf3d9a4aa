"""Hardware descriptions of the simulated device: a TOML data file (``hw/*.toml``) into a checked
``Hardware`` record for one version string and SKU.

``-aic-hw-version`` names the family ("2.0" is the AIC100, as the vendor's compile flag says) and
the backend option ``sku`` the card (``standard``: 14 cores, ``pro``: 16). The clock is not
published; it is derived from the card's int8 TOPS (see the data file for the arithmetic).

The cost model's free constants (efficiencies of the tensor and vector units, of DDR and the NoC,
per-step, per-tile and barrier overheads, inferences in flight) start from the ASSUMED values in
the data file's ``[model]`` table; when ``hw/fit/<same file name>`` exists (written by
``benchmarks/aic100_fidelity.py --write``, see ``fit.py``) its ``[constants]`` replace them and its
``[band]`` gives the error band the held-out check measured, which reports print beside every
throughput figure.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicc.configfile import load_toml
from aicc.errors import ConfigError

__all__ = ["Hardware", "load_hardware", "known_versions", "fit_path", "HW_DIR", "FIT_DIR",
           "FREE_CONSTANTS"]

HW_DIR = Path(__file__).resolve().parent / "hw"
FIT_DIR = HW_DIR / "fit"
#: the cost model's free constants: (name, upper bound or None); all are positive
FREE_CONSTANTS = (("tensor_efficiency", 1.0), ("block_exponent", 1.0),
                  ("vector_efficiency", 1.0),
                  ("ddr_efficiency", 1.0), ("noc_efficiency", 1.0),
                  ("step_overhead_cycles", None), ("tile_overhead_cycles", None),
                  ("sync_cycles", None), ("pipeline_depth", None))
_MIB = 1 << 20


@dataclass(frozen=True)
class Hardware:
    """One SKU of one hardware family, in the units the planner and the cost model use."""

    family: str
    version: str
    sku: str
    cores: int
    vtcm_bytes: int
    l2_bytes: int
    clock_hz: float
    #: tensor-unit MACs per clock by precision (fp16 derated to the published TFLOPs)
    tensor_macs: dict[str, float]
    #: tensor-unit (K, N) block by precision
    tensor_block: dict[str, tuple[int, int]]
    #: vector-unit MACs (lanes) per clock by precision
    vector_macs: dict[str, float]
    vtcm_bytes_per_clock: float
    ddr_bytes_per_s: float
    ddr_bytes: int
    noc_bytes_per_s: float
    #: host link (PCIe), one direction
    host_bytes_per_s: float
    step_overhead_cycles: float
    tile_overhead_cycles: float
    sync_cycles: float
    #: inferences in flight per activation (activation scheduling; fractional when fitted)
    pipeline_depth: float
    int8_tops: float
    fp16_tflops: float
    source: str
    #: achieved fraction of the tensor unit's block-utilized rate, the vector lanes, DDR and NoC
    tensor_efficiency: float = 1.0
    #: how much of a partly filled tensor block is wasted: rate = peak x utilization ** this
    block_exponent: float = 1.0
    vector_efficiency: float = 1.0
    ddr_efficiency: float = 1.0
    noc_efficiency: float = 1.0
    #: where the free constants come from: "assumed" (the data file) or the fit file's name
    constants_source: str = "assumed"
    #: relative error band of throughput figures from the held-out check (None: not fitted)
    error_band: float | None = None
    #: the same for latency figures
    latency_error_band: float | None = None

    def constants(self) -> dict[str, float]:
        """The free constants of the cost model, by name."""
        return {name: float(getattr(self, name)) for name, _ in FREE_CONSTANTS}

    def with_constants(self, values: dict[str, float]) -> "Hardware":
        """A copy with some free constants replaced (the fit evaluates plans with these)."""
        unknown = set(values) - {name for name, _ in FREE_CONSTANTS}
        if unknown:
            raise ValueError(f"not free constants: {sorted(unknown)}")
        return dataclasses.replace(self, **{k: float(v) for k, v in values.items()})

    @property
    def name(self) -> str:
        return f"{self.family} {self.sku} (hw version {self.version})"

    def describe(self) -> dict[str, Any]:
        """The figures a plan records (JSON-able)."""
        return {"family": self.family, "version": self.version, "sku": self.sku,
                "cores": self.cores, "vtcm_bytes": self.vtcm_bytes, "l2_bytes": self.l2_bytes,
                "clock_hz": round(self.clock_hz), "ddr_bytes_per_s": self.ddr_bytes_per_s,
                "ddr_bytes": self.ddr_bytes, "noc_bytes_per_s": self.noc_bytes_per_s,
                "tensor_macs": dict(self.tensor_macs), "vector_macs": dict(self.vector_macs),
                "constants": {k: round(v, 6) for k, v in self.constants().items()},
                "constants_source": self.constants_source}


def _section(data: dict, key: str, path: Path) -> dict:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ConfigError(f"missing table [{key}]", where=path)
    return value


def _number(table: dict, key: str, path: Path, where: str, *, integer: bool = False) -> Any:
    value = table.get(key)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value <= 0:
        raise ConfigError(f"expected a positive {'integer' if integer else 'number'}, got "
                          f"{value!r}", where=path, field=f"{where}.{key}")
    return value


def _pair(table: dict, key: str, path: Path, where: str) -> tuple[int, int]:
    value = table.get(key)
    if not (isinstance(value, list) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ConfigError(f"expected two positive integers, got {value!r}", where=path,
                          field=f"{where}.{key}")
    return value[0], value[1]


@functools.lru_cache(maxsize=None)
def _read(path: Path) -> dict:
    return load_toml(path, what="hardware description")


def _files() -> list[Path]:
    return sorted(HW_DIR.glob("*.toml"))


def known_versions() -> dict[str, Path]:
    """Version string -> description file, over every file in ``hw/``."""
    out: dict[str, Path] = {}
    for path in _files():
        family = _section(_read(path), "family", path)
        versions = family.get("versions")
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise ConfigError("expected a list of version strings", where=path,
                              field="family.versions")
        for v in versions:
            out[v] = path
    return out


def load_hardware(version: str, sku: str, *, fitted: bool = True) -> Hardware:
    """The description of ``version`` (e.g. "2.0") and ``sku`` (e.g. "standard"), with the
    fitted constants when there are some and ``fitted`` (else the ASSUMED ones)."""
    versions = known_versions()
    if version not in versions:
        raise ConfigError(f"unknown hardware version {version!r}", where="-aic-hw-version",
                          hint=f"known versions: {', '.join(sorted(versions))}")
    path = versions[version]
    data = _read(path)
    family = _section(data, "family", path)
    core = _section(data, "core", path)
    soc = _section(data, "soc", path)
    model = _section(data, "model", path)
    skus = _section(data, "sku", path)
    if sku not in skus:
        raise ConfigError(f"unknown SKU {sku!r} of {family.get('name', version)}",
                          where="backend option 'sku'",
                          hint=f"known SKUs: {', '.join(sorted(skus))}")
    card = skus[sku]
    if not isinstance(card, dict):
        raise ConfigError("expected a table", where=path, field=f"sku.{sku}")
    w = f"sku.{sku}"
    cores = _number(card, "cores", path, w, integer=True)
    int8_tops = _number(card, "int8_tops", path, w)
    fp16_tflops = _number(card, "fp16_tflops", path, w)
    int8_macs = _number(core, "tensor_int8_macs", path, "core", integer=True)
    fp16_macs = _number(core, "tensor_fp16_macs", path, "core", integer=True)
    # No clock is published: derive it from the card's int8 TOPS (a MAC is two operations).
    clock = int8_tops * 1e12 / (cores * int8_macs * 2)
    # The card's published fp16 rate caps the fp16 tensor unit (power-limited at 75 W).
    fp16_effective = min(float(fp16_macs), fp16_tflops * 1e12 / (cores * clock * 2))
    return Hardware(
        family=str(family.get("name", "AIC100")), version=version, sku=sku, cores=cores,
        vtcm_bytes=int(_number(core, "vtcm_mib", path, "core") * _MIB),
        l2_bytes=int(_number(core, "l2_mib", path, "core") * _MIB),
        clock_hz=clock,
        tensor_macs={"int8": float(int8_macs), "fp16": fp16_effective},
        tensor_block={"int8": _pair(core, "tensor_int8_block", path, "core"),
                      "fp16": _pair(core, "tensor_fp16_block", path, "core")},
        vector_macs={"int8": float(_number(core, "vector_int8_macs", path, "core")),
                     "fp16": float(_number(core, "vector_fp16_macs", path, "core")),
                     "fp32": float(_number(core, "vector_fp32_macs", path, "core"))},
        vtcm_bytes_per_clock=float(_number(core, "vtcm_bytes_per_clock", path, "core")),
        ddr_bytes_per_s=_number(soc, "ddr_gbps", path, "soc") * 1e9,
        ddr_bytes=int(_number(card, "ddr_gib", path, w) * (1 << 30)),
        noc_bytes_per_s=_number(soc, "noc_gbps", path, "soc") * 1e9,
        host_bytes_per_s=_number(soc, "host_gbps", path, "soc") * 1e9,
        int8_tops=float(int8_tops), fp16_tflops=float(fp16_tflops), source=path.name,
        **{**_free_constants(model, path, "model"), **(_fitted(path) if fitted else {})})


def _free_constants(table: dict, path: Path, where: str) -> dict[str, float]:
    out = {}
    for name, upper in FREE_CONSTANTS:
        value = float(_number(table, name, path, where))
        if upper is not None and value > upper:
            raise ConfigError(f"expected at most {upper}, got {value!r}", where=path,
                              field=f"{where}.{name}")
        out[name] = value
    return out


def fit_path(hardware_file: str | Path) -> Path:
    """The fitted-constants file of a hardware description (it may not exist)."""
    return FIT_DIR / Path(hardware_file).name


def _fitted(path: Path) -> dict[str, Any]:
    """Constants and error bands from ``hw/fit/<name>``, or nothing when there is no fit."""
    fit = fit_path(path)
    if not fit.exists():
        return {}
    data = _read(fit)
    out: dict[str, Any] = dict(_free_constants(_section(data, "constants", fit), fit,
                                               "constants"))
    band = _section(data, "band", fit)
    out["error_band"] = float(_number(band, "throughput", fit, "band"))
    out["latency_error_band"] = float(_number(band, "latency", fit, "band"))
    out["constants_source"] = f"fit/{fit.name}"
    return out
