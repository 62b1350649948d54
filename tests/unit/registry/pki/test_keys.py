from __future__ import annotations

import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from registry.pki.authority import CertificateAuthority
from registry.pki.errors import (
    KeyFormatError,
    MissingPassphraseError,
    UnsupportedKeyError,
    WrongPassphraseError,
)
from registry.pki.keys import (
    Passphrase,
    decrypt_private_key,
    encrypt_private_key,
    generate_private_key,
    load_private_key,
    require_p256_public_key,
    save_private_key,
)
from tests.unit.registry.pki.factory import World

SECRET = "correct horse battery staple"


def _scalar(key: ec.EllipticCurvePrivateKey) -> int:
    return key.private_numbers().private_value


def test_encrypted_round_trip() -> None:
    key = generate_private_key()
    pem = encrypt_private_key(key, Passphrase(SECRET))
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert _scalar(decrypt_private_key(pem, SECRET)) == _scalar(key)
    assert _scalar(decrypt_private_key(pem, SECRET.encode())) == _scalar(key)


def test_wrong_passphrase_is_refused_without_leaking_it() -> None:
    pem = encrypt_private_key(generate_private_key(), SECRET)
    with pytest.raises(WrongPassphraseError) as caught:
        decrypt_private_key(pem, "tr0ub4dor&3")
    assert "tr0ub4dor" not in str(caught.value)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_corrupted_key_file_is_refused() -> None:
    pem = bytearray(encrypt_private_key(generate_private_key(), SECRET))
    pem[100] ^= 0x01
    with pytest.raises(KeyFormatError):
        decrypt_private_key(bytes(pem), SECRET)


def test_plaintext_key_is_refused() -> None:
    plaintext = generate_private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyFormatError, match="not an encrypted"):
        decrypt_private_key(plaintext, SECRET)


def test_other_curves_and_algorithms_are_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(UnsupportedKeyError, match="secp384r1"):
        encrypt_private_key(p384, SECRET)
    pem = p384.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(SECRET.encode()),
    )
    with pytest.raises(UnsupportedKeyError):
        decrypt_private_key(pem, SECRET)
    with pytest.raises(UnsupportedKeyError, match="Ed25519"):
        require_p256_public_key(ed25519.Ed25519PrivateKey.generate().public_key())


def test_passphrase_never_shows() -> None:
    passphrase = Passphrase(SECRET)
    assert SECRET not in repr(passphrase)
    assert SECRET not in str(passphrase)
    assert SECRET not in f"{passphrase}"
    with pytest.raises(TypeError):
        pickle.dumps(passphrase)
    with pytest.raises(MissingPassphraseError):
        Passphrase("")


def test_passphrase_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALNAME_TEST_KEY_PASSPHRASE", SECRET)
    assert Passphrase.from_env("REALNAME_TEST_KEY_PASSPHRASE").reveal() == SECRET.encode()
    monkeypatch.delenv("REALNAME_TEST_KEY_PASSPHRASE")
    with pytest.raises(MissingPassphraseError, match="REALNAME_TEST_KEY_PASSPHRASE"):
        Passphrase.from_env("REALNAME_TEST_KEY_PASSPHRASE")


def test_save_and_load_file(tmp_path: Path) -> None:
    key = generate_private_key()
    path = tmp_path / "ca.key"
    save_private_key(path, key, SECRET)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _scalar(load_private_key(path, SECRET)) == _scalar(key)
    assert [p.name for p in tmp_path.iterdir()] == ["ca.key"]


def test_authority_save_load_and_repr(world: World, tmp_path: Path) -> None:
    ca = world.operators["cmcc"]
    ca.save(tmp_path / "cmcc.pem", tmp_path / "cmcc.key", Passphrase(SECRET))
    loaded = CertificateAuthority.load(tmp_path / "cmcc.pem", tmp_path / "cmcc.key", SECRET)
    assert loaded.certificate == ca.certificate
    assert _scalar(loaded.private_key) == _scalar(ca.private_key)
    text = repr(loaded)
    assert "private_key" not in text
    assert str(_scalar(ca.private_key)) not in text
    with pytest.raises(WrongPassphraseError):
        CertificateAuthority.load(tmp_path / "cmcc.pem", tmp_path / "cmcc.key", "nope")


def test_authority_refuses_a_key_that_is_not_its_own(world: World) -> None:
    with pytest.raises(UnsupportedKeyError, match="does not belong"):
        CertificateAuthority(world.root.certificate, world.operators["cmcc"].private_key)
