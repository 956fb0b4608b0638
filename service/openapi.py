"""The OpenAPI document, as served at /schema/openapi.json and committed in openapi/."""

from __future__ import annotations

import json

from service.config import Settings


def document() -> str:
    from service.app import create_app

    # The document does not depend on the deployment; no database is touched.
    settings = Settings(database_url="postgresql://unused/unused", secret=b"\0" * 32)
    schema = create_app(settings).openapi_schema.to_schema()
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
