"""Network specialization configs: both entry forms, per-entry -ols, and every malformed file
refused with one line naming the file and the entry."""

from __future__ import annotations

import pytest

from aicc.errors import ConfigError
from aicc.specconfig import default_spec_name, parse_compile_opts, parse_specialization_config
from spec_helpers import SEED_CONFIG, SEED_NAMES, write_json


def test_classic_form_of_the_seed(tmp_path):
    entries = parse_specialization_config(write_json(tmp_path / "s.json", SEED_CONFIG))
    assert [e.name for e in entries] == SEED_NAMES
    assert entries[1].symbols == {"batch": 1, "height": 112, "width": 112}
    assert [e.options for e in entries] == [{}, {}, {}]
    assert [e.index for e in entries] == [1, 2, 3]


def test_named_form_integers_and_compile_opts(tmp_path):
    path = write_json(tmp_path / "s.json", {"specializations": [
        {"name": "prefill", "symbols": {"batch_size": 1, "seq_len": "32", "ctx_len": 128},
         "compile_opts": "-ols=2"},
        {"batch_size": "1", "seq_len": "1", "ctx_len": "128", "compile_opts": "-ols 4"},
    ]})
    first, second = parse_specialization_config(path)
    assert (first.name, first.named, first.options) == ("prefill", True, {"ols": 2})
    assert first.symbols == {"batch_size": 1, "seq_len": 32, "ctx_len": 128}
    assert second.name == "spec1-batch_size1-seq_len1-ctx_len128"
    assert second.options == {"ols": 4}


def test_default_names_are_stable():
    assert default_spec_name(0, {"batch": 1, "height": 56}) == "spec0-batch1-height56"


@pytest.mark.parametrize("text, message", [
    ('[{"batch": "1"}]', "expected an object"),
    ('{"specialisations": []}', "did you mean 'specializations'"),
    ('{"specializations": {}}', "expected a list"),
    ('{"specializations": []}', "is empty"),
    ('{}', "no \"specializations\""),
    ('{"specializations": [1]}', "entry 1: is int"),
    ('{"specializations": [{}]}', "entry 1: binds no symbol"),
    ('{"specializations": [{"batch": "0"}]}', "entry 1: symbol 'batch' has value '0'"),
    ('{"specializations": [{"batch": "-2"}]}', "expected a positive integer"),
    ('{"specializations": [{"batch": "1.5"}]}', "expected a positive integer"),
    ('{"specializations": [{"batch": 2.0}]}', "expected a positive integer"),
    ('{"specializations": [{"batch": true}]}', "expected a positive integer"),
    ('{"specializations": [{"batch": " 1"}]}', "expected a positive integer"),
    ('{"specializations": [{"batch": "99999999999"}]}', "up to 2147483647"),
    ('{"specializations": [{"batch": null}]}', "expected a positive integer"),
    ('{"specializations": [{"batch": "1"}, {"batch": 1}]}', "entry 2: repeats the symbol values "
                                                          "of entry 1"),
    ('{"specializations": [{"batch": "1", "compile_opts": "-mos=2"}]}',
     "entry 1: compile_opts: '-mos=2' cannot be set per specialization (only -ols=N can"),
    ('{"specializations": [{"batch": "1", "compile_opts": "-ols=0"}]}', "not an integer in"),
    ('{"specializations": [{"batch": "1", "compile_opts": "-ols=1 -ols=2"}]}', "given twice"),
    ('{"specializations": [{"batch": "1", "compile_opts": "-ols"}]}', "needs a value"),
    ('{"specializations": [{"batch": "1", "compile_opts": ["-ols=1"]}]}', "expected a string"),
    ('{"specializations": [{"batch": "1", "compile_opts": "-ols=\'1"}]}', "cannot read"),
    ('{"specializations": [{"name": "a", "symbols": {"b": 1}, "compileopts": "-ols=1"}]}',
     "entry 1 ('a'): unknown key 'compileopts' (did you mean 'compile_opts'?)"),
    ('{"specializations": [{"name": "a", "symbols": [1]}]}', "'symbols' must be an object"),
    ('{"specializations": [{"name": "../x", "symbols": {"b": 1}}]}', "not a valid specialization"),
    ('{"specializations": [{"name": 3, "symbols": {"b": 1}}]}', "not a valid specialization"),
    ('{"specializations": [{"name": "weights.bin", "symbols": {"b": 1}}]}', "reserved"),
    ('{"specializations": [{"name": "a", "symbols": {"b": 1}}, '
     '{"name": "a", "symbols": {"b": 2}}]}', "entry 2 ('a'): name 'a' is also used by entry 1"),
    ('{"specializations": [{"name": "A", "symbols": {"b": 1}}, '
     '{"name": "a", "symbols": {"b": 2}}]}', "same container folder"),
    ('{"specializations": [{"batch": "1"}, {"batch": "1"}]}', "repeats"),
    ('{"specializations": [{"batch": "1", "batch": "2"}]}', "duplicate key 'batch'"),
    ('{"specializations": [{"batch": NaN}]}', "NaN is not a number JSON allows"),
    ('', "is empty"),
])
def test_malformed_configs_are_refused(tmp_path, text, message):
    path = write_json(tmp_path / "bad.json", text)
    with pytest.raises(ConfigError) as info:
        parse_specialization_config(path)
    assert message in str(info.value)
    assert str(info.value).startswith(str(path))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        parse_specialization_config(tmp_path / "none.json")
    with pytest.raises(ConfigError, match="not a regular file"):
        parse_specialization_config(tmp_path)


def test_compile_opts_forms():
    assert parse_compile_opts("-ols=3", where="f", label="entry 1") == {"ols": 3}
    assert parse_compile_opts("  ", where="f", label="entry 1") == {}
    with pytest.raises(ConfigError, match="-aic-num-cores=4"):
        parse_compile_opts("-ols=1 -aic-num-cores=4", where="f", label="entry 1")
