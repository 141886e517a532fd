"""Prometheus metrics of the gateway, in a registry of its own (apps can share a process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Sub-millisecond buckets: the gateway's own overhead is what these must resolve.
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CIRCUIT_VALUE = {"closed": 0, "open": 1, "half-open": 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests", "Requests by endpoint, model, runtime and status code",
            ["endpoint", "model", "runtime", "code"], registry=r,
        )
        self.errors = Counter(
            "gateway_errors", "Error responses (status >= 400) by model, runtime and code",
            ["model", "runtime", "code"], registry=r,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds", "Time from request to response, in the gateway",
            ["endpoint", "model", "runtime"], buckets=BUCKETS, registry=r,
        )
        self.backend_latency = Histogram(
            "gateway_backend_duration_seconds", "Time waiting for a backend's inference answer",
            ["model", "runtime"], buckets=BUCKETS, registry=r,
        )
        self.in_flight = Gauge("gateway_requests_in_flight", "Requests being handled", registry=r)
        self.backend_up = Gauge(
            "gateway_backend_up", "1 if the last health probe reached the backend", ["runtime"],
            registry=r,
        )
        self.circuit = Gauge(
            "gateway_backend_circuit_state", "Circuit breaker: 0 closed, 1 open, 2 half-open",
            ["runtime"], registry=r,
        )

        # Shadow traffic (shadow.py): the parity certificate checked on live requests.
        pair = ["model", "primary", "shadow"]
        self.shadow_requests = Counter(
            "gateway_shadow_requests", "Shadowed requests by outcome (compared, failed, skipped)",
            [*pair, "outcome"], registry=r,
        )
        self.shadow_rows = Counter(
            "gateway_shadow_rows", "Output rows compared for top-1 agreement", pair, registry=r,
        )
        self.shadow_top1 = Counter(
            "gateway_shadow_top1_disagreements", "Compared rows whose arg-max differs", pair,
            registry=r,
        )
        self.shadow_error = Histogram(
            "gateway_shadow_max_abs_error", "Per compared request: largest absolute difference "
            "between the primary's and the shadow's outputs", pair,
            buckets=(1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0), registry=r,
        )

        self._children: dict[tuple, Any] = {}

    def observe(self, endpoint: str, model: str, runtime: str, code: int, seconds: float) -> None:
        key = (endpoint, model, runtime, code)
        children = self._children.get(key)  # .labels() costs more than the update itself
        if children is None:
            c = str(code)
            children = self._children[key] = (
                self.requests.labels(endpoint, model, runtime, c),
                self.latency.labels(endpoint, model, runtime),
                self.errors.labels(model, runtime, c) if code >= 400 else None,
            )
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def observe_backend(self, model: str, runtime: str, seconds: float) -> None:
        child = self._children.get((model, runtime))
        if child is None:
            child = self._children[(model, runtime)] = self.backend_latency.labels(model, runtime)
        child.observe(seconds)

    def observe_shadow(self, pair: Any, outcome: str, max_abs_error: float = 0.0, rows: int = 0,
                       top1_disagreements: int = 0) -> None:  # fmt: skip
        labels = (pair.model, pair.primary, pair.shadow)
        self.shadow_requests.labels(*labels, outcome).inc()
        if outcome == "compared":
            self.shadow_error.labels(*labels).observe(max_abs_error)
            self.shadow_rows.labels(*labels).inc(rows)
            self.shadow_top1.labels(*labels).inc(top1_disagreements)

    def render(self, up: dict[str, bool | None], circuits: dict[str, str]) -> bytes:
        for rt, ok in up.items():
            self.backend_up.labels(rt).set(1 if ok else 0)
        for rt, state in circuits.items():
            self.circuit.labels(rt).set(CIRCUIT_VALUE[state])
        return generate_latest(self.registry)
