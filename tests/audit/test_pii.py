"""Personal-data crypto: encryption round trips, key rotation, refusals, the keyed search hash."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from security.pii import PiiCipher, PiiError, generate_key, parse_keys

K1, K2, K3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
HASH_KEY = b"\x10" * 32
iins = st.text(alphabet="0123456789", min_size=12, max_size=12)
texts = st.text(max_size=300)  # names, addresses: any Unicode hypothesis makes (no lone surrogates)


def cipher(keys: dict[str, bytes] | None = None, *, hash_key: bytes = HASH_KEY) -> PiiCipher:
    return PiiCipher(keys or {"k1": K1}, hash_key=hash_key)


@given(value=texts, context=st.sampled_from(["", "person.iin", "person.name"]))
def test_encrypt_decrypt_round_trips_and_hides_the_value(value: str, context: str) -> None:
    c = cipher()
    token = c.encrypt(value, context=context)
    assert c.decrypt(token, context=context) == value
    assert token.startswith("v1.k1.")
    body = token.split(".")[2]
    if len(value.encode()) >= 6:
        assert value.encode() not in base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    assert c.encrypt(value, context=context) != token  # a fresh nonce every time


@given(value=iins)
def test_rotation_reencrypts_under_the_new_active_key(value: str) -> None:
    old = cipher({"k1": K1})
    token = old.encrypt(value)
    new = cipher({"k2": K2, "k1": K1})  # k2 first: active; k1 kept to read what it wrote
    assert new.active_kid == "k2" and new.needs_rotation(token)
    assert new.decrypt(token) == value
    rotated = new.rotate(token)
    assert new.key_id(rotated) == "k2" and not new.needs_rotation(rotated)
    assert new.decrypt(rotated) == value
    assert cipher({"k2": K2}).decrypt(rotated) == value  # k1 can be dropped once everything is rotated
    with pytest.raises(PiiError, match="k2"):
        old.decrypt(rotated)


def test_a_wrong_key_or_unknown_kid_is_refused() -> None:
    token = cipher({"k1": K1}).encrypt("900101300017")
    with pytest.raises(PiiError, match="does not authenticate"):
        cipher({"k1": K3}).decrypt(token)  # same kid, other key
    with pytest.raises(PiiError, match="does not have"):
        cipher({"k9": K1}).decrypt(token)


def test_a_ciphertext_moved_to_another_context_is_refused() -> None:
    c = cipher()
    token = c.encrypt("900101300017", context="person.iin")
    with pytest.raises(PiiError, match="does not authenticate"):
        c.decrypt(token, context="person.name")


@given(value=iins, position=st.integers(min_value=0, max_value=10_000), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_refused(value: str, position: int, bit: int) -> None:
    c = cipher()
    version, kid, body = c.encrypt(value).split(".")
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[position % len(raw)] ^= 1 << bit
    tampered = ".".join([version, kid, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()])
    with pytest.raises(PiiError, match="does not authenticate"):
        c.decrypt(tampered)


@pytest.mark.parametrize("token", ["", "v1.k1", "v2.k1.AAAA", "v1.k1.!!!!", "v1.k1.AAAA", "v1.k1.AAAA.BBBB"])
def test_malformed_ciphertexts_are_refused_clearly(token: str) -> None:
    with pytest.raises(PiiError):
        cipher().decrypt(token)


@given(a=iins, b=iins)
def test_keyed_hash_is_stable_per_key_and_differs_across_keys(a: str, b: str) -> None:
    one, same, other = cipher(), cipher({"k2": K2}, hash_key=HASH_KEY), cipher(hash_key=b"\x11" * 32)
    assert one.hash(a) == same.hash(a)  # the encryption keys do not matter: searches survive rotation
    assert len(one.hash(a)) == 64 and int(one.hash(a), 16) >= 0
    assert one.hash(a) != other.hash(a)
    assert (one.hash(a) == one.hash(b)) == (a == b)


def test_keys_from_settings_values() -> None:
    k1, k2 = generate_key(), generate_key()
    c = PiiCipher.from_config(f"k1:{k1}, k2:{k2}", hash_key=generate_key())
    assert c.active_kid == "k1" and c.kids == ("k1", "k2")
    assert list(parse_keys(f"b:{k2},a:{k1}")) == ["b", "a"]
    assert PiiCipher.mask("900101300017") == "9001******17"


@pytest.mark.parametrize(("keys", "hash_key", "message"), [
    ("k1", generate_key(), "kid:base64"),
    ("k1:not base64!", generate_key(), "not base64"),
    (f"k1:{base64.b64encode(b'short').decode()}", generate_key(), "32 bytes"),
    (f"k1:{generate_key()},k1:{generate_key()}", generate_key(), "twice"),
    (f"bad kid:{generate_key()}", generate_key(), "key id"),
    ("", generate_key(), "no personal-data"),
    (f"k1:{generate_key()}", base64.b64encode(b"short").decode(), "hash key"),
])
def test_bad_key_material_is_refused(keys: str, hash_key: str, message: str) -> None:
    with pytest.raises(PiiError, match=message):
        PiiCipher.from_config(keys, hash_key=hash_key)
