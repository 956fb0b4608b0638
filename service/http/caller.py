"""Who is calling: the client IP (X-Forwarded-For only from trusted proxies)."""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from litestar import Request

from service.config import IPNetwork
from service.events import Caller

MAX_USER_AGENT = 512


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)  # callers are few (a BFF, gateways): parse each once
def client_ip(
    peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]
) -> str | None:
    """Walk X-Forwarded-For from the right while the hop is a trusted proxy;
    the first untrusted address is the client. From anyone else it is ignored."""
    address = _parse_ip(peer) if peer else None
    if address is None or not forwarded_for or not trusted:
        return str(address) if address else None
    for hop in reversed(forwarded_for.split(",")):
        if not any(address in network for network in trusted):
            break
        parsed = _parse_ip(hop)
        if parsed is None:
            break
        address = parsed
    return str(address)


def caller_of(request: Request[Any, Any, Any], trusted: tuple[IPNetwork, ...]) -> Caller:
    peer = request.client.host if request.client else None
    agent = request.headers.get("user-agent")
    return Caller(
        ip=client_ip(peer, request.headers.get("x-forwarded-for"), trusted),
        user_agent=agent[:MAX_USER_AGENT] if agent else None,
    )
