"""Clearing: ingest canonical taps, match them into legs and price them (SPEC §3-§6)."""
