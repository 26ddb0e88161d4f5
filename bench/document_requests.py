"""Document requests: a stored record served vs. a trivial endpoint, and what joining an in-flight call costs."""

# Usage: .venv/bin/python -m bench.document_requests [--requests 10000] [--concurrency 32] [--rounds 40]
#        [--waiters 10] [--latency-ms 100]
#
# One gateway process (`gateway serve`) on a fresh SQLite file; the ЦОН simulator and the Probation IS receiver in
# processes of their own. The client signs every request (RFC 9421) and the simulators sign their answers, which the
# gateway verifies against their pinned keys; the gateway has no signing key of its own (as in the test stacks).
# Each measurement has its baseline in the same run:
#
# 1. Cached record: signed POST /v1/document-requests for a record already stored (200 from the store: a write of
#    the request and its read, no upstream call) against GET /healthz and against the same signed POST refused by
#    validation (authentication and its nonce, nothing else), with the same client, connections and count.
#    Requests are signed before the clock starts, so the load generator's signing takes no CPU from the gateway.
# 2. Coalescing: with ЦОН answering after --latency-ms, a request's result time is its document.ready reaching the
#    Probation IS; a request alone against --waiters requests joining one upstream call (see _coalescing).

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import orjson

from bench.loadgen import Signer, cpu_seconds, get_request, percentile, post_request, read_response, send_all
from bench.throughput import _spawn, _system_client, _wait_http, stop_all
from gateway.samples import SampleCases
from security.parties import ensure_party_key
from tests.harness import free_port, wait_ready, write_counterparts

KIND = "identity_document_status"


# --- a lean client: requests built (and signed) in advance, written raw on keep-alive connections -------------


def _post(host: str, port: int, path: str, body: bytes, sign: Signer) -> bytes:
    return post_request(host, port, path, body, sign(f"http://{host}:{port}{path}", body))


async def _blast(host: str, port: int, requests: list[bytes], concurrency: int) -> dict[str, Any]:
    """Every request over `concurrency` keep-alive connections; rate and latency percentiles."""
    r = await send_all(host, port, len(requests), requests.__getitem__, concurrency=concurrency)
    return {"per_s": len(requests) / r.elapsed, "p50_ms": percentile(r.latency, 50) * 1000,
            "p99_ms": percentile(r.latency, 99) * 1000, "statuses": r.statuses}


class _Connections:
    """N open connections, to send N requests at (nearly) the same instant and read the N answers."""

    def __init__(self, host: str, port: int, n: int) -> None:
        self.host, self.port, self.n = host, port, n
        self.pairs: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open(self) -> None:
        self.pairs = [await asyncio.open_connection(self.host, self.port) for _ in range(self.n)]

    async def send_together(self, requests: list[bytes]) -> list[tuple[float, float, int, bytes]]:
        """(sent at, answer latency, status, body) per request; all written before any answer is read."""
        sent = []
        for (_, writer), request in zip(self.pairs, requests):
            sent.append((time.time(), time.perf_counter()))
            writer.write(request)
        out = []
        for (reader, _), (wall, t0) in zip(self.pairs, sent):
            status, body = await read_response(reader)
            out.append((wall, time.perf_counter() - t0, status, body))
        return out

    def close(self) -> None:
        for _, writer in self.pairs:
            writer.close()


# --- the stack -----------------------------------------------------------------------------------------------


def _sim(module: str, name: str, port: int, keys: Path, *, xml: bool, callback: str | None) -> list[str]:
    algorithm = "ecdsa-p256" if xml else "ed25519"
    callback_arg = f"callback_url={callback!r}, " if callback else ""
    code = (f"import uvicorn; from pathlib import Path; from {module} import create_app; "
            f"from adapters.simulation import SimSigner; from security.parties import ensure_party_key; "
            f"uvicorn.run(create_app(name={name!r}, {callback_arg}signer=SimSigner(ensure_party_key("
            f"Path({str(keys)!r}), {name!r}, algorithm={algorithm!r}), xml={xml!r})), host='127.0.0.1', "
            f"port={port}, log_level='warning', access_log=False)")
    return ["-c", code]


def _measured(pid: int, host: str, port: int, requests: list[bytes], concurrency: int) -> dict[str, Any]:
    """_blast, plus the gateway's CPU time per request (is it busy, or waiting?)."""
    before = cpu_seconds(pid)
    result = asyncio.run(_blast(host, port, requests, concurrency))
    result["gateway_cpu_ms_per_request"] = (cpu_seconds(pid) - before) * 1000 / len(requests)
    return result


def _ready_id(request_id: str) -> str:
    """The message id of a request's document.ready (gateway/documents.py derives it from the request id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"document-request/{request_id}"))


def _arrivals(prob_url: str) -> dict[str, float]:
    """First arrival (wall clock, at the Probation IS) of every message it received."""
    return {m: times[0] for m, times in httpx.get(f"{prob_url}/_sim/stats", timeout=30).json()["attempts"].items()}


def _wait_arrivals(prob_url: str, message_ids: list[str], timeout: float = 30) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        arrivals = _arrivals(prob_url)
        if all(m in arrivals for m in message_ids):
            return arrivals
        time.sleep(0.02)
    raise RuntimeError(f"document.ready did not arrive for {sum(m not in _arrivals(prob_url) for m in message_ids)}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-docs-"))
    host = "127.0.0.1"
    gw_port, con_port, prob_port = free_port(), free_port(), free_port()
    gw_url, con_url, prob_url = (f"http://{host}:{p}" for p in (gw_port, con_port, prob_port))
    keys = tmp / "peer-keys"
    ensure_party_key(keys, "con", algorithm="ecdsa-p256")  # before the gateway reads the pinned certificates
    ensure_party_key(keys, "probation")
    counterparts = write_counterparts(tmp / "counterparts.yaml", [
        {"name": "probation", "counterpart": "probation", "base_url": prob_url},
        {"name": "con", "counterpart": "con", "base_url": con_url},
    ])
    db = f"sqlite+aiosqlite:///{tmp / 'gw.db'}"
    env = dict(os.environ, GATEWAY_DATABASE_URL=db, GATEWAY_COUNTERPARTS_FILE=str(counterparts),
               GATEWAY_LOG_LEVEL="WARNING", GATEWAY_PUBLIC_URL=gw_url, GATEWAY_KEYS_DIR=str(tmp / "keys"),
               GATEWAY_PII_KEYS_FILE=str(tmp / "pii-keys.json"))
    for name in ("GATEWAY_KEY_PASSPHRASE", "GATEWAY_INSECURE_NO_AUTH", "GATEWAY_PII_KEYS", "GATEWAY_PII_HASH_KEY"):
        env.pop(name, None)
    sign = _system_client(tmp, db)
    procs = [
        _spawn(_sim("adapters.con.simulator", "con", con_port, keys, xml=True,
                    callback=f"{gw_url}/v1/inbound/con"), env, tmp / "con.log"),
        _spawn(_sim("adapters.probation.simulator", "probation", prob_port, keys, xml=False, callback=None), env,
               tmp / "probation.log"),
        _spawn(["-m", "gateway", "serve", "--port", str(gw_port)], env, tmp / "gateway.log"),
    ]
    try:
        _wait_http(f"{con_url}/_sim/stats")
        _wait_http(f"{prob_url}/_sim/stats")
        wait_ready(gw_url)
        samples = SampleCases(seed=11)
        cases = [samples.case()[0] for _ in range(1 + args.rounds * (3 + args.waiters))]
        registered = asyncio.run(_blast(host, gw_port, [_post(host, gw_port, "/v1/messages", orjson.dumps(c), sign)
                                                        for c in cases], 8))
        assert registered["statuses"] == {202: len(cases)}, registered
        people = [(c["case_id"], c["body"]["person"]["iin"]) for c in cases]

        def ask(person: tuple[str, str], kind: str = KIND) -> bytes:
            body = orjson.dumps({"case_id": person[0], "record_kind": kind, "iin": person[1],
                                 "purpose": "бенчмарк: проверка документа"})
            return _post(host, gw_port, "/v1/document-requests", body, sign)

        out: dict[str, Any] = {"store": "sqlite", "signed": True, "record_kind": KIND}
        out["cached"] = _cached(args, procs[-1].pid, host, gw_port, con_url, people[0], ask)
        out["coalescing"] = _coalescing(args, host, gw_port, con_url, prob_url, people[1:], ask)
        return out
    finally:
        stop_all(procs)


def _cached(args: argparse.Namespace, pid: int, host: str, port: int, con_url: str, person: tuple[str, str],
            ask: Callable[..., bytes]) -> dict[str, Any]:
    # The record is fetched once; every request after that is a hit.
    for _ in range(200):
        status, body = asyncio.run(_blast_one(host, port, ask(person)))
        if status == 200:
            break
        time.sleep(0.05)
    assert status == 200 and orjson.loads(body)["served_from"] == "store", body
    n = args.requests
    runs = []
    for _ in range(2):  # interleaved, so a neighbour's load on the machine hits both alike
        healthz = _measured(pid, host, port, [get_request(host, port, "/healthz")] * n, args.concurrency)
        # Signed before the clock starts (each with its own nonce; valid for 5 minutes). A second baseline: the
        # same signed POST refused by validation (authentication and its nonce write, nothing else).
        refused = _measured(pid, host, port, [ask(person, kind="no_such_kind") for _ in range(n)],
                            args.concurrency)
        cached = _measured(pid, host, port, [ask(person) for _ in range(n)], args.concurrency)
        assert healthz["statuses"] == {200: n}, healthz
        assert refused["statuses"] == {422: n}, refused
        assert cached["statuses"] == {200: n}, cached
        runs.append({f"{name}_{k}": v for name, r in (("healthz", healthz), ("signed_refused", refused),
                                                      ("cached", cached))
                     for k, v in r.items() if k != "statuses"})
    best = max(r["cached_per_s"] for r in runs)
    upstream = httpx.get(f"{con_url}/_sim/stats", timeout=30).json()["requests"]
    return {"requests_per_run": n, "concurrency": args.concurrency, "runs": runs,
            "cached_per_s": best, "ratio_to_healthz": statistics.mean(r["cached_per_s"] / r["healthz_per_s"]
                                                                      for r in runs),
            "upstream_calls": upstream, "target_per_s": 2000, "met": min(r["cached_per_s"] for r in runs) >= 2000}


async def _blast_one(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        return await read_response(reader)
    finally:
        writer.close()


def _coalescing(args: argparse.Namespace, host: str, port: int, con_url: str, prob_url: str,
                people: list[tuple[str, str]], ask: Callable[..., bytes]) -> dict[str, Any]:
    """Per round, for a person not asked about before:

    - alone: one request;
    - coalesced: a leader, then the other waiters one after another while its upstream call is in the air (each
      sent when the previous one is answered, so what is measured is joining, not a burst of arrivals);
    - burst: --waiters requests for one record written at the same instant;
    - apart: --waiters requests for as many different records written at the same instant (no coalescing).

    A request's result time is its document.ready's arrival at the Probation IS. What coalescing adds is taken
    after the upstream answer (result time minus the moment ЦОН received the lookup, the same offset in every
    mode), so the time a joiner spent waiting for someone else's call, which is shorter than a call of its own,
    does not flatter it; and, on the request side, the answer time of a joining POST against a leading one.
    """
    sim = {"latency_ms": args.latency_ms, "callbacks": False}
    httpx.post(f"{con_url}/_sim/config", json=sim).raise_for_status()
    n = args.waiters
    after_upstream: dict[str, list[float]] = {"alone": [], "coalesced": []}
    first_after_upstream: dict[str, list[float]] = {"alone": [], "coalesced": []}  # per round: the landing
    end_to_end: dict[str, list[float]] = {"alone": [], "coalesced": [], "burst": [], "apart": []}
    answer: dict[str, list[float]] = {"alone": [], "leader": [], "joiner": [], "burst": []}
    calls: dict[str, int] = {"alone": 0, "coalesced": 0, "burst": 0, "apart": 0}

    def lookups() -> dict[str, float]:
        return {k: v[0] for k, v in httpx.get(f"{con_url}/_sim/stats", timeout=30).json()["attempts"].items()}

    async def together(requests: list[bytes]) -> list[tuple[float, float, int, bytes]]:
        conns = _Connections(host, port, len(requests))
        await conns.open()
        try:
            await asyncio.sleep(0.01)  # connections settled before the clock starts
            return await conns.send_together(requests)
        finally:
            conns.close()

    async def one_by_one(requests: list[bytes]) -> list[tuple[float, float, int, bytes]]:
        conns = _Connections(host, port, 1)
        await conns.open()
        try:
            await asyncio.sleep(0.01)
            return [(await conns.send_together([r]))[0] for r in requests]
        finally:
            conns.close()

    def measure(mode: str, results: list[tuple[float, float, int, bytes]], seen: dict[str, float]) -> None:
        assert all(status == 202 for _, _, status, _ in results), results
        ids = [_ready_id(orjson.loads(body)["request_id"]) for *_, body in results]
        arrivals = _wait_arrivals(prob_url, ids)
        end_to_end[mode].extend(arrivals[m] - wall for m, (wall, *_) in zip(ids, results))
        new = {k: t for k, t in lookups().items() if k not in seen}
        calls[mode] += len(new)
        if mode in after_upstream:
            (asked_at,) = new.values()
            after_upstream[mode].extend(arrivals[m] - asked_at for m in ids)
            first_after_upstream[mode].append(min(arrivals[m] for m in ids) - asked_at)
        seen.update(new)
        time.sleep(0.05)  # the round's pushes all delivered before the next round starts

    seen = lookups()
    it = iter(people)
    for _ in range(args.rounds):
        alone = asyncio.run(one_by_one([ask(next(it))]))
        answer["alone"].append(alone[0][1])
        measure("alone", alone, seen)

        person = next(it)
        coalesced = asyncio.run(one_by_one([ask(person) for _ in range(n)]))
        answer["leader"].append(coalesced[0][1])
        answer["joiner"].extend(latency for _, latency, _, _ in coalesced[1:])
        measure("coalesced", coalesced, seen)

        person = next(it)
        burst = asyncio.run(together([ask(person) for _ in range(n)]))
        answer["burst"].extend(latency for _, latency, _, _ in burst)
        measure("burst", burst, seen)
        measure("apart", asyncio.run(together([ask(next(it)) for _ in range(n)])), seen)

    def p50(values: list[float]) -> float:
        return percentile(values, 50) * 1000

    added_after_upstream = p50(after_upstream["coalesced"]) - p50(after_upstream["alone"])
    added_answer = p50(answer["joiner"]) - p50(answer["leader"])
    return {
        "upstream_latency_ms": args.latency_ms, "rounds": args.rounds, "waiters": n,
        "upstream_calls_per_round": {k: v / args.rounds for k, v in calls.items()},
        "result_after_upstream_p50_ms": {k: p50(v) for k, v in after_upstream.items()},
        "added_p50_ms": added_after_upstream,
        # The first result of a round comes with the landing; the others are the fan-out of one push per request.
        "first_result_after_upstream_p50_ms": {k: p50(v) for k, v in first_after_upstream.items()},
        "post_answer_p50_ms": {k: p50(v) for k, v in answer.items()},
        "join_vs_lead_answer_added_p50_ms": added_answer,
        "end_to_end_p50_ms": {k: p50(v) for k, v in end_to_end.items()},
        "end_to_end_p99_ms": {k: percentile(v, 99) * 1000 for k, v in end_to_end.items()},
        "target_added_ms": 1.0,
        "met": added_after_upstream <= 1.0 and added_answer <= 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10000, help="per run of the cached-record measurement")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=40, help="coalescing rounds (each mode once per round)")
    parser.add_argument("--waiters", type=int, default=10, help="requests for one record sent together")
    parser.add_argument("--latency-ms", type=float, default=100, help="ЦОН's answer time in the coalescing runs")
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
