"""A referral's state and the replies that may follow it: which orders of arrival are allowed, and what moves it.

requested ─▶ accepted ─▶ completed | rejected. Replies travel separately (a synchronous answer, a later
callback), so they may arrive out of order: an acceptance after the completion or rejection it preceded is
allowed and kept, but does not move the state back; the same final reply again (a new message id) is allowed
too. A final reply that contradicts the other final state (a rejection after a completion, a completion after
a rejection), or a reply naming a referral of another case, is refused with `reply-contradicts-referral`.
A reply to a referral the gateway has no record of is accepted as it is (the referral may predate it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.canonical.errors import GatewayError
from gateway.pipeline.ports import AcceptStore, Tx

if TYPE_CHECKING:
    from gateway.pipeline.accept import Incoming

REPLY_STATUS = {"referral.accepted": "accepted", "referral.completed": "completed", "referral.rejected": "rejected"}
FINAL = frozenset({"completed", "rejected"})
_RANK = {"requested": 0, "accepted": 1, "completed": 2, "rejected": 2}


class ReplyContradictsReferral(GatewayError):
    """A reply that cannot follow the referral's state; it is kept as a refused hop and never forwarded."""

    slug = "reply-contradicts-referral"
    status = 409
    title = "The reply contradicts the referral's state"

    def __init__(self, detail: str, *, referral_id: str) -> None:
        super().__init__(detail)
        self.referral_id = referral_id

    @property
    def hop_error(self) -> str:
        """What the refused hop records: the problem and the referral, so the referral's status can show it."""
        return refused_hop_error(self.referral_id)


def refused_hop_error(referral_id: str) -> str:
    return f"{ReplyContradictsReferral.slug}; referral {referral_id}"


@dataclass(frozen=True, slots=True)
class ReferralState:
    case_id: str
    status: str  # requested | accepted | completed | rejected


def check_reply(reply_type: str, *, case_id: str, referral_id: str,
                state: ReferralState | None) -> ReplyContradictsReferral | None:
    """None when the reply may follow `state` (None: a referral the gateway does not know), else the refusal."""
    if state is None:
        return None
    if state.case_id != case_id:
        return ReplyContradictsReferral(
            f"referral {referral_id} belongs to another case, not {case_id}", referral_id=referral_id)
    new = REPLY_STATUS[reply_type]
    if state.status in FINAL and new in FINAL and new != state.status:
        return ReplyContradictsReferral(
            f"referral {referral_id} is already {state.status}; a {reply_type} cannot follow it",
            referral_id=referral_id)
    return None


def advances(current: str, reply_type: str) -> bool:
    """Whether an allowed reply moves the referral on (a late acceptance after a final reply does not)."""
    return _RANK[REPLY_STATUS[reply_type]] > _RANK.get(current, 0)


def screen_replies(store: AcceptStore, tx: Tx, batch: list[Incoming]) -> tuple[dict[int, ReplyContradictsReferral], set[str]]:
    """In the accepting transaction: which replies of the batch are refused (by index), and the message ids of
    those that move their referral on. Batch order is arrival order (a referral earlier in the batch counts);
    a re-sent reply (its message id stored already) is left to the store's duplicate check."""
    replies = [inc for inc in batch if inc.message.type in REPLY_STATUS]
    if not replies:
        return {}, set()
    stored = set(store.existing_messages(tx, sorted({str(inc.message.message_id) for inc in replies})))
    states = {rid: ReferralState(case_id, status)
              for rid, (case_id, status) in store.lock_referral_states(tx, {inc.message.body.referral_id
                                                                         for inc in replies}).items()}
    refused: dict[int, ReplyContradictsReferral] = {}
    moving: set[str] = set()
    seen: dict[str, ReplyContradictsReferral | None] = {}
    for index, inc in enumerate(batch):
        msg = inc.message
        if msg.type == "referral.requested":
            states.setdefault(msg.body.referral_id, ReferralState(msg.case_id, "requested"))
            continue
        if msg.type not in REPLY_STATUS:
            continue
        message_id = str(msg.message_id)
        if message_id in seen:  # the same reply twice in the batch: the second shares the first's fate
            if seen[message_id] is not None:
                refused[index] = seen[message_id]  # type: ignore[assignment]
            continue
        if message_id in stored:
            seen[message_id] = None
            continue
        referral_id = msg.body.referral_id
        state = states.get(referral_id)
        problem = check_reply(msg.type, case_id=msg.case_id, referral_id=referral_id, state=state)
        seen[message_id] = problem
        if problem is not None:
            refused[index] = problem
        elif state is None:
            moving.add(message_id)  # a referral the gateway does not know: the update finds no row, as before
        elif advances(state.status, msg.type):
            states[referral_id] = ReferralState(state.case_id, REPLY_STATUS[msg.type])
            moving.add(message_id)
    return refused, moving
