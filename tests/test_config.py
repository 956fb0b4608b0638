"""Settings.from_env (CONTRACT section 1): defaults, refusals, and no import-time reads."""

from __future__ import annotations

import base64
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import Argon2Params, ConfigError, Settings, log_level

ROOT = Path(__file__).resolve().parent.parent
ROTOR = ROOT / ".venv" / "bin" / "rotor"
DATABASE_URL = "postgresql://rotor@db.invalid:5432/rotor"
SECRET_BYTES = bytes(range(32))
SECRET = base64.urlsafe_b64encode(SECRET_BYTES).rstrip(b"=").decode()
ISSUER = "https://auth.example.com"
MINIMAL = {"DATABASE_URL": DATABASE_URL, "ROTOR_SECRET": SECRET, "ROTOR_ISSUER": ISSUER}

DURATIONS = [
    "ROTOR_ACCESS_TOKEN_TTL",
    "ROTOR_REFRESH_IDLE_TTL",
    "ROTOR_FAMILY_MAX_TTL",
    "ROTOR_REUSE_GRACE",
    "ROTOR_LOGIN_MAX_FAILURES",
    "ROTOR_LOGIN_WINDOW",
    "ROTOR_JWKS_MAX_AGE",
    "ROTOR_DB_TIMEOUT",
    "ROTOR_DPOP_WINDOW",
]
# Zero is meaningless (or dangerous) for these: a token that never lives, a window of nothing.
POSITIVE = [name for name in DURATIONS if name not in ("ROTOR_REUSE_GRACE", "ROTOR_JWKS_MAX_AGE")]


def from_env(**overrides: str) -> Settings:
    return Settings.from_env({**MINIMAL, **overrides})


def config_error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    return str(info.value)


# --- defaults ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("database_url", DATABASE_URL),
        ("secret", SECRET_BYTES),
        ("audience", (ISSUER,)),
        ("access_token_ttl", 300),
        ("refresh_idle_ttl", 604800),
        ("family_max_ttl", 2592000),
        ("reuse_grace", 0),
        ("signing_alg", "ES256"),
        ("login_max_failures", 10),
        ("login_window", 900),
        ("trusted_proxies", ()),
        ("jwks_max_age", 300),
        ("db_timeout", 5),
        ("db_pooler", "none"),
        ("dpop_window", 60),
        ("argon2", Argon2Params(time_cost=3, memory_kib=65536, parallelism=4)),
    ],
)
def test_default(attribute: str, expected: object) -> None:
    assert getattr(from_env(), attribute) == expected


@pytest.mark.parametrize(
    ("name", "attribute", "value"),
    [
        ("ROTOR_ACCESS_TOKEN_TTL", "access_token_ttl", 60),
        ("ROTOR_REFRESH_IDLE_TTL", "refresh_idle_ttl", 3600),
        ("ROTOR_FAMILY_MAX_TTL", "family_max_ttl", 86400),
        ("ROTOR_REUSE_GRACE", "reuse_grace", 10),
        ("ROTOR_LOGIN_MAX_FAILURES", "login_max_failures", 3),
        ("ROTOR_LOGIN_WINDOW", "login_window", 60),
        ("ROTOR_JWKS_MAX_AGE", "jwks_max_age", 30),
        ("ROTOR_DB_TIMEOUT", "db_timeout", 2),
        ("ROTOR_DPOP_WINDOW", "dpop_window", 5),
    ],
)
def test_duration_is_read(name: str, attribute: str, value: int) -> None:
    assert getattr(from_env(**{name: str(value)}), attribute) == value


def test_reuse_grace_zero_is_allowed() -> None:
    assert from_env(ROTOR_REUSE_GRACE="0").reuse_grace == 0


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_signing_alg_is_read(alg: str) -> None:
    assert from_env(ROTOR_SIGNING_ALG=alg).signing_alg == alg


def test_issuer_is_read() -> None:
    assert from_env(ROTOR_ISSUER="https://id.example.org/t/").issuer == "https://id.example.org/t/"


def test_audience_defaults_to_the_configured_issuer() -> None:
    settings = from_env(ROTOR_ISSUER="https://id.example.org")
    assert settings.audience == ("https://id.example.org",)


def test_audience_space_separated_keeps_order() -> None:
    settings = from_env(ROTOR_AUDIENCE="https://b.example https://a.example  urn:c")
    assert settings.audience == ("https://b.example", "https://a.example", "urn:c")


def test_audience_single() -> None:
    assert from_env(ROTOR_AUDIENCE="https://api.example").audience == ("https://api.example",)


def test_trusted_proxies_addresses_and_ranges() -> None:
    settings = from_env(ROTOR_TRUSTED_PROXIES="10.0.0.0/8, 192.168.1.7,2001:db8::/32")
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
    )


def test_secret_with_padding_is_accepted() -> None:
    padded = base64.urlsafe_b64encode(SECRET_BYTES).decode()
    assert from_env(ROTOR_SECRET=padded).secret == SECRET_BYTES


def test_secret_longer_than_32_bytes_is_accepted() -> None:
    raw = bytes(range(64))
    value = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert from_env(ROTOR_SECRET=value).secret == raw


# --- refusals: the message names the variable ---------------------------------------------


BAD_DURATIONS = [
    pytest.param(name, value, id=f"{name}={value}")
    for name in DURATIONS
    for value in ("abc", "1.5", "-1", "10s", "0x10")
] + [pytest.param(name, "0", id=f"{name}=0") for name in POSITIVE]


@pytest.mark.parametrize(("name", "value"), BAD_DURATIONS)
def test_bad_duration_is_refused(name: str, value: str) -> None:
    assert config_error({**MINIMAL, name: value}).startswith(f"{name}:")


# 10**15 s is about 31.7 million years: past the end of PostgreSQL's timestamp range, so
# the service cannot compute an expiry with it.
UNREPRESENTABLE = str(10**15)


@pytest.mark.parametrize(
    "name",
    [
        "ROTOR_ACCESS_TOKEN_TTL",
        "ROTOR_REFRESH_IDLE_TTL",
        "ROTOR_FAMILY_MAX_TTL",
        "ROTOR_LOGIN_WINDOW",
    ],
)
def test_duration_beyond_any_timestamp_is_refused(name: str) -> None:
    assert config_error({**MINIMAL, name: UNREPRESENTABLE}).startswith(f"{name}:")


@pytest.mark.parametrize("value", ["none", "transaction"])
def test_db_pooler_is_read(value: str) -> None:
    assert from_env(ROTOR_DB_POOLER=value).db_pooler == value


@pytest.mark.parametrize("value", ["session", "statement", "Transaction", "pgbouncer", "yes"])
def test_unknown_db_pooler_is_refused(value: str) -> None:
    message = config_error({**MINIMAL, "ROTOR_DB_POOLER": value})
    assert message == f"ROTOR_DB_POOLER: must be one of none, transaction, got {value!r}"


@pytest.mark.parametrize("value", ["HS256", "none", "es256", "ES384", "PS256"])
def test_unknown_signing_alg_is_refused(value: str) -> None:
    message = config_error({**MINIMAL, "ROTOR_SIGNING_ALG": value})
    assert message.startswith("ROTOR_SIGNING_ALG:")


SHORT_SECRET = base64.urlsafe_b64encode(bytes(31)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(SHORT_SECRET, id="31-bytes"),
        pytest.param("c2hvcnQ", id="5-bytes"),
        pytest.param(SECRET[:20] + " " + SECRET[20:], id="inner-space"),
        pytest.param(SECRET + "!", id="trailing-bang"),
        pytest.param("é" + SECRET, id="non-ascii"),
        pytest.param(
            "****" + SECRET,
            id="leading-stars",
        ),
    ],
)
def test_bad_secret_is_refused(value: str) -> None:
    assert config_error({**MINIMAL, "ROTOR_SECRET": value}).startswith("ROTOR_SECRET:")


def test_missing_database_url_is_refused() -> None:
    assert config_error({"ROTOR_SECRET": SECRET}).startswith("DATABASE_URL:")


def test_blank_database_url_is_refused() -> None:
    assert config_error({"DATABASE_URL": "  ", "ROTOR_SECRET": SECRET}).startswith("DATABASE_URL:")


def test_non_postgresql_database_url_is_refused() -> None:
    message = config_error({"DATABASE_URL": "mysql://u@h/db", "ROTOR_SECRET": SECRET})
    assert message.startswith("DATABASE_URL:")


def test_missing_secret_is_refused() -> None:
    assert config_error({"DATABASE_URL": DATABASE_URL}).startswith("ROTOR_SECRET:")


ISSUER_REQUIRED = (
    "ROTOR_ISSUER: required with DATABASE_URL: the URL clients reach Rotor at "
    "(the iss of every token), e.g. https://auth.example.com"
)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_issuer_is_required_with_a_database_url(value: str | None) -> None:
    """CONTRACT 1: no fallback to a guess (the embedded default's issuer is put in
    the environment by the CLI, see test_cli)."""
    env = {"DATABASE_URL": DATABASE_URL, "ROTOR_SECRET": SECRET}
    if value is not None:
        env["ROTOR_ISSUER"] = value
    assert config_error(env) == ISSUER_REQUIRED


def test_commands_that_sign_nothing_need_no_issuer() -> None:
    env = {"DATABASE_URL": DATABASE_URL, "ROTOR_SECRET": SECRET}
    settings = Settings.from_env(env, issuer_required=False)
    assert (settings.issuer, settings.audience, settings.database_url) == ("", (), DATABASE_URL)


def test_an_issuer_given_to_a_command_that_signs_nothing_is_still_checked() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**MINIMAL, "ROTOR_ISSUER": "ftp://nope"}, issuer_required=False)
    assert str(info.value).startswith("ROTOR_ISSUER:")


@pytest.mark.parametrize(
    "value", [SHORT_SECRET, "c2hvcnQ", SECRET + "!", "\u00e9" + SECRET, SECRET[:20] + " " + SECRET]
)
def test_a_refused_secret_is_never_echoed(value: str) -> None:
    message = config_error({**MINIMAL, "ROTOR_SECRET": value})
    assert (message.startswith("ROTOR_SECRET:"), value.strip()[:8] in message) == (True, False)


@pytest.mark.parametrize("value", ["not-an-ip", "10.0.0.0/33", "10.0.0.1;10.0.0.2", "::g"])
def test_bad_trusted_proxies_are_refused(value: str) -> None:
    message = config_error({**MINIMAL, "ROTOR_TRUSTED_PROXIES": value})
    assert message.startswith("ROTOR_TRUSTED_PROXIES:")


def test_trusted_proxies_trailing_comma_is_an_absent_item() -> None:
    settings = from_env(ROTOR_TRUSTED_PROXIES="10.0.0.1,")
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.1/32"),)


@pytest.mark.parametrize("value", ["ftp://auth.example", "auth.example", "localhost:8000"])
def test_non_http_issuer_is_refused(value: str) -> None:
    assert config_error({**MINIMAL, "ROTOR_ISSUER": value}).startswith("ROTOR_ISSUER:")


@pytest.mark.parametrize(
    "value", ["https://", "https://auth.example?x=1", "https://auth.example#f"]
)
def test_issuer_without_host_or_with_query_or_fragment_is_refused(value: str) -> None:
    assert config_error({**MINIMAL, "ROTOR_ISSUER": value}).startswith("ROTOR_ISSUER:")


def test_first_bad_variable_stops_everything() -> None:
    """A half-valid configuration is refused as a whole: a valid-looking rest changes nothing."""
    env = {**MINIMAL, "ROTOR_ISSUER": "https://ok.example", "ROTOR_LOGIN_WINDOW": "-5"}
    assert config_error(env).startswith("ROTOR_LOGIN_WINDOW:")


# --- the entry point refuses to start; imports read nothing ------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ROTOR_") and key != "DATABASE_URL"
    }
    env.update(extra)
    return env


def test_serve_with_a_bad_duration_does_not_start(unused_tcp_port: int) -> None:
    env = _clean_env(**MINIMAL, ROTOR_ACCESS_TOKEN_TTL="abc")
    result = subprocess.run(
        [str(ROTOR), "serve", "--port", str(unused_tcp_port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert (result.returncode, "ROTOR_ACCESS_TOKEN_TTL" in result.stderr) == (2, True), (
        result.stderr
    )


IMPORT_PROBE = """
import os, sys
from collections.abc import MutableMapping

SERVICE = os.path.join(os.getcwd(), "service") + os.sep
PLUMBING = ("_collections_abc>", "_collections_abc.py", "os.py")

class Recorder(MutableMapping):
    \"\"\"os.environ, noting every Rotor variable that code under service/ reads
    (a library copying the whole environment at import is not Rotor's doing).\"\"\"
    def __init__(self, real):
        self.real, self.read = real, []
    def __getitem__(self, key):
        frame = sys._getframe(1)
        while frame.f_code.co_filename.endswith(PLUMBING):
            frame = frame.f_back
        if frame.f_code.co_filename.startswith(SERVICE):
            self.read.append(key)
        return self.real[key]
    def __setitem__(self, key, value):
        self.real[key] = value
    def __delitem__(self, key):
        del self.real[key]
    def __iter__(self):
        return iter(self.real)
    def __len__(self):
        return len(self.real)

recorder = Recorder(os.environ)
os.environ = recorder
import service.config, service.app, service.cli  # noqa
print(sorted(set(recorder.read)))
# Control: the recorder does see a read made on purpose.
try:
    service.app.app_from_env()
except service.config.ConfigError:
    pass
print(bool(recorder.read))
"""


def test_importing_the_service_reads_no_configuration() -> None:
    env = _clean_env(
        DATABASE_URL="mysql://not-postgres",
        ROTOR_SECRET="short",
        ROTOR_ACCESS_TOKEN_TTL="abc",
        ROTOR_SIGNING_ALG="HS256",
        ROTOR_ISSUER="ftp://nope",
    )
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout.split()) == (0, ["[]", "True"]), result.stderr


@pytest.mark.parametrize(
    ("raw", "level"), [("", "INFO"), ("debug", "DEBUG"), ("Warning", "WARNING")]
)
def test_log_level_is_read_in_any_letter_case(raw: str, level: str) -> None:
    assert log_level({"ROTOR_LOG_LEVEL": raw}) == level


def test_an_unknown_log_level_is_a_configuration_error_naming_it() -> None:
    with pytest.raises(ConfigError) as info:
        log_level({"ROTOR_LOG_LEVEL": "verbose"})
    assert str(info.value) == (
        "ROTOR_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'VERBOSE'"
    )
