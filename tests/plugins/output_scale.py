"""A third-party feature in one file: a compile option with its flag, and the pass it adds.

``output_scale`` (flag ``-output-scale=F``, keyword ``output_scale=F``, config key
``output_scale: F``) multiplies every float output of the compiled program by F, through the pass
``scale-outputs`` placed by its declared order (after the core passes, before ``cleanup``). Listed
in ``output_scale.toml``; nothing in aicc is edited to add it (tests/test_feature_plugins.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_graphsurgeon as gs

from aicc import Pass, hookimpl, option
from aicc.config import Option
from aicc.errors import ConfigError, option_ref


def _positive(value: float) -> float:
    if not value > 0:
        raise ConfigError(f"{value} is not a positive factor", hint="e.g. 2.0")
    return value


class ScaleOutputs(Pass):
    name = "scale-outputs"
    description = "multiply every float graph output by a factor"
    scope = "graph"
    semantics = "approximating"
    after = ("fold-batchnorm", "quantize", "custom-io")

    @dataclasses.dataclass(frozen=True)
    class Options:
        factor: float = option(1.0, "the factor", minimum=0.0)

    def run_graph(self, graph: gs.Graph, program, ctx) -> bool:
        if ctx.options.factor == 1.0:
            return False
        outputs = []
        for out in graph.outputs:
            if out.dtype != np.float32:
                outputs.append(out)
                continue
            inner = gs.Variable(f"{out.name}_unscaled", dtype=out.dtype, shape=out.shape)
            for node in list(out.inputs):
                node.outputs = [inner if t is out else t for t in node.outputs]
            factor = gs.Constant(f"{out.name}_factor",
                                 np.array(ctx.options.factor, dtype=np.float32))
            graph.nodes.append(gs.Node("Mul", name=f"{out.name}_scale", inputs=[inner, factor],
                                       outputs=[out]))
            outputs.append(out)
        graph.outputs = outputs
        graph.toposort()
        ctx.count("outputs scaled", len(outputs))
        return True


@hookimpl
def aicc_register_passes(registry):
    registry.add(ScaleOutputs)


@hookimpl
def aicc_add_options(options):
    options.add(Option("output_scale", float, "multiply every float output by this factor",
                       flags=("-output-scale", "--output-scale"), check=_positive,
                       metavar="F"))


@hookimpl
def aicc_configure(config, request):
    if config.given("output_scale"):
        if config.get("target") == "aic100" and config.get("output_scale") > 65504:
            raise ConfigError(f"{option_ref('output_scale')} overflows fp16")
        request.add_pass("scale-outputs", {"factor": config.get("output_scale")},
                         by="output_scale")
