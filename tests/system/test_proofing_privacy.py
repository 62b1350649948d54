"""After an attested run through a real server and the CLI, no clear name or number is stored.

The run drives `realname serve` (a subprocess, its log captured) and, in-process through the
console script's parser, `realname proofing …`, `realname reader …` and `realname report
readers`; then it scans every row of every table (both
backends), the SQLite files byte for byte, the server log and every command's output.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy.engine import make_url

from services.cli.main import build_parser
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from tests.support.faults import make_data_dir
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.pki import channel
from tests.support.rpc import rich_error
from tests.support.server import start_server_process

NAME = "林晓明"
LATIN = "Lin Xiaoming"
WRONG = "Zhou Xiaohong"
DOCS = [resident_id(n, region="350102") for n in (501, 502)]


class Run:
    """Runs `realname` commands in-process (the console script's parser), keeping their output."""

    def __init__(self) -> None:
        self.output: list[str] = []

    def __call__(self, *args: str, ok: bool = True) -> str:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            parsed = build_parser().parse_args(list(args))
            code = int(parsed.func(parsed))
        self.output.extend((out.getvalue(), err.getvalue()))
        assert (code == 0) == ok, (args, code, err.getvalue())
        return out.getvalue()


def _activate(
    stub: vgrpc.VerificationServiceStub, rid: str, number: str, seq: int, name: str, att: str
) -> vpb.ActivateCardResponse:
    attestation = json.loads(att)
    request = {
        "request_id": rid,
        "document": {"type": "DOCUMENT_TYPE_RESIDENT_ID_CARD", "number": number},
        "msisdn": msisdn("138", seq),
        "iccid": iccid(seq),
        "card_type": "CARD_TYPE_PERSONAL",
        "channel": {"agent": {"agent_id": "shop-0042"}},
        "holder_name": name,
        "attestation": attestation,
    }
    message = json_format.ParseDict(request, vpb.ActivateCardRequest())
    return stub.ActivateCard(message, timeout=10)


def _needles() -> list[bytes]:
    texts = [NAME, LATIN, LATIN.lower(), LATIN.upper(), WRONG, *DOCS]
    return [t.encode() for t in texts] + [t.encode("utf-16-le") for t in (NAME, *DOCS)]


def _dump(database_url: str) -> bytes:
    engine = sa.create_engine(database_url)
    out: list[str] = []
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                for row in conn.execute(sa.select(table)):
                    out.append(repr(tuple(row)))
    finally:
        engine.dispose()
    return "\n".join(out).encode()


def test_no_clear_name_or_number_after_a_run(
    tmp_path: Path,
    pki_dir: Path,
    pepper_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REALNAME_DATABASE_URL", database_url)
    data_dir = make_data_dir(tmp_path, pki_dir, pepper_path)
    run = Run()
    dd = ("--data-dir", str(data_dir))
    run("dev-init", *dd)  # the holder-name key file; everything else already there
    assert (data_dir / "holder-name.keys").stat().st_mode & 0o077 == 0

    records = tmp_path / "records.json"
    records.write_text(
        json.dumps(
            {
                "format": "realname-identity-records/v1",
                "source": "privacy-test",
                "records": [
                    {"document_type": "RESIDENT_ID_CARD", "number": n, "name": NAME,
                     "status": "VALID", "valid_until": "2040-01-01"}
                    for n in DOCS
                ],
            },
            ensure_ascii=False,
        )
    )  # fmt: skip
    loader = tmp_path / "loader.key"
    run(
        "proofing",
        "loader-keygen",
        "--key",
        str(loader),
        "--public",
        str(data_dir / "proofing-loader.pem"),
    )
    run("proofing", "sign", str(records), "--key", str(loader))
    forged = tmp_path / "forged.sig"
    forged.write_text("AAAA" * 22 + "\n")
    run("proofing", "load", *dd, str(records), "--signature", str(forged), ok=False)
    assert "loaded 2 identity records" in run(
        "proofing", "load", *dd, str(records), "--signature", f"{records}.sig"
    )

    server = start_server_process(data_dir, database_url=database_url)
    try:
        client = (*dd, "--address", server.address)
        cmcc = (*client, "--as", "operator-cmcc")
        # Proofing can be turned off and on again from the CLI.
        run("proofing", "policy", *cmcc, "--enable", "--attestation", "--identity-check")
        assert json.loads(run("proofing", "policy", *cmcc, "--disable"))["enabled"] is False
        assert json.loads(run("proofing", "policy", *cmcc))["enabled"] is False
        enabled = run("proofing", "policy", *cmcc, "--enable", "--attestation", "--identity-check")
        assert json.loads(enabled)["enabled"] is True
        key = tmp_path / "reader.key"
        run("reader", "keygen", "--key", str(key))
        run("reader", "register", *cmcc, "--key", str(key), "--serial", "RDR-P1",
            "--agent", "shop-0042", "--latitude", "26.08", "--longitude", "119.30",
            "--label", "Fuzhou shop")  # fmt: skip
        sim = ("reader", "simulate", "--key", str(key), "--serial", "RDR-P1", *cmcc)
        # The numbers come from files, never the command line.
        number_files = []
        for index, number in enumerate(DOCS[:2]):
            number_files.append(tmp_path / f"document-{index}.txt")
            number_files[-1].write_text(number + "\n")
        with channel(server.address, data_dir / "dev-pki", "operator-cmcc") as ch:
            stub = vgrpc.VerificationServiceStub(ch)
            good = run(*sim, "--document-number-file", str(number_files[0]), "--name", NAME)
            card = _activate(stub, "p-1", DOCS[0], 9501, NAME, good).card
            assert card.state == vpb.CARD_STATE_ACTIVE
            for broken in ("signature", "nonce", "stale", "document", "face"):
                att = run(
                    *sim, "--document-number-file", str(number_files[1]), "--name", NAME,
                    "--break", broken,
                )  # fmt: skip
                with pytest.raises(grpc.RpcError) as info:
                    _activate(stub, f"p-{broken}", DOCS[1], 9502, NAME, att)
                assert rich_error(info.value).code == grpc.StatusCode.FAILED_PRECONDITION
            att = run(*sim, "--document-number-file", str(number_files[1]), "--name", WRONG)
            with pytest.raises(grpc.RpcError) as info:
                _activate(stub, "p-wrong", DOCS[1], 9503, WRONG, att)
            assert rich_error(info.value).reason == "IDENTITY_MISMATCH"
        blocked = run("proofing", "block", *client, "--document-number-file", str(number_files[0]),
                      "--reason", "stolen", "--reference", "PSB-1")  # fmt: skip
        assert json.loads(blocked)["cards_flagged"] == 1
        report = run("report", "readers", *dd)
        # Forged signatures are not recorded; the wrong name's attestation itself was sound.
        row = json.loads(report.splitlines()[0])
        assert (row["reader"], row["attestations"], row["refused"]) == ("RDR-P1", 6, 4)
    finally:
        assert server.stop() == 0

    haystacks = {
        "server log": server.log().encode(),
        "command output": "\n".join(run.output).encode(),
        "database rows": _dump(database_url),
    }
    if database_url.startswith("sqlite"):
        database = make_url(database_url).database
        assert database is not None
        for path in sorted(Path(database).parent.glob("realname.db*")):
            haystacks[path.name] = path.read_bytes()
    leaks = [
        (where, needle)
        for where, hay in haystacks.items()
        for needle in _needles()
        if needle in hay
    ]
    assert leaks == []
    # The scan can fail: it finds the clear values where they are (the signed import file).
    assert all(n in records.read_bytes() for n in (NAME.encode(), DOCS[0].encode()))
    assert any(name.startswith("realname.db") for name in haystacks) == (
        database_url.startswith("sqlite")
    )
