"""The local backend: each render server is a process on this machine (`python -m renderhub.render`)."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from pathlib import Path

from renderhub.backends.base import Backend, ServerSpec, ServerState, State
from renderhub.clock import Clock
from renderhub.config import Settings
from renderhub.errors import BackendError
from renderhub.render.config import RenderConfig
from renderhub.tls import ensure_certificate

PROBE_TIMEOUT = 0.5


def _proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (to tell it from a later process with a reused pid);
    None when no live process has this pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        _reap(pid)
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    """Collect an exited child of ours so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _alive(state: State) -> bool:
    return _proc_start_time(int(state["pid"])) == state["started"]


async def _answers(host: str, port: int, trust: ssl.SSLContext) -> bool:
    """Whether the render server answers its health check on this port (HTTPS, our CA's certificate)."""
    try:
        connecting = asyncio.open_connection(host, port, ssl=trust, server_hostname=host)
        reader, writer = await asyncio.wait_for(connecting, PROBE_TIMEOUT)
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    try:
        writer.write(b"GET /health HTTP/1.0\r\nHost: renderhub\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT)
        return status_line.split()[1:2] == [b"200"]
    except (OSError, TimeoutError, IndexError):
        return False
    finally:
        writer.close()


class LocalBackend(Backend):
    """Render servers as child processes in their own process group, so they outlive a killed hub."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hub_dir = str(settings.data_dir.resolve())
        self.bind_host = settings.host
        self.hostname = settings.advertised_host
        self.stop_grace = settings.stop_grace_seconds
        self.log_dir = settings.data_dir / "logs"
        self.config_dir = settings.data_dir / "render"
        # One certificate from the hub's CA for every render server on this host: clients connect to
        # hostname:handshakePort over HTTPS and trust the same ca.pem as for the hub.
        hosts = ["localhost", "127.0.0.1", self.hostname]
        if self.bind_host not in ("0.0.0.0", "::"):
            hosts.append(self.bind_host)
        self.cert, self.key = ensure_certificate(settings.tls_dir, "render", hosts, Clock().now())
        self._trust = ssl.create_default_context(cafile=str(settings.tls_dir / "ca.pem"))

    def _config(self, spec: ServerSpec) -> Path:
        profile = spec.profile
        max_mb = profile.get("max_model_mb")
        config = RenderConfig(
            account_id=spec.account_id,
            size=spec.size,
            tls_cert=str(self.cert.resolve()),
            tls_key=str(self.key.resolve()),
            token_public_key=spec.token_public_key,
            asset_roots=[str(root.resolve()) for root in self.settings.asset_roots],
            max_primitives=profile.get("max_primitives"),
            max_model_bytes=int(max_mb * 1024 * 1024) if max_mb else RenderConfig.max_model_bytes,
            max_width=int(profile.get("max_width", RenderConfig.max_width)),
            max_height=int(profile.get("max_height", RenderConfig.max_height)),
            max_fps=int(profile.get("max_fps", RenderConfig.max_fps)),
            ice_servers=self.settings.ice_servers,
            allow_private_urls=self.settings.allow_private_model_urls,
        )
        path = self.config_dir / f"session-{spec.session_seq}.json"
        config.dump(path)
        return path

    def _command(self, spec: ServerSpec) -> list[str]:
        return [
            sys.executable, "-m", "renderhub.render",
            "--host", self.bind_host,
            "--handshake-port", str(spec.handshake_port),
            "--inspector-port", str(spec.inspector_port),
            "--session-id", spec.session_id,
            "--hub-dir", self.hub_dir,
            "--config", str(self._config(spec).resolve()),
        ]  # fmt: skip

    async def start(self, spec: ServerSpec) -> tuple[str, State]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"session-{spec.session_seq}.log"
        command = self._command(spec)
        # posix_spawn rather than Popen: no handle to keep, and setsid puts the server in a session of its
        # own, so it outlives a hub killed with SIGKILL (a restarted hub adopts it).
        try:
            pid = os.posix_spawn(
                command[0],
                command,
                {**os.environ, "PYTHONUNBUFFERED": "1"},
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ],
                setsid=True,
            )
        except OSError as exc:
            raise BackendError("RenderServerLaunchFailed", f"Could not launch the render server: {exc}") from exc
        started = _proc_start_time(pid)
        if started is None:
            raise BackendError("RenderServerLaunchFailed", "The render server exited at once.")
        state = {
            "pid": pid,
            "started": started,
            "host": self.bind_host,
            "handshake_port": spec.handshake_port,
            "inspector_port": spec.inspector_port,
            "log": str(log_path),
        }
        return self.hostname, state

    async def poll(self, state: State) -> ServerState:
        if not _alive(state):
            return ServerState.GONE
        probe_host = "127.0.0.1" if state["host"] in ("0.0.0.0", "::") else state["host"]
        if await _answers(probe_host, int(state["handshake_port"]), self._trust):
            return ServerState.RUNNING
        return ServerState.STARTING

    async def stop(self, state: State) -> None:
        pid = int(state["pid"])
        for sig, wait in ((signal.SIGTERM, self.stop_grace), (signal.SIGKILL, 5.0)):
            if not _alive(state):
                return
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = asyncio.get_running_loop().time() + wait
            while asyncio.get_running_loop().time() < deadline:
                if not _alive(state):
                    return
                await asyncio.sleep(0.02)

    async def servers(self) -> list[State]:
        found = []
        for pid in render_server_pids(self.hub_dir):
            started = _proc_start_time(pid)
            if started is not None:
                found.append({"pid": pid, "started": started})
        return found

    def identity(self, state: State) -> str:
        return f"{state['pid']}@{state['started']}"


def render_server_pids(hub_dir: str) -> list[int]:
    """Render servers started for the hub with this (resolved) data dir, found by their command lines."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "renderhub.render" in args and _flag(args, "--hub-dir") == hub_dir:
            pids.append(int(entry.name))
    return pids


def _flag(args: list[str], name: str) -> str | None:
    try:
        return args[args.index(name) + 1]
    except (ValueError, IndexError):
        return None
