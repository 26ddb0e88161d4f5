"""Kazakhstan's working-day calendar (holidays' KZ + mappings/calendar-kz.yaml) and Asia/Almaty local time."""

from __future__ import annotations

import importlib.resources
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays
from pydantic import Field, model_validator

from gateway.canonical.errors import ConfigError
from gateway.mapping import _Strict
from gateway.mapping import load_yaml_file

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)


def _almaty() -> ZoneInfo:
    # Prefer the pinned tzdata package over the OS copy: an old system tzdata still says UTC+6 after 2024-03-01.
    try:
        with importlib.resources.files("tzdata").joinpath("zoneinfo/Asia/Almaty").open("rb") as f:
            return ZoneInfo.from_file(f, key="Asia/Almaty")
    except (ModuleNotFoundError, FileNotFoundError):
        return ZoneInfo("Asia/Almaty")


ALMATY = _almaty()


def to_us(dt: datetime) -> int:
    """Microseconds since the epoch (UTC) of an aware datetime; exact, unlike float timestamps."""
    return (dt - EPOCH) // ONE_US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def local_date(us: int) -> date:
    """The Asia/Almaty calendar date of an instant."""
    return from_us(us).astimezone(ALMATY).date()


class CalendarOverrides(_Strict):
    """Government decrees newer than the pinned `holidays` package: extra days off and extra working days."""

    version: int = Field(ge=1)
    days_off: dict[date, str] = Field(default_factory=dict, description="date -> the decree or reason")
    working_days: dict[date, str] = Field(default_factory=dict, description="date -> the decree or reason")

    @model_validator(mode="after")
    def _disjoint(self) -> CalendarOverrides:
        both = sorted(set(self.days_off) & set(self.working_days))
        if both:
            raise ValueError(f"working_days: {', '.join(map(str, both))} also listed in days_off")
        return self


class WorkingCalendar:
    """Working days in Kazakhstan: weekdays that are not holidays, plus weekend days made working by decree."""

    def __init__(self, *, overrides: CalendarOverrides | None = None) -> None:
        self._overrides = overrides or CalendarOverrides(version=1)
        # Transfers (e.g. 2024-05-08 off, Saturday 2024-05-04 worked) are in holidays' `weekend_workdays`.
        self._kz = holidays.country_holidays("KZ")
        self._years: set[int] = set()
        self._nth_cache: dict[tuple[date, int], date] = {}

    def _ensure(self, year: int) -> None:
        if year not in self._years:
            # A transfer may move a working Saturday into the previous year (2014 decree: 2013-12-28 worked).
            for y in (year, year + 1):
                _ = date(y, 1, 1) in self._kz  # `in` populates a year lazily, weekend_workdays included
            self._years.add(year)

    def is_working_day(self, day: date) -> bool:
        if day in self._overrides.working_days:
            return True
        if day in self._overrides.days_off:
            return False
        self._ensure(day.year)
        if day.weekday() >= 5:
            return day in self._kz.weekend_workdays
        return day not in self._kz

    def nth_working_day_after(self, day: date, n: int) -> date:
        """The Nth working day strictly after `day`."""
        key = (day, n)
        found = self._nth_cache.get(key)
        if found is None:
            found, left = day, n
            while left:
                found += timedelta(days=1)
                if self.is_working_day(found):
                    left -= 1
            self._nth_cache[key] = found
        return found

    def working_days_deadline_us(self, start_us: int, n: int) -> int:
        """End (23:59:59.999 Asia/Almaty) of the Nth working day after the local date of `start_us`."""
        last = self.nth_working_day_after(local_date(start_us), n)
        next_midnight = datetime.combine(last + timedelta(days=1), time(0), tzinfo=ALMATY)
        return to_us(next_midnight) - 1000


def load_calendar(path: Path) -> WorkingCalendar:
    """Load `calendar-kz.yaml`; raise ConfigError naming the file and each bad field."""
    errors: list[str] = []
    overrides = load_yaml_file(path, CalendarOverrides, errors)
    if errors:
        raise ConfigError("invalid mappings:\n" + "\n".join(f"  {e}" for e in errors))
    return WorkingCalendar(overrides=overrides)  # type: ignore[arg-type]
