"""The public registry page's searches, paging and proof endpoint over HTTP, on SQLite and
PostgreSQL (the browser test drives the same page against `realname serve` on SQLite)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.domain.pseudonym import Pseudonymizer
from services.features.transparency import TransparencyLog
from services.http import public_routes
from services.proto.realname.v1 import registry_pb2 as rpb
from services.storage.database import Database
from tests.support.logdata import log_signer
from tests.support.registry import (
    CREDIT_CODES,
    RegistryHarness,
    application,
    authorize,
    registry_server,
)

SIGNER = log_signer()


@pytest.fixture
def transparency(db: Database) -> TransparencyLog:
    return TransparencyLog.create(db, SIGNER)


@pytest.fixture
def server(
    db: Database,
    pki_dir: Path,
    pseudonymizer: Pseudonymizer,
    tmp_path: Path,
    transparency: TransparencyLog,
) -> Iterator[RegistryHarness]:
    with registry_server(
        db, pki_dir, pseudonymizer, tmp_path / "data", http=True, log=transparency
    ) as harness:
        yield harness


def get(server: RegistryHarness, path: str, **query: str) -> tuple[int, str, dict[str, str]]:
    url = server.http_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read().decode(), dict(reply.headers)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode(), dict(error.headers)


def named(server: RegistryHarness, shop_id: str, name: str, **fields: object) -> rpb.Authorization:
    request = application(shop_id=shop_id, **fields)  # type: ignore[arg-type]
    request.store.legal_name = name
    submitted = server.registry_service("marketplace-demo").SubmitApplication(request)
    desk = server.registry_service("operator-cmcc")
    app_id = submitted.application.application_id
    desk.ReviewApplication(
        rpb.ReviewApplicationRequest(
            application_id=app_id,
            decision=rpb.REVIEW_DECISION_APPROVE,
            reason="ok",
            assessment="checked",
        )
    )
    return desk.IssueAuthorization(
        rpb.IssueAuthorizationRequest(application_id=app_id)
    ).authorization


def test_name_search_is_a_prefix_match_with_wildcards_taken_literally(
    server: RegistryHarness,
) -> None:
    percent = named(server, "pct-1", "Alpha 100% Cards")
    other = named(server, "pct-2", "Alpha 1000 Cards")
    underscore = named(server, "pct-3", "Beta_Cards")
    named(server, "pct-4", "BetaXCards")

    status, page, headers = get(server, "/", name="Alpha 100%")
    assert status == 200 and percent.serial in page and other.serial not in page
    assert "script-src" not in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    _, page, _ = get(server, "/", name="Alpha")
    assert percent.serial in page and other.serial in page
    _, page, _ = get(server, "/", name="Beta_")
    assert underscore.serial in page and page.count('class="authorization"') == 1


def test_credit_code_and_shop_searches(server: RegistryHarness) -> None:
    first = authorize(server, shop_id="cc-1")
    second = authorize(server, shop_id="cc-2", credit_code=CREDIT_CODES[1])
    _, page, _ = get(server, "/", credit_code=CREDIT_CODES[1].lower())
    assert second.serial in page and first.serial not in page
    _, page, _ = get(server, "/", marketplace="demo", shop_id="cc-1")
    assert first.serial in page and second.serial not in page
    status, page, _ = get(server, "/", credit_code="not-a-code")
    assert status == 400 and "18 digits" in page
    status, page, _ = get(server, "/", marketplace="demo", shop_id="bad shop<")
    assert status == 400 and "bad shop&lt;" in page and "bad shop<" not in page


def test_operator_list_pages_by_serial(
    server: RegistryHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    serials = sorted(authorize(server, shop_id=f"page-{n}").serial for n in range(3))
    monkeypatch.setattr(public_routes, "PAGE_SIZE", 2)
    _, page, _ = get(server, "/operators/cmcc")
    assert [s in page for s in serials] == [True, True, False]
    assert f"after={serials[1]}" in page
    _, page, _ = get(server, "/operators/cmcc", after=serials[1])
    assert [s in page for s in serials] == [False, False, True]
    assert 'id="next-page"' not in page


def test_proof_is_pending_until_sequenced(
    server: RegistryHarness, transparency: TransparencyLog
) -> None:
    issued = authorize(server, shop_id="pending-1")
    _, page, _ = get(server, "/", marketplace="demo", shop_id="pending-1")
    assert ">pending</a>" in page
    status, body, _ = get(server, f"/proof/{issued.serial}")
    assert status == 200 and json.loads(body)["status"] == "PENDING"
    transparency.sequencer.integrate_now()
    proof = json.loads(get(server, f"/proof/{issued.serial}")[1])
    assert proof["status"] == "INCLUDED" and proof["tree_size"] >= 1
    _, page, _ = get(server, "/", marketplace="demo", shop_id="pending-1")
    assert f">#{proof['leaf_index']}</a>" in page
