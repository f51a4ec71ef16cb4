"""Keys and the key store: atomic 0600 private keys, safe ids, states, conflicts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from saltmarsh.pki.errors import InvalidAgentId, KeyConflict, KeyFileError
from saltmarsh.pki.ids import validate_agent_id
from saltmarsh.pki.keys import Identity, decode_public_key, fingerprint
from saltmarsh.pki.keystore import KeyState, KeyStore


def test_private_key_is_0600_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "pki" / "agent.key"
    identity = Identity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load(path).public_key == identity.public_key
    assert decode_public_key(path.with_suffix(".pub").read_text()) == identity.public_key
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_garbage_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_text("not a key")
    with pytest.raises(KeyFileError, match="does not hold an Ed25519 key"):
        Identity.load(path)
    with pytest.raises(KeyFileError, match="cannot read key"):
        Identity.load(tmp_path / "missing.key")


def test_fingerprint_is_sha256_pairs() -> None:
    fp = fingerprint(b"\x00" * 32)
    assert len(fp.split(":")) == 32 and fp.startswith("66:68:7a:ad")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "x" * 300, "tab\tid", "nul\x00", ".hidden", "-dash", "é"])
def test_unsafe_agent_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidAgentId):
        validate_agent_id(bad)


@pytest.mark.parametrize("good", ["hv1", "hv-1.example.com", "A_b", "x" * 128])
def test_safe_agent_ids_pass(good: str) -> None:
    assert validate_agent_id(good) == good


def test_keystore_states_persist_and_conflicts_change_nothing(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "agents")
    key_a, key_b = Identity.generate().public_key, Identity.generate().public_key
    assert store.submit("hv1", key_a) == (KeyState.PENDING, True)
    assert store.submit("hv1", key_a) == (KeyState.PENDING, False)
    with pytest.raises(KeyConflict):
        store.submit("hv1", key_b)
    store.set_state("hv1", KeyState.ACCEPTED)
    assert store.accepted_key("hv1") == key_a
    with pytest.raises(KeyConflict):
        store.submit("hv1", key_b)
    assert (tmp_path / "agents" / "accepted" / "hv1").exists()
    assert not (tmp_path / "agents" / "pending" / "hv1").exists()
    reopened = KeyStore(tmp_path / "agents")
    assert reopened.accepted_key("hv1") == key_a
    reopened.set_state("hv1", KeyState.REJECTED)
    assert reopened.accepted_key("hv1") is None
    reopened.delete("hv1")
    assert reopened.get("hv1") is None and KeyStore(tmp_path / "agents").all() == []
    with pytest.raises(InvalidAgentId):
        store.submit("../etc", key_a)
    assert stat.S_IMODE((tmp_path / "agents").stat().st_mode) == 0o700
