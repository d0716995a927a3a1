"""The local backend: each render server is a process on this machine (`python -m renderhub.render`)."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path

from renderhub.backends.base import Backend, ServerSpec, ServerState, State
from renderhub.backends.health import answers, until_assigned
from renderhub.backends.launch import (
    ASSIGN_TIMEOUT,
    assignment_path,
    check_assignable,
    config_path,
    launched_for,
    ports_path,
    render_command,
    render_config,
    wait_for_ports,
)
from renderhub.clock import Clock
from renderhub.config import Settings
from renderhub.datadir import private_dir, secret_file
from renderhub.errors import BackendError
from renderhub.render.assignment import ASSIGNED, Assignment, read_assignment, write_assignment
from renderhub.tls import ensure_certificate


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
    return _proc_start_time(int(state["pid"])) == int(state["started"])


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
        self.cert, self.key = ensure_certificate(settings.tls_dir, "render", settings.certificate_hosts, Clock().now())
        self._trust = ssl.create_default_context(cafile=str(settings.tls_dir / "ca.pem"))

    async def start(self, spec: ServerSpec) -> tuple[str, State]:
        path = config_path(self.config_dir, spec)
        for existing in await self.servers():
            if _started_for(existing, spec):
                return self.hostname, await self._launched(existing)
        private_dir(self.log_dir)
        secret_file(self._log(spec))  # the server's output may carry what its clients sent: 0600 whatever the umask
        config = render_config(self.settings, spec, str(self.cert.resolve()), str(self.key.resolve()))
        config.dump(path)
        ports_path(path).unlink(missing_ok=True)  # a file from an earlier server of this seq's is not this one's
        command = render_command(self.bind_host, spec, self.hub_dir, path)
        # posix_spawn rather than Popen: no handle to keep, and setsid puts the server in a session of its
        # own, so it outlives a hub killed with SIGKILL (a restarted hub adopts it).
        try:
            pid = os.posix_spawn(
                command[0],
                command,
                {**os.environ, "PYTHONUNBUFFERED": "1"},
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, str(self._log(spec)), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ],
                setsid=True,
            )
        except OSError as exc:
            raise BackendError("RenderServerLaunchFailed", f"Could not launch the render server: {exc}") from exc
        started = _proc_start_time(pid)
        if started is None:
            raise BackendError("RenderServerLaunchFailed", "The render server exited at once.")
        seq = spec.session.session_seq if spec.session else None
        return self.hostname, await self._launched({"pid": pid, "started": started, "session_seq": seq,
                                                    "pool_id": spec.pool_id})  # fmt: skip

    def _log(self, spec: ServerSpec) -> Path:
        return self.log_dir / f"{spec.key}.log"

    def _config(self, state: State) -> Path:
        """The config file of the server a state points at (a pooled server's keeps its pool name)."""
        key = f"pool-{state['pool_id']}" if state.get("pool_id") else f"session-{state['session_seq']}"
        return self.config_dir / f"{key}.json"

    async def _launched(self, found: State) -> State:
        """The state of a launched server (pid, start time, seq, pool id), once it has bound its ports."""
        config = self._config(found)
        handshake_port, inspector_port = await asyncio.to_thread(
            wait_for_ports, ports_path(config), lambda: _alive(found)
        )
        return {
            **found,
            "host": self.bind_host,
            "handshake_port": handshake_port,
            "inspector_port": inspector_port,
            "log": str(self.log_dir / f"{config.stem}.log"),
        }

    async def assign(self, state: State, session: Assignment) -> State:
        path = assignment_path(self._config(state))
        if not _alive(state):
            raise BackendError("RenderServerExited", "The pooled render server is gone.")
        check_assignable(read_assignment(path), session)
        write_assignment(path, session)
        os.kill(int(state["pid"]), ASSIGNED)
        host, port = _probe_host(state), int(state["handshake_port"])
        await until_assigned(host, port, self._trust, session.session_id, ASSIGN_TIMEOUT, lambda: _alive(state))
        return {**state, "session_seq": session.session_seq}

    async def poll(self, state: State) -> ServerState:
        if not _alive(state):
            return ServerState.GONE
        if await answers(_probe_host(state), int(state["handshake_port"]), self._trust):
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
        for pid, (seq, pool_id) in render_servers(self.hub_dir).items():
            started = _proc_start_time(pid)
            if started is not None:
                found.append({"pid": pid, "started": started, "session_seq": seq, "pool_id": pool_id})
        return found

    def identity(self, state: State) -> str:
        return f"{state['pid']}@{state['started']}"


def _probe_host(state: State) -> str:
    """Where this host reaches a server listening on every address: loopback."""
    return "127.0.0.1" if state["host"] in ("0.0.0.0", "::") else str(state["host"])


def render_servers(hub_dir: str) -> dict[int, tuple[int | None, str]]:
    """pid -> (session seq, pool id) of the render servers started for the hub with this (resolved) data dir
    (a pooled server's seq is its assignment's, None while it has none)."""
    return {
        pid: launched
        for pid, args in command_lines()
        if "renderhub.render" in args
        and _flag(args, "--hub-dir") == hub_dir
        and (launched := launched_for(args)) is not None
    }


def _started_for(state: State, spec: ServerSpec) -> bool:
    """Whether a found server is the one a spec asks for: its session's (launched or assigned), or its pool id's."""
    if spec.session:
        return bool(state["session_seq"] == spec.session.session_seq)
    return bool(state["pool_id"] == spec.pool_id)


def command_lines() -> Iterator[tuple[int, list[str]]]:
    """(pid, arguments) of every process this user can see."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        yield int(entry.name), args


def _flag(args: list[str], name: str) -> str | None:
    try:
        return args[args.index(name) + 1]
    except (ValueError, IndexError):
        return None
