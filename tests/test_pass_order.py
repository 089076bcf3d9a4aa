"""Pass placement from declarations (aicc.pass_order): every declared constraint holds, passes
nothing relates keep the order they were asked for, and a contradiction is refused by name."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicc.compiler import default_pipeline
from aicc.errors import ConfigError
from aicc.pass_order import Requested, order_steps


def _cls(name, after=(), before=()):
    return type(name, (), {"after": tuple(after), "before": tuple(before)})


@st.composite
def acyclic_declarations(draw):
    """Passes p0..pn with constraints that only point forward in a hidden order (so a valid
    order exists), shuffled into a request order."""
    n = draw(st.integers(1, 8))
    hidden = [f"p{i}" for i in range(n)]
    classes = {}
    for i, name in enumerate(hidden):
        later = hidden[i + 1:]
        earlier = hidden[:i]
        after = draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else []
        before = draw(st.lists(st.sampled_from(later), unique=True)) if later else []
        classes[name] = _cls(name, after, before)
    request = draw(st.permutations(hidden))
    return request, classes


@settings(max_examples=200, deadline=None)
@given(acyclic_declarations())
def test_every_declaration_holds(case):
    request, classes = case
    steps = [Requested(n) for n in request]
    order = [s.name for s in order_steps(steps, [classes[n] for n in request])]
    assert sorted(order) == sorted(request)
    at = {n: i for i, n in enumerate(order)}
    for name, cls in classes.items():
        assert all(at[a] < at[name] for a in cls.after)
        assert all(at[name] < at[b] for b in cls.before)


@settings(max_examples=100, deadline=None)
@given(st.permutations([f"p{i}" for i in range(6)]))
def test_unrelated_passes_keep_the_requested_order(request):
    classes = [_cls(n) for n in request]
    assert [s.name for s in order_steps([Requested(n) for n in request], classes)] == request


def test_star_puts_a_pass_first_or_last():
    names = ["tidy", "a", "bind", "b"]
    classes = [_cls("tidy", after=("*",)), _cls("a"), _cls("bind", before=("*",)), _cls("b")]
    order = [s.name for s in order_steps([Requested(n) for n in names], classes)]
    assert order == ["bind", "a", "b", "tidy"]


def test_a_contradiction_is_refused_naming_the_passes():
    classes = [_cls("x", after=("y",)), _cls("y", after=("x",)), _cls("z")]
    with pytest.raises(ConfigError, match="the passes x, y declare an order that contradicts"):
        order_steps([Requested("x"), Requested("y"), Requested("z")], classes)


def test_the_built_in_features_order(registries):
    """The default pipeline with every built-in feature's passes, in the order the vendor flow
    needs (the order the retired stage table gave)."""
    asked = ["specialize", "custom-io", "convert-fp16", "input-shape", "quant-overrides",
             "int32-sandwich", "calibrate", "adaround", "bias-correction", "quantize", "cle",
             "lower"]
    steps = default_pipeline(registries, symbols=["batch=1"],
                             requested=[Requested(n) for n in asked])
    assert [name for name, _ in steps] == [
        "bind-symbols", "input-shape", "quant-overrides", "specialize", "lower", "convert-fp16",
        "fold-constants", "fold-batchnorm", "cle", "custom-io", "int32-sandwich", "calibrate",
        "adaround", "bias-correction", "quantize", "cleanup"]
