"""The hardened config readers refuse BAD_INPUTS.md 15-22 with file and line."""

from __future__ import annotations

import pytest

from aicc.configfile import load_json, load_toml, load_yaml
from aicc.errors import ConfigError


def _write(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def test_python_tags_are_refused(tmp_path):
    p = _write(tmp_path, "a.yaml", "!!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="a.yaml"):
        load_yaml(p)


def test_alias_bomb_is_refused(tmp_path):
    bomb = "a: &a ['x','x','x','x','x','x','x','x','x']\n"
    for i in range(1, 9):
        bomb += f"{chr(97 + i)}: &{chr(97 + i)} [*{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}]\n"
    p = _write(tmp_path, "bomb.yaml", bomb)
    with pytest.raises(ConfigError, match="aliases"):
        load_yaml(p)


def test_duplicate_keys_name_both_lines(tmp_path):
    p = _write(tmp_path, "d.yaml", "a: 1\nb: 2\na: 3\n")
    with pytest.raises(ConfigError, match="lines 1 and 3"):
        load_yaml(p)
    j = _write(tmp_path, "d.json", '{"a": 1,\n "a": 2}')
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        load_json(j)
    t = _write(tmp_path, "d.toml", "a = 1\na = 2\n")
    with pytest.raises(ConfigError, match="d.toml"):
        load_toml(t)


def test_yaml_11_implicit_typing_is_not_applied(tmp_path):
    p = _write(tmp_path, "t.yaml", "a: no\nb: 012\nc: 1e-3\nd: yes\ne: true\nf: 0x10\ng: 3.5\n")
    assert load_yaml(p) == {"a": "no", "b": "012", "c": 0.001, "d": "yes", "e": True, "f": 16,
                            "g": 3.5}


@pytest.mark.parametrize("content,match", [(b"", "empty"), (b"   \n", "empty"),
                                           (b"a: \xff\xfe\n", "not UTF-8"),
                                           (b"a: 1\n---\nb: 2\n", "2 YAML documents")])
def test_bad_files(tmp_path, content, match):
    with pytest.raises(ConfigError, match=match):
        load_yaml(_write(tmp_path, "x.yaml", content))


def test_bom_is_tolerated(tmp_path):
    assert load_yaml(_write(tmp_path, "b.yaml", b"\xef\xbb\xbfa: 1\n")) == {"a": 1}


def test_json_nan_and_infinity_are_refused(tmp_path):
    for word in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ConfigError, match="not a number"):
            load_json(_write(tmp_path, "n.json", '{"a": %s}' % word))


def test_yaml_where_json_expected(tmp_path):
    with pytest.raises(ConfigError, match="line 1"):
        load_json(_write(tmp_path, "y.json", "a: 1\n"))


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file"):
        load_yaml(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_size_cap(tmp_path, monkeypatch):
    import aicc.configfile as cf
    monkeypatch.setattr(cf, "MAX_CONFIG_BYTES", 10)
    with pytest.raises(ConfigError, match="limit"):
        cf.read_text(_write(tmp_path, "big.yaml", "a: " + "x" * 100), max_bytes=10)
