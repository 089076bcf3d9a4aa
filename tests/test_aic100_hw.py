"""aic100 hardware descriptions: published figures with sources, the derived clock, versions, SKUs
and core counts."""

from __future__ import annotations

import re

import pytest

from aicc.backends.aic100 import Aic100Backend
from aicc.backends.aic100.hardware import HW_DIR, known_versions, load_hardware
from aicc.errors import ConfigError
from aicc.options import build_options

MIB = 1 << 20


def test_published_figures_and_derived_clock():
    std, pro = load_hardware("2.0", "standard"), load_hardware("2.0", "pro")
    assert (std.cores, pro.cores) == (14, 16)
    for hw in (std, pro):
        assert hw.vtcm_bytes == 8 * MIB and hw.l2_bytes == 1 * MIB
        assert hw.tensor_macs["int8"] == 8192 and hw.vector_macs == {
            "int8": 512, "fp16": 256, "fp32": 128}
        assert hw.ddr_bytes_per_s == pytest.approx(136.5e9)
    assert (std.ddr_bytes, pro.ddr_bytes) == (16 << 30, 32 << 30)
    # on-chip SRAM: 14 x 9 MiB = 126 MB (Standard), 16 x 9 MiB = 144 MB (Pro)
    assert std.cores * (std.vtcm_bytes + std.l2_bytes) == 126 * MIB
    assert pro.cores * (pro.vtcm_bytes + pro.l2_bytes) == 144 * MIB
    # no clock is published: TOPS / (cores x 8192 MAC x 2 ops)
    assert std.clock_hz == pytest.approx(325e12 / (14 * 8192 * 2))
    assert pro.clock_hz == pytest.approx(375e12 / (16 * 8192 * 2))
    assert 1.4e9 < std.clock_hz < 1.45e9 and 1.4e9 < pro.clock_hz < 1.45e9
    # fp16 tensor MACs derated to the published TFLOPs
    assert pro.tensor_macs["fp16"] * 2 * pro.cores * pro.clock_hz == pytest.approx(125e12)
    assert pro.tensor_macs["fp16"] < 4096


def test_every_figure_says_where_it_comes_from():
    text = (HW_DIR / "aic100.toml").read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"^[a-z_0-9]+ = ", line) or line.startswith(("name =", "versions =")):
            continue
        j = i - 1
        while j >= 0 and re.match(r"^[a-z_0-9]+ = ", lines[j]):  # figures grouped under one
            j -= 1                                               # comment share it
        above = []
        while j >= 0 and lines[j].startswith("#"):
            above.append(lines[j])
            j -= 1
        assert above, f"no comment above line {i + 1}: {line}"
        assert re.search(r"\[(arch|hc33|seed)\]|ASSUMED|DERIVED", " ".join(above)), line


def test_versions():
    assert list(known_versions()) == ["2.0"]
    with pytest.raises(ConfigError, match=r"-aic-hw-version: unknown hardware version '1\.5' "
                                          r"\(known versions: 2\.0\)"):
        load_hardware("1.5", "standard")
    with pytest.raises(ConfigError, match="known versions: 2.0"):
        Aic100Backend(Aic100Backend.Options(hw_version="9.9"))
    # --backend-option hw_version=2.0 arrives as a number
    assert Aic100Backend(Aic100Backend.Options(hw_version=2.0)).hw.version == "2.0"


def test_sku_option():
    with pytest.raises(ConfigError, match=r"expected one of \['standard', 'pro'\]"):
        build_options(Aic100Backend.Options, {"sku": "ultra"}, owner="backend 'aic100'")
    with pytest.raises(ConfigError, match="unknown SKU 'ultra'.*known SKUs: pro, standard"):
        load_hardware("2.0", "ultra")


@pytest.mark.parametrize("sku,ok,bad", [("standard", 14, 15), ("pro", 16, 17)])
def test_core_count_above_the_description(sku, ok, bad):
    assert Aic100Backend(Aic100Backend.Options(sku=sku, num_cores=ok)).hw.cores == ok
    with pytest.raises(ConfigError, match=f"-aic-num-cores: {bad} cores requested but AIC100 "
                                          f"{sku} .* has {ok}"):
        Aic100Backend(Aic100Backend.Options(sku=sku, num_cores=bad))


def test_activations_need_cores():
    Aic100Backend(Aic100Backend.Options(num_cores=7, activations=2))
    with pytest.raises(ConfigError, match=r"-a: 2 activations x 8 cores = 16 cores.*at most 1 "
                                          r"activation"):
        Aic100Backend(Aic100Backend.Options(num_cores=8, activations=2))


def test_ratio_zero_refused():
    with pytest.raises(ConfigError, match="ratio must be above 0"):
        Aic100Backend(Aic100Backend.Options(vtcm_working_set_limit_ratio=0.0))
