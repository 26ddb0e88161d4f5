"""The Probation IS: it speaks canonical JSON; the gateway pushes replies and escalations to it."""
