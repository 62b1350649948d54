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
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

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
# Real-name rate of each operator on each snapshot day and now (see load()); None: no cards.
RATES: dict[str, list[float | None]] = {
    "cmcc": [6 / 7, 9 / 10, 9 / 10],
    "ctcc": [None, None, None],
    "cucc": [None, 1.0, 1.0],
    "vno1": [1 / 3, 3 / 5, 3 / 5],
    "vno2": [None, None, None],
}
# The fixture's figures plus the activations (each a new Beijing document, one card):
# documents by cards held (1..5, 6+), live cards by stage, and cards by province of the document.
DOCUMENTS_BY_CARDS = {
    "cmcc": [4, 0, 1, 0, 1, 1],
    "ctcc": [0] * 6,
    "cucc": [1, 0, 0, 0, 0, 0],
    "vno1": [3, 0, 0, 0, 0, 0],
    "vno2": [0] * 6,
}
STAGES = ["FULL", "OUTGOING_BARRED", "ALL_BARRED", "SUSPENDED", "PENDING_DELIVERY"]
CARDS_BY_STAGE = {  # per stage, the operators in OPERATORS order
    "FULL": [7, 0, 1, 3, 0],
    "OUTGOING_BARRED": [1, 0, 0, 0, 0],
    "ALL_BARRED": [0, 0, 0, 2, 0],
    "SUSPENDED": [1, 0, 0, 0, 0],
    "PENDING_DELIVERY": [1, 0, 0, 0, 0],
}
PROVINCES = [("11", "Beijing", 11, 11, 1.0), ("35", "Fujian", 1, 1, 1.0),
             ("other", "other documents", 4, 1, 0.25)]  # fmt: skip
FINES_YUAN = [20_000, 0, 0, 0, 0]


def same_rates(got: list[float | None], want: list[float | None]) -> bool:
    return len(got) == len(want) and all(
        g is None if w is None else g is not None and abs(g - w) < 1e-9
        for g, w in zip(got, want, strict=True)
    )


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
    # A CA revocation (as `enforce record --kind warning --revoke-ca` records it): its own kind.
    enforcement.record(
        "regulator", "vno2", EnforcementKind.WARNING, 0, "licence withdrawn", ca_revoked=True
    )


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
        assert same_rates([p["rate"] for p in history], rates), operator
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
    # An operator without cards has no rate (not 100 %) and meets no target: there is no data.
    for empty in ("ctcc", "vno2"):
        assert ops[empty]["real_name_rate"] is None
        assert [t["met"] for t in ops[empty]["targets"]] == [None, None]
    # A CA revocation is its own kind, not a warning.
    assert (ops["vno2"]["ca_revocations"], ops["vno2"]["warnings"]) == (1, 0)
    assert ops["vno2"]["licence_status"] == "CA_REVOKED"
    assert (data["time_zone"], data["utc_offset_minutes"]) == ("Asia/Shanghai", 480)
    assert data["stages"] == STAGES
    for i, operator in enumerate(OPERATORS):
        assert ops[operator]["documents_by_cards"] == DOCUMENTS_BY_CARDS[operator]
        assert ops[operator]["fines_total_yuan"] == FINES_YUAN[i]
        assert {k: v[i] for k, v in CARDS_BY_STAGE.items()} == ops[operator]["cards_by_stage"]
    assert [
        (p["province"], p["name"], p["live_cards"], p["verified_cards"], p["real_name_rate"])
        for p in data["provinces"]
    ] == PROVINCES


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


def plotted(page: Page, chart: str) -> list[dict[str, Any]]:
    """The traces plotly was handed for a chart (names, x and y), as the page holds them."""
    traces: list[dict[str, Any]] = page.evaluate(
        """(chart) => document.getElementById(chart).data.map((t) => ({
          name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))""",
        chart,
    )
    return traces


def legend(page: Page, chart: str) -> list[str]:
    names: list[str] = page.evaluate(
        """(chart) => Array.from(
          document.querySelectorAll(`#${chart} .legend .traces .legendtext`))
          .map((t) => t.textContent)""",
        chart,
    )
    return names


def centre_x(box: dict[str, float]) -> float:
    return box["x"] + box["width"] / 2


def regulator_context(browser: Browser, dashboard: Dashboard) -> BrowserContext:
    cert, key = client_files(dashboard.pki_dir, "regulator")
    # The dev CA is not in chromium's trust store; the client certificate is what is tested.
    return browser.new_context(
        client_certificates=[{"origin": dashboard.url, "certPath": str(cert), "keyPath": str(key)}],
        ignore_https_errors=True,
        viewport={"width": 1400, "height": 1000},
    )


def test_the_header_and_the_chart_read_one_calendar_across_utc_midnight(
    dashboard: Dashboard, browser: Browser
) -> None:
    """18:30 UTC on 2 December is 02:30 on 3 December in China: header and chart say the 3rd."""
    data = figures(dashboard)
    data.update(computed_at="2026-12-02T18:30:00+00:00", day="2026-12-03", first_day="2026-12-01")
    for op in data["operators"]:
        op["history"] = [{"day": "2026-12-01", "rate": 0.5}, {"day": "2026-12-03", "rate": 0.9}]
    context = regulator_context(browser, dashboard)
    page = context.new_page()
    page.route(
        "**/regulator/api/compliance",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(data)
        ),
    )
    page.goto(dashboard.url + "/regulator/", timeout=180_000)
    page.wait_for_selector("body[data-ready]", timeout=180_000)
    assert page.get_attribute("body", "data-ready") == "true", page.inner_text("#error")
    assert page.inner_text("#computed-at") == "2026-12-03 02:30"
    assert page.inner_text("#time-zone").startswith("China Standard Time")
    assert plotted(page, "rate-chart")[0]["x"][-1] == "2026-12-03"
    assert "2026-12-03" in x_tick_centres(page, "rate-chart")
    context.close()


def test_the_dashboard_draws_its_charts_in_a_real_browser(
    dashboard: Dashboard, browser: Browser
) -> None:
    context = regulator_context(browser, dashboard)
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
    for operator, rates in RATES.items():  # no marker on a day without cards
        drawn = len(operator_traces[operator]["points"])
        assert drawn == sum(r is not None for r in rates), operator
    # Screen y is linear in the rate: fix the scale from two points, check every other marker.
    top = operator_traces["cucc"]["points"][0][1]  # rate 1.0
    low = operator_traces["vno1"]["points"][0][1]  # rate 1/3, the lowest
    per_unit = (low - top) / (1 - 1 / 3)
    assert per_unit > 100  # a real chart, not a collapsed one

    def y_of(rate: float) -> float:
        return top + per_unit * (1 - rate)

    for operator, rates in RATES.items():
        points = operator_traces[operator]["points"]
        known = [r for r in rates if r is not None]
        assert [p[1] for p in points] == pytest.approx([y_of(r) for r in known], abs=1.5)
        xs = [p[0] for p in points]
        assert xs == sorted(set(xs)), operator  # days left to right
    for (rate, _due), trace in zip(TARGETS, traces[len(OPERATORS) :], strict=True):
        assert trace["points"] == []
        assert trace["line"].startswith("M")
        box = trace["lineBox"]
        assert box["height"] < 1.5  # a level line
        assert box["y"] == pytest.approx(y_of(rate), abs=1.5)

    # Violations: stacked warnings, fines, suspensions and CA revocations; the fine on cmcc, the
    # CA revocation (recorded as a warning) on vno2 under its own kind, the rest on vno1.
    violations = drawn_bars(page, "violations-chart")
    assert [len(trace) for trace in violations] == [1, 1, 1, 1]
    assert legend(page, "violations-chart") == [
        "warnings", "fines", "activation suspensions", "CA revocations",
    ]  # fmt: skip
    ticks = x_tick_centres(page, "violations-chart")
    warning, fine, suspension, revocation = (trace[0] for trace in violations)
    assert centre_x(revocation) == pytest.approx(ticks["vno2"], abs=2)
    assert revocation["height"] == pytest.approx(warning["height"], abs=1)
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

    # The table of current figures; an operator without cards has no data, not 100 % and met.
    rows = page.locator("#figures tbody tr")
    assert rows.count() == len(OPERATORS)
    cmcc = page.locator("#figures tr[data-operator=cmcc] td").all_inner_texts()
    assert cmcc[:5] == ["cmcc", "basic", "10", "9", "90.0 %"]
    assert "1 short" in cmcc[5] and cmcc[6] == "2 / 1" and cmcc[-1] == "ON_RECORD"
    assert cmcc[-2] == "20,000"  # fines imposed, yuan
    vno1 = page.locator("#figures tr[data-operator=vno1] td").all_inner_texts()
    assert vno1[4] == "60.0 %" and vno1[8] == "2" and vno1[-1] == "SUSPENDED"
    for empty in ("ctcc", "vno2"):
        row = page.locator(f"#figures tr[data-operator={empty}] td").all_inner_texts()
        assert row[2:6] == ["0", "0", "no data", "no data"], empty
    vno2 = page.locator("#figures tr[data-operator=vno2] td").all_inner_texts()
    assert vno2[-1] == "CA_REVOKED"

    # The header's time and the chart's days are one calendar: China Standard Time.
    data = figures(dashboard)
    header = page.inner_text("#computed-at")
    assert header.split()[0] == data["day"] == plotted(page, "rate-chart")[0]["x"][-1]
    assert "China Standard Time" in page.inner_text("header")

    # What a supervisor asks next: documents by cards held, cards by stage, fines, provinces.
    documents = plotted(page, "documents-chart")
    assert [t["name"] for t in documents] == OPERATORS
    assert [t["y"] for t in documents] == [DOCUMENTS_BY_CARDS[op] for op in OPERATORS]
    assert [len(t) for t in drawn_bars(page, "documents-chart")] == [4, 0, 1, 1, 0]
    cmcc_bars = drawn_bars(page, "documents-chart")[0]  # 1, 3, 5 and 6+ cards: 4, 1, 1, 1
    assert cmcc_bars[0]["height"] == pytest.approx(4 * cmcc_bars[1]["height"], abs=1.5)
    stages = plotted(page, "stages-chart")
    assert [t["name"] for t in stages] == STAGES
    assert [t["y"] for t in stages] == [CARDS_BY_STAGE[stage] for stage in STAGES]
    assert [len(t) for t in drawn_bars(page, "stages-chart")] == [3, 1, 1, 1, 1]
    fines = plotted(page, "fines-chart")
    assert [t["y"] for t in fines] == [FINES_YUAN]
    (fine_bar,) = drawn_bars(page, "fines-chart")[0]
    assert centre_x(fine_bar) == pytest.approx(x_tick_centres(page, "fines-chart")["cmcc"], abs=2)
    provinces = plotted(page, "provinces-chart")
    assert provinces[0]["x"] == [name for _, name, *_ in PROVINCES]
    assert provinces[0]["y"] == [rate for *_, rate in PROVINCES]
    province_rows = [
        page.locator(f"#provinces tr[data-province='{code}'] td").all_inner_texts()
        for code, *_ in PROVINCES
    ]
    assert province_rows == [
        ["Beijing (11)", "11", "11", "100.0 %"],
        ["Fujian (35)", "1", "1", "100.0 %"],
        ["other documents", "4", "1", "25.0 %"],
    ]

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
