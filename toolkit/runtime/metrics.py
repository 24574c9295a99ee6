"""Prometheus metrics for the door API and loop, in a registry of their own (one per app)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Milliseconds matter at the door: a frame takes ~1-50 ms, an HTTP round trip a few more.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Request counts, errors, latency histograms and door events."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("toolkit_http_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.errors = Counter(
            "toolkit_http_errors", "HTTP responses with status >= 400", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "toolkit_http_request_seconds", "HTTP request latency", ["route"], buckets=_BUCKETS, registry=r
        )
        self.inference = Histogram("toolkit_inference_seconds", "Model latency per image", buckets=_BUCKETS, registry=r)
        self.door_events = Counter("toolkit_door_events", "Door and model events", ["event"], registry=r)
        self.ready = Gauge("toolkit_ready", "1 when the door can decide, 0 when in doubt (locked)", registry=r)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def door_event(self, event: str) -> None:
        self.door_events.labels(event).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
