"""The render server: the handshake endpoint for its one client, health, and the inspector."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from renderhub.render.access import AccessDenied, Grant, TokenCheck
from renderhub.render.assets import ModelResolver
from renderhub.render.assignment import ASSIGNED, Assignment, read_assignment
from renderhub.render.config import RenderConfig
from renderhub.render.http import ConnectionLimits, Request, Response, serve
from renderhub.render.inspector import INSPECTOR_HEADERS, INSPECTOR_PAGE
from renderhub.render.kept_scene import KeptScene, client_instance_id
from renderhub.render.revocation import FRESH_SECONDS, KeySerials, Revoked
from renderhub.render.stream_options import X264, StreamOptions

if TYPE_CHECKING:  # aiortc loads once a client comes
    from renderhub.render.peer import ClientStream

log = logging.getLogger("renderhub.render")
DEFAULT_STREAM = {"width": 1280, "height": 720, "fps": 30}


class RecentLog(logging.Handler):
    """The last lines this server logged, for the inspector."""

    def __init__(self, size: int = 100) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{time.strftime('%H:%M:%S', time.gmtime(record.created))} {record.getMessage()}")


class RenderServer:
    """One session's server: accepts one client at a time; when that client leaves, its scene waits the grace
    period for the next one, then resets. A pooled server (no session yet) accepts nobody until it is assigned one."""

    def __init__(
        self,
        session_id: str | None,
        config: RenderConfig,
        recent: RecentLog,
        *,
        renderer: str = "",
        encoder: str = X264,
        bind_host: str = "127.0.0.1",
    ) -> None:
        self.session_id = session_id
        self.config = config
        self.recent = recent
        self.tokens = TokenCheck(config.token_public_key, config.account_id)
        self.keys = KeySerials.asking(config.hub_url, config.hub_ca_pem)  # whether a token's key still holds
        self.started = time.time()
        self.client: ClientStream | None = None  # the one connected client's stream
        self.client_grant: Grant | None = None  # the token it connected with
        self.kept: KeptScene | None = None  # the scene of the client that left, until the grace period ends
        # Since when no client has been connected (monotonic; None while one is): the hub's idle stop reads it.
        self.idle_since: float | None = time.monotonic()
        self._kept_expiry: asyncio.Task[None] | None = None
        self._closing_workers: set[asyncio.Task[None]] = set()
        self.clients_served = 0
        self.models = ModelResolver(config)
        self.renderer = renderer  # the GL renderer the self-check found (llvmpipe, or the GPU's name)
        self.encoder = encoder  # the H.264 encoder it chose: h264_nvenc where the GPU has one
        self.stream_options = StreamOptions.from_config(
            config,
            session_id or "",
            h264_encoder=encoder,
            model_resolver=self.models.resolve,
            on_closed=self._client_left,
            keep_scene=self._keep_scene if config.scene_grace_seconds > 0 else None,
            loopback=_is_loopback(bind_host),
        )
        self._connecting = asyncio.Lock()

    def assign(self, assignment: Assignment) -> None:
        """Serve this session from now on: its account's tokens open the server (once: a server serves one
        session in its life)."""
        if self.session_id is not None:
            if self.session_id != assignment.session_id:
                log.warning("refused an assignment to session %s: serving %s", assignment.session_id, self.session_id)
            return
        self.session_id = assignment.session_id
        self.idle_since = time.monotonic()  # a pooled server's wait was nobody's idle time
        self.tokens = TokenCheck(self.config.token_public_key, assignment.account_id)
        self.keys.vouched()
        self.stream_options = dataclasses.replace(self.stream_options, session_id=assignment.session_id)
        log.info("assigned to session %s", assignment.session_id)

    def stream_settings(self, body: dict[str, Any]) -> dict[str, int]:
        """The client's resolution and frame rate, within this size's limits."""
        settings = {}
        limits = {"width": (64, self.config.max_width), "height": (64, self.config.max_height),
                  "fps": (1, self.config.max_fps)}  # fmt: skip
        for name, (low, high) in limits.items():
            value = body.get(name, DEFAULT_STREAM[name])
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"{name} must be an integer from {low} to {high} for a {self.config.size} session.")
            settings[name] = value - value % 2 if name != "fps" else value  # H.264 wants even sizes
        return settings

    async def handshake(self, request: Request) -> Response:
        if request.path == "/health" and request.method == "GET":
            idle = None if self.idle_since is None else round(time.monotonic() - self.idle_since, 1)
            return Response.json(200, {"status": "ok", "sessionId": self.session_id, "idleSeconds": idle})
        if request.path == "/offer" and request.method == "POST":
            return await self.offer(request)
        if request.path == "/reference" and request.method == "GET":
            return await self.reference(request)
        return Response.error(404, "NotFound", f"No such endpoint: {request.path[:100]}")

    async def reference(self, request: Request) -> Response:
        """A recent frame of the stream, lossless (PNG), by the pose it shows: what a client measures quality with."""
        try:
            await self.admit(request)
        except AccessDenied as exc:
            return Response.error(401, exc.code, exc.message)
        values = parse_qs(request.query).get("poseId", [])
        if len(values) != 1 or not values[0].isdigit() or len(values[0]) > 9:
            return Response.error(400, "BadRequest", "Give one poseId, the id of a pose the stream has shown.")
        pose_id = int(values[0])
        client = self.client
        frame = client.track.reference(pose_id) if client is not None else None
        if frame is None:
            return Response.error(404, "NotFound", f"No recent frame shows pose {pose_id}: only the latest poses' "
                                  "frames are kept, while a client streams.")  # fmt: skip
        return Response(200, await asyncio.to_thread(_png, frame), "image/png", {"Cache-Control": "no-store"})

    async def admit(self, request: Request) -> Grant:
        """The request's token, once it is valid for this session and its key still holds; else AccessDenied."""
        grant = self.tokens.check(request.headers.get("authorization"))
        await self.keys.check(grant.token, grant.key_slot, grant.key_serial)
        return grant

    async def watch_keys(self) -> None:
        """Close the stream of a client whose token is revoked (checked as often as the hub's answer goes stale)."""
        while True:
            await asyncio.sleep(FRESH_SECONDS)
            client, grant = self.client, self.client_grant
            if client is None or grant is None:
                continue
            try:
                await self.keys.check(grant.token, grant.key_slot, grant.key_serial)
            except Revoked as exc:
                log.info("closing the client's stream: its token was revoked")
                await client.end("TokenRevoked", exc.message)
            except AccessDenied:
                pass  # the hub is unreachable past the grace: new requests are refused, the stream goes on

    async def offer(self, request: Request) -> Response:
        try:
            grant = await self.admit(request)
        except AccessDenied as exc:
            return Response.error(401, exc.code, exc.message)
        try:
            body = json.loads(request.body)
            if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
                raise ValueError('The body must be a JSON object with "type": "offer" and an "sdp" string.')
            stream = self.stream_settings(body)
            instance_id = client_instance_id(body)
        except (ValueError, RecursionError) as exc:
            return Response.error(400, "BadRequest", str(exc) if isinstance(exc, ValueError) else "Malformed JSON.")
        async with self._connecting:
            if (current := self.client) is not None:
                reason = current.replaceable(instance_id)
                if reason is None:
                    return Response.error(
                        409, "ClientAlreadyConnected", "Another client is connected to this session; one at a time."
                    )
                log.info("a new client replaces the connected one: %s", reason)
                await current.close()  # its scene is kept for the new client
                self._forget_client()
            from renderhub.render.peer import ClientStream, OfferError  # aiortc loads once a client comes
            from renderhub.render.worker import WorkerError

            kept = self._take_kept()
            try:
                client = await ClientStream.accept(
                    body["sdp"], "offer", self.stream_options, width=stream["width"], height=stream["height"],
                    fps=stream["fps"], kept=kept, instance_id=instance_id,
                )  # fmt: skip
            except OfferError as exc:
                return Response.error(400, exc.code, f"The offer was refused: {exc.message}")
            except WorkerError as exc:
                log.error("the render worker did not start: %s", exc)
                return Response.error(503, exc.code, "Rendering could not start; retry shortly.")
            self.client, self.client_grant = client, grant
            self.idle_since = None
            answer = client.answer_sdp
            self.models.client_token = grant.token
            self.models.account_id = self.tokens.account_id
        self.clients_served += 1
        scene = "the scene kept from the client before" if client.kept else "a new scene"
        log.info("client connected: %dx%d at %d fps, %s", stream["width"], stream["height"], stream["fps"], scene)
        return Response.json(200, {"type": "answer", "sdp": answer})

    def _client_left(self) -> None:
        """The connected client's stream closed itself (its client left, or rendering failed)."""
        client = self.client
        if client is None or not client.closed.is_set():
            return  # a client replaced before: the one connected now is another
        grace = self.config.scene_grace_seconds
        log.info("client left; %s", f"scene kept for {grace:g} s" if self.kept else "scene reset")
        self._forget_client()
        if self.kept is None:
            self.models.forget()

    def _forget_client(self) -> None:
        self.client, self.client_grant = None, None
        self.idle_since = time.monotonic()
        self.models.client_token = None
        self.models.account_id = None

    def _keep_scene(self, kept: KeptScene) -> None:
        """A departed client's scene: the next client within the grace period takes it over; then it resets."""
        if (old := self._take_kept()) is not None:  # cannot be: a client takes the kept scene as it connects
            self._closing_workers.add(task := asyncio.create_task(old.worker.close()))
            task.add_done_callback(self._closing_workers.discard)
        self.kept = kept
        self._kept_expiry = asyncio.create_task(self._expire(kept, self.config.scene_grace_seconds))

    def _take_kept(self) -> KeptScene | None:
        kept, self.kept = self.kept, None
        if self._kept_expiry is not None:
            self._kept_expiry.cancel()
            self._kept_expiry = None
        return kept

    def _kept_status(self) -> dict[str, Any] | None:
        if self.kept is None:
            return None
        left = self.config.scene_grace_seconds - (time.monotonic() - self.kept.since)
        return {"model": self.kept.model, "secondsLeft": round(max(left, 0.0), 1)}

    async def _expire(self, kept: KeptScene, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.kept is kept:
            log.info("no client came within %g s: scene reset", seconds)
            self.kept, self._kept_expiry = None, None
            self.models.forget()
            await kept.worker.close()

    async def inspector(self, request: Request) -> Response:
        if request.path == "/" and request.method == "GET":
            return Response.html(INSPECTOR_PAGE, INSPECTOR_HEADERS)
        if request.path == "/status" and request.method == "GET":
            try:
                await self.admit(request)
            except AccessDenied as exc:
                return Response.error(401, exc.code, exc.message)
            client = self.client
            if client is not None and client.sent is not None:
                await client.sent.sample()
            return Response.json(200, self.status())
        return Response.error(404, "NotFound", f"No such page: {request.path[:100]}")

    def status(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "size": self.config.size,
            "pid": os.getpid(),
            "uptimeSeconds": round(time.time() - self.started, 1),
            "renderer": self.renderer,
            "encoder": self.encoder,
            "clientsServed": self.clients_served,
            "client": self.client.stats() if self.client is not None else None,
            "keptScene": self._kept_status(),
            "log": list(self.recent.lines),
        }

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        kept = self._take_kept()
        if kept is not None:
            await kept.worker.close()
        self.models.forget()
        await self.keys.close()


async def self_check(config: RenderConfig) -> tuple[str, str]:
    """Prove that the GL context and an H.264 encoder work before the handshake port opens: a session is
    Ready only once they do. Returns the GL renderer's name and the encoder chosen (NVENC where it opens)."""
    from renderhub.render.worker import RenderWorker

    # The encoders are probed in a thread (their imports included) while the worker process starts: about a
    # third of a second off every session's start.
    probes = asyncio.create_task(asyncio.to_thread(_probe_encoders))
    try:
        worker = await RenderWorker.start(64, 64, fps=1, device_index=config.device_index)
        try:
            renderer = str(worker.renderer_name)
        finally:
            await worker.close()
    except BaseException:
        await asyncio.gather(probes, return_exceptions=True)  # the GL failure is the one to report
        raise
    encoder = await probes
    log.info("renderer %s, encoder %s", renderer, encoder)
    return renderer, encoder


def _probe_encoders() -> str:
    """The H.264 encoder to use: each one is opened and encodes a frame, so one that cannot run fails here,
    not at the first client."""
    from renderhub.render.encoder import PREFERENCE, choose_h264_encoder, probe

    failures = {name: probe(name) for name in PREFERENCE}
    for name, failure in failures.items():
        if failure is not None:
            log.info("encoder %s unavailable: %s", name, failure)
    encoder = choose_h264_encoder({name: failure is None for name, failure in failures.items()})
    if encoder is None:
        raise RuntimeError("no H.264 encoder could be opened")
    return encoder


def _png(frame: Any) -> bytes:
    """A frame as PNG, compressed lightly: it is fetched over a local network, and fast matters more."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(frame.to_ndarray(format="rgb24")).save(out, "PNG", compress_level=1)
    return out.getvalue()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _tls(config: RenderConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def run(args: argparse.Namespace, handshake_socket: socket.socket, inspector_socket: socket.socket) -> None:
    """Serve a session on the two sockets `python -m renderhub.render` bound, once the self-check passes."""
    recent = RecentLog()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger().addHandler(recent)
    for chatty in ("aioice", "aiortc"):  # every ICE check at INFO would drown the inspector's log
        logging.getLogger(chatty).setLevel(logging.WARNING)
    handshake_port = handshake_socket.getsockname()[1]
    config = RenderConfig.load(Path(args.config))
    renderer, encoder = await self_check(config)
    server = RenderServer(args.session_id, config, recent, renderer=renderer, encoder=encoder, bind_host=args.host)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    if args.assignment_file:
        assignment_file = Path(args.assignment_file)

        def take_assignment() -> None:
            if (assignment := read_assignment(assignment_file)) is not None:
                server.assign(assignment)

        # The handler first, then a first look: an assignment written before the handler was there is not lost.
        loop.add_signal_handler(ASSIGNED, take_assignment)
        take_assignment()
    tls = _tls(server.config)
    limits = ConnectionLimits()  # one count for both ports: a client's connections to either add up
    # TLS is started by `serve`, not here, so the handshake counts against its deadline and its connection limits.
    inspector = await asyncio.start_server(serve(server.inspector, tls, limits), sock=inspector_socket)
    # The handshake port opens last: the hub takes an answer there to mean the server is ready.
    handshake = await asyncio.start_server(serve(server.handshake, tls, limits), sock=handshake_socket)
    log.info("render server for session %s on %s:%d", args.session_id or "(pooled)", args.host, handshake_port)
    watching = asyncio.create_task(server.watch_keys())
    async with handshake, inspector:
        await stopping.wait()
        watching.cancel()
        await server.close()
    log.info("render server stopped")
