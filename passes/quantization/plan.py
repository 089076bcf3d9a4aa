# size: the planner of one graph (activations, parameters, overrides, float ops) in one class
"""Quantization planning for one graph: settings, calibration statistics and overrides in, the
encoding of every tensor (and the QDQ graph written through ``qdq``) out.

Not a plugin (nothing registers here): ``quantize`` (``passes/quantization/quantize.py``, which
documents the rules) runs ``GraphQuantizer`` on each graph and records what it returns. Its helpers:
``settings`` (options -> settings, statistics -> encodings), ``grouping`` (activations that share
an encoding), ``fusion`` (tensors inside fused kernels, left unquantized), ``qdq`` (the writer),
``float_ops`` (ops kept in float) and ``aicc.quant.exact`` (float tensors kept exact).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from aicc import ir
from aicc.errors import ConfigError, did_you_mean
from aicc.pass_base import PassContext
from aicc.quant import Encoding, EncodingsTable, Profile, TensorStats, bias_encoding, \
    weight_channel_axis
from aicc.quant.weights import widen_for_bias
from aicc.quant.exact import exact_helper, integer_reads, shape_computations

from .analyses import ADAROUND_ROUNDING, BIAS_CORRECTION
from .float_ops import lower_float_ops
from .fusion import activation_fused, elementwise_interior
from .grouping import activation_groups
from .qdq import NON_DATA_INPUTS, OPSET_INT4_INT16, QdqWriter, ensure_opset, needs_opset21
from .settings import Encoder, QuantSettings

__all__ = ["GraphQuantizer", "QuantSettings", "quantized_activations"]

logger = logging.getLogger(__name__)

_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_CONST_OPERAND_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu",
                                "Concat", "MatMul", "Gemm"})
_FLOAT_KINDS = (np.dtype(np.float32),)


def _is_float(t: gs.Tensor, profile: Profile | None) -> bool:
    dtype = ir.tensor_dtype(t)
    if dtype is None:
        return profile is not None and (t.name in profile or t.name in profile.skipped)
    return dtype in _FLOAT_KINDS


class _AnyFloat:
    """Stands for a profile when planning before calibration: a tensor of unknown type may be
    float (calibration will tell), so it counts as one."""

    skipped: tuple[str, ...] = ()

    def __contains__(self, name: object) -> bool:
        return True


def quantized_activations(graph: gs.Graph, s: QuantSettings, ctx: PassContext,
                          where: str) -> set[str]:
    """The float tensors ``quantize`` will read calibration statistics of under settings ``s``
    (no overrides): the activations it encodes or converts. Tensors of unknown type count as
    float. Fused interiors, shape computations and tensors nothing reads as data are not in it."""
    q = GraphQuantizer(graph, s, _AnyFloat(), None, None, set(), ctx, where)  # type: ignore
    q._decide_float_ops()
    return set(q._activations())


class GraphQuantizer:
    """Plans and writes the QDQ form of one graph (the rules: ``quantization/quantize.py``)."""

    def __init__(self, graph: gs.Graph, s: QuantSettings, profile: Profile | None,
                 overrides: EncodingsTable | None, overrides_where: str | None,
                 int32: set[str], ctx: PassContext, where: str):
        self.g = graph
        self.s = s
        self.profile = profile
        self.ov = overrides if overrides is not None else EncodingsTable()
        self.ov_where = overrides_where or "overrides"
        self.int32 = int32
        self.ctx = ctx
        self.where = where
        self.notes: list[str] = []
        self.enc = Encoder(s, self.notes)
        self.tensors = graph.tensors()
        self.readers: dict[str, list[tuple[gs.Node, int]]] = {}
        for node in graph.nodes:
            for i, t in enumerate(node.inputs):
                if t.name:
                    self.readers.setdefault(t.name, []).append((node, i))
        self.outputs = {t.name for t in graph.outputs}
        self.inputs = {t.name for t in graph.inputs}
        self.float_ops: dict[int, int] = {}          # id(node) -> float bitwidth
        self.float_names: dict[str, int] = {}         # node name -> bitwidth (record)
        self.float_tensors: dict[str, int] = {}       # tensor name -> float bitwidth
        self.fallback: set[str] = set()               # float_fallback: tensors left in float
        self.bias_bw_float: dict[int, int] = {}       # id(node) -> float bitwidth of its bias
        self.record: dict[str, dict[str, Encoding]] = {"activations": {}, "params": {},
                                                       "conversions": {}}
        self.opset21 = False
        self.learned: dict[tuple[int, str], np.ndarray] = {}  # (id(node), weight) -> integers

    # -- overrides ------------------------------------------------------------------------
    def _check_override_names(self) -> None:
        for name in self.ov.names():
            # INT32 names were checked by int32-sandwich, which may have removed a tensor
            # between two chained int32 ops (they hand int32 values to each other directly)
            if name not in self.tensors and name not in self.int32:
                raise ConfigError(f"tensor '{name}' is not in the graph being quantized",
                                  where=self.ov_where, field=f"tensor '{name}'",
                                  hint=did_you_mean(name, self.tensors) + " (names are those "
                                       "of the model after BatchNorm folding)")
        node_names = {n.name for n in self.g.nodes} | {n.outputs[0].name for n in self.g.nodes
                                                       if n.outputs}
        for layer in self.ov.excluded_layers:
            if layer not in node_names:
                raise ConfigError(f"excluded layer '{layer}' is not a node of the graph",
                                  where=self.ov_where, field="excluded_layers",
                                  hint=did_you_mean(layer, node_names))

    def _override(self, name: str) -> Encoding | None:
        if name in self.int32:
            return None
        return self.ov.get(name)

    def _decide_float_ops(self) -> None:
        excluded = set(self.ov.excluded_layers)
        for node in self.g.nodes:
            bw = None
            for t in node.outputs:
                e = self.ov.get(t.name) if t.name not in self.int32 else None
                if e is not None and e.is_float:
                    bw = e.bitwidth
                    break
            if bw is None and node.op in _WEIGHTED:
                for idx in (1, 2):
                    if idx < len(node.inputs) and node.inputs[idx].name:
                        e = self.ov.get(node.inputs[idx].name)
                        if e is not None and e.is_float:
                            bw = e.bitwidth
                            break
            if bw is None and (node.name in excluded or
                               (node.outputs and node.outputs[0].name in excluded)):
                bw = self.s.float_bw
            if bw is None and node.op in self.s.keep_op_types:
                bw = 32     # -keep-original-precision-for-nodes: the model's own fp32
            if bw is None:
                continue
            self.float_ops[id(node)] = bw
            self.float_names[node.name] = bw
            for t in node.outputs:
                if t.name and _is_float(t, self.profile):
                    self.float_tensors[t.name] = bw
            if node.op in _WEIGHTED and len(node.inputs) > 2 and node.inputs[2].name:
                e = self.ov.get(node.inputs[2].name)
                self.bias_bw_float[id(node)] = e.bitwidth if e is not None and e.is_float \
                    else (self.s.float_bias_bw or bw)
        for name in self.ov.activations:
            e = self.ov.activations[name]
            t = self.tensors.get(name)
            if e.is_float and isinstance(t, gs.Variable) and name in self.inputs:
                self.float_tensors[name] = e.bitwidth

    # -- activations ----------------------------------------------------------------------
    def _data_readers(self, name: str) -> list[tuple[gs.Node, int]]:
        return [(n, i) for n, i in self.readers.get(name, [])
                if i not in NON_DATA_INPUTS.get(n.op, ())]

    def _fused(self) -> set[str]:
        """Tensors inside one fused kernel, left unquantized (``fusion``): the activation
        fusion and, with ``fuse_elementwise``, the intermediates of elementwise expressions."""
        args = (self.g, self.readers, self.outputs, self.float_ops, self.ov)
        fused = activation_fused(*args) if self.s.fuse_activations else set()
        self.ctx.count("activations fused", len(fused))
        if self.s.fuse_elementwise:
            inner = elementwise_interior(*args) - fused
            self.ctx.count("elementwise intermediates fused", len(inner))
            fused |= inner
        return fused

    def _activations(self) -> list[str]:
        names, seen = [], set()
        fused = self._fused()
        exact = shape_computations(self.g)
        self.ctx.count("shape computations kept exact",
                       sum(1 for n in exact if n in self.tensors
                           and _is_float(self.tensors[n], self.profile)))
        reads = integer_reads(self.g, self.int32, lambda n: self.ov.get(n) is not None)
        integers = {n for n in reads - exact
                    if n in self.tensors and _is_float(self.tensors[n], self.profile)}
        self.ctx.count("tensors read as integers kept exact", len(integers))
        exact |= integers
        seen.update(exact)
        candidates = list(self.g.inputs) + [t for n in self.g.nodes if n.op != "Constant"
                                            for t in n.outputs]
        for t in candidates:
            if not t.name or t.name in seen or isinstance(t, gs.Constant):
                continue
            seen.add(t.name)
            if not _is_float(t, self.profile):
                continue
            if not self._data_readers(t.name) and t.name not in self.outputs:
                continue
            if t.name in fused:
                continue
            names.append(t.name)
        return names

    def _stats(self, name: str) -> TensorStats:
        if self.profile is not None and name in self.profile.skipped:
            raise ConfigError("the calibration profile skipped this tensor (calibrated for "
                              "settings that do not quantize it)",
                              where=self.profile.source or self.where, field=f"tensor '{name}'",
                              hint="calibrate again with these settings, or with every tensor "
                                   "observed")
        if self.profile is None or name not in self.profile:
            raise ConfigError(f"no calibration statistics for tensor '{name}'",
                              where=self.where,
                              hint="calibrate (-input-list-file / --input_list), load a profile "
                                   "of this model (-load-profile), give its encoding in the "
                                   "overrides, or keep what they do not cover in float "
                                   "(--enable_float_fallback)")
        stats = self.profile[name]
        reader = self.s.histogram_reader
        if reader is not None:      # refused here, naming the profile file it came from
            stats.require_histogram(reader, where=self.profile.source or self.where)
        return stats

    def _groups(self, ints: list[str]) -> dict[str, list[str]]:
        return activation_groups(self.g, ints, self._override, float_ops=self.float_ops,
                                 readers=self.readers, boundary=self.inputs | self.outputs)

    def _group_encoding(self, members: list[str]) -> Encoding:
        for m in members:
            e = self._override(m)
            if e is not None and e.is_resolved:
                if e.per_channel:
                    raise ConfigError("activations take one encoding, not one per channel",
                                      where=self.ov_where, field=f"tensor '{m}'")
                return e
        bw, sym = None, False
        for m in members:
            e = self._override(m)
            if e is not None:
                bw, sym = e.bitwidth, e.symmetric
        present = [self._stats(m) for m in members
                   if self.profile is not None and m in self.profile]
        if not present:
            self._stats(members[0])  # raises, naming the tensor
        stats = present[0]
        for other in present[1:]:
            stats = stats.merge(other)
        return self.enc.activation(stats, members[0], bw, sym)

    # -- parameters -----------------------------------------------------------------------
    def _role(self, node: gs.Node, idx: int, t: gs.Constant) -> str | None:
        op = node.op
        if idx in NON_DATA_INPUTS.get(op, ()):
            return None
        if op in ("Conv", "ConvTranspose"):
            return {1: "weight", 2: "bias"}.get(idx)
        if op == "Gemm":
            return {1: "weight", 2: "bias"}.get(idx, "constant")
        if op == "MatMul":
            return "weight" if idx == 1 and np.ndim(t.values) >= 2 else "constant"
        return "constant" if op in _CONST_OPERAND_OPS else None

    def _channel_axis(self, node: gs.Node, w: np.ndarray) -> int | None:
        if node.op == "ConvTranspose" and int(node.attrs.get("group", 1)) != 1:
            return None
        axis = weight_channel_axis(node.op, trans_b=bool(node.attrs.get("transB", 0)))
        return axis % w.ndim

    def _weight_encoding(self, node: gs.Node, t: gs.Constant, values: np.ndarray) -> Encoding:
        axis = self._channel_axis(node, values)
        wanted = (node.op in ("Conv", "ConvTranspose") and self.s.per_channel) or \
                 (node.op in ("Gemm", "MatMul") and (self.s.per_channel or self.s.per_row))
        e = self.ov.get(t.name)
        if e is not None and e.is_resolved:
            if e.per_channel:
                if axis is None:
                    raise ConfigError(f"per-channel encoding for a weight of {node.op} "
                                      f"'{node.name}', which has no per-channel form here",
                                      where=self.ov_where, field=f"tensor '{t.name}'")
                e = e.with_axis(axis)
                e.check_channels(values.shape[axis], where=self.ov_where,
                                 field=f"tensor '{t.name}'")
            return e
        bw = e.bitwidth if e is not None else None
        sym = e.symmetric if e is not None else False
        if axis is None and wanted:
            logger.debug("%s: '%s' (%s) quantized per tensor: grouped ConvTranspose",
                         self.where, node.name, node.op)
        return self.enc.constant(values, t.name, axis=axis if wanted else None, bitwidth=bw,
                                 symmetric=sym)

    def _bias_encoding(self, node: gs.Node, t: gs.Constant, values: np.ndarray,
                       in_enc: Encoding | None, w_enc: Encoding | None) -> Encoding:
        e = self.ov.get(t.name)
        if e is not None and e.is_resolved:
            if e.per_channel:
                e = e.with_axis(0)
                e.check_channels(values.shape[0], where=self.ov_where,
                                 field=f"tensor '{t.name}'")
            return e
        bw = e.bitwidth if e is not None else self.s.bias_bw
        eligible = in_enc is not None and w_enc is not None and values.ndim == 1
        if node.op == "Gemm":
            w = node.inputs[1]
            n_out = w.shape[0] if node.attrs.get("transB", 0) else w.shape[-1]
            eligible = eligible and float(node.attrs.get("alpha", 1.0)) == 1.0 and \
                float(node.attrs.get("beta", 1.0)) == 1.0 and values.shape == (n_out,)
        if bw == 32 and eligible:
            if w_enc.per_channel and w_enc.num_channels != values.shape[0]:
                eligible = False
            else:
                return bias_encoding(float(in_enc.scale), w_enc, bitwidth=32, name=t.name)
        if bw == 32:
            raise ConfigError(f"int32 bias of {node.op} '{node.name}' needs quantized input and "
                              "weights", where=self.where, field=f"tensor '{t.name}'",
                              hint="use an 8/16-bit bias or keep the op in float")
        return self.enc.constant(values, t.name, bitwidth=bw)

    # -- the run --------------------------------------------------------------------------
    def run(self) -> None:
        self._check_override_names()
        self._decide_float_ops()
        acts = self._activations()
        ints = [n for n in acts if n not in self.float_tensors]
        groups = self._groups(ints)
        act_enc: dict[str, Encoding] = {}
        for members in groups.values():
            if self.s.float_fallback and all(self._override(m) is None for m in members):
                self.fallback.update(members)
                continue
            enc = self._group_encoding(members)
            for m in members:
                act_enc[m] = enc
        conv_enc: dict[str, Encoding] = {}
        for name in acts:
            if name in self.float_tensors and any(id(n) not in self.float_ops
                                                  for n, _ in self._data_readers(name)):
                conv_enc[name] = self.enc.activation(self._stats(name), name)
        params = self._plan_params(act_enc, conv_enc)
        self.opset21 = any(needs_opset21(e, activation=True, packed=True)
                           for e in list(act_enc.values()) + list(conv_enc.values())) or \
            any(needs_opset21(e, activation=False, packed=self.s.pack_4bit)
                for _, _, _, e, _ in params)
        if self.opset21:
            ensure_opset(self.g, OPSET_INT4_INT16, where=self.where)
        self._write(acts, act_enc, conv_enc, params)
        self._report_notes()

    def _report_notes(self) -> None:
        """Degenerate or non-finite ranges: one warning line with a count and a few names
        (every note at DEBUG level, ``--debug``), never one warning per tensor."""
        bad = [n for n in self.notes if "degenerate" in n or "NaN" in n or "non-finite" in n]
        if not bad:
            return
        self.ctx.count("degenerate ranges", len(bad))
        names = [n.split("'")[1] if n.startswith("tensor '") else n for n in bad]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        logger.warning("%s: %d tensor range(s) were degenerate (constant, no data or non-finite) "
                       "and widened to the minimum range: %s (--debug lists each)", self.where,
                       len(bad), shown)
        for note in bad:
            logger.debug("%s: %s", self.where, note)

    def _covered(self, node: gs.Node, role: str, t: gs.Constant,
                 act_enc: dict[str, Encoding], w_enc: Encoding | None) -> bool:
        """float_fallback: whether a parameter is quantized: it has an override, or it is the
        bias (int32, no override) of an op whose input and weight are quantized."""
        if self.ov.get(t.name) is not None:
            return True
        return role == "bias" and self.s.bias_bw == 32 and w_enc is not None and \
            node.inputs[0].name in act_enc

    def _input_encoding(self, node: gs.Node, act_enc: dict[str, Encoding],
                        conv_enc: dict[str, Encoding]) -> Encoding | None:
        x = node.inputs[0].name
        return act_enc.get(x) or conv_enc.get(x)

    def _fit_bias(self, node: gs.Node, t: gs.Constant, w_enc: Encoding,
                  act_enc: dict[str, Encoding], conv_enc: dict[str, Encoding]) -> Encoding:
        """``w_enc`` with channel scales widened where the node's 32-bit bias would not fit its
        grid (``widen_for_bias``); a weight encoding the overrides give is kept as given."""
        b = node.inputs[2] if node.op in ("Conv", "ConvTranspose", "Gemm") and \
            len(node.inputs) > 2 else None
        in_enc = self._input_encoding(node, act_enc, conv_enc)
        given = self.ov.get(t.name)
        if not isinstance(b, gs.Constant) or in_enc is None or in_enc.is_float or \
                not in_enc.is_resolved or (given is not None and given.is_resolved):
            return w_enc
        e = self.ov.get(b.name)
        if (e.bitwidth if e is not None else self.s.bias_bw) != 32 or np.ndim(b.values) != 1:
            return w_enc
        new, widened = widen_for_bias(w_enc, np.asarray(b.values), float(in_enc.scale))
        if widened:
            self.ctx.count("weight channels widened to fit int32 biases", widened)
            logger.info("%s: %s '%s': %d weight channel scale(s) widened so the int32 bias "
                        "fits", self.where, node.op, node.name, widened)
        return new

    def _plan_params(self, act_enc: dict[str, Encoding], conv_enc: dict[str, Encoding]
                     ) -> list[tuple[gs.Node, int, gs.Constant, Encoding, str]]:
        """(node, input index, constant, encoding, record key) of every quantized parameter."""
        plan = []
        uses: dict[str, int] = {}
        for node in self.g.nodes:
            if id(node) in self.float_ops:
                continue
            w_enc = None
            done: dict[str, Encoding] = {}
            for idx, t in enumerate(node.inputs):
                if not isinstance(t, gs.Constant) or not t.name:
                    continue
                values = np.asarray(t.values)
                if values.dtype not in _FLOAT_KINDS:
                    continue
                role = self._role(node, idx, t)
                if role is None:
                    continue
                if t.name in done:     # the same constant twice in one node: one quantization
                    plan.append((node, idx, t, done[t.name], t.name))
                    continue
                if self.s.float_fallback and not self._covered(node, role, t, act_enc, w_enc):
                    continue
                if role == "weight":
                    enc = w_enc = self._fit_bias(node, t, self._weight_encoding(node, t, values),
                                                 act_enc, conv_enc)
                    self._learn_rounding(node, t, values, enc)
                elif role == "bias":
                    enc = self._bias_encoding(node, t, values,
                                              self._input_encoding(node, act_enc, conv_enc),
                                              w_enc)
                elif self.ov.get(t.name) is None and exact_helper(values):
                    self.ctx.count("scalar/integer helper constants kept exact")
                    continue
                else:
                    e = self.ov.get(t.name)
                    enc = e if e is not None and e.is_resolved and not e.per_channel else \
                        self.enc.constant(values, t.name,
                                          bitwidth=e.bitwidth if e is not None else None)
                done[t.name] = enc
                uses[t.name] = uses.get(t.name, 0) + 1
                plan.append((node, idx, t, enc, t.name))
        keyed = []
        for node, idx, t, enc, key in plan:
            keyed.append((node, idx, t, enc, key if uses[key] == 1 else f"{key}@{node.name}"))
        return keyed

    def _learn_rounding(self, node: gs.Node, t: gs.Constant, values: np.ndarray,
                        enc: Encoding) -> None:
        """Integers a rounding algorithm (``adaround``, through the analysis cache) chose; then
        the node's bias shifted for those integers (``bias-correction``)."""
        rounder = self.ctx.analyses.peek(ADAROUND_ROUNDING)
        q = rounder.round(node, values, enc) if rounder is not None and not enc.is_float \
            else None
        if q is not None:
            self.learned[(id(node), t.name)] = q
            self.ctx.count("weights adarounded")
        corrector = self.ctx.analyses.peek(BIAS_CORRECTION)
        if corrector is not None and corrector.correct(node, values, enc, q):
            self.ctx.count("biases corrected")

    def _write(self, acts: list[str], act_enc: dict[str, Encoding],
               conv_enc: dict[str, Encoding],
               params: list[tuple[gs.Node, int, gs.Constant, Encoding, str]]) -> None:
        w = QdqWriter(self.g, self.ctx.count)
        for name in acts:
            t = self.tensors[name]
            readers = self._data_readers(name)
            if name in act_enc:
                enc = act_enc[name]
                dq = w.qdq(t, enc, name)
                w.rewire(readers, dq)
                if name in self.outputs and name not in self.inputs:
                    w.rename_output(t, dq)
                self.record["activations"][name] = enc
            elif name in conv_enc:
                enc = conv_enc[name]
                int_readers = [(n, i) for n, i in readers if id(n) not in self.float_ops]
                w.rewire(int_readers, w.qdq(t, enc, f"{name}_converted"))
                self.record["conversions"][name] = enc
                self.ctx.count("float/integer conversions")
        for name, bw in self.float_tensors.items():
            self.record["activations"][name] = Encoding.float_(bw)
        for name in self.fallback:
            self.record["activations"][name] = Encoding.float_(32)
        self.ctx.count("tensors left in float (float fallback)", len(self.fallback))
        dq_cache: dict[tuple[int, str], gs.Variable] = {}
        for node, idx, t, enc, key in params:
            slot = (id(node), t.name)
            if slot not in dq_cache:
                dq_cache[slot] = w.dequantized_constant(np.asarray(t.values), enc, key,
                                                        packed=self.s.pack_4bit,
                                                        quantized=self.learned.get(slot))
            node.inputs[idx] = dq_cache[slot]
            self.record["params"][key] = enc
        w.finish()
        lower_float_ops(self.g, self.float_ops, self.bias_bw_float, self.ctx, self.where)
