"""The service's Prometheus metrics, on a registry of its own (one per application, so tests
can run several applications in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tongka_http_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "tongka_http_request_seconds", "HTTP request duration by route template.",
            ["route"], registry=self.registry,
        )
        self.upload_bytes = Counter(
            "tongka_upload_bytes", "Bytes of batch files received.", registry=self.registry
        )
        self.batches = Counter(
            "tongka_batches_accepted", "Batches stored (new, not repeated bytes).",
            registry=self.registry,
        )
        self.taps = Counter(
            "tongka_taps_accepted", "Taps accepted into the tap store.", registry=self.registry
        )
        self.jobs = Histogram(
            "tongka_job_seconds", "Job durations by kind and final state.", ["kind", "state"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600), registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
