"""The text of error answers (CONTRACT section 3): an `error_description` holds only
what RFC 6749 5.2 allows (printable ASCII but `"` and `\\`) and never repeats what the
caller sent."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import service.errors
from service.http.errors import clean_description
from tests.helpers import Rotor

SERVICE = Path(__file__).resolve().parent.parent / "service"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ALLOWED = {chr(code) for code in (0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F))}

# --- the last line of defence --------------------------------------------------------------


def test_clean_description_keeps_every_allowed_character() -> None:
    text = "".join(sorted(ALLOWED))
    assert clean_description(text) == text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ('say "hi"', "say ?hi?"),
        ("back\\slash", "back?slash"),
        ("caf\u00e9", "caf?"),
        ("\U0001f600!", "?!"),
        ("tab\tnew\nline\rnul\x00del\x7f", "tab?new?line?nul?del?"),
        ("\u2028\ufeff", "??"),
    ],
)
def test_clean_description_replaces_what_rfc_6749_forbids(raw: str, clean: str) -> None:
    assert clean_description(raw) == clean


def test_clean_description_replaces_every_other_character() -> None:
    others = [chr(code) for code in range(0x300) if chr(code) not in ALLOWED]
    assert [clean_description(char) for char in others] == ["?"] * len(others)


# --- what the caller sent stays out of the answer ------------------------------------------


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param("a%22b", id="double-quote"),
        pytest.param("a%5Cb", id="backslash"),
        pytest.param("caf%C3%A9", id="e-acute"),
        pytest.param("smile%F0%9F%98%80", id="emoji"),
        pytest.param("bell%07", id="control"),
        pytest.param("%22%5C%C3%A9%F0%9F%98%80%01%7F", id="all-at-once"),
    ],
)
async def test_unknown_grant_type_is_not_echoed_whatever_it_holds(
    rotor: Rotor, encoded: str
) -> None:
    client = await rotor.client()
    response = await rotor.token(
        {}, {**client.auth, **FORM}, content=f"grant_type={encoded}".encode()
    )
    assert (response.status_code, response.json()) == (
        400,
        {"error": "unsupported_grant_type", "error_description": "unsupported grant_type"},
    )


@pytest.mark.parametrize("length", ['12"', "1\\2", "abc", "-"])
async def test_a_malformed_content_length_is_not_echoed(rotor: Rotor, length: str) -> None:
    """Litestar's own message quotes the header; uvicorn refuses such a request before
    the application sees it, but the answer must not depend on that."""
    response = await rotor.http.post(
        "/token", content=b"grant_type=password", headers={**FORM, "Content-Length": length}
    )
    assert (response.status_code, response.json()) == (
        400,
        {
            "error": "invalid_request",
            "error_description": "the Content-Length header is not a number",
        },
    )


# --- every description written in service/ -----------------------------------------------

ERRORS = {
    name
    for name, kind in inspect.getmembers(service.errors, inspect.isclass)
    if issubclass(kind, service.errors.OAuthError)
} | {"BadRequest"}  # service/admin/paging.py's name for InvalidRequest
# What the f-string descriptions interpolate, each checked not to be the caller's text:
# constants and settings, names of the protocol's own parameters or fields, what a
# revocation is by (family, user, client), a grant type already known to be one of
# Rotor's, and msgspec's validation message (type names and the path of the field in
# the body, for bodies with fixed field names and no enum or constraint).
INTERPOLATED = {
    "FORM_TYPE",
    "MAX_LIMIT",
    "MAX_NAME_CHARS",
    "MAX_USERNAME_CHARS",
    "', '.join(EVENT_TYPES)",
    "', '.join(GRANT_TYPES)",
    "by",
    "exc",
    "grant_type",
    "min_age",
    "name",
    "shown",
    "what",
}


def _descriptions() -> list[tuple[str, ast.expr]]:
    found = []
    for path in sorted(SERVICE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name in ERRORS:
                found.append((f"{path.relative_to(SERVICE.parent)}:{node.lineno}", node.args[0]))
    return found


def test_every_description_in_the_code_is_clean_text() -> None:
    descriptions = _descriptions()
    literal = []
    interpolated = set()
    for where, argument in descriptions:
        parts = argument.values if isinstance(argument, ast.JoinedStr) else [argument]
        for part in parts:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                literal.append((where, part.value))
            elif isinstance(part, ast.FormattedValue):
                interpolated.add(ast.unparse(part.value))
    assert len(descriptions) > 30  # the walk finds the raise sites
    assert [(where, text) for where, text in literal if clean_description(text) != text] == []
    assert interpolated <= INTERPOLATED, interpolated - INTERPOLATED
