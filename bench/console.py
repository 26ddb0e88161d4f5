"""The console's targets (issue 12) over 1,000,000 exchange-log records and 1,000,000 SLA events: p50/p95 per figure.

Usage: .venv/bin/python -m bench.console [--dir /tmp/bench-console] [--events 1000000] [--records 1000000]
       [--repeat 40] [--report-repeat 10] [--recompute-repeat 3] [--http] [--explain] [--log-only] [--no-migrate]
"""

# The store is built once per (events, records, seed) in --dir (bench/console_store.py) and migrated to
# head at every start, so a store built before a migration gets its indexes then. Service level: the
# console's own service calls, timed inside this process; --http: the console pages of a `gateway serve
# --no-worker` on the same store, signed in as an auditor, timed by their `Server-Timing: app;dur=` header
# (and by the client, for reference). Every figure is `--repeat` calls with values drawn at random (a case,
# an IIN, a peer...), so a value that hits a bad plan shows in the p95.

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.console_store import Built, open_or_build
from gateway.audit.log import ExchangeLog
from gateway.audit.query import ExchangeQueries, encode_cursor
from gateway.config import ROOT
from gateway.mapping import load_mappings
from gateway.wire import system_clock
from gateway.sla.live import live_case_report, live_report
from gateway.sla.policy import load_sla_config
from gateway.storage.db import create_engines, migrate
from gateway.storage.personal import PersonSeal
from gateway.storage.store import Store
from security.access import Principal

TARGETS_MS = {"log": 300.0, "case": 200.0, "dashboard": 1000.0}
PEERS = ("probation", "mio-kz-35", "mio-kz-71", "con", "mtszn", "health", "mio", "mio-kz-35-leadership")
KINDS = ("received", "reply", "attempt", "refused", "read", "lookup", "document", "audit-search", "audit-read",
         "admin")
RESULTS = ("accepted", "delivered", "retry", "dead", "refused", "served")
CODES = (202, 200, 503, 401)
YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2026, 1, 1, tzinfo=UTC)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class Figures:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, list[float]]] = []

    def add(self, group: str, name: str, values: list[float]) -> None:
        self.rows.append((group, name, values))
        target = TARGETS_MS[group]
        p95 = pct(values, 0.95)
        print(f"  {name:<44} p50 {pct(values, 0.5):9.1f} ms  p95 {p95:9.1f} ms  max {max(values):9.1f} ms"
              f"  (n={len(values)})  {'✔' if p95 <= target else '✘'} ≤ {target:.0f} ms", flush=True)


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await call()
    return (time.perf_counter() - start) * 1000, result


def log_filters(meta: dict[str, Any], rng: random.Random) -> dict[str, Callable[[], dict[str, Any]]]:
    start, end = datetime.fromisoformat(meta["start"]), datetime.fromisoformat(meta["end"])

    def week() -> dict[str, Any]:
        since = start + (end - start - timedelta(days=7)) * rng.random()
        return {"since": since, "until": since + timedelta(days=7)}

    return {
        "no filter": lambda: {},
        "case_id": lambda: {"case_id": rng.choice(meta["cases"])},
        "iin (keyed hash, and the person's cases)": lambda: {"iin": rng.choice(meta["iins"])},
        "peer (an instance or a counterpart)": lambda: {"peer": rng.choice(PEERS)},
        "kind": lambda: {"kind": rng.choice(KINDS)},
        "result": lambda: {"result": rng.choice(RESULTS)},
        "status_code": lambda: {"status_code": rng.choice(CODES)},
        "since/until (one week)": week,
        "since (the last 30 days)": lambda: {"since": end - timedelta(days=30 * rng.random() + 1)},
        "status_code or result matching nothing": lambda: rng.choice(({"status_code": 500}, {"result": "parked"})),
        "kind + peer": lambda: {"kind": "attempt", "peer": rng.choice(PEERS)},
        "later page (cursor), no filter": lambda: {"cursor": encode_cursor(rng.randrange(2, meta["records"]))},
        "later page (cursor), kind": lambda: {"kind": rng.choice(KINDS),
                                              "cursor": encode_cursor(rng.randrange(2, meta["records"]))},
    }


async def service(built: Built, opts: argparse.Namespace, figures: Figures) -> None:
    rng = random.Random(opts.seed)
    cipher = built.cipher()
    engines = create_engines(built.url)
    started = time.perf_counter()
    if not opts.no_migrate:
        await migrate(engines)
        print(f"migrated to head in {time.perf_counter() - started:.1f} s")
    log = ExchangeLog(cipher=cipher)
    store = Store(engines, exchange_log=log, personal=PersonSeal(cipher))
    store.committer.start()  # an IIN search is itself logged
    mappings = load_mappings(ROOT / "gateway" / "mappings")
    sla = load_sla_config(ROOT / "gateway" / "mappings")
    queries = ExchangeQueries(store=store, exchange_log=log, mappings=mappings, clock=system_clock)
    principal = Principal(client_id="bench-auditor", roles=frozenset({"auditor"}), via="token")
    try:
        print("exchange-log browser, newest first, 100 rows (service):")
        for name, draw in log_filters(built.meta, rng).items():
            values = []
            for _ in range(opts.repeat):
                args = draw()
                ms, _ = await timed(lambda: queries.list_exchanges(principal=principal, limit=100, newest_first=True,
                                                                   **args))
                values.append(ms)
            figures.add("log", name, values)
        if opts.log_only:
            return

        print("case view (service):")
        try:
            from gateway.audit.cases import case_view
        except ImportError:
            case_view = None
        values = []
        for _ in range(opts.repeat):
            case_id = rng.choice(built.meta["cases"])
            if case_view is not None:
                ms, _ = await timed(lambda: case_view(store=store, config=sla, case_id=case_id, as_of=system_clock()))
            else:
                async def both() -> None:
                    await live_case_report(store=store, config=sla, case_id=case_id, as_of=system_clock())
                    await store.case_timeline(case_id)
                ms, _ = await timed(both)
            values.append(ms)
        figures.add("case", "case view (case_view)" if case_view else "live_case_report + case_timeline", values)

        print("SLA dashboard (service): live_report for 2025, as_of 2026-01-01:")
        values = []
        for _ in range(opts.recompute_repeat):
            ms, _ = await timed(lambda: full_recompute(store, sla))
            values.append(ms)
        if values:
            figures.add("dashboard", "full recompute: read + parse + compute_report", values)
        values = []
        for n in range(opts.report_repeat + 1):
            ms, report = await timed(lambda: live_report(store=store, config=sla, as_of=YEAR_END, since=YEAR_START,
                                                         until=YEAR_END))
            if n == 0:
                print(f"  first report in this process: {ms:,.0f} ms ({len(report.legs):,} legs)", flush=True)
                first = ms
            else:
                values.append(ms)
        figures.add("dashboard", "live_report (a year), first in the process", [first])
        figures.add("dashboard", "live_report (a year), again", values)
        # as_of moves with the clock: the report as of a later moment, every time a new one
        values = []
        for n in range(opts.report_repeat):
            as_of = YEAR_END + timedelta(minutes=n + 1, seconds=rng.random())
            ms, _ = await timed(lambda: live_report(store=store, config=sla, as_of=as_of, since=YEAR_START,
                                                    until=YEAR_END))
            values.append(ms)
        figures.add("dashboard", "live_report (a year), as_of moving", values)
        if opts.explain:
            await explain(engines, queries, built.meta, rng)
    finally:
        await store.committer.stop()
        await engines.dispose()


async def full_recompute(store: Store, sla: Any) -> Any:
    """What every live report did before the per-process feed: read and parse every message, recompute all."""
    from gateway.audit.export import iter_event_lines
    from gateway.sla.engine import compute_report
    from gateway.sla.events import parse_event_line

    events, n = [], 0
    async for line in iter_event_lines(store=store):
        n += 1
        events.append(parse_event_line(line, line_no=n))
    return compute_report(events=events, policy=sla.policy, calendar=sla.calendar, kinds=sla.kinds, as_of=YEAR_END)


async def explain(engines: Any, queries: ExchangeQueries, meta: dict[str, Any], rng: random.Random) -> None:
    """EXPLAIN QUERY PLAN of each filter's statement as list_exchanges sends it (caught on its way to SQLite)."""
    from sqlalchemy import event

    sent: list[tuple[str, Any]] = []

    def catch(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "exchange_log" in statement:
            sent.append((statement, parameters))

    principal = Principal(client_id="bench-auditor", roles=frozenset({"auditor"}), via="token")
    print("query plans:")
    for name, draw in log_filters(meta, rng).items():
        sent.clear()
        event.listen(engines.read.sync_engine, "before_cursor_execute", catch)
        try:
            await queries.list_exchanges(principal=principal, limit=100, newest_first=True, **draw())
        finally:
            event.remove(engines.read.sync_engine, "before_cursor_execute", catch)
        statement, parameters = sent[0]
        async with engines.read.connect() as conn:
            plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)).all()
        print(f"  {name}: " + " | ".join(row[-1] for row in plan))


# ---- through HTTP ----------------------------------------------------------------------------------


def http(built: Built, opts: argparse.Namespace, figures: Figures) -> None:
    import httpx

    rng = random.Random(opts.seed + 1)
    port = opts.port
    env = dict(os.environ, GATEWAY_PII_KEYS=built.meta["pii_keys"], GATEWAY_PII_HASH_KEY=built.meta["pii_hash_key"],
               GATEWAY_DATABASE_URL=built.url, GATEWAY_LOG_LEVEL="WARNING")
    env.pop("GATEWAY_KEY_PASSPHRASE", None)
    # The example counterparts pin the simulators' keys under $GATEWAY_HOME/sim-keys; nothing is delivered here, so none.
    import yaml

    doc = yaml.safe_load((ROOT / "gateway" / "mappings" / "counterparts.yaml").read_text())
    for instance in doc["instances"]:
        instance.pop("keys", None)
        instance["require_signatures"] = False
    counterparts = built.path.parent / "counterparts.yaml"
    counterparts.write_text(yaml.safe_dump(doc, allow_unicode=True))
    env["GATEWAY_COUNTERPARTS_FILE"] = str(counterparts)
    added = subprocess.run([sys.executable, "-m", "gateway", "clients", "add", f"bench-auditor-{os.getpid()}",
                            "--role", "auditor", "--database-url", built.url], capture_output=True, text=True,
                           env=env, cwd=ROOT, check=True)
    token = re.search(r"token \(shown once\): (\S+)", added.stderr)
    if token is None:
        raise SystemExit(f"no token in `gateway clients add` output: {added.stderr!r}")
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--no-worker", "--port", str(port),
                               "--database-url", built.url], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=600) as client:
            for _ in range(600):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            form = client.get("/console/sign-in")
            signed = client.post("/console/sign-in", data={"token": token.group(1),
                                                          "csrf": client.cookies.get("gw_csrf", "")})
            if "gw_session" not in client.cookies:
                raise SystemExit(f"sign-in failed: {form.status_code} {signed.status_code} {signed.text[:300]}")
            csrf = _csrf(client.get("/console/audit/exchanges").text)

            def page(method: str, url: str, **kw: Any) -> tuple[float, float]:
                """(server ms from Server-Timing, or the client's wall time without one; client wall ms)."""
                start = time.perf_counter()
                try:
                    r = client.request(method, url, **kw)
                except httpx.TransportError as exc:  # an unhandled error in the page resets the connection
                    raise PageFailed(f"{method} {url} → {exc!r}") from None
                wall = (time.perf_counter() - start) * 1000
                if r.status_code != 200:
                    raise PageFailed(f"{method} {url} → {r.status_code}")
                match = re.search(r"app;dur=([0-9.]+)", r.headers.get("server-timing", ""))
                return (float(match.group(1)) if match else wall), wall

            print(f"exchange-log browser through HTTP (Server-Timing; {base}):")
            timing = "Server-Timing" if "server-timing" in client.get("/console/audit/exchanges").headers else \
                "client wall time (no Server-Timing header)"
            print(f"  timed by: {timing}")
            for name, draw in log_filters(built.meta, rng).items():
                server_ms, wall_ms = [], []
                try:
                    for _ in range(opts.repeat):
                        args = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in draw().items()}
                        if "iin" in args:
                            s, w = page("POST", "/console/audit/exchanges", data={**args, "csrf": csrf})
                        else:
                            s, w = page("GET", "/console/audit/exchanges", params=args)
                        server_ms.append(s)
                        wall_ms.append(w)
                except PageFailed as exc:
                    print(f"  {name}: not measured, {exc}")
                    continue
                figures.add("log", f"HTTP {name}", server_ms)
                print(f"      (client wall p50 {pct(wall_ms, 0.5):.1f} ms, p95 {pct(wall_ms, 0.95):.1f} ms)")
            print("case view through HTTP:")
            server_ms, failed = [], []
            for _ in range(opts.repeat):
                try:
                    server_ms.append(page("GET", f"/console/audit/cases/{rng.choice(built.meta['cases'])}")[0])
                except PageFailed as exc:
                    failed.append(str(exc))
            if failed:
                print(f"  {len(failed)} of {opts.repeat} case pages failed, e.g. {failed[0]}")
            if server_ms:
                figures.add("case", "HTTP case view", server_ms)
            print("SLA dashboard through HTTP:")
            params = {"as_of": YEAR_END.isoformat(), "since": YEAR_START.isoformat(), "until": YEAR_END.isoformat()}
            first = page("GET", "/console/audit/sla", params=params)[0]
            figures.add("dashboard", "HTTP dashboard, first in the process", [first])
            server_ms = [page("GET", "/console/audit/sla", params=params)[0] for _ in range(opts.report_repeat)]
            figures.add("dashboard", "HTTP dashboard, again", server_ms)
    finally:
        server.terminate()
        server.wait(30)


class PageFailed(Exception):
    pass


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf"\s+value="([^"]+)"', html) or re.search(r'value="([^"]+)"\s+name="csrf"', html)
    return match.group(1) if match else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-console"), help="where the store is kept")
    parser.add_argument("--events", type=int, default=1_000_000, help="canonical messages (SLA events)")
    parser.add_argument("--records", type=int, default=1_000_000, help="exchange-log records")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=40, help="calls per log-browser and case-view figure")
    parser.add_argument("--report-repeat", type=int, default=10, help="calls per dashboard figure")
    parser.add_argument("--recompute-repeat", type=int, default=3,
                        help="calls of the full recompute (the live report before the feed)")
    parser.add_argument("--no-migrate", action="store_true", help="measure the store as built (no new migrations)")
    parser.add_argument("--log-only", action="store_true", help="only the log browser, at the service level")
    parser.add_argument("--http", action="store_true", help="also through the console pages (gateway serve)")
    parser.add_argument("--no-service", action="store_true", help="only through HTTP")
    parser.add_argument("--port", type=int, default=18431)
    parser.add_argument("--explain", action="store_true", help="print each log filter's query plan (SQLite)")
    opts = parser.parse_args()
    started = time.perf_counter()
    built = open_or_build(opts.dir, events=opts.events, records=opts.records, seed=opts.seed)
    size = sum(p.stat().st_size for p in built.path.parent.glob(built.path.name + "*")) / 2**20
    print(f"store {built.path}: {built.meta['events']:,} messages, {built.meta['records']:,} log records, "
          f"{size:,.0f} MiB (built in {built.meta['build_s']} s; ready after {time.perf_counter() - started:.1f} s)")
    figures = Figures()
    if not opts.no_service:
        asyncio.run(service(built, opts, figures))
    if opts.http:
        http(built, opts, figures)
    print("\n| figure | target | p50 | p95 |\n|---|---|---|---|")
    for group, name, values in figures.rows:
        target = TARGETS_MS[group]
        print(f"| {name} | ≤ {target:.0f} ms | {pct(values, 0.5):,.1f} ms | {pct(values, 0.95):,.1f} ms "
              f"{'✔' if pct(values, 0.95) <= target else '✘'} |")


if __name__ == "__main__":
    main()
