"""The deployment files (deploy/) agree with each other and with the code, checked
without a container engine or a network: every YAML file parses; the port of
`rotor serve` is the containerPort, the probes' port, HAProxy's and the
Dockerfile's; the probes ask for routes the app serves; every `ROTOR_*` and
`DATABASE_URL` named is one the settings read, and the values given parse; the
replicas go through PgBouncer with ROTOR_DB_POOLER=transaction while the
migration goes to PostgreSQL itself; the shutdown timings fit HAProxy's health
check and each other.

What is derived from the code rather than copied: the variable names (read off
`Settings.from_env` as it runs), the serve command's options (the CLI's own
parser), the routes (`create_app`), the graceful-shutdown bound (`service/cli.py`),
and HAProxy's and PgBouncer's numbers (the shipped files).

`haproxy -c` runs on the shipped haproxy.cfg where HAProxy is installed; where it
is not, that one check is skipped with the line saying what installs it, and
fails instead under ROTOR_SCALEOUT_TEST=required (.ci/run)."""

from __future__ import annotations

import configparser
import ipaddress
import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.app import create_app
from service.cli import parser
from service.config import ConfigError, Settings, db_pooler, log_level
from tests import scaleout
from tests.test_docs import has_heading, relative_links

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.cfg"
PGBOUNCER_INI = DEPLOY / "pgbouncer" / "pgbouncer.ini"
DOCKERFILE = ROOT / "Dockerfile"
REQUIRED = os.environ.get("ROTOR_SCALEOUT_TEST") == "required"

REPLICAS = ("rotor-1", "rotor-2", "rotor-3")
# What the images read (their documentation): official haproxy's command,
# edoburu/pgbouncer's command (`pgbouncer /etc/pgbouncer/pgbouncer.ini`).
HAPROXY_IMAGE_CONFIG = "/usr/local/etc/haproxy/haproxy.cfg"
PGBOUNCER_IMAGE_CONFIG = "/etc/pgbouncer/pgbouncer.ini"
# What a container binds so that others reach it.
EVERY_ADDRESS = "0.0.0.0"  # noqa: S104
# PostgreSQL's default superuser_reserved_connections.
SUPERUSER_RESERVED = 3

NAMED_VARIABLE = re.compile(r"\b(?:ROTOR_[A-Z0-9_]*[A-Z0-9]|DATABASE_URL)\b")
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
# The values given in place of the operator's: compose's ${...} and the Secret's <...>.
HOST_ENV = {"POSTGRES_PASSWORD": "Pw-for_the-test", "ROTOR_SECRET": secrets.token_urlsafe(32)}
PASSWORD_PLACEHOLDER = "<password>"


# ---- what the code says -------------------------------------------------------


class Recording(dict[str, str]):
    """An environment that notes every name looked up in it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)


def settings_variables() -> set[str]:
    """Every variable Settings.from_env (and the log level beside it) reads."""
    env = Recording(
        {
            "DATABASE_URL": "postgresql://rotor@127.0.0.1/rotor",
            "ROTOR_SECRET": secrets.token_urlsafe(32),
            "ROTOR_ISSUER": "https://auth.example.com",
        }
    )
    Settings.from_env(env)
    log_level(env)
    return env.read


SETTINGS_VARIABLES = settings_variables()


def graceful_shutdown_bound() -> int:
    """Seconds `rotor serve` gives the requests in flight after the delay."""
    found = re.search(r"timeout_graceful_shutdown=(\d+)", (ROOT / "service/cli.py").read_text())
    assert found, "service/cli.py passes uvicorn no timeout_graceful_shutdown"
    return int(found[1])


def served_routes() -> dict[str, set[str]]:
    app = create_app(Settings(database_url="postgresql://rotor@127.0.0.1/rotor", secret=b"0" * 32))
    return {route.path: set(getattr(route, "methods", ())) for route in app.routes}


def first(pattern: str, text: str) -> str:
    """The first group of the first match of `pattern` (multiline) in `text`."""
    found = re.search(pattern, text, re.M)
    assert found, pattern
    return found[1]


def serve_options(command: list[str]) -> Any:
    """`rotor serve ...` as the CLI reads it."""
    assert command[:2] == ["rotor", "serve"], command
    return parser().parse_args(command[1:])


# ---- what the shipped HAProxy and PgBouncer files say -------------------------


def haproxy_text() -> str:
    return HAPROXY_CFG.read_text()


def haproxy_defaults() -> dict[str, str]:
    """Each `${ROTOR_...-default}` of haproxy.cfg."""
    return dict(re.findall(r"\$\{(ROTOR_[A-Z0-9_]+)-([^}]*)\}", haproxy_text()))


def haproxy_servers() -> dict[str, str]:
    """server name -> the default address of its variable."""
    defaults = haproxy_defaults()
    servers = re.findall(r"^\s*server\s+(\S+)\s+\"\$\{(ROTOR_[A-Z0-9_]+)-", haproxy_text(), re.M)
    return {name: defaults[variable] for name, variable in servers}


def seconds(value: str) -> float:
    found = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert found, value
    return int(found[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 0.001}[found[2]]


def haproxy_takes_out_after() -> float:
    """inter x fall of the replicas' health check, in seconds."""
    line = re.search(r"^\s*default-server\s+(.*)$", haproxy_text(), re.M)
    assert line, "haproxy.cfg has no default-server line"
    words = line[1].split()
    option = {words[i]: words[i + 1] for i in range(len(words) - 1)}
    return seconds(option["inter"]) * int(option["fall"])


def pgbouncer() -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"))
    ini.read_string(PGBOUNCER_INI.read_text())
    return ini


def pgbouncer_database(name: str) -> dict[str, str]:
    """[databases] name = host=... port=... -> its key=value pairs."""
    return dict(item.split("=", 1) for item in pgbouncer()["databases"][name].split())


# ---- compose -------------------------------------------------------------------


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        given = env.get(name)
        if op in (":?", "?") and (given is None or (op == ":?" and not given)):
            raise LookupError(f"{name}: {arg}")
        if (op == ":-" and not given) or (op == "-" and given is None):
            return arg
        return given or ""

    return INTERPOLATION.sub(one, value)


def compose_raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = interpolate(compose_raw(), HOST_ENV)
    return loaded


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def environment(definition: Mapping[str, Any]) -> dict[str, str]:
    env = definition.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def volume(definition: Mapping[str, Any], target: str) -> tuple[Path, str]:
    """The host file mounted at `target` (resolved from deploy/), and the mode."""
    for entry in definition.get("volumes", []):
        source, mounted, *mode = entry.split(":")
        if mounted == target:
            return (DEPLOY / source).resolve(), (mode or ["rw"])[0]
    raise AssertionError(f"nothing mounted at {target}: {definition.get('volumes')}")


# ---- kubernetes ----------------------------------------------------------------


def kubernetes() -> dict[str, dict[str, Any]]:
    """kind -> object, over every file of deploy/kubernetes/."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in objects, f"two {document['kind']}s"
            objects[document["kind"]] = document
    return objects


def container(pod_spec: Mapping[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec["containers"]
    found: dict[str, Any] = only
    return found


def secret_values() -> dict[str, str]:
    """The Secret's values with the operator's placeholders filled in."""
    values = dict(kubernetes()["Secret"]["stringData"])
    values["rotor-secret"] = HOST_ENV["ROTOR_SECRET"]
    return {
        key: value.replace(PASSWORD_PLACEHOLDER, HOST_ENV["POSTGRES_PASSWORD"])
        for key, value in values.items()
    }


def pod_environment(spec: Mapping[str, Any]) -> dict[str, str]:
    """A container's env as the pod would see it."""
    secret = kubernetes()["Secret"]
    values = secret_values()
    env: dict[str, str] = {}
    for item in spec.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            reference = item["valueFrom"]["secretKeyRef"]
            assert reference["name"] == secret["metadata"]["name"]
            env[item["name"]] = values[reference["key"]]
    return env


def named_port(spec: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [item["containerPort"] for item in spec["ports"] if item.get("name") == port]
    assert isinstance(number, int)
    return number


# ---- every file parses, every variable is the code's ---------------------------


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def test_the_expected_yaml_files_exist() -> None:
    assert [path.relative_to(DEPLOY).as_posix() for path in yaml_files()] == [
        "compose.yaml",
        "kubernetes/deployment.yaml",
        "kubernetes/kustomization.yaml",
        "kubernetes/migrate-job.yaml",
        "kubernetes/secret.yaml",
        "kubernetes/service.yaml",
    ]


@pytest.mark.parametrize("path", yaml_files(), ids=lambda path: path.name)
def test_every_yaml_file_parses(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents
    assert all(isinstance(document, dict) for document in documents)


def test_kubernetes_objects_and_kustomization() -> None:
    objects = kubernetes()
    assert sorted(objects) == ["Deployment", "Job", "Kustomization", "Secret", "Service"]
    assert objects["Deployment"]["apiVersion"] == "apps/v1"
    assert objects["Job"]["apiVersion"] == "batch/v1"
    assert objects["Secret"]["apiVersion"] == objects["Service"]["apiVersion"] == "v1"
    assert objects["Kustomization"]["resources"] == ["service.yaml", "deployment.yaml"]
    assert all((KUBERNETES / name).is_file() for name in objects["Kustomization"]["resources"])


def test_the_settings_variables_are_read_off_the_code() -> None:
    assert {"DATABASE_URL", "ROTOR_SECRET", "ROTOR_ISSUER", "ROTOR_DB_POOLER"} <= SETTINGS_VARIABLES
    assert {
        "ROTOR_SHUTDOWN_DELAY",
        "ROTOR_TRUSTED_PROXIES",
        "ROTOR_LOG_LEVEL",
    } <= SETTINGS_VARIABLES
    assert "ROTOR_REPLICA_1" not in SETTINGS_VARIABLES


@pytest.mark.parametrize(
    "path",
    [COMPOSE, *sorted(KUBERNETES.glob("*.yaml"))],
    ids=lambda path: path.relative_to(DEPLOY).as_posix(),
)
def test_every_variable_named_is_one_the_code_reads(path: Path) -> None:
    # compose.yaml may name haproxy.cfg's own variables (in comments, or to set them).
    allowed = SETTINGS_VARIABLES | (set(haproxy_defaults()) if path == COMPOSE else set())
    named = set(NAMED_VARIABLE.findall(path.read_text()))
    assert named - allowed == set()
    assert "DATABASE_URL" in named or path.name in ("service.yaml", "kustomization.yaml")


def test_the_variables_set_are_settings() -> None:
    for name in ("migrate", *REPLICAS):
        assert set(environment(service(name))) <= SETTINGS_VARIABLES, name
    objects = kubernetes()
    for kind in ("Deployment", "Job"):
        spec = container(objects[kind]["spec"]["template"]["spec"])
        assert {item["name"] for item in spec["env"]} <= SETTINGS_VARIABLES, kind


# ---- compose -------------------------------------------------------------------


def test_compose_services() -> None:
    assert sorted(compose()["services"]) == sorted(
        ["postgres", "pgbouncer", "migrate", *REPLICAS, "haproxy"]
    )
    # One definition (a YAML anchor) for the three replicas.
    replicas = [compose_raw()["services"][name] for name in REPLICAS]
    assert replicas[0] == replicas[1] == replicas[2]
    assert replicas[0]["image"] == compose_raw()["services"]["migrate"]["image"] == "rotor:local"
    assert replicas[0]["build"] == {"context": "..", "dockerfile": "Dockerfile"}
    assert (DEPLOY / ".." / "Dockerfile").resolve() == DOCKERFILE


def test_compose_needs_the_secret_and_the_password_from_outside() -> None:
    for missing in ("ROTOR_SECRET", "POSTGRES_PASSWORD"):
        given = {key: value for key, value in HOST_ENV.items() if key != missing}
        with pytest.raises(LookupError, match=missing):
            interpolate(compose_raw(), given)
    assert HOST_ENV["ROTOR_SECRET"] not in COMPOSE.read_text()


def test_compose_replicas_settings_parse() -> None:
    for name in REPLICAS:
        settings = Settings.from_env(environment(service(name)))
        assert settings.db_pooler == "transaction"
        assert settings.issuer == "http://localhost:8080"
        assert (
            settings.secret
            == Settings.from_env(environment(service("migrate")), issuer_required=False).secret
        )
        assert settings.shutdown_delay == 5
        assert settings.trusted_proxies == (ipaddress.ip_network("172.28.0.100/32"),)


def test_compose_replicas_trust_exactly_haproxy() -> None:
    haproxy = service("haproxy")
    address = ipaddress.ip_address(haproxy["networks"]["rotor"]["ipv4_address"])
    (subnet,) = [item["subnet"] for item in compose()["networks"]["rotor"]["ipam"]["config"]]
    assert address in ipaddress.ip_network(subnet)
    for name in REPLICAS:
        trusted = Settings.from_env(environment(service(name))).trusted_proxies
        assert [address in network for network in trusted] == [True]
        assert service(name)["networks"] == ["rotor"]


def test_compose_ports_agree() -> None:
    options = serve_options(service("rotor-1")["command"])
    assert (options.host, options.port, options.workers) == (EVERY_ADDRESS, 8000, 2)
    # HAProxy's servers are the replicas, by compose name, at the serve port.
    assert haproxy_servers() == {name: f"{name}:{options.port}" for name in REPLICAS}
    # HAProxy's public port is the one compose publishes.
    lb_port = haproxy_defaults()["ROTOR_LB_BIND"].rsplit(":", 1)[1]
    assert lb_port == "8080"
    assert service("haproxy")["ports"] == [f"{lb_port}:{lb_port}"]


def test_dockerfile_agrees_with_the_serve_command() -> None:
    text = DOCKERFILE.read_text()
    cmd = json.loads(first(r"^CMD (\[.*\])$", text))
    assert cmd == service("rotor-1")["command"]
    assert first(r"^EXPOSE (\d+)$", text) == "8000"
    healthcheck = re.search(r"urlopen\('http://127\.0\.0\.1:(\d+)(/[^']*)'", text)
    assert healthcheck
    assert (healthcheck[1], healthcheck[2]) == ("8000", "/health/ready")


def test_compose_replicas_go_through_pgbouncer() -> None:
    ini = pgbouncer()["pgbouncer"]
    for name in REPLICAS:
        env = environment(service(name))
        url = urlsplit(env["DATABASE_URL"])
        assert (url.hostname, url.port, url.path) == (
            "pgbouncer",
            int(ini["listen_port"]),
            "/rotor",
        )
        assert url.path.lstrip("/") in pgbouncer()["databases"]
        assert env["ROTOR_DB_POOLER"] == "transaction"
        assert service(name)["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "pgbouncer": {"condition": "service_healthy"},
        }
    assert ini["listen_port"] == "6432"


def test_compose_migrate_goes_to_postgres_directly() -> None:
    migrate = service("migrate")
    env = environment(migrate)
    url = urlsplit(env["DATABASE_URL"])
    server = pgbouncer_database("rotor")
    assert (url.hostname, url.port, url.path) == ("postgres", 5432, "/rotor")
    assert (server["host"], int(server["port"]), server["dbname"]) == ("postgres", 5432, "rotor")
    assert "ROTOR_DB_POOLER" not in env
    assert db_pooler(env) == "none"
    assert migrate["command"] == ["rotor", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["healthcheck"] == {"disable": True}
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    # The other commands run through this service need no issuer (create-client ...).
    Settings.from_env(env, issuer_required=False)


def test_compose_postgres() -> None:
    postgres = service("postgres")
    assert postgres["image"] == "postgres:15"
    env = environment(postgres)
    assert (env["POSTGRES_USER"], env["POSTGRES_DB"]) == ("rotor", "rotor")
    assert env["POSTGRES_PASSWORD"] == HOST_ENV["POSTGRES_PASSWORD"]
    assert postgres["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert "pgdata" in compose()["volumes"]
    assert postgres["healthcheck"]["test"] == [
        "CMD", "pg_isready", "-h", "127.0.0.1", "-p", "5432", "-U", "rotor", "-d", "rotor"
    ]  # fmt: skip
    for name in ("migrate", *REPLICAS):
        url = urlsplit(environment(service(name))["DATABASE_URL"])
        assert (url.username, url.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])


def test_compose_pgbouncer_runs_the_shipped_ini() -> None:
    definition = service("pgbouncer")
    assert definition["image"].startswith("edoburu/pgbouncer:")
    assert volume(definition, PGBOUNCER_IMAGE_CONFIG) == (PGBOUNCER_INI, "ro")
    # No DB_* variables: the image's entry point then leaves the files alone.
    assert "environment" not in definition
    (userlist,) = definition["configs"]
    assert (
        userlist["target"] == pgbouncer()["pgbouncer"]["auth_file"] == "/etc/pgbouncer/userlist.txt"
    )
    content = compose()["configs"][userlist["source"]]["content"]
    assert content == f'"rotor" "{HOST_ENV["POSTGRES_PASSWORD"]}"\n'
    assert definition["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "6432" in definition["healthcheck"]["test"]


def test_compose_haproxy_runs_the_shipped_cfg() -> None:
    definition = service("haproxy")
    assert definition["image"] == "haproxy:2.6"
    assert volume(definition, HAPROXY_IMAGE_CONFIG) == (HAPROXY_CFG, "ro")
    # Its defaults are compose's names: nothing to set.
    assert "environment" not in definition


def test_compose_shutdown_timings() -> None:
    takes_out = haproxy_takes_out_after()
    assert takes_out == 2.0  # inter 1s x fall 2
    for name in REPLICAS:
        delay = Settings.from_env(environment(service(name))).shutdown_delay
        assert delay == 5
        assert delay > takes_out
        grace = seconds(service(name)["stop_grace_period"])
        assert grace == 20
        assert grace > delay + graceful_shutdown_bound()


def test_pgbouncer_is_in_transaction_mode() -> None:
    ini = pgbouncer()["pgbouncer"]
    assert ini["pool_mode"] == "transaction"
    assert ini["auth_type"] == "scram-sha-256"


def test_capacity_of_the_compose_layout() -> None:
    """replicas x workers x ROTOR_DB_POOL_SIZE client connections fit PgBouncer's
    max_client_conn; its server connections (pool + reserve) and the migration's
    one fit PostgreSQL's max_connections less the superuser's reserve."""
    ini = pgbouncer()["pgbouncer"]
    clients = 0
    for name in REPLICAS:
        workers = serve_options(service(name)["command"]).workers
        clients += workers * Settings.from_env(environment(service(name))).db_pool_size
    assert clients == 60
    assert clients <= int(ini["max_client_conn"]) == 1000
    servers = int(ini["default_pool_size"]) + int(ini["reserve_pool_size"])
    assert servers == 25
    command = service("postgres")["command"]
    assert command == ["postgres", "-c", "max_connections=100"]
    max_connections = int(command[2].split("=")[1])
    assert servers + 1 <= max_connections - SUPERUSER_RESERVED


# ---- kubernetes ----------------------------------------------------------------


def deployment_spec() -> dict[str, Any]:
    return container(kubernetes()["Deployment"]["spec"]["template"]["spec"])


def test_kubernetes_deployment_ports_and_probes() -> None:
    objects = kubernetes()
    assert objects["Deployment"]["spec"]["replicas"] == 3
    spec = deployment_spec()
    options = serve_options(spec["command"])
    assert (options.host, options.port, options.workers) == (EVERY_ADDRESS, 8000, 2)
    assert spec["ports"] == [{"name": "http", "containerPort": options.port, "protocol": "TCP"}]
    routes = served_routes()
    for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
        check = spec[probe]["httpGet"]
        assert check["path"] == path
        assert "GET" in routes[path]
        assert named_port(spec, check["port"]) == options.port
    # The same port as compose's replicas and haproxy.cfg's defaults.
    assert options.port == serve_options(service("rotor-1")["command"]).port
    assert {address.rsplit(":", 1)[1] for address in haproxy_servers().values()} == {"8000"}


def test_kubernetes_service_targets_the_pods() -> None:
    objects = kubernetes()
    service_spec = objects["Service"]["spec"]
    (port,) = service_spec["ports"]
    assert named_port(deployment_spec(), port["targetPort"]) == 8000
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    job_labels = objects["Job"]["spec"]["template"]["metadata"]["labels"]
    assert service_spec["selector"].items() <= pod_labels.items()
    assert not service_spec["selector"].items() <= job_labels.items()
    assert objects["Deployment"]["spec"]["selector"]["matchLabels"] == service_spec["selector"]


def test_kubernetes_deployment_settings_parse() -> None:
    env = pod_environment(deployment_spec())
    settings = Settings.from_env(env)
    assert settings.db_pooler == "transaction"
    assert settings.issuer == "https://auth.example.com"
    assert settings.shutdown_delay == 5
    assert settings.hash_concurrency == 1
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)
    url = urlsplit(env["DATABASE_URL"])
    assert (url.hostname, url.port, url.path) == (
        "pgbouncer",
        int(pgbouncer()["pgbouncer"]["listen_port"]),
        "/rotor",
    )


def test_kubernetes_secret_placeholders_never_run() -> None:
    stored = kubernetes()["Secret"]["stringData"]
    assert sorted(stored) == ["database-url", "database-url-direct", "rotor-secret"]
    env = {**pod_environment(deployment_spec()), "ROTOR_SECRET": stored["rotor-secret"]}
    with pytest.raises(ConfigError, match="ROTOR_SECRET"):
        Settings.from_env(env)
    assert all(
        PASSWORD_PLACEHOLDER in stored[key] for key in ("database-url", "database-url-direct")
    )


def test_kubernetes_migration_job_goes_to_postgres_directly() -> None:
    objects = kubernetes()
    pod = objects["Job"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    spec = container(pod)
    assert spec["command"] == ["rotor", "migrate"]
    assert spec["image"] == deployment_spec()["image"]
    env = pod_environment(spec)
    assert list(env) == ["DATABASE_URL"]
    assert db_pooler(env) == "none"
    url = urlsplit(env["DATABASE_URL"])
    server = pgbouncer_database("rotor")
    assert (url.hostname, url.port, url.path) == (server["host"], int(server["port"]), "/rotor")
    assert url.hostname == "postgres"


def test_kubernetes_shutdown_timings() -> None:
    pod = kubernetes()["Deployment"]["spec"]["template"]["spec"]
    spec = container(pod)
    command = spec["lifecycle"]["preStop"]["exec"]["command"]
    assert command == ["sleep", "5"]
    pre_stop = int(command[1])
    delay = Settings.from_env(pod_environment(spec)).shutdown_delay
    grace = pod["terminationGracePeriodSeconds"]
    assert grace == 30
    assert grace > pre_stop + delay + graceful_shutdown_bound()
    # A pod leaving must leave HAProxy's rotation too, were one in front.
    assert delay > haproxy_takes_out_after()


def test_kubernetes_runs_as_the_image_user() -> None:
    uid = int(first(r"--uid (\d+)", DOCKERFILE.read_text()))
    for kind in ("Deployment", "Job"):
        pod = kubernetes()[kind]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == uid == 10001
        assert pod["securityContext"]["runAsNonRoot"] is True


# ---- the READMEs' links --------------------------------------------------------


def readmes() -> Iterator[Path]:
    yield DEPLOY / "README.md"
    yield KUBERNETES / "README.md"


@pytest.mark.parametrize(
    "readme", list(readmes()), ids=lambda path: path.relative_to(ROOT).as_posix()
)
def test_readme_links_resolve(readme: Path) -> None:
    links = relative_links(readme.read_text(encoding="utf-8"))
    assert links
    for link in links:
        target, _, anchor = link.partition("#")
        path = (readme.parent / target).resolve() if target else readme
        assert path.exists(), link
        if anchor:
            assert has_heading(path, anchor), link


# ---- haproxy -c ----------------------------------------------------------------


def test_haproxy_accepts_the_shipped_cfg() -> None:
    haproxy = scaleout.program("haproxy")
    if haproxy is None:
        line = (
            "haproxy -c (tests/test_deploy.py) did not run: missing haproxy; "
            f"install with: {scaleout.INSTALL}"
        )
        if REQUIRED:
            pytest.fail(line, pytrace=False)
        pytest.skip(line)
    env = {
        **os.environ,
        "ROTOR_LB_BIND": f"127.0.0.1:{scaleout.free_port()}",
        "ROTOR_LB_STATS_BIND": f"127.0.0.1:{scaleout.free_port()}",
        **{f"ROTOR_REPLICA_{i}": f"127.0.0.1:{scaleout.free_port()}" for i in (1, 2, 3)},
    }
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY_CFG)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Configuration file is valid" in checked.stdout + checked.stderr
