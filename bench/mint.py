"""Tokens minted through Rotor's own endpoints (httpx) just before a load:
the introspection mix, whose access tokens live ROTOR_ACCESS_TOKEN_TTL."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import httpx

from bench.seed import Accounts

CONCURRENCY = 32
# Each login costs an argon2 verification (about a second on this 2-core
# machine): a couple, one at a time, so none waits past ROTOR_DB_TIMEOUT.
PASSWORD_LOGINS = 2
SAMPLE = 50


@dataclass(frozen=True, slots=True)
class Mix:
    """What a gateway would be asked about: mostly users' access tokens, some
    services' (client_credentials) access tokens, and live refresh tokens."""

    tokens: list[str]
    user_access: int
    service_access: int
    refresh: int
    active_in_sample: float


async def _post_all(
    http: httpx.AsyncClient,
    path: str,
    authorization: str,
    bodies: list[dict[str, str]],
    *,
    form: bool = True,
    limit: int = CONCURRENCY,
) -> list[dict[str, Any]]:
    """POST each body (form-encoded, or JSON), at most `limit` at once; every
    answer must be 200."""
    slots = asyncio.Semaphore(limit)

    async def one(body: dict[str, str]) -> dict[str, Any]:
        async with slots:
            response = await http.post(
                path,
                headers={"Authorization": authorization},
                data=body if form else None,
                json=None if form else body,
            )
        if response.status_code != 200:
            raise RuntimeError(f"minting: {path} answered {response.status_code}: {response.text}")
        answer: dict[str, Any] = response.json()
        return answer

    return list(await asyncio.gather(*(one(body) for body in bodies)))


async def _mint(base_url: str, accounts: Accounts, refresh_tokens: list[str], services: int) -> Mix:
    auth = accounts.app.authorization
    logins = [
        {"grant_type": "password", "username": name, "password": accounts.password}
        for name in accounts.usernames[:PASSWORD_LOGINS]
    ]
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as http:
        sessions = await _post_all(
            http, "/refresh", auth, [{"refresh_token": t} for t in refresh_tokens], form=False
        )
        sessions += await _post_all(http, "/token", auth, logins, limit=1)
        service = await _post_all(
            http, "/token", auth, [{"grant_type": "client_credentials"}] * services
        )
        user_access = [body["access_token"] for body in sessions]
        live_refresh = [body["refresh_token"] for body in sessions[: len(sessions) // 2]]
        tokens = user_access + live_refresh + [body["access_token"] for body in service]
        random.Random(len(tokens)).shuffle(tokens)
        sample = [{"token": token} for token in tokens[:SAMPLE]]
        answers = await _post_all(http, "/introspect", accounts.gateway.authorization, sample)
    active = sum(1 for answer in answers if answer.get("active") is True) / max(1, len(answers))
    return Mix(tokens, len(user_access), len(service), len(live_refresh), active)


def introspection_mix(
    base_url: str, accounts: Accounts, refresh_tokens: list[str], total: int
) -> Mix:
    """About 60% users' access tokens (from rotating `refresh_tokens` and a few
    password logins), 30% live refresh tokens, the rest services' access tokens."""
    services = max(1, total - len(refresh_tokens) - len(refresh_tokens) // 2 - PASSWORD_LOGINS)
    return asyncio.run(_mint(base_url, accounts, refresh_tokens, services))


def families_for_mix(total: int) -> int:
    """How many seeded families `introspection_mix` needs for `total` tokens."""
    return max(1, round(total * 0.6))
