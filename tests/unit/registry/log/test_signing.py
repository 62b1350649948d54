"""The log key file: created once, private, named after the origin, in C2SP key formats."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from registry.log.errors import LogKeyError
from registry.log.signing import (
    DEFAULT_ORIGIN,
    ensure_log_signer,
    load_log_signer,
    log_key_path,
    verifier_key,
)
from registry.note import (
    COSIGNATURE_V1_TYPE,
    Ed25519Verifier,
    generate_signer_key,
    open_note,
    parse_verifier_key,
    sign_note,
)


def test_the_key_is_created_private_once_and_reloaded(tmp_path: Path) -> None:
    path = log_key_path(tmp_path)
    assert path == tmp_path / "log" / "log.key"
    signer = ensure_log_signer(path)
    assert signer.name == DEFAULT_ORIGIN
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith(f"PRIVATE+KEY+{DEFAULT_ORIGIN}+")
    again = ensure_log_signer(path)
    assert again.signer_key == signer.signer_key
    assert [p.name for p in path.parent.iterdir()] == ["log.key"]


def test_the_verifier_key_checks_the_logs_signatures(tmp_path: Path) -> None:
    signer = ensure_log_signer(log_key_path(tmp_path), "realname.example/log")
    vkey = verifier_key(signer)
    name, key_hash, _material = vkey.split("+", 2)
    assert (name, len(key_hash)) == ("realname.example/log", 8)
    verifier = parse_verifier_key(vkey)
    assert isinstance(verifier, Ed25519Verifier)
    opened = open_note(sign_note("hello\n", signer), [verifier])
    assert opened.text == "hello\n"


def test_processes_racing_to_create_the_key_agree(tmp_path: Path) -> None:
    path = log_key_path(tmp_path)
    keys: list[str] = []
    threads = [
        threading.Thread(target=lambda: keys.append(ensure_log_signer(path).signer_key))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and len(keys) == 8
    assert [p.name for p in path.parent.iterdir()] == ["log.key"]


def test_wrong_origin_witness_keys_and_garbage_are_refused(tmp_path: Path) -> None:
    path = log_key_path(tmp_path)
    ensure_log_signer(path, "a.example/log")
    with pytest.raises(LogKeyError, match=r"not 'b\.example/log'"):
        ensure_log_signer(path, "b.example/log")
    with pytest.raises(LogKeyError, match="cannot name"):
        ensure_log_signer(tmp_path / "other.key", "has space")
    witness = tmp_path / "witness.key"
    witness.write_text(generate_signer_key("w.example", COSIGNATURE_V1_TYPE)[0])
    with pytest.raises(LogKeyError, match="witness key"):
        load_log_signer(witness, "w.example")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("PRIVATE+KEY+x+00000000+AAAA")
    with pytest.raises(LogKeyError, match="not a C2SP signer key"):
        load_log_signer(garbage, "x")
    with pytest.raises(LogKeyError, match="cannot read"):
        load_log_signer(tmp_path / "missing.key", "x")
