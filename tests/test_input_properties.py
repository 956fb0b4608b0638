"""Properties of input handling (hypothesis): the strict form parser, HTTP Basic
client credentials, scopes, and /token and /refresh over HTTP.

The parsers are tested as functions (no database): for any input they either
give their documented result or raise their documented error, never another
exception (an exception of another type is a 500 at the edge). The HTTP test
sends arbitrary form and JSON bodies with valid client credentials to Rotor
served in-process (litestar's sync TestClient, lifespan included, on the
test's fresh database) and checks that no answer is a 5xx and that every 4xx
is an RFC 6749 5.2 body.

Every test is derandomized (same examples each run, no example database), so a
failure reproduces and a strict xfail stays an xfail.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from service.accounts.clients import Credentials, create_client
from service.app import create_app
from service.config import Settings
from service.errors import InvalidClient, InvalidRequest, InvalidScope
from service.http.basic import parse_basic, presented_credentials
from service.http.forms import FORM_TYPE, parse_form, parse_pairs
from service.tokens.scopes import grant_scope, is_scope_token, requested_scopes
from tests.helpers import ALL_GRANTS, basic

PROPERTIES = settings(max_examples=200, deadline=None, derandomize=True, database=None)

# Text without NUL (which the parser refuses on purpose) and without surrogates
# (which cannot be encoded to UTF-8, so no client can send them).
UTF8_NO_NUL = st.characters(codec="utf-8", exclude_characters="\x00")
TEXT = st.text(UTF8_NO_NUL)
NON_EMPTY_TEXT = st.text(UTF8_NO_NUL, min_size=1)
FIELDS = (
    "grant_type",
    "username",
    "password",
    "refresh_token",
    "scope",
    "client_id",
    "client_secret",
)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- service.http.forms ---------------------------------------------------------


@PROPERTIES
@given(body=st.one_of(st.binary(max_size=300), TEXT.map(str.encode)))
@example(body=b"a=1&a=2")
@example(body=b"%FF=1")
@example(body=b"a=%00")
@example(body="&".join(f"p{i}=v" for i in range(101)).encode())
def test_parse_pairs_gives_a_dict_of_strings_or_invalid_request(body: bytes) -> None:
    try:
        form = parse_pairs(body)
    except InvalidRequest:
        return
    assert isinstance(form, dict)
    for name, value in form.items():
        assert isinstance(name, str)
        assert isinstance(value, str)
        assert value != ""
        assert "\x00" not in name + value


@PROPERTIES
@given(
    pairs=st.lists(st.tuples(TEXT, TEXT), max_size=10),
    repeated=st.tuples(TEXT, TEXT, TEXT),
    where=st.integers(min_value=0),
)
def test_a_repeated_parameter_always_raises(
    pairs: list[tuple[str, str]], repeated: tuple[str, str, str], where: int
) -> None:
    name, first, second = repeated
    items = [*pairs, (name, first)]
    items.insert(where % (len(items) + 1), (name, second))  # anywhere, even with an empty value
    with pytest.raises(InvalidRequest):
        parse_pairs(urlencode(items).encode())


@PROPERTIES
@given(form=st.dictionaries(TEXT, TEXT, max_size=20))
def test_urlencoded_form_parses_back_without_empty_values(form: dict[str, str]) -> None:
    parsed = parse_pairs(urlencode(form).encode())
    assert parsed == {name: value for name, value in form.items() if value != ""}


@PROPERTIES
@given(
    present=st.dictionaries(TEXT, NON_EMPTY_TEXT, max_size=5),
    empty=st.dictionaries(TEXT, st.booleans(), min_size=1, max_size=5),
)
def test_an_empty_value_is_absent(present: dict[str, str], empty: dict[str, bool]) -> None:
    """`name=` and a bare `name` both count as absent (RFC 6749 3.1)."""
    empty = {name: bare for name, bare in empty.items() if name not in present}
    parts = [urlencode(present)] if present else []
    parts += [quote_plus(name) + ("" if bare else "=") for name, bare in empty.items()]
    assert parse_pairs("&".join(parts).encode()) == present


def _invalid_utf8() -> st.SearchStrategy[bytes]:
    bad = st.sampled_from([b"\xff", b"\xfe", b"\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"])
    raw = st.builds(lambda a, b, c: a + b + c, TEXT.map(str.encode), bad, TEXT.map(str.encode))
    percent = raw.map(lambda data: quote_plus(data, safe="=&").encode())
    return st.one_of(raw, percent, st.binary(min_size=1).filter(lambda data: not _is_utf8(data)))


@PROPERTIES
@given(body=_invalid_utf8())
def test_bodies_that_are_not_utf8_raise(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_pairs(body)


def _case_variants(value: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(value), max_size=len(value)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(value, upper, strict=True))
    )


PARAMETERS = st.lists(
    st.sampled_from(["charset=utf-8", "charset=UTF-8", "charset=latin-1", "boundary=x", "q=1"]),
    max_size=3,
).map(lambda params: "".join(f"; {p}" for p in params))


@PROPERTIES
@given(kind=_case_variants(FORM_TYPE), params=PARAMETERS, space=st.sampled_from(["", " "]))
def test_the_form_media_type_is_accepted_in_any_case_with_parameters(
    kind: str, params: str, space: str
) -> None:
    assert parse_form(b"grant_type=password", f"{space}{kind}{params}") == {
        "grant_type": "password"
    }


OTHER_MEDIA_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "multipart/form-data",
            "text/plain",
            "application/x-www-form-urlencoded-x",
            "application/x-www-form",
            "x-www-form-urlencoded",
            "application/x-www-form-urlencoded/json",
            "",
        ]
    ).flatmap(_case_variants),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=";")),
).filter(lambda kind: kind.strip().lower() != FORM_TYPE)


@PROPERTIES
@given(kind=st.one_of(st.none(), st.builds(lambda k, p: k + p, OTHER_MEDIA_TYPES, PARAMETERS)))
def test_other_content_types_raise(kind: str | None) -> None:
    with pytest.raises(InvalidRequest):
        parse_form(b"grant_type=password", kind)


# --- service.accounts.clients ---------------------------------------------------

SCHEMES = st.sampled_from(["Basic", "basic", "BASIC", "bAsIc", "Bearer", "Digest"])
ASCII = st.text(st.characters(min_codepoint=0, max_codepoint=0x7F))
BASE64_OF_BYTES = st.binary(max_size=80).map(lambda data: base64.b64encode(data).decode())
BASIC_LIKE_ASCII = st.one_of(
    ASCII,
    st.builds(lambda s, v: f"{s} {v}", SCHEMES, st.one_of(ASCII, BASE64_OF_BYTES)),
    st.builds(lambda s, v: f"  {s}   {v}  ", SCHEMES, BASE64_OF_BYTES),
)


def _outcome_of_parse_basic(header: str) -> Credentials | None:
    try:
        credentials = parse_basic(header)
    except (InvalidClient, InvalidRequest):
        return None
    assert isinstance(credentials, Credentials)
    return credentials


@PROPERTIES
@given(header=BASIC_LIKE_ASCII)
def test_parse_basic_of_ascii_headers_gives_credentials_or_an_oauth_error(header: str) -> None:
    _outcome_of_parse_basic(header)


@PROPERTIES
@given(
    header=st.one_of(
        st.text(),
        st.builds(lambda s, v: f"{s} {v}", SCHEMES, st.text()),
    )
)
@example(header="Basic \xe9")
def test_parse_basic_of_any_header_gives_credentials_or_an_oauth_error(header: str) -> None:
    _outcome_of_parse_basic(header)


@PROPERTIES
@given(
    authorization=st.one_of(st.none(), BASIC_LIKE_ASCII),
    body_client_id=st.one_of(st.none(), TEXT),
    body_client_secret=st.one_of(st.none(), TEXT),
)
def test_presented_credentials_give_credentials_or_an_oauth_error(
    authorization: str | None, body_client_id: str | None, body_client_secret: str | None
) -> None:
    try:
        credentials = presented_credentials(authorization, body_client_id, body_client_secret)
    except (InvalidClient, InvalidRequest):
        return
    assert isinstance(credentials, Credentials)
    if authorization is None:
        assert credentials == Credentials(body_client_id, body_client_secret)


# Printable characters, ':' '%' '+' and space included (quote_plus turns a space into '+').
PRINTABLE = st.text(
    st.characters(exclude_categories=("Cs", "Cc")) | st.sampled_from(list(":%+ ")), min_size=1
)


def _rfc6749_basic(client_id: str, secret: str, encode: Any, scheme: str = "Basic") -> str:
    """RFC 6749 2.3.1: form-urlencode each part, join with ':', base64."""
    raw = f"{encode(client_id, safe='')}:{encode(secret, safe='')}"
    return f"{scheme} {base64.b64encode(raw.encode()).decode()}"


@PROPERTIES
@given(
    client_id=PRINTABLE,
    secret=PRINTABLE,
    encode=st.sampled_from([quote_plus, quote]),
    scheme=st.sampled_from(["Basic", "basic", "BASIC"]),
)
@example(client_id="a:b", secret="%41+%2B: ", encode=quote_plus, scheme="Basic")
def test_basic_credentials_round_trip(
    client_id: str, secret: str, encode: Any, scheme: str
) -> None:
    header = _rfc6749_basic(client_id, secret, encode, scheme)
    assert parse_basic(header) == Credentials(client_id, secret)
    assert presented_credentials(header, None, None) == Credentials(client_id, secret)
    assert presented_credentials(header, client_id, None) == Credentials(client_id, secret)


@PROPERTIES
@given(
    client_id=PRINTABLE,
    secret=PRINTABLE,
    body_client_id=st.one_of(st.none(), TEXT),
    body_client_secret=TEXT,
)
def test_basic_and_a_body_client_secret_always_raise(
    client_id: str, secret: str, body_client_id: str | None, body_client_secret: str
) -> None:
    header = _rfc6749_basic(client_id, secret, quote_plus)
    with pytest.raises(InvalidRequest):
        presented_credentials(header, body_client_id, body_client_secret)


# --- service.tokens.scopes ------------------------------------------------------

SCOPE_TOKEN = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'),
    min_size=1,
    max_size=8,
)
ALLOWED = st.lists(SCOPE_TOKEN, unique=True, max_size=6).map(tuple)


@PROPERTIES
@given(requested=st.one_of(st.none(), st.text()))
@example(requested="")
@example(requested=" ")
@example(requested="read  write")
@example(requested="read read")
def test_requested_scopes_parse_or_raise_invalid_scope(requested: str | None) -> None:
    try:
        items = requested_scopes(requested)
    except InvalidScope:
        return
    if requested is None:
        assert items is None
        return
    assert items is not None
    assert items
    assert len(items) == len(set(items))
    assert all(is_scope_token(item) for item in items)
    assert set(items) == set(requested.split(" "))


def _requested(allowed: tuple[str, ...]) -> st.SearchStrategy[str | None]:
    pool = st.sampled_from(allowed) if allowed else SCOPE_TOKEN
    near = st.lists(st.one_of(pool, pool, SCOPE_TOKEN), min_size=1, max_size=6).map(" ".join)
    return st.one_of(st.none(), near, st.text())


@PROPERTIES
@given(data=st.data(), allowed=ALLOWED)
def test_a_granted_scope_is_within_the_allowed_scopes_without_repeats(
    data: st.DataObject, allowed: tuple[str, ...]
) -> None:
    requested = data.draw(_requested(allowed))
    try:
        granted = grant_scope(requested, allowed)
    except InvalidScope:
        assert requested is not None
        return
    items = granted.split(" ") if granted else []
    assert set(items) <= set(allowed)
    assert len(items) == len(set(items))
    if requested is None:
        assert tuple(items) == allowed


# --- /token and /refresh over HTTP ----------------------------------------------


async def _register_client(database_url: str) -> tuple[str, str]:
    connection = await asyncpg.connect(database_url)
    try:
        client, secret = await create_client(
            connection,
            name="properties",
            grant_types=ALL_GRANTS,
            scopes=["read", "write"],
            public=False,
            can_introspect=False,
            is_admin=False,
        )
    finally:
        await connection.close()
    assert secret is not None
    return client.client_id, secret


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[TestClient[Any], dict[str, str]]]:
    """Rotor in litestar's sync TestClient (lifespan included) and a valid Basic header."""
    client_id, secret = asyncio.run(_register_client(settings.database_url))
    with TestClient(create_app(settings)) as http:
        yield http, basic(client_id, secret)


NAMES = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12))
GRANTS = st.one_of(
    st.sampled_from(["password", "client_credentials", "refresh_token"]), st.text(max_size=20)
)
VALUES = st.one_of(
    st.sampled_from(["alice", "read", "read write", "write read read", "admin", "", " "]),
    st.text(max_size=40),
)
# Mostly plausible requests: a grant and some of its fields (client_id and
# client_secret rarely: next to Basic they are invalid_request), sometimes extra
# pairs that may repeat a field; and some raw bytes.
GRANT_FIELDS = ("username", "password", "refresh_token", "scope")
CLIENT_FIELDS: st.SearchStrategy[dict[str, str]] = st.one_of(
    st.just({}),
    st.just({}),
    st.just({}),
    st.fixed_dictionaries({}, optional={"client_id": VALUES, "client_secret": VALUES}),
)
EXTRA_PAIRS: st.SearchStrategy[list[tuple[str, str]]] = st.one_of(
    st.just([]), st.lists(st.tuples(NAMES, VALUES), max_size=3)
)
PLAUSIBLE_FORMS = st.builds(
    lambda fields, client, extra: urlencode([*fields.items(), *client.items(), *extra]).encode(),
    st.fixed_dictionaries({"grant_type": GRANTS}, optional=dict.fromkeys(GRANT_FIELDS, VALUES)),
    CLIENT_FIELDS,
    EXTRA_PAIRS,
)
FORM_BODIES = st.one_of(PLAUSIBLE_FORMS, PLAUSIBLE_FORMS, PLAUSIBLE_FORMS, st.binary(max_size=200))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(NAMES, children, max_size=4),
    max_leaves=12,
)
PLAUSIBLE_OBJECTS = st.builds(
    lambda fields, client: {**fields, **client},
    st.fixed_dictionaries(
        {"refresh_token": st.one_of(VALUES, VALUES, JSON_VALUES)},
        optional={"scope": st.one_of(VALUES, JSON_VALUES), "grant_type": GRANTS},
    ),
    CLIENT_FIELDS,
)
JSON_BODIES = st.one_of(
    PLAUSIBLE_OBJECTS, PLAUSIBLE_OBJECTS, JSON_VALUES, st.dictionaries(NAMES, JSON_VALUES)
).map(lambda value: json.dumps(value).encode())  # NaN and Infinity are not JSON: fine
FORM_TYPES = st.sampled_from([FORM_TYPE, f"{FORM_TYPE}; charset=UTF-8", FORM_TYPE.upper()])
JSON_TYPES = st.sampled_from(["application/json", "Application/JSON; charset=utf-8"])
ANY_TYPE = st.one_of(
    FORM_TYPES, JSON_TYPES, st.sampled_from(["text/plain", "multipart/form-data; b=x", None])
)
PATHS = st.sampled_from(["/token", "/refresh"])
REQUESTS = st.one_of(
    st.tuples(st.just("/token"), FORM_TYPES, FORM_BODIES),
    st.tuples(st.just("/token"), FORM_TYPES, FORM_BODIES),
    st.tuples(st.just("/refresh"), JSON_TYPES, JSON_BODIES),
    st.tuples(st.just("/refresh"), FORM_TYPES, FORM_BODIES),
    st.tuples(PATHS, ANY_TYPE, FORM_BODIES | JSON_BODIES),
)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=REQUESTS)
def test_token_and_refresh_never_answer_5xx_and_errors_are_oauth_bodies(
    served: tuple[TestClient[Any], dict[str, str]], request: tuple[str, str | None, bytes]
) -> None:
    http, auth = served
    path, content_type, body = request
    headers = dict(auth) if content_type is None else {**auth, "Content-Type": content_type}
    response = http.post(path, content=body, headers=headers)
    assert response.status_code < 500, (path, content_type, body, response.text)
    outcome = f"{path} {response.status_code}"
    if response.status_code >= 400:
        error = msgspec.json.decode(response.content)
        assert isinstance(error, dict), response.text
        assert set(error) == {"error", "error_description"}, error
        assert isinstance(error["error"], str)
        assert isinstance(error["error_description"], str)
        outcome += f" {error['error']}"
    event(outcome)  # what was reached: pytest --hypothesis-show-statistics


def test_a_basic_header_with_non_ascii_bytes_is_401(
    served: tuple[TestClient[Any], dict[str, str]],
) -> None:
    http, _ = served
    response = http.post(
        "/token",
        content=b"grant_type=client_credentials",
        headers={b"content-type": FORM_TYPE.encode(), b"authorization": b"Basic \xe9"},
    )
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
