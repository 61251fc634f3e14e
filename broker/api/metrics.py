"""Prometheus metrics: one registry per application (tests build many apps)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    attestations: Counter
    releases: Counter

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "broker_http_requests",
                "HTTP requests by route and status",
                ["route", "status"],
                registry=registry,
            ),
            latency=Histogram(
                "broker_http_request_seconds",
                "HTTP request latency by route",
                ["route"],
                registry=registry,
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            ),
            attestations=Counter(
                "broker_attestations",
                "Attestations by tee and outcome",
                ["tee", "outcome"],
                registry=registry,
            ),
            releases=Counter(
                "broker_releases",
                "Resource release decisions by tee and outcome",
                ["tee", "outcome"],
                registry=registry,
            ),
        )
