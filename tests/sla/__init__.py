"""Tests of the domain SLA engine, its policy and calendar, and `gateway sla report`."""
