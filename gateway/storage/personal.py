"""Personal data at rest in stored messages: the person is sealed (AES-GCM) with a keyed IIN hash beside it."""

from __future__ import annotations

import orjson

from security.pii import PiiCipher

MARK = b'"person"'


class PersonSeal:
    """The store seals `body.person` on the way in and opens it on the way out; callers see canonical JSON."""

    def __init__(self, cipher: PiiCipher) -> None:
        self.cipher = cipher

    def seal(self, content: bytes) -> bytes:
        if MARK not in content:  # only case registrations carry a person: the rest pass untouched
            return content
        doc = orjson.loads(content)
        person = doc.get("body", {}).get("person")
        if not isinstance(person, dict) or "sealed" in person:
            return content
        doc["body"]["person"] = {
            "sealed": self.cipher.encrypt(orjson.dumps(person, option=orjson.OPT_SORT_KEYS).decode(), context="person"),
            "iin_hash": self.cipher.hash(str(person.get("iin", ""))),
        }
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    def reveal(self, content: bytes) -> bytes:
        if b'"sealed"' not in content:
            return content
        doc = orjson.loads(content)
        person = doc.get("body", {}).get("person")
        if not isinstance(person, dict) or "sealed" not in person:
            return content
        doc["body"]["person"] = orjson.loads(self.cipher.decrypt(person["sealed"], context="person"))
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
