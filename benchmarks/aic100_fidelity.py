"""How well the simulated AIC100 predicts published figures: the cost model's free constants fitted
on two MLPerf figures, then checked, without refitting, on figures the fit never saw.

Published figures (MLPerf Inference closed division, Qualcomm's submissions, one card):

- fitted: v1.1 Cloud AI 100 (Standard, 14 cores): ResNet-50 Offline 22,667 samples/s, BERT-99
  Offline 670.9 samples/s;
- held out: v1.1 SingleStream p90 latency, ResNet-50 1.62 ms and BERT-99 11.3 ms; v3.0 Cloud AI 100
  Pro (16 cores) Offline, ResNet-50 about 23,938 and BERT-99 about 783 samples/s.

The AEDK points (ResNet-50 Offline 5,729 at 15 W and 8,911 at 20 W) are not predicted: they need
the AEDK's core count and a clock/power curve, and no public figure gives either (see the notes the
fit file records).

Workloads, built here with random weights (nothing is downloaded):

- ResNet-50 v1.5, int8 QDQ with per-channel weights and int8 input (``workloads.resnet50``);
- BERT-large (MLPerf shape: 24 layers, hidden 1024, 16 heads, sequence 384), float32 built by
  ``workloads_bert.bert_large`` and quantized by aicc's own passes exactly as ``aicc compile
  -convert-to-quantize -input-list-file=...`` does (calibration on one random-token sample, int8
  min-max). To stay within a few GB of memory, the passes quantize the embeddings and ONE encoder
  layer, and the quantized layer is stacked 24 times (renamed copies of its nodes and int8
  weights): quantizing each layer on its own gives the same graph structure, and the cost model
  reads structure and shapes, not values. The simulator then only plans and costs it
  (``-compile-only``: no MAC runs in numpy).

Scenarios. Offline: every (batch, cores per activation) in OFFLINE, with as many activations as
fill the card (cores // cores per activation), ``-multicast-weights``; the prediction is the best
(submitters tune their configuration). SingleStream: batch 1, one activation, the core counts in
SINGLE; the prediction is the lowest end-to-end latency (device latency plus inputs and outputs
over PCIe). See ``aicc.backends.aic100.fit`` for the fit itself: a bounded
least-squares fit in log space with a log-normal prior around the ASSUMED constants, repeated
after planning again with the fitted constants until the chosen configurations settle.

Run: ``.venv/bin/python benchmarks/aic100_fidelity.py [--write]`` (``--write`` stores the fitted
constants in ``backends/aic100/hw/fit/aic100.toml``, which the backend then reads). About two
minutes and 2 GB of memory on one core.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from aicc.backends.aic100.fit import Candidate, Published, Scenario, evaluate_all, fit, write_fit
from aicc.backends.aic100.hardware import Hardware, load_hardware
from aicc.backends.aic100.lower import lower
from aicc.backends.aic100.multicore import build_plan
from aicc.backends.aic100.plan import PlanOptions
from aicc.backends.aic100.workloads import resnet50
from aicc.backends.aic100.workloads_bert import BERT_LARGE, bert_large

__all__ = ["FIGURES", "scenarios", "quantized_bert", "run_fit", "workloads", "main",
           "HARDWARE_FILE", "OFFLINE", "SINGLE"]

HARDWARE_FILE = "aic100.toml"
_V11 = "MLPerf Inference v1.1 closed, Qualcomm Cloud AI 100 (Standard)"
_V30 = "MLPerf Inference v3.0 closed, Qualcomm Cloud AI 100 Pro"
FIGURES = {
    "resnet50-offline-v1.1": Published("resnet50-offline-v1.1", "ResNet-50 Offline, 14 cores",
                                       22667, "throughput", _V11),
    "bert-offline-v1.1": Published("bert-offline-v1.1", "BERT-99 Offline, 14 cores", 670.9,
                                   "throughput", _V11),
    "resnet50-singlestream-v1.1": Published("resnet50-singlestream-v1.1",
                                            "ResNet-50 SingleStream p90", 1.62, "latency", _V11),
    "bert-singlestream-v1.1": Published("bert-singlestream-v1.1", "BERT-99 SingleStream p90",
                                        11.3, "latency", _V11),
    "resnet50-offline-v3.0-pro": Published("resnet50-offline-v3.0-pro",
                                           "ResNet-50 Offline, Pro 16 cores", 23938,
                                           "throughput", _V30),
    "bert-offline-v3.0-pro": Published("bert-offline-v3.0-pro", "BERT-99 Offline, Pro 16 cores",
                                       783, "throughput", _V30),
}
FITTED = ("resnet50-offline-v1.1", "bert-offline-v1.1")
#: (batch, cores per activation) tried, by scenario, network and card; BERT-large plans cost
#: seconds each, so fewer of them
OFFLINE = {"resnet50": {"standard": [(b, c) for b in (1, 8) for c in (1, 2, 4, 7, 14)],
                        "pro": [(b, c) for b in (1, 8) for c in (1, 2, 4, 8, 16)]},
           "bert": {"standard": [(4, c) for c in (2, 7, 14)],
                    "pro": [(4, c) for c in (2, 8, 16)]}}
SINGLE = {"resnet50": [(1, c) for c in (1, 2, 4, 7, 14)], "bert": [(1, 7), (1, 14)]}
BATCHES = {"resnet50": (1, 8), "bert": (1, 4)}
SKUS = ("standard", "pro")
AEDK_NOTE = (
    "AEDK (ResNet-50 Offline 5,729 at 15 W, 8,911 at 20 W) not predicted: its core count and "
    "clock/power curve are unpublished; throughput growing 1.56x for 1.33x power says a static "
    "share of the power budget, which a two-point fit on those same points would only restate.")
#: why a held-out figure of this kind can miss: what the model leaves out
MISS_REASONS = {
    "latency": "the model predicts the device latency of one inference split over all cores; "
               "LoadGen's p90 adds the host runtime's per-query work (submission, completion "
               "interrupt, copies into pinned buffers) and the cost of splitting one inference "
               "that finely (barriers, gathers, imbalance) as the real compiler pays it, and "
               "Offline throughput, where inferences overlap and splits are coarse, reveals "
               "neither to the fit (which drove the per-step overhead down to fit ResNet-50)",
    "throughput": "the Pro submission is two years and several SDK releases after the fitted "
                  "one; the model carries the v1.1 efficiencies over unchanged",
}


def notes_for(scen: list[Scenario], result, limit: float = 0.30) -> list[str]:
    """The AEDK note, and one note per held-out figure beyond ``limit`` saying why."""
    out = [AEDK_NOTE]
    for s in scen:
        err = result.errors[s.figure.key]
        if not s.fitted and abs(err) > limit:
            out.append(f"{s.figure.label}: {err * 100:+.0f}% (beyond ±{limit * 100:.0f}%): "
                       f"{MISS_REASONS[s.figure.kind]}.")
    return out


logger = logging.getLogger("aic100_fidelity")


# --- workloads ---------------------------------------------------------------------------------

def _rebatch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """``model`` with dim 0 of every graph input and output set to ``batch`` (the graph's
    reshapes copy dim 0, so nothing else depends on it); inferred shapes are dropped."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in list(out.graph.input) + list(out.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = batch
    del out.graph.value_info[:]
    return out


def _quantize_through_passes(model: onnx.ModelProto, seq: int, folder: Path) -> onnx.ModelProto:
    """What ``aicc compile -convert-to-quantize -input-list-file=LIST`` makes of ``model``."""
    from aicc.compiler import compile_model, configure
    from aicc.config import CompileConfig
    from aicc.plugins import load_registries

    rng = np.random.default_rng(0)
    sample = {"input_ids": rng.integers(0, BERT_LARGE["vocab"], (1, seq)),
              "input_mask": np.ones((1, seq)),
              "segment_ids": (np.arange(seq) >= seq // 2)[None]}
    parts = []
    for name, value in sample.items():
        value.astype(np.int64).tofile(folder / f"{name}.raw")
        parts.append(f"{name}:={folder / name}.raw")
    (folder / "list.txt").write_text(" ".join(parts) + "\n", encoding="utf-8")
    registries = load_registries()
    req = configure(CompileConfig.from_python(registries.options, {
        "model": model, "target": "aic100", "input_list": str(folder / "list.txt"),
        "quantization": {"calibrate": True}}), registries)
    req.pipeline_only = "quantized"
    _, program, _ = compile_model(req)
    return program.to_model()


def _stack_layers(model: onnx.ModelProto, layers: int) -> onnx.ModelProto:
    """A quantized one-layer model into ``layers`` layers: the nodes and initializers named
    ``layer0.*`` copied as ``layer{i}.*``, each copy reading the previous one's output."""
    g = model.graph
    first = [n for n in g.node if n.name.startswith("layer0.")]
    inits = [t for t in g.initializer if t.name.startswith("layer0.")]
    produced = {o for n in first for o in n.output}
    entry = {x for n in first for x in n.input if x and not x.startswith("layer0.")
             and x not in {t.name for t in g.initializer}}
    # the layer's input: what its MatMuls read from outside (the embeddings' output)
    source = next(x for n in first if n.op_type == "MatMul" for x in n.input if x in entry)
    readers = [n for n in g.node if n.name not in {m.name for m in first}
               and any(x in produced for x in n.input)]
    last_out = next(x for n in readers for x in n.input if x in produced)

    def renamed(name: str, i: int) -> str:
        if name.startswith("layer0."):
            return f"layer{i}." + name[len("layer0."):]
        if name == source and i > 0:
            return f"layer{i - 1}." + last_out[len("layer0."):]
        return name

    new_nodes, new_inits = [], []
    for i in range(1, layers):
        for n in first:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.name = renamed(n.name, i)
            c.input[:] = [renamed(x, i) for x in n.input]
            c.output[:] = [renamed(x, i) for x in n.output]
            new_nodes.append(c)
        for t in inits:
            c = onnx.TensorProto()
            c.CopyFrom(t)
            c.name = renamed(t.name, i)
            new_inits.append(c)
    final = f"layer{layers - 1}." + last_out[len("layer0."):]
    position = max(i for i, n in enumerate(g.node) if n.name in {m.name for m in first}) + 1
    nodes = list(g.node)
    nodes[position:position] = new_nodes
    for n in nodes[position + len(new_nodes):]:
        n.input[:] = [final if x == last_out else x for x in n.input]
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    del g.value_info[:]
    return model


def quantized_bert(*, layers: int = BERT_LARGE["layers"], hidden: int = BERT_LARGE["hidden"],
                   seq: int = BERT_LARGE["seq"]) -> onnx.ModelProto:
    """BERT-large int8 (QDQ, batch 1) quantized by aicc's passes, one layer at a time (see the
    module docstring)."""
    heads = max(1, hidden // 64)
    one = bert_large(batch=1, layers=1, hidden=hidden, heads=heads, seq=seq)
    with tempfile.TemporaryDirectory(prefix="aicc-bert-") as tmp:
        quantized = _quantize_through_passes(one, seq, Path(tmp))
    del one
    return _stack_layers(quantized, layers)


# --- scenarios ---------------------------------------------------------------------------------

def _plans(models: dict[int, onnx.ModelProto], hw: Hardware, wanted: list[tuple[int, int]],
           cache: dict) -> dict[tuple[int, int], object]:
    """Plans for (batch, cores per activation) pairs; ``cache`` keeps the lowered graphs."""
    out = {}
    for batch, cores in wanted:
        if batch not in cache:
            cache[batch] = lower(models[batch])
        # copies are enumerated here as activations: plan one program per core count
        out[batch, cores] = build_plan(cache[batch], hw, PlanOptions(
            num_cores=cores, multicast_weights=True, multicore="split"))
    return out


def scenarios(models: dict[str, dict[int, onnx.ModelProto]], hw: dict[str, Hardware],
              only: dict[str, dict[str, int]] | None = None) -> list[Scenario]:
    """Every published figure with its candidate plans under ``hw`` (by SKU); with ``only``
    (figure key -> configuration, as a fit file stores them) just those configurations."""
    out = []
    for net in ("resnet50", "bert"):
        cache: dict = {}
        for sku, version in (("standard", "v1.1"), ("pro", "v3.0-pro")):
            keys = [(f"{net}-offline-{version}", OFFLINE[net][sku], hw[sku].cores)]
            if sku == "standard":
                keys.append((f"{net}-singlestream-v1.1", SINGLE[net], None))
            for key, wanted, card in keys:
                if only is not None:
                    c = only[key]
                    wanted = [(c["batch"], c["cores_per_activation"])]
                plans = _plans(models[net], hw[sku], wanted, cache)
                cands = [Candidate(p, b, card // c if card else 1)
                         for (b, c), p in plans.items()]
                out.append(Scenario(FIGURES[key], cands, key in FITTED))
        cache.clear()
    return out


def run_fit(models: dict[str, dict[int, onnx.ModelProto]], rounds: int = 2):
    """Plan with the ASSUMED constants and fit; plan again with the fitted constants and fit
    again (from the previous fit), ``rounds`` times. Returns (scenarios, result, prior hardware
    by SKU): the last round's plans, evaluated with the final constants."""
    prior = {sku: load_hardware("2.0", sku, fitted=False) for sku in SKUS}
    current = dict(prior)
    result, chosen, scen = None, None, []
    for r in range(rounds):
        scen = scenarios(models, current)
        result = fit(scen, prior["standard"], start=current["standard"])
        logger.info("round %d: cost %.4g after %d evaluations; %s", r, result.cost,
                    result.evaluations, result.chosen)
        current = {sku: prior[sku].with_constants(result.constants) for sku in SKUS}
        if result.chosen == chosen:
            break
        chosen = dict(result.chosen)
    for s in scen:  # Pro figures under the Pro card's clock and cores
        if "pro" in s.figure.key:
            one = type(result)(constants=result.constants, prior=result.prior)
            evaluate_all(one, [s], current["pro"])
            result.predicted.update(one.predicted)
            result.errors.update(one.errors)
            result.chosen.update(one.chosen)
            result.configs.update(one.configs)
    return scen, result, prior


def workloads(*, bert_layers: int = BERT_LARGE["layers"]) -> dict[str, dict[int, onnx.ModelProto]]:
    bert = quantized_bert(layers=bert_layers)
    return {"resnet50": {b: resnet50(batch=b, precision="int8", int8_input=True)
                         for b in BATCHES["resnet50"]},
            "bert": {b: _rebatch(bert, b) for b in BATCHES["bert"]}}


PROCEDURE = """Procedure (aicc.backends.aic100.fit): bounded least squares over log(constants),
residuals log(predicted/published)/0.02 on the fitted figures plus log(constant/prior)/sigma on
every constant (sigma ln 2 for efficiencies, the block exponent and pipeline depth, ln 4 for
cycle overheads); plans rebuilt with the fitted constants and the fit repeated until the chosen
configurations settle (at most twice).
Fitted on: MLPerf v1.1 ResNet-50 Offline and BERT-99 Offline (Cloud AI 100 Standard).
Held out: v1.1 SingleStream p90 latencies, v3.0 Pro Offline throughputs."""


def table(scen: list[Scenario], result) -> list[str]:
    rows = [f"{'figure':<34} {'role':<9} {'published':>10} {'predicted':>10} {'error':>8}  "
            "configuration"]
    for s in sorted(scen, key=lambda s: (not s.fitted, s.figure.key)):
        f = s.figure
        unit = "ms" if f.kind == "latency" else "/s"
        rows.append(f"{f.label:<34} {'fitted' if s.fitted else 'held-out':<9} "
                    f"{f.value:>8,.5g}{unit} {result.predicted[f.key]:>8,.5g}{unit} "
                    f"{result.errors[f.key] * 100:>+7.1f}%  {result.chosen[f.key]}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="store the fitted constants in backends/aic100/hw/fit/aic100.toml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("aicc").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    models = workloads()
    print(f"workloads built and BERT-large quantized through aicc's passes in "
          f"{time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    scen, result, _ = run_fit(models)
    print(f"fit: {time.perf_counter() - t0:.0f} s, {result.evaluations} evaluations of the cost "
          "model in the last round")
    print("\n".join(table(scen, result)))
    print("fitted constants: " + ", ".join(f"{k} {v:.4g} (prior {result.prior[k]:g})"
                                           for k, v in result.constants.items()))
    print(f"error band from the held-out check: throughput "
          f"±{result.band(scen, 'throughput') * 100:.0f}%, latency "
          f"±{result.band(scen, 'latency') * 100:.0f}%")
    notes = notes_for(scen, result)
    for note in notes:
        print(f"note: {note}")
    if args.write:
        write_fit(HARDWARE_FILE, result, scen, notes, PROCEDURE)
        print(f"wrote backends/aic100/hw/fit/{HARDWARE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
