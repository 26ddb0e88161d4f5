"""Fault scenarios under load, shared by tests/faults (short) and `python -m bench.faults` (long): each returns a Report."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.config import ROOT
from gateway.samples import SampleCases
from gateway.storage.tables import deliveries
from security.keys import KeyStore
from tests.faults.capture import Capture
from tests.faults.pgcluster import PgCluster
from tests.harness import Stack, free_port, sim_config, wait_for, wait_ready

PASSPHRASE = "fault-suite passphrase"
SHUTDOWN_BOUND_S = 10.0  # GATEWAY_SHUTDOWN_TIMEOUT_S for the gateways under test


# --- the Probation IS, submitting -----------------------------------------------------------------


@dataclass
class Load:
    """Submits `messages` at `rate` per second over `urls` in turn; each is POSTed until it gets 202. A 503 with
    Retry-After is waited out (capped at `retry_cap_s`) and resent with the same message id, as the IS does."""

    urls: list[str]
    auth: httpx.Auth
    messages: list[dict[str, Any]]
    rate: float
    retry_cap_s: float = 1.0
    give_up_s: float = 180.0
    answers: Counter = field(default_factory=Counter)  # (status, problem type or "", has Retry-After)
    bad: list[str] = field(default_factory=list)  # answers other than 202 and 503-with-Retry-After
    accepted: dict[str, float] = field(default_factory=dict)  # message id -> monotonic time of its first 202
    sent_at: dict[str, float] = field(default_factory=dict)
    unavailable_seen: int = 0
    unreachable: int = 0
    reasons: Counter = field(default_factory=Counter)  # the `reason` of each 503 store-unavailable
    _stop_new: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Load":
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop_new(self) -> None:
        self._stop_new.set()

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"submissions still not all accepted after {timeout} s")

    @property
    def submitted(self) -> int:
        return len(self.sent_at)

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=30, limits=limits, auth=self.auth) as client:
            tasks = []
            start = time.monotonic()
            for i, message in enumerate(self.messages):
                if self._stop_new.is_set():
                    break
                due = start + i / self.rate
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
                tasks.append(asyncio.create_task(self._one(client, self.urls[i % len(self.urls)], message)))
            await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient, url: str, message: dict[str, Any]) -> None:
        mid = message["message_id"]
        self.sent_at[mid] = time.monotonic()
        deadline = time.monotonic() + self.give_up_s
        while time.monotonic() < deadline:
            try:
                r = await client.post(f"{url}/v1/messages", json=message)
            except httpx.HTTPError as exc:  # no gateway listening (between a SIGTERM and the next start)
                self.answers[("no answer", type(exc).__name__, False)] += 1
                self.unreachable += 1
                await asyncio.sleep(self.retry_cap_s)
                continue
            kind = r.json().get("type", "") if r.headers.get("content-type", "").endswith("json") else ""
            retry_after = r.headers.get("retry-after")
            self.answers[(r.status_code, kind.rsplit(":", 1)[-1], retry_after is not None)] += 1
            if r.status_code == 202:
                self.accepted.setdefault(mid, time.monotonic())
                return
            if r.status_code == 503 and retry_after is not None and kind.endswith("store-unavailable"):
                self.unavailable_seen += 1
                self.reasons[r.json().get("reason", "")] += 1
                await asyncio.sleep(min(float(retry_after), self.retry_cap_s))
                continue
            self.bad.append(f"{mid}: {r.status_code} {r.text[:200]}")
            await asyncio.sleep(self.retry_cap_s)


# --- reading the store and the processes --------------------------------------------------------


def delivery_rows(database_url: str) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(select(deliveries.c.message_id, deliveries.c.instance, deliveries.c.state,
                                                 deliveries.c.attempts, deliveries.c.claimed_by))
                return [dict(r._mapping) for r in rows]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def audit_verify(database_url: str, keys_dir: Path) -> tuple[bool, str]:
    env = dict(os.environ, GATEWAY_KEYS_DIR=str(keys_dir), GATEWAY_KEY_PASSPHRASE=PASSPHRASE)
    done = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", "--database-url", database_url,
                           "--no-progress"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    return done.returncode == 0, (done.stdout + done.stderr).strip().splitlines()[-1] if (done.stdout + done.stderr
                                                                                          ).strip() else ""


def terminate(proc: subprocess.Popen, *, bound_s: float) -> tuple[int | None, float]:
    """SIGTERM; (exit code, seconds it took), code None when it had not exited within bound_s + 5 s."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=bound_s + 5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return None, time.monotonic() - t0
    return code, time.monotonic() - t0


def _stuck(database_url: str, urls: list[str], missing: set[str]) -> str:
    """What an undelivered backlog looks like: store states, and each gateway's readiness."""
    rows = delivery_rows(database_url)
    states = Counter((r["instance"], r["state"], r["claimed_by"], r["attempts"]) for r in rows
                     if r["state"] != "delivered")
    ready = {}
    for u in urls:
        try:
            ready[u] = httpx.get(f"{u}/readyz", timeout=5).json()
        except httpx.HTTPError as exc:
            ready[u] = type(exc).__name__
    theirs = Counter((r["instance"], r["state"], r["attempts"]) for r in rows if r["message_id"] in missing)
    return (f"{len(missing)} not at МИO (their rows: {dict(theirs)}); undelivered rows {dict(states)}; "
            f"readyz {ready}")


def ready_status(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return None


# --- the report -----------------------------------------------------------------------------------


@dataclass
class Report:
    scenario: str
    store: str
    submitted: int = 0
    accepted: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    bad_answers: list[str] = field(default_factory=list)
    unreachable: int = 0  # POSTs that found no gateway listening
    lost: list[str] = field(default_factory=list)
    duplicated: int = 0
    duplicates_same_id: bool = True  # counted by id at the counterpart: each repeat names the message it repeats
    duplicates_not_in_flight: list[str] = field(default_factory=list)  # repeats of deliveries not in flight at a fault
    counterpart_requests: int = 0
    client_retries: int = 0  # extra POSTs by the IS (503s waited out)
    first_accept_after_return_s: float | None = None
    first_delivery_after_return_s: float | None = None
    drained_after_return_s: float | None = None
    ready_during_outage: list[int | None] = field(default_factory=list)
    ready_after: list[int | None] = field(default_factory=list)
    gateways_restarted: bool = False
    shutdown: list[tuple[int | None, float]] = field(default_factory=list)
    audit_intact: bool | None = None
    audit_detail: str = ""
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        dup = (f"{self.duplicated} (same id: {'yes' if self.duplicates_same_id else 'NO'}; not in flight at the "
               f"fault: {len(self.duplicates_not_in_flight)})")
        out = [f"[{self.store}] {self.scenario}",
               f"  submitted {self.submitted}, accepted {self.accepted}; answers {self.answers}",
               f"  lost {len(self.lost)}; duplicated {dup}",
               f"  retry load: {self.client_retries} extra POSTs by the IS, {self.counterpart_requests} requests "
               f"at the counterpart for {self.accepted} messages",
               f"  after the store's return: first 202 {_s(self.first_accept_after_return_s)}, first delivery "
               f"{_s(self.first_delivery_after_return_s)}, backlog drained {_s(self.drained_after_return_s)}",
               f"  /readyz during outage {self.ready_during_outage}, after {self.ready_after}; gateway restarted: "
               f"{'yes' if self.gateways_restarted else 'no'}"]
        if self.shutdown:
            out.append(f"  SIGTERM: {', '.join(f'exit {c} in {t:.1f} s' for c, t in self.shutdown)}")
        out.append(f"  audit verify: {'intact' if self.audit_intact else 'FAILED'} ({self.audit_detail})")
        out += [f"  note: {n}" for n in self.notes]
        if self.bad_answers:
            out.append(f"  bad answers (first 5): {self.bad_answers[:5]}")
        return out


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


# --- PostgreSQL scenarios -------------------------------------------------------------------------


def _kz35_cases(samples: SampleCases, n: int) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    while len(cases) < n:
        case = samples.case()[0]
        if case["body"]["region"] == "KZ-35":
            cases.append(case)
    return cases


@dataclass
class Fault:
    """What happens to the store during the run: `outages` (stop for N s, start again), `gap_s` between them."""

    name: str
    outages: tuple[float, ...]
    gap_s: float = 0.0
    sigterm_during: bool = False  # SIGTERM the gateways during the (first) outage, start new ones after it


def run_postgres(tmp: Path, *, fault: Fault, gateways: int = 1, rate: float = 40.0, before: int = 120,
                 after_s: float = 3.0, retry_cap_s: float = 1.0, drain_timeout_s: float = 120.0,
                 lease_s: float = 3.0, log: Callable[[str], None] = lambda _: None) -> Report:
    """Gateways (child processes) on a throw-away PostgreSQL, the IS submitting referrals while `fault` happens."""
    cluster = PgCluster().init()
    cluster.start()
    capture = Capture()
    keys = tmp / "keys"
    KeyStore(keys, passphrase=PASSPHRASE).generate(channel="json")
    stack = Stack(tmp, cluster.url, wrap=capture.wrap)
    procs: list[subprocess.Popen] = []
    report = Report(fault.name + (f", {gateways} gateways" if gateways > 1 else ""), "postgresql")
    env = dict(GATEWAY_WORKER_LEASE_S=str(lease_s), GATEWAY_KEYS_DIR=str(keys), GATEWAY_KEY_PASSPHRASE=PASSPHRASE,
               GATEWAY_AUDIT_CHECKPOINT_INTERVAL_S="2", GATEWAY_SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_BOUND_S),
               GATEWAY_SLA_CHECK_INTERVAL_S="5", GATEWAY_DOCUMENT_SWEEP_INTERVAL_S="1")
    try:
        stack.gateway_sock.close()  # the МИО simulator calls back on this port: the first gateway takes it
        ports = [stack.gateway_port] + [free_port() for _ in range(gateways - 1)]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        procs += [stack.spawn_gateway(p, **env) for p in ports]
        pids = [p.pid for p in procs]
        samples = SampleCases(seed=14)
        cases = _kz35_cases(samples, 40)
        warm = Load(urls, stack.auth, cases, rate=200).start()
        warm.join(60)
        assert len(warm.accepted) == len(cases) and not warm.bad, warm.bad[:3]
        total = int(before + rate * (sum(fault.outages) + fault.gap_s * (len(fault.outages) - 1) + after_s) * 1.5)
        referrals = [samples.shelter_referral(cases[i % len(cases)]["case_id"]) for i in range(total)]
        referral_ids = {r["message_id"] for r in referrals}
        load = Load(urls, stack.auth, referrals, rate=rate, retry_cap_s=retry_cap_s).start()
        wait_for(lambda: len(load.accepted) >= before, timeout=60, interval=0.05, what=f"{before} accepted")

        in_flight_at_fault: set[str] = set()
        returns: list[float] = []
        outage_windows: list[tuple[float, float]] = []
        for k, outage_s in enumerate(fault.outages):
            if k:
                time.sleep(fault.gap_s)  # the scenario's own timeline, not a wait for something
            in_flight_at_fault |= {r["message_id"] for r in delivery_rows(cluster.url) if r["state"] == "in_flight"}
            t_down = cluster.stop()
            log(f"PostgreSQL stopped (outage {k + 1}, {outage_s:.0f} s)")
            for u in urls:
                wait_for(lambda u=u: ready_status(u) != 200, timeout=15, what="/readyz failing")
            report.ready_during_outage = [ready_status(u) for u in urls]
            if fault.sigterm_during and k == 0:
                report.shutdown = [terminate(p, bound_s=SHUTDOWN_BOUND_S) for p in procs]
                log(f"SIGTERM during the outage: {report.shutdown}")
            remaining = outage_s - (time.monotonic() - t_down)
            if remaining > 0:
                time.sleep(remaining)  # the outage lasts this long, whatever the gateways do
            returns.append(cluster.start())
            outage_windows.append((t_down, returns[-1]))
            log(f"PostgreSQL back after {returns[-1] - t_down:.1f} s")
            if fault.sigterm_during and k == 0:
                procs = [stack.spawn_gateway(p, **env) for p in ports]
                pids = [p.pid for p in procs]
                report.gateways_restarted = True  # by the scenario itself, after its SIGTERM
        back = returns[-1]
        time.sleep(after_s)  # submissions go on for this long after the store's return
        load.stop_new()
        load.join(drain_timeout_s)
        accepted = set(load.accepted)
        try:
            wait_for(lambda: accepted <= capture.delivered(), timeout=drain_timeout_s, interval=0.1,
                     what="every accepted referral delivered to МИО")
            wait_for(lambda: all(r["state"] == "delivered" for r in delivery_rows(cluster.url)),
                     timeout=drain_timeout_s, interval=0.2, what="every delivery recorded as delivered")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {_stuck(cluster.url, urls, accepted - capture.delivered())}") from None
        t_drained = time.monotonic()
        report.ready_after = [ready_status(u) for u in urls]
        report.gateways_restarted |= [p.pid for p in procs] != pids or any(p.poll() is not None for p in procs)

        arrivals = {k: v for k, v in capture.snapshot().items() if k in referral_ids}
        report.submitted, report.accepted = load.submitted, len(accepted)
        report.answers = {f"{s} {t}{' +Retry-After' if ra else ''}".strip(): n for (s, t, ra), n in load.answers.items()}
        report.bad_answers = load.bad
        report.unreachable = load.unreachable
        report.lost = sorted(accepted - set(arrivals))
        never_accepted = set(arrivals) - accepted
        if never_accepted:
            report.notes.append(f"{len(never_accepted)} referrals reached МИО without a 202 to the IS")
        report.counterpart_requests = sum(len(v) for v in arrivals.values())
        report.client_retries = sum(load.answers.values()) - report.submitted
        for mid, seen in arrivals.items():
            if len(seen) > 1:
                report.duplicated += 1
                first = seen[0].at
                # In flight at a fault: first sent before the store was back (plus the committer's back-off),
                # repeated after it went away.
                in_window = any(first <= up + 2 and seen[-1].at >= down for down, up in outage_windows)
                if mid not in in_flight_at_fault and not in_window:
                    report.duplicates_not_in_flight.append(mid)
        later = [t for t in load.accepted.values() if t >= back]
        report.first_accept_after_return_s = (min(later) - back) if later else None
        first = capture.first_after(back)
        report.first_delivery_after_return_s = None if first is None else first - back
        report.drained_after_return_s = t_drained - back
        report.audit_intact, report.audit_detail = audit_verify(cluster.url, keys)
        report.shutdown += [terminate(p, bound_s=SHUTDOWN_BOUND_S) for p in procs]
        procs = []
        return report
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        stack.close()
        cluster.close()


def run_counterpart_fault(tmp: Path, *, name: str, sim: dict[str, Any], fault_s: float = 10.0, messages: int = 300,
                          rate: float = 50.0, drain_timeout_s: float = 180.0, database_url: str | None = None) -> Report:
    """One gateway (SQLite unless given a URL), МИО misbehaving as `sim` says (a 503 storm, cut connections) for
    `fault_s` seconds while the IS submits, then well again."""
    capture = Capture()
    url = database_url or f"sqlite+aiosqlite:///{tmp / 'gw.db'}"
    keys = tmp / "keys"
    KeyStore(keys, passphrase=PASSPHRASE).generate(channel="json")
    # Patient enough to outlast the fault (the harness's fast policy gives up after 6 attempts).
    retry = {"max_attempts": 40, "base_delay_s": 0.2, "max_delay_s": 5.0, "deadline_s": 600, "retry_after_max_s": 10}
    stack = Stack(tmp, url, wrap=capture.wrap, retry=retry)
    report = Report(name, url.split("+")[0])
    proc = None
    try:
        stack.gateway_sock.close()
        proc = stack.spawn_gateway(stack.gateway_port, GATEWAY_KEYS_DIR=str(keys), GATEWAY_KEY_PASSPHRASE=PASSPHRASE)
        samples = SampleCases(seed=15)
        cases = _kz35_cases(samples, 30)
        warm = Load([stack.gateway_url], stack.auth, cases, rate=200).start()
        warm.join(60)
        referrals = [samples.shelter_referral(cases[i % len(cases)]["case_id"]) for i in range(messages)]
        ids = {r["message_id"] for r in referrals}
        sim_config(stack.mio, **sim)
        load = Load([stack.gateway_url], stack.auth, referrals, rate=rate).start()
        time.sleep(fault_s)  # the counterpart misbehaves this long
        sim_config(stack.mio)  # and is well again
        t0 = time.monotonic()
        load.join(drain_timeout_s)
        try:
            wait_for(lambda: set(load.accepted) <= capture.delivered(), timeout=drain_timeout_s, interval=0.1,
                     what="every accepted referral delivered")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {_stuck(url, [], set(load.accepted) - capture.delivered())}") from None
        arrivals = {k: v for k, v in capture.snapshot().items() if k in ids}
        report.submitted, report.accepted = load.submitted, len(load.accepted)
        report.answers = {f"{s} {t}".strip(): n for (s, t, _), n in load.answers.items()}
        report.bad_answers = load.bad
        report.lost = sorted(set(load.accepted) - capture.delivered())
        report.counterpart_requests = sum(len(v) for v in arrivals.values())
        report.duplicated = sum(1 for v in arrivals.values() if len(v) > 1)
        report.drained_after_return_s = time.monotonic() - t0
        first = capture.first_after(t0)
        report.first_delivery_after_return_s = None if first is None else first - t0
        report.notes.append(f"times 'after the store's return' are from the counterpart's recovery; extra requests "
                            f"at МИО: {report.counterpart_requests - len(arrivals)} (fault config {sim}, {fault_s:.0f} s)")
        report.audit_intact, report.audit_detail = audit_verify(url, keys)
        report.shutdown = [terminate(proc, bound_s=30)]
        proc = None
        return report
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        stack.close()


# --- SQLite's own faults ---------------------------------------------------------------------------


def mount_small_disk(path: Path, *, size: str = "32m") -> str | None:
    """A tmpfs of `size` at `path` (root only); returns why it could not be mounted, or None."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    return None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"


def fill_disk(path: Path) -> Path:
    """Write a filler file until the file system is full; remove it to give the space back."""
    filler = path / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError:
            pass
    return filler


def run_sqlite_disk_full(tmp: Path, *, disk: Path, messages: int = 200, rate: float = 50.0,
                         full_s: float = 4.0, drain_timeout_s: float = 90.0) -> Report:
    """A gateway on SQLite on a small file system that fills up while the IS submits, then gets space back."""
    capture = Capture()
    keys = tmp / "keys"
    KeyStore(keys, passphrase=PASSPHRASE).generate(channel="json")
    url = f"sqlite+aiosqlite:///{disk / 'gw.db'}"
    stack = Stack(tmp, url, wrap=capture.wrap)
    report = Report("disk full, then space given back", "sqlite")
    proc = None
    try:
        stack.gateway_sock.close()
        proc = stack.spawn_gateway(stack.gateway_port, GATEWAY_KEYS_DIR=str(keys), GATEWAY_KEY_PASSPHRASE=PASSPHRASE,
                                   GATEWAY_WORKER_LEASE_S="3", GATEWAY_AUDIT_CHECKPOINT_INTERVAL_S="2",
                                   GATEWAY_SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_BOUND_S))
        samples = SampleCases(seed=16)
        cases = _kz35_cases(samples, 20)
        warm = Load([stack.gateway_url], stack.auth, cases, rate=200).start()
        warm.join(60)
        referrals = [samples.shelter_referral(cases[i % len(cases)]["case_id"]) for i in range(messages)]
        ids = {r["message_id"] for r in referrals}
        filler = fill_disk(disk)
        load = Load([stack.gateway_url], stack.auth, referrals, rate=rate, retry_cap_s=0.5).start()
        wait_for(lambda: load.reasons["disk full"] > 0, timeout=30, what="a 503 saying the disk is full")
        full_since = time.monotonic()
        time.sleep(full_s)  # the disk stays full this long while submissions go on
        filler.unlink()
        back = time.monotonic()
        load.join(drain_timeout_s)
        accepted = set(load.accepted)
        wait_for(lambda: accepted <= capture.delivered(), timeout=drain_timeout_s, interval=0.1,
                 what="every accepted referral delivered")
        wait_for(lambda: all(r["state"] == "delivered" for r in delivery_rows(url)), timeout=drain_timeout_s,
                 interval=0.2, what="every delivery recorded as delivered")
        arrivals = {k: v for k, v in capture.snapshot().items() if k in ids}
        report.submitted, report.accepted = load.submitted, len(accepted)
        report.answers = {f"{s} {t}{' +Retry-After' if ra else ''}".strip(): n for (s, t, ra), n in load.answers.items()}
        report.bad_answers = load.bad
        report.unreachable = load.unreachable
        report.lost = sorted(accepted - set(arrivals))
        report.duplicated = sum(1 for v in arrivals.values() if len(v) > 1)
        report.counterpart_requests = sum(len(v) for v in arrivals.values())
        report.client_retries = sum(load.answers.values()) - report.submitted
        later = [t for t in load.accepted.values() if t >= back]
        report.first_accept_after_return_s = (min(later) - back) if later else None
        first = capture.first_after(back)
        report.first_delivery_after_return_s = None if first is None else first - back
        report.drained_after_return_s = time.monotonic() - back
        report.notes.append(f"503 reasons {dict(load.reasons)}; disk full for {back - full_since:.1f} s after the "
                            f"first 503")
        report.ready_after = [ready_status(stack.gateway_url)]
        report.audit_intact, report.audit_detail = audit_verify(url, keys)
        report.shutdown = [terminate(proc, bound_s=SHUTDOWN_BOUND_S)]
        proc = None
        return report
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        stack.close()


__all__ = ["Fault", "Load", "Report", "run_counterpart_fault", "run_postgres", "wait_ready"]


# --- a backlog drained after the store's return, against the same backlog without a fault ---------


def run_backlog(tmp: Path, *, messages: int = 1000, outage_s: float | None = 20.0, drain_timeout_s: float = 300.0,
                log: Callable[[str], None] = lambda _: None) -> Report:
    """`messages` referrals queued by an API-only gateway while a worker process (`gateway worker`) is paused
    (SIGSTOP); with `outage_s`, PostgreSQL is stopped before the worker resumes and started `outage_s` later.
    Measured: from the resume (no fault) or the store's return (fault) to the first delivery and to the last."""
    cluster = PgCluster().init()
    cluster.start()
    capture = Capture()
    stack = Stack(tmp, cluster.url, wrap=capture.wrap)
    name = f"{messages} queued, PostgreSQL stopped {outage_s:.0f} s" if outage_s else f"{messages} queued, no fault"
    report = Report(name, "postgresql")
    procs: list[subprocess.Popen] = []
    try:
        stack.gateway_sock.close()
        api = stack.spawn_gateway(stack.gateway_port, GATEWAY_WORKER="false")
        procs.append(api)
        worker = subprocess.Popen([sys.executable, "-m", "gateway", "worker"],
                                  env=stack.env(GATEWAY_LOG_LEVEL=os.environ.get("FAULTS_WORKER_LOG", "WARNING")),
                                  cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=open(tmp / "worker.log", "ab"))
        procs.append(worker)
        samples = SampleCases(seed=17)
        cases = _kz35_cases(samples, 50)
        warm = Load([stack.gateway_url], stack.auth, cases, rate=300).start()
        warm.join(60)
        probe = [samples.shelter_referral(c["case_id"]) for c in cases[:10]]
        Load([stack.gateway_url], stack.auth, probe, rate=300).start().join(60)
        wait_for(lambda: {m["message_id"] for m in probe} <= capture.delivered(), timeout=60,
                 what="the worker delivering")
        worker.send_signal(signal.SIGSTOP)
        referrals = [samples.shelter_referral(cases[i % len(cases)]["case_id"]) for i in range(messages)]
        ids = {r["message_id"] for r in referrals}
        load = Load([stack.gateway_url], stack.auth, referrals, rate=1000).start()
        load.join(300)
        assert len(load.accepted) == messages and not load.bad, load.bad[:3]
        if outage_s:
            cluster.stop()
            worker.send_signal(signal.SIGCONT)
            time.sleep(outage_s)  # the outage lasts this long
            start = cluster.start()
        else:
            start = time.monotonic()
            worker.send_signal(signal.SIGCONT)
        try:
            wait_for(lambda: ids <= capture.delivered(), timeout=drain_timeout_s, interval=0.05,
                     what="the backlog delivered")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {_stuck(cluster.url, [], ids - capture.delivered())}") from None
        done = time.monotonic()
        arrivals = {k: v for k, v in capture.snapshot().items() if k in ids}
        first = min(a.at for v in arrivals.values() for a in v)
        report.submitted = report.accepted = messages
        report.lost = sorted(ids - capture.delivered())
        report.duplicated = sum(1 for v in arrivals.values() if len(v) > 1)
        report.counterpart_requests = sum(len(v) for v in arrivals.values())
        report.first_delivery_after_return_s = first - start
        report.drained_after_return_s = done - start
        report.notes.append(f"drain rate {messages / (done - first):.0f} referrals/s from the first delivery")
        report.audit_intact, report.audit_detail = audit_verify(cluster.url, tmp / "no-keys")
        report.shutdown = [terminate(p, bound_s=30) for p in procs]
        procs = []
        log(f"backlog drained in {done - start:.1f} s")
        return report
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait(timeout=10)
        stack.close()
        cluster.close()
