"""A replayed dead letter keeps its attempt numbering, gets a fresh retry budget, and its failure stays counted."""

from __future__ import annotations

from tests.harness import Stack, sim_config, wait_for
from tests.integration.test_admin import _case_and_referral, _status
from tests.integration.test_bad_input import _query


def test_replay_numbers_attempts_on_and_the_failure_stays_in_the_technical_figures(stack: Stack) -> None:
    stack.start_gateway()
    sim_config(stack.mio, per_message=[400, 503], callbacks=False)  # refused, then after the replay one 503
    referral = _case_and_referral(stack, seed=11)
    wait_for(lambda: _status(stack, referral["message_id"])["status"] == "dead_letter", what="dead letter")
    before = next(f for f in stack.auditor.get("/v1/sla/technical").json()["counterparts"] if f["counterpart"] == "mio")
    assert before["dead"] == 1 and before["dead_letter_share"] == 1.0
    dead = next(d for d in stack.admin.get("/v1/admin/dead-letters").json()["items"]
                if d["message_id"] == referral["message_id"])
    assert stack.admin.post(f"/v1/admin/dead-letters/{dead['id']}/replay").status_code == 200
    wait_for(lambda: _status(stack, referral["message_id"])["status"] == "delivered", what="delivered after replay")
    attempts = _query(stack.database_url, f"SELECT attempt, status_code, result FROM exchanges "
                                          f"WHERE delivery_id = {dead['id']} AND hop = 'attempt' ORDER BY id")
    assert [tuple(a) for a in attempts] == [(1, 400, "dead"), (2, 503, "retry"), (3, 201, "delivered")]
    after = next(f for f in stack.auditor.get("/v1/sla/technical").json()["counterparts"] if f["counterpart"] == "mio")
    # The earlier failure is still there; the delivery counts once as delivered, with its three attempts.
    assert after["dead"] == 1 and after["delivered"] == 1 and after["dead_letter_share"] == 1.0
    assert after["attempts_per_delivery"] == 3
