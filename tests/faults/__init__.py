"""Fault suite: the store going away (PostgreSQL stopped, restarted; SQLite disk full), crashes, counterpart faults."""
