"""The Next.js example (examples/nextjs) in a real browser, end to end.

Rotor (`rotor serve`, real processes on the test's PostgreSQL) and the example's
production build (`next build` once per session, then `next start`) run as they would
in production; headless Chromium (Debian's, driven by playwright-core) signs in,
navigates, races, steals and replays. examples/nextjs/e2e/scenarios.mjs drives the
browser and records what the pages showed, the cookies the browser kept and Rotor's
state through the admin API at each step; the tests below judge those records.

Two stacks (a Rotor and a Next.js server each), because the scenarios need windows
that exclude each other:
- main: access tokens of 2 s and ROTOR_REUSE_GRACE=10, as the example's README
  recommends; login, refresh and the parallel race, logout, devices;
- short: grace 2 s, idle window 10 s, families of 11 s: the stolen cookie is replayed
  past the grace window, an unused session idles out, and a rotation's cookie is cut
  at the family's absolute limit.

Without Node.js, Chromium or the example's npm packages this module is skipped with
the one line that says what installs them (scripts/test prints it too); with
ROTOR_BROWSER_TEST=required (.ci/run) its collection fails with that line instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher as Argon2

from service.accounts.clients import create_client
from service.accounts.users import create_user
from tests import browser
from tests.helpers import PASSWORD, ROTOR_SCRIPT, database_url_for, free_port, server_env

pytestmark = pytest.mark.slow

EXAMPLE = browser.EXAMPLE
NEXT = EXAMPLE / "node_modules" / "next" / "dist" / "bin" / "next"
DIST = ".next-test"  # the test's own build folder (next.config.ts reads NEXT_DIST_DIR)
COOKIE = "__Host-session"
REQUIRED = os.environ.get("ROTOR_BROWSER_TEST") == "required"

STACKS: dict[str, dict[str, str]] = {
    "main": {
        "ROTOR_ACCESS_TOKEN_TTL": "2",
        "ROTOR_REUSE_GRACE": "10",
        "ROTOR_REFRESH_IDLE_TTL": "600",
        "ROTOR_FAMILY_MAX_TTL": "3600",
    },
    "short": {
        "ROTOR_ACCESS_TOKEN_TTL": "2",
        "ROTOR_REUSE_GRACE": "2",
        "ROTOR_REFRESH_IDLE_TTL": "10",
        "ROTOR_FAMILY_MAX_TTL": "11",
    },
}
# Each scenario: its user, and the stack it runs on.
SCENARIOS = {
    "login": ("lena", "main"),
    "refresh": ("rita", "main"),
    "logout": ("lou", "main"),
    "devices": ("dora", "main"),
    "theft": ("tess", "short"),
    "idle": ("ida", "short"),
}

SET_COOKIE = re.compile(
    r"__Host-session=<value>; Path=/; Expires=\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT; "
    r"Max-Age=\d+; Secure; HttpOnly; SameSite=lax"
)
CLEAR_COOKIE = (
    "__Host-session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; "
    "Secure; HttpOnly; SameSite=lax"
)
COOKIE_ATTRIBUTES = {
    "name": COOKIE,
    "domain": "localhost",  # host-only: a Domain attribute would show as ".localhost"
    "path": "/",
    "httpOnly": True,
    "secure": True,
    "sameSite": "Lax",
}


# ---- the build, the processes, the accounts --------------------------------------


MISSING = browser.missing()
if MISSING:  # one line in pytest's summary, the one scripts/test prints
    if REQUIRED:
        pytest.fail(MISSING, pytrace=False)
    pytest.skip(MISSING, allow_module_level=True)
NODE = browser.node() or "node"


@pytest.fixture(scope="session")
def example_build() -> None:
    """`next build` of examples/nextjs, once per session, into its own folder."""
    result = subprocess.run(
        [NODE, str(NEXT), "build"],
        cwd=EXAMPLE,
        env={**os.environ, "NEXT_DIST_DIR": DIST, "NEXT_TELEMETRY_DISABLED": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"next build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )


@dataclass
class Processes:
    """Every process the test starts, each in its own process group, stopped at the end."""

    logs: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    files: list[IO[bytes]] = field(default_factory=list)

    def start(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.files.append(log)
        self.running[name] = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def all_tails(self) -> str:
        return "\n".join(f"--- {name} ---\n{self.tail(name)}" for name in self.running)

    def wait_ready(self, name: str, url: str, timeout: float = 90) -> None:
        process = self.running[name]
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited ({process.returncode}):\n{self.tail(name)}")
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} did not answer 200 at {url}:\n{self.tail(name)}")
            time.sleep(0.1)

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for log in self.files:
            log.close()


async def _execute(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def browser_database(server_url: str, template_db: str) -> Iterator[str]:
    """A fresh migrated database (as `database_url` makes one), for the whole module:
    the build and the servers are started once for all six scenarios."""
    name = f"rotor_browser_{uuid.uuid4().hex[:12]}"
    asyncio.run(_execute(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    yield database_url_for(server_url, name)
    asyncio.run(_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Accounts:
    admin: dict[str, str]
    bff: dict[str, str]
    users: dict[str, dict[str, str]]  # by scenario: username, password, id


async def _arrange(database_url: str) -> Accounts:
    connection = await asyncpg.connect(database_url)
    try:
        admin, admin_secret = await create_client(
            connection,
            name="e2e-operator",
            grant_types=["client_credentials"],
            scopes=[],
            public=False,
            can_introspect=False,
            is_admin=True,
        )
        bff, bff_secret = await create_client(
            connection,
            name="nextjs-bff",
            grant_types=["password", "refresh_token"],
            scopes=["read"],
            public=False,
            can_introspect=False,
            is_admin=False,
        )
        hasher = Argon2(time_cost=1, memory_cost=8192, parallelism=1)
        users = {}
        for scenario, (username, _) in SCENARIOS.items():
            user = await create_user(connection, username, hasher.hash(PASSWORD))
            users[scenario] = {"username": username, "password": PASSWORD, "id": str(user.id)}
    finally:
        await connection.close()
    assert admin_secret is not None
    assert bff_secret is not None
    return Accounts(
        admin={"client_id": admin.client_id, "client_secret": admin_secret},
        bff={"client_id": bff.client_id, "client_secret": bff_secret},
        users=users,
    )


@dataclass
class Stacks:
    accounts: Accounts
    urls: dict[str, dict[str, str]]  # by stack: rotor, app
    session_secret: str
    processes: Processes


@pytest.fixture(scope="module")
def stacks(
    example_build: None, browser_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stacks]:
    """Two Rotors on the module's database and a `next start` in front of each."""
    accounts = asyncio.run(_arrange(browser_database))
    session_secret = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    processes = Processes(tmp_path_factory.mktemp("browser-logs"))
    urls: dict[str, dict[str, str]] = {}
    try:
        for name, settings in STACKS.items():
            rotor_port, app_port = free_port(), free_port()
            rotor = f"http://127.0.0.1:{rotor_port}"
            urls[name] = {"rotor": rotor, "app": f"http://localhost:{app_port}"}
            processes.start(
                f"rotor-{name}",
                [str(ROTOR_SCRIPT), "serve", "--port", str(rotor_port)],
                server_env(
                    browser_database,
                    ROTOR_ISSUER=rotor,
                    ROTOR_TRUSTED_PROXIES="127.0.0.1",
                    ROTOR_SHUTDOWN_DELAY="0",
                    **settings,
                ),
            )
            processes.start(
                f"next-{name}",
                [NODE, str(NEXT), "start", "--port", str(app_port), "--hostname", "127.0.0.1"],
                {
                    **os.environ,
                    "NEXT_DIST_DIR": DIST,
                    "NEXT_TELEMETRY_DISABLED": "1",
                    "ROTOR_ISSUER": rotor,
                    "ROTOR_CLIENT_ID": accounts.bff["client_id"],
                    "ROTOR_CLIENT_SECRET": accounts.bff["client_secret"],
                    "SESSION_SECRET": session_secret,
                    "APP_ORIGIN": urls[name]["app"],
                    "ROTOR_REFRESH_IDLE_TTL": settings["ROTOR_REFRESH_IDLE_TTL"],
                    "ROTOR_FAMILY_MAX_TTL": settings["ROTOR_FAMILY_MAX_TTL"],
                },
                cwd=EXAMPLE,
            )
        for name, url in urls.items():
            processes.wait_ready(f"rotor-{name}", f"{url['rotor']}/health/ready")
            processes.wait_ready(
                f"next-{name}", url["app"].replace("localhost", "127.0.0.1") + "/login"
            )
        yield Stacks(accounts, urls, session_secret, processes)
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def observed(stacks: Stacks) -> dict[str, Any]:
    """Every scenario, run once by the Node driver (each has its own user)."""
    config = {
        "chromium": str(browser.CHROMIUM),
        "sessionSecret": stacks.session_secret,
        "cookieName": COOKIE,
        "admin": stacks.accounts.admin,
        "bff": stacks.accounts.bff,
        "stacks": {
            name: {**url, "grace": int(STACKS[name]["ROTOR_REUSE_GRACE"])}
            for name, url in stacks.urls.items()
        },
        "users": stacks.accounts.users,
        # One lane per stack, run at the same time; the scenarios of a lane in turn.
        "lanes": [
            [[scenario, stack] for scenario, (_, stack) in SCENARIOS.items() if stack == lane]
            for lane in STACKS
        ],
    }
    result = subprocess.run(
        [NODE, "e2e/scenarios.mjs"],
        cwd=EXAMPLE,
        env={**os.environ, "E2E_CONFIG": json.dumps(config)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"the driver failed:\n{result.stderr[-4000:]}\n{stacks.processes.all_tails()}"
    )
    (stacks.processes.logs / "observed.json").write_text(result.stdout)
    results: dict[str, Any] = json.loads(result.stdout)
    results["_logs"] = stacks.processes.all_tails()
    return results


def scenario(observed: dict[str, Any], name: str) -> dict[str, Any]:
    result: dict[str, Any] = observed[name]
    assert "error" not in result, f"{name}: {result['error']}\n{observed['_logs']}"
    return result


# ---- reading Rotor's answers ------------------------------------------------------


def at(timestamp: str) -> float:
    """An RFC 3339 time of the admin API, as epoch seconds."""
    return datetime.fromisoformat(timestamp).timestamp()


def generations(family: dict[str, Any]) -> list[tuple[int, bool]]:
    """The chain as (generation, spent?) pairs, oldest first."""
    return [(token["generation"], token["spent_at"] is not None) for token in family["chain"]]


def state(family: dict[str, Any]) -> tuple[str, str | None]:
    return family["status"], family["revoked_reason"]


def live_chain(length: int) -> list[tuple[int, bool]]:
    """A family's chain of `length` tokens: all spent but the last."""
    return [(generation, generation < length) for generation in range(1, length + 1)]


def signed_out(navigation: dict[str, Any]) -> None:
    """A navigation to the dashboard that ended on the login page."""
    assert (navigation["status"], navigation["path"], navigation["username"]) == (
        200,
        "/login",
        None,
    )
    assert navigation["redirected"] is True


def signed_in(navigation: dict[str, Any], username: str) -> None:
    """A navigation to the dashboard that showed it, with no redirect on the way."""
    assert (navigation["status"], navigation["path"], navigation["username"]) == (
        200,
        "/dashboard",
        username,
    )
    assert navigation["redirected"] is False


# ---- the scenarios ----------------------------------------------------------------


def test_login_sets_only_an_encrypted_host_cookie_and_starts_generation_one(
    observed: dict[str, Any], stacks: Stacks
) -> None:
    r = scenario(observed, "login")
    user = stacks.accounts.users["login"]

    assert r["wrongPassword"] == {
        "status": 303,
        "setCookie": None,
        "path": "/login?error=invalid",
        "alert": "Wrong username or password.",
        "cookie": None,
    }

    assert r["status"] == 303
    assert SET_COOKIE.fullmatch(r["setCookie"]), r["setCookie"]
    assert (r["path"], r["username"], r["userId"]) == ("/dashboard", "lena", user["id"])
    family = r["family"]
    assert r["sessionId"] == r["sealed"]["sid"] == family["id"]

    cookie = dict(r["cookie"])
    expires = cookie.pop("expires")
    assert cookie == COOKIE_ATTRIBUTES
    assert r["cookieCount"] == 1
    assert r["documentCookie"] == ""  # HttpOnly: no script of the page can read it
    assert r["tokensInPage"] is False  # nor do the tokens reach the page any other way

    # Its expiry is the refresh token's idle window (Max-Age of the sealed end), never
    # past Rotor's own end of that window nor the family's.
    token_ends = at(family["chain"][0]["expires_at"])
    assert r["sealed"]["exp"] - 1 <= expires <= r["sealed"]["exp"] + 0.5
    assert token_ends - 3 <= r["sealed"]["exp"] <= token_ends
    assert r["sealed"]["familyEnds"] <= at(family["expires_at"])

    assert [(f["id"], f["client_id"], f["status"]) for f in r["families"]["items"]] == [
        (family["id"], stacks.accounts.bff["client_id"], "active")
    ]
    assert state(family) == ("active", None)
    assert generations(family) == [(1, False)]


def test_an_expired_access_token_refreshes_silently_even_under_six_parallel_requests(
    observed: dict[str, Any], stacks: Stacks
) -> None:
    r = scenario(observed, "refresh")
    user = stacks.accounts.users["refresh"]
    assert generations(r["atLogin"]) == [(1, False)]

    # A navigation after expiry: one rotation in the Middleware, the page shown.
    signed_in(r["navigation"], "rita")
    assert SET_COOKIE.fullmatch(r["navigation"]["setCookie"]), r["navigation"]["setCookie"]
    assert (state(r["afterNavigation"]), generations(r["afterNavigation"])) == (
        ("active", None),
        live_chain(2),
    )
    assert r["refreshTokens"]["first"] == "changed"
    # The cookie slid with the new refresh token's idle window.
    second_ends = at(r["afterNavigation"]["chain"][1]["expires_at"])
    assert second_ends - 3 <= r["cookieAfterNavigation"]["expires"] <= second_ends + 0.5
    assert r["cookieAfterNavigation"]["expires"] > at(r["atLogin"]["chain"][0]["expires_at"])

    # Six requests racing on one expired token: all answered, one new generation, and
    # every answer set a cookie holding the one successor that the browser kept.
    me = {"user_id": user["id"], "username": "rita", "session_id": r["atLogin"]["id"]}
    assert r["parallel"] == [{"status": 200, "body": me}] * 6
    assert r["refreshTokens"]["parallel"] == ["browser's"] * 6
    assert (state(r["afterParallel"]), generations(r["afterParallel"])) == (
        ("active", None),
        live_chain(3),
    )

    # A request that left with the previous cookie, inside the grace window: answered,
    # with the same successor, and still one branch.
    assert r["lateRequest"]["secondsSinceRotation"] < int(STACKS["main"]["ROTOR_REUSE_GRACE"])
    assert (r["lateRequest"]["status"], r["lateRequest"]["body"]) == (200, me)
    assert r["refreshTokens"]["late"] == "browser's"
    assert (state(r["afterLate"]), generations(r["afterLate"])) == (("active", None), live_chain(3))

    # The cookie the browser ended with refreshes again.
    signed_in(r["final"], "rita")
    assert r["refreshTokens"]["final"] == "new"
    assert (state(r["afterFinal"]), generations(r["afterFinal"])) == (
        ("active", None),
        live_chain(4),
    )
    assert r["reuseEvents"]["items"] == []


def test_a_stolen_cookie_replayed_after_the_grace_window_ends_the_family_for_both(
    observed: dict[str, Any],
) -> None:
    r = scenario(observed, "theft")
    grace = int(STACKS["short"]["ROTOR_REUSE_GRACE"])

    signed_in(r["victimRotates"], "tess")
    rotation = r["afterRotation"]
    assert (state(rotation), generations(rotation)) == (("active", None), live_chain(2))
    # The rotated cookie stops at the family's absolute limit, short of a full idle window.
    family_ends = at(rotation["expires_at"])
    idle = int(STACKS["short"]["ROTOR_REFRESH_IDLE_TTL"])
    assert at(rotation["chain"][1]["issued_at"]) + idle > family_ends
    # Never past Rotor's end; short of it by the login's own time at most, since
    # the app counts from before it sent the login (seconds on a loaded machine).
    assert family_ends - 5 <= r["rotatedSealedExp"] <= family_ends
    assert r["rotatedSealedExp"] - 1 <= r["rotatedCookie"]["expires"] <= r["rotatedSealedExp"] + 0.5

    # The thief's copy, past the grace window: reuse, the family ends, the thief is out.
    assert r["replaySecondsAfterSpent"] > grace
    # (Before the copy's own end, or this app would refuse it without asking Rotor.)
    assert r["replayAt"] < r["stolenSealedExp"], "the replay came too late to reach Rotor"
    signed_out(r["thiefReplays"])
    assert r["thiefCookie"] is None
    assert state(r["afterReplay"]) == ("revoked", "reuse_detected")
    [event] = r["reuseEvents"]["items"]
    assert event["family_id"] == rotation["id"]
    assert event["detail"]["generation"] == 1
    assert event["detail"]["seconds_since_spent"] > grace

    # The victim's next request needs a refresh, which the ended family refuses.
    signed_out(r["victimNext"])
    assert r["victimCookie"] is None
    assert (state(r["afterAll"]), generations(r["afterAll"])) == (
        ("revoked", "reuse_detected"),
        live_chain(2),
    )


def test_logout_revokes_the_family_at_rotor_and_a_saved_cookie_is_refused(
    observed: dict[str, Any],
) -> None:
    r = scenario(observed, "logout")

    # Forged sign-outs (another origin, or none) are refused and change nothing.
    assert r["crossSite"] == {"foreignOrigin": 403, "noOrigin": 403}
    assert state(r["afterCrossSite"]) == ("active", None)

    assert r["logout"] == {
        "status": 303,
        "setCookie": CLEAR_COOKIE,
        "path": "/login?signed-out=1",
        "notice": "You are signed out.",
        "cookie": None,
    }
    assert state(r["afterLogout"]) == ("revoked", "logout")
    assert [(e["type"], e["detail"]) for e in r["revokedEvents"]["items"]] == [
        ("family_revoked", {"reason": "logout"})
    ]

    signed_out(r["replayed"])
    assert r["replayCookie"] is None
    assert (state(r["afterReplay"]), generations(r["afterReplay"])) == (
        ("revoked", "logout"),
        [(1, False)],
    )
    assert r["reuseEvents"]["items"] == []


def test_an_unused_session_idles_out_in_the_browser_and_at_rotor(observed: dict[str, Any]) -> None:
    r = scenario(observed, "idle")
    login = r["atLogin"]
    assert (state(login), generations(login)) == (("active", None), [(1, False)])
    token_ends = at(login["chain"][0]["expires_at"])
    assert token_ends - 3 <= r["cookieExpires"] <= token_ends + 0.5

    assert r["droppedAt"] >= r["cookieExpires"] - 0.05  # the browser dropped it, on time
    signed_out(r["navigation"])
    assert state(r["expired"]) == ("expired", None)

    # Rotor refuses the idled-out refresh token without calling it reuse.
    assert (r["rotorRefresh"]["status"], r["rotorRefresh"]["body"]["error"]) == (
        400,
        "invalid_grant",
    )
    # The saved cookie, forced back in: past its sealed end, refused and deleted.
    signed_out(r["replayed"])
    assert r["replayCookie"] is None
    assert (state(r["afterAll"]), generations(r["afterAll"])) == (("expired", None), [(1, False)])


def test_your_devices_lists_both_browsers_and_signs_out_only_the_other(
    observed: dict[str, Any], stacks: Stacks
) -> None:
    r = scenario(observed, "devices")
    ids, agents = r["ids"], r["userAgents"]

    def row(device: str, current: bool) -> dict[str, Any]:
        return {"id": ids[device], "current": current, "userAgent": agents[device]}

    # Newest first, each with the browser's own user agent, the viewer's marked current.
    assert r["seenByA"] == {
        "path": "/devices",
        "notice": None,
        "rows": [row("B", False), row("A", True)],
    }
    assert r["seenByB"] == {
        "path": "/devices",
        "notice": None,
        "rows": [row("B", True), row("A", False)],
    }

    assert r["afterSignOutB"] == {
        "path": "/devices?signed-out=1",
        "notice": "Signed out 1 device.",
        "rows": [row("A", True)],
    }
    assert state(r["familiesAfterB"]["A"]) == ("active", None)
    assert state(r["familiesAfterB"]["B"]) == ("revoked", "logout")
    assert r["nextOfB"]["path"] == "/login"

    assert r["withC"]["rows"] == [row("C", False), row("A", True)]
    assert r["afterOthers"] == {
        "path": "/devices?signed-out=1",
        "notice": "Signed out 1 device.",
        "rows": [row("A", True)],
    }
    assert r["nextOfC"]["path"] == "/login"

    families = {f["id"]: (f["status"], f["revoked_reason"]) for f in r["families"]["items"]}
    assert families == {
        ids["A"]: ("active", None),
        ids["B"]: ("revoked", "logout"),
        ids["C"]: ("revoked", "logout"),
    }
