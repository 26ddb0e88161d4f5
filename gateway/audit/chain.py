"""The exchange log's hash chain: canonical record bytes, batched appends, signed checkpoints."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from gateway.loops import Loop
from gateway.pipeline.ports import Tx, WriteQueue
from gateway.storage import exchange_log as sql

if TYPE_CHECKING:
    from security.keys import KeyStore, PrivateKey, PublicKey

log = logging.getLogger("gateway.audit")

GENESIS = "0" * 64

CHECKPOINT_CONTEXT = "probation-gateway/audit-checkpoint/v1"
KINDS = ("received", "attempt", "callback", "refusal", "read", "admin", "security", "escalation")

# Every column the hash covers, in sorted order (the serialisation sorts keys anyway); `hash` is the output.
HASHED_FIELDS = (
    "at", "case_id", "client", "delivery_id", "detail", "iin_hash", "kind", "message_id", "peer",
    "prev_hash", "request_hash", "request_raw", "response_hash", "response_raw", "result", "seq",
    "signer", "status_code",
)
RECORD_FIELDS = (
    "seq", "at", "kind", "message_id", "delivery_id", "case_id", "peer", "client", "signer", "iin_hash",
    "status_code", "result", "request_hash", "response_hash", "request_raw", "response_raw", "detail",
    "prev_hash", "hash",
)
RAW_FIELDS = (("request_raw", "request_hash"), ("response_raw", "response_hash"))
CHECKPOINT_FIELDS = ("id", "size", "head_hash", "created_at", "kid", "alg", "signature")

Sign = Callable[[bytes], "tuple[str, str, bytes]"]  # statement -> (kid, alg, signature)
KeyResolver = Callable[[str], "PublicKey | None"]


class ChainError(ValueError):
    """An entry that cannot be logged as given (naive time, raw bytes not matching their hash...)."""


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with microseconds, always the same width: `2026-11-28T08:55:00.000000Z`."""
    if value.tzinfo is None:
        raise ChainError("naive datetime in the exchange log; give an aware (UTC) time")
    if value.tzinfo is not timezone.utc:  # the store hands back UTC already: skip the conversion (hot path)
        value = value.astimezone(timezone.utc)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_with_digests(record: Mapping[str, Any], request_raw: str | None, response_raw: str | None) -> bytes:
    """`canonical_bytes` with the raw fields' digests (or None) already computed."""
    at = record["at"]
    return orjson.dumps(
        {
            "at": at if isinstance(at, str) else format_time(at),
            "case_id": record["case_id"],
            "client": record["client"],
            "delivery_id": record["delivery_id"],
            "detail": record["detail"],
            "iin_hash": record["iin_hash"],
            "kind": record["kind"],
            "message_id": record["message_id"],
            "peer": record["peer"],
            "prev_hash": record["prev_hash"],
            "request_hash": record["request_hash"],
            "request_raw": request_raw,
            "response_hash": record["response_hash"],
            "response_raw": response_raw,
            "result": record["result"],
            "seq": record["seq"],
            "signer": record["signer"],
            "status_code": record["status_code"],
        },
        option=orjson.OPT_SORT_KEYS,
    )


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: every column but `hash`, raw bytes replaced by their SHA-256.

    `at` is a datetime (from the store) or its RFC 3339 form (from an export); either gives the same
    bytes. Replacing raw bytes by their digest lets a chain be checked without them (e.g. after the
    bytes are purged) while still committing to whether they were kept."""
    raws = [None if record[name] is None else sha256_hex(record[name]) for name, _ in RAW_FIELDS]
    return canonical_with_digests(record, raws[0], raws[1])


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    """hash = SHA-256(prev_hash as 32 raw bytes || canonical bytes), hex."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One exchange-log record as the pipeline hands it over; `append` assigns seq and hashes.

    A raw body without its hash gets the hash computed; with one, they must agree. `request_hash`
    without `request_raw` is the metadata-only case: the digest is kept, the bytes are not."""

    at: datetime
    kind: str
    message_id: str | None = None
    delivery_id: int | None = None
    case_id: str | None = None
    peer: str | None = None
    client: str | None = None
    signer: str | None = None
    iin_hash: str | None = None
    status_code: int | None = None
    result: str | None = None
    request_hash: str | None = None
    response_hash: str | None = None
    request_raw: bytes | None = field(default=None, repr=False)
    response_raw: bytes | None = field(default=None, repr=False)
    detail: str | Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ChainError("LogEntry.at must be an aware datetime")
        if not self.kind or len(self.kind) > 20:
            raise ChainError(f"LogEntry.kind must be 1-20 characters, not {self.kind!r}")
        if self.result is not None and len(self.result) > 20:
            raise ChainError(f"LogEntry.result must be at most 20 characters, not {self.result!r}")
        for raw_name, hash_name in RAW_FIELDS:
            raw, digest = getattr(self, raw_name), getattr(self, hash_name)
            if raw is not None:
                actual = sha256_hex(raw)
                if digest is None:
                    object.__setattr__(self, hash_name, actual)
                elif digest != actual:
                    raise ChainError(f"LogEntry.{hash_name} is not the SHA-256 of {raw_name}")
        if self.detail is not None and not isinstance(self.detail, str):
            object.__setattr__(self, "detail", orjson.dumps(self.detail, option=orjson.OPT_SORT_KEYS).decode())

    def row(self, *, seq: int, prev_hash: str) -> dict[str, Any]:
        """The row to insert, hash included."""
        values = {
            "seq": seq, "at": self.at, "kind": self.kind, "message_id": self.message_id,
            "delivery_id": self.delivery_id, "case_id": self.case_id, "peer": self.peer, "client": self.client,
            "signer": self.signer, "iin_hash": self.iin_hash, "status_code": self.status_code,
            "result": self.result, "request_hash": self.request_hash, "response_hash": self.response_hash,
            "request_raw": self.request_raw, "response_raw": self.response_raw, "detail": self.detail,
            "prev_hash": prev_hash,
        }
        # __post_init__ made request_hash the digest of request_raw whenever the raw bytes are kept.
        values["hash"] = chain_hash(prev_hash, canonical_with_digests(
            values,
            self.request_hash if self.request_raw is not None else None,
            self.response_hash if self.response_raw is not None else None,
        ))
        return values


def read_head(conn: Tx) -> tuple[int, str]:
    """(seq, hash) of the last record, (0, GENESIS) for an empty log."""
    return sql.head(conn) or (0, GENESIS)


def append(conn: Tx, entries: list[LogEntry]) -> list[int]:
    """Chain `entries` after the current head and insert them in one statement; returns their seqs.

    Runs inside the caller's transaction (the group commit), holding the appenders' turn until it ends, so
    appenders of every process take turns and seqs stay contiguous."""
    if not entries:
        return []
    seq, prev = sql.locked_head(conn) or (0, GENESIS)
    rows = []
    for entry in entries:
        seq += 1
        row = entry.row(seq=seq, prev_hash=prev)
        prev = row["hash"]
        rows.append(row)
    sql.insert_records(conn, rows)
    return [row["seq"] for row in rows]


# ---- checkpoints ---------------------------------------------------------------------------------


def checkpoint_statement(*, size: int, head_hash: str, created_at: datetime | str) -> bytes:
    """What a checkpoint signs. The context string keeps the signature from meaning anything else
    to a verifier of the same key (the JSON channel key also signs HTTP messages)."""
    return orjson.dumps(
        {
            "context": CHECKPOINT_CONTEXT,
            "created_at": created_at if isinstance(created_at, str) else format_time(created_at),
            "head_hash": head_hash,
            "size": size,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    """The one signature algorithm a key type is used with; the key decides, never the stored `alg`."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if isinstance(key.curve, ec.SECP256R1):
            return "ecdsa-p256-sha256"
        raise ChainError(f"unsupported curve {key.curve.name}")
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size < 2048:
            raise ChainError("RSA keys under 2048 bits are refused")
        return "rsa-pss-sha256"
    raise ChainError(f"unsupported key type {type(key).__name__}")


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def sign_statement(key: PrivateKey, statement: bytes) -> tuple[str, bytes]:
    """(alg, signature); ECDSA as fixed-size r || s, like JWS ES256."""
    alg = algorithm_for(key)
    if alg == "ed25519":
        return alg, key.sign(statement)  # type: ignore[call-arg,union-attr]
    if alg == "ecdsa-p256-sha256":
        r, s = decode_dss_signature(key.sign(statement, ec.ECDSA(hashes.SHA256())))  # type: ignore[call-arg,arg-type,union-attr]
        return alg, r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return alg, key.sign(statement, _PSS, hashes.SHA256())  # type: ignore[call-arg,arg-type,union-attr]


def verify_statement(key: PublicKey, alg: str, signature: bytes, statement: bytes) -> bool:
    try:
        if algorithm_for(key) != alg:
            return False
        if alg == "ed25519":
            key.verify(signature, statement)  # type: ignore[call-arg,union-attr]
        elif alg == "ecdsa-p256-sha256":
            if len(signature) != 64:
                return False
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            key.verify(der, statement, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,arg-type,union-attr]
        else:
            key.verify(signature, statement, _PSS, hashes.SHA256())  # type: ignore[call-arg,arg-type,union-attr]
    except (InvalidSignature, ChainError):
        return False
    return True


def checkpoint_problem(key: PublicKey, cp: Mapping[str, Any]) -> str | None:
    """Why a checkpoint row's signature does not verify with `key`, or None when it does."""
    try:
        signature = base64.b64decode(cp["signature"], validate=True)
        statement = checkpoint_statement(size=cp["size"], head_hash=cp["head_hash"], created_at=cp["created_at"])
    except (binascii.Error, TypeError, ValueError):
        return "signature or fields malformed"
    if not verify_statement(key, str(cp["alg"]), signature, statement):
        return f"signature does not verify with key {cp['kid']!r}"
    return None


def signer_for_key(kid: str, key: PrivateKey) -> Sign:
    """A signing function over one private key (tests, tools); the gateway uses `signer_from_keystore`."""
    def sign(statement: bytes) -> tuple[str, str, bytes]:
        alg, signature = sign_statement(key, statement)
        return kid, alg, signature

    return sign


def signer_from_keystore(keys: KeyStore, *, channel: str = "json") -> Sign:
    """Signs with the channel's active key at the time of each checkpoint, so rotations are followed."""
    def sign(statement: bytes) -> tuple[str, str, bytes]:
        active = keys.active(channel=channel)  # type: ignore[arg-type]
        alg, signature = sign_statement(active.private_key, statement)
        return active.kid, alg, signature

    return sign


def keystore_resolver(keys: KeyStore) -> KeyResolver:
    """Public keys for checkpoint verification: every key of the store that is not revoked.

    A checkpoint stays valid after its key is rotated out (it was signed while the key was active),
    so retired keys verify too; a revoked key is taken as compromised and verifies nothing. Needs
    the passphrase: the store derives public keys from its encrypted private keys."""
    cache: dict[str, PublicKey | None] = {}

    def resolve(kid: str) -> PublicKey | None:
        if kid not in cache:
            info = next((i for i in keys.list() if i.kid == kid), None)
            cache[kid] = None if info is None or info.revoked else keys.public_key(kid, now=info.created)
        return cache[kid]

    return resolve


def _b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """An Ed25519 (OKP), P-256 (EC) or RSA public key from its JWK, as `GET /v1/keys` publishes them."""
    kty = jwk.get("kty")
    try:
        if kty == "OKP" and jwk.get("crv") == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(_b64url_decode(jwk["x"]))
        if kty == "EC" and jwk.get("crv") == "P-256":
            x, y = (int.from_bytes(_b64url_decode(jwk[c]), "big") for c in ("x", "y"))
            return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        if kty == "RSA":
            e, n = (int.from_bytes(_b64url_decode(jwk[c]), "big") for c in ("e", "n"))
            return rsa.RSAPublicNumbers(e, n).public_key()
    except (KeyError, ValueError) as exc:
        raise ChainError(f"JWK {jwk.get('kid')!r} is malformed: {exc}") from exc
    raise ChainError(f"JWK {jwk.get('kid')!r}: unsupported key type {kty!r}/{jwk.get('crv')!r}")


def jwks_resolver(*jwks: Mapping[str, Any]) -> KeyResolver:
    """Public keys by kid from one or more JWK Sets (`{"keys": [...]}`).

    `GET /v1/keys` lists the keys valid now; checkpoints signed by a key rotated out since then need a
    JWKS saved while that key was published."""
    known: dict[str, PublicKey] = {}
    for document in jwks:
        for jwk in document.get("keys", []):
            if "kid" not in jwk:
                raise ChainError("a JWK without a kid cannot verify checkpoints")
            known[str(jwk["kid"])] = public_key_from_jwk(jwk)
    return known.get


def write_checkpoint(conn: Tx, *, sign: Sign, now: datetime,
                     only_if_new: bool = False) -> dict[str, Any] | None:
    """Sign and store a checkpoint of the current head; returns its row.

    With `only_if_new`, nothing is written when the log is empty or the newest checkpoint already
    covers the head (several processes may run a CheckpointWriter against one PostgreSQL)."""
    size, head = sql.locked_head(conn) or (0, GENESIS)
    if only_if_new:
        last = sql.last_checkpoint_size(conn)
        if size == 0 or last == size:
            return None
    kid, alg, signature = sign(checkpoint_statement(size=size, head_hash=head, created_at=now))
    row: dict[str, Any] = {"size": size, "head_hash": head, "created_at": now, "kid": kid, "alg": alg,
                           "signature": base64.b64encode(signature).decode("ascii")}
    row["id"] = sql.insert_checkpoint(conn, row)
    return row


class CheckpointWriter:
    """Writes a signed checkpoint every `interval_s`, or sooner once `every_records` new records were
    reported through `notify`, through the group committer; a last one on `stop()`."""

    def __init__(self, committer: WriteQueue, *, sign: Sign, interval_s: float = 60.0,
                 every_records: int = 10_000,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        if interval_s <= 0 or every_records <= 0:
            raise ValueError("interval_s and every_records must be positive")
        self._committer = committer
        self._sign = self._counted(sign)
        self._interval = interval_s
        self._every = every_records
        self._clock = clock
        self._pending = 0
        # Every `interval_s`, or sooner when woken; a checkpoint that failed (key store, database) is retried.
        self.loop = Loop("audit-checkpoints", self._step, interval_s=interval_s, initial_delay_s=interval_s)
        # One handler object: the committer groups a batch's items by handler identity.
        self._handler = self._write
        # For the metrics: a head left unsigned shows as a growing age even before the first checkpoint.
        self.started_at = time.time()
        self.last_success: float | None = None  # Unix time the head was last covered by a signed checkpoint
        self.signing_failures = 0

    def _counted(self, sign: Sign) -> Sign:
        def counted(statement: bytes) -> tuple[str, str, bytes]:
            try:
                return sign(statement)
            except Exception:
                self.signing_failures += 1
                raise

        return counted

    def _write(self, conn: Tx, items: list[datetime]) -> list[dict[str, Any] | None]:
        row = write_checkpoint(conn, sign=self._sign, now=max(items), only_if_new=True)
        return [row] * len(items)

    def notify(self, appended: int = 1) -> None:
        """Tell the writer that `appended` records were committed (cheap; call after each append)."""
        self._pending += appended
        if self._pending >= self._every:
            self.loop.wake()

    async def checkpoint(self) -> dict[str, Any] | None:
        """Write one now (unless the newest already covers the head); returns its row or None."""
        self._pending = 0
        row = await self._committer.submit(self._handler, self._clock())
        self.last_success = time.time()  # written, or the newest checkpoint already covers the head
        return row

    def start(self) -> None:
        self.loop.start()

    async def stop(self, *, final: bool = True, timeout_s: float = 10.0) -> None:
        """Stop the loop; with `final`, a last checkpoint (bounded by `timeout_s`; with the store down the next
        process's first checkpoint covers these records instead)."""
        await self.loop.stop()
        if final:
            try:
                await asyncio.wait_for(self.checkpoint(), timeout=timeout_s)
            except Exception as exc:  # noqa: BLE001
                log.warning("final audit checkpoint not written (%s: %s)", type(exc).__name__, exc)

    async def _step(self) -> None:
        await self.checkpoint()


def record_from_row(row: Iterable[Any]) -> dict[str, Any]:
    """A store row (in RECORD_FIELDS order) as the dict the verifier and the export take."""
    return dict(zip(RECORD_FIELDS, row))
