"""What declared handlers are given by Litestar's dependency injection: the
process's services and the caller (client IP and user agent). The two raw
endpoints (service/http/raw.py) take the same from `services_of` and
`caller_of` themselves."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide

from service.events import Caller
from service.http.caller import caller_of
from service.http.state import Services, services_of


def provide_services(request: Request[Any, Any, Any]) -> Services:
    return services_of(request)


def provide_caller(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Caller:
    return caller_of(request, services.settings.trusted_proxies)


# What a handler's parameter is annotated with to be given them, by name.
ServicesDep = NamedDependency[Services]
CallerDep = NamedDependency[Caller]


def dependencies() -> dict[str, Provide]:
    """Fresh for each app: the services' value is cached in its Provide, and
    every app (a test makes many in one process) has services of its own."""
    return {
        # One value per app: resolved once, not per request.
        "services": Provide(provide_services, sync_to_thread=False, use_cache=True),
        "caller": Provide(provide_caller, sync_to_thread=False),
    }
