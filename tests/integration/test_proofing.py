"""Identity proofing through the gRPC API, on SQLite and PostgreSQL: names, authority, readers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import MetaData, inspect

from services.app import App
from services.domain.documents import Document
from services.domain.holder_names import HolderNames, card_context
from services.domain.pseudonym import Pseudonymizer
from services.features.proofing import ProofingConfig, SignalSettings
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import legacy_pb2 as lpb
from services.proto.realname.v1 import legacy_pb2_grpc as lgrpc
from services.proto.realname.v1 import proofing_pb2 as ppb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.runtime.identity_authority import load_identity_records
from services.runtime.key_files import create_holder_name_key_file, load_holder_names
from services.storage import proofing_repo, proofing_schema, schema
from services.storage.database import Database
from services.storage.rawsql import Tx
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.proofing import (
    Reader,
    activation,
    enable_policy,
    proofing_stub,
    public_pem,
    record,
    resident,
    signed_records,
    start_proofing_harness,
)
from tests.support.rpc import rich_error
from tests.support.server import GrpcHarness

NAME = "Lin Xiaoming"
OTHER_NAME = "Chen Jing"


@pytest.fixture(scope="session")
def holder_names(
    tmp_path_factory: pytest.TempPathFactory, pseudonymizer: Pseudonymizer
) -> HolderNames:
    """The session's holder-name key file, loaded."""
    path = tmp_path_factory.mktemp("names") / "holder-name.keys"
    create_holder_name_key_file(path)
    return load_holder_names(path, pseudonymizer)


@dataclass
class Kit:
    """A proofing-enabled server and what tests need around it."""

    harness: GrpcHarness
    app: App
    db: Database
    names: HolderNames
    pseudo: Pseudonymizer
    loader: ed25519.Ed25519PrivateKey
    seq: int = 0

    def load(self, *records: dict[str, str | None]) -> int:
        """Loads signed identity records into the reference authority."""
        data, signature = signed_records(list(records), self.loader)
        return load_identity_records(
            self.db,
            self.pseudo,
            self.names,
            data=data,
            signature=signature,
            loader_key_pem=public_pem(self.loader).encode(),
            now=dt.datetime.now(dt.UTC),
        )

    def verification(self, principal: str = "operator-cmcc") -> object:
        """A VerificationService stub."""
        return self.harness.verification(principal)

    def nonce(self, principal: str = "operator-cmcc") -> str:
        """A fresh attestation nonce for ``principal``."""
        stub = proofing_stub(self.harness, principal)
        return stub.GetAttestationNonce(ppb.GetAttestationNonceRequest(), timeout=10).nonce

    def next(self) -> int:
        """A fresh sequence number for MSISDNs and ICCIDs."""
        self.seq += 1
        return self.seq

    def count(self, sql: str, *params: object) -> int:
        """A COUNT(*) over the test database."""

        def work(tx: Tx) -> int:
            row = tx.one(sql, params)
            assert row is not None
            return int(row[0])

        return self.db.run_tx(work, readonly=True)


@pytest.fixture
def kit(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, holder_names: HolderNames
) -> Iterator[Kit]:
    config = ProofingConfig(
        names=holder_names,
        signals=SignalSettings(burst_documents=4, face_failures=3, travel_min_km=50),
    )
    harness, app = start_proofing_harness(db, pki_dir, pseudonymizer, config)
    yield Kit(harness, app, db, holder_names, pseudonymizer, ed25519.Ed25519PrivateKey.generate())
    harness.close()


def refused(call: object, *args: object) -> tuple[grpc.StatusCode, str | None, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=10)  # type: ignore[operator]
    err = rich_error(info.value)
    return err.code, err.reason, err.metadata


def nothing_written(kit: Kit, request_id: str, number: str) -> None:
    assert kit.count("SELECT COUNT(*) FROM cards WHERE msisdn = ?", number) == 0
    assert kit.count("SELECT COUNT(*) FROM requests WHERE request_id = ?", request_id) == 0


def setup_attested(kit: Kit, doc: Document, name: str = NAME) -> Reader:
    """Policy on for cmcc, the document known to the authority, a reader at shop-0042."""
    enable_policy(proofing_stub(kit.harness))
    kit.load(record(doc.number, name))
    reader = Reader(f"RDR-{kit.next()}", "shop-0042")
    reader.register(proofing_stub(kit.harness))
    return reader


def test_valid_attested_activation_stores_the_name_sealed(kit: Kit) -> None:
    doc = resident(resident_id(101))
    reader = setup_attested(kit, doc)
    nonce = kit.nonce()
    number = msisdn("138", 9101)
    # The chip's spelling differs in case and spacing from the counter's: names are normalised.
    request = activation(
        "att-ok", doc, number, iccid(9101), name="LIN  XIAOMING",
        attestation=reader.attest(nonce, doc, NAME),
    )  # fmt: skip
    stub = kit.harness.verification()
    card = stub.ActivateCard(request, timeout=10).card
    assert card.state == vpb.CARD_STATE_ACTIVE
    assert card.document_masked == doc.masked()

    def stored(tx: Tx) -> tuple[int, bytes, str, bytes]:
        row = tx.one(
            "SELECT id, holder_name_ct, holder_name_key_id, holder_name_hash FROM cards "
            "WHERE msisdn = ?",
            (number,),
        )
        assert row is not None
        return int(row[0]), bytes(row[1]), str(row[2]), bytes(row[3])

    card_id, ct, key_id, name_hash = kit.db.run_tx(stored, readonly=True)
    assert key_id == "k1"
    assert NAME.encode() not in ct and b"LIN" not in ct
    assert name_hash == kit.names.name_hash(NAME)
    assert kit.names.open(ct, key_id, card_context(card_id)) == "LIN  XIAOMING"
    # A retry of the same request id replays the card although its nonce is spent.
    assert stub.ActivateCard(request, timeout=10).card == card
    assert kit.count("SELECT COUNT(*) FROM cards WHERE msisdn = ?", number) == 1


def test_ecdsa_p256_readers_work_too(kit: Kit) -> None:
    doc = resident(resident_id(102))
    setup_attested(kit, doc)
    reader = Reader.ecdsa("RDR-EC-1", "shop-0042")
    assert reader.register(proofing_stub(kit.harness)).key_algorithm == "ecdsa-p256"
    request = activation(
        "att-ec", doc, msisdn("138", 9102), iccid(9102), name=NAME,
        attestation=reader.attest(kit.nonce(), doc, NAME),
    )  # fmt: skip
    assert kit.harness.verification().ActivateCard(request, timeout=10).card.msisdn


def test_wrong_name_is_identity_mismatch_and_writes_nothing(kit: Kit) -> None:
    doc = resident(resident_id(103))
    reader = setup_attested(kit, doc)
    number = msisdn("138", 9103)
    request = activation(
        "att-wrong-name", doc, number, iccid(9103), name=OTHER_NAME,
        attestation=reader.attest(kit.nonce(), doc, OTHER_NAME),
    )  # fmt: skip
    code, reason, meta = refused(kit.harness.verification().ActivateCard, request)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDENTITY_MISMATCH")
    assert meta == {"authority": "MISMATCH"}
    nothing_written(kit, "att-wrong-name", number)


def test_unknown_document_is_identity_mismatch(kit: Kit) -> None:
    enable_policy(proofing_stub(kit.harness), attestation=False)
    doc = resident(resident_id(104))
    code, reason, meta = refused(
        kit.harness.verification().ActivateCard,
        activation("unknown-doc", doc, msisdn("138", 9104), iccid(9104), name=NAME),
    )
    assert (code, reason, meta) == (
        grpc.StatusCode.FAILED_PRECONDITION, "IDENTITY_MISMATCH", {"authority": "UNKNOWN"},
    )  # fmt: skip


def test_policy_requires_the_holder_name(kit: Kit) -> None:
    enable_policy(proofing_stub(kit.harness), attestation=False)
    code, reason, _ = refused(
        kit.harness.verification().ActivateCard,
        activation("no-name", resident(resident_id(105)), msisdn("138", 9105), iccid(9105)),
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "HOLDER_NAME_REQUIRED")


def test_a_policy_changed_by_another_process_applies_to_the_next_activation(kit: Kit) -> None:
    # The server keeps the policies it has read; another process (here: a direct write) sets
    # or removes one, and the very next activation must decide under the new policy.
    stub = kit.harness.verification()
    first = activation(
        "before-policy", resident(resident_id(120)), msisdn("138", 9120), iccid(9120)
    )
    assert stub.ActivateCard(first, timeout=10).card.state == vpb.CARD_STATE_ACTIVE
    policy = proofing_repo.Policy(False, False, 800, 300, dt.datetime.now(dt.UTC))
    kit.db.run_tx(lambda tx: proofing_repo.set_policy(tx, "cmcc", policy))
    unnamed = activation(
        "after-policy", resident(resident_id(121)), msisdn("138", 9121), iccid(9121)
    )
    code, reason, _ = refused(stub.ActivateCard, unnamed)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "HOLDER_NAME_REQUIRED")
    nothing_written(kit, "after-policy", unnamed.msisdn)
    kit.db.run_tx(
        lambda tx: tx.execute("DELETE FROM proofing_policies WHERE operator_id = ?", ("cmcc",))
    )
    again = activation("policy-gone", resident(resident_id(122)), msisdn("138", 9122), iccid(9122))
    assert stub.ActivateCard(again, timeout=10).card.state == vpb.CARD_STATE_ACTIVE


def test_proofing_can_be_switched_off_and_on_again(
    kit: Kit, pki_dir: Path, pseudonymizer: Pseudonymizer, holder_names: HolderNames
) -> None:
    # A second server on the same database stands for another process with its own caches.
    other, _ = start_proofing_harness(kit.db, pki_dir, pseudonymizer, ProofingConfig(holder_names))
    try:
        stub, there = proofing_stub(kit.harness), other.verification()
        assert enable_policy(stub, attestation=False).enabled

        def unnamed(n: int) -> vpb.ActivateCardRequest:
            return activation(f"off-{n}", resident(resident_id(130 + n)), msisdn("138", 9130 + n),
                              iccid(9130 + n))  # fmt: skip

        assert refused(there.ActivateCard, unnamed(0))[1] == "HOLDER_NAME_REQUIRED"
        off = stub.SetProofingPolicy(
            ppb.SetProofingPolicyRequest(policy=ppb.ProofingPolicy(enabled=False)), timeout=10
        ).policy
        assert not off.enabled
        assert not stub.GetProofingPolicy(ppb.GetProofingPolicyRequest(), timeout=10).policy.enabled
        # Off applies to the next activation in both processes.
        for n, server in ((1, kit.harness.verification()), (2, there)):
            assert server.ActivateCard(unnamed(n), timeout=10).card.state == vpb.CARD_STATE_ACTIVE
        # And on again, in both, although the other one last saw it off.
        assert enable_policy(stub, attestation=False).enabled
        for n, server in ((3, kit.harness.verification()), (4, there)):
            assert refused(server.ActivateCard, unnamed(n))[1] == "HOLDER_NAME_REQUIRED"
    finally:
        other.close()


def test_operators_without_a_policy_activate_as_before(kit: Kit) -> None:
    enable_policy(proofing_stub(kit.harness))  # cmcc's policy does not touch cucc
    policy = proofing_stub(kit.harness, "operator-cucc").GetProofingPolicy(
        ppb.GetProofingPolicyRequest(), timeout=10
    )
    assert not policy.policy.enabled
    card = (
        kit.harness.verification("operator-cucc")
        .ActivateCard(
            activation("no-policy", resident(resident_id(106)), msisdn("186", 9106), iccid(9106)),
            timeout=10,
        )
        .card
    )
    assert card.state == vpb.CARD_STATE_ACTIVE


def test_authority_reports_lost_document_as_blocked(kit: Kit) -> None:
    doc = resident(resident_id(107))
    enable_policy(proofing_stub(kit.harness), attestation=False)
    kit.load(record(doc.number, NAME, status="LOST"))
    code, reason, meta = refused(
        kit.harness.verification().ActivateCard,
        activation("lost", doc, msisdn("138", 9107), iccid(9107), name=NAME),
    )
    assert (code, reason, meta) == (
        grpc.StatusCode.FAILED_PRECONDITION, "DOCUMENT_BLOCKED", {"status": "LOST"},
    )  # fmt: skip
    kit.load(record(doc.number, NAME, until="2001-01-01"))
    _, reason, meta = refused(
        kit.harness.verification().ActivateCard,
        activation("expired", doc, msisdn("138", 9107), iccid(9107), name=NAME),
    )
    assert (reason, meta) == ("DOCUMENT_BLOCKED", {"status": "EXPIRED"})


def test_blocking_a_document_flags_its_cards_everywhere(kit: Kit) -> None:
    doc = resident(resident_id(108))
    cmcc, cucc = kit.harness.verification(), kit.harness.verification("operator-cucc")
    cmcc.ActivateCard(activation("b-1", doc, msisdn("138", 9108), iccid(9108)), timeout=10)
    cucc.ActivateCard(activation("b-2", doc, msisdn("186", 9109), iccid(9109)), timeout=10)
    regulator = proofing_stub(kit.harness, "regulator")
    blocked = regulator.BlockDocument(
        ppb.BlockDocumentRequest(
            document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=doc.number),
            reason=ppb.BLOCK_REASON_STOLEN,
            reference="PSB-2026-0042",
        ),
        timeout=10,
    )
    assert (blocked.cards_flagged, blocked.already_blocked) == (2, False)
    assert blocked.document_masked == doc.masked()
    for stub, number in ((cmcc, msisdn("138", 9108)), (cucc, msisdn("186", 9109))):
        card = stub.GetCard(vpb.GetCardRequest(msisdn=number), timeout=10).card
        assert (card.state, card.suspension) == (vpb.CARD_STATE_SUSPENDED, "REVERIFICATION")
    # No new card anywhere, with or without a proofing policy; the refusal is the request's outcome.
    request = activation("b-3", doc, msisdn("138", 9110), iccid(9110))
    for _ in range(2):
        code, reason, meta = refused(cmcc.ActivateCard, request)
        assert (code, reason, meta) == (
            grpc.StatusCode.FAILED_PRECONDITION, "DOCUMENT_BLOCKED", {"status": "STOLEN"},
        )  # fmt: skip
    again = regulator.BlockDocument(
        ppb.BlockDocumentRequest(
            document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=doc.number),
            reason=ppb.BLOCK_REASON_STOLEN,
        ),
        timeout=10,
    )
    assert (again.already_blocked, again.cards_flagged) == (True, 0)
    unblocked = regulator.UnblockDocument(
        ppb.UnblockDocumentRequest(
            document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=doc.number)
        ),
        timeout=10,
    )
    assert unblocked.was_blocked
    reply = cmcc.ActivateCard(activation("b-4", doc, msisdn("138", 9111), iccid(9111)), timeout=10)
    assert reply.card.state == vpb.CARD_STATE_ACTIVE


def test_block_needs_a_reason_and_the_regulator(kit: Kit) -> None:
    request = ppb.BlockDocumentRequest(
        document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(109))
    )
    code, reason, _ = refused(proofing_stub(kit.harness, "regulator").BlockDocument, request)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    code, reason, _ = refused(proofing_stub(kit.harness).BlockDocument, request)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")


def _attempt(
    kit: Kit,
    rid: str,
    doc: Document,
    att: ppb.ReaderAttestation | None,
    seq: int,
    agent: str = "shop-0042",
) -> tuple[grpc.StatusCode, str | None, dict[str, str]]:
    number = msisdn("138", seq)
    request = activation(rid, doc, number, iccid(seq), agent_id=agent, name=NAME, attestation=att)
    outcome = refused(kit.harness.verification().ActivateCard, request)
    nothing_written(kit, rid, number)
    return outcome


def test_missing_attestation(kit: Kit) -> None:
    doc = resident(resident_id(110))
    setup_attested(kit, doc)
    code, reason, _ = _attempt(kit, "att-missing", doc, None, 9120)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ATTESTATION_MISSING")


def test_forged_attestation_is_invalid_and_spends_its_nonce(kit: Kit) -> None:
    doc = resident(resident_id(111))
    reader = setup_attested(kit, doc)
    nonce = kit.nonce()
    forged = reader.attest(nonce, doc, NAME, signer=ed25519.Ed25519PrivateKey.generate())
    _, reason, meta = _attempt(kit, "att-forged", doc, forged, 9121)
    assert (reason, meta) == ("ATTESTATION_INVALID", {"check": "signature"})
    _, reason, _ = _attempt(kit, "att-after-forged", doc, reader.attest(nonce, doc, NAME), 9122)
    assert reason == "NONCE_REUSED"


def test_malformed_attestation_is_invalid(kit: Kit) -> None:
    doc = resident(resident_id(112))
    setup_attested(kit, doc)
    junk = ppb.ReaderAttestation(payload=b"hello\n", signature=b"x" * 64)
    _, reason, meta = _attempt(kit, "att-junk", doc, junk, 9123)
    assert (reason, meta) == ("ATTESTATION_INVALID", {"check": "format"})


def test_replayed_attestation_is_refused(kit: Kit) -> None:
    doc = resident(resident_id(113))
    reader = setup_attested(kit, doc)
    att = reader.attest(kit.nonce(), doc, NAME)
    stub = kit.harness.verification()
    stub.ActivateCard(
        activation("att-first", doc, msisdn("138", 9124), iccid(9124), name=NAME, attestation=att),
        timeout=10,
    )
    _, reason, _ = _attempt(kit, "att-replay", doc, att, 9125)
    assert reason == "NONCE_REUSED"


def test_stale_attestation_is_refused(kit: Kit) -> None:
    doc = resident(resident_id(114))
    reader = setup_attested(kit, doc)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=301)
    _, reason, meta = _attempt(
        kit, "att-stale", doc, reader.attest(kit.nonce(), doc, NAME, at=old), 9126
    )
    assert (reason, meta) == ("ATTESTATION_STALE", {"check": "time"})
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    _, reason, _ = _attempt(
        kit, "att-future", doc, reader.attest(kit.nonce(), doc, NAME, at=future), 9127
    )
    assert reason == "ATTESTATION_STALE"


def test_unissued_nonce_is_invalid(kit: Kit) -> None:
    doc = resident(resident_id(115))
    reader = setup_attested(kit, doc)
    # Another operator's nonce is not this operator's to spend.
    foreign = kit.nonce("operator-cucc")
    _, reason, meta = _attempt(
        kit, "att-foreign-nonce", doc, reader.attest(foreign, doc, NAME), 9128
    )
    assert (reason, meta) == ("ATTESTATION_INVALID", {"check": "nonce"})


def test_foreign_reader_is_not_registered(kit: Kit) -> None:
    doc = resident(resident_id(116))
    setup_attested(kit, doc)
    elsewhere = Reader("RDR-SHOP-1", "shop-1")
    elsewhere.register(proofing_stub(kit.harness))
    _, reason, meta = _attempt(
        kit, "att-other-agent", doc, elsewhere.attest(kit.nonce(), doc, NAME), 9129
    )
    assert (reason, meta) == ("READER_NOT_REGISTERED", {"reader": "RDR-SHOP-1"})
    # Registered with another operator only: not this operator's reader.
    cucc_reader = Reader("RDR-CUCC", "shop-0042")
    cucc_reader.register(proofing_stub(kit.harness, "operator-cucc"))
    _, reason, _ = _attempt(
        kit, "att-other-op", doc, cucc_reader.attest(kit.nonce(), doc, NAME), 9130
    )
    assert reason == "READER_NOT_REGISTERED"


def test_wrong_document_attestation_is_invalid(kit: Kit) -> None:
    doc = resident(resident_id(117))
    reader = setup_attested(kit, doc)
    other = resident(resident_id(118))
    _, reason, meta = _attempt(
        kit, "att-wrong-doc", doc, reader.attest(kit.nonce(), other, NAME), 9131
    )
    assert (reason, meta) == ("ATTESTATION_INVALID", {"check": "document"})


def test_revoked_reader_is_refused(kit: Kit) -> None:
    doc = resident(resident_id(119))
    reader = setup_attested(kit, doc)
    stub = proofing_stub(kit.harness)
    revoked = stub.RevokeReader(
        ppb.RevokeReaderRequest(serial=reader.serial, reason="reported stolen"), timeout=10
    ).reader
    assert revoked.status == ppb.READER_STATUS_REVOKED
    _, reason, meta = _attempt(kit, "att-revoked", doc, reader.attest(kit.nonce(), doc, NAME), 9132)
    assert (reason, meta) == (
        "READER_NOT_REGISTERED", {"reader": reader.serial, "status": "REVOKED"},
    )  # fmt: skip
    code, reason, _ = refused(
        stub.RevokeReader, ppb.RevokeReaderRequest(serial=reader.serial, reason="again")
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "READER_ALREADY_REVOKED")
    listed = stub.ListReaders(ppb.ListReadersRequest(agent_id="shop-0042"), timeout=10).readers
    assert [(r.serial, r.status) for r in listed] == [(reader.serial, ppb.READER_STATUS_REVOKED)]


def test_failing_face_match_is_refused(kit: Kit) -> None:
    doc = resident(resident_id(120))
    reader = setup_attested(kit, doc)
    _, reason, meta = _attempt(
        kit, "att-face", doc, reader.attest(kit.nonce(), doc, NAME, score=799), 9133
    )
    assert (reason, meta) == ("FACE_MATCH_FAILED", {"score": "799", "threshold": "800"})
    _, reason, _ = _attempt(
        kit, "att-live", doc, reader.attest(kit.nonce(), doc, NAME, liveness=False), 9134
    )
    assert reason == "FACE_MATCH_FAILED"


def test_reader_registration_is_validated(kit: Kit) -> None:
    stub = proofing_stub(kit.harness)
    code, reason, _ = refused(
        stub.RegisterReader,
        ppb.RegisterReaderRequest(serial="bad serial!", agent_id="shop-0042", public_key_pem="x"),
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    reader = Reader("RDR-DUP", "shop-0042")
    reader.register(stub)
    with pytest.raises(grpc.RpcError) as info:
        reader.register(stub)
    assert rich_error(info.value).reason == "READER_EXISTS"
    assert kit.count("SELECT COUNT(*) FROM proofing_readers") == 1


def test_fraud_signals_from_attestations(kit: Kit) -> None:
    enable_policy(proofing_stub(kit.harness), identity=False)
    stub = proofing_stub(kit.harness)
    fuzhou = Reader("RDR-FZ", "shop-0042", latitude=26.08, longitude=119.30)
    beijing = Reader("RDR-BJ", "shop-1", latitude=39.90, longitude=116.40)
    fuzhou.register(stub)
    beijing.register(stub)
    verification = kit.harness.verification()
    # Four documents at one reader within the window: a burst.
    for i in range(4):
        doc = resident(resident_id(130 + i))
        verification.ActivateCard(
            activation(f"sig-{i}", doc, msisdn("138", 9140 + i), iccid(9140 + i), name=NAME,
                       attestation=fuzhou.attest(kit.nonce(), doc, NAME)),
            timeout=10,
        )  # fmt: skip
    # The first document again, 1,500 km away minutes later: distant readers.
    doc = resident(resident_id(130))
    verification.ActivateCard(
        activation("sig-bj", doc, msisdn("138", 9150), iccid(9150), agent_id="shop-1", name=NAME,
                   attestation=beijing.attest(kit.nonce(), doc, NAME)),
        timeout=10,
    )  # fmt: skip
    # Three face-match failures at the Beijing reader (one person trying thrice).
    doc = resident(resident_id(140))
    for i in range(3):
        att = beijing.attest(kit.nonce(), doc, NAME, score=100)
        _attempt(kit, f"sig-face-{i}", doc, att, 9160 + i, agent="shop-1")
    signals = stub.ListFraudSignals(ppb.ListFraudSignalsRequest(), timeout=10).signals
    kinds = sorted((s.kind, s.reader_serial, s.agent_id) for s in signals)
    assert kinds == sorted([
        (ppb.FRAUD_SIGNAL_KIND_READER_BURST, "RDR-FZ", "shop-0042"),
        (ppb.FRAUD_SIGNAL_KIND_DISTANT_READERS, "RDR-BJ", "shop-1"),
        (ppb.FRAUD_SIGNAL_KIND_FACE_MATCH_FAILURES, "RDR-BJ", "shop-1"),
    ])  # fmt: skip
    assert all(s.operator == "cmcc" for s in signals)
    # The regulator sees every operator's; another operator sees none of cmcc's.
    regulator = proofing_stub(kit.harness, "regulator")
    assert len(regulator.ListFraudSignals(ppb.ListFraudSignalsRequest(), timeout=10).signals) == 3
    cucc = proofing_stub(kit.harness, "operator-cucc")
    assert list(cucc.ListFraudSignals(ppb.ListFraudSignalsRequest(), timeout=10).signals) == []
    # The agent registry got the same signals.
    flagged = kit.count(
        "SELECT COUNT(*) FROM agent_signals WHERE kind IN "
        "('READER_BURST', 'DISTANT_READERS', 'FACE_MATCH_FAILURES')"
    )
    assert flagged == 3


def test_an_operator_may_not_ask_for_another_operators_signals(kit: Kit) -> None:
    cucc = proofing_stub(kit.harness, "operator-cucc")
    code, reason, metadata = refused(
        cucc.ListFraudSignals, ppb.ListFraudSignalsRequest(operator="cmcc")
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOUR_OPERATOR")
    assert metadata == {"operator": "cmcc", "caller": "cucc"}
    # Its own id as the filter is its own signals; the regulator may name any operator.
    assert list(cucc.ListFraudSignals(ppb.ListFraudSignalsRequest(operator="cucc")).signals) == []
    regulator = proofing_stub(kit.harness, "regulator")
    assert (
        list(regulator.ListFraudSignals(ppb.ListFraudSignalsRequest(operator="cmcc")).signals) == []
    )


def test_a_reader_without_a_location_raises_no_distance_signal(kit: Kit) -> None:
    enable_policy(proofing_stub(kit.harness), identity=False)
    stub = proofing_stub(kit.harness)
    beijing = Reader("RDR-BJ", "shop-1", latitude=39.90, longitude=116.40)
    nowhere = Reader("RDR-NW", "shop-0042", latitude=None)
    beijing.register(stub)
    registered = nowhere.register(stub)
    # No location is "unknown", not (0, 0): none is answered back.
    assert not registered.HasField("location")
    listed = {r.serial: r for r in stub.ListReaders(ppb.ListReadersRequest(), timeout=10).readers}
    assert not listed["RDR-NW"].HasField("location") and listed["RDR-BJ"].HasField("location")
    doc = resident(resident_id(170))
    for n, (reader, agent) in enumerate(((beijing, "shop-1"), (nowhere, "shop-0042"))):
        request = activation(f"nw-{n}", doc, msisdn("138", 9170 + n), iccid(9170 + n),
                             agent_id=agent, name=NAME,
                             attestation=reader.attest(kit.nonce(), doc, NAME))  # fmt: skip
        assert kit.harness.verification().ActivateCard(request, timeout=10).card.state == (
            vpb.CARD_STATE_ACTIVE
        )
    signals = stub.ListFraudSignals(ppb.ListFraudSignalsRequest(), timeout=10).signals
    assert [s.kind for s in signals if s.kind == ppb.FRAUD_SIGNAL_KIND_DISTANT_READERS] == []


def test_policy_is_validated(kit: Kit) -> None:
    stub = proofing_stub(kit.harness)
    code, _, _ = refused(
        stub.SetProofingPolicy,
        ppb.SetProofingPolicyRequest(
            policy=ppb.ProofingPolicy(
                enabled=True, face_match_threshold_permille=1001, freshness_seconds=5
            )
        ),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert not stub.GetProofingPolicy(ppb.GetProofingPolicyRequest(), timeout=10).policy.enabled
    policy = enable_policy(stub, threshold=700, freshness=120)
    assert (policy.enabled, policy.face_match_threshold_permille, policy.freshness_seconds) == (
        True, 700, 120,
    )  # fmt: skip


def test_transfer_screens_the_new_holder_blocklist_and_name(kit: Kit) -> None:
    holder, new_holder = resident(resident_id(150)), resident(resident_id(151))
    stub = kit.harness.verification()
    number = msisdn("138", 9170)
    stub.ActivateCard(activation("t-1", holder, number, iccid(9170)), timeout=10)
    proofing_stub(kit.harness, "regulator").BlockDocument(
        ppb.BlockDocumentRequest(
            document=cpb.Document(
                type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=new_holder.number
            ),
            reason=ppb.BLOCK_REASON_LOST,
        ),
        timeout=10,
    )
    request = vpb.TransferCardRequest(
        request_id="t-2",
        msisdn=number,
        new_document=cpb.Document(
            type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=new_holder.number
        ),
    )
    code, reason, meta = refused(stub.TransferCard, request)
    assert (code, reason, meta) == (
        grpc.StatusCode.FAILED_PRECONDITION, "DOCUMENT_BLOCKED", {"status": "LOST"},
    )  # fmt: skip
    # An operator that checks identities transfers only with the new holder's matching name.
    other = resident(resident_id(152))
    kit.load(record(other.number, NAME))
    enable_policy(proofing_stub(kit.harness), attestation=False)
    request.new_document.number = other.number
    request.request_id = "t-3"
    code, reason, _ = refused(stub.TransferCard, request)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "HOLDER_NAME_REQUIRED")
    request.request_id, request.new_holder_name = "t-4", "Somebody Else"
    code, reason, _ = refused(stub.TransferCard, request)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDENTITY_MISMATCH")
    card = stub.GetCard(vpb.GetCardRequest(msisdn=number), timeout=10).card
    assert card.document_masked == holder.masked()
    request.request_id, request.new_holder_name = "t-5", NAME
    moved = stub.TransferCard(request, timeout=10).card
    assert moved.document_masked == other.masked()


def test_complete_registration_screens_the_legacy_holder(kit: Kit) -> None:
    """CompleteRegistration checks the blocklist and, under an identity policy, the name."""
    number = msisdn("139", 9000 + kit.next())

    def legacy_card(tx: Tx) -> None:
        tx.execute(
            "INSERT INTO cards (operator_id, msisdn, iccid, card_type, state, channel, "
            "activated_at, verified, import_id) "
            "VALUES ('cmcc', ?, ?, 1, 'ACTIVE', 'legacy', ?, 0, 'test-import')",
            (number, iccid(139_009_000 + kit.seq), tx.timestamp(dt.datetime.now(dt.UTC))),
        )

    kit.db.run_tx(legacy_card)
    holder = resident(resident_id(161))
    kit.load(record(holder.number, NAME))
    enable_policy(proofing_stub(kit.harness), attestation=False)
    stub = lgrpc.LegacyServiceStub(kit.harness.channel("operator-cmcc"))
    request = lpb.CompleteRegistrationRequest(
        msisdn=number,
        document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=holder.number),
    )
    code, reason, _ = refused(stub.CompleteRegistration, request)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "HOLDER_NAME_REQUIRED")
    request.holder_name = OTHER_NAME
    code, reason, _ = refused(stub.CompleteRegistration, request)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDENTITY_MISMATCH")
    assert kit.count("SELECT count(*) FROM cards WHERE msisdn = ? AND verified = 1", number) == 0
    request.holder_name = NAME
    card = stub.CompleteRegistration(request, timeout=10).card
    assert card.verified and card.document_masked == holder.masked()


def test_migration_matches_the_reader_location_schema(db: Database) -> None:
    # The readers' and attestations' places may be unknown (NULL) in the migrated database too.
    tables = MetaData()
    for table in (
        proofing_schema.proofing_readers,
        proofing_schema.proofing_attestations,
        schema.operators,
    ):
        table.to_metadata(tables)
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), tables)
    names = ("proofing_readers", "proofing_attestations")
    assert [
        d for d in diffs if any(f"'{n}'" in repr(d) or f"<{n}>" in repr(d) for n in names)
    ] == []
    for name in names:
        columns = {c["name"]: c for c in inspect(db.engine).get_columns(name)}
        assert columns["latitude"]["nullable"] and columns["longitude"]["nullable"]
