"""SQLite's own faults: the disk fills up under load (503 disk full, nothing accepted lost, recovery with space)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.faults.scenarios import SHUTDOWN_BOUND_S, mount_small_disk, run_sqlite_disk_full

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    why = mount_small_disk(disk)
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (the disk-full scenario is mandatory in CI)")
        pytest.skip(why)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_disk_full_answers_503_loses_nothing_and_recovers(tmp_path: Path, small_disk: Path) -> None:
    report = run_sqlite_disk_full(tmp_path, disk=small_disk)
    print("\n" + "\n".join(report.lines()))
    assert report.bad_answers == [] and report.unreachable == 0
    assert any(k.startswith("503 store-unavailable") for k in report.answers), report.answers
    assert report.accepted == report.submitted, "a submission was never accepted after space came back"
    assert report.lost == []
    assert report.ready_after == [200]
    assert report.shutdown[0][0] == 0 and report.shutdown[0][1] <= SHUTDOWN_BOUND_S
    assert report.audit_intact, report.audit_detail
