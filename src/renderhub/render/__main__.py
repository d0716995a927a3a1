"""Entry point: `python -m renderhub.render --config FILE [--ports-file FILE] ...`: its ports, then the server."""

import argparse
import asyncio
import signal
from pathlib import Path

from renderhub.render.assignment import ASSIGNED
from renderhub.render.ports import NoFreePort, bind_ports, write_ports


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m renderhub.render", description="A session's render server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--handshake-port", type=int, default=0, help="0: a free port in ARR's range")
    parser.add_argument("--inspector-port", type=int, default=0, help="0: a free port in ARR's range")
    parser.add_argument("--ports-file", help="where to write the two ports, once bound, for the backend")
    serves = parser.add_mutually_exclusive_group(required=True)
    serves.add_argument("--session-id", help="the ARR session this server serves")
    serves.add_argument(
        "--assignment-file", help="a pooled server: where its session is written; it reads it on SIGUSR1"
    )
    parser.add_argument("--hub-dir", default="", help="the data dir of the hub that owns this server")
    parser.add_argument("--config", required=True, help="the JSON configuration the hub wrote")
    args = parser.parse_args()
    # Ignored until the server's handler is in place (by default the signal would end the process): the server reads the
    # assignment file once it listens for the signal, so an early assignment still arrives.
    signal.signal(ASSIGNED, signal.SIG_IGN)
    # The ports before the server's own imports (a fifth of a second): the backend waits for them before it
    # records the session's server, and that write then overlaps the rest of the start.
    try:
        handshake, inspector = bind_ports(args.host, [args.handshake_port, args.inspector_port])
    except NoFreePort as exc:
        raise SystemExit(f"render server: {exc}") from None
    if args.ports_file:
        write_ports(Path(args.ports_file), handshake.getsockname()[1], inspector.getsockname()[1])
    from renderhub.render.server import run

    asyncio.run(run(args, handshake, inspector))


main()
