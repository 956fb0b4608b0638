"""RotorPlugin: the one place where Rotor's parts are wired into Litestar
(routes, lifespan, dependencies, exception handlers, OpenAPI), as
litestar-fullstack wires its app through an InitPlugin."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, PathItem, Schema, SecurityScheme
from litestar.plugins import InitPluginProtocol
from litestar.plugins.prometheus import PrometheusController

from service import __version__
from service.db.migrate import head_revision, schema_revision
from service.db.pool import Database
from service.http.admin import AdminController
from service.http.dependencies import dependencies
from service.http.discovery import jwks, metadata
from service.http.errors import EXCEPTION_HANDLERS
from service.http.health import live, ready
from service.http.introspection import INTROSPECT_PATH, introspect_endpoint
from service.http.raw import MAX_BODY_BYTES
from service.http.refresh import REFRESH_PATH, refresh_endpoint
from service.http.revocation import revoke
from service.http.sessions import SessionsController
from service.http.state import Services
from service.http.token import TOKEN_BODY_SCHEMA, TOKEN_PATH, token_endpoint

# The raw endpoints' entries of the OpenAPI document (Litestar documents
# declared handlers only): service/http/raw.py `document`.
RAW_PATHS: dict[str, PathItem] = {
    "/token": TOKEN_PATH,
    "/refresh": REFRESH_PATH,
    "/introspect": INTROSPECT_PATH,
}
# The schemas they refer to that no declared handler puts in the components.
RAW_SCHEMAS: dict[str, Schema] = {"TokenBody": TOKEN_BODY_SCHEMA}


class MetricsController(PrometheusController):
    path = "/metrics"
    include_in_schema = False


class SchemaNotReady(RuntimeError):
    pass


async def check_schema(database: Database) -> None:
    async with database.connection() as connection:
        current = await schema_revision(connection)
    if current != head_revision():
        raise SchemaNotReady(
            f"database schema is at {current or 'nothing'}, not {head_revision()}: "
            "run `rotor migrate` (DATABASE_URL) first"
        )


class RotorPlugin(InitPluginProtocol):
    def __init__(
        self, services: Services, *, drain_on_sigterm: bool = False, freeze_gc: bool = False
    ) -> None:
        self.services = services
        self._drain_on_sigterm = drain_on_sigterm
        self._freeze_gc = freeze_gc

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.extend(
            [
                token_endpoint,
                refresh_endpoint,
                introspect_endpoint,
                revoke,
                SessionsController,
                AdminController,
                MetricsController,
                jwks,
                metadata,
                live,
                ready,
            ]
        )
        app_config.lifespan.append(self.lifespan)
        app_config.dependencies.update(dependencies())
        app_config.exception_handlers.update(EXCEPTION_HANDLERS)
        app_config.request_max_body_size = MAX_BODY_BYTES
        app_config.openapi_config = openapi_config()
        app_config.debug = False
        app_config.logging_config = None
        return app_config

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        services = self.services
        await services.database.open()
        try:
            await check_schema(services.database)
            await services.keys.start(services.settings.signing_alg)
            services.pruner.start()
            services.hasher.start()
            app.state.services = services
            if self._drain_on_sigterm:
                services.drain.install()
            if self._freeze_gc:
                # Everything made at start-up lives as long as the process: out of
                # the collector's sight, a full collection scans only what requests
                # made. Measured in a worker under /refresh load: full collections
                # of 55 to 70 ms, each a pause for every request in flight, before;
                # none over 5 ms after (the gc module's docs advise this for servers).
                gc.freeze()
            yield
        finally:
            services.drain.uninstall()
            await services.pruner.stop()
            await services.keys.stop()
            services.hasher.close()
            await services.database.close()


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Rotor",
        version=__version__,
        description="Short-lived access JWTs and rotating single-use refresh tokens.",
        path="/schema",
        render_plugins=[ScalarRenderPlugin()],
        components=Components(
            security_schemes={
                "client_secret_basic": SecurityScheme(type="http", scheme="basic"),
                "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
            }
        ),
        use_handler_docstrings=False,
    )
