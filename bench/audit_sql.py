"""Every SQL statement (with parameters) the exchange-log queries send over a bench.console store, one per line.

Usage: .venv/bin/python -m bench.audit_sql [--dir /tmp/bench-console] [--events N] [--records N] [--seed N] > sql.txt
"""

# Run on two checkouts over the same store and diff the outputs: the same statements mean the same plans
# and indexes, so a refactoring of the query code cannot have moved the exchange-log figures.

from __future__ import annotations

import argparse
import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bench.console import log_filters
from bench.console_store import open_or_build
from gateway.audit.log import ExchangeLog
from gateway.audit.query import ExchangeQueries, ExportScope, iter_csv
from gateway.config import ROOT
from gateway.mapping import load_mappings
from gateway.pipeline.ports import system_clock
from gateway.storage.db import create_engines
from gateway.storage.personal import PersonSeal
from gateway.storage.store import Store
from security.access import Principal


async def capture(opts: argparse.Namespace) -> list[tuple[str, Any]]:
    built = open_or_build(opts.dir, events=opts.events, records=opts.records, seed=opts.seed)
    engines = create_engines(built.url)
    log = ExchangeLog(cipher=built.cipher())
    store = Store(engines, exchange_log=log, personal=PersonSeal(built.cipher()))
    queries = ExchangeQueries(store=store, exchange_log=log, mappings=load_mappings(ROOT / "gateway" / "mappings"),
                              clock=system_clock)
    store.committer.start()  # an IIN search is itself logged
    principal = Principal(client_id="bench-auditor", roles=frozenset({"auditor"}), via="token")
    sent: list[tuple[str, Any]] = []
    event.listen(engines.read.sync_engine, "before_cursor_execute",
                 lambda conn, cursor, statement, params, context, many: sent.append((statement, params)))
    rng = random.Random(opts.seed)
    try:
        for newest_first in (True, False):
            for name, draw in log_filters(built.meta, rng).items():
                sent.append((f"-- {name}, newest first: {newest_first}", None))
                await queries.list_exchanges(principal=principal, limit=100, newest_first=newest_first, **draw())
        for seq in (1, 500):
            sent.append((f"-- detail {seq}", None))
            await queries.exchange_detail(seq=seq, principal=principal, reason="bench")
        sent.append(("-- checkpoints", None))
        await queries.checkpoints(limit=5)
        for scope in (ExportScope(case_id=built.meta["cases"][0]),
                      ExportScope(since=datetime(2025, 3, 1, tzinfo=UTC), until=datetime(2025, 4, 1, tzinfo=UTC)),
                      None):
            sent.append((f"-- csv {scope}", None))
            async for _ in iter_csv(engines=engines, page=40_000, scope=scope):
                pass
    finally:
        await store.committer.stop()
        await engines.dispose()
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-console"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    opts = parser.parse_args()
    for statement, params in asyncio.run(capture(opts)):
        print(" ".join(statement.split()), "|", params)


if __name__ == "__main__":
    main()
