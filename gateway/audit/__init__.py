"""Audit: exports of the exchange for auditors (the tamper-evident chain comes with its own issue)."""
