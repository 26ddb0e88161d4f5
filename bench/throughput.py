"""Gateway-mediated delivery vs direct calls to the same МИО simulator, measured in one run.

Usage: .venv/bin/python -m bench.throughput [--messages 5000] [--concurrency 32] [--latency-messages 300]
       [--signed | --compare-signing | --compare-logging] [--repeat 1]

Unsigned runs are the security-off baseline (GATEWAY_INSECURE_NO_AUTH, unsigned simulators); signed runs are
the production setup: the client signs (RFC 9421), the gateway verifies it, signs what it sends, and verifies
every response and callback against the simulators' pinned keys. --compare-logging runs the production setup
with and without the exchange log (GATEWAY_INSECURE_NO_EXCHANGE_LOG). Comparisons alternate the two setups
--repeat times and report medians, so a noisy moment on the shared machine does not pick the winner.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import orjson

from adapters.mio.codec import MioAdapter
from bench.loadgen import cpu_seconds, percentile, post_all
from gateway.canonical.messages import parse_message
from gateway.config import ROOT
from gateway.mapping import load_mappings
from gateway.pipeline.ports import EncodeContext
from gateway.samples import SampleCases
from tests.harness import free_port, wait_ready, write_counterparts


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=open(log, "ab"))


def _sim_cmd(factory: str, port: int, *, keys: Path | None = None, **kwargs: str) -> list[str]:
    call = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    signer = "None"
    if keys is not None:  # the simulator signs with its key pair, made beside the counterparts file
        signer = (f"__import__('adapters.simulation').simulation.SimSigner(__import__('security.parties')"
                  f".parties.ensure_party_key(__import__('pathlib').Path({str(keys)!r}), {kwargs['name']!r}))")
    code = (f"import uvicorn; from {factory.rsplit('.', 1)[0]} import {factory.rsplit('.', 1)[1]} as f; "
            f"uvicorn.run(f({call}, signer={signer}), host='127.0.0.1', port={port}, log_level='warning', "
            f"access_log=False)")
    return ["-c", code]


def _wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _stats(url: str) -> dict:
    return httpx.get(f"{url}/_sim/stats", timeout=30).json()


def _reset(url: str) -> None:
    httpx.post(f"{url}/_sim/reset").raise_for_status()
    httpx.post(f"{url}/_sim/config", json={"callbacks": False}).raise_for_status()


def _wait_unique(url: str, n: int, timeout: float = 300) -> float:
    """Wall-clock time at which the simulator had processed n distinct messages."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = _stats(url)
        if stats["unique_messages"] >= n:
            return max(times[-1] for times in stats["attempts"].values())
        time.sleep(0.2)
    raise RuntimeError(f"only {_stats(url)['unique_messages']} of {n} delivered in {timeout} s")


def _referrals(samples: SampleCases, case_ids: list[str], n: int) -> list[dict]:
    return [samples.shelter_referral(case_ids[i % len(case_ids)]) for i in range(n)]


def _direct_bodies(messages: list[dict]) -> list[bytes]:
    adapter = MioAdapter()
    mappings = load_mappings(ROOT / "gateway" / "mappings")
    instance = mappings.instance("mio-kz-35")
    context = EncodeContext(now=datetime.now(timezone.utc))
    return [adapter.encode(parse_message(m), mappings=mappings, instance=instance, context=context).body
            for m in messages]


def _added_latency(direct: list[float], via: list[float]) -> dict[str, float]:
    return {
        "direct_p50_ms": percentile(direct, 50) * 1000,
        "direct_p99_ms": percentile(direct, 99) * 1000,
        "gateway_p50_ms": percentile(via, 50) * 1000,
        "gateway_p99_ms": percentile(via, 99) * 1000,
        "added_p50_ms": (percentile(via, 50) - percentile(direct, 50)) * 1000,
        "added_p99_ms": (percentile(via, 99) - percentile(direct, 99)) * 1000,
    }


def _arrivals(url: str, messages: list[dict], sent_at: list[float]) -> list[float]:
    attempts = _stats(url)["attempts"]
    return [attempts[m["message_id"]][0] - t for m, t in zip(messages, sent_at)]


def _system_client(tmp: Path, database_url: str):  # noqa: ANN202
    """Register the bench's Probation IS client on the store and return a function signing its requests."""
    from gateway.pipeline.ports import WireRequest
    from security.parties import ensure_party_key
    from tests.harness import provision_clients

    key = ensure_party_key(tmp / "client-keys", "bench-probation-is")
    if database_url.startswith("postgresql"):
        from tests.conftest import _reset_postgres

        _reset_postgres(database_url)
    provision_clients(database_url, system_key=key)
    signer = key.http_signer()

    def sign(target_uri: str, body: bytes) -> list[tuple[str, str]]:
        wire = WireRequest("POST", "", (("content-type", "application/json"),), body)
        return [(k, v) for k, v in signer.sign_request(wire, target_uri=target_uri).headers
                if k.lower() != "content-type"]

    return sign


def _cpu(procs: list[subprocess.Popen]) -> dict[str, float]:
    """CPU seconds (user + system) so far of the load generator and each child: where a message's cost goes."""
    return {"loadgen": sum(os.times()[:2]),
            **{name: cpu_seconds(p.pid) for name, p in zip(("mio", "probation", "gateway"), procs)}}


def stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    gw_port, mio_port, prob_port = free_port(), free_port(), free_port()
    gw_url, mio_url, prob_url = (f"http://127.0.0.1:{p}" for p in (gw_port, mio_port, prob_port))
    peer_keys = tmp / "peer-keys" if args.signed else None
    unsigned = {} if args.signed else {"keys": [], "require_signatures": False}
    counterparts = write_counterparts(tmp / "counterparts.yaml", [
        {"name": "probation", "counterpart": "probation", "base_url": prob_url, **unsigned},
        {"name": "mio-kz-35", "counterpart": "mio", "regions": ["KZ-35"], "base_url": mio_url, **unsigned},
    ])
    env = dict(os.environ, GATEWAY_DATABASE_URL=args.database_url or f"sqlite+aiosqlite:///{tmp / 'gw.db'}",
               GATEWAY_COUNTERPARTS_FILE=str(counterparts), GATEWAY_LOG_LEVEL="WARNING",
               GATEWAY_PUBLIC_URL=gw_url)
    env.pop("GATEWAY_KEY_PASSPHRASE", None)
    sign = None
    if args.signed:
        from security.keys import KeyStore

        KeyStore(tmp / "keys", passphrase="bench").generate(channel="json")
        env.update(GATEWAY_KEYS_DIR=str(tmp / "keys"), GATEWAY_KEY_PASSPHRASE="bench")
        sign = _system_client(tmp, env["GATEWAY_DATABASE_URL"])
        from security.parties import ensure_party_key

        for name in ("mio-kz-35", "probation"):  # before the gateway starts: it reads the pinned certificates
            ensure_party_key(peer_keys, name)
    else:
        env.update(GATEWAY_INSECURE_NO_AUTH="true")
    if getattr(args, "no_log", False):
        env.update(GATEWAY_INSECURE_NO_EXCHANGE_LOG="true")
    procs = [
        _spawn(_sim_cmd("adapters.mio.simulator.create_app", mio_port, keys=peer_keys, name="mio-kz-35",
                        callback_url=f"{gw_url}/v1/inbound/mio"), env, tmp / "mio.log"),
        _spawn(_sim_cmd("adapters.probation.simulator.create_app", prob_port, keys=peer_keys, name="probation"),
               env, tmp / "probation.log"),
        _spawn(["-m", "gateway", "serve", "--port", str(gw_port)], env, tmp / "gateway.log"),
    ]
    try:
        _wait_http(f"{mio_url}/_sim/stats")
        _wait_http(f"{prob_url}/_sim/stats")
        wait_ready(gw_url)
        samples = SampleCases(seed=7)
        cases = []
        while len(cases) < 50:
            c = samples.case()[0]
            c["body"]["region"] = "KZ-35"
            cases.append(c)
        reg = asyncio.run(post_all(gw_url, "/v1/messages", [orjson.dumps(c) for c in cases], concurrency=4,
                                   sign=sign))
        assert reg.statuses == {202: len(cases)}, reg.statuses
        case_ids = [c["case_id"] for c in cases]
        out: dict = {"messages": args.messages, "concurrency": args.concurrency,
                     "store": env["GATEWAY_DATABASE_URL"].split(":")[0], "signed": args.signed,
                     "exchange_log": not getattr(args, "no_log", False)}

        # 1. Added latency at light load (one client, one message at a time).
        _reset(mio_url)
        lat_direct = _referrals(samples, case_ids, args.latency_messages)
        d = asyncio.run(post_all(mio_url, "/api/v1/referrals", _direct_bodies(lat_direct), concurrency=1))
        direct_arrival = _arrivals(mio_url, lat_direct, d.sent_at)
        _reset(mio_url)
        lat_via = _referrals(samples, case_ids, args.latency_messages)
        g = asyncio.run(post_all(gw_url, "/v1/messages", [orjson.dumps(m) for m in lat_via], concurrency=1,
                                 sign=sign))
        assert g.statuses == {202: len(lat_via)}, g.statuses
        _wait_unique(mio_url, len(lat_via))
        via_arrival = _arrivals(mio_url, lat_via, g.sent_at)
        out["latency"] = _added_latency(direct_arrival, via_arrival)
        out["latency"]["accept_p50_ms"] = percentile(g.latency, 50) * 1000

        # 2. Throughput: the same clients, direct then through the gateway.
        _reset(mio_url)
        direct = _referrals(samples, case_ids, args.messages)
        d = asyncio.run(post_all(mio_url, "/api/v1/referrals", _direct_bodies(direct), concurrency=args.concurrency))
        direct_rate = args.messages / d.elapsed
        _reset(mio_url)
        via = _referrals(samples, case_ids, args.messages)
        bodies = [orjson.dumps(m) for m in via]
        cpu0 = _cpu(procs)
        t0 = time.time()
        g = asyncio.run(post_all(gw_url, "/v1/messages", bodies, concurrency=args.concurrency, sign=sign))
        assert g.statuses == {202: len(via)}, g.statuses
        last = _wait_unique(mio_url, len(via))
        stats = _stats(mio_url)
        cpu = {name: round((b - a) * 1000 / args.messages, 3)
               for (name, a), b in zip(cpu0.items(), _cpu(procs).values())}
        out["throughput"] = {
            "direct_msgs_per_s": direct_rate,
            "accepted_msgs_per_s": args.messages / g.elapsed,
            "accept_p50_ms": percentile(g.latency, 50) * 1000,
            "accept_p99_ms": percentile(g.latency, 99) * 1000,
            "gateway_delivered_msgs_per_s": args.messages / (last - t0),
            "ratio_gateway_to_direct": (args.messages / (last - t0)) / direct_rate,
            "duplicates_at_simulator": stats["duplicates"],
            "cpu_ms_per_message": cpu,
        }

        # 3. Acceptance alone: a second gateway on a fresh store with its worker off (messages queue).
        port2 = free_port()
        env2 = dict(env, GATEWAY_DATABASE_URL=args.database_url or f"sqlite+aiosqlite:///{tmp / 'accept.db'}",
                    GATEWAY_WORKER="false", GATEWAY_PUBLIC_URL=f"http://127.0.0.1:{port2}")
        sign2 = sign
        if args.signed and env2["GATEWAY_DATABASE_URL"] != env["GATEWAY_DATABASE_URL"]:
            sign2 = _system_client(tmp, env2["GATEWAY_DATABASE_URL"])
        procs.append(_spawn(["-m", "gateway", "serve", "--port", str(port2)], env2, tmp / "gateway2.log"))
        wait_ready(f"http://127.0.0.1:{port2}")
        a = asyncio.run(post_all(f"http://127.0.0.1:{port2}", "/v1/messages",
                                 [orjson.dumps(m) for m in _referrals(samples, case_ids, args.messages)],
                                 concurrency=args.concurrency, sign=sign2))
        assert a.statuses == {202: args.messages}, a.statuses
        out["accept_only"] = {"accepted_msgs_per_s": args.messages / a.elapsed,
                              "accept_p50_ms": percentile(a.latency, 50) * 1000,
                              "accept_p99_ms": percentile(a.latency, 99) * 1000}
        return out
    finally:
        stop_all(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-messages", type=int, default=300)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--signed", action="store_true", help="the gateway signs what it sends (RFC 9421)")
    parser.add_argument("--compare-signing", action="store_true",
                        help="run unsigned then signed, and report what signing costs")
    parser.add_argument("--compare-logging", action="store_true",
                        help="run signed without then with the exchange log, and report what logging costs")
    parser.add_argument("--repeat", type=int, default=1, help="comparisons: alternate the two setups N times")
    args = parser.parse_args()
    if args.compare_signing:
        variants = {"unsigned": {"signed": False}, "signed": {"signed": True}}
    elif args.compare_logging:
        variants = {"unlogged": {"signed": True, "no_log": True}, "logged": {"signed": True}}
    else:
        print(json.dumps(run(args), indent=2))
        return
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, overrides in variants.items():
            runs[name].append(run(argparse.Namespace(**{**vars(args), **overrides})))
    (base, base_runs), (other, other_runs) = runs.items()

    def median(rs: list[dict], section: str, key: str) -> float:
        return statistics.median(r[section][key] for r in rs)

    delivered = ("throughput", "gateway_delivered_msgs_per_s")
    accepted = ("accept_only", "accepted_msgs_per_s")
    summary = {
        f"{name}_{label}": [round(r[sec][key], 1) for r in rs]
        for name, rs in runs.items() for label, (sec, key) in (("delivered", delivered), ("accept_only", accepted))
    }
    cost = "signing" if args.compare_signing else "logging"
    summary[f"{cost}_cost_share"] = 1 - median(other_runs, *delivered) / median(base_runs, *delivered)
    summary[f"{cost}_accept_cost_share"] = 1 - median(other_runs, *accepted) / median(base_runs, *accepted)
    print(json.dumps({"runs": runs, "summary": summary}, indent=2))

if __name__ == "__main__":
    main()
