"""Routing: message type and referral kind to counterpart, case region to counterpart instance."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.canonical.messages import REPLY_TYPES, AnyMessage
from gateway.mapping import Instance, Mappings


@dataclass(frozen=True, slots=True)
class Route:
    counterpart: str
    instance: str | None  # None: parked, see reason
    reason: str | None = None


class Router:
    def __init__(self, mappings: Mappings) -> None:
        self.mappings = mappings

    def pick(self, counterpart: str, region: str | None, *, role: str = "service") -> Route:
        candidates = [
            i for i in self.mappings.counterparts.instances if i.counterpart == counterpart and i.role == role
        ]
        if not candidates:
            return Route(counterpart, None, f"no {counterpart} {role} instance is configured")
        chosen: Instance | None = None
        if region is not None:
            chosen = next((i for i in candidates if region in i.regions), None)
        if chosen is None:
            chosen = next((i for i in candidates if "*" in i.regions), None)
        if chosen is None:
            if region is None:
                return Route(counterpart, None, "the case's region is unknown: no case.registered received yet")
            return Route(counterpart, None, f"no {counterpart} {role} instance serves region {region}")
        return Route(counterpart, chosen.name)

    def routes(self, message: AnyMessage, *, region: str | None, source: str = "") -> list[Route]:
        """Where a message must be delivered; an empty list means it is only stored."""
        if message.type == "referral.requested":
            counterpart = self.mappings.kinds.kinds[message.body.kind].counterpart
            # The Probation IS learns of the referrals the routing matrix made on its behalf.
            told = [self.pick("probation", None)] if source == "routing-matrix" else []
            if region is None:
                # Every referral is about a person, and the person comes with case.registered.
                return [Route(counterpart, None, "the case is not registered yet: no case.registered received"), *told]
            return [self.pick(counterpart, region), *told]
        if message.type in REPLY_TYPES or message.type == "document.ready":
            return [self.pick("probation", None)]
        if message.type == "escalation.raised":
            return [self.pick("mio", region, role="leadership"), self.pick("probation", None)]
        if message.type == "alert.notification":  # to the webhook channels it names (alerts.yaml)
            known = {i.name for i in self.mappings.webhook_instances}
            return [Route("webhook", name) for name in message.body.channels if name in known]
        return []
