"""`gateway sla report` on a small events file, as JSON and as CSV, and its errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli.main import app
from tests.sla.factory import lines, msg, t

CASE = "KRG-2026-000123"


@pytest.fixture
def events_file(tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    m = {
        "reg": msg("case.registered", CASE, t("2026-03-02T09:15:00+05:00"), region="KZ-35"),
        "plan": msg("plan.approved", CASE, t("2026-03-04T10:00:00+05:00"), plan_id="P-1"),
        "risk": msg("risk.detected", CASE, t("2026-03-02T10:00:00+05:00"), risk_id="R-1", domain="housing",
                    level="R3", trigger="homeless"),
        "req": msg("referral.requested", CASE, t("2026-03-02T10:05:00+05:00"), referral_id="F-1",
                   kind="shelter.placement", risk_id="R-1"),
        "done": msg("referral.completed", CASE, t("2026-03-05T10:00:00+05:00"), referral_id="F-1"),
    }
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines(m.values())) + b"\n")  # a trailing blank line is fine
    return path, m


def _run(*args: str) -> object:
    return CliRunner().invoke(app, ["sla", "report", *args])


def test_json_report(events_file: tuple[Path, dict[str, dict]]) -> None:
    path, m = events_file
    result = _run("--events", str(path), "--as-of", "2026-03-10T00:00:00+05:00")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"as_of", "legs", "summary", "kpi"}
    assert doc["as_of"] == "2026-03-09T19:00:00Z"
    by_rule = {leg["rule"]: leg for leg in doc["legs"]}
    assert by_rule["ipr"] == {
        "case_id": CASE, "rule": "ipr", "start_message_id": m["reg"]["message_id"],
        "start_at": "2026-03-02T04:15:00Z", "deadline_at": "2026-03-05T18:59:59.999Z",
        "stop_message_id": m["plan"]["message_id"], "stop_at": "2026-03-04T05:00:00Z", "status": "met",
        "elapsed_seconds": 2 * 86400 + 45 * 60.0}
    assert by_rule["housing.placement"]["status"] == "breached"  # 72 h for a 48 h limit
    assert by_rule["medical.routing"]["status"] == "open"
    assert doc["summary"]["housing.placement"] == {"met": 0, "breached": 1, "open": 0, "overdue": 0,
                                                   "compliance": 0.0}
    assert doc["kpi"]["compliance_by_region"]["KZ-35"]["met"] == 1


def test_csv_report(events_file: tuple[Path, dict[str, dict]]) -> None:
    path, m = events_file
    result = _run("--events", str(path), "--as-of", "2026-03-10T00:00:00Z", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["case_id", "rule", "start_message_id", "start_at", "deadline_at", "stop_message_id",
                             "stop_at", "status", "elapsed_seconds"]
    assert [r["rule"] for r in rows] == ["ipr", "medical.routing", "critical.documents", "critical.income",
                                         "housing.placement"]
    open_leg = rows[1]
    assert (open_leg["status"], open_leg["stop_message_id"], open_leg["stop_at"]) == ("open", "", "")
    assert rows[4]["stop_message_id"] == m["done"]["message_id"] and rows[4]["elapsed_seconds"] == "259200.0"


@pytest.mark.parametrize(("line", "message"), [
    (b"{not json", "line 3: not valid JSON"),
    (b'{"message_id": "x", "type": "risk.found", "case_id": "C"}', "line 3: type: unknown message type 'risk.found'"),
    ((b'{"message_id": "x", "type": "plan.approved", "case_id": "C", "occurred_at": "2026-03-02T09:15:00",'
     b' "received_at": "2026-03-02T04:15:01Z", "body": {"plan_id": "P"}}'), "line 3: occurred_at: needs an explicit offset"),
    ((b'{"message_id": "x", "type": "plan.approved", "case_id": "C", "occurred_at": "2026-03-02T09:15:00Z",'
     b' "body": {"plan_id": "P"}}'), "line 3: received_at: missing or not a string"),
    ((b'{"message_id": "x", "type": "risk.detected", "case_id": "C", "occurred_at": "2026-03-02T09:15:00Z",'
     b' "received_at": "2026-03-02T09:15:01Z", "body": {"risk_id": "R", "level": "R3"}}'),
     "line 3: body.domain: missing or not a string"),
])
def test_a_bad_line_is_named_by_its_number(tmp_path: Path, line: bytes, message: str) -> None:
    good = lines([msg("case.registered", CASE, t("2026-03-02T09:15:00+05:00"))])[0]
    path = tmp_path / "events.jsonl"
    path.write_bytes(good + b"\n" + line + b"\n" + good)
    result = _run("--events", str(path), "--as-of", "2026-03-10T00:00:00Z")
    assert result.exit_code == 2
    assert f"{path}: {message}" in result.stderr


def test_as_of_needs_an_offset(events_file: tuple[Path, dict[str, dict]]) -> None:
    result = _run("--events", str(events_file[0]), "--as-of", "2026-03-10T00:00:00")
    assert result.exit_code == 2 and "--as-of needs an explicit offset" in result.stderr


def test_a_bad_sla_yaml_stops_the_report(events_file: tuple[Path, dict[str, dict]], tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    root = Path(__file__).resolve().parents[2] / "gateway" / "mappings"
    for name in ("referral-kinds.yaml", "calendar-kz.yaml"):
        (mappings / name).write_text((root / name).read_text(encoding="utf-8"), encoding="utf-8")
    (mappings / "sla.yaml").write_text("version: 1\nrules: {}\n", encoding="utf-8")
    result = _run("--events", str(events_file[0]), "--as-of", "2026-03-10T00:00:00Z", "--mappings", str(mappings))
    assert result.exit_code == 2 and f"{mappings / 'sla.yaml'}: rules:" in result.stderr


def test_a_large_file_is_parsed_in_two_processes_with_the_same_result(tmp_path: Path) -> None:
    from gateway.sla import cli
    from gateway.sla.events import parse_event_lines

    messages = []
    for n in range(300):
        case = f"C-{n}"
        messages += [msg("case.registered", case, t("2026-03-02T09:15:00+05:00")),
                     msg("plan.approved", case, t("2026-03-03T09:15:00+05:00"), plan_id=f"P-{n}")]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines(messages)))
    with path.open("rb") as f:
        assert list(cli.read_events(path, split_above=0)) == list(parse_event_lines(f))  # split even this small file
    # A bad line in the second half (handled by the child) is still named by its line number in the file.
    raw = path.read_bytes().splitlines(keepends=True)
    raw[550] = b'{"message_id": "x"}\n'
    path.write_bytes(b"".join(raw))
    result = _run("--events", str(path), "--as-of", "2026-03-10T00:00:00Z", "--split-events-above", "0")
    assert result.exit_code == 2 and f"{path}: line 551: type: unknown message type None" in result.stderr
    raw[10] = b"[]\n"  # and in the first half, with the child ended
    path.write_bytes(b"".join(raw))
    result = _run("--events", str(path), "--as-of", "2026-03-10T00:00:00Z", "--split-events-above", "0")
    assert result.exit_code == 2 and f"{path}: line 11: not a JSON object" in result.stderr


def test_the_report_leaves_the_garbage_collector_as_it_found_it(events_file: tuple[Path, dict[str, dict]]) -> None:
    import gc

    assert gc.isenabled()
    assert _run("--events", str(events_file[0]), "--as-of", "2026-03-10T00:00:00Z").exit_code == 0
    assert gc.isenabled()


@pytest.mark.parametrize("cases", [0, 1, 2, 41])
def test_a_report_rendered_in_two_processes_is_the_same_document(cases: int, tmp_path: Path) -> None:
    from gateway.sla import cli
    from tests.sla.factory import report

    messages = [msg("risk.detected", f"C-{n}", t("2026-03-02T10:00:00+05:00"), risk_id=f"R-{n}", domain="legal",
                    level="R2", trigger="t") for n in range(cases)]
    rep = report(messages, t("2026-03-10T00:00:00Z"))
    with (tmp_path / "out.json").open("wb") as out:
        cli.write_report(rep, out, format="json", split_legs_above=0)
    written = (tmp_path / "out.json").read_bytes()
    assert written == rep.to_json()
    assert len(json.loads(written)["legs"]) == cases
    with (tmp_path / "out.csv").open("wb") as out:
        cli.write_report(rep, out, format="csv", split_legs_above=0)
    written = (tmp_path / "out.csv").read_bytes()
    assert written == "".join(rep.iter_csv()).encode()
    assert len(written.splitlines()) == cases + 1
