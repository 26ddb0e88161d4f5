"""The exchange log's CSV export is safe to open in a spreadsheet: no cell starts a formula."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

from gateway.audit.chain import LogEntry, append
from gateway.audit.query import iter_csv
from gateway.storage.db import create_engines, migrate


async def test_text_that_would_start_a_formula_is_quoted(database_url: str) -> None:
    engines = create_engines(database_url)
    await migrate(engines)
    hostile = ["=HYPERLINK(\"http://attacker.example\",\"open\")", "+1+2", "-2+3", "@SUM(A1)"]
    try:
        async with engines.write.begin() as conn:
            seqs = await conn.run_sync(lambda c: append(c, [
                LogEntry(at=datetime.now(timezone.utc), kind="received", case_id=case_id, peer="probation-is",
                         result="accepted", status_code=202) for case_id in hostile]))
        text = b"".join([chunk async for chunk in iter_csv(engines=engines)]).decode()
    finally:
        await engines.dispose()
    rows = [r for r in csv.DictReader(io.StringIO(text)) if int(r["seq"]) >= seqs[0]]
    assert [r["case_id"] for r in rows] == ["'" + value for value in hostile]
    assert all(r["status_code"] == "202" and r["peer"] == "probation-is" for r in rows)  # the rest untouched
