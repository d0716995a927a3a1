"""What the benchmarks need of the servers they start: a free port, waiting until one answers, a Ready session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from renderhub.backends.local import render_servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_ready(client: Any, session_id: str, timeout: float = 60) -> str | None:
    """Create a Standard session (30 min lease) and wait until it is Ready; the status it ended in otherwise."""
    client.create(session_id, "Standard", 30)
    deadline = time.monotonic() + timeout
    while (status := client.get(session_id)["status"]) != "Ready":
        if status != "Starting" or time.monotonic() > deadline:
            return str(status)
        time.sleep(0.1)
    return None


def wait_until(
    process: subprocess.Popen[bytes], url: str, log: Path, verify: Callable[[], Any], timeout: float
) -> None:
    """Poll `url` until it answers 200; fail with the log if the process exits or the time runs out.
    `verify` is called on each try: a server may write its CA file only once it starts."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, verify=verify(), timeout=1).status_code == 200:
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def kill_render_servers(hub_dir: Path) -> None:
    """The local backend starts render servers in sessions of their own: they outlive the hub unless killed.
    Their render workers die with them (PR_SET_PDEATHSIG)."""
    for pid in render_servers(str(hub_dir.resolve())):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_process(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM a process (unless it ended), wait `grace` seconds for it, then kill it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_after(limit: float, out_of_time: type[BaseException] = TimeoutError) -> None:
    """End the benchmark with `out_of_time` after `limit` seconds, and cleanly on SIGTERM (its finally blocks
    stop what it started)."""

    def give_up(_signum: int, _frame: object) -> None:
        raise out_of_time(f"the benchmark ran past {limit:.0f} s")

    def terminated(_signum: int, _frame: object) -> None:
        raise SystemExit("terminated")

    signal.signal(signal.SIGALRM, give_up)
    signal.signal(signal.SIGTERM, terminated)
    signal.alarm(int(limit))
