"""A store for the console benchmark: a year of canonical messages and their hops, written through the store's own writes."""

# Messages come from bench/sla_report.py's generator (the SLA corpus of the 1M-event report) with a real
# person in each registration (gateway/samples.py) and some escalations; each is parsed as the gateway
# parses it, so `content` is what the accepter stores. Rows go through Store.insert_messages (person
# sealed), upsert_cases, insert_referrals, insert_deliveries and insert_exchanges (the exchange log
# chained by the real append()), in large batches on the SQLite writer engine, so the store is what the
# gateway itself would hold: `gateway audit verify` passes on it.
#
# Hop mix per message: one `received` (or `reply`) hop, and for every delivery its attempts (one in ten
# retried after a 503, one in a hundred dead). A year of that is ~1.8 hops per message, so for a log of
# `records` hops the log holds every hop of a random subset of the messages (in time order, spread over
# the whole year), plus the gateway's own actions: refusals, reads, lookups, auditors' searches.

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.sla_report import generate
from gateway.audit.log import ExchangeLog
from gateway.canonical.messages import parse_message
from gateway.config import ROOT
from gateway.mapping import load_mappings
from gateway.samples import GIVEN, SURNAMES, make_iin
from gateway.storage.db import create_engines, migrate
from gateway.storage.personal import PersonSeal
from gateway.storage.store import Store
from security.pii import PiiCipher, generate_key

SIGNER = "Yk3mQ0eC1rT8uV5xZ2aB4dF6gH9jK7lN0pS3wE1qR5t"
REPLIES = ("referral.accepted", "referral.completed", "referral.rejected")
FROM_PROBATION = ("case.registered", "plan.approved", "risk.detected", "risk.closed", "referral.requested")
ACTIONS = (  # (hop, peer, status, result, share of the log)
    ("refused", "unknown", 401, "refused", 0.010),
    ("read", "auditor-1", 200, "served", 0.004),
    ("lookup", "con", 200, "served", 0.006),
    ("document", "probation", 200, "served", 0.004),
    ("audit-search", "auditor-1", 200, "served", 0.002),
    ("audit-read", "auditor-2", 200, "served", 0.002),
    ("admin", "admin-1", 200, "served", 0.0005),
)
METADATA_ONLY = ("health",)  # like a counterpart set to `log_bodies: false`: only digests are logged


@dataclass
class Built:
    path: Path
    meta: dict[str, Any]

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.path}"

    def cipher(self) -> PiiCipher:
        return PiiCipher.from_config(self.meta["pii_keys"], hash_key=self.meta["pii_hash_key"])


def _person(rng: random.Random) -> dict[str, Any]:
    birth = date(rng.randint(1965, 2004), rng.randint(1, 12), rng.randint(1, 28))
    return {"iin": make_iin(rng, birth), "surname": rng.choice(SURNAMES), "given_name": rng.choice(GIVEN),
            "birth_date": birth.isoformat(), "sex": "female"}


def corpus(events: int, *, seed: int) -> list[dict[str, Any]]:
    """`events` distinct canonical messages (as parsed and stored), with `received_at`, in acceptance order."""
    rng = random.Random(seed + 1)
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for line in generate(events * 2, seed=seed):
        doc = orjson.loads(line)
        if doc["message_id"] in seen:  # a re-send: the store keeps the first
            continue
        seen.add(doc["message_id"])
        extra = None
        if doc["type"] == "case.registered":
            doc["body"]["person"] = _person(rng)
            if rng.random() < 0.12:  # an overdue leg noticed by the SLA scheduler, three days after registration
                deadline = datetime.fromisoformat(doc["occurred_at"]) + timedelta(days=3)
                extra = {"message_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                         "type": "escalation.raised", "case_id": doc["case_id"], "occurred_at": deadline.isoformat(),
                         "body": {"rule": "ipr", "deadline_at": deadline.isoformat(),
                                  "reason": "SLA ipr: not met by its deadline"},
                         "received_at": (deadline + timedelta(seconds=rng.randrange(1, 30))).astimezone(UTC)
                         .isoformat().replace("+00:00", "Z")}
        for item in (doc, extra):
            if item is None or len(out) == events:
                continue
            received = datetime.fromisoformat(item.pop("received_at"))
            message = parse_message(item)
            out.append({"message_id": str(message.message_id), "type": message.type, "case_id": message.case_id,
                        "occurred_at": message.occurred_at, "received_at": received, "content": message.to_json(),
                        "body": item["body"]})
        if len(out) == events:
            break
    out.sort(key=lambda m: m["received_at"])
    return out


def _instance(counterpart: str, region: str, *, leadership: bool = False) -> str:
    if counterpart == "mio":
        return f"mio-{region.lower()}" + ("-leadership" if leadership else "")
    return counterpart


def build(path: Path, *, events: int, records: int, seed: int) -> dict[str, Any]:
    """Build the store at `path` (a new SQLite file) and return what the benchmark queries by."""
    started = time.perf_counter()
    rng = random.Random(seed + 2)
    meta: dict[str, Any] = {"events": events, "records": records, "seed": seed,
                            "pii_keys": f"k1:{generate_key()}", "pii_hash_key": generate_key()}
    cipher = PiiCipher.from_config(meta["pii_keys"], hash_key=meta["pii_hash_key"])
    kinds = load_mappings(ROOT / "gateway" / "mappings").kinds.kinds
    engines = create_engines(f"sqlite+aiosqlite:///{path}")
    asyncio.run(migrate(engines))
    store = Store(engines, exchange_log=ExchangeLog(cipher=cipher), personal=PersonSeal(cipher))
    writer = engines.sqlite_writer
    assert writer is not None

    msgs = corpus(events, seed=seed)
    _progress(f"corpus: {len(msgs):,} messages", started)
    regions = {m["case_id"]: m["body"]["region"] for m in msgs if m["type"] == "case.registered"}
    iins = {m["case_id"]: m["body"]["person"]["iin"] for m in msgs if m["type"] == "case.registered"}
    requests = {m["body"]["referral_id"]: m for m in msgs if m["type"] == "referral.requested"}
    status: dict[str, tuple[str, datetime]] = {}
    for m in msgs:
        if m["type"] in REPLIES and m["body"]["referral_id"] in requests:
            status[m["body"]["referral_id"]] = (m["type"].split(".")[1], m["received_at"])

    # deliveries and their attempts; hops are (at, message index, row) with the row built later
    deliveries: list[dict[str, Any]] = []
    hops: list[list[tuple[datetime, int, dict[str, Any]]]] = [[] for _ in msgs]
    for i, m in enumerate(msgs):
        t, body = m["received_at"], m["body"]
        region = regions.get(m["case_id"], "KZ-35")
        if m["type"] in FROM_PROBATION:
            source, hop, client = "probation", "received", "probation-is"
        elif m["type"] == "escalation.raised":
            source, hop, client = "sla-escalation", "received", None
        else:
            request = requests.get(body.get("referral_id", ""))
            counterpart = kinds[request["body"]["kind"]].counterpart if request else "mio"
            source = _instance(counterpart, region)
            hop = "reply" if m["type"] == "referral.accepted" and counterpart == "mio" else "received"
            client = f"counterpart:{source}"
        hops[i].append((t + timedelta(milliseconds=2), i, {
            "hop": hop, "peer": source, "request_in_at": t, "response_out_at": t + timedelta(milliseconds=2),
            "status_code": 202, "result": "accepted", "client": client, "signer": SIGNER if client else None}))
        m["source"] = source
        targets: list[tuple[str, str]] = []
        if m["type"] == "referral.requested":
            counterpart = kinds[body["kind"]].counterpart
            targets.append((counterpart, _instance(counterpart, region)))
        elif m["type"] in REPLIES:
            targets.append(("probation", "probation"))
        elif m["type"] == "escalation.raised":
            targets += [("mio", _instance("mio", region, leadership=True)), ("probation", "probation")]
        for counterpart, instance in targets:
            roll = rng.random()
            tries = 1 if roll < 0.9 else 3 if roll < 0.91 else rng.choice((2, 3))
            dead = 0.9 <= roll < 0.91
            at = t + timedelta(milliseconds=rng.uniform(20, 400))
            first = at
            for n in range(1, tries + 1):
                last = n == tries
                ok = last and not dead
                latency = timedelta(milliseconds=rng.uniform(15, 300) if ok else rng.uniform(5, 60))
                hops[i].append((at + latency, i, {
                    "hop": "attempt", "peer": instance, "attempt": n, "request_out_at": at,
                    "response_in_at": at + latency, "status_code": 200 if ok else 503,
                    "result": "delivered" if ok else "dead" if last else "retry", "delivery": len(deliveries),
                    "metadata_only": counterpart in METADATA_ONLY, "client": None,
                    "signer": SIGNER if ok else None}))
                if not last:
                    at += latency + timedelta(seconds=rng.uniform(1, 60) * n)
            deliveries.append({
                "message_id": m["message_id"], "case_id": m["case_id"], "counterpart": counterpart,
                "instance": instance, "state": "dead" if dead else "delivered", "attempts": tries,
                "next_attempt_at": first, "first_attempt_at": first, "lease_until": None, "claimed_by": None,
                "created_at": t, "finished_at": at + latency, "last_status": 503 if dead else 200,
                "reason": "503 after 3 attempts" if dead else None})

    # the log: every hop of a random subset of the messages, plus the gateway's own actions
    n_actions = int(records * sum(a[4] for a in ACTIONS))
    order = list(range(len(msgs)))
    rng.shuffle(order)
    chosen: list[tuple[datetime, int, dict[str, Any]]] = []
    for i in order:
        if len(chosen) + len(hops[i]) > records - n_actions:
            break
        chosen += hops[i]
    n_actions = records - len(chosen)
    start, span = msgs[0]["received_at"], msgs[-1]["received_at"] - msgs[0]["received_at"]
    weights = [a[4] for a in ACTIONS]
    for _ in range(n_actions):
        hop, peer, code, result, _ = rng.choices(ACTIONS, weights=weights)[0]
        at = start + span * rng.random()
        m = msgs[rng.randrange(len(msgs))] if hop in ("read", "lookup", "document", "audit-read") else None
        chosen.append((at, -1, {"hop": hop, "peer": peer, "request_in_at": at, "response_out_at": at,
                                "status_code": code, "result": result, "client": None if hop == "refused" else peer,
                                "error": "bad-signature" if hop == "refused" else "{}",
                                "case_id": m["case_id"] if m else None,
                                "iin": iins.get(m["case_id"]) if m and hop != "lookup" else None}))
    chosen.sort(key=lambda h: h[0])
    logged_cases = {msgs[i]["case_id"] for _, i, row in chosen if i >= 0 and row["hop"] != "attempt"}
    _progress(f"planned {len(deliveries):,} deliveries, {len(chosen):,} log records", started)

    batch = 20_000
    for lo in range(0, len(msgs), batch):
        with writer.begin() as conn:
            part = msgs[lo:lo + batch]
            store.insert_messages(conn, [{
                "message_id": m["message_id"], "type": m["type"], "case_id": m["case_id"],
                "occurred_at": m["occurred_at"], "received_at": m["received_at"], "source": m["source"],
                "content_hash": hashlib.sha256(m["content"]).hexdigest(), "content": m["content"],
                "accept_response": orjson.dumps({
                    "message_id": m["message_id"], "status": "accepted",
                    "received_at": m["received_at"].isoformat().replace("+00:00", "Z"),
                    "status_url": f"http://127.0.0.1:8080/v1/messages/{m['message_id']}"}).decode(),
            } for m in part])
            store.upsert_cases(conn, [{"case_id": m["case_id"], "region": m["body"]["region"],
                                       "registered_message_id": m["message_id"]}
                                      for m in part if m["type"] == "case.registered"])
            store.insert_referrals(conn, [{
                "referral_id": m["body"]["referral_id"], "case_id": m["case_id"], "kind": m["body"]["kind"],
                "risk_id": m["body"].get("risk_id"), "request_message_id": m["message_id"],
                "status": status.get(m["body"]["referral_id"], ("requested",))[0],
                "updated_at": status.get(m["body"]["referral_id"], (None, m["received_at"]))[1],
            } for m in part if m["type"] == "referral.requested"])
        _progress(f"messages {lo + len(part):,}", started)
    ids: list[int] = []
    for lo in range(0, len(deliveries), batch):
        with writer.begin() as conn:
            ids += store.insert_deliveries(conn, deliveries[lo:lo + batch])
    _progress(f"deliveries {len(ids):,}", started)
    response = b'{"status":"accepted"}'
    for lo in range(0, len(chosen), 10_000):
        rows = []
        for _, i, spec in chosen[lo:lo + 10_000]:
            m = msgs[i] if i >= 0 else None
            row: dict[str, Any] = {
                "message_id": m["message_id"] if m else None, "delivery_id": None, "hop": spec["hop"],
                "peer": spec["peer"], "attempt": spec.get("attempt"), "request_in_at": spec.get("request_in_at"),
                "request_out_at": spec.get("request_out_at"), "response_in_at": spec.get("response_in_at"),
                "response_out_at": spec.get("response_out_at"), "request_bytes": len(m["content"]) if m else None,
                "response_bytes": None, "status_code": spec["status_code"], "result": spec["result"],
                "error": spec.get("error"), "client": spec["client"], "signer": spec.get("signer"),
                "case_id": m["case_id"] if m else spec.get("case_id"),
            }
            if m is None:
                row["iin"] = spec.get("iin")
            elif spec["hop"] == "attempt":
                row["delivery_id"] = ids[spec["delivery"]]
                row["response_bytes"] = len(response)
                if spec["metadata_only"]:
                    row["request_hash"] = hashlib.sha256(m["content"]).hexdigest()
                    row["response_hash"] = hashlib.sha256(response).hexdigest()
                else:
                    row["request_raw"], row["response_raw"] = m["content"], response
            else:
                row["request_raw"] = m["content"]
                if m["type"] == "case.registered":
                    row["iin"] = iins[m["case_id"]]
            rows.append(row)
        with writer.begin() as conn:
            store.insert_exchanges(conn, rows)
        _progress(f"log records {lo + len(rows):,}", started)
    print(file=sys.stderr)
    asyncio.run(engines.dispose())

    case_ids = sorted(regions)
    meta["cases"] = rng.sample(case_ids, min(500, len(case_ids)))
    meta["iins"] = rng.sample(sorted(iins[c] for c in logged_cases if c in iins), min(500, len(logged_cases)))
    meta["start"], meta["end"] = start.isoformat(), msgs[-1]["received_at"].isoformat()
    meta["build_s"] = round(time.perf_counter() - started, 1)
    return meta


def _progress(text: str, started: float) -> None:
    print(f"\r  {time.perf_counter() - started:6.1f} s  {text}\033[K", end="", file=sys.stderr, flush=True)


def open_or_build(directory: Path, *, events: int, records: int, seed: int) -> Built:
    """The store in `directory` when it was built with these sizes, otherwise a new one (kept there)."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"store-{events}-{records}-{seed}"
    path, meta_file = directory / f"{name}.db", directory / f"{name}.json"
    if path.exists() and meta_file.exists():
        return Built(path, json.loads(meta_file.read_text()))
    for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    meta = build(path, events=events, records=records, seed=seed)
    meta_file.write_text(json.dumps(meta))
    os.chmod(meta_file, 0o600)  # it holds the store's personal-data keys
    return Built(path, meta)
