"""The seller-authorization registry: CAs, applications, authorizations and CRLs in a database.

Pure library over a SQLAlchemy connection (no gRPC, no HTTP); ``services/`` exposes it.

* :mod:`~registry.authz.tables` — the tables;
* :mod:`~registry.authz.records` — the values read and written;
* :mod:`~registry.authz.authorities` — root and operator CA generations, CRLs, trust bundles;
* :mod:`~registry.authz.workflow` — submit, review, issue, renew, revoke;
* :mod:`~registry.authz.judge` — verdicts from the records (the sweep's fast path);
* :mod:`~registry.authz.keyfiles` — the root key file and the CA passphrase;
* :mod:`~registry.authz.sealing` — AES-GCM for the personal data an application carries;
* :mod:`~registry.authz.errors` — the exception hierarchy.
"""
