"""Values the API refuses at its boundary, over real HTTP on both stores: each answers its documented problem type
(the one openapi/openapi.json lists for that operation and status) and stores nothing."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any, Callable, Iterator

import pytest

from gateway.canonical.iin import iin_check_digit
from gateway.config import ROOT
from tests.harness import Stack
from tests.integration.test_bad_input import _case, _query, assert_problem

TOO_BIG = 2**63  # one past the largest 64-bit integer
TABLES = ("messages", "cases", "referrals", "deliveries", "exchanges", "records", "document_requests", "flights",
          "idempotency_keys", "exchange_log")
DOCUMENT = json.loads((ROOT / "openapi" / "openapi.json").read_text(encoding="utf-8"))


def _counts(stack: Stack) -> dict[str, int]:
    return {t: _query(stack.database_url, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


def _documented(path: str, method: str, status: int, slug: str) -> None:
    """The operation's document lists this status with this problem type, as problem+json."""
    response = DOCUMENT["paths"][path][method]["responses"][str(status)]
    media = response["content"]["application/problem+json"]
    assert media["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert slug in media["examples"], (path, method, status, sorted(media["examples"]))


def _with_check_digit(first11: str) -> str:
    check = iin_check_digit(first11)
    assert check is not None, first11
    return first11 + str(check)


def _iin_date_wrong() -> str:
    """A check digit that holds on a birth date that does not exist (30 February 1990)."""
    return next(_with_check_digit(f"9002303{s:04d}") for s in range(10000) if iin_check_digit(f"9002303{s:04d}") is not None)


def _iin_century_wrong() -> str:
    """A check digit that holds with a century digit of 7."""
    return next(_with_check_digit(f"9001017{s:04d}") for s in range(10000) if iin_check_digit(f"9001017{s:04d}") is not None)


@pytest.fixture
def gw(stack: Stack) -> Iterator[Stack]:
    stack.start_gateway()
    yield stack


def _cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"x:{seq}".encode()).decode().rstrip("=")


# ---- numbers past 64 bits, numbers for dates ----------------------------------------------------------------

QUERIES: list[tuple[str, str, Callable[[Stack], Any], str, str]] = [
    # (what, document path, request, method, problem type)
    ("dead-letters after 2^63", "/v1/admin/dead-letters",
     lambda s: s.admin.get("/v1/admin/dead-letters", params={"after": str(TOO_BIG)}), "get", "invalid-message"),
    ("dead letter 2^63", "/v1/admin/dead-letters/{delivery_id}",
     lambda s: s.admin.get(f"/v1/admin/dead-letters/{TOO_BIG}"), "get", "invalid-message"),
    ("replay 2^63", "/v1/admin/dead-letters/{delivery_id}/replay",
     lambda s: s.admin.post(f"/v1/admin/dead-letters/{TOO_BIG}/replay"), "post", "invalid-message"),
    ("deliveries after 2^63", "/v1/deliveries",
     lambda s: s.admin.get("/v1/deliveries", params={"after": str(TOO_BIG)}), "get", "invalid-message"),
    ("deliveries after 10^30", "/v1/deliveries",
     lambda s: s.admin.get("/v1/deliveries", params={"after": "1" + "0" * 30}), "get", "invalid-message"),
    ("exchange record 2^63", "/v1/audit/exchanges/{seq}",
     lambda s: s.auditor.get(f"/v1/audit/exchanges/{TOO_BIG}", params={"reason": "проверка"}), "get",
     "invalid-message"),
    ("exchanges cursor naming 2^63", "/v1/audit/exchanges",
     lambda s: s.auditor.get("/v1/audit/exchanges", params={"cursor": _cursor(TOO_BIG)}), "get",
     "invalid-audit-query"),
    ("search cursor naming 2^63", "/v1/audit/exchanges/search",
     lambda s: s.auditor.post("/v1/audit/exchanges/search", json={"cursor": _cursor(TOO_BIG)}), "post",
     "invalid-audit-query"),
    ("sla report as_of=0.5", "/v1/sla/report",
     lambda s: s.client.get("/v1/sla/report", params={"as_of": "0.5"}), "get", "invalid-message"),
    ("sla report as_of=1700000000", "/v1/sla/report",
     lambda s: s.client.get("/v1/sla/report", params={"as_of": "1700000000"}), "get", "invalid-message"),
    ("sla breaches as_of year 0001", "/v1/sla/breaches",
     lambda s: s.client.get("/v1/sla/breaches", params={"as_of": "0001-01-01T00:00:00Z"}), "get",
     "invalid-message"),
    ("technical since without offset", "/v1/sla/technical",
     lambda s: s.client.get("/v1/sla/technical", params={"since": "2026-03-01T00:00:00"}), "get",
     "invalid-message"),
    ("exchanges since=0", "/v1/audit/exchanges",
     lambda s: s.auditor.get("/v1/audit/exchanges", params={"since": "0"}), "get", "invalid-message"),
    ("search since as a number", "/v1/audit/exchanges/search",
     lambda s: s.auditor.post("/v1/audit/exchanges/search", json={"since": 0.5}), "post", "invalid-message"),
    ("deliveries counterpart with NUL", "/v1/deliveries",
     lambda s: s.admin.get("/v1/deliveries", params={"counterpart": "mio\x00"}), "get", "invalid-message"),
    ("exchanges case_id with a bidi override", "/v1/audit/exchanges",
     lambda s: s.auditor.get("/v1/audit/exchanges", params={"case_id": "35-2026\u202e-1"}), "get",
     "invalid-message"),
]


def test_out_of_range_and_non_dates_are_422_never_500(gw: Stack) -> None:
    # One gateway for the whole table (a stack per case costs seconds); each case checks the store itself.
    for what, path, send, method, slug in QUERIES:
        _documented(path, method, 422, slug)
        before = _counts(gw)
        doc = assert_problem(send(gw), 422, slug, what)
        assert doc["detail"], what
        assert _counts(gw) == before, f"{what}: a refused request stored something"


# ---- messages: sane values ------------------------------------------------------------------------------------


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict], dict]:
    def change(case: dict) -> dict:
        node = case
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return case
    return change


IIN = ("body", "person", "iin")
MESSAGES: list[tuple[str, Callable[[dict], dict], str, str]] = [
    # (what, change, problem type, words the detail must have)
    ("occurred_at year 0001", _set(("occurred_at",), "0001-01-01T00:00:00+05:00"), "invalid-message", "2000-01-01"),
    ("occurred_at in 1999", _set(("occurred_at",), "1999-12-31T23:59:59Z"), "invalid-message", "2000-01-01"),
    ("occurred_at a number", _set(("occurred_at",), 0.5), "invalid-message", "a number is not a date"),
    ("occurred_at a space for the T", _set(("occurred_at",), "2026-03-02 09:30:00+05:00"), "invalid-message",
     "RFC 3339"),
    ("birth_date a number", _set(("body", "person", "birth_date"), 19900101), "invalid-message", "full-date"),
    ("case_id with NUL", _set(("case_id",), "35-2026\x00-1"), "invalid-message", "printable"),
    ("case_id with a newline", _set(("case_id",), "35-2026\n-1"), "invalid-message", "printable"),
    ("case_id with a bidi override", _set(("case_id",), "35-2026-\u202e1"), "invalid-message", "printable"),
    ("case_id with a zero-width space", _set(("case_id",), "35-2026-\u200b1"), "invalid-message", "printable"),
    ("case_id with a space at the end", _set(("case_id",), "35-2026-1 "), "invalid-message", "printable"),
    ("surname with a control", _set(("body", "person", "surname"), "Ахме\x1bтова"), "invalid-message", "printable"),
    ("has_minor_children as 0", _set(("body", "has_minor_children"), 0), "invalid-message", "boolean"),
    ("IIN 000000000000", _set(IIN, "000000000000"), "invalid-message", "check digit"),
    ("IIN check digit", lambda c: _set(IIN, c["body"]["person"]["iin"][:11]
                                       + str((int(c["body"]["person"]["iin"][11]) + 1) % 10))(c),
     "invalid-message", "check digit"),
    ("IIN birth date 30 February", _set(IIN, _iin_date_wrong()), "invalid-message", "calendar date"),
    ("IIN century digit 7", _set(IIN, _iin_century_wrong()), "invalid-message", "century digit"),
    ("IIN 11 digits", _set(IIN, "90010130001"), "invalid-message", "12 ASCII digits"),
    ("IIN with Arabic-Indic digits", _set(IIN, "٩٠٠١٠١٣٠٠٠١٧"), "invalid-message", "12 ASCII digits"),
]


def test_refused_message_values_answer_their_problem_and_store_nothing(gw: Stack) -> None:
    for n, (what, change, slug, words) in enumerate(MESSAGES):
        _documented("/v1/messages", "post", 422, slug)
        case = change(copy.deepcopy(_case(seed=700 + n)))
        before = _counts(gw)
        r = gw.client.post("/v1/messages", content=json.dumps(case, ensure_ascii=False).encode(),
                           headers={"content-type": "application/json"})
        doc = assert_problem(r, 422, slug, what)
        assert words in doc["detail"], (what, doc["detail"])
        if what.startswith("IIN") and "000000000000" not in what:
            assert case["body"]["person"]["iin"] not in r.text, "the refusal echoes the IIN"
        assert _counts(gw) == before, f"{what}: a refused message stored something"
        assert_problem(gw.client.get(f"/v1/messages/{case['message_id']}"), 404, "not-found")

    # The same gateway takes the floor itself.
    case = copy.deepcopy(_case(seed=777))
    case["occurred_at"] = "2000-01-01T00:00:00Z"
    r = gw.client.post("/v1/messages", json=case)
    assert r.status_code == 202, r.text


DOCUMENT_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("IIN 000000000000", {"iin": "000000000000"}, "check digit"),
    ("IIN century digit 7", {"iin": _iin_century_wrong()}, "century digit"),
    ("IIN birth date 30 February", {"iin": _iin_date_wrong()}, "calendar date"),
    ("case_id with NUL", {"case_id": "35\x00"}, "printable"),
    ("purpose with a control", {"purpose": "проверка\x07"}, "control character"),
]


def test_refused_document_requests_405_and_415_store_nothing(gw: Stack) -> None:
    _documented("/v1/document-requests", "post", 422, "invalid-message")
    for what, change, words in DOCUMENT_REQUESTS:
        body = {"case_id": "35-2026-004817", "record_kind": "identity_document_status", "iin": "880514421312",
                "purpose": "Проверка удостоверения личности", **change}
        before = _counts(gw)
        doc = assert_problem(gw.client.post("/v1/document-requests", json=body), 422, "invalid-message", what)
        assert words in doc["detail"], (what, doc["detail"])
        assert _counts(gw) == before, f"{what}: a refused document request stored something"

    # An undeclared method: 405 with every method of the path in Allow (RFC 9110).
    r = gw.admin.delete("/v1/admin/counterparts/mio-kz-35")
    assert_problem(r, 405, "method-not-allowed")
    assert r.headers["allow"] == "GET, PUT, PATCH", r.headers
    r = gw.auditor.get("/v1/audit/exchanges/search")
    assert_problem(r, 405, "method-not-allowed")
    assert r.headers["allow"] == "POST"

    # A body that is not JSON: 415, nothing stored.
    _documented("/v1/messages", "post", 415, "unsupported-media-type")
    before = _counts(gw)
    r = gw.client.post("/v1/messages", content=json.dumps(_case(seed=778)).encode(),
                       headers={"content-type": "text/plain"})
    doc = assert_problem(r, 415, "unsupported-media-type")
    assert "text/plain" in doc["detail"]
    assert _counts(gw) == before
