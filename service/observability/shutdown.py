"""Graceful shutdown: on SIGTERM, readiness turns 503 at once, the process keeps
serving for ROTOR_SHUTDOWN_DELAY seconds (so load balancers stop sending new
requests), then the server's own graceful shutdown lets in-flight requests
finish and exits."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("rotor.shutdown")


class Drain:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.draining = False
        self._previous: Any = None

    def install(self) -> None:
        """Chain in front of the server's SIGTERM handler (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.draining:
            return
        self.draining = True
        log.info("SIGTERM: readiness is 503; shutting down", extra={"delay_s": self.delay})
        previous = self._previous
        if not callable(previous):
            raise SystemExit(0)
        handler: Callable[[int, FrameType | None], Any] = previous
        asyncio.get_running_loop().call_later(self.delay, handler, signum, frame)
