"""Security: hardened parsing now; signing, verification, keys and identities as they come."""
