"""KPIs (BRIEF 4) on small scenarios computed by hand."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.sla.factory import UTC, msg, report

AS_OF = datetime(2026, 12, 1, tzinfo=UTC)
T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)  # Monday 09:00 Almaty


def _risk(case: str, at: datetime, risk_id: str, domain: str, level: str = "R3") -> dict:
    return msg("risk.detected", case, at, risk_id=risk_id, domain=domain, level=level, trigger="survey")


def _referral(case: str, at: datetime, ref: str, kind: str, risk_id: str | None, reply: str | None,
              reply_at: datetime | None = None) -> list[dict]:
    out = [msg("referral.requested", case, at, referral_id=ref, kind=kind, **({"risk_id": risk_id} if risk_id else {}))]
    if reply:
        out.append(msg(reply, case, reply_at or at + timedelta(hours=1), referral_id=ref))
    return out


def test_compliance_per_rule_counterpart_and_region() -> None:
    h = timedelta(hours=1)
    a = [msg("case.registered", "A", T0, region="KZ-35"),
         msg("plan.approved", "A", T0 + 5 * h, plan_id="P"),  # ipr met (probation)
         _risk("A", T0, "RA", "legal"),
         *_referral("A", T0, "FA1", "document.restore", "RA", "referral.accepted", T0 + 30 * h),  # legal breached (con)
         *_referral("A", T0, "FA2", "health.screening", None, "referral.accepted", T0 + 2 * h)]  # medical met (health)
    b = [msg("case.registered", "B", T0, region="KZ-71"),  # ipr overdue (probation)
         _risk("B", T0, "RB", "housing"),
         *_referral("B", T0, "FB1", "shelter.placement", "RB", "referral.completed", T0 + 40 * h)]  # met (mio)
    # Both cases: critical.documents and critical.income overdue by AS_OF; B's medical.routing overdue.
    rep = report(a + b, AS_OF)
    k = rep.kpi
    assert k["compliance_by_rule"] == {"ipr": 0.5, "legal.first_action": 0.0, "housing.placement": 1.0,
                                       "economic.track": None, "medical.routing": 0.5, "critical.documents": 0.0,
                                       "critical.income": 0.0}
    by_cp = {cp: (v["met"], v["breached"], v["overdue"], v["compliance"]) for cp, v in k["compliance_by_counterpart"].items()}
    # con: legal breached + 2 documents overdue; health: A met, B overdue; mio: 1 met;
    # mtszn: 2 income overdue; probation: ipr met + overdue.
    assert by_cp == {"con": (0, 1, 2, 0.0), "health": (1, 0, 1, 0.5), "mio": (1, 0, 0, 1.0),
                     "mtszn": (0, 0, 2, 0.0), "probation": (1, 0, 1, 0.5)}
    # KZ-35 (A): ipr met, medical met, legal breached, documents + income overdue -> 2/5.
    # KZ-71 (B): housing met; ipr, medical, documents, income overdue -> 1/5.
    assert k["compliance_by_region"]["KZ-35"]["compliance"] == 2 / 5
    assert k["compliance_by_region"]["KZ-71"]["compliance"] == 1 / 5
    assert rep.summary["ipr"] == {"met": 1, "breached": 0, "open": 0, "overdue": 1, "compliance": 0.5}


def test_median_time_to_close_r3_risks() -> None:
    h = timedelta(hours=1)
    events = [msg("case.registered", "A", T0)]
    for risk_id, hours in (("R1", 10), ("R2", 40), ("R3", 20)):
        events += [_risk("A", T0, risk_id, "housing"), msg("risk.closed", "A", T0 + hours * h, risk_id=risk_id)]
    events += [_risk("A", T0, "R4", "legal"),  # R3, never closed: in `detected`, not in the median
               _risk("A", T0, "R5", "legal", level="R2"), msg("risk.closed", "A", T0 + h, risk_id="R5"),  # not R3
               msg("risk.closed", "A", T0 - h, risk_id="R6"), _risk("A", T0, "R6", "economic")]  # closed before: open
    r3 = report(events, AS_OF).kpi["r3_risks"]
    assert r3 == {"detected": 5, "closed": 3, "median_time_to_close_seconds": 20 * 3600.0}
    events.append(msg("risk.closed", "A", T0 + 30 * h, risk_id="R4"))
    assert report(events, AS_OF).kpi["r3_risks"]["median_time_to_close_seconds"] == 25 * 3600.0  # (20 + 30) / 2


def test_share_of_cases_with_legal_housing_and_economic_at_2_on_day_90() -> None:
    day = timedelta(days=1)
    events = [
        msg("case.registered", "A", T0),  # no risk at all: 2, 2, 2
        msg("case.registered", "B", T0), _risk("B", T0 + day, "RB", "housing"),  # open on day 90 with no help: 0
        msg("case.registered", "C", T0), _risk("C", T0 + day, "RC", "economic"),
        msg("risk.closed", "C", T0 + 50 * day, risk_id="RC"),  # closed by day 90: 2
        msg("case.registered", "D", T0), _risk("D", T0 + day, "RD", "legal"),
        *_referral("D", T0 + day, "FD", "document.restore", "RD", "referral.accepted"),  # open but helped: 1
        msg("case.registered", "E", T0), _risk("E", T0 + day, "RE", "legal"),
        msg("risk.closed", "E", T0 + 91 * day, risk_id="RE"),  # closed only after day 90: still open then
        msg("case.registered", "F", AS_OF - 80 * day),  # not at day 90 yet: not counted
    ]
    day90 = report(events, AS_OF).kpi["day90"]
    assert day90 == {"cases": 5, "legal_housing_economic_at_2": 2, "share": 2 / 5}


def test_integral_reintegration_index_and_successful_share_on_day_180() -> None:
    day = timedelta(days=1)
    # A: plan; R3 housing open, shelter accepted (1); legal risk closed (2); economic, medical none (2, 2);
    #    institutional: plan and the R3 risk has a linked request (2). 1 + 2 + 2 + 2 + 2 = 9, successful.
    a = [msg("case.registered", "A", T0), msg("plan.approved", "A", T0 + day, plan_id="PA"),
         _risk("A", T0, "HA", "housing"), *_referral("A", T0, "FA", "shelter.placement", "HA", "referral.accepted"),
         _risk("A", T0, "LA", "legal", level="R1"), msg("risk.closed", "A", T0 + 10 * day, risk_id="LA")]
    # B: no plan by day 180 (approved on day 200): institutional 0 -> 2+2+2+2+0 = 8, not successful.
    b = [msg("case.registered", "B", T0), msg("plan.approved", "B", T0 + 200 * day, plan_id="PB")]
    # C: plan, an R2 economic risk with no request (institutional 1, economic 0): 2+2+0+2+1 = 7, a 0: no.
    c = [msg("case.registered", "C", T0), msg("plan.approved", "C", T0 + day, plan_id="PC"),
         _risk("C", T0, "EC", "economic", level="R2")]
    # D: plan; economic R3 with employment completed (1); medical R2 with psych accepted (1); institutional 2.
    #    2 + 2 + 1 + 1 + 2 = 8, successful. A rejected housing referral does not count as help.
    d = [msg("case.registered", "D", T0), msg("plan.approved", "D", T0 + day, plan_id="PD"),
         _risk("D", T0, "ED", "economic"),
         *_referral("D", T0, "FD1", "employment.track", "ED", "referral.completed"),
         _risk("D", T0, "MD", "medical", level="R2"),
         *_referral("D", T0, "FD2", "psych.support", "MD", "referral.accepted")]
    # E: registered 100 days before AS_OF: not at day 180 yet.
    e = [msg("case.registered", "E", AS_OF - 100 * day)]
    day180 = report(a + b + c + d + e, AS_OF).kpi["day180"]
    assert day180 == {"cases": 4, "mean_reintegration_index": (9 + 8 + 7 + 8) / 4, "successful": 2,
                      "successful_share": 0.5, "index_distribution": {"7": 1, "8": 2, "9": 1}}


def test_a_rejected_referral_is_no_help_for_the_domain_score() -> None:
    day = timedelta(days=1)
    base = [msg("case.registered", "A", T0), msg("plan.approved", "A", T0 + day, plan_id="P"),
            _risk("A", T0, "HA", "housing")]
    rejected = _referral("A", T0, "F1", "shelter.placement", "HA", "referral.rejected")
    rejected[1]["body"]["reason"] = "no beds"
    # housing 0, the rest 2 -> 8 with a zero: not successful.
    assert report(base + rejected, AS_OF).kpi["day180"]["successful"] == 0
    assert report(base + rejected, AS_OF).kpi["day180"]["mean_reintegration_index"] == 8
