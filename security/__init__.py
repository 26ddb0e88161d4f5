"""Security: signatures (RFC 9421, XML), the gateway's keys, pinned peer keys, caller identities, PII sealing."""
