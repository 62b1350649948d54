"""C2SP tlog-checkpoint format, signing and verification with witness cosignatures."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.checkpoint import (
    Checkpoint,
    MalformedCheckpointError,
    MissingLogSignatureError,
    OriginMismatchError,
    cosign_checkpoint,
    format_checkpoint,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from registry.merkle import MAX_TREE_SIZE, MemoryTree, leaf_hash, verify_inclusion
from registry.note import (
    CosignatureSigner,
    Ed25519Signer,
    InsufficientCosignaturesError,
    InvalidSignatureError,
    UnverifiedNoteError,
    WitnessPolicy,
    sign_note,
)

ORIGIN = "example.com/behind-the-sofa"
ROOT_B64 = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
SPEC_EXAMPLE = f"{ORIGIN}\n20852163\n{ROOT_B64}\n"
# Same 32 bytes, spelled with a spare bit set in the last base64 digit ("I" -> "J").
ROOT_B64_TWIN = ROOT_B64[:-2] + "J="
URLSAFE_ROOT = base64.urlsafe_b64encode(b"\xff" * 32).decode()


def _key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


@pytest.fixture
def log_signer() -> Ed25519Signer:
    return Ed25519Signer(ORIGIN, _key(1))


@pytest.fixture
def witnesses() -> list[CosignatureSigner]:
    return [
        CosignatureSigner(f"witness.example/w{i}", _key(10 + i), lambda: 1_700_000_000)
        for i in range(3)
    ]


# --- format and parse ---


def test_twin_spelling_decodes_to_the_same_root() -> None:
    assert ROOT_B64_TWIN != ROOT_B64
    assert base64.b64decode(ROOT_B64_TWIN) == base64.b64decode(ROOT_B64)


def test_spec_example_round_trips() -> None:
    checkpoint = parse_checkpoint(SPEC_EXAMPLE)
    assert checkpoint == Checkpoint(ORIGIN, 20852163, base64.b64decode(ROOT_B64))
    assert format_checkpoint(checkpoint) == SPEC_EXAMPLE


def test_extension_lines_round_trip() -> None:
    text = SPEC_EXAMPLE + "ext one\n— ext two\n"
    checkpoint = parse_checkpoint(text)
    assert checkpoint.extensions == ("ext one", "— ext two")
    assert format_checkpoint(checkpoint) == text


def test_empty_tree() -> None:
    checkpoint = parse_checkpoint(f"{ORIGIN}\n0\n{base64.b64encode(bytes(32)).decode()}\n")
    assert checkpoint.size == 0


@pytest.mark.parametrize(
    "text",
    [
        "",
        SPEC_EXAMPLE[:-1],
        f"{ORIGIN}\n20852163\n",
        f"{ORIGIN}\n{ROOT_B64}\n",
        f"\n20852163\n{ROOT_B64}\n",
        f"{ORIGIN}\r\n20852163\n{ROOT_B64}\n",
        f"{ORIGIN}\t\n20852163\n{ROOT_B64}\n",
        f"{ORIGIN}\n020852163\n{ROOT_B64}\n",
        f"{ORIGIN}\n00\n{ROOT_B64}\n",
        f"{ORIGIN}\n+20852163\n{ROOT_B64}\n",
        f"{ORIGIN}\n-1\n{ROOT_B64}\n",
        f"{ORIGIN}\n 20852163\n{ROOT_B64}\n",
        f"{ORIGIN}\n20852163 \n{ROOT_B64}\n",
        f"{ORIGIN}\n20_852_163\n{ROOT_B64}\n",
        f"{ORIGIN}\n0x10\n{ROOT_B64}\n",
        f"{ORIGIN}\n1.0\n{ROOT_B64}\n",
        f"{ORIGIN}\n\u0661\n{ROOT_B64}\n",
        f"{ORIGIN}\n{MAX_TREE_SIZE + 1}\n{ROOT_B64}\n",
        f"{ORIGIN}\n20852163\n{ROOT_B64} \n",
        f"{ORIGIN}\n20852163\n{ROOT_B64}x\n",
        f"{ORIGIN}\n20852163\n{ROOT_B64[:-1]}\n",
        f"{ORIGIN}\n20852163\n{ROOT_B64_TWIN}\n",
        f"{ORIGIN}\n20852163\n{base64.b64encode(bytes(31)).decode()}\n",
        f"{ORIGIN}\n20852163\n{base64.b64encode(bytes(33)).decode()}\n",
        f"{ORIGIN}\n20852163\n{URLSAFE_ROOT}\n",
        SPEC_EXAMPLE + "\n",
        SPEC_EXAMPLE + "ext\n\n",
        SPEC_EXAMPLE + "\next\n",
    ],
)
def test_malformed_checkpoints_refused(text: str) -> None:
    with pytest.raises(MalformedCheckpointError):
        parse_checkpoint(text)


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions"),
    [
        ("", 1, bytes(32), ()),
        ("a\nb", 1, bytes(32), ()),
        ("o", -1, bytes(32), ()),
        ("o", MAX_TREE_SIZE + 1, bytes(32), ()),
        ("o", 1, bytes(31), ()),
        ("o", 1, bytes(32), ("",)),
        ("o", 1, bytes(32), ("a\nb",)),
    ],
)
def test_checkpoint_fields_validated(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    with pytest.raises(MalformedCheckpointError):
        Checkpoint(origin, size, root, extensions)


_LINE = st.text(
    st.characters(exclude_categories=["Cs"], min_codepoint=0x20), min_size=1, max_size=40
)


@settings(database=None)
@given(
    _LINE,
    st.integers(0, MAX_TREE_SIZE),
    st.binary(min_size=32, max_size=32),
    st.lists(_LINE, max_size=3).map(tuple),
)
def test_format_parse_round_trip(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    checkpoint = Checkpoint(origin, size, root, extensions)
    assert parse_checkpoint(format_checkpoint(checkpoint)) == checkpoint


# --- signing and opening ---


def _tree_checkpoint() -> tuple[MemoryTree, Checkpoint]:
    tree = MemoryTree(b"authorization %d" % i for i in range(1000))
    return tree, Checkpoint(ORIGIN, tree.size, tree.root())


def test_signed_checkpoint_proves_inclusion_end_to_end(log_signer: Ed25519Signer) -> None:
    tree, checkpoint = _tree_checkpoint()
    message = sign_checkpoint(checkpoint, log_signer)
    opened = open_checkpoint(message, origin=ORIGIN, log_verifier=log_signer.verifier())
    assert opened.checkpoint == checkpoint
    assert opened.witnesses == ()
    head = opened.checkpoint
    proof = tree.inclusion_proof(417, head.size)
    verify_inclusion(leaf_hash(b"authorization 417"), 417, head.size, proof, head.root_hash)


def test_log_signature_required(
    log_signer: Ed25519Signer, witnesses: list[CosignatureSigner]
) -> None:
    _, checkpoint = _tree_checkpoint()
    policy = WitnessPolicy([w.verifier() for w in witnesses], threshold=1)
    only_witness = sign_note(format_checkpoint(checkpoint), witnesses[0])
    with pytest.raises(MissingLogSignatureError):
        open_checkpoint(
            only_witness, origin=ORIGIN, log_verifier=log_signer.verifier(), witness_policy=policy
        )
    other_log = Ed25519Signer(ORIGIN, _key(2))
    with pytest.raises(UnverifiedNoteError):
        open_checkpoint(
            sign_checkpoint(checkpoint, other_log),
            origin=ORIGIN,
            log_verifier=log_signer.verifier(),
        )


def test_bad_log_signature_rejected(log_signer: Ed25519Signer) -> None:
    _, checkpoint = _tree_checkpoint()
    message = sign_checkpoint(checkpoint, log_signer)
    forged = message.replace(b"\n1000\n", b"\n1001\n")
    with pytest.raises(InvalidSignatureError):
        open_checkpoint(forged, origin=ORIGIN, log_verifier=log_signer.verifier())


def test_origin_must_match(log_signer: Ed25519Signer) -> None:
    _, checkpoint = _tree_checkpoint()
    message = sign_checkpoint(checkpoint, log_signer)
    with pytest.raises(OriginMismatchError):
        open_checkpoint(message, origin="example.com/other", log_verifier=log_signer.verifier())


def test_signed_malformed_body_refused(log_signer: Ed25519Signer) -> None:
    message = sign_note(f"{ORIGIN}\n01\n{ROOT_B64}\n", log_signer)
    with pytest.raises(MalformedCheckpointError):
        open_checkpoint(message, origin=ORIGIN, log_verifier=log_signer.verifier())


def test_witnesses_cosign_and_policy_is_enforced(
    log_signer: Ed25519Signer, witnesses: list[CosignatureSigner]
) -> None:
    _, checkpoint = _tree_checkpoint()
    log_verifier = log_signer.verifier()
    two_of_three = WitnessPolicy([w.verifier() for w in witnesses], threshold=2)

    message = sign_checkpoint(checkpoint, log_signer)
    opened = open_checkpoint(message, origin=ORIGIN, log_verifier=log_verifier)
    with pytest.raises(InsufficientCosignaturesError):
        open_checkpoint(
            message, origin=ORIGIN, log_verifier=log_verifier, witness_policy=two_of_three
        )

    for witness in witnesses[:2]:
        message = cosign_checkpoint(opened, witness)
        opened = open_checkpoint(
            message,
            origin=ORIGIN,
            log_verifier=log_verifier,
            witness_policy=WitnessPolicy([witness.verifier()], threshold=1),
        )
    cosigned = open_checkpoint(
        message, origin=ORIGIN, log_verifier=log_verifier, witness_policy=two_of_three
    )
    assert cosigned.checkpoint == checkpoint
    assert {w.name for w in cosigned.witnesses} == {witnesses[0].name, witnesses[1].name}
    all_three = WitnessPolicy([w.verifier() for w in witnesses], threshold=3)
    with pytest.raises(InsufficientCosignaturesError):
        open_checkpoint(message, origin=ORIGIN, log_verifier=log_verifier, witness_policy=all_three)


def test_cosignatures_optional_without_policy(
    log_signer: Ed25519Signer, witnesses: list[CosignatureSigner]
) -> None:
    _, checkpoint = _tree_checkpoint()
    message = sign_checkpoint(checkpoint, log_signer, *witnesses)
    opened = open_checkpoint(message, origin=ORIGIN, log_verifier=log_signer.verifier())
    assert opened.witnesses == ()
    assert len(opened.note.unverified_signatures) == 3
