"""A hub killed with SIGKILL and restarted re-adopts its sessions' render servers and stops orphans."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.hubs import RunningHub, free_port, pid_alive, render_server_pids, wait_for


def ready_session(hub: RunningHub, session_id: str) -> dict[str, object]:
    with hub.client() as client:
        client.create(session_id, "Standard", 30)
        return wait_for(lambda: (s := client.get(session_id))["status"] == "Ready" and s, timeout=15)  # type: ignore[no-any-return]


def server_pid(hub: RunningHub, session: dict[str, object]) -> int:
    """The render server of a session, found through /proc like an operator would (its command line names it)."""
    [pid] = [p for p in render_server_pids(hub.data_dir) if _flag(p, "--session-id") == session["id"]]
    return pid


def _flag(pid: int, name: str) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return args[args.index(name) + 1]


def test_sigkilled_hub_restarts_and_readopts(hub_factory: Callable[..., RunningHub]) -> None:
    hub = hub_factory("--rate-limit", "0")
    kept, watched = ready_session(hub, "kept"), ready_session(hub, "watched")
    kept_pid, watched_pid = server_pid(hub, kept), server_pid(hub, watched)

    hub.stop(signal.SIGKILL)
    assert pid_alive(kept_pid) and pid_alive(watched_pid), "render servers must outlive their hub"
    # A render server that belongs to no session, as a crashed start could leave behind.
    orphan_config = hub.data_dir / "render" / "session-999.json"
    shutil.copy(hub.data_dir / "render" / "session-1.json", orphan_config)
    orphan = subprocess.Popen(
        [sys.executable, "-m", "renderhub.render", "--session-id", "ghost", "--hub-dir", str(hub.data_dir.resolve()),
         "--handshake-port", str(free_port()), "--inspector-port", str(free_port()),
         "--config", str(orphan_config)],
        start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: orphan.pid in render_server_pids(hub.data_dir), timeout=5)

    hub.start()
    assert orphan.wait(timeout=10) is not None, "the orphan must be stopped"
    with hub.client() as client:
        assert client.get("kept")["status"] == "Ready"
        assert client.get("watched")["status"] == "Ready"
        assert {s["id"] for s in client.list()} == {"kept", "watched"}
        assert pid_alive(kept_pid) and pid_alive(watched_pid)

        # The new hub can stop an adopted server ...
        client.stop("kept")
        wait_for(lambda: not pid_alive(kept_pid), timeout=10)
        assert client.get("kept")["status"] == "Stopped"

        # ... and watches the health of the other.
        os.kill(watched_pid, signal.SIGKILL)
        failed = wait_for(lambda: (s := client.get("watched"))["status"] == "Error" and s, timeout=5)
        assert failed["error"]["code"] == "RenderServerLost"
    # The log says when: every record of the hub's and of uvicorn's starts with its time. The orphan was named as
    # one; "kept", stopped through the API, was not (its hub stopped it, without the reaper's warning).
    records = [line for line in hub.log.splitlines() if re.search(r"\b(INFO|WARNING|ERROR)\b", line)]
    assert records and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line) for line in records), records
    assert hub.log.count("belongs to no live session") == 1
