"""The courier's offline trust bundle, built from the database and the log.

Written by ``realname bundle export`` and served to courier companies by ``realname serve``
(``GET /courier/api/bundle`` behind the courier's client certificate): the same bundle.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, select

from registry.authz import authorities
from registry.authz.tables import ROOT_ISSUER, authz_authorizations
from registry.delivery import DeliveryBundle, LoggedCertificate
from registry.log import storage as log_storage
from services.features.transparency import TransparencyLog
from services.storage.database import Database


def export_bundle(
    db: Database,
    transparency: TransparencyLog,
    keys: authorities.OperatorKeys,
    *,
    now: dt.datetime,
    max_age: dt.timedelta,
) -> DeliveryBundle:
    """Build the courier bundle from the database and the log (re-signing CRLs if needed)."""

    def resign(conn: Connection) -> None:
        if not keys.available:
            return
        for crl in authorities.stored_crls(conn):
            if crl.issuer != ROOT_ISSUER and crl.next_update < now + max_age:
                signer = authorities.crl_signer(conn, crl.issuer, keys)
                authorities.sign_crl(conn, crl.issuer, signer, now=now)

    db.write(resign)
    transparency.sequencer.integrate_now()

    def read(conn: Connection) -> DeliveryBundle:
        snapshot = authorities.load_bundle(conn)
        checkpoint = transparency.reader.latest_checkpoint(conn)
        stores: list[LoggedCertificate] = []
        certificates = conn.execute(select(authz_authorizations.c.certificate)).scalars()
        for der in certificates:
            index = log_storage.index_for_certificate(conn, bytes(der))
            if index is None or index >= checkpoint.size:
                continue
            proof = transparency.reader.inclusion_proof(conn, index, checkpoint.size)
            entry = log_storage.read_entries(conn, index, index + 1)[0][1]
            stores.append(LoggedCertificate(entry, index, tuple(proof.hashes)))
        return DeliveryBundle(
            trust=snapshot.bundle,
            log_origin=transparency.origin,
            log_keys=(transparency.verifier_key,),
            checkpoint=checkpoint.signed_note(),
            issued_at=now,
            max_age=max_age,
            stores=tuple(stores),
        )

    return db.read(read)
