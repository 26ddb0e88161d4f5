"""PostgreSQL stopped under load (one gateway, two gateways, SIGTERM during the outage), on a cluster of its own.

Short versions for CI (a 5 s outage); `python -m bench.faults` runs the long ones (20 s, restarts twice in a
minute) and prints the same report. See bench/RESULTS.md for the figures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.pgcluster import unavailable_reason
from tests.faults.scenarios import SHUTDOWN_BOUND_S, Fault, Report, run_postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

OUTAGE_S = 5.0
DRAIN_BOUND_S = 60.0  # every accepted referral delivered within this long of the store's return


@pytest.fixture(autouse=True)
def _cluster_possible() -> None:
    why = unavailable_reason()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (the fault suite is mandatory in CI)")
        pytest.skip(why)


def _check(report: Report, *, restarted: bool = False) -> None:
    print("\n" + "\n".join(report.lines()))
    assert report.bad_answers == [], "answers other than 202 and 503-with-Retry-After"
    assert report.accepted == report.submitted, "a submission was never accepted"
    assert report.lost == [], f"{len(report.lost)} accepted referrals never reached МИО"
    assert report.duplicates_not_in_flight == [], "repeats of deliveries that were not in flight at the fault"
    assert report.drained_after_return_s is not None and report.drained_after_return_s < DRAIN_BOUND_S
    assert all(status != 200 for status in report.ready_during_outage), "/readyz said ready during the outage"
    assert report.ready_after == [200] * len(report.ready_after)
    assert report.gateways_restarted is restarted
    assert all(code == 0 and took <= SHUTDOWN_BOUND_S for code, took in report.shutdown), report.shutdown
    assert report.audit_intact, report.audit_detail


def test_postgres_stopped_under_load_loses_nothing_without_a_gateway_restart(tmp_path: Path) -> None:
    report = run_postgres(tmp_path, fault=Fault(f"PostgreSQL stopped for {OUTAGE_S:.0f} s", (OUTAGE_S,)))
    _check(report)
    assert report.unreachable == 0
    assert any(k.startswith("503 store-unavailable") for k in report.answers), report.answers


def test_two_gateways_on_one_postgres_survive_it_too(tmp_path: Path) -> None:
    report = run_postgres(tmp_path, fault=Fault(f"PostgreSQL stopped for {OUTAGE_S:.0f} s", (OUTAGE_S,)), gateways=2)
    _check(report)
    assert report.unreachable == 0


def test_sigterm_during_the_outage_exits_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    report = run_postgres(tmp_path, fault=Fault("SIGTERM during a PostgreSQL outage, then after it",
                                                (OUTAGE_S,), sigterm_during=True))
    _check(report, restarted=True)
    assert len(report.shutdown) == 2  # once during the outage, once (the new process) after it
