"""A hub replica for bench/scale.py: `renderhub serve` with a backend whose render servers start instantly."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from renderhub.backends.base import ServerState, State
from renderhub.backends.memory import MemoryBackend
from renderhub.render.lifetime import die_with_parent


class InstantBackend(MemoryBackend):
    """In-memory render servers, reachable from every replica as a cluster's are: what is left is the hub's work."""

    name = "instant"

    async def poll(self, state: State) -> ServerState:
        # Replicas are processes of their own here, each with its own memory: any may poll another's server.
        return ServerState.RUNNING if "id" in state else ServerState.GONE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sizes", type=Path, required=True, help="sizes file (a Standard capacity for the burst)")
    parser.add_argument("--rate-limit", type=float, default=20.0, help="requests/s per account; 0: off")
    args = parser.parse_args()
    # The kernel stops this hub if the benchmark dies, even by SIGKILL (nothing else would).
    if not die_with_parent(signal.SIGTERM, os.getppid()):
        raise SystemExit("the benchmark is gone")

    # Imported here, as the CLI does: a replica's start-up is part of what the benchmark waits for.
    from renderhub.bootstrap import first_start, run_hub
    from renderhub.clock import Clock
    from renderhub.config import Settings

    settings = Settings(
        data_dir=args.data_dir, database_url=args.database_url, port=args.port, backend=InstantBackend.name,
        sizes_file=args.sizes, rate_limit_per_second=args.rate_limit,
    )  # fmt: skip
    settings.load_sizes()
    files = asyncio.run(first_start(settings, Clock()))
    print(f"hub replica on {settings.endpoint}, account created: {files.created_account}", flush=True)
    run_hub(settings, files, backend=InstantBackend(settings))


if __name__ == "__main__":
    main()
