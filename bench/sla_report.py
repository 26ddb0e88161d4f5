"""`gateway sla report` over 1,000,000 events: wall time and peak RSS, against reading + parsing the same file.

Usage: .venv/bin/python -m bench.sla_report [--events 1000000] [--seed 7] [--keep FILE]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from gateway.config import ROOT

ALMATY_OFFSET = timezone(timedelta(hours=5))
REGIONS = ["KZ-35"] * 2 + ["KZ-71", "KZ-75"]
# Barriers of the white paper's survey (BRIEF 6): employment 68%, housing 42%, legal 35%; medical/psych help 65%.
RISKS = [("economic", 0.68, "employment.track"), ("housing", 0.42, "shelter.placement"),
         ("legal", 0.35, "document.restore"), ("medical", 0.42, "health.screening")]


def _case(rng: random.Random, n: int, t0: datetime) -> list[dict[str, Any]]:
    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    case_id = f"{rng.choice(REGIONS)[3:]}-2025-{n:07d}"
    reg = t0 + timedelta(seconds=rng.randrange(300 * 86400))

    def msg(type_: str, at: datetime, body: dict[str, Any]) -> dict[str, Any]:
        return {"message_id": uid(), "type": type_, "case_id": case_id,
                "occurred_at": at.astimezone(ALMATY_OFFSET).isoformat(), "body": body,
                "received_at": (at + timedelta(seconds=rng.randrange(1, 120))).astimezone(UTC)
                .isoformat().replace("+00:00", "Z")}

    out = [msg("case.registered", reg, {
        "region": f"KZ-{case_id[:2]}", "release_date": (reg - timedelta(days=rng.randrange(20))).date().isoformat(),
        "has_minor_children": rng.random() < 0.72,
        "person": {"iin": "9001013*****", "surname": "Ахметова", "given_name": "Айгүл", "birth_date": "1990-01-01",
                   "sex": "female"}})]
    if rng.random() < 0.9:
        out.append(msg("plan.approved", reg + timedelta(hours=rng.uniform(2, 150)), {"plan_id": uid()}))
    for domain, p, kind in RISKS:
        if rng.random() >= p:
            continue
        risk_id = f"R-{uid()[:8]}"
        at = reg + timedelta(hours=rng.uniform(1, 400))
        out.append(msg("risk.detected", at, {"risk_id": risk_id, "domain": domain, "level": rng.choice(["R1", "R2", "R3", "R3"]),
                                             "trigger": "survey"}))
        for k in (kind, "psych.support") if domain == "medical" else (kind,):
            ref = f"F-{uid()[:12]}"
            req_at = at + timedelta(minutes=rng.uniform(1, 60))
            out.append(msg("referral.requested", req_at, {"referral_id": ref, "kind": k, "risk_id": risk_id}))
            roll = rng.random()
            if roll < 0.1:
                out.append(msg("referral.rejected", req_at + timedelta(hours=rng.uniform(1, 48)),
                               {"referral_id": ref, "reason": "no capacity"}))
            elif roll < 0.9:
                acc_at = req_at + timedelta(hours=rng.expovariate(1 / 20))
                out.append(msg("referral.accepted", acc_at, {"referral_id": ref}))
                if rng.random() < 0.7:
                    out.append(msg("referral.completed", acc_at + timedelta(hours=rng.expovariate(1 / 40)),
                                   {"referral_id": ref, "outcome": "done"}))
        if rng.random() < 0.5:
            out.append(msg("risk.closed", at + timedelta(days=rng.uniform(1, 120)), {"risk_id": risk_id}))
    if rng.random() < 0.03:  # re-sent messages: the same message_id counts once
        out.append(dict(rng.choice(out)))
    rng.shuffle(out)  # arrival order is not business order
    return out


def generate(total: int, *, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    written, n = 0, 0
    while written < total:
        n += 1
        for doc in _case(rng, n, t0):
            if written == total:
                return
            yield orjson.dumps(doc) + b"\n"
            written += 1


BASELINE = """
import sys, orjson
from datetime import datetime
n = 0  # counted so the loop cannot be optimised away
with open(sys.argv[1], 'rb') as f:
    for line in f:
        doc = orjson.loads(line)
        datetime.fromisoformat(doc['occurred_at'])
        n += 1
"""


def _pss_kib(pid: int) -> int:
    """Proportional set size: pages shared with a forked child count half to each, so a sum is real memory."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
    except OSError:
        return 0


def _tree_rss_kib(pid: int) -> int:
    """PSS of a process plus its children (the report forks a parser, then a renderer), from /proc."""
    total = _pss_kib(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            total += sum(_pss_kib(int(c)) for c in f.read().split())
    except OSError:
        pass
    return total


def _run(args: list[str], out: Path, *, sample: bool = False) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MiB) from wait4, and the sampled peak of the process tree's summed PSS (MiB).

    wait4's ru_maxrss counts waited-for descendants as a maximum, not a sum: the report's forked children are
    more processes, so with `sample` the tree's PSS sum is sampled too (every 50 ms, so a short peak may be
    missed). Reading smaps costs CPU on this 2-core machine, so a sampled run's wall time is not reported.
    """
    start = time.perf_counter()
    peak_tree = 0
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=sink)
        while True:
            pid, status, usage = os.wait4(proc.pid, 0 if not sample else os.WNOHANG)
            if pid:
                break
            peak_tree = max(peak_tree, _tree_rss_kib(proc.pid))
            time.sleep(0.05)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    if proc.returncode != 0:
        raise SystemExit(f"{args} failed with {proc.returncode}")
    return wall, usage.ru_maxrss / 1024, peak_tree / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--as-of", default="2026-01-01T00:00:00Z")
    parser.add_argument("--keep", type=Path, help="write the events file here and keep it")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        events = opts.keep or Path(tmp) / "events.jsonl"
        t = time.perf_counter()
        with events.open("wb") as f:
            for line in generate(opts.events, seed=opts.seed):
                f.write(line)
        size = events.stat().st_size / 2**20
        print(f"generated {opts.events} events ({size:.0f} MiB) in {time.perf_counter() - t:.1f} s")
        base_wall, base_rss, _ = _run(["-c", BASELINE, str(events)], Path(tmp) / "baseline.out")
        print(f"baseline (read + orjson.loads + parse occurred_at): {base_wall:.2f} s, peak RSS {base_rss:.0f} MiB")
        for fmt in ("json", "csv"):
            out = Path(tmp) / f"report.{fmt}"
            args = ["-m", "gateway", "sla", "report", "--events", str(events), "--as-of", opts.as_of, "--format", fmt]
            wall, rss, _ = _run(args, out)
            _, _, tree = _run(args, out, sample=True)
            print(f"gateway sla report --format {fmt}: {wall:.2f} s, peak RSS {rss:.0f} MiB (largest process;"
                  f" PSS sum of the process tree, sampled in a second run: {tree:.0f} MiB),"
                  f" {out.stat().st_size / 2**20:.0f} MiB out; {wall / base_wall:.2f}x baseline")
        # Read only after every run: a child forked from a bench holding this report would start with its RSS.
        report = orjson.loads((Path(tmp) / "report.json").read_bytes())
        print(f"legs {len(report['legs'])}; compliance "
              + ", ".join(f"{k}: {v['compliance'] if v['compliance'] is None else round(v['compliance'], 3)}"
                          for k, v in report["summary"].items()))

if __name__ == "__main__":
    main()
