"""Structured logs: one JSON object per line, with the request id.

No token, password, client secret or Authorization value ever reaches a log
line: messages are written without them, and as a second line of defence any
`extra` field whose name suggests a secret is replaced by "[redacted]". The
access log carries method, route path, status and duration: never a query
string, a header value or a body.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import re
import sys
import time
import traceback
from typing import Any, TextIO

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
_rotor_log = logging.getLogger("rotor")


@functools.lru_cache(maxsize=256)
def _is_secret_name(name: str) -> bool:
    return _SECRET_NAMES.search(name) is not None


def _entry(created: float, level: str, logger: str, message: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ts": round(created, 3),
        "level": level,
        "logger": logger,
        "msg": message,
    }
    current = request_id.get()
    if current is not None:
        entry["request_id"] = current
    return entry


def _type_name(link: traceback.TracebackException) -> str:
    kind = link.exc_type
    return "?" if kind is None else f"{kind.__module__}.{kind.__qualname__}"


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = _entry(record.created, record.levelname.lower(), record.name, record.getMessage())
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = "[redacted]" if _is_secret_name(key) else value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry, enc_hook=str).decode()

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        """Where it happened and what type it was, down the chain of causes;
        never the exceptions' messages, which may quote what was sent (asyncpg's
        DataError quotes the offending argument, a token for all we know)."""
        parts: list[str] = []
        link: traceback.TracebackException | None = traceback.TracebackException(*ei)
        while link is not None:
            parts.append("".join(link.stack.format()))
            parts.append(f"{getattr(link, 'exc_type_str', None) or _type_name(link)}: [withheld]")
            link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
        return "\n".join(part.rstrip("\n") for part in parts if part)


# Access lines wait at most this long, or until this many have gathered.
ACCESS_DELAY = 0.2
ACCESS_BATCH = 256


class JSONLinesHandler(logging.StreamHandler[TextIO]):
    """Rotor's handler: one JSON object per line on a stream (stderr).

    Access lines, one per request and so nearly every line under load, take a
    shorter way (`access`): the line is encoded directly, without a LogRecord
    and the logging module's dispatch, and kept until the next write to the
    stream: any other record (which keeps the lines in order), ACCESS_BATCH
    lines, ACCESS_DELAY seconds after the first (a timer on the event loop),
    or shutdown (`logging.shutdown` flushes every handler at exit). nginx's
    `access_log ... buffer= flush=` and Envoy's access-log flush interval do
    the same. Measured on /refresh, the record and a write per line cost
    about 10 % of the request; a process killed outright may lose the last
    ACCESS_DELAY seconds of access lines, never another record.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(JSONFormatter())
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def access(self, line: str) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line)
            if len(self._pending) >= ACCESS_BATCH:
                self._write_pending()
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not from the event loop: nothing to wait for
                self._write_pending()
                return
            # One timer at a time, on the loop that is running (a timer left on
            # a closed loop, in tests that start several, is replaced).
            if self._timer is None or self._timer_loop is not loop:
                self._timer = loop.call_later(ACCESS_DELAY, self._on_timer)
                self._timer_loop = loop

    def _on_timer(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._timer = None
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except Exception:  # a broken stream never fails a request, as in logging
            self.handleError(logging.makeLogRecord({"msg": f"{len(lines)} access lines"}))

    def emit(self, record: logging.LogRecord) -> None:
        self._write_pending()  # called with the lock held (Handler.handle)
        super().emit(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
        super().flush()


_handler: JSONLinesHandler | None = None


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    # No line carries the caller's source position, thread or process (the
    # formatter writes none of them): skip collecting them for every record,
    # as the logging HOWTO's "Optimization" section suggests.
    global _handler
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = _handler = JSONLinesHandler(stream or sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn's access log would print query strings: Rotor writes its own.
    logging.getLogger("uvicorn.access").disabled = True


def _direct_access_handler() -> JSONLinesHandler | None:
    """Rotor's handler, when it is the only place an access line would go (the
    logging set up by configure_logging, untouched); else None, and the line
    goes through the logging module like any other (a test's handler, an
    operator's own configuration)."""
    handler = _handler
    if (
        handler is None
        or logging.root.handlers != [handler]
        or handler.filters
        or handler.level > logging.INFO
        or access_log.handlers
        or access_log.filters
        or not access_log.propagate
        or _rotor_log.handlers
        or _rotor_log.filters
        or not _rotor_log.propagate
    ):
        return None
    return handler


def log_access(method: str, path: str, status: int, seconds: float) -> None:
    """The access line of one request (written by the HTTP edge)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    duration_ms = round(seconds * 1000, 2)
    handler = _direct_access_handler()
    if handler is None:
        access_log.info(
            "request",
            extra={"method": method, "path": path, "status": status, "duration_ms": duration_ms},
        )
        return
    entry = _entry(time.time(), "info", access_log.name, "request")
    entry["method"] = method
    entry["path"] = path
    entry["status"] = status
    entry["duration_ms"] = duration_ms
    handler.access(msgspec.json.encode(entry).decode() + handler.terminator)
