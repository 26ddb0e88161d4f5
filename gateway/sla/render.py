"""The SLA report's serialised forms: JSON (BRIEF 5) and CSV of the legs, renderable in ranges of legs."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import orjson

from gateway.sla.legs import Leg

LEG_FIELDS = ("case_id", "rule", "start_message_id", "start_at", "deadline_at", "stop_message_id", "stop_at",
              "status", "elapsed_seconds")
CHUNK = 20_000  # legs per orjson/csv call: large enough to stay in C, small enough not to hold the output twice

_DAYS: dict[int, str] = {}  # memo: day number -> "YYYY-MM-DD"; a report spans a few thousand days at most
_EPOCH_DATE = date(1970, 1, 1)


def rfc3339(us: int) -> str:
    """RFC 3339 UTC with "Z"; hand-made because isoformat() costs 3x as much and a report formats ~1.5M times."""
    seconds, micro = divmod(us, 1_000_000)
    days, rest = divmod(seconds, 86_400)
    day = _DAYS.get(days)
    if day is None:
        day = _DAYS[days] = (_EPOCH_DATE + timedelta(days=days)).isoformat()
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if not micro:
        return f"{day}T{hours:02}:{minutes:02}:{secs:02}Z"
    if not micro % 1000:  # an ipr deadline ends at .999
        return f"{day}T{hours:02}:{minutes:02}:{secs:02}.{micro // 1000:03}Z"
    return f"{day}T{hours:02}:{minutes:02}:{secs:02}.{micro:06}Z"


def _leg_rows(legs: Sequence[Leg]) -> Iterator[tuple[Any, ...]]:
    """The legs as rows of LEG_FIELDS (times as text, elapsed in seconds)."""
    # A case's legs from one start share its start_at (4 rules start at case.registered): format it once.
    last_at, last_text = None, ""
    for case_id, rule, start_id, start_at, deadline, stop_id, stop_at, status, elapsed, _, _ in legs:
        if start_at != last_at:
            last_at, last_text = start_at, rfc3339(start_at)
        yield (case_id, rule, start_id, last_text, rfc3339(deadline), stop_id,
               None if stop_at is None else rfc3339(stop_at), status, elapsed / 1_000_000)


def leg_dicts(legs: Sequence[Leg]) -> list[dict[str, Any]]:
    """The legs as the report's JSON writes them."""
    return [dict(zip(LEG_FIELDS, row)) for row in _leg_rows(legs)]


def json_head(*, as_of: int) -> bytes:
    return b'{"as_of":' + orjson.dumps(rfc3339(as_of)) + b',"legs":['


def iter_legs_json(legs: Sequence[Leg], *, start: int, stop: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """Legs [start, stop) as JSON objects joined by commas (no brackets): ranges can be rendered apart."""
    for i in range(start, stop, chunk):
        piece = orjson.dumps(leg_dicts(legs[i:min(i + chunk, stop)]))
        yield (b"," if i > start else b"") + piece[1:-1]


def json_tail(*, summary: Mapping[str, Any], kpi: Mapping[str, Any]) -> bytes:
    return b'],"summary":' + orjson.dumps(summary) + b',"kpi":' + orjson.dumps(kpi) + b"}\n"


def iter_json(*, as_of: int, legs: Sequence[Leg], summary: Mapping[str, Any], kpi: Mapping[str, Any]
              ) -> Iterator[bytes]:
    """The report JSON (BRIEF 5) in pieces, so 1M-event reports are never held twice in memory."""
    yield json_head(as_of=as_of)
    yield from iter_legs_json(legs, start=0, stop=len(legs))
    yield json_tail(summary=summary, kpi=kpi)


def csv_head() -> str:
    return ",".join(LEG_FIELDS) + "\n"


def iter_legs_csv(legs: Sequence[Leg], *, start: int, stop: int, chunk: int = CHUNK) -> Iterator[str]:
    """CSV rows of legs [start, stop): ranges can be rendered apart."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for i in range(start, stop, chunk):
        writer.writerows(_leg_rows(legs[i:min(i + chunk, stop)]))  # csv writes None as an empty field
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def iter_csv(legs: Sequence[Leg]) -> Iterator[str]:
    """The legs as CSV with a header row (the columns of the report's legs)."""
    yield csv_head()
    yield from iter_legs_csv(legs, start=0, stop=len(legs))
