"""The regulator's dashboard against a real `realname serve`: the charts plotly draws in Debian's
chromium (driven by playwright, presenting the regulator's client certificate), the figures
behind them, and the mTLS gate (other principals get 403; no certificate, a certificate from
another CA or plain HTTP never get an answer)."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from services.features.compliance import ComplianceDesk
from services.features.enforcement import EnforcementDesk, EnforcementKind
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from services.runtime.devpki import cert_pem, key_pem, make_ca, make_client_cert
from services.storage.database import Database, DatabaseConfig, sqlite_url
from tests.support.docs import run_block
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.pki import channel
from tests.support.server import (
    ServerProcess,
    free_port,
    realname_bin,
    start_server_process,
    wait_serving,
)
from tests.system.test_compliance import load_fixture

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
# The server files a day's figures under China Standard Time, as the snapshots do.
TODAY = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).date()
SNAPSHOT_DAYS = (TODAY - dt.timedelta(days=10), TODAY - dt.timedelta(days=5))
OPERATORS = ["cmcc", "ctcc", "cucc", "vno1", "vno2"]
TARGETS = [(0.95, "2026-12-31"), (1.0, "2027-06-30")]
# Real-name rate of each operator on each snapshot day and now (see load()).
RATES = {
    "cmcc": [6 / 7, 9 / 10, 9 / 10],
    "ctcc": [1.0, 1.0, 1.0],
    "cucc": [1.0, 1.0, 1.0],
    "vno1": [1 / 3, 3 / 5, 3 / 5],
    "vno2": [1.0, 1.0, 1.0],
}
DASHBOARD_PATHS = (
    "/",
    "/regulator/",
    "/regulator/api/compliance",
    "/regulator/static/plotly.min.js",
    "/regulator/static/dashboard.js",
)


@dataclass
class Dashboard:
    """A served dashboard: the admin HTTPS base URL, the public HTTP URL and the dev PKI."""

    server: ServerProcess
    url: str
    http_url: str
    pki_dir: Path

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.server.admin_address.rsplit(":", 1)
        return host, int(port)


def realname(*args: str) -> None:
    result = subprocess.run(
        [realname_bin(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr


def activate(stub: vgrpc.VerificationServiceStub, seq: int, prefix: str) -> None:
    stub.ActivateCard(
        vpb.ActivateCardRequest(
            request_id=f"dashboard-{seq}",
            document=cpb.Document(
                type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(500 + seq)
            ),
            msisdn=msisdn(prefix, 5000 + seq),
            iccid=iccid(5000 + seq),
            card_type=cpb.CARD_TYPE_PERSONAL,
            channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id="shop-0042")),
        ),
        timeout=30,
    )


def load(server: ServerProcess, db: Database, pki_dir: Path) -> None:
    """The hand-computed compliance fixture, a snapshot, activations, a snapshot, two actions."""
    load_fixture(db)  # cmcc 6/7 verified, vno1 1/3, cmcc disputes 2/1, a warning for vno1
    desk = ComplianceDesk(db)
    assert desk.snapshot(SNAPSHOT_DAYS[0]) == len(OPERATORS)
    seq = 0
    for operator, prefix, count in (("cmcc", "139", 3), ("vno1", "1700", 2), ("cucc", "186", 1)):
        with channel(server.address, pki_dir, f"operator-{operator}") as ch:
            stub = vgrpc.VerificationServiceStub(ch)
            for _ in range(count):
                activate(stub, seq, prefix)
                seq += 1
    assert desk.snapshot(SNAPSHOT_DAYS[1]) == len(OPERATORS)
    enforcement = EnforcementDesk(db)
    enforcement.record("regulator", "cmcc", EnforcementKind.FINE, 20_000, "unverified sales")
    enforcement.record("regulator", "vno1", EnforcementKind.SUSPEND_ACTIVATION, 0, "low rate")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    realname("dev-init", "--data-dir", str(data_dir))
    http_address = f"127.0.0.1:{free_port()}"
    server = start_server_process(data_dir, extra_args=["--http-address", http_address], wait=False)
    db = Database(DatabaseConfig(sqlite_url(data_dir)))
    try:
        wait_serving(server, data_dir / "dev-pki", timeout=120)  # shared CI machines are slow
        load(server, db, data_dir / "dev-pki")
        yield Dashboard(
            server,
            f"https://{server.admin_address}",
            f"http://{http_address}",
            data_dir / "dev-pki",
        )
    finally:
        db.dispose()
        assert server.stop() == 0, server.log()


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def tls_context(pki_dir: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki_dir / "ca.pem"))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def client_files(pki_dir: Path, principal: str) -> tuple[Path, Path]:
    return pki_dir / "clients" / f"{principal}.pem", pki_dir / "clients" / f"{principal}.key"


def https_get(
    dash: Dashboard, path: str, cert: Path | None = None, key: Path | None = None
) -> tuple[int, bytes]:
    """GET over TLS presenting ``cert``/``key`` (or no certificate)."""
    host, port = dash.host_port
    conn = http.client.HTTPSConnection(
        host, port, context=tls_context(dash.pki_dir, cert, key), timeout=30
    )
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def figures(dash: Dashboard) -> dict[str, Any]:
    status, body = https_get(
        dash, "/regulator/api/compliance", *client_files(dash.pki_dir, "regulator")
    )
    assert status == 200, body
    data: dict[str, Any] = json.loads(body)
    return data


def test_the_json_behind_the_charts_has_the_loaded_figures(dashboard: Dashboard) -> None:
    data = figures(dashboard)
    assert data["day"] == TODAY.isoformat()
    assert [(t["rate"], t["due"]) for t in data["targets"]] == TARGETS
    ops = {o["operator"]: o for o in data["operators"]}
    assert list(ops) == OPERATORS
    assert (ops["cmcc"]["live_cards"], ops["cmcc"]["verified_cards"]) == (10, 9)
    assert (ops["vno1"]["live_cards"], ops["vno1"]["verified_cards"]) == (5, 3)
    assert (ops["cucc"]["live_cards"], ops["cucc"]["verified_cards"]) == (1, 1)
    days = [d.isoformat() for d in (*SNAPSHOT_DAYS, TODAY)]
    for operator, rates in RATES.items():
        history = ops[operator]["history"]
        assert [p["day"] for p in history] == days
        assert [p["rate"] for p in history] == pytest.approx(rates)
    # ceil(0.95 x 10) = 10 verified cards needed, 9 there; vno1 needs 5, has 3.
    assert [(t["met"], t["shortfall_cards"]) for t in ops["cmcc"]["targets"]] == [
        (False, 1),
        (False, 1),
    ]
    assert ops["vno1"]["targets"][0]["shortfall_cards"] == 2
    assert (ops["cmcc"]["disputes_opened"], ops["cmcc"]["disputes_resolved"]) == (2, 1)
    assert (ops["cmcc"]["fines"], ops["cmcc"]["fines_total_yuan"]) == (1, 20_000)
    assert (ops["vno1"]["warnings"], ops["vno1"]["suspensions"]) == (1, 1)
    assert ops["vno1"]["enforcement_actions"] == 2
    assert (ops["vno1"]["licence_status"], ops["cmcc"]["licence_status"]) == (
        "SUSPENDED",
        "ON_RECORD",
    )
    assert ops["ctcc"]["licence_status"] == "GOOD"


def drawn_scatter(page: Page) -> list[dict[str, Any]]:
    """Per trace of the rate chart: its legend name, marker centres and line vertices (px)."""
    traces: list[dict[str, Any]] = page.evaluate(
        """() => {
          const chart = document.getElementById("rate-chart");
          const centre = (el) => {
            const box = el.getBoundingClientRect();
            return [box.x + box.width / 2, box.y + box.height / 2];
          };
          const names = Array.from(chart.querySelectorAll(".legend .traces .legendtext"))
            .map((t) => t.textContent);
          return Array.from(chart.querySelectorAll(".scatterlayer .trace")).map((trace, i) => ({
            name: names[i],
            points: Array.from(trace.querySelectorAll(".points path.point")).map(centre),
            line: (trace.querySelector("path.js-line") || {getAttribute: () => ""})
              .getAttribute("d"),
            lineBox: trace.querySelector("path.js-line")
              ? trace.querySelector("path.js-line").getBoundingClientRect().toJSON() : null,
          }));
        }"""
    )
    return traces


def drawn_bars(page: Page, chart: str) -> list[list[dict[str, float]]]:
    """Per bar trace, the screen boxes of its bars with a height (zero bars draw nothing)."""
    bars: list[list[dict[str, float]]] = page.evaluate(
        """(chart) => Array.from(
          document.querySelectorAll(`#${chart} .barlayer .trace`)).map((trace) =>
            Array.from(trace.querySelectorAll(".point path"))
              .map((bar) => bar.getBoundingClientRect().toJSON())
              .filter((box) => box.height > 0.5))""",
        chart,
    )
    return bars


def x_tick_centres(page: Page, chart: str) -> dict[str, float]:
    ticks: dict[str, float] = page.evaluate(
        """(chart) => Object.fromEntries(
          Array.from(document.querySelectorAll(`#${chart} .xtick text`)).map((t) => {
            const box = t.getBoundingClientRect();
            return [t.textContent, box.x + box.width / 2];
          }))""",
        chart,
    )
    return ticks


def centre_x(box: dict[str, float]) -> float:
    return box["x"] + box["width"] / 2


def test_the_dashboard_draws_its_charts_in_a_real_browser(
    dashboard: Dashboard, browser: Browser
) -> None:
    cert, key = client_files(dashboard.pki_dir, "regulator")
    # The dev CA is not in chromium's trust store; the client certificate is what is tested.
    context = browser.new_context(
        client_certificates=[{"origin": dashboard.url, "certPath": str(cert), "keyPath": str(key)}],
        ignore_https_errors=True,
        viewport={"width": 1400, "height": 1000},
    )
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    # Generous: compiling 4.8 MB of plotly.js takes chromium 20 s on a loaded 2-core machine.
    page.goto(dashboard.url + "/regulator/", timeout=180_000)
    page.wait_for_selector("body[data-ready]", timeout=180_000)
    assert page.get_attribute("body", "data-ready") == "true", page.inner_text("#error")
    assert page.title() == "Real-name compliance dashboard"

    # Rate over time: one line per operator and one per target, as plotly drew them.
    traces = drawn_scatter(page)
    assert len(traces) == len(OPERATORS) + len(TARGETS)
    assert [t["name"] for t in traces] == [
        "cmcc (basic)", "ctcc (basic)", "cucc (basic)", "vno1 (virtual)", "vno2 (virtual)",
        "target 95.0 % by 2026-12-31", "target 100.0 % by 2027-06-30",
    ]  # fmt: skip
    operator_traces = dict(zip(OPERATORS, traces, strict=False))
    for operator in OPERATORS:
        assert len(operator_traces[operator]["points"]) == 3, operator
    # Screen y is linear in the rate: fix the scale from two points, check every other marker.
    top = operator_traces["ctcc"]["points"][0][1]  # rate 1.0
    low = operator_traces["vno1"]["points"][0][1]  # rate 1/3, the lowest
    per_unit = (low - top) / (1 - 1 / 3)
    assert per_unit > 100  # a real chart, not a collapsed one

    def y_of(rate: float) -> float:
        return top + per_unit * (1 - rate)

    for operator, rates in RATES.items():
        points = operator_traces[operator]["points"]
        assert [p[1] for p in points] == pytest.approx([y_of(r) for r in rates], abs=1.5)
        xs = [p[0] for p in points]
        assert xs == sorted(xs) and xs[0] < xs[1] < xs[2], operator  # days left to right
    for (rate, _due), trace in zip(TARGETS, traces[len(OPERATORS) :], strict=True):
        assert trace["points"] == []
        assert trace["line"].startswith("M")
        box = trace["lineBox"]
        assert box["height"] < 1.5  # a level line
        assert box["y"] == pytest.approx(y_of(rate), abs=1.5)

    # Violations: stacked warnings, fines and suspensions; the fine on cmcc, the rest on vno1.
    violations = drawn_bars(page, "violations-chart")
    assert [len(trace) for trace in violations] == [1, 1, 1]
    ticks = x_tick_centres(page, "violations-chart")
    warning, fine, suspension = (trace[0] for trace in violations)
    assert centre_x(fine) == pytest.approx(ticks["cmcc"], abs=2)
    assert centre_x(warning) == pytest.approx(ticks["vno1"], abs=2)
    assert centre_x(suspension) == pytest.approx(ticks["vno1"], abs=2)
    assert suspension["y"] + suspension["height"] == pytest.approx(warning["y"], abs=1.5)
    assert suspension["height"] == pytest.approx(warning["height"], abs=1)
    assert fine["height"] == pytest.approx(warning["height"], abs=1)

    # Disputes: opened and resolved side by side for cmcc, 2 against 1.
    disputes = drawn_bars(page, "disputes-chart")
    assert [len(trace) for trace in disputes] == [1, 1]
    opened, resolved = disputes[0][0], disputes[1][0]
    ticks = x_tick_centres(page, "disputes-chart")
    assert centre_x(opened) < ticks["cmcc"] < centre_x(resolved)
    assert opened["height"] == pytest.approx(2 * resolved["height"], abs=1.5)

    # The table of current figures.
    rows = page.locator("#figures tbody tr")
    assert rows.count() == len(OPERATORS)
    cmcc = page.locator("#figures tr[data-operator=cmcc] td").all_inner_texts()
    assert cmcc[:5] == ["cmcc", "basic", "10", "9", "90.0 %"]
    assert "1 short" in cmcc[5] and cmcc[6] == "2 / 1" and cmcc[-1] == "ON_RECORD"
    vno1 = page.locator("#figures tr[data-operator=vno1] td").all_inner_texts()
    assert vno1[4] == "60.0 %" and vno1[8] == "2" and vno1[-1] == "SUSPENDED"

    assert problems == []  # no script error, no content-security-policy violation
    assert requested and all(url.startswith(dashboard.url + "/") for url in requested)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    if os.environ.get("REALNAME_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(ARTIFACTS / "dashboard.png", REPO / "docs" / "dashboard.png")
    context.close()


@pytest.mark.parametrize(
    "principal", ["operator-cmcc", "operator-vno1", "marketplace-demo", "courier-demo"]
)
def test_other_principals_get_403(dashboard: Dashboard, principal: str) -> None:
    for path in DASHBOARD_PATHS:
        status, body = https_get(dashboard, path, *client_files(dashboard.pki_dir, principal))
        assert status == 403, (path, body)
        assert b"regulator" in body and b"cmcc" not in body


def test_the_regulator_gets_every_dashboard_file(dashboard: Dashboard) -> None:
    cert, key = client_files(dashboard.pki_dir, "regulator")
    status, page = https_get(dashboard, "/regulator/", cert, key)
    assert status == 200 and b'src="static/plotly.min.js"' in page
    status, plotly = https_get(dashboard, "/regulator/static/plotly.min.js", cert, key)
    assert status == 200 and b"plotly.js v" in plotly[:200] and len(plotly) > 1_000_000
    status, _ = https_get(dashboard, "/regulator/static/nothing.js", cert, key)
    assert status == 404


def test_without_a_trusted_client_certificate_there_is_no_answer(
    dashboard: Dashboard, tmp_path: Path
) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(dashboard, "/regulator/")
    # A certificate naming the regulator, but issued by another CA.
    rogue_ca = make_ca("rogue transport CA")
    rogue = make_client_cert(rogue_ca, "regulator")
    cert, key = tmp_path / "rogue.pem", tmp_path / "rogue.key"
    cert.write_bytes(cert_pem(rogue.cert))
    key.write_bytes(key_pem(rogue.key))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(dashboard, "/regulator/api/compliance", cert, key)


def test_plain_http_to_the_admin_port_fails_and_the_public_side_has_no_dashboard(
    dashboard: Dashboard,
) -> None:
    host, port = dashboard.host_port
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.request("GET", "/regulator/api/compliance")
            conn.getresponse()
    finally:
        conn.close()
    public = http.client.HTTPConnection(dashboard.http_url.removeprefix("http://"), timeout=30)
    try:
        public.request("GET", "/regulator/api/compliance")
        assert public.getresponse().status == 404
    finally:
        public.close()


def test_the_readme_curl_command_works(dashboard: Dashboard) -> None:
    data_dir = dashboard.pki_dir.parent
    result = run_block("dashboard", data_dir, admin=dashboard.server.admin_address, timeout=60)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert [o["operator"] for o in reply["operators"]] == OPERATORS
