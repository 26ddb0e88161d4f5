"""Verification of the exchange log's chain and checkpoints, online from the store or offline from an export."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from gateway.audit.chain import GENESIS, KeyResolver, canonical_with_digests, checkpoint_problem
from gateway.audit.export import read_export
from gateway.storage.batch import Transaction
from gateway.audit.stream import PAGE, PROGRESS_EVERY, run_on_log, stream_connection
from gateway.storage.db import Engines

ProblemKind = Literal["edited", "deleted", "inserted", "reordered", "truncated", "bad-checkpoint-signature"]


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    seq: int | None  # the record named; for a checkpoint problem, the size it claims
    detail: str
    checkpoint_id: int | None = None

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "log"
        cp = f" (checkpoint {self.checkpoint_id})" if self.checkpoint_id is not None else ""
        return f"{where}: {self.kind}{cp}: {self.detail}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int  # records found intact, all of them or those before the record named by the problem
    checkpoints: int  # checkpoints whose signature (when checked) and head matched
    head_seq: int
    head_hash: str
    signatures_checked: bool
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _digests(record: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """Digests of the raw fields (None when absent) and the name of a raw field not matching its hash."""
    request, response = record["request_raw"], record["response_raw"]
    req = None if request is None else hashlib.sha256(request).hexdigest()
    resp = None if response is None else hashlib.sha256(response).hexdigest()
    if req is not None and req != record["request_hash"]:
        return req, resp, "request_raw"
    if resp is not None and resp != record["response_hash"]:
        return req, resp, "response_raw"
    return req, resp, None


def _hash_as(record: Mapping[str, Any], digests: tuple[str | None, str | None], seq: int) -> str | None:
    """The record's hash as if its seq were `seq`; None when its fields cannot be hashed at all."""
    try:
        moved = dict(record, seq=seq) if seq != record["seq"] else record
        return hashlib.sha256(bytes.fromhex(record["prev_hash"]) + canonical_with_digests(moved, *digests)).hexdigest()
    except (ValueError, TypeError, KeyError, orjson.JSONEncodeError):
        return None


class _Verifier:
    def __init__(self, public_key: KeyResolver | None) -> None:
        self.public_key = public_key
        self.last_seq = 0
        self.last_hash = GENESIS
        self.before_last_hash: str | None = None  # hash of record last_seq - 1
        self.records = 0
        self.checkpoints = 0
        self.last_checkpoint: tuple[int, int] = (-1, -1)  # (size, id) of the previous checkpoint seen

    def record(self, cur: Mapping[str, Any], nxt: Mapping[str, Any] | None) -> Problem | None:
        seq = cur["seq"]
        if type(seq) is not int:
            return Problem("edited", None, f"a record after seq {self.last_seq} has seq {seq!r}, not a number")
        expected = self.last_seq + 1
        if seq < expected:
            if seq == self.last_seq:
                return Problem("inserted", seq, f"seq {seq} appears twice")
            return Problem("reordered", seq, f"seq {seq} comes after seq {self.last_seq}")
        if seq > expected:
            if nxt is not None and type(nxt["seq"]) is int and nxt["seq"] < seq:
                return Problem("reordered", nxt["seq"], f"seq {nxt['seq']} comes after seq {seq}")
            missing = f"record {expected} is" if seq == expected + 1 else f"records {expected}..{seq - 1} are"
            return Problem("deleted", expected, f"{missing} missing")

        req, resp, bad_raw = _digests(cur)
        if bad_raw is not None:
            return Problem("edited", seq, f"{bad_raw} does not match its hash")
        digests = (req, resp)
        if _hash_as(cur, digests, seq) != cur["hash"]:
            return self._unhashable(cur, nxt, digests)
        if cur["prev_hash"] != self.last_hash:
            return self._unlinked(cur, nxt)
        self.before_last_hash = self.last_hash
        self.last_seq, self.last_hash = seq, cur["hash"]
        self.records += 1
        return None

    def _unhashable(self, cur: Mapping[str, Any], nxt: Mapping[str, Any] | None,
                    digests: tuple[str | None, str | None]) -> Problem:
        seq = cur["seq"]
        if _hash_as(cur, digests, seq + 1) == cur["hash"]:
            # Hashed as the next record: moved down one place, either swapped with its predecessor or
            # shifted down over a deleted record.
            if nxt is not None and nxt["hash"] == cur["prev_hash"]:
                return Problem("reordered", seq, f"records {seq} and {seq + 1} were swapped")
            return Problem("deleted", seq, f"record {seq} is missing; the records after it were renumbered")
        if seq > 1 and _hash_as(cur, digests, seq - 1) == cur["hash"]:
            if self.last_seq >= 1 and cur["prev_hash"] == self.before_last_hash:
                return Problem("inserted", self.last_seq,
                               f"record {self.last_seq} was inserted; the records after it were renumbered")
            return Problem("reordered", seq, f"record {seq} was hashed as record {seq - 1}")
        return Problem("edited", seq, "its content does not match its hash")

    def _unlinked(self, cur: Mapping[str, Any], nxt: Mapping[str, Any] | None) -> Problem:
        seq = cur["seq"]
        if self.last_seq >= 1 and cur["prev_hash"] == self.before_last_hash:
            return Problem("inserted", self.last_seq,
                           f"record {self.last_seq} is not in the chain: record {seq} links to the one before it")
        if (self.last_seq >= 1 and nxt is not None and nxt["seq"] == seq + 1 and nxt["prev_hash"] == cur["hash"]
                and _hash_as(nxt, _digests(nxt)[:2], seq + 1) == nxt["hash"]):
            # The chain goes on from this record: it is genuine, its predecessor was rewritten and re-hashed.
            return Problem("edited", self.last_seq,
                           f"record {self.last_seq} was changed and re-hashed; record {seq} links to its original")
        return Problem("inserted", seq, "its hash is consistent but it does not link to the record before it")

    def checked_checkpoint(self, cp: Mapping[str, Any]) -> Problem | None:
        try:
            return self.checkpoint(cp)
        except (KeyError, TypeError, AttributeError) as exc:
            return Problem("bad-checkpoint-signature", None, f"checkpoint malformed: {exc!r}", cp.get("id"))

    def checkpoint(self, cp: Mapping[str, Any]) -> Problem | None:
        """Check a checkpoint once every record up to its size has been seen (or the records ran out)."""
        cp_id, size = cp["id"], cp["size"]
        if type(size) is not int or size < 0:
            return Problem("bad-checkpoint-signature", None, f"size {size!r} is not a record count", cp_id)
        if (size, cp_id) < self.last_checkpoint:
            return Problem("reordered", size, "checkpoints are not in order of size", cp_id)
        self.last_checkpoint = (size, cp_id)
        if self.public_key is not None:
            key = self.public_key(str(cp["kid"]))
            if key is None:
                return Problem("bad-checkpoint-signature", size, f"no trusted public key for kid {cp['kid']!r}", cp_id)
            problem = checkpoint_problem(key, cp)
            if problem is not None:
                return Problem("bad-checkpoint-signature", size, problem, cp_id)
        if size > self.last_seq:
            return Problem("truncated", self.last_seq + 1,
                           f"checkpoint covers {size} records, the log ends at seq {self.last_seq}", cp_id)
        head = self.last_hash if size == self.last_seq else GENESIS if size == 0 else None
        if head is None:
            # Only reachable for checkpoints given out of step with the records.
            return Problem("reordered", size, "checkpoint seen after the records it covers", cp_id)
        if cp["head_hash"] != head:
            return Problem("truncated", size,
                           f"checkpoint says record {size} has hash {cp['head_hash']}, the log has {head}: "
                           "the log was cut back and rewritten up to here", cp_id)
        self.checkpoints += 1
        return None


def verify_records(records: Iterable[Mapping[str, Any]], checkpoints: Iterable[Mapping[str, Any]], *,
                   public_key: KeyResolver | None,
                   progress: Callable[[int], None] | None = None,
                   progress_every: int = PROGRESS_EVERY) -> VerifyReport:
    """Recompute the chain over `records` (in the order given) and check `checkpoints` (in order of
    size); stop at the first problem. Streaming: memory does not grow with the log.

    Records are dicts with every column (`at` a datetime or its RFC 3339 form, raw fields as bytes);
    checkpoints have id, size, head_hash, created_at, kid, alg, signature (base64). `public_key`
    resolves a kid to a trusted key; None skips signature checks (heads are still compared).
    `progress` gets the number of records verified so far, every `progress_every` records.

    The first problem is named by these rules, checked in this order for each record, where
    "expected" is the seq after the last intact record:

    - seq lower than expected: `inserted` when it repeats the previous seq, else `reordered`.
    - seq higher than expected: `reordered` (named by the lower seq) when the next record goes back
      down, else `deleted` naming the first missing seq.
    - a raw body whose SHA-256 differs from its recorded hash: `edited`.
    - the hash does not match the content: when it matches the content with seq + 1, the record was
      moved down one place: `reordered` if the next record is its original predecessor (a swap), else
      `deleted` (the missing record's successors were renumbered); when it matches with seq - 1 and
      links to the record before the previous one, the previous record was `inserted` (its successors
      renumbered); otherwise `edited`.
    - the hash matches but prev_hash does not link to the previous record: `inserted` naming the
      previous record when this one links to the record before it; `edited` naming the previous record
      when the next record links to this one (this one is genuine, its predecessor was re-hashed);
      otherwise `inserted` naming this record.
    - a checkpoint: `bad-checkpoint-signature` when its key is unknown (or revoked) or the signature
      does not verify; `truncated` when it covers more records than there are, or when its head hash
      differs from the hash of the record at its size; `reordered` when checkpoints are not given in
      order of size.

    What the data cannot show: records rewritten together with every hash after them are caught only
    by a checkpoint covering them (named `truncated`); records appended after the last checkpoint
    with a correct chain, or the tail cut back past the last checkpoint, are not detectable; a record
    moved by more than one place reads as `deleted` where it is missing."""
    v = _Verifier(public_key)
    cps = iter(checkpoints)
    cp = next(cps, None)
    it = iter(records)
    cur = next(it, None)
    next_progress = progress_every
    while True:
        # Checkpoints are checked as soon as the records they cover are in (size 0: before any).
        while cp is not None and (cur is None or not _after(cp, v.last_seq)):
            if problem := v.checked_checkpoint(cp):
                return _report(v, problem)
            cp = next(cps, None)
        if cur is None:
            break
        nxt = next(it, None)
        try:
            problem = v.record(cur, nxt)
        except (KeyError, TypeError, AttributeError) as exc:
            problem = Problem("edited", v.last_seq + 1, f"record malformed: {exc!r}")
        if problem is not None:
            return _report(v, problem)
        if progress is not None and v.records >= next_progress:
            progress(v.records)
            next_progress += progress_every
        cur = nxt
    if progress is not None:
        progress(v.records)
    return _report(v, None)


def _after(cp: Mapping[str, Any], last_seq: int) -> bool:
    """Whether a checkpoint covers records not seen yet (a malformed size is checked at once)."""
    size = cp.get("size")
    return type(size) is int and size > last_seq


def _report(v: _Verifier, problem: Problem | None) -> VerifyReport:
    records = v.records
    if problem is not None and problem.seq is not None and problem.kind != "bad-checkpoint-signature":
        # Some problems are named at a record already passed (a re-hashed predecessor, an insertion).
        records = min(records, problem.seq - 1)
    return VerifyReport(records=records, checkpoints=v.checkpoints, head_seq=v.last_seq, head_hash=v.last_hash,
                        signatures_checked=v.public_key is not None, problem=problem)


# ---- where the records come from -------------------------------------------------------------------


def verify_connection(conn: Transaction, *, public_key: KeyResolver | None,
                      progress: Callable[[int], None] | None = None, page: int = PAGE) -> VerifyReport:
    """Verify the log through a sync connection (SQLite's stdlib driver, or run_sync on PostgreSQL)."""
    records, cps = stream_connection(conn, page=page)
    return verify_records(records, cps, public_key=public_key, progress=progress)


async def verify_store(engines: Engines, *, public_key: KeyResolver | None,
                       progress: Callable[[int], None] | None = None, page: int = PAGE) -> VerifyReport:
    """Verify the store's log online, streaming in seq order; safe while the gateway keeps appending."""
    return await run_on_log(engines=engines, page=page,
                            work=lambda records, cps: verify_records(records, cps, public_key=public_key,
                                                                     progress=progress))


def verify_export(path: Path, *, public_key: KeyResolver | None,
                  progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Verify an export file offline (two streaming passes: records and checkpoints).

    Raises gateway.audit.export.ExportFormatError for a line that is not an export line at all."""
    return verify_records(read_export(path, kind="log"), read_export(path, kind="checkpoint"),
                          public_key=public_key, progress=progress)
