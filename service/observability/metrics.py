"""Domain metrics (Prometheus). Request counts and latency histograms come from
Litestar's Prometheus middleware. With several worker processes, `rotor
serve` sets PROMETHEUS_MULTIPROC_DIR so /metrics adds up every process."""

from __future__ import annotations

from prometheus_client import Counter

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
