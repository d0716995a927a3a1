"""Where a conversion's process runs: a child of this hub (the local backend), or a Ray task on a cluster node (the
Ray backend). Either way the same process, `python -m renderhub.conversion.job`, with the job's spec on stdin."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from renderhub.backends import Backend
from renderhub.datadir import private_dir

# A Ray task's own limit ends its process; the hub waits this much longer before it cancels the task itself.
RAY_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class JobEnd:
    """How a conversion process ended: its exit code (None: killed at its wall-clock limit) and its output."""

    code: int | None
    stdout: bytes
    stderr: bytes


class ConversionPlace(Protocol):
    # The hub's URL as the process reaches it, for the hub's own storage over HTTPS with a token, and the CA that
    # vouches for it (None: the system's trust store); a hub_url of None: the process reads the storage folder.
    hub_url: str | None
    ca_pem: str | None

    async def run(self, name: str, spec: dict[str, Any], limit_seconds: float) -> JobEnd:
        """Run one attempt of a conversion (`name`: its seq and attempt) to its end or its limit."""
        ...


class HubProcesses:
    """Conversions as children of this hub, each in a work folder of the data dir."""

    hub_url: str | None = None
    ca_pem: str | None = None

    def __init__(self, data_dir: Path) -> None:
        self.runs = data_dir / "conversions"

    async def run(self, name: str, spec: dict[str, Any], limit_seconds: float) -> JobEnd:
        seq = name.split("-", 1)[0]
        for earlier in self.runs.glob(f"{seq}-*"):  # an attempt whose runner died (or this hub, killed)
            shutil.rmtree(earlier, ignore_errors=True)
        work = self.runs / name
        private_dir(work)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "renderhub.conversion.job",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=work, env={**os.environ, "TMPDIR": str(work)},  # assimp's scratch files too: gone with the run
        )  # fmt: skip
        stdin = json.dumps({**spec, "work": str(work)}).encode()  # it holds SAS tokens: never on a command line
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(stdin), limit_seconds)
        except TimeoutError:
            return JobEnd(None, b"", b"")
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            shutil.rmtree(work, ignore_errors=True)
        return JobEnd(process.returncode, stdout, stderr)


class RayTasks:
    """Conversions as Ray tasks of one CPU each, on whichever node has one free; the hub is their owner, so they end
    with it (and are claimed again)."""

    def __init__(self, hub_url: str, ca_pem: str | None) -> None:
        import ray  # the Ray backend has joined the cluster

        from renderhub.conversion.node import run_conversion

        self.hub_url: str | None = hub_url
        self.ca_pem = ca_pem
        self._ray = ray
        self._task = ray.remote(num_cpus=1, max_retries=0)(run_conversion)

    async def run(self, name: str, spec: dict[str, Any], limit_seconds: float) -> JobEnd:
        ref = self._task.options(name=f"renderhub-conversion-{name}").remote(spec, limit_seconds)
        try:
            code, stdout, stderr = await asyncio.wait_for(ref, limit_seconds + RAY_GRACE_SECONDS)
        except (TimeoutError, asyncio.CancelledError) as exc:
            # Past its limit (it waited that long for a free CPU, or its node stopped answering), or this hub is
            # stopping: the task goes, and its process with its worker.
            self._ray.cancel(ref, force=True)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return JobEnd(None, b"", b"")
        except self._ray.exceptions.RayError as exc:
            # Its worker or node died under it: an internal error, as when a local process ends without a report.
            return JobEnd(1, b"", f"the conversion's Ray task failed: {exc}".encode())
        return JobEnd(code, stdout, stderr)


def conversion_place(backend: Backend, data_dir: Path) -> ConversionPlace:
    """Ray tasks with the Ray backend, else this hub's children."""
    if backend.name == "ray":
        from renderhub.backends.ray import RayBackend

        assert isinstance(backend, RayBackend)
        return RayTasks(backend.hub_url, backend.ca_pem)
    return HubProcesses(data_dir)
