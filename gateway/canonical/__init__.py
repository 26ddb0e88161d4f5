"""Canonical model: envelope, typed bodies, IIN and domain errors; imports no framework."""
