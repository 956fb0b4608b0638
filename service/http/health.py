"""Liveness and readiness (CONTRACT 3.7)."""

from __future__ import annotations

import asyncpg
from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec

from service.db.migrate import head_revision, schema_revision
from service.db.pool import DatabaseUnavailable
from service.http.dependencies import ServicesDep


@get("/health/live", tags=["health"], operation_id="live", summary="200 while the process runs")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/health/ready",
    responses={
        503: ResponseSpec(
            data_container=dict[str, str],
            description="the database does not answer, the schema is not at the latest "
            "migration, or the process is shutting down",
            generate_examples=False,
        )
    },
    tags=["health"],
    operation_id="ready",
    summary="200 when the database answers and the schema is at the latest migration",
)
async def ready(services: ServicesDep) -> Response[dict[str, str]]:
    if services.drain.draining:
        return Response({"status": "unavailable", "reason": "shutting down"}, status_code=503)
    try:
        async with services.database.connection() as connection:
            current = await schema_revision(connection)
    except DatabaseUnavailable:
        return Response({"status": "unavailable", "reason": "database"}, status_code=503)
    except asyncpg.PostgresError:  # e.g. no right to read alembic_version
        return Response({"status": "unavailable", "reason": "schema"}, status_code=503)
    except Exception:  # a probe answers, whatever broke: e.g. a connection killed under it
        return Response({"status": "unavailable", "reason": "database"}, status_code=503)
    if current != head_revision():
        return Response({"status": "unavailable", "reason": "schema"}, status_code=503)
    return Response({"status": "ok"}, status_code=200)
