"""JSON request bodies, read strictly: I-JSON (RFC 7493) as a request body.

Refused with `400 invalid_request`, never a 500: bytes that are not UTF-8,
malformed JSON, NaN and Infinity, lone surrogates, nesting deeper than the
decoder allows, and a member name that appears twice in one object. A repeated
member is what CONTRACT 3.2 refuses for a repeated form parameter: two values
for one name, of which a lenient decoder keeps the last, so that a proxy or
a log that reads the first one sees another request than Rotor does.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from service.errors import InvalidRequest

NOT_JSON = "the body is not valid JSON"


class _Repeated(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def json_object(body: bytes, names: tuple[str, ...]) -> dict[str, Any]:
    """The body as a JSON object. `names` are the members an error message may
    name; any other name is a caller's text and stays out of the answer."""
    try:
        document = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest(NOT_JSON) from None
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object")
    _refuse_repeated_members(body, names)
    return document


def typed_json(body: bytes, kind: type[Any], names: tuple[str, ...]) -> Any:
    """The body decoded into `kind` with no conversion ("true" or 1 is not a
    boolean), after the checks of `json_object`."""
    json_object(body, names)
    try:
        return msgspec.json.decode(body, type=kind, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid body: {exc}") from None


def _refuse_repeated_members(body: bytes, names: tuple[str, ...]) -> None:
    """msgspec keeps the last of two equal names; the standard library's
    decoder hands every object's pairs to a hook, which sees them all. The
    body is valid JSON by now (msgspec read it), so only a repeat is refused."""
    try:
        json.loads(body.decode("utf-8"), object_pairs_hook=_unique_members)
    except _Repeated as repeated:
        shown = repeated.name if repeated.name in names else "a member"
        raise InvalidRequest(f"{shown} is repeated in the JSON body") from None
    except (ValueError, RecursionError):
        raise InvalidRequest(NOT_JSON) from None


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Repeated(name)
            seen.add(name)
    return document
