"""Which orders of arrival a referral's replies may take (pipeline level, SQLite and PostgreSQL): a late acceptance
is kept and does not move the state back; a contradicting reply is refused, stored nowhere, routed nowhere."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.bootstrap import build
from gateway.canonical.messages import parse_message
from gateway.config import Settings
from gateway.pipeline.referrals import ReplyContradictsReferral
from gateway.samples import SampleCases
from gateway.storage.tables import deliveries, exchanges, messages, referrals
from tests.harness import default_counterparts


def _msg(type_: str, case_id: str, **body: object) -> dict:
    return {"message_id": str(uuid.uuid4()), "type": type_, "case_id": case_id,
            "occurred_at": datetime.now(timezone.utc).isoformat(), "body": body}


@pytest.fixture
async def container(tmp_path: Path, database_url: str):  # noqa: ANN201
    c = build(Settings(database_url=database_url, counterparts_file=default_counterparts(tmp_path), home=tmp_path))
    await c.start(run_worker=False)
    try:
        yield c
    finally:
        await c.stop()


async def _accept(c, doc: dict, source: str = "mio"):  # noqa: ANN001, ANN202
    return await c.accepter.accept(message=parse_message(doc), source=source)


async def _referral(c, seed: int) -> tuple[str, str]:  # noqa: ANN001
    case = SampleCases(seed=seed).case()[0]
    await _accept(c, case, "probation")
    referral_id = f"REF-{seed}"
    await _accept(c, _msg("referral.requested", case["case_id"], referral_id=referral_id, kind="shelter.placement"),
                  "probation")
    return case["case_id"], referral_id


async def _state(c, referral_id: str) -> str:  # noqa: ANN001
    async with c.store.engines.read.connect() as conn:
        return (await conn.execute(select(referrals.c.status).where(referrals.c.referral_id == referral_id))).scalar()


async def _rows(c, table, message_id: str) -> list:  # noqa: ANN001
    async with c.store.engines.read.connect() as conn:
        return (await conn.execute(select(table).where(table.c.message_id == message_id))).mappings().all()


async def test_a_late_acceptance_is_kept_and_a_contradiction_refused(container) -> None:  # noqa: ANN001
    c = container
    case_id, referral_id = await _referral(c, 171)
    done = await _accept(c, _msg("referral.completed", case_id, referral_id=referral_id, outcome="placed"))
    assert not done.duplicate and await _state(c, referral_id) == "completed"
    late = await _accept(c, _msg("referral.accepted", case_id, referral_id=referral_id))
    assert not late.duplicate and late.queued == 1  # kept and forwarded: it happened, only later than the completion
    assert await _state(c, referral_id) == "completed"  # and does not move the referral back
    again = await _accept(c, _msg("referral.completed", case_id, referral_id=referral_id, outcome="placed"))
    assert again.queued == 1 and await _state(c, referral_id) == "completed"  # the same final state again: allowed

    rejection = _msg("referral.rejected", case_id, referral_id=referral_id, reason="no beds")
    with pytest.raises(ReplyContradictsReferral) as refused:
        await _accept(c, rejection)
    assert refused.value.slug == "reply-contradicts-referral" and refused.value.status == 409
    assert await _state(c, referral_id) == "completed"
    assert await _rows(c, messages, rejection["message_id"]) == []
    assert await _rows(c, deliveries, rejection["message_id"]) == []  # not forwarded
    (hop,) = await _rows(c, exchanges, rejection["message_id"])
    assert (hop["hop"], hop["result"], hop["status_code"]) == ("received", "refused", 409)
    assert hop["error"] == f"reply-contradicts-referral; referral {referral_id}"
    with pytest.raises(ReplyContradictsReferral):  # sent again, refused again
        await _accept(c, rejection)


async def test_a_completion_after_a_rejection_and_a_reply_of_another_case_are_refused(container) -> None:  # noqa: ANN001
    c = container
    case_id, referral_id = await _referral(c, 172)
    other_case, _ = await _referral(c, 173)
    await _accept(c, _msg("referral.rejected", case_id, referral_id=referral_id, reason="no beds"))
    with pytest.raises(ReplyContradictsReferral, match="already rejected"):
        await _accept(c, _msg("referral.completed", case_id, referral_id=referral_id))
    with pytest.raises(ReplyContradictsReferral, match="another case"):
        await _accept(c, _msg("referral.accepted", other_case, referral_id=referral_id))
    # a late acceptance after the rejection is allowed, as after a completion
    await _accept(c, _msg("referral.accepted", case_id, referral_id=referral_id))
    assert await _state(c, referral_id) == "rejected"
    # a reply to a referral the gateway has no record of is accepted as before
    unknown = await _accept(c, _msg("referral.completed", case_id, referral_id="REF-elsewhere"))
    assert not unknown.duplicate


async def test_replies_arriving_together_are_judged_in_order(container) -> None:  # noqa: ANN001
    c = container
    case = SampleCases(seed=174).case()[0]
    await _accept(c, case, "probation")
    request = _msg("referral.requested", case["case_id"], referral_id="REF-174", kind="shelter.placement")
    completion = _msg("referral.completed", case["case_id"], referral_id="REF-174")
    rejection = _msg("referral.rejected", case["case_id"], referral_id="REF-174", reason="no beds")
    acceptance = _msg("referral.accepted", case["case_id"], referral_id="REF-174")
    # Submitted together they usually share one transaction; either way they are judged in this order.
    results = await asyncio.gather(_accept(c, request, "probation"), _accept(c, completion), _accept(c, rejection),
                                   _accept(c, rejection), _accept(c, acceptance), return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["Accepted", "Accepted", "ReplyContradictsReferral",
                                                   "ReplyContradictsReferral", "Accepted"]
    assert await _state(c, "REF-174") == "completed"
