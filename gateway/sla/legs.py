"""The SLA leg record (one start, its deadline and stop) and the statuses a leg can have."""

from __future__ import annotations

from typing import NamedTuple

STATUSES = ("met", "breached", "open", "overdue")


class Leg(NamedTuple):
    """A tuple, not a class with slots: a year's report holds half a million and sorts and counts them in C."""

    case_id: str
    rule: str
    start_message_id: str
    start_at: int  # µs since the epoch, UTC
    deadline_at: int
    stop_message_id: str | None
    stop_at: int | None
    status: str
    elapsed_us: int  # stop − start; for a leg not stopped, as_of − start (time waited so far)
    counterpart: str  # who the leg waits on (KPI per counterpart); not in the report's legs
    region: str  # the case's region (KPI per region); not in the report's legs
