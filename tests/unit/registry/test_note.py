"""C2SP signed-note, tlog-cosignature and witness policies."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.note import (
    COSIGNATURE_V1_TYPE,
    ED25519_TYPE,
    MAX_SIGNATURES,
    MAX_TIMESTAMP,
    AmbiguousVerifierError,
    CosignatureSigner,
    CosignatureVerifier,
    Ed25519Signer,
    Ed25519Verifier,
    InsufficientCosignaturesError,
    InvalidParameterError,
    InvalidSignatureError,
    MalformedKeyError,
    MalformedNoteError,
    Note,
    Signature,
    TooManySignaturesError,
    UnverifiedNoteError,
    Verifier,
    VerifierSet,
    WitnessPolicy,
    cosignature_timestamp,
    cosigned_message,
    format_verifier_key,
    generate_signer_key,
    is_valid_key_name,
    key_hash,
    open_note,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
)
from tests.support.paths import VECTORS_DIR

SIGNED_NOTE_FILE = VECTORS_DIR / "signed-note.json"
if not SIGNED_NOTE_FILE.is_file():
    raise FileNotFoundError(f"signed-note test vector missing: {SIGNED_NOTE_FILE}")
SIGNED_NOTE_VECTOR: dict[str, Any] = json.loads(SIGNED_NOTE_FILE.read_text())

TEXT: str = SIGNED_NOTE_VECTOR["text"]
SIGNED: bytes = SIGNED_NOTE_VECTOR["signed_note"].encode()


def _key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


@pytest.fixture
def peter_signer() -> Ed25519Signer:
    signer = parse_signer_key(SIGNED_NOTE_VECTOR["signer_key"])
    assert isinstance(signer, Ed25519Signer)
    return signer


@pytest.fixture
def peter_verifier() -> Ed25519Verifier:
    verifier = parse_verifier_key(SIGNED_NOTE_VECTOR["verifier_key"])
    assert isinstance(verifier, Ed25519Verifier)
    return verifier


def _signature_lines(message: bytes) -> list[str]:
    return message.decode().split("\n\n")[-1].splitlines()


def _with_lines(text: str, lines: list[str]) -> bytes:
    return (text + "\n" + "".join(line + "\n" for line in lines)).encode()


# --- the golang.org/x/mod/sumdb/note vector ---


def test_signature_reproduced_byte_for_byte(peter_signer: Ed25519Signer) -> None:
    assert sign_note(TEXT, peter_signer) == SIGNED


def test_keys_round_trip(peter_signer: Ed25519Signer, peter_verifier: Ed25519Verifier) -> None:
    assert peter_signer.signer_key == SIGNED_NOTE_VECTOR["signer_key"]
    assert peter_verifier.verifier_key == SIGNED_NOTE_VECTOR["verifier_key"]
    assert peter_signer.verifier() == peter_verifier
    assert peter_verifier.key_hash == 0xC74F20A3
    assert peter_verifier.key_hash == key_hash(
        "PeterNeumann", ED25519_TYPE, peter_verifier.public_key
    )
    digest = hashlib.sha256(b"PeterNeumann\n\x01" + peter_verifier.public_key).digest()
    assert peter_verifier.key_hash == int.from_bytes(digest[:4], "big")


def test_vector_note_opens(peter_verifier: Ed25519Verifier) -> None:
    note = open_note(SIGNED, [peter_verifier])
    assert note.text == TEXT
    assert [(s.name, s.key_hash) for s in note.signatures] == [("PeterNeumann", 0xC74F20A3)]
    assert note.signatures[0].verifier == peter_verifier
    assert note.unverified_signatures == ()
    assert note.signatures[0].line() == _signature_lines(SIGNED)[0] + "\n"


@pytest.mark.parametrize("vkey", SIGNED_NOTE_VECTOR["bad_verifier_keys"])
def test_vector_bad_verifier_keys_refused(vkey: str) -> None:
    with pytest.raises(MalformedKeyError):
        parse_verifier_key(vkey)


def test_note_by_unknown_key_only_is_unverified() -> None:
    enoch = parse_verifier_key(SIGNED_NOTE_VECTOR["second_verifier_key"])
    with pytest.raises(UnverifiedNoteError) as caught:
        open_note(SIGNED, [enoch])
    assert caught.value.note.text == TEXT
    assert [s.name for s in caught.value.note.unverified_signatures] == ["PeterNeumann"]


# --- key strings ---


def _vkey_with_plus_in_material() -> tuple[str, Ed25519PrivateKey]:
    for seed in range(256):
        key = _key(seed)
        vkey = format_verifier_key("plus", key.public_key().public_bytes_raw())
        if "+" in vkey.split("+", 2)[2]:
            return vkey, key
    raise AssertionError("no seed gives a '+' in the key material")


def test_verifier_key_material_may_contain_plus() -> None:
    vkey, key = _vkey_with_plus_in_material()
    verifier = parse_verifier_key(vkey)
    assert verifier.public_key == key.public_key().public_bytes_raw()
    assert verifier.verifier_key == vkey


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PUBLIC = _key(7).public_key().public_bytes_raw()
GOOD_HASH = f"{key_hash('name', ED25519_TYPE, PUBLIC):08x}"
MATERIAL = _b64(b"\x01" + PUBLIC)
SHORT_MATERIAL = _b64(b"\x01" + PUBLIC[:31])
LONG_MATERIAL = _b64(b"\x01" + PUBLIC + b"x")
TYPE_2_MATERIAL = _b64(b"\x02" + PUBLIC)
UNKNOWN_TYPE_SEED = _b64(b"\x09" + bytes(32))


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "name",
        "name+" + GOOD_HASH,
        f"+{GOOD_HASH}+{MATERIAL}",
        f"na me+{GOOD_HASH}+{MATERIAL}",
        f"name+{GOOD_HASH[:7]}+{MATERIAL}",
        f"name+{GOOD_HASH}0+{MATERIAL}",
        f"name+0x{GOOD_HASH[2:]}+{MATERIAL}",
        f"name+{GOOD_HASH[:7]}g+{MATERIAL}",
        f"name+{int(GOOD_HASH, 16) ^ 1:08x}+{MATERIAL}",
        f"name+{GOOD_HASH}+",
        f"name+{GOOD_HASH}+{MATERIAL[:-1]}",
        f"name+{GOOD_HASH}+{MATERIAL} ",
        f"name+{key_hash('name', 1, PUBLIC[:31]):08x}+{SHORT_MATERIAL}",
        f"name+{key_hash('name', 1, PUBLIC + b'x'):08x}+{LONG_MATERIAL}",
        f"name+{key_hash('name', 2, PUBLIC):08x}+{TYPE_2_MATERIAL}",
    ],
)
def test_malformed_verifier_keys_refused(vkey: str) -> None:
    with pytest.raises(MalformedKeyError):
        parse_verifier_key(vkey)


@pytest.mark.parametrize(
    "skey",
    [
        SIGNED_NOTE_VECTOR["signer_key"].replace("PRIVATE+KEY+", ""),
        SIGNED_NOTE_VECTOR["signer_key"].replace("PRIVATE+KEY+", "PRIVATE+KEYS+"),
        SIGNED_NOTE_VECTOR["signer_key"].replace("c74f20a3", "c74f20a4"),
        SIGNED_NOTE_VECTOR["signer_key"].replace("PeterNeumann", "Peter"),
        SIGNED_NOTE_VECTOR["signer_key"][:-4],
        f"PRIVATE+KEY+name+{GOOD_HASH}+{UNKNOWN_TYPE_SEED}",
    ],
)
def test_malformed_signer_keys_refused(skey: str) -> None:
    with pytest.raises(MalformedKeyError):
        parse_signer_key(skey)


@pytest.mark.parametrize("signature_type", [ED25519_TYPE, COSIGNATURE_V1_TYPE])
def test_generated_keys_round_trip(signature_type: int) -> None:
    skey, vkey = generate_signer_key("example.com/log", signature_type)
    signer = parse_signer_key(skey)
    verifier = parse_verifier_key(vkey)
    assert signer.verifier() == verifier
    assert signer.signer_key == skey
    assert open_note(sign_note("hello\n", signer), [verifier]).text == "hello\n"


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("example.com/log42", True),
        ("日志", True),
        ("", False),
        ("a b", False),
        ("a+b", False),
        ("a\tb", False),
        ("a\u00a0b", False),
        ("a\u3000b", False),
        ("a\x00b", False),
    ],
)
def test_key_names(name: str, valid: bool) -> None:
    assert is_valid_key_name(name) is valid


def test_invalid_names_refused_everywhere() -> None:
    with pytest.raises(MalformedKeyError):
        Ed25519Signer("a b", _key(1))
    with pytest.raises(MalformedKeyError):
        Ed25519Verifier("a+b", PUBLIC)
    with pytest.raises(MalformedKeyError):
        format_verifier_key("", PUBLIC)
    with pytest.raises(MalformedKeyError):
        Ed25519Verifier("name", PUBLIC[:31])


# --- opening notes ---


def test_unknown_signatures_are_ignored(
    peter_signer: Ed25519Signer, peter_verifier: Ed25519Verifier
) -> None:
    enoch = Ed25519Signer("EnochRoot", _key(2))
    message = sign_note(TEXT, peter_signer, enoch)
    note = open_note(message, [peter_verifier])
    assert [s.name for s in note.signatures] == ["PeterNeumann"]
    assert [s.name for s in note.unverified_signatures] == ["EnochRoot"]
    both = open_note(message, [peter_verifier, enoch.verifier()])
    assert [s.name for s in both.signatures] == ["PeterNeumann", "EnochRoot"]


def test_bad_signature_by_known_key_rejects_note(peter_verifier: Ed25519Verifier) -> None:
    line = _signature_lines(SIGNED)[0]
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[10] ^= 1
    forged = f"\u2014 PeterNeumann {_b64(bytes(raw))}"
    enoch = Ed25519Signer("EnochRoot", _key(2))
    valid = _signature_lines(sign_note(TEXT, enoch))[0]
    message = _with_lines(TEXT, [valid, forged])
    with pytest.raises(InvalidSignatureError) as caught:
        open_note(message, [peter_verifier, enoch.verifier()])
    assert (caught.value.name, caught.value.key_hash) == ("PeterNeumann", 0xC74F20A3)


def test_bad_signature_on_changed_text(peter_verifier: Ed25519Verifier) -> None:
    message = SIGNED.replace(b"answer", b"ANSWER")
    with pytest.raises(InvalidSignatureError):
        open_note(message, [peter_verifier])


def test_repeated_signature_is_verified_and_recorded_once(
    peter_verifier: Ed25519Verifier,
) -> None:
    line = _signature_lines(SIGNED)[0]
    note = open_note(_with_lines(TEXT, [line, line]), [peter_verifier])
    assert len(note.signatures) == 1
    raw = bytearray(base64.b64decode(GOOD_B64))
    raw[-1] ^= 1
    bad = f"\u2014 PeterNeumann {_b64(bytes(raw))}"
    with pytest.raises(InvalidSignatureError):
        open_note(_with_lines(TEXT, [line, bad]), [peter_verifier])


def test_wrong_key_hash_is_treated_as_unknown(peter_verifier: Ed25519Verifier) -> None:
    line = _signature_lines(SIGNED)[0]
    raw = base64.b64decode(line.split(" ")[2])
    wrong_hash = (int.from_bytes(raw[:4], "big") ^ 1).to_bytes(4, "big") + raw[4:]
    wrong = f"\u2014 PeterNeumann {_b64(wrong_hash)}"
    with pytest.raises(UnverifiedNoteError):
        open_note(_with_lines(TEXT, [wrong]), [peter_verifier])
    note = open_note(_with_lines(TEXT, [wrong, line]), [peter_verifier])
    assert len(note.signatures) == 1
    assert [s.key_hash for s in note.unverified_signatures] == [0xC74F20A3 ^ 1]
    other_name = line.replace("PeterNeumann", "PaulNeumann")
    with pytest.raises(UnverifiedNoteError):
        open_note(_with_lines(TEXT, [other_name]), [peter_verifier])


def _unknown_lines(count: int) -> list[str]:
    return [f"\u2014 unknown{i} {_b64(i.to_bytes(4, 'big') + bytes(64))}" for i in range(count)]


def test_signature_count_limit(peter_verifier: Ed25519Verifier) -> None:
    line = _signature_lines(SIGNED)[0]
    note = open_note(
        _with_lines(TEXT, [line, *_unknown_lines(MAX_SIGNATURES - 1)]), [peter_verifier]
    )
    assert len(note.unverified_signatures) == MAX_SIGNATURES - 1
    with pytest.raises(TooManySignaturesError):
        open_note(_with_lines(TEXT, [line, *_unknown_lines(MAX_SIGNATURES)]), [peter_verifier])


GOOD_LINE = _signature_lines(SIGNED)[0]
GOOD_B64 = GOOD_LINE.split(" ")[2]


@pytest.mark.parametrize(
    "line",
    [
        "",
        "- PeterNeumann " + GOOD_B64,
        "\u2014PeterNeumann " + GOOD_B64,
        "\u2014  PeterNeumann " + GOOD_B64,
        "\u2014 PeterNeumann",
        "\u2014 PeterNeumann ",
        "\u2014 PeterNeumann  " + GOOD_B64,
        "\u2014 PeterNeumann " + GOOD_B64 + " ",
        "\u2014 Peter+Neumann " + GOOD_B64,
        "\u2014 " + GOOD_B64,
        "\u2014 PeterNeumann " + GOOD_B64[1:],
        "\u2014 PeterNeumann " + GOOD_B64.rstrip("="),
        "\u2014 PeterNeumann !!!!",
        "\u2014 PeterNeumann " + _b64(b"\xc7\x4f\x20\xa3"),
        "\u2014 PeterNeumann AAAA",
    ],
)
def test_malformed_signature_lines_refused(line: str, peter_verifier: Ed25519Verifier) -> None:
    with pytest.raises(MalformedNoteError):
        open_note(_with_lines(TEXT, [GOOD_LINE, line]), [peter_verifier])


def test_non_canonical_base64_refused(peter_verifier: Ed25519Verifier) -> None:
    # The last base64 digit carries spare bits; flipping one changes the text, not the bytes.
    last = GOOD_B64[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = GOOD_B64[:-2] + alphabet[alphabet.index(last) ^ 1] + "="
    assert twin != GOOD_B64
    assert base64.b64decode(twin) == base64.b64decode(GOOD_B64)
    with pytest.raises(MalformedNoteError):
        open_note(_with_lines(TEXT, [f"\u2014 PeterNeumann {twin}"]), [peter_verifier])


@pytest.mark.parametrize(
    "message",
    [
        b"",
        TEXT.encode(),
        TEXT.encode() + b"\n",
        SIGNED[:-1],
        SIGNED.replace(b"\n\n", b"\n"),
        SIGNED + b"\n",
        SIGNED.replace(b"problem,", b"problem,\r"),
        SIGNED.replace(b"problem,", b"problem,\t"),
        SIGNED.replace(b"problem,", b"problem,\x00"),
        SIGNED.replace(b"problem,", b"problem,\xff"),
        SIGNED.replace(b"problem,", b"problem,\xed\xa0\x80"),  # encoded surrogate
    ],
)
def test_malformed_notes_refused(message: bytes, peter_verifier: Ed25519Verifier) -> None:
    with pytest.raises(MalformedNoteError):
        open_note(message, [peter_verifier])


def test_text_may_contain_blank_lines(peter_signer: Ed25519Signer) -> None:
    text = "first\n\nsecond\n\n"
    note = open_note(sign_note(text, peter_signer), [peter_signer.verifier()])
    assert note.text == text


# --- signing ---


@pytest.mark.parametrize("text", ["", "no newline", "tab\there\n", "cr\r\n", "lone \ud800\n"])
def test_sign_refuses_malformed_text(text: str, peter_signer: Ed25519Signer) -> None:
    with pytest.raises(MalformedNoteError):
        sign_note(text, peter_signer)


def test_sign_needs_a_signer() -> None:
    with pytest.raises(MalformedNoteError):
        sign_note(TEXT)


def test_resigning_keeps_other_signatures_and_replaces_own(
    peter_signer: Ed25519Signer, peter_verifier: Ed25519Verifier
) -> None:
    enoch = Ed25519Signer("EnochRoot", _key(2))
    note = open_note(SIGNED, [peter_verifier])
    twice = sign_note(note, enoch)
    assert twice.startswith(SIGNED)
    reopened = open_note(twice, [enoch.verifier()])
    assert [s.name for s in reopened.unverified_signatures] == ["PeterNeumann"]
    again = sign_note(reopened, peter_signer)
    assert _signature_lines(again) == [*_signature_lines(twice)[1:], GOOD_LINE]


def test_verifier_set_refuses_ambiguous_keys(peter_verifier: Ed25519Verifier) -> None:
    assert len(VerifierSet([peter_verifier, peter_verifier])) == 1

    class LookAlike:
        name = peter_verifier.name
        key_hash = peter_verifier.key_hash

        def verify(self, message: bytes, signature: bytes) -> bool:
            return True

    verifiers: list[Verifier] = [peter_verifier, LookAlike()]
    with pytest.raises(AmbiguousVerifierError):
        VerifierSet(verifiers)


# --- cosignatures ---

CHECKPOINT_BODY = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
TIMESTAMP = 1679315147


def _witness(number: int, timestamp: int = TIMESTAMP) -> CosignatureSigner:
    return CosignatureSigner(
        f"witness.example.com/w{number}", _key(100 + number), lambda: timestamp
    )


def test_cosignature_round_trip() -> None:
    witness = _witness(1)
    note = open_note(sign_note(CHECKPOINT_BODY, witness), [witness.verifier()])
    (signature,) = note.signatures
    assert cosignature_timestamp(signature) == TIMESTAMP
    assert len(signature.data) == 8 + 64
    assert signature.data[:8] == TIMESTAMP.to_bytes(8, "big")


def test_cosignature_signs_the_spec_message() -> None:
    witness = _witness(1)
    signature = witness.sign(CHECKPOINT_BODY.encode())
    message = b"cosignature/v1\ntime 1679315147\n" + CHECKPOINT_BODY.encode()
    assert cosigned_message(CHECKPOINT_BODY.encode(), TIMESTAMP) == message
    _key(101).public_key().verify(signature[8:], message)


def test_cosignature_key_hash_uses_type_4() -> None:
    witness = _witness(1)
    public = _key(101).public_key().public_bytes_raw()
    assert witness.key_hash == key_hash(witness.name, COSIGNATURE_V1_TYPE, public)
    assert witness.key_hash != Ed25519Signer(witness.name, _key(101)).key_hash
    vkey = witness.verifier().verifier_key
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == COSIGNATURE_V1_TYPE
    assert parse_verifier_key(vkey) == witness.verifier()
    assert isinstance(parse_verifier_key(vkey), CosignatureVerifier)


def test_cosignature_verifier_rejects_tampering() -> None:
    witness = _witness(1)
    verifier = witness.verifier()
    body = CHECKPOINT_BODY.encode()
    signature = witness.sign(body)
    assert verifier.verify(body, signature)
    later = (TIMESTAMP + 1).to_bytes(8, "big") + signature[8:]
    assert not verifier.verify(body, later)
    assert not verifier.verify(body, signature[8:])
    assert not verifier.verify(body + b"x\n", signature)
    plain = Ed25519Signer(witness.name, _key(101)).sign(body)
    assert not verifier.verify(body, bytes(8) + plain)
    too_late = (MAX_TIMESTAMP + 1).to_bytes(8, "big") + signature[8:]
    assert not verifier.verify(body, too_late)


def test_cosignature_timestamp_bounds() -> None:
    witness = _witness(1)
    assert witness.sign_at(b"x\n", MAX_TIMESTAMP)[:8] == MAX_TIMESTAMP.to_bytes(8, "big")
    for bad in (-1, MAX_TIMESTAMP + 1):
        with pytest.raises(InvalidParameterError):
            witness.sign_at(b"x\n", bad)
    with pytest.raises(MalformedNoteError):
        cosignature_timestamp(Signature("n", 1, bytes(64)))


# --- witness policies ---


@pytest.fixture
def log_signer() -> Ed25519Signer:
    return Ed25519Signer("example.com/behind-the-sofa", _key(50))


def _cosigned(log: Ed25519Signer, *witnesses: CosignatureSigner) -> bytes:
    return sign_note(CHECKPOINT_BODY, log, *witnesses)


def _open_with(message: bytes, log: Ed25519Signer, policy: WitnessPolicy) -> Note:
    return open_note(message, [log.verifier(), *policy.witnesses])


def test_policy_satisfied(log_signer: Ed25519Signer) -> None:
    witnesses = [_witness(i) for i in range(3)]
    policy = WitnessPolicy([w.verifier() for w in witnesses], threshold=2)
    note = _open_with(_cosigned(log_signer, witnesses[0], witnesses[2]), log_signer, policy)
    satisfied = policy.check(note)
    assert {v.name for v in satisfied} == {witnesses[0].name, witnesses[2].name}
    everyone = _open_with(_cosigned(log_signer, *witnesses), log_signer, policy)
    assert len(policy.check(everyone)) == 3


def test_policy_not_satisfied(log_signer: Ed25519Signer) -> None:
    witnesses = [_witness(i) for i in range(3)]
    policy = WitnessPolicy([w.verifier() for w in witnesses], threshold=2)
    stranger = _witness(9)
    note = _open_with(_cosigned(log_signer, witnesses[1], stranger), log_signer, policy)
    with pytest.raises(InsufficientCosignaturesError) as caught:
        policy.check(note)
    assert (caught.value.required, caught.value.found) == (2, 1)


def test_duplicate_cosignatures_count_once(log_signer: Ed25519Signer) -> None:
    witnesses = [_witness(i) for i in range(3)]
    policy = WitnessPolicy([w.verifier() for w in witnesses], threshold=2)
    first = _cosigned(log_signer, witnesses[0])
    again = _witness(0, TIMESTAMP + 60).sign(CHECKPOINT_BODY.encode())
    line = Signature(witnesses[0].name, witnesses[0].key_hash, again).line()
    note = _open_with(first + line.encode(), log_signer, policy)
    with pytest.raises(InsufficientCosignaturesError):
        policy.check(note)


def test_duplicate_witness_in_policy_counts_once() -> None:
    witness = _witness(0).verifier()
    policy = WitnessPolicy([witness, witness, _witness(1).verifier()], threshold=2)
    assert len(policy.witnesses) == 2
    with pytest.raises(InvalidParameterError):
        WitnessPolicy([witness, witness], threshold=2)
    with pytest.raises(InvalidParameterError):
        WitnessPolicy([witness], threshold=0)


def test_policy_ignores_signatures_checked_by_other_keys(log_signer: Ed25519Signer) -> None:
    witness = _witness(0)
    policy = WitnessPolicy([witness.verifier()], threshold=1)
    signature = witness.sign(CHECKPOINT_BODY.encode())
    impostor = Ed25519Verifier("impostor", PUBLIC)
    forged = Note(
        CHECKPOINT_BODY, (Signature(witness.name, witness.key_hash, signature, impostor),)
    )
    with pytest.raises(InsufficientCosignaturesError):
        policy.check(forged)
