"""sla.yaml and calendar-kz.yaml are schema-checked; every error names the file and the field."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from gateway.canonical.errors import ConfigError
from gateway.config import ROOT
from gateway.sla.calendar import load_calendar
from gateway.sla.policy import load_sla_config, load_sla_policy

GOOD_RULE = """
  ipr:
    start: {type: case.registered}
    stop: {type: plan.approved}
    limit: {working_days: 3}
"""


def _error(loader, path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        loader(path)
    return str(info.value)


def test_the_repository_policy_is_the_brief_default() -> None:
    policy = load_sla_policy(ROOT / "gateway" / "mappings" / "sla.yaml")
    assert list(policy.rules) == ["ipr", "legal.first_action", "housing.placement", "economic.track",
                                  "medical.routing", "critical.documents", "critical.income"]
    housing = policy.rules["housing.placement"]
    assert (housing.start.domain, housing.start.levels, housing.stop.type, housing.stop.kinds,
            housing.stop.linked_to_risk, housing.limit.hours) == (
        "housing", ("R2", "R3"), "referral.completed", ("shelter.placement",), True, 48)
    assert policy.rules["critical.income"].limit.duration_us == 60 * 86_400_000_000


def test_an_unknown_field_is_named(tmp_path: Path) -> None:
    path = tmp_path / "sla.yaml"
    text = "version: 1\nrules:" + GOOD_RULE.replace("limit: {working_days: 3}", "limit: {weeks: 3}")
    message = _error(load_sla_policy, path, text)
    assert f"{path}: rules.ipr.limit.weeks: Extra inputs are not permitted" in message


def test_a_limit_with_two_kinds_of_duration_is_named(tmp_path: Path) -> None:
    path = tmp_path / "sla.yaml"
    message = _error(load_sla_policy, path, "version: 1\nrules:" + GOOD_RULE.replace(
        "{working_days: 3}", "{working_days: 3, hours: 24}"))
    assert f"{path}: rules.ipr.limit:" in message and "exactly one of hours, days, working_days" in message


def test_a_filter_the_start_type_cannot_have_is_named(tmp_path: Path) -> None:
    path = tmp_path / "sla.yaml"
    message = _error(load_sla_policy, path, "version: 1\nrules:" + GOOD_RULE.replace(
        "start: {type: case.registered}", "start: {type: case.registered, domain: legal}"))
    assert f"{path}: rules.ipr.start:" in message and "domain: only a risk.detected start has a domain" in message


def test_a_rejection_cannot_stop_a_leg_and_a_link_needs_a_risk(tmp_path: Path) -> None:
    path = tmp_path / "sla.yaml"
    message = _error(load_sla_policy, path, "version: 1\nrules:" + GOOD_RULE.replace(
        "stop: {type: plan.approved}", "stop: {type: referral.rejected}"))
    assert f"{path}: rules.ipr.stop.type:" in message
    message = _error(load_sla_policy, path, "version: 1\nrules:" + GOOD_RULE.replace(
        "stop: {type: plan.approved}", "stop: {type: referral.accepted, linked_to_risk: true}"))
    assert f"{path}: rules.ipr:" in message and "stop.linked_to_risk" in message


def test_missing_version_unknown_kind_and_duplicate_key_are_named(tmp_path: Path) -> None:
    path = tmp_path / "sla.yaml"
    assert f"{path}: version: Field required" in _error(load_sla_policy, path, "rules:" + GOOD_RULE)
    message = _error(load_sla_policy, path, "version: 1\nrules:" + GOOD_RULE.replace(
        "stop: {type: plan.approved}", "stop: {type: referral.accepted, kinds: [shelter.build]}"))
    assert f"{path}: rules.ipr.stop.kinds.0:" in message
    assert "duplicate key 'ipr'" in _error(load_sla_policy, path, "version: 1\nrules:" + GOOD_RULE + GOOD_RULE[1:])


def test_a_policy_kind_missing_from_referral_kinds_is_named(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "gateway" / "mappings", tmp_path / "m")
    kinds = tmp_path / "m" / "referral-kinds.yaml"
    kinds.write_text("\n".join(l for l in kinds.read_text(encoding="utf-8").splitlines()
                               if not l.strip().startswith("shelter.placement")), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_sla_config(tmp_path / "m")
    assert (f"{tmp_path / 'm' / 'sla.yaml'}: rules.housing.placement.stop.kinds.0: referral kind"
            " 'shelter.placement' is not in referral-kinds.yaml") in str(info.value)


def test_calendar_errors_are_named(tmp_path: Path) -> None:
    path = tmp_path / "calendar-kz.yaml"
    message = _error(load_calendar, path, "version: 1\ndays_off: {2026-13-01: decree}\n")
    assert f"{path}: days_off.2026-13-01" in message
    message = _error(load_calendar, path, "version: 1\nworking_days: {2026-01-03: x}\ndays_off: {2026-01-03: y}\n")
    assert f"{path}: (top level): Value error, working_days: 2026-01-03 also listed in days_off" in message
    message = _error(load_calendar, path, "version: 1\nextra_days: {}\n")
    assert f"{path}: extra_days: Extra inputs are not permitted" in message
    with pytest.raises(ConfigError) as info:
        load_calendar(tmp_path / "nope.yaml")
    assert f"{tmp_path / 'nope.yaml'}: file is missing" in str(info.value)


def test_calendar_overrides_move_the_ipr_deadline(tmp_path: Path) -> None:
    base = load_calendar(ROOT / "gateway" / "mappings" / "calendar-kz.yaml")
    assert base.nth_working_day_after(date(2026, 6, 1), 3) == date(2026, 6, 4)
    path = tmp_path / "calendar-kz.yaml"
    path.write_text("version: 1\ndays_off: {2026-06-03: test decree}\nworking_days: {2026-06-06: test decree}\n",
                    encoding="utf-8")
    decreed = load_calendar(path)
    assert not decreed.is_working_day(date(2026, 6, 3)) and decreed.is_working_day(date(2026, 6, 6))
    assert decreed.nth_working_day_after(date(2026, 6, 1), 3) == date(2026, 6, 5)
    assert decreed.nth_working_day_after(date(2026, 6, 1), 4) == date(2026, 6, 6)


def test_the_package_calendar_knows_kazakhstan_transfers() -> None:
    cal = load_calendar(ROOT / "gateway" / "mappings" / "calendar-kz.yaml")
    assert cal.is_working_day(date(2024, 5, 4))  # a Saturday worked for the 2024-05-08 day off
    assert not cal.is_working_day(date(2024, 5, 8))
    assert cal.is_working_day(date(2025, 1, 5)) and not cal.is_working_day(date(2025, 1, 3))
    assert cal.is_working_day(date(2013, 12, 28))  # a 2014 decree's working Saturday falls in 2013
    assert not cal.is_working_day(date(2024, 3, 25))  # Nauryz on a Saturday moves to Monday
