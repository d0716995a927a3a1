"""`renderhub serve`'s start: TLS files, the first account and its arrconfig.json, then the hub on uvicorn."""

from __future__ import annotations

import copy
import gc
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from renderhub.auth import new_account
from renderhub.backends import Backend
from renderhub.client import ArrConfig
from renderhub.clock import Clock
from renderhub.config import Settings
from renderhub.datadir import write_secret
from renderhub.store import open_store
from renderhub.terminal import private_data_dir
from renderhub.tls import ensure_ca, ensure_certificates, install_ca

if TYPE_CHECKING:
    import uvicorn


@dataclass(frozen=True)
class ServeFiles:
    """What `serve` tells the user about."""

    ca: Path | None
    cert: Path | None
    key: Path | None
    arrconfig: Path | None
    created_account: str | None
    replaced_ca: bool = False  # this data dir's CA gave way to the one the database's other hubs use


def write_arrconfig(path: Path, config: ArrConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_secret(path, json.dumps(config.to_json(), indent=2) + "\n")  # it holds an account key in clear


def tls_files(settings: Settings, clock: Clock) -> tuple[Path | None, Path | None, Path | None]:
    """(ca.pem, certificate, key): the user's own, or our local CA's for localhost, 127.0.0.1 and the public host."""
    if settings.insecure_http:
        return None, None, None
    if settings.tls_cert and settings.tls_key:
        return None, settings.tls_cert, settings.tls_key
    return ensure_certificates(settings.tls_dir, settings.certificate_hosts, clock.now())


async def first_start(settings: Settings, clock: Clock) -> ServeFiles:
    """Make sure the database is migrated and holds an account; write arrconfig.json for a new one."""
    private_data_dir(settings.data_dir)  # it holds the signing and CA keys: nobody else may read it
    created = None
    replaced_ca = False
    async with open_store(settings.async_database_url) as repo:
        if not settings.insecure_http:
            # Every hub on this database issues certificates from one CA: clients trust a single ca.pem.
            local = ensure_ca(settings.tls_dir, clock.now())
            local_key = (settings.tls_dir / "ca-key.pem").read_text()
            shared = await repo.certificate_authority((local.read_text(), local_key), clock.now())
            replaced_ca = install_ca(settings.tls_dir, *shared)
        ca, cert, key = tls_files(settings, clock)
        account, primary, _secondary = new_account("default", clock.now())
        if await repo.insert_first_account(account):
            write_arrconfig(
                settings.arrconfig_path,
                ArrConfig(
                    account_id=account.id,
                    account_key=primary,
                    # This hub's region's endpoint (a load balancer's, when it has one).
                    account_domain=settings.region_endpoint or settings.endpoint,
                    rendering_domain=settings.region_endpoint or settings.endpoint,
                    vm_size="standard",
                    max_lease_minutes=30,
                ),
            )
            created = account.id
        elif settings.arrconfig_path.exists():
            _follow_endpoint(settings)
    arrconfig = settings.arrconfig_path if settings.arrconfig_path.exists() else None
    return ServeFiles(ca, cert, key, arrconfig, created, replaced_ca)


def _follow_endpoint(settings: Settings) -> None:
    """A hub restarted on another port or scheme keeps its own arrconfig.json pointing at itself."""
    try:
        config = ArrConfig.load(settings.arrconfig_path)
    except (OSError, ValueError, KeyError, TypeError):
        return  # not ours to repair; the session commands say what is wrong with it
    local = ("https://127.0.0.1:", "http://127.0.0.1:", "https://localhost:", "http://localhost:")
    if config.account_domain.startswith(local) and config.account_domain != settings.endpoint:
        write_arrconfig(
            settings.arrconfig_path,
            replace(config, account_domain=settings.endpoint, rendering_domain=settings.endpoint),
        )


def run_hub(settings: Settings, files: ServeFiles, *, backend: Backend | None = None, access_log: bool = False) -> None:
    """Serve the hub until it is told to stop (SIGINT or SIGTERM), with its log lines beside uvicorn's."""
    import sys

    import uvicorn

    from renderhub.api import create_app

    # The hub's own log lines (sessions failing, replicas taking over the reaper) beside uvicorn's.
    logging.basicConfig(level=logging.INFO, format=f"{LOG_TIME} %(levelname)s:     %(name)s: %(message)s")
    for chatty in ("httpx", "alembic"):  # a line per relayed request; a line per migration check
        logging.getLogger(chatty).setLevel(logging.WARNING)
    app = create_app(settings, backend=backend)
    # What was imported and built lives as long as the hub: keep it out of the garbage collector's passes,
    # whose full sweeps otherwise stall requests (bench/scale.py: p99 create latency 130-200 -> 75-105 ms).
    gc.collect()
    gc.freeze()
    server = uvicorn.Server(server_config(settings, files, app, log_level="info", access_log=access_log))
    try:
        server.run()
    except KeyboardInterrupt:  # a second Ctrl-C during the graceful stop
        pass
    if not server.started:
        sys.exit(3)  # uvicorn.run's code for a server that could not start (the port taken, say)


LOG_TIME = "%(asctime)s"  # every line of the hub's log starts with when it happened


def _log_config() -> dict[str, Any]:
    """uvicorn's own logging (its start and stop lines, the access log) with the time in front, like the hub's."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = f"{LOG_TIME} {formatter['fmt']}"
    return config


def server_config(
    settings: Settings, files: ServeFiles, app: object, *, log_level: str, access_log: bool
) -> uvicorn.Config:
    """uvicorn's configuration for the hub: TLS, the connection limits, the graceful stop, no proxy headers."""
    import uvicorn

    from renderhub.api.limits import guarded_http

    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(files.cert) if files.cert else None,
        ssl_keyfile=str(files.key) if files.key else None,
        log_level=log_level,
        log_config=_log_config(),
        access_log=access_log,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        # Slow or oversized request heads and connection floods are cut off (api/limits.py); TLS handshakes too.
        http=guarded_http(settings.max_connections_per_address),
        loop="renderhub.api.limits:HubLoop",
        # On every answer, uvicorn's own (400, 503) included; never over plain HTTP, where it means nothing.
        headers=[] if settings.insecure_http else [("Strict-Transport-Security", "max-age=31536000")],
        # The client's address is the peer's: uvicorn would take X-Forwarded-For from any local process, which
        # could then pick the address the per-address limits and the STS's throttle see. The documented load
        # balancer passes TCP through and sets no such header.
        proxy_headers=False,
    )
