"""Structured logs: one JSON object per line, with the request id.

No token, password, client secret or Authorization value ever reaches a log
line: messages are written without them, and as a second line of defence any
`extra` field whose name suggests a secret is replaced by "[redacted]". The
access log carries method, route path, status and duration: never a query
string, a header value or a body.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import sys
from typing import Any

import msgspec

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "rotor_request_id", default=None
)

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}
_SECRET_NAMES = re.compile(r"token|password|secret|authorization|cookie|credential", re.I)
access_log = logging.getLogger("rotor.access")


@functools.lru_cache(maxsize=256)
def _is_secret_name(name: str) -> bool:
    return _SECRET_NAMES.search(name) is not None


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            entry["request_id"] = current
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = "[redacted]" if _is_secret_name(key) else value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry, enc_hook=str).decode()


def configure_logging(level: str = "INFO") -> None:
    # No line carries the caller's source position, thread or process (the
    # formatter writes none of them): skip collecting them for every record,
    # as the logging HOWTO's "Optimization" section suggests.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn's access log would print query strings: Rotor writes its own.
    logging.getLogger("uvicorn.access").disabled = True


def log_access(method: str, path: str, status: int, seconds: float) -> None:
    """The access line of one request (written by the HTTP edge)."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "request",
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
            },
        )
