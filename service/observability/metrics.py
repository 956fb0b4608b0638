"""Metrics (Prometheus): the domain counters, and requests and their latency by
route (written by the HTTP edge). With several worker processes, `rotor serve`
sets PROMETHEUS_MULTIPROC_DIR so /metrics adds up every process."""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Histogram

TOKENS_ISSUED = Counter("rotor_tokens_issued_total", "Access tokens issued, by grant", ["grant"])
ROTATIONS = Counter("rotor_rotations_total", "Refresh tokens rotated")
GRACE_RETRIES = Counter(
    "rotor_grace_retries_total", "Retries within ROTOR_REUSE_GRACE answered with the same successor"
)
REUSE_DETECTED = Counter("rotor_reuse_detected_total", "Spent refresh tokens presented again")
FAMILIES_REVOKED = Counter(
    "rotor_families_revoked_total", "Families newly revoked, by reason", ["reason"]
)
ACCESS_TOKENS_REVOKED = Counter(
    "rotor_access_tokens_revoked_total", "Access tokens revoked by jti (RFC 7009)"
)
LOGIN_FAILURES = Counter("rotor_login_failures_total", "Failed password logins")
LOGIN_LOCKOUTS = Counter(
    "rotor_login_lockouts_total", "Password attempts refused (429) by the login limits"
)
PRUNED = Counter("rotor_pruned_total", "Rows deleted by pruning, by table", ["table"])


@functools.lru_cache(maxsize=256)
def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once per label set (the values come
    from fixed sets: grant types, reasons, tables)."""
    return metric.labels(*values)


class HttpMetrics:
    """Requests by method, route template and status, and their latency: the
    series Litestar's Prometheus plugin wrote (same names and labels), written
    by the HTTP edge with the labelled children kept, so a request costs two
    increments and no label look-up."""

    def __init__(self, prefix: str = "rotor_http", app_name: str = "rotor") -> None:
        labels = ["method", "path", "status_code", "app_name"]
        self._app_name = app_name
        self._requests = Counter(f"{prefix}_requests_total", "Total requests", labels)
        self._errors = Counter(f"{prefix}_requests_error_total", "Total errors in requests", labels)
        self._latency = Histogram(
            f"{prefix}_request_duration_seconds", "Request duration, in seconds", labels
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any | None]] = {}

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        key = (method, path, status)
        children = self._children.get(key)
        if children is None:
            values = (method, path, str(status), self._app_name)
            errors = self._errors.labels(*values) if status >= 500 else None
            children = (self._requests.labels(*values), self._latency.labels(*values), errors)
            self._children[key] = children
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()


HTTP_METRICS = HttpMetrics()
