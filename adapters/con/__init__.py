"""ЦОН (public-service centres) via ШЭП: SOAP 1.1 SyncChannel SendMessage, document and registration services."""
