"""In-process store-certificate verification rate, next to raw ECDSA P-256 verification.

Target (issue 3): a full-chain verification with revocation checks runs at >= 0.5 of the rate two
ECDSA P-256 signature checks per chain allow, i.e. ``verifications/s >= 0.5 * raw/2``. Both rates
are measured in this run, in alternating small batches timed with the thread's CPU clock; the
fastest batch of each kind gives the reported rate (timeit's rule: slower runs measure the
neighbours, not the code) and the medians are printed next to it.

Each verification takes DER bytes (what a marketplace receives) of one of many distinct store
certificates, so nothing per-certificate can be cached; the CRLs (one root CRL, one operator CRL
with thousands of entries) are verified once when the verifier is built, as in production.

Issue 17 asks for the verifier a marketplace embeds (``registry.pki.verify.Verifier`` over the
bundle it downloaded) on its own, as a ratio to OpenSSL's own P-256 verification rate: ``openssl
speed ecdsap256`` (its default counts user CPU time, like the batches here) runs just before and
just after the Python batches, and the better of the two verify/s is the reference.

Run: ``.venv/bin/python bench/bench_pki_verify.py [--seconds S] [--certificates N]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from registry.pki.authority import create_operator_ca, create_root_ca
from registry.pki.authorization import StoreAuthorization
from registry.pki.bundle import TrustBundle
from registry.pki.issuance import issue_store_certificate
from registry.pki.keys import generate_private_key
from registry.pki.revocation import Revocation, build_crl
from registry.pki.scope import CardType, Scope
from registry.pki.verify import Reason, Verifier

BASE_URL = "http://127.0.0.1:8080"
CREDIT_CODE = "91350100M000100Y43"


def _setup(
    certificates: int, revoked: int
) -> tuple[Verifier, list[bytes], ec.EllipticCurvePublicKey, x509.Certificate]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    epoch = now - dt.timedelta(days=30)
    root = create_root_ca(now=epoch)
    operator = create_operator_ca(root, "cmcc", now=epoch, base_url=BASE_URL)
    ders: list[bytes] = []
    for index in range(certificates):
        key = generate_private_key()
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
        )
        authorization = StoreAuthorization(
            operator="cmcc",
            marketplace="taobao",
            shop_id=f"shop-{index:06d}",
            legal_name=f"Bench Store {index} Co., Ltd.",
            credit_code=CREDIT_CODE,
            scope=Scope.of(["personal", "industry"], ["11", "31", "35", "44"]),
        )
        certificate = issue_store_certificate(
            operator, csr, authorization, base_url=BASE_URL, now=now - dt.timedelta(days=1)
        )
        ders.append(certificate.public_bytes(serialization.Encoding.DER))
    # Revoked serials that are not among the benchmarked certificates: the lookup still has to
    # search a realistically sized set.
    revocations = [
        Revocation(serial, now - dt.timedelta(days=1), x509.ReasonFlags.cessation_of_operation)
        for serial in range(1 << 100, (1 << 100) + revoked)
    ]
    bundle = TrustBundle(
        root=root.certificate,
        operator_cas=(operator.certificate,),
        crls=(
            build_crl(root, [Revocation(12345, now)], crl_number=1, this_update=now),
            build_crl(operator, revocations, crl_number=1, this_update=now),
        ),
    )
    verifier = Verifier(TrustBundle.from_json(bundle.to_json()))
    sample = x509.load_der_x509_certificate(ders[0])
    public_key = operator.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    return verifier, ders, public_key, sample


def _batch_seconds(operation: Callable[[int], object], first: int, size: int) -> float:
    """Thread CPU seconds one batch of ``size`` operations takes."""
    # CPU time, not wall time: the cores are shared, and time spent descheduled while another
    # process runs says nothing about the cost of a verification.
    start = time.thread_time()
    for index in range(first, first + size):
        operation(index)
    return time.thread_time() - start


_SPEED_LINE = re.compile(r"ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)")


def openssl_verify_rate(seconds: int = 2) -> float:
    """``openssl speed ecdsap256``'s verify/s (0.0 when no openssl binary is installed)."""
    binary = shutil.which("openssl")
    if binary is None:
        return 0.0
    done = subprocess.run(
        [binary, "speed", "-seconds", str(seconds), "ecdsap256"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    match = _SPEED_LINE.search(done.stdout)
    if match is None:
        raise RuntimeError(f"unexpected openssl speed output: {done.stdout[-300:]!r}")
    return float(match.group(2))


def run(seconds: float = 8.0, certificates: int = 500, revoked: int = 5000) -> dict[str, float]:
    """Measure and return the figures (rates per second and the ratio to the two-check limit)."""
    verifier, ders, public_key, sample = _setup(certificates, revoked)
    openssl_before = openssl_verify_rate()
    signature, tbs = sample.signature, sample.tbs_certificate_bytes
    algorithm = ec.ECDSA(hashes.SHA256())
    count = len(ders)

    def raw(_: int) -> None:
        public_key.verify(signature, tbs, algorithm)

    def verify(index: int) -> None:
        verdict = verifier.verify(ders[index % count], card_type=CardType.PERSONAL, province="35")
        if verdict.reason is not Reason.AUTHORIZED:
            raise RuntimeError(f"benchmark certificate not authorized: {verdict.detail}")

    verify(0)  # warm up: builds the x509.verification verifier for this second
    # Alternating small batches for about ``seconds``; the fastest batch of each kind is the
    # cost with the least interference from the neighbours (timeit's rule), the median is shown
    # next to it. A batch walks 50 different certificates.
    batch = 50
    raw_times: list[float] = []
    verify_times: list[float] = []
    deadline = time.monotonic() + seconds
    position = 0
    while time.monotonic() < deadline or len(raw_times) < 5:
        raw_times.append(_batch_seconds(raw, 0, batch) / batch)
        verify_times.append(_batch_seconds(verify, position, batch) / batch)
        position = (position + batch) % count
    openssl_rate = max(openssl_before, openssl_verify_rate())
    best_raw, best_verify = 1 / min(raw_times), 1 / min(verify_times)
    median_raw, median_verify = (
        1 / statistics.median(raw_times),
        1 / statistics.median(verify_times),
    )
    return {
        "verifications_per_s": best_verify,
        "verifications_per_s_median": median_verify,
        "raw_ecdsa_p256_verify_per_s": best_raw,
        "raw_ecdsa_p256_verify_per_s_median": median_raw,
        "two_check_limit_per_s": best_raw / 2,
        "ratio_to_two_check_limit": best_verify / (best_raw / 2),
        "ratio_median": median_verify / (median_raw / 2),
        "openssl_speed_ecdsap256_verify_per_s": openssl_rate,
        "ratio_to_openssl_verify": best_verify / openssl_rate if openssl_rate else 0.0,
        "ratio_median_to_openssl_verify": median_verify / openssl_rate if openssl_rate else 0.0,
        "certificates": float(certificates),
        "revoked_serials_in_crl": float(revoked),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="total measuring time")
    parser.add_argument("--certificates", type=int, default=500, help="distinct store certs")
    parser.add_argument("--revoked", type=int, default=5000, help="entries in the operator CRL")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args()
    figures = run(args.seconds, args.certificates, args.revoked)
    if args.json:
        print(json.dumps(figures))
        return
    ratio = figures["ratio_to_two_check_limit"]
    print("pki in-process verification (full chain, CRL checks, scope), one core")
    print(f"  verifications/s                 {figures['verifications_per_s']:10.0f}")
    print(f"  raw ECDSA P-256 verify/s        {figures['raw_ecdsa_p256_verify_per_s']:10.0f}")
    print(f"  limit at 2 verifies/chain (/s)  {figures['two_check_limit_per_s']:10.0f}")
    print(f"  ratio to limit                  {ratio:10.2f}  (target >= 0.50)")
    print(f"  ratio of medians                {figures['ratio_median']:10.2f}")
    openssl_rate = figures["openssl_speed_ecdsap256_verify_per_s"]
    print(f"  openssl speed ecdsap256 verify/s {openssl_rate:9.0f}")
    print(f"  verifications/s / openssl's     {figures['ratio_to_openssl_verify']:10.2f}")
    print(f"  same, medians                   {figures['ratio_median_to_openssl_verify']:10.2f}")


if __name__ == "__main__":
    main()
