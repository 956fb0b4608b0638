"""`python -m bench --peer dot`: Rotor against django-oauth-toolkit in the same run
(issue 16, point 4).

1. django-oauth-toolkit (the latest on PyPI) and gunicorn in a virtual
   environment of their own, `~/.cache/rotor-bench/dot/venv` (made when
   missing, upgraded each run); nothing of it enters this project.
2. A Django project written into a temporary folder: its own fresh database on
   the bench's PostgreSQL, persistent connections (CONN_MAX_AGE), DEBUG off,
   refresh rotation and reuse protection on, access tokens of 300 s (Rotor's
   default), `manage.py migrate`; then, in a `manage.py shell` script through
   DOT's models (not HTTP), two confidential applications with plain secrets
   (`hash_client_secret=False`: the bench measures DOT, not PBKDF2), users, and
   the tokens each load presents: live refresh tokens, each with its access
   token and a family of its own, and access tokens to introspect.
3. gunicorn, sync workers, 2 x cores + 1 of them (gunicorn's advice), on
   127.0.0.1; Rotor (`rotor serve --workers N`) on the bench's own database.
4. In turn: Rotor's /refresh, DOT's refresh (`POST /o/token/`, form-encoded
   `grant_type=refresh_token`), Rotor's /introspect (the main bench's mix),
   DOT's (`POST /o/introspect/`, `token=`, a mix of access tokens: DOT
   introspects access tokens only), all with the same wrk connections,
   threads and duration, each after a warm-up on tokens of its own, the CPU of
   each server and of PostgreSQL sampled as in the main bench. Printed: Rotor
   / DOT for each load. Every token is presented once (DOT's reuse protection
   would revoke the family of a second presentation): the refresh tokens are
   sized by Rotor's warm-up rate, far above DOT's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote, urlsplit

import asyncpg

from bench import mint, procs, wrk
from bench.database import Postgres, socket_dir
from bench.measure import CPUS, measure
from bench.options import Options
from bench.run import TOKEN_MARGIN, WARM_MARGIN, log
from bench.servers import Server, free_port, launch, start_rotor, wait_until
from bench.topology import Topology, TopologyRun, Window

HOME = Path.home() / ".cache" / "rotor-bench" / "dot"
VENV = HOME / "venv"
PACKAGES = ("django-oauth-toolkit", "gunicorn", "psycopg[binary]")
VERSIONS = ("django-oauth-toolkit", "Django", "gunicorn", "oauthlib", "psycopg")
ROTOR, DOT = "rotor", "dot"
LOADS = ("refresh", "introspect")
# The refresh rates that size each server's tokens when its warm-up says less
# (or there is none): about twice the best /refresh rate this README records
# for Rotor on 2 cores (2,131/s; sized by 1.5 x the warm-up's rate alone, on a
# busy machine, wrk wrapped: 1,343 reuse errors in one run), and five times
# DOT's reference figure (99/s).
ROTOR_FLOOR_RPS = 4000.0
DOT_FLOOR_RPS = 500.0
PERSISTENT_SECONDS = 600  # CONN_MAX_AGE

OAUTH2_PROVIDER: dict[str, Any] = {
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
    "ACCESS_TOKEN_EXPIRE_SECONDS": 300,
    "SCOPES": {"read": "Reading scope", "write": "Writing scope"},
}

TITLE = (
    "Rotor against django-oauth-toolkit (gunicorn, sync workers) on the same PostgreSQL,\n"
    "the same wrk loads, in turn in one run; CPU per request in ms; by CPU: the peer's\n"
    "server + PostgreSQL CPU per answer over Rotor's"
)
BUSY = 0.15  # share of the machine taken by other processes, as the main bench notes it


# -- the report ------------------------------------------------------------------


@dataclass
class PeerReport:
    settings: dict[str, Any]
    windows: list[Window] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    peer: str = DOT
    title: str = TITLE

    def of(self, server: str, load: str) -> Window | None:
        return next((w for w in self.windows if w.topology == server and w.load == load), None)

    def ratio(self, load: str) -> float | None:
        """Rotor's 2xx per second over the peer's, for one load."""
        ours, theirs = self.of(ROTOR, load), self.of(self.peer, load)
        if ours is None or theirs is None or not theirs.result.rps:
            return None
        return ours.result.rps / theirs.result.rps

    def cpu_ratio(self, load: str) -> float | None:
        """The peer's CPU per answer (server + PostgreSQL) over Rotor's: what a
        rate ratio would be on a machine of their own, and it hardly moves when
        other processes take part of the machine, as rates do."""
        ours, theirs = self.of(ROTOR, load), self.of(self.peer, load)
        if ours is None or theirs is None:
            return None
        mine = ours.cpu_ms("server") + ours.cpu_ms("database")
        return (theirs.cpu_ms("server") + theirs.cpu_ms("database")) / mine if mine else None

    def busy(self) -> str | None:
        """A note when other processes took over BUSY of the machine in a window."""
        shares = [w.cost.share("other") for w in self.windows]
        if not shares or max(shares) <= BUSY:
            return None
        return (
            f"other processes took {min(shares):.0%} to {max(shares):.0%} of the CPU in the "
            "windows: rates understate both servers; the CPU ratio holds better"
        )

    def loads(self) -> list[str]:
        seen = [w.load for w in self.windows]
        return [load for load in LOADS if load in seen] + sorted(set(seen) - set(LOADS))

    def errors(self) -> int:
        return sum(w.result.errors for w in self.windows)


def rows(report: PeerReport) -> list[dict[str, Any]]:
    """One row per load: both servers' figures side by side."""
    found = []
    for load in report.loads():
        ours, theirs = report.of(ROTOR, load), report.of(report.peer, load)
        row: dict[str, Any] = {
            "load": load,
            "ratio": report.ratio(load),
            "cpu_ratio": report.cpu_ratio(load),
        }
        for name, w in ((ROTOR, ours), (report.peer, theirs)):
            row[name] = (
                None
                if w is None
                else {
                    "rps": w.result.rps,
                    "p50_ms": w.result.p50_ms,
                    "p99_ms": w.result.p99_ms,
                    "errors": w.result.errors,
                    "requests": w.result.requests,
                    "wrapped": w.result.wrapped,
                    "server_ms": w.cpu_ms("server"),
                    "database_ms": w.cpu_ms("database"),
                    "other_share": w.cost.share("other"),
                }
            )
        found.append(row)
    return found


def render(report: PeerReport) -> str:
    peer = report.peer.upper()
    header = (
        f"{'load':<11} {'rotor req/s':>11} {peer + ' req/s':>10} {'÷ ' + peer:>7} "
        f"{'by CPU':>7} "
        f"{'p99 rotor':>9} {'p99 ' + peer:>8} {'err rotor':>9} {'err ' + peer:>8} "
        f"{'srv ms rotor':>12} {'srv ms ' + peer:>11} {'db ms rotor':>11} {'db ms ' + peer:>10}"
    )
    lines = [f"{report.title} ({CPUS} CPUs).", "", header, "-" * len(header)]
    for row in rows(report):
        ours, theirs = row[ROTOR], row[report.peer]
        ratio, by_cpu = row["ratio"], row["cpu_ratio"]

        def get(side: dict[str, Any] | None, key: str, form: str) -> str:
            return "-" if side is None else format(side[key], form)

        lines.append(
            f"{row['load']:<11} {get(ours, 'rps', ',.0f'):>11} {get(theirs, 'rps', ',.0f'):>10} "
            f"{'-' if ratio is None else format(ratio, '.2f'):>7} "
            f"{'-' if by_cpu is None else format(by_cpu, '.2f'):>7} "
            f"{get(ours, 'p99_ms', '.1f'):>9} {get(theirs, 'p99_ms', '.1f'):>8} "
            f"{get(ours, 'errors', 'd'):>9} {get(theirs, 'errors', 'd'):>8} "
            f"{get(ours, 'server_ms', '.3f'):>12} {get(theirs, 'server_ms', '.3f'):>11} "
            f"{get(ours, 'database_ms', '.3f'):>11} {get(theirs, 'database_ms', '.3f'):>10}"
        )
    busy = report.busy()
    lines += [f"note: {note}" for note in [*report.notes, *([busy] if busy else [])]]
    return "\n".join(lines)


def to_json(report: PeerReport) -> dict[str, Any]:
    return {
        "settings": report.settings,
        "peer": report.peer,
        "rows": rows(report),
        "windows": [
            {
                "server": w.topology,
                "load": w.load,
                "rps": w.result.rps,
                "p50_ms": w.result.p50_ms,
                "p90_ms": w.result.p90_ms,
                "p99_ms": w.result.p99_ms,
                "errors": w.result.errors,
                "non_2xx": w.result.non_2xx,
                "socket_errors": w.result.socket_errors,
                "requests": w.result.requests,
                "seconds": w.result.seconds,
                "wrapped": w.result.wrapped,
                "steal_ms": w.cost.steal_seconds * 1000,
                "cpu_ms_per_request": {
                    group: w.cpu_ms(group) for group in ("server", "database", "generator")
                },
                "cpu_share": {
                    group: w.cost.share(group)
                    for group in ("generator", "server", "database", "other")
                },
            }
            for w in report.windows
        ],
        "notes": report.notes,
        "busy": report.busy(),
    }


# -- django-oauth-toolkit: environment, project, seeding, server ----------------


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> dict[str, str]:
    """The peer's virtual environment, made if missing and upgraded to the latest
    releases; returns the installed versions."""
    if not venv_python().exists():
        log(f"creating {VENV}")
        VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    log("pip install --upgrade " + " ".join(PACKAGES))
    pip = subprocess.run(
        [str(venv_python()), "-m", "pip", "install", "--quiet", "--upgrade", *PACKAGES],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if pip.returncode != 0:
        raise SystemExit(f"pip install failed ({pip.returncode}):\n{pip.stdout}{pip.stderr}")
    probe = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [str(venv_python()), "-c", probe, *VERSIONS], check=True, capture_output=True, text=True
    ).stdout
    versions: dict[str, str] = json.loads(out)
    return versions


def django_database(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for a postgresql:// URL: host and port, or a
    socket folder (`?host=/path`, as the embedded server's URL has)."""
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": socket_dir(url) or parts.hostname or "",
        "PORT": str(parts.port or ""),
        # Persistent connections: each worker keeps its connection between
        # requests (Django's advice for production, "Persistent connections").
        "CONN_MAX_AGE": PERSISTENT_SECONDS,
    }


def settings_py(database: dict[str, Any], secret_key: str) -> str:
    return f'''"""Written by Rotor's bench (bench/peer.py); django-oauth-toolkit in production."""

SECRET_KEY = {secret_key!r}
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "oauth2_provider",
]
# The token and introspection views need none of sessions, messages or CSRF
# (DOT's views are csrf_exempt): the lightest stack, to DOT's advantage.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "dotbench.urls"
WSGI_APPLICATION = "dotbench.wsgi.application"
DATABASES = {{"default": {database!r}}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
OAUTH2_PROVIDER = {OAUTH2_PROVIDER!r}
'''


URLS_PY = """from django.http import HttpResponse
from django.urls import include, path

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("health/", lambda request: HttpResponse("ok")),
]
"""

WSGI_PY = """import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dotbench.settings")
application = get_wsgi_application()
"""

MANAGE_PY = """import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dotbench.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""

# `--port N` (what bench.servers.launch reads) becomes gunicorn's --bind; the
# process becomes gunicorn's master (exec), whose tree the sampler follows.
SERVE_PY = """import os
import sys

args = sys.argv[1:]
at = args.index("--port")
port = args[at + 1]
del args[at : at + 2]
gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
os.execv(gunicorn, [gunicorn, "--bind", "127.0.0.1:" + port, *args])
"""

# Run by `manage.py shell -c "import seed; seed.main()"`: DOT's own models, bulk
# inserts (their pre_save fills token_checksum), tokens as oauthlib makes them.
SEED_PY = '''import json
import os
import secrets
import uuid
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.utils import timezone
from oauthlib.common import generate_token

from oauth2_provider.models import AccessToken, Application, RefreshToken

BATCH = 5000


def accounts(users):
    User = get_user_model()
    hashed = make_password(secrets.token_urlsafe(16))  # once: nobody logs in
    User.objects.bulk_create(
        [User(username=f"bench-user-{i}", password=hashed) for i in range(users)]
    )
    found = {}
    for name, grant in (
        ("bench-app", Application.GRANT_PASSWORD),
        ("bench-gateway", Application.GRANT_CLIENT_CREDENTIALS),
    ):
        secret = secrets.token_urlsafe(32)
        app = Application.objects.create(
            name=name,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=grant,
            client_secret=secret,
            hash_client_secret=False,
        )
        found[name] = [app.client_id, secret]
    return found


def tokens(count, refresh):
    """`count` access tokens of users of bench-app, each with its live refresh
    token (a family of its own) when `refresh`; returns the presented values."""
    app = Application.objects.get(name="bench-app")
    users = list(get_user_model().objects.values_list("id", flat=True))
    expires = timezone.now() + timedelta(hours=1)
    presented = []
    for start in range(0, count, BATCH):
        size = min(BATCH, count - start)
        with transaction.atomic():
            access = AccessToken.objects.bulk_create(
                [
                    AccessToken(
                        user_id=users[(start + i) % len(users)],
                        application=app,
                        token=generate_token(),
                        expires=expires,
                        scope="read write",
                    )
                    for i in range(size)
                ]
            )
            if not refresh:
                presented += [a.token for a in access]
                continue
            made = RefreshToken.objects.bulk_create(
                [
                    RefreshToken(
                        user_id=a.user_id,
                        application=app,
                        access_token=a,
                        token=generate_token(),
                        token_family=uuid.uuid4(),
                    )
                    for a in access
                ]
            )
            presented += [r.token for r in made]
    return presented


def main():
    job = json.loads(os.environ["BENCH_SEED"])
    out = {}
    if job.get("users"):
        out["accounts"] = accounts(job["users"])
    for name, (count, refresh) in job.get("files", {}).items():
        path = os.path.join(job["folder"], name + ".txt")
        with open(path, "w") as f:
            f.write("\\n".join(tokens(count, refresh)) + "\\n")
        out[name] = path
    print("BENCH_SEED " + json.dumps(out))
'''


def basic(client_id: str, secret: str) -> str:
    """HTTP Basic as RFC 6749 2.3.1 has it (form-encoded, then base64)."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def gunicorn_workers(cpus: int = CPUS) -> int:
    """gunicorn's advice for sync workers: (2 x cores) + 1."""
    return 2 * cpus + 1


class DotProject:
    """The generated Django project, its database, and its gunicorn."""

    def __init__(self, folder: Path, url: str) -> None:
        self.folder = folder
        self.url = url
        package = folder / "dotbench"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        secret_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
        (package / "settings.py").write_text(settings_py(django_database(url), secret_key))
        (package / "urls.py").write_text(URLS_PY)
        (package / "wsgi.py").write_text(WSGI_PY)
        (folder / "manage.py").write_text(MANAGE_PY)
        (folder / "serve.py").write_text(SERVE_PY)
        (folder / "seed.py").write_text(SEED_PY)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(Path.home()),
            "DJANGO_SETTINGS_MODULE": "dotbench.settings",
            "PYTHONPATH": str(folder),
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def manage(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [str(venv_python()), "manage.py", *args],
            cwd=self.folder,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def migrate(self) -> None:
        self.manage("migrate", "--no-input", "-v", "0")

    def seed(
        self, *, users: int = 0, files: dict[str, tuple[int, bool]] | None = None
    ) -> dict[str, Any]:
        job = {"users": users, "files": files or {}, "folder": str(self.folder)}
        out = self.manage(
            "shell", "-c", "import seed; seed.main()", env={"BENCH_SEED": json.dumps(job)}
        )
        line = next(x for x in out.splitlines() if x.startswith("BENCH_SEED "))
        found: dict[str, Any] = json.loads(line[len("BENCH_SEED ") :])
        return found

    def start(self, workers: int, log_dir: Path) -> Server:
        command = [str(venv_python()), str(self.folder / "serve.py")]
        command += ["--port", str(free_port()), "--workers", str(workers)]
        command += ["--worker-class", "sync", "--chdir", str(self.folder)]
        command += ["--log-level", "warning", "dotbench.wsgi:application"]
        server = launch("dot", command, self.env, log_dir)
        wait_until(server, "GET", "/health/")
        return server


# -- the run ---------------------------------------------------------------------


class PeerRun(TopologyRun):
    """The main bench's set-up (database, Rotor's accounts), then Rotor and DOT
    side by side, each load on one and then the other."""

    def __init__(self, options: Options, pg: Postgres, work: Path) -> None:
        super().__init__(options, pg, work)
        self.pg.drop_database(self.stores.chain)  # no chain load here
        self.dot_database: str | None = None

    def count(self, rps: float, seconds: int) -> int:
        return max(math.ceil(rps * seconds * TOKEN_MARGIN), self.options.connections * 4)

    def measured(self, topology: Topology, load: str, run: wrk.Load) -> Window:
        """As the main bench measures (a CHECKPOINT first; wrk's own CPU sampled as
        the generator's), then the server idle again before the next load."""
        refused = self.pg.checkpoint()
        if refused and refused not in self.notes:
            self.notes.append(refused)
        log(f"measuring {load} against {topology.name} ({run.duration} s)")
        found = measure(f"{topology.name} {load}", run, topology.server, self.db_pids)
        if found.result.wrapped:
            self.notes.append(
                f"{topology.name} {load}: wrk ran out of distinct tokens ({found.result.wrapped}x)"
            )
        procs.settle(topology.everything)
        return Window(topology.name, load, found.result, found.cost)

    def mint_dot(
        self, project: DotProject, url: str, files: dict[str, tuple[int, bool]]
    ) -> dict[str, Path]:
        minted = {name: Path(path) for name, path in project.seed(files=files).items()}
        # Else autovacuum probably comes for the fresh rows in a later window
        # (Rotor's database CPU per rotation was 3 to 4 times higher in three
        # runs without this); a store in service has its statistics.
        asyncio.run(vacuum_analyze(url, DOT_TABLES))
        return minted

    def compare(self, report: PeerReport) -> None:
        o = self.options
        url = self.pg.url_of(self.stores.main)
        self.dot_database = self.pg.create_database("rotor_bench_dot")
        project = DotProject(self.work / "dot", self.pg.url_of(self.dot_database))
        log("DOT: manage.py migrate")
        project.migrate()
        log(f"DOT: two applications and {o.users} users")
        accounts = project.seed(users=o.users)["accounts"]
        dot_app, dot_gateway = (basic(*accounts[name]) for name in ("bench-app", "bench-gateway"))
        app, gateway = self.accounts.app.authorization, self.accounts.gateway.authorization
        workers = gunicorn_workers()
        log(f"starting rotor serve --workers {o.workers} and gunicorn --workers {workers}")
        rotor = start_rotor(self.env, o.workers, self.work)
        dot: Server | None = None
        try:
            dot = project.start(workers, self.work)
            ours = Topology(ROTOR, rotor.base_url, rotor.pids())
            theirs = Topology(DOT, dot.base_url, dot.pids())

            dot_url = self.pg.url_of(self.dot_database)
            files: dict[str, tuple[int, bool]] = {"dot-introspect": (o.introspect_tokens, False)}
            if o.warmup > 0:
                files["dot-refresh-warm"] = (self.count(DOT_FLOOR_RPS, o.warmup), True)
            log(f"DOT: minting {o.introspect_tokens:,} access tokens (+ warm-up refresh tokens)")
            minted = self.mint_dot(project, dot_url, files)

            # /refresh, each server's tokens sized by its own warm-up, or a floor.
            rps = ROTOR_FLOOR_RPS
            if o.warmup > 0:
                warm = self.tokens(url, rps, o.warmup)
                warmed = self.warm(rotor, self.wrk_load(ours, "refresh", warm, app, o.warmup))
                assert warmed is not None
                rps = max(rps, warmed.response_rps * WARM_MARGIN)
            data = self.tokens(url, rps, o.duration)
            refresh = self.wrk_load(ours, "refresh", data, app, o.duration)
            report.windows.append(self.measured(ours, "refresh", refresh))
            dot_rps = DOT_FLOOR_RPS
            if o.warmup > 0:
                warm_file = minted["dot-refresh-warm"]
                warmed = self.warm(
                    dot, self.wrk_load(theirs, "dot_refresh", warm_file, dot_app, o.warmup)
                )
                assert warmed is not None
                dot_rps = max(dot_rps, warmed.response_rps * WARM_MARGIN)
            more = {"dot-refresh": (self.count(dot_rps, o.duration), True)}
            log(f"DOT: minting {more['dot-refresh'][0]:,} refresh tokens")
            minted.update(self.mint_dot(project, dot_url, more))
            files.update(more)
            report.settings["tokens"] = {
                "rotor-refresh": len(data.read_text().split()),
                **{name: count for name, (count, _) in files.items()},
            }
            dot_tokens = minted["dot-refresh"]
            refresh = self.wrk_load(theirs, "dot_refresh", dot_tokens, dot_app, o.duration)
            report.windows.append(self.measured(theirs, "refresh", refresh))

            # /introspect: Rotor's mix of the main bench; DOT's access tokens.
            total = o.introspect_tokens
            families = self.seed_tokens(url, mint.families_for_mix(total))
            mix = mint.introspection_mix(rotor.base_url, self.accounts, families, total)
            if mix.active_in_sample < 1.0:
                self.notes.append(f"rotor: only {mix.active_in_sample:.0%} of a sample was active")
            report.settings["rotor_introspection_mix"] = {
                "user_access": mix.user_access,
                "service_access": mix.service_access,
                "refresh": mix.refresh,
            }
            data = self.lines("peer-mix", mix.tokens)
            introspect = self.wrk_load(ours, "introspect", data, gateway, o.duration)
            self.warm(rotor, introspect)
            report.windows.append(self.measured(ours, "introspect", introspect))
            introspect = self.wrk_load(
                theirs, "dot_introspect", minted["dot-introspect"], dot_gateway, o.duration
            )
            self.warm(dot, introspect)
            report.windows.append(self.measured(theirs, "introspect", introspect))
        finally:
            if dot is not None:
                dot.stop()
            rotor.stop()
        store = asyncio.run(dot_store(self.pg.url_of(self.dot_database)))
        report.settings["dot_store"] = store
        seeded = sum(count for count, refresh in files.values() if refresh)
        if store["refresh_tokens"] - seeded != store["revoked"]:
            self.notes.append(
                f"dot: {store['revoked']} refresh tokens revoked for "
                f"{store['refresh_tokens'] - seeded} issued: a family was revoked (reuse)"
            )
        report.settings["dot_server_log_tail"] = dot.log_tail(10) if dot is not None else ""

    def drop(self) -> None:
        super().drop()
        if self.dot_database is not None:
            self.pg.drop_database(self.dot_database)


DOT_TABLES = (
    "auth_user",
    "oauth2_provider_application",
    "oauth2_provider_accesstoken",
    "oauth2_provider_refreshtoken",
)


async def vacuum_analyze(url: str, tables: tuple[str, ...]) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("VACUUM ANALYZE " + ", ".join(tables))
    finally:
        await connection.close()


async def dot_store(url: str) -> dict[str, int]:
    """DOT's refresh tokens after the loads: each rotation revokes one and issues
    one, so revoked == issued unless reuse protection revoked a family; and the
    connections made to its database."""
    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT count(*) AS refresh_tokens, count(revoked) AS revoked, "
            "count(DISTINCT token_family) AS families FROM oauth2_provider_refreshtoken"
        )
        # Connections ever made to DOT's database (PostgreSQL 14+): about one per
        # gunicorn worker plus the set-up's when CONN_MAX_AGE keeps them.
        sessions = await connection.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await connection.close()
    assert row is not None
    return {**dict(row), "sessions": int(sessions or 0)}


def settings_of(options: Options, versions: dict[str, str]) -> dict[str, Any]:
    return {
        "peer": DOT,
        "versions": versions,
        "rotor_workers": options.workers,
        "gunicorn_workers": gunicorn_workers(),
        "gunicorn_worker_class": "sync",
        "oauth2_provider": OAUTH2_PROVIDER,
        "conn_max_age": PERSISTENT_SECONDS,
        "hash_client_secret": False,
        "connections": options.connections,
        "threads": options.threads,
        "duration": options.duration,
        "warmup": options.warmup,
        "cpus": CPUS,
        "introspect_tokens": options.introspect_tokens,
        "users": options.users,
    }


def uptime() -> str:
    found = shutil.which("uptime")
    if found is None:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return subprocess.run([found], capture_output=True, text=True).stdout.strip()


def main(options: Options, peer: str = DOT) -> int:
    if peer != DOT:
        print(f"unknown peer {peer!r}: only {DOT!r}", file=sys.stderr)
        return 2
    wrk.require_wrk()
    versions = ensure_venv()
    log("peer: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    report = PeerReport(settings_of(options, versions))
    report.settings["uptime_before"] = uptime()
    pg = Postgres.start()
    work = Path(tempfile.mkdtemp(prefix="rotor-bench-"))
    run: PeerRun | None = None
    try:
        run = PeerRun(options, pg, work)
        report.notes = run.notes
        run.compare(report)
    finally:
        if run is not None:
            run.drop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    report.settings["uptime_after"] = uptime()
    for w in report.windows:
        if w.result.errors:
            report.notes.append(
                f"{w.topology} {w.load}: {w.result.errors} errors "
                f"({w.result.non_2xx} non-2xx, {w.result.socket_errors} socket)"
            )
    print(render(report), flush=True)
    print(f"uptime before: {report.settings['uptime_before']}")
    print(f"uptime after:  {report.settings['uptime_after']}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    options.results.mkdir(parents=True, exist_ok=True)
    path = options.results / f"peer-dot-{stamp}{'-smoke' if options.smoke else ''}.json"
    path.write_text(json.dumps(to_json(report), indent=2) + "\n")
    print(f"\nResults: {path}")
    return 1 if options.strict and report.errors() else 0
