"""The token file: hashed entries only, scopes, reload on change, a bad edit kept out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sluice.auth import TokenFile, hash_token, new_token, parse_tokens
from sluice.errors import ConfigError


def test_tokens_are_random_and_stored_hashed() -> None:
    first, second = new_token(), new_token()
    assert first != second and len(first) >= 43
    assert hash_token(first).startswith("sha256:") and first not in hash_token(first)


def test_entry_scopes() -> None:
    token = new_token()
    entries = parse_tokens(f"# comment\n\ngw {hash_token(token)} ingest:measurement,read  # trailing\n")
    (principal,) = entries.values()
    assert principal.name == "gw"
    assert principal.may_ingest("measurement") and not principal.may_ingest("log")
    assert principal.may_read
    (anything,) = parse_tokens(f"ops {hash_token(token)} ingest:*\n").values()
    assert anything.may_ingest("log") and not anything.may_read


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("gw plain-token ingest:*", "stored hashed"),
        ("gw sha256:abc ingest:*", "stored hashed"),
        (f"gw {hash_token('x')} write", "bad scopes"),
        (f"gw {hash_token('x')}", "expected"),
        (f"g/w {hash_token('x')} read", "bad name"),
    ],
)
def test_bad_lines_are_config_errors(line: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_tokens(line + "\n")


def test_reload_on_change_and_keep_old_on_bad_edit(tmp_path: Path) -> None:
    one, two = new_token(), new_token()
    path = tmp_path / "tokens"
    path.write_text(f"one {hash_token(one)} read\n")
    tokens = TokenFile(str(path), reload_interval=0.0)
    assert tokens.lookup(one) is not None and tokens.lookup(two) is None
    assert tokens.lookup(None) is None and tokens.lookup("") is None
    path.write_text(f"two {hash_token(two)} read\n")
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    assert tokens.lookup(two) is not None and tokens.lookup(one) is None
    generation = tokens.generation
    path.write_text("broken line\n")
    os.utime(path, ns=(2, 2))
    assert tokens.lookup(two) is not None, "a broken edit must not lock everyone out"
    assert tokens.generation == generation


def test_missing_or_broken_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token file"):
        TokenFile(str(tmp_path / "absent"))
    bad = tmp_path / "bad"
    bad.write_text("gw secret read\n")
    with pytest.raises(ConfigError, match="hashed"):
        TokenFile(str(bad))
