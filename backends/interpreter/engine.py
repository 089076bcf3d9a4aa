"""The interpreter engine: an ONNX model turned into a precomputed schedule of numpy kernels.

Control-flow bodies (If, Loop, Scan) get interpreters of their own (``for_subgraph``, see
``ops_control``); the outer-scope values a body reads become extra inputs of its node, so the
liveness below keeps them until the node has run.

Construction does all the per-model work once: it checks every op up front (reporting all the
unsupported ones together), parses attributes, builds one kernel per node, evaluates Constant
nodes, orders the nodes and, per requested set of outputs, plans which nodes to run and after which
step each intermediate tensor dies. ``run`` then only binds and checks the feeds and walks the plan,
dropping every intermediate after its last consumer so memory follows the live set.

Observers (the backend's ``observation``: calibration, fp16 checks) see tensors as they are
produced; they must not modify the arrays they are given. What a model holds before it runs (its
opset, nested graphs and the outer names they read, which nodes have a kernel) is read by
``graphs``.
"""

from __future__ import annotations

import functools
import heapq
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from aicc.errors import AiccError, BackendError, DataError, ModelError, did_you_mean

from . import (ops_control, ops_conv, ops_elementwise, ops_integer, ops_nn, ops_quant, ops_reduce,
               ops_resize, ops_rnn, ops_shape)
from .feeds import TensorSpec, bind_feeds, check_declared, format_shape, tensor_spec
from .graphs import (default_opset, inline, node_label, outer_names, resolve, subgraphs,
                     unsupported_nodes)
from .kernels import NodeSpec, in_float32, parse_attribute
from .ops_shape import constant_value

__all__ = ["Interpreter", "TensorSpec", "ScheduledNode", "Observer"]

logger = logging.getLogger(__name__)

# importing the op modules registers their kernels
_KERNEL_MODULES = (ops_control, ops_conv, ops_elementwise, ops_integer, ops_nn, ops_quant,
                   ops_reduce, ops_resize, ops_rnn, ops_shape)

Observer = Callable[[str, np.ndarray], None]
_ALL = "all"  # plan key: observe every produced tensor
_MAX_PLANS = 32


@dataclass(frozen=True)
class ScheduledNode:
    """One step of a plan: the node, what it reads and writes, and what dies after it."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    frees: tuple[str, ...]


@dataclass
class _Plan:
    steps: list[tuple]  # (kernel, input names, output names, names to free, names to observe, i)
    observe_first: tuple[str, ...]  # inputs/constants to show the observer before the first step
    schedule: list[ScheduledNode]


def _nested(opset: int, graph: onnx.GraphProto) -> tuple[Interpreter, list[str]]:
    """A control-flow body's interpreter and the outer names it reads (``NodeSpec.body``)."""
    outer = outer_names(graph)
    return Interpreter.for_subgraph(graph, opset, outer), outer


class Interpreter:
    """Runs an ONNX model op by op in numpy with ONNX semantics (opsets 13-21 and beyond).

    ``check_types`` compares every produced tensor with the dtype and static dims the model
    declares for it (slow; for debugging kernels and shape inference). ``profile`` records the
    time spent per op type in ``self.op_times``.
    """

    def __init__(self, model: onnx.ModelProto, *, check_types: bool = False,
                 profile: bool = False):
        model = inline(model)
        problems = self.unsupported_nodes(model)
        if problems:
            raise BackendError(
                f"{len(problems)} node(s) the interpreter cannot run: " + "; ".join(problems),
                hint="run the model on another backend or rewrite these ops")
        self._setup(model.graph, default_opset(model), (), check_types, profile)

    @classmethod
    def for_subgraph(cls, graph: onnx.GraphProto, opset: int, outer: Iterable[str], *,
                     check_types: bool = False, profile: bool = False) -> "Interpreter":
        """An interpreter of a control-flow body whose nodes may read the ``outer`` names.

        Its ops were checked with the enclosing model's (``unsupported_nodes`` recurses)."""
        self = cls.__new__(cls)
        self._setup(graph, opset, tuple(outer), check_types, profile)
        return self

    def _setup(self, graph: onnx.GraphProto, opset: int, outer: tuple[str, ...],
               check_types: bool, profile: bool) -> None:
        self.check_types = check_types
        self.profile = profile
        self.outer = outer
        self.op_times: dict[str, list[float]] = {}
        self._consts: dict[str, np.ndarray] = {}
        for init in graph.initializer:
            arr = numpy_helper.to_array(init)
            arr.setflags(write=False)
            self._consts[init.name] = arr
        self._inputs = [tensor_spec(vi) for vi in graph.input]
        self._input_map = {s.name: s for s in self._inputs}
        self._output_names = tuple(o.name for o in graph.output)
        self._types = {vi.name: tensor_spec(vi)
                       for vi in list(graph.value_info) + list(graph.output) + list(graph.input)}
        self._constant_outputs: list[str] = []
        self._nodes: list[tuple] = []  # (kernel, NodeSpec) in execution order
        self._build(graph, opset)
        self._producer = {name: i for i, (_, spec) in enumerate(self._nodes)
                          for name in spec.outputs if name}
        self._known = set(self._consts) | set(self._input_map) | set(self._producer) | set(outer)
        # qualified names of the tensors inside control-flow bodies -> the node running them
        self._inner: dict[str, int] = {}
        for i, (kernel, spec) in enumerate(self._nodes):
            for name in getattr(kernel, "inner_names", ()):
                self._inner[f"{spec.name}/{name}"] = i
        self._plans: dict[tuple, _Plan] = {}
        self._configure_bodies()
        logger.debug("interpreter: %d kernels, %d constants (%d from Constant nodes)",
                     len(self._nodes), len(self._consts), len(self._constant_outputs))

    # --- construction ----------------------------------------------------------------------

    def _configure_bodies(self) -> None:
        """Control-flow bodies (nested ones too) check types and profile as this one does;
        profiled body ops add to this interpreter's ``op_times``."""
        stack = [self]
        while stack:
            interp = stack.pop()
            for kernel, _ in interp._nodes:
                for body in getattr(kernel, "bodies", ()):
                    body.check_types, body.profile = self.check_types, self.profile
                    body.op_times = self.op_times
                    stack.append(body)

    @staticmethod
    def unsupported_nodes(model: onnx.ModelProto) -> list[str]:
        """Every node the interpreter cannot run (see ``graphs.unsupported_nodes``)."""
        return unsupported_nodes(model)

    def _build(self, graph: onnx.GraphProto, opset: int) -> None:
        specs = []
        for i, node in enumerate(graph.node):
            entry, version, _ = resolve(node, i, opset)
            captured: list[str] = []
            for _, g in subgraphs(node):
                captured += [n for n in outer_names(g) if n not in captured]
            spec = NodeSpec(name=node_label(node, i), op_type=node.op_type, version=version,
                            attrs={a.name: parse_attribute(a) for a in node.attribute},
                            inputs=tuple(node.input) + tuple(captured),
                            outputs=tuple(node.output), captured=tuple(captured), opset=opset,
                            body=functools.partial(_nested, opset))
            if node.op_type == "Constant":
                try:
                    value = constant_value(spec)
                except Exception as e:
                    raise ModelError(f"{spec.describe()}: {e}") from e
                value.setflags(write=False)
                self._consts[node.output[0]] = value
                self._constant_outputs.append(node.output[0])
                continue
            try:
                kernel = entry.builder(spec)
            except AiccError:
                raise
            except Exception as e:
                raise ModelError(f"{spec.describe()}: {e}") from e
            specs.append((in_float32(kernel) if entry.half_in_float32 else kernel, spec))
        self._nodes = self._toposort(specs)

    def _toposort(self, nodes: list[tuple]) -> list[tuple]:
        """Nodes in an order where every input exists before use (stable for sorted graphs)."""
        available = set(self._consts) | set(self._input_map) | set(self.outer) | {""}
        producer: dict[str, int] = {}
        for i, (_, spec) in enumerate(nodes):
            for out in spec.outputs:
                if not out:
                    continue
                if out in producer or out in self._consts:
                    raise ModelError(f"{spec.describe()}: output '{out}' is produced twice")
                producer[out] = i
        waiting = {}
        users: dict[str, list[int]] = {}
        ready = []
        for i, (_, spec) in enumerate(nodes):
            missing = {n for n in spec.inputs if n not in available}
            for n in missing:
                if n not in producer:
                    raise ModelError(f"{spec.describe()}: input '{n}' is not a graph input, an "
                                     "initializer or the output of any node")
                users.setdefault(n, []).append(i)
            waiting[i] = len(missing)
            if not missing:
                ready.append(i)
        order = []
        heapq.heapify(ready)
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for out in nodes[i][1].outputs:
                for j in users.get(out, ()):
                    waiting[j] -= 1
                    if waiting[j] == 0:
                        heapq.heappush(ready, j)
        if len(order) != len(nodes):
            done = set(order)
            stuck = next(nodes[i][1] for i in range(len(nodes)) if i not in done)
            raise ModelError(f"{stuck.describe()}: the graph has a cycle through this node")
        return [nodes[i] for i in order]

    # --- introspection ---------------------------------------------------------------------

    @property
    def inputs(self) -> list[TensorSpec]:
        """The graph inputs a caller feeds (initializer-backed inputs are optional)."""
        return list(self._inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    @property
    def constant_names(self) -> frozenset[str]:
        """Initializers and Constant-node outputs: made once at construction, never freed."""
        return frozenset(self._consts)

    def tensor_names(self) -> list[str]:
        """Every tensor a run can observe or return: inputs, initializers, node outputs."""
        return sorted(self._known)

    def inner_tensor_names(self) -> list[str]:
        """Tensors inside control-flow bodies an observer can see, qualified by the node that
        runs them (``loop_node/body_tensor``; nested bodies add one level per node)."""
        return sorted(self._inner)

    def schedule(self, outputs: Iterable[str] | None = None) -> list[ScheduledNode]:
        """The steps a run computing ``outputs`` takes, with the tensors freed after each."""
        names = self._output_names if outputs is None else self._check_names(outputs, "outputs")
        return list(self._plan(tuple(names), None).schedule)

    # --- planning --------------------------------------------------------------------------

    def _check_names(self, names: Iterable[str], what: str,
                     inner: bool = False) -> tuple[str, ...]:
        if isinstance(names, str):
            names = [names]
        names = tuple(names)
        for n in names:
            if n not in self._known and not (inner and n in self._inner):
                raise DataError(f"{what}: no tensor named '{n}' in the model",
                                hint=did_you_mean(n, self._known))
        return names

    def _plan(self, outputs: tuple[str, ...], observed) -> _Plan:
        """The steps computing ``outputs`` (and ``observed``: None, _ALL or a set of names)."""
        key = (outputs, observed)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        nodes = self._nodes
        if observed == _ALL:
            needed = list(range(len(nodes)))
        else:
            targets = set(outputs) | {n for n in observed or () if n not in self._inner}
            # an observed body tensor needs the node that runs the body
            targets |= {nodes[self._inner[n]][1].outputs[0] for n in observed or ()
                        if n in self._inner}
            needed = self._needed(targets)

        def shown(name: str) -> bool:
            return observed == _ALL or (observed is not None and name in observed)

        keep = set(outputs) | set(self._consts)
        last_use: dict[str, int] = {}
        for k, i in enumerate(needed):
            for n in nodes[i][1].inputs:
                if n:
                    last_use[n] = k
        steps, schedule = [], []
        for k, i in enumerate(needed):
            kernel, spec = nodes[i]
            dying = [n for n in dict.fromkeys(spec.inputs)
                     if n and last_use.get(n) == k and n not in keep]
            dying += [n for n in spec.outputs if n and n not in last_use and n not in keep]
            observe_now = tuple(n for n in spec.outputs if n and shown(n))
            steps.append((kernel, spec.inputs, spec.outputs, tuple(dying), observe_now, i))
            schedule.append(ScheduledNode(spec.name, spec.op_type, spec.inputs, spec.outputs,
                                          tuple(dying)))
        if observed == _ALL:
            first = tuple(s.name for s in self._inputs) + tuple(self._constant_outputs)
        else:
            first = tuple(sorted(n for n in observed or ()
                                 if n not in self._producer and n not in self._inner))
        plan = _Plan(steps, first, schedule)
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def _needed(self, targets: set[str]) -> list[int]:
        """Indices (in execution order) of the nodes that ``targets`` depend on."""
        nodes = self._nodes
        mark = [False] * len(nodes)
        stack = [self._producer[t] for t in targets if t in self._producer]
        while stack:
            i = stack.pop()
            if not mark[i]:
                mark[i] = True
                stack.extend(self._producer[n] for n in nodes[i][1].inputs if n in self._producer)
        return [i for i in range(len(nodes)) if mark[i]]

    # --- running ---------------------------------------------------------------------------

    def run(self, feeds: Mapping[str, np.ndarray], *, observe: Observer | None = None,
            observe_names: Iterable[str] | None = None,
            outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model on ``feeds`` and return the graph outputs (or the ``outputs`` named).

        ``observe(name, array)`` is called for every tensor produced (graph inputs and Constant
        outputs too) whose name is in ``observe_names`` (None = all); naming an initializer in
        ``observe_names`` shows it as well. Tensors inside If/Loop/Scan bodies are shown with
        qualified names (``inner_tensor_names``), once per iteration that produces them.
        """
        env: dict[str, Any] = dict(self._consts)
        env[""] = None  # an omitted optional input
        env.update(bind_feeds(feeds, self._inputs, self._consts))
        out_names = self._output_names if outputs is None else self._check_names(outputs,
                                                                                  "outputs")
        if observe is None:
            observed = None
        elif observe_names is None:
            observed = _ALL
        else:
            observed = frozenset(self._check_names(observe_names, "observe_names", inner=True))
        inner = observe
        if isinstance(observed, frozenset):
            def inner(name: str, value: Any) -> None:
                if name in observed:
                    observe(name, value)
        plan = self._plan(out_names, observed)
        for name in plan.observe_first:
            if name in env:
                observe(name, env[name])
        with np.errstate(all="ignore"):
            self._walk(plan, env, observe, inner)
        return self._collect(out_names, env, feeds)

    def run_body(self, values: Mapping[str, Any], observe: Observer | None = None) -> list:
        """Run a control-flow body (see ``for_subgraph``): ``values`` binds its inputs and the
        outer names it reads; returns its outputs in order. ``observe`` sees every tensor."""
        env: dict[str, Any] = dict(self._consts)
        env[""] = None
        env.update(values)
        plan = self._plan(self._output_names, None if observe is None else _ALL)
        if observe is not None:
            for name in plan.observe_first:
                if name in env:
                    observe(name, env[name])
        self._walk(plan, env, observe, observe)
        return [env[n] for n in self._output_names]

    def _walk(self, plan: _Plan, env: dict, observe: Observer | None,
              inner: Observer | None) -> None:
        nodes = self._nodes
        check = self.check_types
        profile = self.profile
        for kernel, ins, outs, dying, shown, i in plan.steps:
            args = [env[n] for n in ins]
            try:
                if profile:
                    t0 = time.perf_counter()
                    res = self._call(kernel, args, i, inner)
                    self._account(nodes[i][1].op_type, time.perf_counter() - t0)
                else:
                    res = self._call(kernel, args, i, inner)
            except AiccError:
                raise
            except Exception as e:
                raise self._kernel_error(nodes[i][1], args, e) from e
            if type(res) is np.ndarray:
                env[outs[0]] = res
            elif type(res) is tuple:
                for name, value in zip(outs, res):
                    if name:
                        env[name] = np.asarray(value) if isinstance(value, np.generic) else value
            else:  # numpy scalars from full reductions become 0-d arrays; sequences pass as is
                env[outs[0]] = np.asarray(res) if isinstance(res, np.generic) else res
            if check:
                self._check_produced(nodes[i][1], env)
            for name in shown:
                observe(name, env[name])
            for name in dying:
                del env[name]

    def _call(self, kernel, args: list, i: int, inner: Observer | None):
        """``kernel(*args)``; a control-flow kernel also gets an observer that qualifies the
        names of its body's tensors with this node's name."""
        if inner is None or not hasattr(kernel, "inner_names"):
            return kernel(*args)
        prefix = self._nodes[i][1].name + "/"
        return kernel(*args, observe=lambda name, value: inner(prefix + name, value))

    def _account(self, op_type: str, seconds: float) -> None:
        slot = self.op_times.setdefault(op_type, [0, 0.0])
        slot[0] += 1
        slot[1] += seconds

    def _kernel_error(self, spec: NodeSpec, args: list, e: Exception) -> BackendError:
        shapes = ", ".join("none" if a is None else f"{getattr(a, 'dtype', '?')}"
                           f"{format_shape(getattr(a, 'shape', ()))}" for a in args)
        return BackendError(f"{spec.describe()} failed on inputs [{shapes}]: "
                            f"{type(e).__name__}: {e}")

    def _check_produced(self, spec: NodeSpec, env: dict) -> None:
        for name in spec.outputs:
            declared = self._types.get(name)
            if name and declared is not None and declared.dtype is not None:
                check_declared(declared, env[name], f"{spec.describe()}: output")

    def _collect(self, names: tuple[str, ...], env: dict, feeds: Mapping) -> dict:
        result = {}
        fed = [v for v in feeds.values() if isinstance(v, np.ndarray)]
        for name in names:
            value = env[name]
            if isinstance(value, np.ndarray):
                declared = self._types.get(name)
                if declared is not None and declared.dtype is not None \
                        and value.dtype != declared.dtype:
                    who = self._producer.get(name)
                    where = self._nodes[who][1].describe() if who is not None else "the graph"
                    raise BackendError(f"{where}: output '{name}' has dtype {value.dtype}, but "
                                       f"the model declares {declared.dtype}")
                if not value.flags.writeable or any(np.may_share_memory(value, f) for f in fed):
                    value = value.copy()
            result[name] = value
        return result
