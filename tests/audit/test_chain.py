"""The exchange log on SQLite and PostgreSQL: appends, append-only triggers, tampering named, checkpoints."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from multiprocessing import get_context
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from gateway.audit.chain import (
    GENESIS,
    HASHED_FIELDS,
    RECORD_FIELDS,
    CheckpointWriter,
    LogEntry,
    append,
    canonical_bytes,
    chain_hash,
    jwks_resolver,
    keystore_resolver,
    record_from_row,
    sha256_hex,
    signer_for_key,
    signer_from_keystore,
    write_checkpoint,
)
from gateway.audit.export import export_chain
from gateway.audit.verify import VerifyReport, verify_export, verify_store
from gateway.storage.audit_tables import audit_checkpoints, exchange_log
from gateway.storage.db import Engines, create_engines, migrate
from gateway.storage.store import Store
from security.keys import KeyStore
from security.pii import PiiCipher

T0 = datetime(2026, 11, 28, 3, 55, 0, 123456, tzinfo=timezone.utc)
N = 12
PII = PiiCipher({"k1": b"k" * 32}, hash_key=b"h" * 32)


def entry(i: int, *, kind: str | None = None) -> LogEntry:
    """A varied record: every third one metadata-only (hash kept, bytes not), others with raw bodies."""
    keep_raw = i % 3 != 0
    return LogEntry(
        at=T0 + timedelta(seconds=i, microseconds=i),
        kind=kind or ("received", "attempt", "callback", "read")[i % 4],
        message_id=str(uuid.UUID(int=i + 1)),
        delivery_id=i if i % 2 else None,
        case_id=f"PRB-2026-{i:06d}",
        peer="mio-almaty" if i % 2 else "probation-is",
        client="probation-is" if i % 2 == 0 else None,
        signer="ulq8H1XvC6dPz3Fv2sJ0w7Yh9bQm4nE5rT6yU1iO2pA" if i % 2 == 0 else None,
        iin_hash=PII.hash(f"90010130{i:04d}"),
        status_code=200 if i % 5 else 503,
        result="delivered" if i % 5 else "retry",
        request_raw=f'{{"referral":{i},"note":"жильё"}}'.encode() if keep_raw else None,
        request_hash=None if keep_raw else sha256_hex(b"body not kept %d" % i),
        response_raw=b"\x00\xff<ack/>" if keep_raw else None,
        detail={"attempt": i, "note": "повтор"} if i % 2 else None,
    )


@dataclass
class Log:
    engines: Engines
    key: ed25519.Ed25519PrivateKey

    def resolver(self) -> Callable[[str], object]:
        return {"k1": self.key.public_key()}.get

    async def verify(self) -> VerifyReport:
        return await verify_store(self.engines, public_key=self.resolver())

    async def run(self, work: Callable[[Connection], object]) -> object:
        async with self.engines.write.begin() as conn:
            return await conn.run_sync(work)

    async def as_attacker(self, work: Callable[[Connection], object]) -> None:
        """Tamper as someone with DDL rights: triggers off (dropped on SQLite, replica role on PostgreSQL)."""
        def go(conn: Connection) -> None:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            else:
                for table in ("exchange_log", "audit_checkpoints"):
                    conn.exec_driver_sql(f"DROP TRIGGER {table}_no_update")
                    conn.exec_driver_sql(f"DROP TRIGGER {table}_no_delete")
            work(conn)

        await self.run(go)


async def _log(url: str, *, checkpoint: bool = True) -> Log:
    engines = create_engines(url)
    await migrate(engines)
    log = Log(engines, ed25519.Ed25519PrivateKey.generate())
    for start in range(0, N, 4):  # three transactions, one INSERT each
        await log.run(lambda conn, s=start: append(conn, [entry(i) for i in range(s, s + 4)]))
    if checkpoint:
        await log.run(lambda conn: write_checkpoint(conn, sign=signer_for_key("k1", log.key), now=T0 + timedelta(hours=1)))
    return log


@pytest.fixture
async def log(database_url: str) -> AsyncIterator[Log]:
    made = await _log(database_url)
    try:
        yield made
    finally:
        await made.engines.dispose()


def _row(conn: Connection, seq: int) -> dict:
    return record_from_row(conn.execute(
        select(*[exchange_log.c[name] for name in RECORD_FIELDS]).where(exchange_log.c.seq == seq)).one())


def _sql(conn: Connection, statement: str, **params: object) -> None:
    conn.execute(text(statement), params)


def _shift(conn: Connection, *, from_seq: int, by: int) -> None:
    # Through negatives: the primary key is checked row by row, so an in-place +1 would collide.
    _sql(conn, "UPDATE exchange_log SET seq = -seq WHERE seq >= :s", s=from_seq)
    _sql(conn, "UPDATE exchange_log SET seq = -seq + :by WHERE seq < 0", by=by)


def edit_field(conn: Connection) -> None:
    _sql(conn, "UPDATE exchange_log SET status_code = 500 WHERE seq = 5")


def edit_raw(conn: Connection) -> None:
    _sql(conn, "UPDATE exchange_log SET request_raw = :b WHERE seq = 5", b=b'{"referral":4,"note":"forged"}')


def edit_and_rehash(conn: Connection) -> None:
    row = _row(conn, 5)
    row["result"] = "delivered-forged"[:20]
    _sql(conn, "UPDATE exchange_log SET result = :r, hash = :h WHERE seq = 5",
         r=row["result"], h=chain_hash(row["prev_hash"], canonical_bytes(row)))


def delete(conn: Connection) -> None:
    _sql(conn, "DELETE FROM exchange_log WHERE seq = 5")


def delete_and_renumber(conn: Connection) -> None:
    _sql(conn, "DELETE FROM exchange_log WHERE seq = 5")
    _shift(conn, from_seq=6, by=-1)


def swap(conn: Connection) -> None:
    _sql(conn, "UPDATE exchange_log SET seq = -5 WHERE seq = 5")
    _sql(conn, "UPDATE exchange_log SET seq = 5 WHERE seq = 6")
    _sql(conn, "UPDATE exchange_log SET seq = 6 WHERE seq = -5")


def insert_and_renumber(conn: Connection) -> None:
    _shift(conn, from_seq=5, by=1)
    forged = entry(99, kind="admin").row(seq=5, prev_hash=_row(conn, 4)["hash"])  # a correct link to 4
    conn.execute(insert(exchange_log), [forged])


def insert_unlinked_at_end(conn: Connection) -> None:
    conn.execute(insert(exchange_log), [entry(99).row(seq=N + 1, prev_hash="ab" * 32)])


def truncate_last(conn: Connection) -> None:
    _sql(conn, "DELETE FROM exchange_log WHERE seq = :s", s=N)


def cut_and_regrow(conn: Connection) -> None:
    _sql(conn, "DELETE FROM exchange_log WHERE seq = :s", s=N)
    append(conn, [entry(77)])  # a properly chained, different record N


def rewrite_all_hashes(conn: Connection) -> None:
    # The strongest attack on the chain alone: change record 3 and recompute every hash after it.
    prev = _row(conn, 2)["hash"]
    for seq in range(3, N + 1):
        row = _row(conn, seq)
        if seq == 3:
            row["status_code"] = 404
        row["prev_hash"] = prev
        prev = chain_hash(prev, canonical_bytes(row))
        _sql(conn, "UPDATE exchange_log SET status_code = :c, prev_hash = :p, hash = :h WHERE seq = :s",
             c=row["status_code"], p=row["prev_hash"], h=prev, s=seq)


def forge_checkpoint_signature(conn: Connection) -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    _sql(conn, "UPDATE audit_checkpoints SET signature = :s",
         s=base64.b64encode(other.sign(b"anything")).decode())


def move_checkpoint_head(conn: Connection) -> None:
    # Someone who rewrote the log also moves the checkpoint's head: the signature no longer covers it.
    rewrite_all_hashes(conn)
    _sql(conn, "UPDATE audit_checkpoints SET head_hash = :h", h=_row(conn, N)["hash"])


TAMPERING = {
    "edit-field": (edit_field, "edited", 5),
    "edit-raw-bytes": (edit_raw, "edited", 5),
    "edit-and-rehash": (edit_and_rehash, "edited", 5),
    "delete": (delete, "deleted", 5),
    "delete-and-renumber": (delete_and_renumber, "deleted", 5),
    "swap": (swap, "reordered", 5),
    "insert-and-renumber": (insert_and_renumber, "inserted", 5),
    "insert-unlinked": (insert_unlinked_at_end, "inserted", N + 1),
    "truncate-last": (truncate_last, "truncated", N),
    "cut-and-regrow": (cut_and_regrow, "truncated", N),
    "rewrite-all-hashes": (rewrite_all_hashes, "truncated", N),
    "forged-checkpoint-signature": (forge_checkpoint_signature, "bad-checkpoint-signature", N),
    "checkpoint-head-moved": (move_checkpoint_head, "bad-checkpoint-signature", N),
}


async def test_an_untouched_log_verifies_with_its_checkpoint(log: Log) -> None:
    report = await log.verify()
    assert report.ok, report.problem
    assert (report.records, report.checkpoints, report.head_seq, report.signatures_checked) == (N, 1, N, True)


async def test_hashes_are_the_same_on_every_backend_and_without_one(log: Log) -> None:
    prev = GENESIS
    for i in range(N):
        prev = entry(i).row(seq=i + 1, prev_hash=prev)["hash"]
    stored = await log.run(lambda conn: [_row(conn, s) for s in range(1, N + 1)])
    assert stored[-1]["hash"] == prev == (await log.verify()).head_hash
    assert [r["seq"] for r in stored] == list(range(1, N + 1))
    assert stored[0]["prev_hash"] == GENESIS and stored[1]["prev_hash"] == stored[0]["hash"]
    assert stored[1]["request_raw"] == entry(1).request_raw  # raw bytes round trip untouched
    assert stored[0]["request_raw"] is None and stored[0]["request_hash"] == sha256_hex(b"body not kept 0")
    assert stored[0]["at"] == T0  # microseconds kept by both backends, or the hash would not match
    covered = orjson.loads(canonical_bytes(stored[1]))
    assert list(covered) == list(HASHED_FIELDS) == sorted(set(RECORD_FIELDS) - {"hash"})
    assert covered["request_raw"] == stored[1]["request_hash"] and covered["at"] == "2026-11-28T03:55:01.123457Z"


@pytest.mark.parametrize("statement", [
    "UPDATE exchange_log SET status_code = 500 WHERE seq = 5",
    "DELETE FROM exchange_log WHERE seq = 5",
    "UPDATE audit_checkpoints SET size = 1",
    "DELETE FROM audit_checkpoints",
])
async def test_triggers_refuse_update_and_delete(log: Log, statement: str) -> None:
    with pytest.raises(DBAPIError, match="append-only"):
        await log.run(lambda conn: conn.exec_driver_sql(statement))
    assert (await log.verify()).ok


async def test_postgres_refuses_truncate_and_revokes_from_public(postgres_url: str) -> None:
    made = await _log(postgres_url)
    try:
        with pytest.raises(DBAPIError, match="append-only"):
            await made.run(lambda conn: conn.exec_driver_sql("TRUNCATE exchange_log"))
        grants = await made.run(lambda conn: conn.exec_driver_sql(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE table_name = 'exchange_log' AND grantee = 'PUBLIC'").scalars().all())
        assert not {"UPDATE", "DELETE", "TRUNCATE"} & set(grants)
        # ALTER TABLE ... DISABLE TRIGGER (a table owner's way round) makes an edit possible; verify names it.
        await made.run(lambda conn: (conn.exec_driver_sql("ALTER TABLE exchange_log DISABLE TRIGGER exchange_log_append_only"),
                                     edit_field(conn)))
        report = await made.verify()
        assert report.problem is not None and (report.problem.kind, report.problem.seq) == ("edited", 5)
    finally:
        await made.engines.dispose()


@pytest.mark.parametrize("name", list(TAMPERING))
async def test_tampering_is_named_with_its_seq(log: Log, name: str) -> None:
    work, kind, seq = TAMPERING[name]
    await log.as_attacker(work)
    report = await log.verify()
    assert report.problem is not None, f"{name} went unnoticed"
    assert (report.problem.kind, report.problem.seq) == (kind, seq), report.problem
    assert report.records == (N if kind == "bad-checkpoint-signature" else seq - 1)


async def test_a_checkpoint_by_an_unknown_key_is_refused_and_keyless_verification_still_compares_heads(log: Log) -> None:
    stranger = ed25519.Ed25519PrivateKey.generate()
    await log.run(lambda conn: append(conn, [entry(50)]))
    await log.run(lambda conn: write_checkpoint(conn, sign=signer_for_key("k-stranger", stranger), now=T0))
    report = await log.verify()
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("bad-checkpoint-signature", N + 1)
    assert "k-stranger" in report.problem.detail
    keyless = await verify_store(log.engines, public_key=None)
    assert keyless.ok and keyless.checkpoints == 2 and not keyless.signatures_checked


async def _append_in_tasks(url: str, writer: int, transactions: int) -> list[int]:
    engines = create_engines(url)
    try:
        async def one(t: int) -> list[int]:
            async with engines.write.begin() as conn:
                return await conn.run_sync(append, [entry(1000 * writer + 10 * t + k) for k in range(3)])

        batches = await asyncio.gather(*(one(t) for t in range(transactions)))
        return [seq for batch in batches for seq in batch]
    finally:
        await engines.dispose()


def append_in_process(url: str, writer: int, transactions: int) -> list[int]:
    return asyncio.run(_append_in_tasks(url, writer, transactions))


async def test_two_processes_appending_at_once_keep_one_unbroken_chain(database_url: str) -> None:
    engines = create_engines(database_url)
    await migrate(engines)
    try:
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            loop = asyncio.get_running_loop()
            runs = [loop.run_in_executor(pool, append_in_process, database_url, w, 30) for w in (1, 2)]
            # And a third writer in this process, on its own connections.
            mine = await _append_in_tasks(database_url, 3, 10)
            theirs = await asyncio.gather(*runs)
        seqs = mine + theirs[0] + theirs[1]
        assert sorted(seqs) == list(range(1, 3 * 70 + 1))  # no seq given twice, none skipped
        report = await verify_store(engines, public_key=None)
        assert report.ok, report.problem
        assert report.records == 210
    finally:
        await engines.dispose()


async def test_group_commit_batches_and_the_checkpoint_writer(database_url: str) -> None:
    engines = create_engines(database_url)
    await migrate(engines)
    store = Store(engines)
    store.committer.start()
    key = ed25519.Ed25519PrivateKey.generate()
    writer = CheckpointWriter(store.committer, sign=signer_for_key("k1", key), interval_s=3600, every_records=20)
    try:
        seqs = await asyncio.gather(*(store.committer.submit(append, entry(i)) for i in range(40)))
        assert sorted(seqs) == list(range(1, 41))
        writer.start()
        writer.notify(40)  # over every_records: written now, not in an hour
        for _ in range(100):
            async with engines.read.connect() as conn:
                sizes = (await conn.execute(select(audit_checkpoints.c.size))).scalars().all()
            if sizes:
                break
            await asyncio.sleep(0.05)
        assert sizes == [40]
        assert await writer.checkpoint() is None  # nothing new: no second checkpoint of the same head
        await asyncio.gather(*(store.committer.submit(append, entry(i)) for i in range(40, 45)))
        await writer.stop()  # the tail gets a last checkpoint
        report = await verify_store(engines, public_key={"k1": key.public_key()}.get)
        assert report.ok and (report.records, report.checkpoints) == (45, 2), report
    finally:
        await store.committer.stop()
        await engines.dispose()


async def test_keystore_keys_sign_and_rotated_keys_still_verify(tmp_path: Path) -> None:
    made = await _log(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", checkpoint=False)
    keys = KeyStore(tmp_path / "keys", passphrase="pass phrase")
    keys.generate()
    sign = signer_from_keystore(keys)
    try:
        first = await made.run(lambda conn: write_checkpoint(conn, sign=sign, now=T0))
        for algorithm in ("ecdsa-p256", "rsa"):
            keys.rotate(algorithm=algorithm)
            await made.run(lambda conn: append(conn, [entry(60)]))
            await made.run(lambda conn: write_checkpoint(conn, sign=sign, now=T0))
        algs = await made.run(lambda conn: conn.execute(
            select(audit_checkpoints.c.alg).order_by(audit_checkpoints.c.id)).scalars().all())
        assert algs == ["ed25519", "ecdsa-p256-sha256", "rsa-pss-sha256"]

        again = KeyStore(tmp_path / "keys", passphrase="pass phrase")  # an auditor's process
        report = await verify_store(made.engines, public_key=keystore_resolver(again))
        assert report.ok and report.checkpoints == 3, report.problem
        report = await verify_store(made.engines, public_key=jwks_resolver(again.jwks()))  # GET /v1/keys
        assert report.ok and report.checkpoints == 3, report.problem

        again.revoke(first["kid"], reason="compromised")
        report = await verify_store(made.engines, public_key=keystore_resolver(again))
        assert report.problem is not None
        assert (report.problem.kind, report.problem.seq) == ("bad-checkpoint-signature", N)
    finally:
        await made.engines.dispose()


# ---- export files ------------------------------------------------------------------------------------


async def test_the_export_verifies_offline(log: Log, tmp_path: Path) -> None:
    path = tmp_path / "chain.jsonl"
    with path.open("wb") as out:
        assert await export_chain(engines=log.engines, out=out) == N
    lines = path.read_bytes().splitlines()
    assert len(lines) == N + 1 and lines[-1].startswith(b'{"record":"checkpoint"')
    report = verify_export(path, public_key=log.resolver())
    assert report.ok and (report.records, report.checkpoints) == (N, 1)
    assert report.head_hash == (await log.verify()).head_hash


def _edit_line(lines: list[bytes]) -> list[bytes]:
    lines[4] = lines[4].replace(b'"status_code":200', b'"status_code":201')
    return lines


FILE_TAMPERING = {
    "edit": (_edit_line, "edited", 5),
    "swap": (lambda ls: ls[:4] + [ls[5], ls[4]] + ls[6:], "reordered", 5),
    "drop": (lambda ls: ls[:4] + ls[5:], "deleted", 5),
    "duplicate": (lambda ls: ls[:5] + [ls[4]] + ls[5:], "inserted", 5),
    "truncate": (lambda ls: ls[:N - 1] + ls[N:], "truncated", N),
}


@pytest.mark.parametrize("name", list(FILE_TAMPERING))
async def test_a_tampered_export_is_named(tmp_path: Path, name: str) -> None:
    made = await _log(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
    path = tmp_path / "chain.jsonl"
    try:
        with path.open("wb") as out:
            await export_chain(engines=made.engines, out=out)
    finally:
        await made.engines.dispose()
    change, kind, seq = FILE_TAMPERING[name]
    before = path.read_bytes().splitlines()
    after = change(list(before))
    assert after != before
    path.write_bytes(b"\n".join(after) + b"\n")
    report = verify_export(path, public_key=made.resolver())
    assert report.problem is not None and (report.problem.kind, report.problem.seq) == (kind, seq), report.problem


# ---- the pure verifier ---------------------------------------------------------------------------------


def test_verification_streams_and_reports_progress() -> None:
    from gateway.audit.verify import verify_records

    def generated(count: int):  # noqa: ANN202 - never held in memory whole
        prev = GENESIS
        for i in range(count):
            row = entry(i).row(seq=i + 1, prev_hash=prev)
            prev = row["hash"]
            yield row

    seen: list[int] = []
    report = verify_records(generated(25_000), [], public_key=None, progress=seen.append)
    assert report.ok and report.records == 25_000
    assert seen == [10_000, 20_000, 25_000]
    empty = verify_records([], [], public_key=None)
    assert empty.ok and (empty.records, empty.head_seq, empty.head_hash) == (0, 0, GENESIS)
