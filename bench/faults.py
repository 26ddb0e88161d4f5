"""Fault suite runner: the store going away, crashes and counterpart faults under load, each with its report.

    .venv/bin/python -m bench.faults                 # every scenario, long versions (about 6 minutes)
    .venv/bin/python -m bench.faults pg-stop backlog # some of them

Each prints what was submitted and accepted, the answers the Probation IS got, lost and duplicated messages
(and whether each duplicate was in flight at the fault), the retry load and the time to recover. The same
scenarios run shortened in the test suite (tests/faults/). Needs initdb/pg_ctl (a throw-away cluster on a free
port) and, for disk-full, root (a small tmpfs).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from gateway.config import ROOT
from tests.faults.scenarios import (
    Fault,
    Report,
    mount_small_disk,
    run_backlog,
    run_counterpart_fault,
    run_postgres,
    run_sqlite_disk_full,
)


def _pg(fault: Fault, **kw: object) -> Callable[[Path], Report]:
    return lambda tmp: run_postgres(tmp, fault=fault, retry_cap_s=5.0, log=print, **kw)  # type: ignore[arg-type]


def _disk_full(tmp: Path) -> Report:
    disk = tmp / "disk"
    why = mount_small_disk(disk)
    if why:
        raise SystemExit(f"disk-full: {why}")
    try:
        return run_sqlite_disk_full(tmp, disk=disk, messages=600, full_s=15.0)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


SCENARIOS: dict[str, Callable[[Path], Report]] = {
    "pg-stop": _pg(Fault("PostgreSQL stopped for 20 s (pg_ctl stop -m immediate)", (20.0,)), rate=20.0, before=200),
    "pg-stop-two": _pg(Fault("PostgreSQL stopped for 20 s", (20.0,)), gateways=2, rate=20.0, before=200),
    "pg-restart-twice": _pg(Fault("PostgreSQL restarted twice in a minute (5 s down, 30 s apart)", (5.0, 5.0),
                                  gap_s=30.0), rate=20.0, before=200),
    "sigterm-outage": _pg(Fault("SIGTERM during a 20 s PostgreSQL outage, then after it", (20.0,),
                                sigterm_during=True), rate=20.0, before=200),
    "disk-full": _disk_full,
    "storm": lambda tmp: run_counterpart_fault(tmp, name="60 s 503 storm at МИО", fault_s=60.0, messages=1500,
                                               sim={"storm_count": 1_000_000, "retry_after": "1"}),
    "cuts": lambda tmp: run_counterpart_fault(tmp, name="20 s of connections cut before the answer", fault_s=20.0,
                                              sim={"reset_count": 1_000_000}, messages=600),
    "backlog": lambda tmp: run_backlog(tmp, outage_s=None),
    "backlog-fault": lambda tmp: run_backlog(tmp, outage_s=20.0),
}
# Crashes are the suite's SIGKILL scenarios (1,000 queued; two gateways, one killed), run as they are in CI.
CRASH_TESTS = "tests/integration/test_crash_and_scale.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", help=f"default: all of {', '.join([*SCENARIOS, 'crash'])}")
    args = parser.parse_args()
    chosen = args.scenarios or [*SCENARIOS, "crash"]
    unknown = [n for n in chosen if n not in SCENARIOS and n != "crash"]
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    failed = []
    for name in chosen:
        t0 = time.monotonic()
        print(f"\n=== {name}", flush=True)
        if name == "crash":
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", CRASH_TESTS],
                                  cwd=ROOT)
            if done.returncode:
                failed.append(name)
            continue
        with tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as tmp:
            try:
                report = SCENARIOS[name](Path(tmp))
            except Exception as exc:  # noqa: BLE001
                print(f"  FAILED: {type(exc).__name__}: {exc}", flush=True)
                failed.append(name)
                continue
        print("\n".join(report.lines()), flush=True)
        print(f"  ({time.monotonic() - t0:.0f} s)", flush=True)
        if report.lost or report.bad_answers or report.audit_intact is False:
            failed.append(name)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
