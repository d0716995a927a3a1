"""The render server: a handshake endpoint for its one client, health, and an inspector status page."""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import signal
import time
from dataclasses import dataclass, field

from renderhub.render.http import Handler, Request, Response, serve


@dataclass
class ServerStatus:
    """What the inspector shows about this server."""

    session_id: str
    size: str
    started: float = field(default_factory=time.time)
    handshakes: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "sessionId": self.session_id,
            "size": self.size,
            "pid": os.getpid(),
            "uptimeSeconds": round(time.time() - self.started, 1),
            "handshakes": self.handshakes,
            "rendering": False,
        }


def handshake_handler(status: ServerStatus) -> Handler:
    async def handle(request: Request) -> Response:
        if request.path == "/health" and request.method == "GET":
            return Response.json(200, {"status": "ok", "sessionId": status.session_id})
        if request.path == "/offer":
            status.handshakes += 1
            return Response.json(501, {"error": "This render server does not stream yet."})
        return Response.json(404, {"error": f"no such endpoint: {request.path}"})

    return handle


def inspector_handler(status: ServerStatus) -> Handler:
    async def handle(request: Request) -> Response:
        if request.path == "/status":
            return Response.json(200, status.as_json())
        if request.path == "/":
            rows = "".join(
                f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                for k, v in status.as_json().items()
            )
            return Response.html(
                "<!doctype html><html><head><title>RenderHub inspector</title>"
                '<meta http-equiv="refresh" content="5"></head><body>'
                f"<h1>Render server for session {html.escape(status.session_id)}</h1>"
                f"<table>{rows}</table></body></html>"
            )
        return Response.json(404, {"error": f"no such page: {request.path}"})

    return handle


async def run(args: argparse.Namespace) -> None:
    status = ServerStatus(session_id=args.session_id, size=args.size)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    inspector = await asyncio.start_server(serve(inspector_handler(status)), args.host, args.inspector_port)
    # The handshake port opens last: the hub takes an answer there to mean the server is ready.
    handshake = await asyncio.start_server(serve(handshake_handler(status)), args.host, args.handshake_port)
    print(f"render server for session {args.session_id} on {args.host}:{args.handshake_port}", flush=True)
    async with handshake, inspector:
        await stopping.wait()
    print("render server stopped", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m renderhub.render", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--handshake-port", type=int, required=True)
    parser.add_argument("--inspector-port", type=int, required=True)
    parser.add_argument("--session-id", required=True)
    parser.add_argument("--size", default="Standard")
    parser.add_argument("--hub-dir", default="", help="the data dir of the hub that owns this server")
    asyncio.run(run(parser.parse_args()))
