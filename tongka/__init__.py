"""Tongka's application layer: the use cases (ingest files, clear, settle, report, close a
month, withdraw a batch, what-if) as plain functions over the domain rooms, and the command
line that calls them.

The domain rooms (``tariffs`` ← ``clearing`` ← ``settlement``, ``readers`` at the edge) never
import this package; the contracts are checked by ``lint-imports`` (``.importlinter``).
"""
