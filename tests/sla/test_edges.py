"""Edge cases of pairing start and stop events, each on its own."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from gateway.canonical.messages import parse_message
from gateway.sla.calendar import ALMATY, local_date, to_us
from gateway.sla.engine import compute_report
from gateway.sla.events import event_from_message
from tests.sla.factory import CONFIG, legs, msg, report, t

CASE = "KRG-2026-000123"


def _legal_risk(at: datetime, risk_id: str = "R-1") -> dict:
    return msg("risk.detected", CASE, at, risk_id=risk_id, domain="legal", level="R3", trigger="no_documents")


def test_out_of_order_arrival_is_irrelevant() -> None:
    reg = msg("case.registered", CASE, t("2026-03-02T09:15:00+05:00"))
    risk = _legal_risk(t("2026-03-02T10:00:00+05:00"))
    req = msg("referral.requested", CASE, t("2026-03-02T10:05:00+05:00"), referral_id="F-1",
              kind="document.restore", risk_id="R-1")
    acc = msg("referral.accepted", CASE, t("2026-03-02T18:00:00+05:00"), referral_id="F-1")
    plan = msg("plan.approved", CASE, t("2026-03-04T12:00:00+05:00"), plan_id="P-1")
    as_of = t("2026-03-10T00:00:00Z")
    in_order = report([reg, risk, req, acc, plan], as_of)
    # The reply arrives before its request, the plan before the registration: business time decides.
    reversed_ = report([plan, acc, req, risk, reg], as_of)
    assert reversed_.to_json() == in_order.to_json()
    (legal,) = legs(in_order, "legal.first_action")
    assert (legal["status"], legal["stop_message_id"], legal["elapsed_seconds"]) == ("met", acc["message_id"], 8 * 3600)
    (ipr,) = legs(in_order, "ipr")
    assert (ipr["status"], ipr["stop_message_id"]) == ("met", plan["message_id"])


def test_a_duplicated_message_counts_once() -> None:
    reg = msg("case.registered", CASE, t("2026-03-02T09:15:00+05:00"))
    risk = _legal_risk(t("2026-03-02T10:00:00+05:00"))
    as_of = t("2026-03-20T00:00:00Z")
    once = report([reg, risk], as_of)
    twice = report([reg, risk, dict(reg), dict(risk), dict(risk)], as_of)
    assert twice.to_json() == once.to_json()
    assert [leg["rule"] for leg in legs(twice)] == ["ipr", "medical.routing", "critical.documents", "critical.income",
                                                    "legal.first_action"]
    assert twice.summary["legal.first_action"]["overdue"] == 1


def test_a_stop_dated_before_its_start_is_not_eligible() -> None:
    plan = msg("plan.approved", CASE, t("2026-03-01T17:00:00+05:00"), plan_id="P-0")
    reg = msg("case.registered", CASE, t("2026-03-02T09:15:00+05:00"))
    (ipr,) = legs(report([plan, reg], t("2026-03-03T00:00:00Z")), "ipr")
    assert (ipr["status"], ipr["stop_message_id"], ipr["stop_at"]) == ("open", None, None)
    # A later plan does stop it, even though an earlier (ineligible) one exists.
    later = msg("plan.approved", CASE, t("2026-03-03T11:00:00+05:00"), plan_id="P-1")
    (ipr,) = legs(report([plan, reg, later], t("2026-03-10T00:00:00Z")), "ipr")
    assert (ipr["status"], ipr["stop_message_id"]) == ("met", later["message_id"])


def test_no_reply_is_open_before_the_deadline_and_overdue_after() -> None:
    risk = _legal_risk(t("2026-03-02T10:00:00+05:00"))
    (leg,) = legs(report([risk], t("2026-03-03T04:59:59Z")), "legal.first_action")
    assert (leg["status"], leg["deadline_at"], leg["elapsed_seconds"]) == ("open", "2026-03-03T05:00:00Z", 86399.0)
    (leg,) = legs(report([risk], t("2026-03-03T05:00:00Z")), "legal.first_action")
    assert leg["status"] == "open"  # the deadline itself has not passed yet
    (leg,) = legs(report([risk], t("2026-03-03T05:00:00.000001Z")), "legal.first_action")
    assert leg["status"] == "overdue" and leg["stop_message_id"] is None
    rep = report([risk], t("2026-03-04T00:00:00Z"))
    assert rep.summary["legal.first_action"] == {"met": 0, "breached": 0, "open": 0, "overdue": 1, "compliance": 0.0}


def test_a_rejected_referral_does_not_stop_a_leg() -> None:
    risk = msg("risk.detected", CASE, t("2026-03-02T10:00:00+05:00"), risk_id="R-9", domain="housing",
               level="R3", trigger="homeless")
    req = msg("referral.requested", CASE, t("2026-03-02T10:01:00+05:00"), referral_id="F-9",
              kind="shelter.placement", risk_id="R-9")
    rej = msg("referral.rejected", CASE, t("2026-03-02T12:00:00+05:00"), referral_id="F-9", reason="no beds")
    (leg,) = legs(report([risk, req, rej], t("2026-03-05T00:00:00Z")), "housing.placement")
    assert (leg["status"], leg["stop_message_id"]) == ("overdue", None)
    req2 = msg("referral.requested", CASE, t("2026-03-02T12:05:00+05:00"), referral_id="F-10",
               kind="shelter.placement", risk_id="R-9")
    done = msg("referral.completed", CASE, t("2026-03-05T09:00:00+05:00"), referral_id="F-10")
    (leg,) = legs(report([risk, req, rej, req2, done], t("2026-03-06T00:00:00Z")), "housing.placement")
    assert (leg["status"], leg["stop_message_id"]) == ("breached", done["message_id"])


def test_a_reply_linked_to_another_risk_does_not_stop_the_leg() -> None:
    r1 = _legal_risk(t("2026-03-02T10:00:00+05:00"), "R-1")
    r2 = _legal_risk(t("2026-03-02T10:30:00+05:00"), "R-2")
    req = msg("referral.requested", CASE, t("2026-03-02T10:31:00+05:00"), referral_id="F-2",
              kind="registration.temporary", risk_id="R-2")
    # The reply carries another case_id: it belongs to its request's case, kind and risk all the same.
    acc = msg("referral.accepted", "somebody-else", t("2026-03-02T11:00:00+05:00"), referral_id="F-2")
    by_start = {leg["start_message_id"]: leg for leg in legs(report([r1, r2, req, acc], t("2026-03-04T00:00:00Z")))}
    assert by_start[r1["message_id"]]["status"] == "overdue"
    assert by_start[r2["message_id"]]["status"] == "met"
    assert by_start[r2["message_id"]]["stop_message_id"] == acc["message_id"]
    assert by_start[r2["message_id"]]["case_id"] == CASE


def test_a_reply_whose_request_is_unknown_stops_nothing_and_is_counted() -> None:
    r1 = _legal_risk(t("2026-03-02T10:00:00+05:00"))
    acc = msg("referral.accepted", CASE, t("2026-03-02T11:00:00+05:00"), referral_id="F-unknown")
    rep = report([r1, acc], t("2026-03-04T00:00:00Z"))
    assert legs(rep)[0]["status"] == "overdue" and rep.kpi["unmatched_replies"] == 1


def test_a_stop_exactly_on_the_deadline_is_met_and_a_microsecond_later_breached() -> None:
    r1 = _legal_risk(t("2026-03-02T10:00:00.250000+05:00"))
    req = msg("referral.requested", CASE, t("2026-03-02T10:01:00+05:00"), referral_id="F-1",
              kind="document.restore", risk_id="R-1")
    on_time = msg("referral.accepted", CASE, t("2026-03-03T05:00:00.250000Z"), referral_id="F-1")
    (leg,) = legs(report([r1, req, on_time], t("2026-03-10T00:00:00Z")), "legal.first_action")
    assert (leg["status"], leg["deadline_at"], leg["stop_at"]) == ("met", "2026-03-03T05:00:00.250Z",
                                                                  "2026-03-03T05:00:00.250Z")
    late = msg("referral.accepted", CASE, t("2026-03-03T05:00:00.250001Z"), referral_id="F-1")
    (leg,) = legs(report([r1, req, late], t("2026-03-10T00:00:00Z")), "legal.first_action")
    assert leg["status"] == "breached"


def test_ipr_registered_late_on_new_years_eve_before_holidays_and_a_transferred_day_off() -> None:
    # 2024-12-31 23:00 Almaty. Jan 1-2 holidays; Fri Jan 3 off (transferred from Sun Jan 5, which is worked);
    # Mon Jan 6 worked; Tue Jan 7 Christmas. The 3rd working day after Dec 31: Jan 5, Jan 6, Jan 8.
    reg = msg("case.registered", CASE, t("2024-12-31T23:00:00+05:00"))
    plan = msg("plan.approved", CASE, t("2025-01-08T23:59:59.999+05:00"), plan_id="P-1")
    (ipr,) = legs(report([reg, plan], t("2025-02-01T00:00:00Z")), "ipr")
    assert ipr["deadline_at"] == "2025-01-08T18:59:59.999Z"
    assert ipr["status"] == "met"  # a plan at 23:59:59.999 local of the 3rd working day is on time
    late = msg("plan.approved", CASE, t("2025-01-09T00:00:00+05:00"), plan_id="P-2")
    (ipr,) = legs(report([reg, late], t("2025-02-01T00:00:00Z")), "ipr")
    assert ipr["status"] == "breached"


def test_ipr_counts_from_the_local_registration_date_around_the_may_2024_transfer() -> None:
    # Sat 2024-05-04 was a working day (day off moved to Wed May 8); May 7 and 9 are holidays.
    friday_night = msg("case.registered", CASE, t("2024-05-03T23:30:00+05:00"))  # local date May 3
    (ipr,) = legs(report([friday_night], t("2024-06-01T00:00:00Z")), "ipr")
    assert ipr["deadline_at"] == "2024-05-10T18:59:59.999Z"  # May 4, May 6, May 10
    # 00:30 local on May 4 is still May 3 in UTC: the local date (May 4) counts, so May 6, 10, 13.
    after_midnight = msg("case.registered", CASE, t("2024-05-04T00:30:00+05:00"))
    (ipr,) = legs(report([after_midnight], t("2024-06-01T00:00:00Z")), "ipr")
    assert ipr["start_at"] == "2024-05-03T19:30:00Z"
    assert ipr["deadline_at"] == "2024-05-13T18:59:59.999Z"


def test_the_night_of_2024_02_29_when_almaty_moved_from_utc6_to_utc5() -> None:
    assert datetime(2024, 2, 29, 12, tzinfo=ALMATY).utcoffset() == timedelta(hours=6)
    assert datetime(2024, 3, 1, 12, tzinfo=ALMATY).utcoffset() == timedelta(hours=5)
    # 17:59:59Z is 23:59:59 (+06) on Feb 29; at 18:00Z clocks went back to 23:00 (+05), still Feb 29.
    assert local_date(to_us(t("2024-02-29T18:30:00Z"))) == date(2024, 2, 29)
    assert local_date(to_us(t("2024-02-29T19:00:00Z"))) == date(2024, 3, 1)

    before = msg("case.registered", CASE, t("2024-02-29T23:30:00+06:00"))
    assert before["occurred_at"] == "2024-02-29T23:30:00+06:00"  # shown in Asia/Almaty with the offset of then
    (ipr,) = legs(report([before], t("2024-04-01T00:00:00Z")), "ipr")
    assert ipr["start_at"] == "2024-02-29T17:30:00Z"
    assert ipr["deadline_at"] == "2024-03-05T18:59:59.999Z"  # Mar 1, 4, 5; the day ends at +05 now
    after = msg("case.registered", CASE, t("2024-03-01T00:30:00+05:00"))
    (ipr,) = legs(report([after], t("2024-04-01T00:00:00Z")), "ipr")
    assert ipr["deadline_at"] == "2024-03-06T18:59:59.999Z"  # Mar 4, 5, 6

    # Elapsed time is real time: 23:30 (+06) to 00:30 (+05) the next local day is two hours, not one.
    risk = msg("risk.detected", CASE, t("2024-02-29T23:30:00+06:00"), risk_id="R-1", domain="legal",
               level="R3", trigger="no_documents")
    req = msg("referral.requested", CASE, t("2024-02-29T23:31:00+06:00"), referral_id="F-1",
              kind="document.restore", risk_id="R-1")
    acc = msg("referral.accepted", CASE, t("2024-03-01T00:30:00+05:00"), referral_id="F-1")
    (leg,) = legs(report([risk, req, acc], t("2024-04-01T00:00:00Z")), "legal.first_action")
    assert leg["elapsed_seconds"] == 7200.0


def test_typed_canonical_messages_feed_the_engine_like_file_lines() -> None:
    raw = [msg("case.registered", CASE, t("2026-03-02T09:15:00+05:00")),
           msg("plan.approved", CASE, t("2026-03-03T09:15:00+05:00"), plan_id="P-1")]
    raw[0]["body"]["person"]["iin"] = "900101300017"  # a typed message needs a valid IIN
    events = [event_from_message(parse_message(m)) for m in raw]
    as_of = t("2026-03-10T00:00:00Z")
    typed = compute_report(events=events, policy=CONFIG.policy, calendar=CONFIG.calendar, kinds=CONFIG.kinds,
                           as_of=as_of)
    assert typed.to_json() == report(raw, as_of).to_json()
    assert typed.to_dict()["as_of"] == "2026-03-10T00:00:00Z"


def test_events_after_as_of_have_not_happened_yet() -> None:
    reg = msg("case.registered", CASE, t("2026-03-02T09:15:00+05:00"))
    plan = msg("plan.approved", CASE, t("2026-03-03T09:15:00+05:00"), plan_id="P-1")
    rep = report([reg, plan], t("2026-03-03T00:00:00+05:00"))
    (ipr,) = legs(rep, "ipr")
    assert ipr["status"] == "open" and ipr["stop_message_id"] is None
    assert legs(report([reg, plan], t("2026-03-01T00:00:00Z"))) == []  # not registered yet as of then


def test_as_of_shown_in_utc() -> None:
    rep = report([], datetime(2026, 3, 2, 9, 15, tzinfo=ALMATY))
    assert rep.to_dict()["as_of"] == "2026-03-02T04:15:00Z"
    assert all(s["compliance"] is None for s in rep.summary.values())
    assert list(rep.summary) == list(CONFIG.policy.rules)
