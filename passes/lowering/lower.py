"""``lower``: rewrite the op types a backend lacks, with the passes that declare them.

The compile driver adds ``lower{ops=[...]}`` to a generated pipeline when the model has ops of the
default domain that the backend's op table lacks and a registered pass declares it rewrites them
(``Pass.lowers``: ``fold-if``, ``unroll-loops``, ``lower-rnn``, or a plugin's). This pass picks
those passes and runs them in place, as one nested pipeline (``ctx.run_pipeline``: each runs
inside the same instruments and contract checks, shown as ``lower/NAME``):

- ``fold-constants`` first, so that weights built from constants, If conditions and trip counts
  computed from bound shapes are constants by then;
- the passes that remove control flow (If/Loop/Scan), so that a body's ops surface in the graph,
  then the others, each group by name;
- when both If and loops are lowered: an If inside a loop body surfaces once unrolled, its
  condition often depends on the iteration number (a constant after folding), so ``fold-if``
  runs leniently before unrolling and again after a second folding;
- an If whose condition stays data is predicated (``predicate-if``: both branches and a Where)
  after the last ``fold-if``, or refused naming the node when its branches disagree.

It runs after ``specialize`` (each specialization's shapes bound) and before the passes that pick
nodes or ranges (``convert-fp16``, ``fold-constants``, quantization), so they see the ops that
will run.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from aicc import Pass, hookimpl, option
from aicc.errors import ConfigError
from aicc.pass_base import PassResult
from aicc.passes.lowering.fold_if import fold_ifs_to_fixed_point

__all__ = ["Lower", "lowering_sequence"]

logger = logging.getLogger(__name__)

_CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})


def lowering_sequence(ops: frozenset[str], passes_registry: Any) -> list[tuple[str, dict]]:
    """The nested pipeline that rewrites ``ops``: (pass, options) pairs."""
    chosen = sorted((not set(e.cls.lowers) & _CONTROL_FLOW, e.name, e.cls)
                    for e in passes_registry.entries()
                    if e.cls.lowers and ops & set(e.cls.lowers))
    lacking = sorted(ops - {op for _, _, cls in chosen for op in cls.lowers})
    if lacking:
        raise ConfigError(f"no registered pass lowers {', '.join(lacking)}", field="lower: ops",
                          hint="a pass declares what it rewrites in Pass.lowers; "
                               "`aicc ops` lists them")
    steps: list[tuple[str, dict]] = [("fold-constants", {})]
    steps += [(name, cls.lowering_options(ops & frozenset(cls.lowers))) for _, name, cls in chosen]
    names = [name for name, _ in steps]
    if "If" in ops and "unroll-loops" in names and "fold-if" in names:
        at = names.index("unroll-loops") + 1
        steps[names.index("fold-if")] = ("fold-if", {"strict": False})
        steps[at:at] = [("fold-constants", {}), ("fold-if", {"strict": True})]
    if "predicate-if" in names and "fold-if" in names:
        # the Ifs left unfolded (their conditions are data) are predicated, after the last
        # fold-if, which then leaves them instead of refusing them
        predicate = steps.pop([n for n, _ in steps].index("predicate-if"))
        steps = [("fold-if", {**o, "strict": False}) if n == "fold-if" else (n, o)
                 for n, o in steps]
        last = max(i for i, (n, _) in enumerate(steps) if n == "fold-if")
        steps.insert(last + 1, predicate)
    return steps


class Lower(Pass):
    name = "lower"
    description = "rewrite op types the backend lacks with the passes that declare them"
    scope = "program"
    semantics = "preserving"
    after = ("specialize",)

    @dataclasses.dataclass(frozen=True)
    class Options:
        ops: list[str] = option([], "op types (default domain) to rewrite")

    def run(self, program, ctx) -> PassResult:
        ops = frozenset(ctx.options.ops)
        if not ops:
            return PassResult(modified=False)
        steps = lowering_sequence(ops, ctx.registries.passes)
        if "If" in ops:
            program = fold_ifs_to_fixed_point(program, ctx)
            steps = steps[1:]           # its last round folded constants already
        return PassResult(program=ctx.run_pipeline(steps, program))


@hookimpl
def aicc_register_passes(registry):
    registry.add(Lower)
