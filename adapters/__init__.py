"""Counterpart adapters: a pure codec and a simulator per counterpart."""
