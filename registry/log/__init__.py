"""The transparency log of authorization events (RFC 6962 tree, C2SP checkpoints and tiles).

Pure library over a SQLAlchemy connection or engine; ``services/`` serves it over HTTP and gRPC.

* :mod:`~registry.log.entries` — the entry kinds and their versioned binary encoding;
* :mod:`~registry.log.storage` — tables, ``append_entry`` (inside the caller's transaction);
* :mod:`~registry.log.sequencer` — batches pending entries into the tree, signs checkpoints;
* :mod:`~registry.log.reader` — checkpoints, tiles, entry bundles, inclusion/consistency proofs;
* :mod:`~registry.log.signing` — the log's Ed25519 key file and verifier key;
* :mod:`~registry.log.client`, :mod:`~registry.log.monitor` — following a log over its read API;
* :mod:`~registry.log.witness` — cosigning checkpoints and accepting cosignatures;
* :mod:`~registry.log.errors` — the exception hierarchy.

A registry change and its entry commit together::

    with engine.begin() as conn:
        ...  # the registry's own writes
        appended = append_entry(conn, Issuance(now, store, serial, certificate_der))
    sequencer.integrate_now()  # or let the background runner do it within ~200 ms
"""

from registry.log.entries import (
    AuditDigest,
    Entry,
    EntryKind,
    Issuance,
    OperatorCaAdded,
    OperatorCaRevoked,
    OperatorCaRotated,
    Renewal,
    Revocation,
    StoreRef,
    decode_entry,
    encode_entry,
)
from registry.log.errors import LogError
from registry.log.reader import ConsistencyProof, InclusionProof, LogReader
from registry.log.sequencer import Integration, Sequencer, SequencerRunner, integrate
from registry.log.signing import DEFAULT_ORIGIN, ensure_log_signer, verifier_key
from registry.log.storage import (
    AppendedEntry,
    StoredCheckpoint,
    append_entries,
    append_entry,
    index_for_certificate,
    index_for_leaf_hash,
)

__all__ = [
    "DEFAULT_ORIGIN",
    "AppendedEntry",
    "AuditDigest",
    "ConsistencyProof",
    "Entry",
    "EntryKind",
    "InclusionProof",
    "Integration",
    "Issuance",
    "LogError",
    "LogReader",
    "OperatorCaAdded",
    "OperatorCaRevoked",
    "OperatorCaRotated",
    "Renewal",
    "Revocation",
    "Sequencer",
    "SequencerRunner",
    "StoreRef",
    "StoredCheckpoint",
    "append_entries",
    "append_entry",
    "decode_entry",
    "encode_entry",
    "ensure_log_signer",
    "index_for_certificate",
    "index_for_leaf_hash",
    "integrate",
    "verifier_key",
]
