"""The app factory and its lifespan: store, signing key, backend, manager, reaper (joining, then its loop)."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from renderhub.accounts import Accounts
from renderhub.api import assets, health, linked_storage, regions, relay, render_keys, sessions, storage, sts, web
from renderhub.api import conversions as conversion_api
from renderhub.api.access import Hub
from renderhub.api.body_limit import BodyLimit
from renderhub.api.openapi import build_document
from renderhub.api.regions import RegionCors
from renderhub.api.responses import ArrHeaders, on_client_gone, on_http_error, on_renderhub_error, on_unexpected
from renderhub.api.sts_throttle import KeyGuesses
from renderhub.auth import TokenService, new_signing_key
from renderhub.backends import Backend, load_backend
from renderhub.clock import Clock
from renderhub.config import Settings
from renderhub.conversion_places import conversion_place
from renderhub.conversion_runs import ConversionRuns
from renderhub.conversions import ConversionManager
from renderhub.errors import RenderHubError
from renderhub.manager import SessionManager
from renderhub.models import ServerSize
from renderhub.pools import WarmPool
from renderhub.ratelimit import RateLimiter
from renderhub.reaper import Reaper
from renderhub.regions import RegionDirectory
from renderhub.storage_links import StorageLinks
from renderhub.storage_retention import StorageRetention
from renderhub.store import open_store
from renderhub.store.regions import Region
from renderhub.tls import ensure_ca

# Latency probes per client address: a measurement takes a dozen; the viewer and the CLI space theirs out.
PROBES_PER_SECOND = 20.0
PROBE_BURST = 40
RELAY_TIMEOUT = 30.0  # an answer takes a render server a moment: it starts a render worker for the client


def create_app(settings: Settings, *, clock: Clock | None = None, backend: Backend | None = None) -> FastAPI:
    """A hub app; tests pass a fake clock or a failing backend, everything else comes from settings."""
    clock = clock or Clock()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_store(settings.async_database_url, settings.region) as repo:
            tokens = TokenService(
                await repo.signing_key(new_signing_key, clock.now()),
                timedelta(hours=settings.token_lifetime_hours),
            )
            session_backend = backend or load_backend(settings)
            manager = SessionManager(settings, repo, session_backend, settings.load_sizes(), clock, tokens.public_pem)
            retention = StorageRetention(settings.storage_root, settings.storage_retention_days, clock.now())
            trust = ssl.create_default_context(cafile=str(ensure_ca(settings.tls_dir, clock.now())))
            reaper = Reaper(manager, settings, clock, steps=[retention], trust=trust)
            targets = {ServerSize(size): count for size, count in settings.warm_pool.items()}
            pool = WarmPool(manager, reaper.replicas.alive, targets, clock.now())
            reaper.steps.append(pool)
            links = StorageLinks(settings.scheme, ["127.0.0.1", *settings.certificate_hosts], settings.linked_storage)
            conversions = ConversionManager(settings, repo.conversions, links, clock)
            accounts = Accounts(repo, settings.account_cache_seconds)
            place = conversion_place(session_backend, settings.data_dir)
            conversion_runs = ConversionRuns(
                settings, repo.conversions, links, reaper.replicas.alive, manager.replica_id, clock, place, accounts,
                tokens,
            )  # fmt: skip
            await reaper.join()
            own = Region(settings.region, settings.region_url, f"{settings.region_url}/probe")
            directory = RegionDirectory(repo.regions, own)
            await directory.register(clock.now())
            # The rate limit holds across replicas: each takes an equal share of it.
            limiter = RateLimiter(
                settings.rate_limit_per_second, settings.rate_limit_burst, replicas=lambda: reaper.replicas.count
            )
            relay = httpx.AsyncClient(verify=trust, timeout=RELAY_TIMEOUT)
            app.state.reaper = reaper  # for tests that run a pass themselves; request handlers never use it
            app.state.hub = Hub(
                manager,
                conversions,
                reaper.replicas,
                tokens,
                limiter,
                clock,
                accounts,
                relay,
                settings.ice_servers,
                verified={},
                regions=directory,
                probe_limiter=RateLimiter(PROBES_PER_SECOND, PROBE_BURST, subject="this address"),
                asset_roots=settings.asset_roots,
                key_guesses=KeyGuesses(
                    settings.sts_failure_window_seconds,
                    settings.sts_failures_per_address_and_account,
                    settings.sts_failures_per_address,
                    now=lambda: clock.now().timestamp(),  # the hub's clock: tests move it
                ),
                storage_root=settings.storage_root,
                upload_limit=settings.storage_upload_limit_mb * 1024 * 1024,
                links=links,
            )
            try:
                async with relay, reaper.running(), conversion_runs.running(), directory.refreshing():
                    yield
            finally:
                await pool.close()
                await manager.close()
                await reaper.replicas.leave()
                await session_backend.close()

    app = FastAPI(
        title="RenderHub",
        description="Azure Remote Rendering's session API and token service, self-hosted.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.router.routes.extend(sessions.routes)
    app.router.routes.extend(conversion_api.routes)
    app.router.routes.extend(storage.routes)
    app.router.routes.extend(linked_storage.routes)
    for module in (sts, relay, render_keys, assets, health, regions, web):
        app.include_router(module.router)
    app.add_exception_handler(RenderHubError, on_renderhub_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(Exception, on_unexpected)
    # Inside ArrHeaders: its 413s carry MS-CV too.
    app.add_middleware(BodyLimit, upload_limit=settings.storage_upload_limit_mb * 1024 * 1024)
    app.add_middleware(ArrHeaders)
    app.add_middleware(RegionCors)  # outermost: preflights are answered before anything else looks at them
    app.openapi = _document_once(app)  # type: ignore[method-assign]
    return app


def _document_once(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """app.openapi for /openapi.json and /docs: built on first use and kept, never on a session request."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app)
        return app.openapi_schema

    return openapi
