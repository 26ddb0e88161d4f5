"""Administration without a release: counterpart instances changed live (validated, audited), dead letters replayed."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from gateway.canonical.errors import ConfigError, GatewayError, NotFound
from gateway.canonical.messages import CaseRegistered, parse_message
from gateway.loops import Loop
from gateway.mapping import CounterpartsFile, Mappings
from gateway.pipeline.ports import EncodeContext
from gateway.pipeline.routing import Router
from gateway.samples import SampleCases
from gateway.storage import operations
from gateway.storage.store import action_row
from gateway.storage.tables import counterpart_config, deliveries, exchanges, messages
from security.access import Principal
from security.parties import load_pins

if TYPE_CHECKING:
    from gateway.bootstrap import Container

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


class CounterpartAdmin:
    """Changes are whole-file versions in the store; each gateway process applies the newest one it sees."""

    def __init__(self, container: Container, *, poll_interval_s: float = 2.0) -> None:
        self.c = container
        self.poll_interval_s = poll_interval_s
        self.version: int | None = None  # None: the counterparts file as loaded at start-up
        self.replay_rate_per_s = container.settings.replay_rate_per_s
        self.loop = Loop("config-poll", self._step, interval_s=poll_interval_s, initial_delay_s=poll_interval_s)
        self._lock = asyncio.Lock()

    # --- reading -------------------------------------------------------------------------------

    def current(self) -> dict[str, Any]:
        return {"version": self.version, "source": "store" if self.version else "file",
                "instances": [_dump(i) for i in self.c.mappings.counterparts.instances]}

    def instance(self, name: str) -> dict[str, Any]:
        inst = self.c.mappings.counterpart_instance(name)
        if inst is None:
            raise NotFound(f"no counterpart instance {name!r}")
        return {"version": self.version, **_dump(inst)}

    # --- changing ------------------------------------------------------------------------------

    async def put(self, *, name: str, document: dict[str, Any], principal: Principal, dry_run: bool) -> dict[str, Any]:
        return await self._change(name=name, after=document, principal=principal, dry_run=dry_run)

    async def patch(self, *, name: str, patch: dict[str, Any], principal: Principal, dry_run: bool) -> dict[str, Any]:
        current = self.c.mappings.counterpart_instance(name)
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
            mappings = self.c.mappings.model_copy(update={"counterparts": file})
            try:
                pins = load_pins(mappings, counterparts_file=self.c.settings.counterparts_path,
                                 home=self.c.settings.home)
            except ConfigError as exc:
                raise InvalidConfiguration(str(exc)) from exc
            change = {"instance": "*", "before": self.current()["instances"], "after": file.model_dump(mode="json")}
            version = await self.c.store.committer.submit(
                self._record, (file.model_dump(mode="json"), change, principal.client_id, self.c.clock()))
            self._apply(file, mappings, pins, version)
            return {"applied": True, "version": version}

    def _validate(self, name: str, after: dict[str, Any]) -> tuple[CounterpartsFile, Mappings, dict]:
        if not isinstance(after, dict):
            raise InvalidConfiguration("the body must be a JSON object describing the instance")
        after = {**after, "name": after.get("name", name)}
        if after["name"] != name:
            raise InvalidConfiguration(f"name: the body names {after['name']!r}, the path {name!r}",
                                       errors=[{"pointer": "/name", "detail": "must match the path"}])
        instances = [_dump(i) for i in self.c.mappings.counterparts.instances]
        index = next((k for k, i in enumerate(instances) if i["name"] == name), None)
        if index is None:
            instances.append(after)
            index = len(instances) - 1
        else:
            instances[index] = after
        try:
            file = CounterpartsFile.model_validate({"version": self.c.mappings.counterparts.version,
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
        mappings = self.c.mappings.model_copy(update={"counterparts": file})
        bad = [msg for i, msg in mappings.version_errors() if i == index]
        if bad:
            raise InvalidConfiguration(f"/mapping_version: {bad[0]}",
                                       errors=[{"pointer": "/mapping_version", "detail": bad[0]}])
        try:
            pins = load_pins(mappings, counterparts_file=self.c.settings.counterparts_path,
                                 home=self.c.settings.home)
        except ConfigError as exc:
            raise InvalidConfiguration(str(exc).replace(str(self.c.settings.counterparts_path) + ": ", "")) from exc
        return file, mappings, pins

    async def _change(self, *, name: str, after: dict[str, Any], principal: Principal,
                      dry_run: bool) -> dict[str, Any]:
        async with self._lock:
            before_inst = self.c.mappings.counterpart_instance(name)
            before = _dump(before_inst) if before_inst else None
            file, mappings, pins = self._validate(name, after)
            after_doc = _dump(file.instances[[i.name for i in file.instances].index(name)])
            if dry_run:
                return {"dry_run": True, "applied": False, "before": before, "after": after_doc,
                        "sample": self._sample(mappings, name)}
            now = self.c.clock()
            change = {"instance": name, "before": before, "after": after_doc}
            version = await self.c.store.committer.submit(
                self._record, (file.model_dump(mode="json"), change, principal.client_id, now))
            self._apply(file, mappings, pins, version)
            log.info("counterpart configuration changed", extra={"instance": name, "version": version,
                                                                  "by": principal.client_id})
            return {"dry_run": False, "applied": True, "version": version, "before": before, "after": after_doc}

    def _record(self, conn: Connection, items: list[tuple[dict, dict, str, datetime]]) -> list[int]:
        out = []
        for document, change, by, now in items:
            version = conn.execute(insert(counterpart_config).values(
                document=orjson.dumps(document).decode(), created_at=now, changed_by=by,
                change=orjson.dumps(change).decode()).returning(counterpart_config.c.version)).scalar_one()
            # The audit event, with before and after, in the same transaction as the change itself.
            self.c.store.insert_exchanges(conn, [action_row(
                hop="admin", peer=change["instance"], at=now, result="applied",
                error=f"counterpart configuration version {version}", client=by,
                request_raw=orjson.dumps({"version": version, **change}))])
            out.append(version)
        return out

    def _apply(self, file: CounterpartsFile, mappings: Mappings, pins: dict, version: int | None) -> None:
        c = self.c
        c.mappings = mappings
        c.accepter.router = Router(mappings)
        c.worker.reconfigure(mappings)
        c.counterpart_verifier.reconfigure(mappings=mappings, pins=pins)
        c.authenticator.mappings = mappings
        c.documents.mappings = mappings
        c.documents.router = Router(mappings)
        self.version = version

    def _sample(self, mappings: Mappings, name: str) -> dict[str, Any]:
        """The wire message a sample canonical message would become for this instance (nothing is sent)."""
        inst = mappings.instance(name)
        assert inst is not None
        adapter = self.c.adapters.get(inst.counterpart)
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
        return await operations.config_history(self.c.store.engines, instance=name, limit=limit)

    async def rollback(self, *, name: str, version: int, principal: Principal) -> dict[str, Any]:
        """The instance as it was once `version` was applied, applied again as a new (audited) version."""
        stored = await operations.config_version(self.c.store.engines, version=version)
        if stored is None:
            raise NotFound(f"no configuration version {version}")
        then = next((i for i in stored["document"]["instances"] if i["name"] == name), None)
        if then is None:
            raise InvalidConfiguration(f"version {version} has no instance {name!r}")
        return await self._change(name=name, after=then, principal=principal, dry_run=False)

    # --- every process follows the store -------------------------------------------------------

    async def sync(self) -> bool:
        """Apply the newest stored version if it is newer than ours; True when something changed."""
        async with self.c.store.engines.read.connect() as conn:
            latest = (await conn.execute(select(func.max(counterpart_config.c.version)))).scalar()
            if latest is None or latest == self.version:
                return False
            row = (await conn.execute(select(counterpart_config.c.document)
                                      .where(counterpart_config.c.version == latest))).one()
        async with self._lock:
            file = CounterpartsFile.model_validate(orjson.loads(row.document))
            mappings = self.c.mappings.model_copy(update={"counterparts": file})
            try:
                pins = load_pins(mappings, counterparts_file=self.c.settings.counterparts_path,
                                 home=self.c.settings.home)
            except ConfigError:
                log.exception("stored counterpart configuration %s has unusable keys; keeping %s", latest,
                              self.version)
                return False
            self._apply(file, mappings, pins, latest)
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
        return await self.c.store.list_deliveries(state="dead", counterpart=None, instance=None, after=after,
                                                  limit=limit)

    async def dead_letter(self, delivery_id: int) -> dict[str, Any]:
        """The delivery, its message's metadata (not its content: personal data is for auditors) and attempts."""
        async with self.c.store.engines.read.connect() as conn:
            row = (await conn.execute(
                select(deliveries, messages.c.type, messages.c.source, messages.c.received_at)
                .join(messages, messages.c.message_id == deliveries.c.message_id)
                .where(deliveries.c.id == delivery_id))).mappings().first()
            if row is None:
                raise NotFound(f"no delivery {delivery_id}")
            attempts = (await conn.execute(
                select(exchanges.c.attempt, exchanges.c.request_out_at, exchanges.c.response_in_at,
                       exchanges.c.status_code, exchanges.c.result, exchanges.c.error)
                .where(exchanges.c.delivery_id == delivery_id, exchanges.c.hop == "attempt")
                .order_by(exchanges.c.id))).mappings().all()
        keep = ("id", "message_id", "case_id", "counterpart", "instance", "state", "attempts", "created_at",
                "finished_at", "last_status", "reason", "type", "source", "received_at")
        out = {k: row[k] for k in keep}
        out["attempt_log"] = [dict(a) for a in attempts]
        return out

    async def replay(self, *, delivery_id: int, principal: Principal) -> dict[str, Any]:
        now = self.c.clock()
        moved = await self.c.store.committer.submit(self._replay, (delivery_id, principal.client_id, now))
        if moved is None:
            raise NotFound(f"no delivery {delivery_id}")
        if moved is False:
            raise NotDeadLettered(f"delivery {delivery_id} is not dead-lettered")
        self.c.worker.wake()
        return await self.dead_letter(delivery_id)

    async def replay_many(self, *, delivery_ids: list[int], principal: Principal) -> dict[str, Any]:
        """Dead letters queued again as one audited action with the count; all or nothing (NotDeadLettered if
        one of them is not dead any more). Their next attempts are spread at `replay_rate_per_s` per instance,
        so a bulk replay cannot storm a counterpart that just came back."""
        now = self.c.clock()
        outcome = await self.c.store.committer.submit(
            self._replay_many, (tuple(delivery_ids), principal.client_id, now, self.replay_rate_per_s))
        if isinstance(outcome, GatewayError):
            raise outcome
        self.c.worker.wake()
        return {"replayed": outcome}

    def _replay_many(self, conn: Connection, items: list[tuple[tuple[int, ...], str, datetime, float]]) -> list:
        out: list = []
        for ids, by, now, rate in items:
            rows = conn.execute(select(deliveries.c.id, deliveries.c.state, deliveries.c.instance, deliveries.c.reason)
                                .where(deliveries.c.id.in_(ids)).order_by(deliveries.c.id)).all()
            missing = set(ids) - {r.id for r in rows}
            if missing:
                out.append(NotFound(f"no delivery {min(missing)}"))
                continue
            alive = [r.id for r in rows if r.state != "dead"]
            if alive:
                out.append(NotDeadLettered(f"delivery {alive[0]} is not dead-lettered"))
                continue
            per_instance: dict[str | None, int] = {}
            nested = conn.begin_nested()  # all or nothing: another replay may have taken some of them meanwhile
            moved = 0
            for r in rows:
                slot = per_instance.get(r.instance, 0)
                per_instance[r.instance] = slot + 1
                # The attempt numbering goes on (the log keeps every attempt); the policy counts from here.
                moved += conn.execute(
                    update(deliveries).where(deliveries.c.id == r.id, deliveries.c.state == "dead")
                    .values(state="pending", first_attempt_at=None, attempt_base=deliveries.c.attempts,
                            next_attempt_at=now + timedelta(seconds=slot / rate), finished_at=None,
                            lease_until=None, claimed_by=None,
                            reason=f"replayed by {by} (was: {r.reason})"[:4000])).rowcount
            if moved != len(rows):
                nested.rollback()
                out.append(NotDeadLettered(f"{len(rows) - moved} of these deliveries are no longer dead-lettered"))
                continue
            nested.commit()
            self.c.store.insert_exchanges(conn, [action_row(
                hop="admin", peer=",".join(sorted(i or "-" for i in per_instance)), at=now, result="replayed",
                error=f"{len(rows)} dead letters replayed", client=by,
                request_raw=orjson.dumps({"replayed": len(rows), "delivery_ids": list(ids),
                                          "per_instance": {k or "-": v for k, v in per_instance.items()},
                                          "before": {"state": "dead"}, "after": {"state": "pending"}}))])
            out.append(len(rows))
        return out

    async def record_action(self, *, principal: Principal, what: dict[str, Any], peer: str) -> None:
        """An administrator's act outside counterpart configuration (a key rotated, a key revoked), logged."""
        await self.c.store.record_hop(action_row(
            hop="admin", peer=peer, at=self.c.clock(), result="applied", client=principal.client_id,
            error=orjson.dumps(what, option=orjson.OPT_SORT_KEYS).decode(), request_raw=orjson.dumps(what)))

    def _replay(self, conn: Connection, items: list[tuple[int, str, datetime]]) -> list[bool | None]:
        out: list[bool | None] = []
        for delivery_id, by, now in items:
            row = conn.execute(select(deliveries.c.state, deliveries.c.reason, deliveries.c.instance)
                               .where(deliveries.c.id == delivery_id)).first()
            if row is None or row.state != "dead":
                out.append(None if row is None else False)
                continue
            # A fresh start under the instance's policy (its attempt budget and deadline), while the attempt
            # numbering goes on: the log and the technical figures keep the attempts that failed.
            conn.execute(update(deliveries).where(deliveries.c.id == delivery_id, deliveries.c.state == "dead")
                         .values(state="pending", attempt_base=deliveries.c.attempts, first_attempt_at=None,
                                 next_attempt_at=now,
                                 finished_at=None, lease_until=None, claimed_by=None,
                                 reason=f"replayed by {by} (was: {row.reason})"[:4000]))
            self.c.store.insert_exchanges(conn, [action_row(
                hop="admin", peer=row.instance, at=now, result="replayed", delivery_id=delivery_id,
                error=f"dead letter {delivery_id} replayed", client=by,
                request_raw=orjson.dumps({"delivery_id": delivery_id, "before": {"state": "dead",
                                          "reason": row.reason}, "after": {"state": "pending"}}))])
            out.append(True)
        return out
