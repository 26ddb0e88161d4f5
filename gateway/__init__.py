"""Probation exchange gateway: signed, logged, retried exchange between the Probation IS and agencies."""
