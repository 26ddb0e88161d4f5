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

from gateway.canonical.errors import GatewayError

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
