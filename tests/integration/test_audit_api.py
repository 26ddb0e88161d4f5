"""The auditor API over real traffic: filters, pagination, the reasoned detail view, roles, exports, no clear IIN."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.audit.chain import keystore_resolver
from gateway.audit.query import CSV_COLUMNS
from gateway.audit.verify import verify_export
from gateway.canonical.iin import mask_iin
from gateway.config import ROOT
from gateway.samples import SampleCases
from security.keys import KeyStore
from tests.harness import Stack, wait_for

PASSPHRASE = "test-only passphrase"
MASKED = re.compile(r"^\d{4}\*{6}\d{2}$")
REASON = "complaint 2026/117 about the shelter referral"


def _cases() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Two KZ-35 cases (two people), and a shelter referral for the first."""
    samples = SampleCases(seed=83)
    cases = []
    for messages in iter(samples.case, None):
        if messages[0]["body"]["region"] == "KZ-35":
            cases.append(messages[0])
            if len(cases) == 2:
                break
    return cases, samples.shelter_referral(cases[0]["case_id"])


def _page(stack: Stack, **params: Any) -> dict[str, Any]:
    r = stack.auditor.get("/v1/audit/exchanges", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _all(stack: Stack, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = _page(stack, limit=500, **params, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def _seqs(items: list[dict[str, Any]]) -> list[int]:
    return [i["seq"] for i in items]


def _quiet(stack: Stack) -> list[dict[str, Any]]:
    """The log once traffic has settled: the same records on two reads a second apart."""
    last: list[int] = []

    def settled() -> list[dict[str, Any]] | None:
        nonlocal last
        items = _all(stack)
        seqs = _seqs(items)
        if seqs == last and {"received", "attempt", "reply", "refused"} <= {i["kind"] for i in items}:
            return items
        last = seqs
        time.sleep(1.0)
        return None

    return wait_for(settled, timeout=60, what="the exchange log to settle")


def _no_iin(text: str, iins: list[str], where: str) -> None:
    for iin in iins:
        assert iin not in text, f"a clear IIN in {where}"


@pytest.fixture
def audited(stack: Stack, tmp_path: Path) -> Stack:
    KeyStore(tmp_path / "keys", passphrase=PASSPHRASE).generate(channel="json")
    stack.start_gateway(keys_dir=tmp_path / "keys", key_passphrase=PASSPHRASE, audit_checkpoint_interval_s=0.2)
    return stack


def test_auditor_api_over_real_traffic(audited: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stack = audited
    # The gateway runs in this process: its loggers at the levels `configure_logging` gives them.
    caplog.set_level(logging.INFO)
    for name in ("gateway", "security", "adapters"):
        caplog.set_level(logging.DEBUG, logger=name)
    for name in ("httpx", "httpcore", "aiosqlite", "asyncpg", "sqlalchemy"):
        caplog.set_level(logging.WARNING, logger=name)

    (case_a, case_b), referral = _cases()
    iins = [case_a["body"]["person"]["iin"], case_b["body"]["person"]["iin"]]
    for message in (case_a, case_b, referral):
        assert stack.client.post("/v1/messages", json=message).status_code == 202
    wait_for(lambda: any(m["type"] == "referral.completed"
                         for m in httpx.get(f"{stack.probation.url}/_sim/received").json()), what="completion")
    assert httpx.post(f"{stack.gateway_url}/v1/messages", json=case_a).status_code == 401  # unsigned: refused
    everything = _quiet(stack)

    _pagination(stack, everything, iins)
    _filters(stack, everything, case_a, case_b)
    _iin_search(stack, case_a, case_b)
    _detail(stack, case_a, tmp_path)
    _roles(stack)
    _exports(stack, tmp_path, iins)

    for record in caplog.records:
        values = [record.getMessage(), record.exc_text or ""] + [str(v) for v in record.__dict__.values()]
        _no_iin(" ".join(values), iins, f"the log line {record.name}: {record.getMessage()[:200]}")


def _pagination(stack: Stack, everything: list[dict[str, Any]], iins: list[str]) -> None:
    seqs = _seqs(everything)
    assert seqs == list(range(1, len(seqs) + 1))  # the whole log, in order, from one page of 500
    walked, cursor, pages = [], None, 0
    while True:
        r = stack.auditor.get("/v1/audit/exchanges", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200
        _no_iin(r.text, iins, "a list page")
        page = r.json()
        assert 1 <= len(page["items"]) <= 3
        walked += _seqs(page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == seqs and pages == -(-len(seqs) // 3)  # each record exactly once, in seq order
    for item in everything:  # neither raw bytes nor the person's hash in a list item
        assert not {"request_raw", "response_raw", "iin_hash"} & set(item)
    assert any(i["request_kept"] for i in everything)
    r = stack.auditor.get("/v1/audit/exchanges", params={"cursor": "not-a-cursor"})
    assert r.status_code == 422 and r.json()["type"].endswith("invalid-audit-query")
    assert stack.auditor.get("/v1/audit/exchanges", params={"limit": 501}).status_code == 422


def _filters(stack: Stack, everything: list[dict[str, Any]], case_a: dict[str, Any], case_b: dict[str, Any]) -> None:
    def check(params: dict[str, Any], expected: list[dict[str, Any]]) -> list[dict[str, Any]]:
        got = _all(stack, **params)
        assert _seqs(got) == _seqs(expected), params
        assert expected, f"{params} selects nothing in this traffic: the check would prove nothing"
        return got

    by_case = check({"case_id": case_a["case_id"]}, [i for i in everything if i["case_id"] == case_a["case_id"]])
    assert {"received", "attempt"} <= {i["kind"] for i in by_case}
    assert len(by_case) < len(everything)
    check({"case_id": case_b["case_id"]}, [i for i in everything if i["case_id"] == case_b["case_id"]])
    mio = [i for i in everything if i["peer"] in ("mio", "mio-kz-35") or i["client"] == "counterpart:mio-kz-35"]
    assert {"attempt", "received"} <= {i["kind"] for i in mio}  # the referral out, the callback in
    check({"peer": "mio"}, mio)
    check({"peer": "mio-kz-35"}, mio)
    check({"peer": "probation"}, [i for i in everything if i["peer"] == "probation"])
    check({"kind": "attempt"}, [i for i in everything if i["kind"] == "attempt"])
    refused = check({"status_code": 401}, [i for i in everything if i["status_code"] == 401])
    assert [i["kind"] for i in refused] == ["refused"]
    check({"result": "refused"}, [i for i in everything if i["result"] == "refused"])
    check({"kind": "attempt", "peer": "mio"}, [i for i in mio if i["kind"] == "attempt"])

    times = sorted({i["at"] for i in everything}, key=datetime.fromisoformat)
    middle = times[len(times) // 2]
    at = datetime.fromisoformat(middle)
    early = check({"until": middle}, [i for i in everything if datetime.fromisoformat(i["at"]) < at])
    late = check({"since": middle}, [i for i in everything if datetime.fromisoformat(i["at"]) >= at])
    assert sorted(_seqs(early) + _seqs(late)) == _seqs(everything)
    check({"since": times[1], "until": times[-1]},
          [i for i in everything if datetime.fromisoformat(times[1]) <= datetime.fromisoformat(i["at"])
           < datetime.fromisoformat(times[-1])])
    r = stack.auditor.get("/v1/audit/exchanges", params={"since": "2026-01-01T00:00:00"})  # no offset
    assert r.status_code == 422 and "offset" in r.json()["detail"]


def _iin_search(stack: Stack, case_a: dict[str, Any], case_b: dict[str, Any]) -> None:
    iin_a, iin_b = case_a["body"]["person"]["iin"], case_b["body"]["person"]["iin"]
    before = _seqs(_all(stack))
    # The person's records: the registration naming them and everything of their case (the referral's hops).
    assert _seqs(_all(stack, iin=iin_a)) == _seqs(_all(stack, case_id=case_a["case_id"]))
    assert _seqs(_all(stack, iin=iin_b)) == _seqs(_all(stack, case_id=case_b["case_id"]))
    assert _all(stack, iin=iin_a, kind="attempt", peer="mio")  # filters combine with the person
    searches = _all(stack, kind="audit-search")
    assert len(searches) == 3 and {s["client"] for s in searches} == {"auditor-1"}
    assert min(_seqs(searches)) > before[-1]
    logged = json.loads(searches[0]["detail"]["error"])
    assert logged["search"] == "iin" and logged["found"] >= 2
    assert iin_a not in json.dumps(searches) and iin_b not in json.dumps(searches)
    # The search was logged with the person's keyed hash: searching the person again finds it.
    again = _seqs(_all(stack, iin=iin_a))
    assert searches[0]["seq"] in again and searches[1]["seq"] not in again
    r = stack.auditor.get("/v1/audit/exchanges", params={"iin": "12345"})
    assert r.status_code == 422 and "12345" not in r.text
    # The same search with the IIN in the body (kept out of URLs and access logs): the same records, and
    # the earlier searches of this person, which were logged with the person's keyed hash.
    posted = stack.auditor.post("/v1/audit/exchanges/search", json={"iin": iin_a, "limit": 500})
    assert posted.status_code == 200, posted.text
    found = posted.json()["items"]
    assert set(again) <= set(_seqs(found)) and {i["kind"] for i in found if i["seq"] not in again} == {"audit-search"}
    assert iin_a not in posted.text
    r = stack.auditor.post("/v1/audit/exchanges/search", json={"iin": "12345"})
    assert r.status_code == 422 and "12345" not in r.text
    assert stack.admin.post("/v1/audit/exchanges/search", json={"iin": iin_a}).status_code == 403


def _detail(stack: Stack, case_a: dict[str, Any], tmp_path: Path) -> None:
    iin = case_a["body"]["person"]["iin"]
    received = next(i for i in _all(stack, case_id=case_a["case_id"], kind="received")
                    if i["message_id"] == case_a["message_id"])
    seq = received["seq"]

    def covering_checkpoint() -> dict[str, Any] | None:
        r = stack.auditor.get(f"/v1/audit/exchanges/{seq}", params={"reason": REASON})
        assert r.status_code == 200, r.text
        return r.json() if r.json()["checkpoint"] else None

    detail = wait_for(covering_checkpoint, what="a signed checkpoint covering the record")
    assert detail["request"]["kept"] and detail["request"]["encoding"] == "utf-8"
    assert iin in detail["request"]["content"]  # the auditor, with a reason, sees the clear wire message
    assert json.loads(detail["request"]["content"])["message_id"] == case_a["message_id"]
    assert detail["request"]["hash_matches"] is True and detail["response"]["kept"] is False
    assert detail["chain"]["hash_matches"] is True and detail["chain"]["linked"] is True
    assert detail["signature"] == {"verified": True, "signer": stack.system_key.kid}
    assert re.fullmatch(r"[0-9a-f]{64}", detail["iin_hash"])
    cp = detail["checkpoint"]
    keys = KeyStore(tmp_path / "keys", passphrase=PASSPHRASE)
    assert cp["size"] >= seq and cp["signature_valid"] is True and cp["kid"] == keys.active_info(channel="json").kid
    assert detail["record"]["seq"] == seq and detail["record"]["case_id"] == case_a["case_id"]

    attempt = _all(stack, case_id=case_a["case_id"], kind="attempt", peer="mio")[0]
    sent = stack.auditor.get(f"/v1/audit/exchanges/{attempt['seq']}", params={"reason": REASON}).json()
    assert sent["request"]["kept"] and sent["response"]["kept"] and sent["response"]["hash_matches"] is True
    assert sent["chain"] == {**sent["chain"], "hash_matches": True, "linked": True}
    assert sent["signature"]["verified"] is True  # МИО's response signature, checked against its pinned key

    reads = _all(stack, kind="audit-read")
    assert reads and {r["client"] for r in reads} == {"auditor-1"} and {r["peer"] for r in reads} == {"auditor-1"}
    assert reads[-2]["case_id"] == case_a["case_id"]
    assert json.loads(reads[-2]["detail"]["error"]) == {"read_seq": seq, "reason": REASON}
    assert json.loads(reads[-1]["detail"]["error"]) == {"read_seq": attempt["seq"], "reason": REASON}

    for params in ({}, {"reason": ""}, {"reason": "   "}):
        r = stack.auditor.get(f"/v1/audit/exchanges/{seq}", params=params)
        assert r.status_code == 422 and r.json()["type"].endswith("reason-required"), params
        assert iin not in r.text
    assert stack.auditor.get("/v1/audit/exchanges/999999", params={"reason": REASON}).status_code == 404
    assert _seqs(_all(stack, kind="audit-read")) == _seqs(reads)  # refused reads read nothing, log nothing

    # A reason quoting the IIN is kept with the IIN masked: the log and its exports hold no clear IIN.
    assert stack.auditor.get(f"/v1/audit/exchanges/{seq}", params={"reason": f"asked by {iin}"}).status_code == 200
    assert json.loads(_all(stack, kind="audit-read")[-1]["detail"]["error"])["reason"] == f"asked by {mask_iin(iin)}"


def _roles(stack: Stack) -> None:
    paths = ["/v1/audit/exchanges", "/v1/audit/exchanges/1?reason=x", "/v1/audit/export?format=events",
             "/v1/audit/export?format=csv", "/v1/audit/export?format=chain"]
    before = len(_all(stack, kind="refused"))
    for path in paths:
        for who, client in (("admin", stack.admin), ("system", stack.client)):
            r = client.get(path)
            assert r.status_code == 403, (who, path, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        assert httpx.get(stack.gateway_url + path).status_code == 401
    refused = _all(stack, kind="refused")[before:]
    assert {(r["client"], r["status_code"]) for r in refused if r["status_code"] == 403} == {
        ("admin-1", 403), ("probation-is", 403)}
    # An auditor changes nothing: submitting is the Probation IS's, configuration the admin's.
    assert stack.auditor.post("/v1/messages", json={"type": "case.registered"}).status_code == 403
    if any(getattr(route, "path", "") == "/v1/admin/counterparts" for route in stack.gateway.app.routes):
        assert stack.auditor.get("/v1/admin/counterparts").status_code == 403
        assert stack.auditor.put("/v1/admin/counterparts/mio-kz-35", json={}).status_code == 403


def _exports(stack: Stack, tmp_path: Path, iins: list[str]) -> None:
    r = stack.auditor.get("/v1/audit/export", params={"format": "events"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    _no_iin(r.text, iins, "the events export")
    events = [json.loads(line) for line in r.text.splitlines()]
    registered = [e for e in events if e["type"] == "case.registered"]
    assert len(registered) == 2
    assert [e["body"]["person"]["iin"] for e in registered] == [mask_iin(i) for i in iins]
    assert all(MASKED.match(e["body"]["person"]["iin"]) for e in registered)

    r = stack.auditor.get("/v1/audit/export", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    _no_iin(r.text, iins, "the CSV export")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == list(CSV_COLUMNS) and "iin_hash" not in rows[0] and "request_raw" not in rows[0]
    assert [int(row["seq"]) for row in rows] == list(range(1, len(rows) + 1))
    assert rows[-1]["kind"] == "audit-export" and rows[-1]["client"] == "auditor-1"  # the export logs itself
    assert json.loads(json.loads(rows[-1]["detail"])["error"]) == {"export": "csv", "reason": None}
    listed = _all(stack)[:len(rows)]
    assert [(row["kind"], row["hash"], row["request_kept"] == "true") for row in rows] == [
        (i["kind"], i["hash"], i["request_kept"]) for i in listed]

    out = tmp_path / "cli.csv"
    result = subprocess.run([sys.executable, "-m", "gateway", "audit", "export", "--format", "csv", "-o", str(out)],
                            env=stack.env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    cli = out.read_bytes()
    assert cli.startswith(r.content)  # the same writer; the CLI may see records logged since
    assert f"exported {len(list(csv.DictReader(io.StringIO(cli.decode()))))} records" in result.stderr
    result = subprocess.run([sys.executable, "-m", "gateway", "audit", "export", "--format", "csv",
                             "--until", "2026-01-01T00:00:00+00:00"], env=stack.env(), cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "events format only" in result.stderr

    with stack.auditor.stream("GET", "/v1/audit/export", params={"format": "chain"}) as streamed:
        assert streamed.status_code == 200
        chain = tmp_path / "chain.jsonl"
        with chain.open("wb") as fh:
            for chunk in streamed.iter_bytes():
                fh.write(chunk)
    report = verify_export(chain, public_key=keystore_resolver(KeyStore(tmp_path / "keys", passphrase=PASSPHRASE)))
    assert report.ok and report.records >= len(rows) and report.checkpoints >= 1 and report.signatures_checked
    r = stack.auditor.get("/v1/audit/export", params={"format": "chain", "until": "2026-01-01T00:00:00Z"})
    assert r.status_code == 422  # a slice of the chain cannot be verified alone
    r = stack.auditor.get("/v1/audit/export", params={"format": "csv", "until": "2000-01-01T00:00:00Z"})
    assert r.status_code == 200 and list(csv.DictReader(io.StringIO(r.text))) == []
