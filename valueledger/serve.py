"""`valueledger serve`: the API, the projectors and the webhook worker, in one process, on one
loop.

With no URLs configured it runs on the embedded PostgreSQL and Redis in the data folder. It
applies the schema, makes a first vendor staff member if there is none (printing the one-time
password once), then serves until SIGINT or SIGTERM: the API stops taking requests, each
projector finishes its batch, and the process exits within seconds. `--role` runs one part
only, for deployments that scale them separately.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
from collections.abc import Awaitable, Callable, Iterator
from typing import Literal

import uvicorn
from litestar import Litestar

from api.app import create_app
from api.auth import TokenService
from api.observability import configure_logging, configure_tracing
from projections.registry import PROJECTORS
from valueledger.services import Services, open_services
from valueledger.settings import Settings
from workers.projectors import run_projectors, stop_on_signals
from workers.webhook_format import load_endpoints
from workers.webhooks import run_webhooks

ServeRole = Literal["all", "api", "projectors", "worker"]
HttpParser = Literal["httptools", "h11"]


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (every CPython but Windows'), else None for
    asyncio's own: the API's sockets, PostgreSQL's and Redis's all run on it, at a fraction of
    the selector loop's cost per callback."""
    try:
        import uvloop  # noqa: PLC0415 - optional: not built for every platform
    except ImportError:
        return None
    return uvloop.new_event_loop


def http_parser() -> HttpParser:
    """httptools (llhttp, in C) where it is installed, else h11 (pure Python)."""
    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


class _Server(uvicorn.Server):
    """uvicorn, leaving the signals to us: one stop event stops every part together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def api_config(app: Litestar, host: str, port: int) -> uvicorn.Config:
    """How uvicorn serves the API."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http_parser(),
        log_config=None,
        lifespan="on",
        # Our telemetry middleware logs each request once; uvicorn's access log would be a
        # second line through a queue thread, about a third of a request's cost.
        access_log=False,
        # Whose X-Forwarded-For is believed is VALUELEDGER_TRUSTED_PROXIES' to say (the rate
        # limiter reads it); uvicorn would otherwise believe any local peer's, by default.
        proxy_headers=False,
    )


def freeze_startup_objects() -> None:
    """Leave what startup made (modules, the app, its OpenAPI document: about 100,000 objects)
    out of every garbage collection from now on. Under load, the objects of requests in
    flight outlive two young collections and count towards a full one, which then walked all
    of these as well: 50 to 70 ms with the loop stopped, twice a second, a tenth of
    the server's time and most of its p99."""
    gc.collect()
    gc.freeze()


def token_service(services: Services) -> TokenService:
    settings = services.settings
    return TokenService(
        settings.token_secret(),
        services.redis,
        settings.cache_prefix,
        reads=services.request_redis,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        jwks_url=settings.jwks_url,
    )


async def serve(
    settings: Settings,
    database_url: str,
    redis_url: str,
    *,
    service_url: str | None = None,
    host: str,
    port: int,
    role: ServeRole,
    announce: Callable[[str], None],
    first_admin: Callable[[Services], Awaitable[tuple[str, str] | None]] | None = None,
) -> None:
    """Run the chosen parts until SIGINT or SIGTERM."""
    configure_logging()
    configure_tracing()
    # Read before anything starts, so a bad endpoints file stops the service at once; and only
    # where the worker runs, the one part that needs its secrets.
    endpoints = (
        load_endpoints(settings.webhooks) if settings.webhooks and role in {"all", "worker"} else []
    )
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with open_services(settings, database_url, redis_url, service_url) as services:
        if first_admin is not None:
            created = await first_admin(services)
            if created is not None:
                user, password = created
                announce(
                    f"first vendor staff member: user {user!r}, one-time password {password!r}"
                    " (shown once: log in and change it)"
                )
        parts = []
        if role in {"all", "projectors"}:
            parts.append(
                run_projectors(
                    services.pool, PROJECTORS, stop, invalidate=services.cache.invalidate
                )
            )
        if role in {"all", "worker"}:
            parts.append(
                run_webhooks(
                    services.store,
                    redis_url,
                    endpoints,
                    stop,
                    prefix=settings.cache_prefix,
                    retry_delays=settings.retry_delays,
                    retention_days=settings.retention_days,
                )
            )
        if role in {"all", "api"}:
            app = create_app(services, token_service(services))
            server = _Server(api_config(app, host, port))

            async def api() -> None:
                serving = asyncio.create_task(server.serve())
                await stop.wait()
                server.should_exit = True
                await serving

            parts.append(api())
            announce(f"API on http://{host}:{port}/v1, its docs on http://{host}:{port}/schema")
        announce("stop with Ctrl-C (SIGINT) or SIGTERM")
        freeze_startup_objects()
        await asyncio.gather(*parts)
    announce("stopped")
