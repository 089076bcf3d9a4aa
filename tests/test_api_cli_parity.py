"""The Python API does what the CLI does: for each feature, ``aicc.compile`` with keywords and
``aicc compile`` with the vendor's flags build byte-identical containers (the README shows each
pair). Both entrances build the same ``aicc.config.CompileConfig``; these tests hold them to it
through the whole compile: passes, options, backend and container."""

from __future__ import annotations

from pathlib import Path

import pytest

import aicc
from aicc.cli import main
from quant_builders import DIGITS, DIGITS_LIST
from spec_helpers import write_two_size_conv
from test_feature_plugins import same_tree


def _files(tmp: Path) -> dict[str, Path]:
    (tmp / "io.yaml").write_text("- IOName: image\n  Precision: float16\n"
                                 "- IOName: logits\n  Precision: float16\n")
    (tmp / "npi.yaml").write_text("FP16NodeInstanceNames: [conv0, bn0, relu0]\n")
    profile = tmp / "p.yaml"
    assert main(["compile", f"-m={DIGITS}", "--input-shape=image=1,1,8,8",
                 f"-input-list-file={DIGITS_LIST}", f"-dump-profile={profile}"]) == 0
    model, spec = write_two_size_conv(tmp)
    return {"io": tmp / "io.yaml", "npi": tmp / "npi.yaml", "profile": profile,
            "spec_model": model, "spec": spec}


#: (feature, CLI flags, aicc.compile keywords); "{name}" names a file of _files
CASES = [
    ("quantize (calibrate)", ["--input-shape=image=1,1,8,8", "-input-list-file={list}",
                              "-convert-to-quantize", "-enable-channelwise"],
     dict(input_shapes=["image=1,1,8,8"], input_list="{list}",
          quantization=dict(calibrate=True, per_channel=True))),
    ("quantize (bias correction)", ["--input-shape=image=1,1,8,8", "-input-list-file={list}",
                                    "-convert-to-quantize", "-bias-correction"],
     dict(input_shapes=["image=1,1,8,8"], input_list="{list}",
          quantization=dict(calibrate=True, bias_correction=True))),
    ("quantize (profile)", ["-load-profile={profile}", "-enable-channelwise",
                            "-quantization-schema-activations=asymmetric"],
     dict(quantization=dict(profile="{profile}", per_channel=True,
                            activation_schema="asymmetric"))),
    ("custom I/O", ["-custom-IO-list-file={io}"], dict(custom_io="{io}")),
    ("custom I/O on the device", ["-custom-IO-list-file={io}", "-aic-preproc"],
     dict(custom_io="{io}", aic_preproc=True)),
    ("fp16", ["-convert-to-fp16", "-keep-original-precision-for-nodes=Gemm"],
     dict(fp16=True, keep_original_precision=["Gemm"])),
    ("node precision", ["-node-precision-info={npi}"], dict(node_precision_info="{npi}")),
    ("aic100", ["-aic-hw", "-aic-num-cores=2", "-convert-to-fp16", "-batchsize=1"],
     dict(target="aic100", num_cores=2, fp16=True, batchsize=1)),
    ("specializations", ["-network-specialization-config={spec}"],
     dict(specializations="{spec}")),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _files(tmp_path_factory.mktemp("parity"))


def _fill(value, names):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


@pytest.mark.parametrize("feature,flags,keywords", CASES, ids=[c[0] for c in CASES])
def test_api_and_cli_build_the_same_container(files, tmp_path, feature, flags, keywords):
    names = {**{k: str(v) for k, v in files.items()}, "list": str(DIGITS_LIST)}
    model = files["spec_model"] if feature == "specializations" else DIGITS
    cli, api = tmp_path / "cli.qpc", tmp_path / "api.qpc"
    assert main(["compile", f"-m={model}", *_fill(flags, names), f"-aic-binary-dir={cli}",
                 "-compile-only"]) == 0
    aicc.compile(str(model), output=api, **_fill(keywords, names))
    assert same_tree(cli, api), feature
