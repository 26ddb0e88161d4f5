"""Administration without a release: counterpart instances changed live (validated, audited), dead letters replayed."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from gateway.canonical.errors import ConfigError, GatewayError, NotFound
from gateway.canonical.messages import CaseRegistered, parse_message
from gateway.loops import Loop
from gateway.mapping import CounterpartsFile, Mappings
from gateway.pipeline.ports import Adapter, EncodeContext
from gateway.wire import Clock
from gateway.samples import SampleCases
from gateway.storage.counterpart_config import CounterpartConfigStore
from gateway.storage.dead_letters import DeadLetterStore, Move, Requeue
from gateway.storage.hops import action_row
from security.access import Principal
from security.parties import load_pins

log = logging.getLogger("gateway.admin")


class InvalidConfiguration(GatewayError):
    slug = "invalid-configuration"
    status = 422
    title = "The configuration is not valid; nothing was applied"


class NotDeadLettered(GatewayError):
    slug = "not-dead-lettered"
    status = 409
    title = "Only a dead-lettered delivery can be replayed"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch: null removes a member, objects merge, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _dump(inst: Any) -> dict[str, Any]:
    return inst.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class CounterpartConfiguration:
    """What a counterpart change makes current: the mappings with the new instances, their pinned keys, the version."""

    mappings: Mappings
    pins: dict
    version: int | None


Reconfigure = Callable[[CounterpartConfiguration], None]


class CounterpartAdmin:
    """Changes are whole-file versions in the store; each gateway process applies the newest one it sees and
    tells its `listeners`, which bring the running components to it."""

    def __init__(self, *, config: CounterpartConfigStore, dead_letters: DeadLetterStore,
                 record_hop: Callable[[dict[str, Any]], Awaitable[None]], mappings: Mappings,
                 adapters: Mapping[str, Adapter], counterparts_path: Path, home: Path, clock: Clock,
                 wake_worker: Callable[[], None], replay_rate_per_s: float,
                 listeners: list[Reconfigure] | None = None, poll_interval_s: float = 2.0) -> None:
        self.config = config
        self.dead = dead_letters
        self.record_hop = record_hop
        self.mappings = mappings
        self.adapters = adapters
        self.counterparts_path = counterparts_path
        self.home = home
        self.clock = clock
        self.wake_worker = wake_worker
        self.replay_rate_per_s = replay_rate_per_s
        self.listeners: list[Reconfigure] = list(listeners or ())
        self.poll_interval_s = poll_interval_s
        self.version: int | None = None  # None: the counterparts file as loaded at start-up
        self.loop = Loop("config-poll", self._step, interval_s=poll_interval_s, initial_delay_s=poll_interval_s)
        self._lock = asyncio.Lock()

    # --- reading -------------------------------------------------------------------------------

    def current(self) -> dict[str, Any]:
        return {"version": self.version, "source": "store" if self.version else "file",
                "instances": [_dump(i) for i in self.mappings.counterparts.instances]}

    def instance(self, name: str) -> dict[str, Any]:
        inst = self.mappings.counterpart_instance(name)
        if inst is None:
            raise NotFound(f"no counterpart instance {name!r}")
        return {"version": self.version, **_dump(inst)}

    # --- changing ------------------------------------------------------------------------------

    async def put(self, *, name: str, document: dict[str, Any], principal: Principal, dry_run: bool) -> dict[str, Any]:
        return await self._change(name=name, after=document, principal=principal, dry_run=dry_run)

    async def patch(self, *, name: str, patch: dict[str, Any], principal: Principal, dry_run: bool) -> dict[str, Any]:
        current = self.mappings.counterpart_instance(name)
        if current is None:
            raise NotFound(f"no counterpart instance {name!r}")
        return await self._change(name=name, after=merge_patch(_dump(current), patch), principal=principal,
                                  dry_run=dry_run)

    async def replace_all(self, *, document: dict[str, Any], principal: Principal) -> dict[str, Any]:
        """A whole counterparts file (`gateway counterparts import`) as the next version."""
        async with self._lock:
            try:
                file = CounterpartsFile.model_validate(document)
            except ValidationError as exc:
                errors = [{"pointer": "/" + "/".join(map(str, e["loc"])), "detail": e["msg"]} for e in exc.errors()]
                raise InvalidConfiguration("; ".join(f"{e['pointer']}: {e['detail']}" for e in errors[:5]),
                                           errors=errors) from exc
            mappings = self.mappings.model_copy(update={"counterparts": file})
            try:
                pins = self._pins(mappings)
            except ConfigError as exc:
                raise InvalidConfiguration(str(exc)) from exc
            change = {"instance": "*", "before": self.current()["instances"], "after": file.model_dump(mode="json")}
            version = await self._record(document=file.model_dump(mode="json"), change=change,
                                         by=principal.client_id, now=self.clock())
            self._apply(mappings=mappings, pins=pins, version=version)
            return {"applied": True, "version": version}

    def _validate(self, *, name: str, after: dict[str, Any]) -> tuple[CounterpartsFile, Mappings, dict]:
        if not isinstance(after, dict):
            raise InvalidConfiguration("the body must be a JSON object describing the instance")
        after = {**after, "name": after.get("name", name)}
        if after["name"] != name:
            raise InvalidConfiguration(f"name: the body names {after['name']!r}, the path {name!r}",
                                       errors=[{"pointer": "/name", "detail": "must match the path"}])
        instances = [_dump(i) for i in self.mappings.counterparts.instances]
        index = next((k for k, i in enumerate(instances) if i["name"] == name), None)
        if index is None:
            instances.append(after)
            index = len(instances) - 1
        else:
            instances[index] = after
        try:
            file = CounterpartsFile.model_validate({"version": self.mappings.counterparts.version,
                                                    "instances": instances})
        except ValidationError as exc:
            errors = []
            for err in exc.errors():
                loc = list(err["loc"])
                if loc[:2] == ["instances", index]:
                    loc = loc[2:]  # the caller's document, not our list, is what they must fix
                errors.append({"pointer": "/" + "/".join(map(str, loc)), "detail": err["msg"]})
            raise InvalidConfiguration("; ".join(f"{e['pointer']}: {e['detail']}" for e in errors[:5]),
                                       errors=errors) from exc
        mappings = self.mappings.model_copy(update={"counterparts": file})
        bad = [msg for i, msg in mappings.version_errors() if i == index]
        if bad:
            raise InvalidConfiguration(f"/mapping_version: {bad[0]}",
                                       errors=[{"pointer": "/mapping_version", "detail": bad[0]}])
        try:
            pins = self._pins(mappings)
        except ConfigError as exc:
            raise InvalidConfiguration(str(exc).replace(str(self.counterparts_path) + ": ", "")) from exc
        return file, mappings, pins

    async def _change(self, *, name: str, after: dict[str, Any], principal: Principal,
                      dry_run: bool) -> dict[str, Any]:
        async with self._lock:
            before_inst = self.mappings.counterpart_instance(name)
            before = _dump(before_inst) if before_inst else None
            file, mappings, pins = self._validate(name=name, after=after)
            after_doc = _dump(file.instances[[i.name for i in file.instances].index(name)])
            if dry_run:
                return {"dry_run": True, "applied": False, "before": before, "after": after_doc,
                        "sample": self._sample(mappings, name)}
            now = self.clock()
            change = {"instance": name, "before": before, "after": after_doc}
            version = await self._record(document=file.model_dump(mode="json"), change=change,
                                         by=principal.client_id, now=now)
            self._apply(mappings=mappings, pins=pins, version=version)
            log.info("counterpart configuration changed", extra={"instance": name, "version": version,
                                                                  "by": principal.client_id})
            return {"dry_run": False, "applied": True, "version": version, "before": before, "after": after_doc}

    def _pins(self, mappings: Mappings) -> dict:
        return load_pins(mappings, counterparts_file=self.counterparts_path, home=self.home)

    async def _record(self, *, document: dict[str, Any], change: dict[str, Any], by: str, now: datetime) -> int:
        def audit(version: int) -> dict[str, Any]:
            # The audit event, with before and after, in the same transaction as the change itself.
            return action_row(hop="admin", peer=change["instance"], at=now, result="applied",
                              error=f"counterpart configuration version {version}", client=by,
                              request_raw=orjson.dumps({"version": version, **change}))

        return await self.config.record(document=document, change=change, changed_by=by, at=now, audit=audit)

    def _apply(self, *, mappings: Mappings, pins: dict, version: int | None) -> None:
        self.mappings = mappings
        new = CounterpartConfiguration(mappings=mappings, pins=pins, version=version)
        for listener in self.listeners:
            listener(new)
        self.version = version  # last: a listener that failed leaves the version to be applied again

    def _sample(self, mappings: Mappings, name: str) -> dict[str, Any]:
        """The wire message a sample canonical message would become for this instance (nothing is sent)."""
        inst = mappings.instance(name)
        assert inst is not None
        adapter = self.adapters.get(inst.counterpart)
        if adapter is None:
            return {"error": f"no adapter for {inst.counterpart}"}
        samples = SampleCases(seed=1)
        case_doc = samples.case()[0]
        if inst.regions and "*" not in inst.regions:
            case_doc["body"]["region"] = inst.regions[0]
        case = parse_message(case_doc)
        if inst.counterpart == "probation":
            message = parse_message({"message_id": str(uuid.uuid4()), "type": "referral.accepted",
                                     "case_id": case.case_id, "occurred_at": case_doc["occurred_at"],
                                     "body": {"referral_id": "R-SAMPLE-1"}})
        else:
            role_kind = "escalation" if inst.role == "leadership" else None
            kind = next((k for k, v in mappings.kinds.kinds.items() if v.counterpart == inst.counterpart), None)
            if role_kind or kind is None:
                message = parse_message({"message_id": str(uuid.uuid4()), "type": "escalation.raised",
                                         "case_id": case.case_id, "occurred_at": case_doc["occurred_at"],
                                         "body": {"rule": "housing.first_action", "reason": "sample escalation",
                                                  "deadline_at": case_doc["occurred_at"]}})
            else:
                referral = samples.shelter_referral(case.case_id)
                referral["body"]["kind"] = kind
                message = parse_message(referral)
        try:
            wire = adapter.encode(message, mappings=mappings.for_instance(inst), instance=inst, context=EncodeContext(
                now=datetime.now(timezone.utc), case=case if isinstance(case, CaseRegistered) else None))
        except Exception as exc:  # noqa: BLE001
            return {"message_type": message.type, "error": f"{type(exc).__name__}: {exc}"}
        body = wire.body.decode("utf-8", errors="replace")
        return {"message_type": message.type, "method": wire.method, "url": inst.url + wire.path,
                "headers": dict(wire.headers), "body": body}

    async def history(self, *, name: str | None, limit: int = 100) -> list[dict[str, Any]]:
        """Who changed what and when, newest first (one instance's changes and whole-file imports)."""
        return await self.config.history(instance=name, limit=limit)

    async def rollback(self, *, name: str, version: int, principal: Principal) -> dict[str, Any]:
        """The instance as it was once `version` was applied, applied again as a new (audited) version."""
        stored = await self.config.version(version=version)
        if stored is None:
            raise NotFound(f"no configuration version {version}")
        then = next((i for i in stored["document"]["instances"] if i["name"] == name), None)
        if then is None:
            raise InvalidConfiguration(f"version {version} has no instance {name!r}")
        return await self._change(name=name, after=then, principal=principal, dry_run=False)

    # --- every process follows the store -------------------------------------------------------

    async def sync(self) -> bool:
        """Apply the newest stored version if it is newer than ours; True when something changed."""
        newest = await self.config.latest(known=self.version)
        if newest is None:
            return False
        latest, document = newest
        async with self._lock:
            file = CounterpartsFile.model_validate(document)
            mappings = self.mappings.model_copy(update={"counterparts": file})
            try:
                pins = self._pins(mappings)
            except ConfigError:
                log.exception("stored counterpart configuration %s has unusable keys; keeping %s", latest,
                              self.version)
                return False
            self._apply(mappings=mappings, pins=pins, version=latest)
        log.info("counterpart configuration %s applied", latest)
        return True

    def start(self) -> None:
        self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()

    async def _step(self) -> None:
        await self.sync()

    # --- dead letters --------------------------------------------------------------------------

    async def dead_letters(self, *, after: int, limit: int) -> list[dict[str, Any]]:
        return await self.dead.page(after=after, limit=limit)

    async def dead_letter(self, delivery_id: int) -> dict[str, Any]:
        """The delivery, its message's metadata (not its content: personal data is for auditors) and attempts."""
        found = await self.dead.detail(delivery_id=delivery_id)
        if found is None:
            raise NotFound(f"no delivery {delivery_id}")
        row, attempts = found
        keep = ("id", "message_id", "case_id", "counterpart", "instance", "state", "attempts", "created_at",
                "finished_at", "last_status", "reason", "type", "source", "received_at")
        out = {k: row[k] for k in keep}
        out["attempt_log"] = attempts
        return out

    async def replay(self, *, delivery_id: int, principal: Principal) -> dict[str, Any]:
        now = self.clock()
        by = principal.client_id

        def work(tx: Requeue) -> bool | None:
            row = tx.candidate(delivery_id=delivery_id)
            if row is None or row.state != "dead":
                return None if row is None else False
            # A fresh start under the instance's policy (its attempt budget and deadline), while the attempt
            # numbering goes on: the log and the technical figures keep the attempts that failed.
            tx.move(Move(delivery_id, now, f"replayed by {by} (was: {row.reason})"))
            tx.audit(hop=action_row(
                hop="admin", peer=row.instance, at=now, result="replayed", delivery_id=delivery_id,
                error=f"dead letter {delivery_id} replayed", client=by,
                request_raw=orjson.dumps({"delivery_id": delivery_id, "before": {"state": "dead",
                                          "reason": row.reason}, "after": {"state": "pending"}})))
            return True

        moved = await self.dead.requeue(work)
        if moved is None:
            raise NotFound(f"no delivery {delivery_id}")
        if moved is False:
            raise NotDeadLettered(f"delivery {delivery_id} is not dead-lettered")
        self.wake_worker()
        return await self.dead_letter(delivery_id)

    async def replay_many(self, *, delivery_ids: list[int], principal: Principal) -> dict[str, Any]:
        """Dead letters queued again as one audited action with the count; all or nothing (NotDeadLettered if
        one of them is not dead any more). Their next attempts are spread at `replay_rate_per_s` per instance,
        so a bulk replay cannot storm a counterpart that just came back."""
        ids, by, now, rate = tuple(delivery_ids), principal.client_id, self.clock(), self.replay_rate_per_s

        def work(tx: Requeue) -> int | GatewayError:
            rows = tx.candidates(ids=ids)
            missing = set(ids) - {r.id for r in rows}
            if missing:
                return NotFound(f"no delivery {min(missing)}")
            alive = [r.id for r in rows if r.state != "dead"]
            if alive:
                return NotDeadLettered(f"delivery {alive[0]} is not dead-lettered")
            per_instance: dict[str | None, int] = {}
            moves = []
            for r in rows:
                slot = per_instance.get(r.instance, 0)
                per_instance[r.instance] = slot + 1
                moves.append(Move(r.id, now + timedelta(seconds=slot / rate), f"replayed by {by} (was: {r.reason})"))
            moved = tx.move_all(moves)
            if moved != len(rows):
                return NotDeadLettered(f"{len(rows) - moved} of these deliveries are no longer dead-lettered")
            tx.audit(hop=action_row(
                hop="admin", peer=",".join(sorted(i or "-" for i in per_instance)), at=now, result="replayed",
                error=f"{len(rows)} dead letters replayed", client=by,
                request_raw=orjson.dumps({"replayed": len(rows), "delivery_ids": list(ids),
                                          "per_instance": {k or "-": v for k, v in per_instance.items()},
                                          "before": {"state": "dead"}, "after": {"state": "pending"}})))
            return len(rows)

        outcome = await self.dead.requeue(work)
        self.wake_worker()
        return {"replayed": outcome}

    async def record_action(self, *, principal: Principal, what: dict[str, Any], peer: str) -> None:
        """An administrator's act outside counterpart configuration (a key rotated, a key revoked), logged."""
        await self.record_hop(action_row(
            hop="admin", peer=peer, at=self.clock(), result="applied", client=principal.client_id,
            error=orjson.dumps(what, option=orjson.OPT_SORT_KEYS).decode(), request_raw=orjson.dumps(what)))
