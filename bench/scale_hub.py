"""A hub replica for bench/scale.py: `renderhub serve` with a backend whose render servers start instantly."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import logging
import os
import signal
from pathlib import Path

from renderhub.backends.base import Backend, ServerSpec, ServerState, State

PR_SET_PDEATHSIG = 1


class InstantBackend(Backend):
    """Render servers that exist the moment they are asked for: what is left is the hub's own work."""

    name = "instant"

    def __init__(self) -> None:
        self._started: dict[str, State] = {}

    async def start(self, spec: ServerSpec) -> tuple[str, State]:
        state = {"session_seq": spec.session_seq, "id": f"{spec.account_id}/{spec.session_id}"}
        self._started[state["id"]] = state
        return "127.0.0.1", state

    async def poll(self, state: State) -> ServerState:
        # Any replica may poll a server another one started: like a cluster's, they are reachable from all.
        return ServerState.RUNNING if "id" in state else ServerState.GONE

    async def stop(self, state: State) -> None:
        self._started.pop(state.get("id", ""), None)

    async def servers(self) -> list[State]:
        return list(self._started.values())

    def identity(self, state: State) -> str:
        return str(state["id"])


def die_with_parent() -> None:
    """Have the kernel stop this hub if the benchmark dies, even by SIGKILL (nothing else would)."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return  # not Linux: the benchmark's own clean-up still stops it
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise SystemExit("the benchmark is gone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sizes", type=Path, required=True, help="sizes file (a Standard capacity for the burst)")
    parser.add_argument("--rate-limit", type=float, default=20.0, help="requests/s per account; 0: off")
    args = parser.parse_args()
    die_with_parent()

    # Imported here, as the CLI does: a replica's start-up is part of what the benchmark waits for.
    import uvicorn

    from renderhub.api import create_app
    from renderhub.bootstrap import first_start
    from renderhub.clock import Clock
    from renderhub.config import Settings

    settings = Settings(
        data_dir=args.data_dir, database_url=args.database_url, port=args.port, backend=InstantBackend.name,
        sizes_file=args.sizes, rate_limit_per_second=args.rate_limit,
    )  # fmt: skip
    settings.load_sizes()
    files = asyncio.run(first_start(settings, Clock()))
    print(f"hub replica on {settings.endpoint}, account created: {files.created_account}", flush=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    app = create_app(settings, backend=InstantBackend())
    gc.collect()  # as `renderhub serve` does: the long-lived heap out of the collector's passes
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(files.cert) if files.cert else None,
        ssl_keyfile=str(files.key) if files.key else None,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )


if __name__ == "__main__":
    main()
