"""Alert rules, the firing → acknowledged → resolved state and grouping: pure, on an injected clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from gateway.alerts.model import Alert, Condition, due_groups, next_due_in, reconcile
from gateway.alerts.rules import (
    Backlog,
    CertificateFact,
    DeadLetters,
    Facts,
    LoopFact,
    OverdueLeg,
    VerificationFact,
    evaluate,
)
from gateway.mapping import AlertThresholds

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=timezone.utc)
LIMITS = AlertThresholds(circuit_open_s=60, backlog_age_s=600, certificate_days=60, dead_letter_quiet_s=300)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def tick(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


class Book:
    """A fake of the alert table: what the monitor would keep between passes (ids as the store gives them)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def step(self, conditions: list[Condition], evaluated: set[str], *, now: datetime):
        plan = reconcile(self.alerts, conditions, evaluated=evaluated, now=now)
        for alert in plan.new:
            alert.id = len(self.alerts) + 1
            self.alerts.append(alert)
        return plan

    def notify(self, *, now: datetime, wait_s: float = 10, max_wait_s: float = 60) -> dict[str, list[tuple]]:
        groups = due_groups(self.alerts, now=now, wait_s=wait_s, max_wait_s=max_wait_s)
        sent = {}
        for rule, items in groups.items():
            sent[rule] = [(a.id, a.notice(), a.count) for a in items]
            for a in items:
                a.notified = a.notice()
        return sent


def conditions(facts: Facts) -> tuple[list[Condition], set[str]]:
    return evaluate(facts, LIMITS)


def test_a_circuit_open_past_the_threshold_fires_once_then_resolves_once() -> None:
    clock, book = Clock(), Book()
    sent = []
    for open_for in (10, 30, 59):  # not yet long enough
        found, evaluated = conditions(Facts(now=clock.tick(10), breakers={"mio-kz-35": open_for}))
        assert found == [] and "circuit_open" in evaluated
        book.step(found, evaluated, now=clock.now)
    for open_for in (61, 71, 81, 91):
        book.step(*conditions(Facts(now=clock.tick(10), breakers={"mio-kz-35": open_for})), now=clock.now)
        sent.append(book.notify(now=clock.now))
    assert len(book.alerts) == 1 and book.alerts[0].state == "firing"
    assert [s for s in sent if s] == [{"circuit_open": [(1, "firing", 1)]}]  # once, after the group settled
    for _ in range(3):  # the breaker closed: resolved, and said so once
        book.step(*conditions(Facts(now=clock.tick(10), breakers={})), now=clock.now)
        sent.append(book.notify(now=clock.now))
    assert book.alerts[0].state == "resolved"
    assert [s for s in sent if s] == [{"circuit_open": [(1, "firing", 1)]}, {"circuit_open": [(1, "resolved", 1)]}]


def test_a_condition_back_after_resolution_is_a_new_firing() -> None:
    clock, book = Clock(), Book()
    down = Facts(now=clock.now, breakers={"mio-kz-35": 120})
    book.step(*conditions(down), now=clock.now)
    book.step(*conditions(Facts(now=clock.tick(5), breakers={})), now=clock.now)
    book.step(*conditions(Facts(now=clock.tick(5), breakers={"mio-kz-35": 120})), now=clock.now)
    assert [(a.id, a.state) for a in book.alerts] == [(1, "resolved"), (2, "firing")]
    # the first never reached a channel (it cleared within the grouping wait): nothing to say about it
    assert book.notify(now=clock.tick(30)) == {"circuit_open": [(2, "firing", 1)]}


def test_a_dead_letter_storm_is_one_notification_with_its_count() -> None:
    clock, book = Clock(), Book()
    sent = {}
    for count in (40, 180, 350, 500, 500, 500):  # the storm grows, then settles
        facts = Facts(now=clock.tick(3), dead_letters={"mio-kz-35": DeadLetters(count, T0, clock.now - timedelta(
            seconds=1 if count < 500 else 0))})
        book.step(*conditions(facts), now=clock.now)
        for rule, items in book.notify(now=clock.now, wait_s=5).items():
            sent.setdefault(rule, []).append(items)
    assert sent == {"dead_letter": [[(1, "firing", 500)]]}
    # quiet for longer than dead_letter_quiet_s: resolved, once
    facts = Facts(now=clock.tick(400), dead_letters={"mio-kz-35": DeadLetters(500, T0, T0 + timedelta(seconds=12))})
    book.step(*conditions(facts), now=clock.now)
    assert book.notify(now=clock.tick(10)) == {"dead_letter": [(1, "resolved", 500)]}
    assert book.notify(now=clock.tick(10)) == {}


def test_a_storm_that_never_settles_is_sent_at_max_wait() -> None:
    clock, book = Clock(), Book()
    sent = []
    for i in range(1, 30):
        facts = Facts(now=clock.tick(3), dead_letters={"x": DeadLetters(i * 10, T0, clock.now)})
        book.step(*conditions(facts), now=clock.now)
        sent.append(book.notify(now=clock.now, wait_s=5, max_wait_s=60))
    firsts = [s for s in sent if s]
    assert len(firsts) == 1 and firsts[0]["dead_letter"][0][1] == "firing"


def test_several_subjects_of_one_rule_are_grouped() -> None:
    clock, book = Clock(), Book()
    facts = Facts(now=clock.now, backlog={"a": Backlog(3, T0 - timedelta(hours=1)),
                                          "b": Backlog(7, T0 - timedelta(hours=2)),
                                          "c": Backlog(1, T0 - timedelta(seconds=5))})  # c is young: no alert
    book.step(*conditions(facts), now=clock.now)
    assert book.notify(now=clock.tick(11)) == {"backlog_age": [(1, "firing", 3), (2, "firing", 7)]}


def test_acknowledged_alerts_are_not_notified_again_until_they_get_worse() -> None:
    clock, book = Clock(), Book()
    soon = CertificateFact("pin:mio-kz-35:abcd", "mio-kz-35", "CN=mio", T0 + timedelta(days=30))
    book.step(*conditions(Facts(now=clock.now, certificates=[soon])), now=clock.now)
    alert = book.alerts[0]
    assert (alert.rule, alert.severity) == ("certificate_expiry", "warning")
    assert "expires" in alert.summary
    assert book.notify(now=clock.tick(11)) == {"certificate_expiry": [(1, "firing", 1)]}
    alert.state, alert.acknowledged_by = "acknowledged", "admin-1"
    book.step(*conditions(Facts(now=clock.tick(86400), certificates=[soon])), now=clock.now)
    assert book.notify(now=clock.tick(11)) == {} and alert.state == "acknowledged"
    # 30 days on, expired: critical, firing again, told again (same alert)
    book.step(*conditions(Facts(now=clock.tick(30 * 86400), certificates=[soon])), now=clock.now)
    assert (alert.state, alert.severity, alert.acknowledged_by) == ("firing", "critical", None)
    assert "expired" in alert.summary
    assert book.notify(now=clock.tick(11)) == {"certificate_expiry": [(1, "firing", 1)]}
    assert len(book.alerts) == 1


def test_a_certificate_far_from_expiry_raises_nothing() -> None:
    fine = CertificateFact("own:k", "gateway", "CN=gw", T0 + timedelta(days=61))
    assert conditions(Facts(now=T0, certificates=[fine]))[0] == []


def test_an_unreadable_source_leaves_its_alerts_alone() -> None:
    clock, book = Clock(), Book()
    book.step(*conditions(Facts(now=clock.now, breakers={"x": 100})), now=clock.now)
    found, evaluated = conditions(Facts(now=clock.tick(10), breakers=None))  # breakers not read this pass
    assert "circuit_open" not in evaluated
    book.step(found, evaluated, now=clock.now)
    assert book.alerts[0].state == "firing"


def test_sla_overdue_legs_are_one_alert_per_sla_rule() -> None:
    legs = [OverdueLeg("housing.placement", f"C-{i}", T0 - timedelta(hours=i), "mio") for i in range(1, 4)]
    legs.append(OverdueLeg("ipr", "C-9", T0 - timedelta(days=1)))
    found, _ = conditions(Facts(now=T0, overdue_legs=legs))
    assert [(c.subject, c.count) for c in found] == [("housing.placement", 3), ("ipr", 1)]
    assert found[0].detail["cases"] == ["C-3", "C-2", "C-1"]  # oldest deadline first


def test_checkpoint_and_chain_verification() -> None:
    found, _ = conditions(Facts(now=T0, checkpoints=LoopFact(True, "KeyStoreError: no key", 12.0),
                                verification=VerificationFact("broken", T0, 42, "hash mismatch")))
    assert {(c.rule, c.severity) for c in found} == {("checkpoint_signing", "critical"),
                                                     ("chain_verification", "critical")}
    assert any("42" in c.summary for c in found)
    found, evaluated = conditions(Facts(now=T0, checkpoints=LoopFact(False),
                                        verification=VerificationFact("intact", T0)))
    assert found == [] and {"checkpoint_signing", "chain_verification"} <= evaluated


def test_next_due_in_says_when_a_group_falls_due() -> None:
    clock, book = Clock(), Book()
    book.step(*conditions(Facts(now=clock.now, breakers={"x": 100})), now=clock.now)
    assert next_due_in(book.alerts, now=clock.tick(4), wait_s=10, max_wait_s=60) == 6
    book.notify(now=clock.tick(6))
    assert next_due_in(book.alerts, now=clock.now, wait_s=10, max_wait_s=60) is None


def test_a_disabled_rule_resolves_what_it_raised() -> None:
    clock, book = Clock(), Book()
    book.step(*conditions(Facts(now=clock.now, breakers={"x": 100})), now=clock.now)
    found, evaluated = evaluate(Facts(now=clock.tick(1), breakers={"x": 100}), LIMITS, disabled=("circuit_open",))
    book.step(found, evaluated, now=clock.now)
    assert book.alerts[0].state == "resolved"
