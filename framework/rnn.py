"""The attributes of ONNX's recurrent ops (LSTM, GRU, RNN) read once: a node's attributes in, an
``RnnSpec`` out, shared by the interpreter's kernels and the ``lower-rnn`` pass so both read the
same node the same way.

What the spec settles:

- ``direction`` gives 1 or 2 directions (``forward``, ``reverse``, ``bidirectional``).
- ``activations`` lists one function per gate function and direction (LSTM: f, g, h; GRU: f, g;
  RNN: f), defaulting to the op's (Sigmoid/Tanh). ``activation_alpha`` and ``activation_beta``
  are consumed in list order by the functions that take that parameter (as onnxruntime does);
  a function whose list has run out gets its documented default.
- ``clip`` (clamp of every gate's pre-activation), ``input_forget`` (LSTM: f = 1 - i),
  ``linear_before_reset`` (GRU) and ``layout`` (0: time-major, 1: batch-major).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Activation", "RnnSpec", "parse_rnn", "ACTIVATIONS", "GATES"]

_UNUSED, _REQUIRED = "unused", "required"

#: name (lower case) -> (canonical name, alpha default, beta default). A default is a float,
#: ``_UNUSED`` (the function takes no such parameter) or ``_REQUIRED``: ONNX defines no default
#: and runtimes disagree (onnxruntime uses 0 for Affine and ScaledTanh and neither 1.0 nor 0 for
#: ThresholdedRelu), so a model must give the value or is refused.
ACTIVATIONS: dict[str, tuple[str, float | str, float | str]] = {
    "relu": ("Relu", _UNUSED, _UNUSED),
    "tanh": ("Tanh", _UNUSED, _UNUSED),
    "sigmoid": ("Sigmoid", _UNUSED, _UNUSED),
    "affine": ("Affine", _REQUIRED, _REQUIRED),
    "leakyrelu": ("LeakyRelu", 0.01, _UNUSED),
    "thresholdedrelu": ("ThresholdedRelu", _REQUIRED, _UNUSED),
    "scaledtanh": ("ScaledTanh", _REQUIRED, _REQUIRED),
    "hardsigmoid": ("HardSigmoid", 0.2, 0.5),
    "elu": ("Elu", 1.0, _UNUSED),
    "softsign": ("Softsign", _UNUSED, _UNUSED),
    "softplus": ("Softplus", _UNUSED, _UNUSED),
}

#: op type -> (gates in W/R order, default activations per direction)
GATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "LSTM": ("iofc", ("Sigmoid", "Tanh", "Tanh")),
    "GRU": ("zrh", ("Sigmoid", "Tanh")),
    "RNN": ("i", ("Tanh",)),
}

_DIRECTIONS = {"forward": ("forward",), "reverse": ("reverse",),
               "bidirectional": ("forward", "reverse")}


@dataclass(frozen=True)
class Activation:
    """One activation function with its parameters resolved (alpha/beta 0.0 when unused)."""

    name: str
    alpha: float = 0.0
    beta: float = 0.0


@dataclass(frozen=True)
class RnnSpec:
    """A recurrent node's attributes, validated."""

    op_type: str
    directions: tuple[str, ...]
    hidden_size: int | None
    #: per direction, the activation of each gate function (f, g, h / f, g / f)
    activations: tuple[tuple[Activation, ...], ...]
    clip: float | None
    input_forget: bool
    linear_before_reset: bool
    layout: int

    @property
    def num_gates(self) -> int:
        return len(GATES[self.op_type][0])


def _param(name: str, which: str, default: float | str, given: list[float]) -> float:
    """The next ``activation_<which>`` value for activation ``name`` (consumed from ``given``)."""
    if default == _UNUSED:
        return 0.0
    if given:
        return float(given.pop(0))
    if default == _REQUIRED:
        raise ValueError(f"activation {name} needs a value in activation_{which}: ONNX defines "
                         "no default (give the value in the model)")
    return float(default)


def parse_rnn(op_type: str, attrs: Mapping[str, Any]) -> RnnSpec:
    """An ``RnnSpec`` of a LSTM, GRU or RNN node's attributes; ValueError names what is wrong."""
    if op_type not in GATES:
        raise ValueError(f"{op_type} is not a recurrent op")
    direction = attrs.get("direction", "forward")
    if isinstance(direction, bytes):
        direction = direction.decode()
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction '{direction}' is not forward, reverse or bidirectional")
    directions = _DIRECTIONS[direction]
    per_dir = len(GATES[op_type][1])
    names = [n.decode() if isinstance(n, bytes) else n
             for n in attrs.get("activations", GATES[op_type][1] * len(directions))]
    if len(names) != per_dir * len(directions):
        raise ValueError(f"activations has {len(names)} entries; {op_type} with direction "
                         f"'{direction}' needs {per_dir * len(directions)}")
    alphas = list(attrs.get("activation_alpha", []))
    betas = list(attrs.get("activation_beta", []))
    resolved = []
    for name in names:
        key = name.lower()
        if key not in ACTIVATIONS:
            raise ValueError(f"activation '{name}' is not one of "
                             + ", ".join(v[0] for v in ACTIVATIONS.values()))
        canon, alpha0, beta0 = ACTIVATIONS[key]
        alpha = _param(canon, "alpha", alpha0, alphas)
        beta = _param(canon, "beta", beta0, betas)
        resolved.append(Activation(canon, alpha, beta))
    acts = tuple(tuple(resolved[d * per_dir:(d + 1) * per_dir]) for d in range(len(directions)))
    clip = attrs.get("clip")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip {clip} must be positive")
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise ValueError(f"layout {layout} is not 0 or 1")
    hidden = attrs.get("hidden_size")
    return RnnSpec(op_type=op_type, directions=directions,
                   hidden_size=None if hidden is None else int(hidden),
                   activations=acts, clip=None if clip is None else float(clip),
                   input_forget=bool(int(attrs.get("input_forget", 0))),
                   linear_before_reset=bool(int(attrs.get("linear_before_reset", 0))),
                   layout=layout)
