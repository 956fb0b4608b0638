"""Rotation as a state machine over HTTP (CONTRACT 2 "Family", 3.3), with hypothesis.

Hypothesis drives sequences of logins, refreshes of any token ever issued (the
live one, spent ones, old generations, through another client), family
revocations and the passing of time (moved back with SQL), against Rotor
served in-process on the real PostgreSQL of the test. A model predicts each
answer; after every step the database is checked against the model:

- every answer is below 500, and a 200 only for the family's live token (or,
  with a grace window, a retry of its immediate parent that gets the live
  token back);
- at most one live refresh token per family, and it is the model's;
- a family where a spent token was presented outside the grace window is
  revoked, with reason reuse_detected unless it was revoked before.

The app runs in litestar's sync TestClient (its own thread and event loop);
the test's checks use asyncpg on an event loop of their own. Each example
logs in fresh users, so examples share one database without a reset.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher as Argon2
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from litestar.testing import TestClient

from service.accounts.clients import create_client
from service.accounts.users import create_user
from service.app import create_app
from service.config import Settings
from tests.helpers import PASSWORD, basic

VIAS = ("refresh-json", "refresh-form", "token-form")
GRACE = 30
MACHINE_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


ENDINGS = ("family-expires", "live-token-idles-out", "admin-revokes", "user-disabled")
Entry = tuple[uuid.UUID, str]


def fingerprint(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass
class Family:
    """The model of one family: what the database must hold."""

    id: uuid.UUID
    user_id: uuid.UUID
    tokens: list[str]  # by generation; the last one is the live row
    revoked: str | None = None  # the reason
    expired: bool = False  # absolute limit passed
    disabled: bool = False  # its user
    live_expired: bool = False  # the live token idled out
    aged: set[str] = field(default_factory=set)  # spent longer ago than the grace window
    replays: int = 0  # spent tokens presented outside the grace window (reuse)

    @property
    def usable(self) -> bool:
        return self.revoked is None and not self.expired and not self.disabled


@dataclass
class World:
    """What all examples of one test share: the app, a loop and a connection."""

    http: TestClient[Any]
    loop: asyncio.AbstractEventLoop
    db: asyncpg.Connection
    grace: int
    password_hash: str

    def sql(self, query: str, *args: Any) -> Any:
        return self.loop.run_until_complete(self.db.fetch(query, *args))


class RotationMachine(RuleBasedStateMachine):
    world: World  # set on the subclass made per test

    # Every refresh token ever issued, as (family id, token): live, spent, old.
    tokens = Bundle("tokens")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[uuid.UUID, Family] = {}

    # ------------------------------------------------------------------ setup

    @initialize()
    def clients(self) -> None:
        created = []
        for name in ("main", "other"):
            client, secret = self.world.loop.run_until_complete(
                create_client(
                    self.world.db,
                    name=name,
                    grant_types=["password", "refresh_token"],
                    scopes=["read", "write"],
                    public=False,
                    can_introspect=False,
                    is_admin=False,
                )
            )
            assert secret is not None
            created.append((client.client_id, secret))
        self.main, self.other = created

    # ------------------------------------------------------------------ HTTP

    def present(self, via: str, token: str, client: tuple[str, str]) -> httpx.Response:
        headers = basic(*client)
        fields = {"refresh_token": token}
        if via == "refresh-json":
            return self.world.http.post("/refresh", json=fields, headers=headers)
        if via == "token-form":
            fields = {"grant_type": "refresh_token", **fields}
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        path = "/refresh" if via == "refresh-form" else "/token"
        return self.world.http.post(path, content=urlencode(fields), headers=headers)

    @staticmethod
    def expect_error(response: httpx.Response, status: int, error: str) -> None:
        assert response.status_code == status, response.text
        assert response.json()["error"] == error
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"

    # ------------------------------------------------------------------ rules

    @rule(target=tokens)
    def login(self) -> Entry:
        username = f"user-{uuid.uuid4().hex}"
        user = self.world.loop.run_until_complete(
            create_user(self.world.db, username, self.world.password_hash)
        )
        response = self.world.http.post(
            "/token",
            data={"grant_type": "password", "username": username, "password": PASSWORD},
            headers=basic(*self.main),
        )
        assert response.status_code == 200, response.text
        token = response.json()["refresh_token"]
        (row,) = self.world.sql(
            "SELECT family_id FROM refresh_tokens WHERE token_hash = $1", fingerprint(token)
        )
        family = Family(row["family_id"], user.id, [token])
        self.model[family.id] = family
        return (family.id, token)

    @rule(target=tokens, entry=tokens, via=st.sampled_from(VIAS))
    def refresh_any_token(self, entry: Entry, via: str) -> Any:
        """Any token ever issued: the live one, its parent, an old generation."""
        return self.refresh(entry[0], entry[1], via)

    @rule(target=tokens, entry=tokens, via=st.sampled_from(VIAS))
    def refresh_the_live_token(self, entry: Entry, via: str) -> Any:
        """The family's live token (whatever its state): keeps chains growing."""
        return self.refresh(entry[0], self.model[entry[0]].tokens[-1], via)

    @rule(target=tokens, entry=tokens, via=st.sampled_from(VIAS))
    def retry_the_parent(self, entry: Entry, via: str) -> Any:
        """The live token's parent (a lost answer's retry), else the live token."""
        tokens = self.model[entry[0]].tokens
        return self.refresh(entry[0], tokens[max(len(tokens) - 2, 0)], via)

    def refresh(self, family_id: uuid.UUID, token: str, via: str) -> Any:
        family = self.model[family_id]
        response = self.present(via, token, self.main)
        assert response.status_code < 500, response.text
        index = family.tokens.index(token)
        if index == len(family.tokens) - 1:
            if family.usable and not family.live_expired:
                assert response.status_code == 200, response.text
                successor = response.json()["refresh_token"]
                assert successor not in family.tokens
                family.tokens.append(successor)
                family.live_expired = False
                return (family_id, successor)
            # Live but dead (revoked, expired, idled out, user disabled): refused, unspent.
            self.expect_error(response, 400, "invalid_grant")
            return multiple()
        retry = (
            self.world.grace > 0
            and index == len(family.tokens) - 2
            and token not in family.aged
            and family.usable
            and not family.live_expired
        )
        if retry:
            assert response.status_code == 200, response.text
            assert response.json()["refresh_token"] == family.tokens[-1]
            return multiple()
        # Reuse: the family is revoked, unless it already was (the first reason stays).
        self.expect_error(response, 400, "invalid_grant")
        family.revoked = family.revoked or "reuse_detected"
        family.replays += 1
        return multiple()

    @rule(entry=tokens, via=st.sampled_from(VIAS), unknown=st.booleans())
    def refused(self, entry: Entry, via: str, unknown: bool) -> None:
        """Another client presents a token (live or spent), or a token nobody issued:
        invalid_grant, and nothing changes (the invariants compare with the model)."""
        if unknown:
            response = self.present(via, secrets.token_urlsafe(32), self.main)
        else:
            response = self.present(via, entry[1], self.other)
        self.expect_error(response, 400, "invalid_grant")

    @rule()
    def grace_window_passes(self) -> None:
        """Time passes for everyone: every spent token was spent longer ago than the
        grace window (spent_at moved back with SQL; no sleeping)."""
        self.world.sql(
            "UPDATE refresh_tokens SET spent_at = spent_at - make_interval(secs => $2) "
            "WHERE family_id = ANY($1::uuid[]) AND spent_at IS NOT NULL",
            list(self.model),
            self.world.grace + 1,
        )
        for family in self.model.values():
            family.aged.update(family.tokens[:-1])

    @rule(entry=tokens, event=st.sampled_from(ENDINGS))
    def family_ends(self, entry: Entry, event: str) -> None:
        """A family stops working outside the refresh path (SQL, no sleeping)."""
        family = self.model[entry[0]]
        if event == "family-expires":
            self.world.sql(
                "UPDATE token_families SET expires_at = now() - interval '1 second' WHERE id = $1",
                family.id,
            )
            family.expired = True
        elif event == "live-token-idles-out":
            self.world.sql(
                "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' "
                "WHERE family_id = $1 AND spent_at IS NULL",
                family.id,
            )
            family.live_expired = True
        elif event == "admin-revokes":
            self.world.sql(
                "UPDATE token_families SET revoked_at = now(), revoked_reason = 'admin' "
                "WHERE id = $1 AND revoked_at IS NULL",
                family.id,
            )
            family.revoked = family.revoked or "admin"
        else:
            assert event == "user-disabled"
            self.world.sql("UPDATE users SET disabled = true WHERE id = $1", family.user_id)
            family.disabled = True

    # ------------------------------------------------------------------ invariants

    @invariant()
    def at_most_one_live_token_per_family(self) -> None:
        rows = self.world.sql(
            "SELECT family_id FROM refresh_tokens WHERE spent_at IS NULL "
            "GROUP BY family_id HAVING count(*) > 1"
        )
        assert rows == []

    @invariant()
    def store_matches_the_model(self) -> None:
        if not self.model:
            return
        rows = self.world.sql(
            "SELECT f.id, f.revoked_reason, f.revoked_at IS NOT NULL AS revoked, "
            "       array_agg(t.token_hash ORDER BY t.generation) AS chain, "
            "       array_agg(t.spent_at IS NULL ORDER BY t.generation) AS live, "
            "       array_agg(t.generation ORDER BY t.generation) AS generations, "
            "       (SELECT count(*) FROM security_events e WHERE e.family_id = f.id "
            "        AND e.type = 'reuse_detected') AS reuse_events, "
            "       (SELECT count(*) FROM security_events e WHERE e.family_id = f.id "
            "        AND e.type = 'family_revoked' "
            '        AND e.detail = \'{"reason": "reuse_detected"}\'::jsonb) AS revoked_events '
            "FROM token_families f JOIN refresh_tokens t ON t.family_id = f.id "
            "WHERE f.id = ANY($1::uuid[]) GROUP BY f.id",
            list(self.model),
        )
        assert len(rows) == len(self.model)
        for row in rows:
            family = self.model[row["id"]]
            assert row["revoked_reason"] == family.revoked
            assert row["revoked"] is (family.revoked is not None)
            assert list(row["chain"]) == [fingerprint(t) for t in family.tokens]
            assert list(row["generations"]) == list(range(1, len(family.tokens) + 1))
            # Only the last generation is live, even in a dead family.
            assert list(row["live"]) == [False] * (len(family.tokens) - 1) + [True]
            # Every reuse is recorded; the family_revoked event only when reuse revoked it.
            assert row["reuse_events"] == family.replays
            assert row["revoked_events"] == (1 if family.revoked == "reuse_detected" else 0)


@pytest.fixture
def world(settings_for_machine: Settings) -> Iterator[World]:
    loop = asyncio.new_event_loop()
    db = loop.run_until_complete(asyncpg.connect(settings_for_machine.database_url))
    password_hash = Argon2(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    try:
        with TestClient(create_app(settings_for_machine)) as http:
            yield World(http, loop, db, settings_for_machine.reuse_grace, password_hash)
    finally:
        loop.run_until_complete(db.close())
        loop.close()


def run_machine(world: World) -> None:
    machine = type("Machine", (RotationMachine,), {"world": world})
    run_state_machine_as_test(machine, settings=MACHINE_SETTINGS)  # type: ignore[arg-type]


@pytest.fixture
def settings_for_machine(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    return settings.with_overrides(reuse_grace=request.param)


@pytest.mark.parametrize("settings_for_machine", [0], indirect=True, ids=["grace-0"])
def test_rotation_state_machine_without_grace(world: World) -> None:
    run_machine(world)


@pytest.mark.parametrize("settings_for_machine", [GRACE], indirect=True, ids=["grace-30"])
def test_rotation_state_machine_with_grace(world: World) -> None:
    run_machine(world)
