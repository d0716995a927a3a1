"""Benchmark a real hub over TLS: GET latency and throughput beside a bare endpoint, and create-to-Ready time, cold
and from a warm pool."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa

from processes import free_port, kill_render_servers, stop_after, stop_process, wait_until
from renderhub.auth import new_account
from renderhub.bootstrap import tls_files
from renderhub.clock import Clock
from renderhub.config import Settings
from renderhub.models import ServerSize, Session, SessionStatus
from renderhub.store import open_store

RENDERHUB = str(Path(sys.executable).parent / "renderhub")
API = "api-version=2021-01-01"
JSON = "application/json; charset=utf-8"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The targets.
TARGET_P99_MS = 10.0
TARGET_RATIO = 0.5
TARGET_READY_S = 1.5
TARGET_WARM_S = 0.1  # issue 14: from a warm pool
T = TypeVar("T")


# Servers: a real hub, and a bare FastAPI endpoint on the same uvicorn settings


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all processes on this machine have spent busy (not idle or waiting on I/O), from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


@dataclass
class Server:
    """A server subprocess, its URL and its log."""

    name: str
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def wait_until(self, path: str, verify: ssl.SSLContext, timeout: float = 30.0) -> None:
        wait_until(self.process, self.base + path, self.log, lambda: verify, timeout)

    def stop(self) -> None:
        stop_process(self.process)


@contextmanager
def server(name: str, command: list[str], port: int, log: Path) -> Iterator[Server]:
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    running = Server(name, process, f"https://127.0.0.1:{port}", log)
    try:
        yield running
    finally:
        running.stop()


def serve_bare(port: int, cert: str, key: str, body_file: str) -> None:
    """The baseline: one FastAPI route answering a fixed session body, run exactly as `renderhub serve` runs."""
    import uvicorn
    from fastapi import FastAPI
    from starlette.responses import Response

    body = Path(body_file).read_bytes()
    app = FastAPI()

    @app.get("/accounts/{account_id}/sessions/{session_id}")
    async def get_session(account_id: str, session_id: str) -> Response:
        return Response(body, media_type=JSON)

    uvicorn.run(
        app, host="127.0.0.1", port=port, ssl_certfile=cert, ssl_keyfile=key,
        log_level="info", access_log=False, timeout_graceful_shutdown=5,
    )  # fmt: skip


# The store: an account and its ended sessions, written before the hub starts


async def populate(data_dir: Path, count: int) -> tuple[str, str, list[str]]:
    """An account and `count` Stopped sessions in the hub's SQLite database; returns (account id, key, ids)."""
    now = datetime.now(UTC)
    account, key, _ = new_account("bench", now)
    ids = []
    async with open_store(Settings(data_dir=data_dir).async_database_url) as repo:
        await repo.insert_account(account)
        for i in range(count):
            created = now - timedelta(hours=2) + timedelta(seconds=i)
            session = Session(
                account_id=account.id, id=f"bench-{i:04d}", size=ServerSize.STANDARD, max_lease_minutes=30,
                status=SessionStatus.STOPPED, created_at=created, ready_at=created + timedelta(seconds=1),
                ended_at=created + timedelta(minutes=20), hostname="127.0.0.1", handshake_port=50000 + i,
                inspector_port=60000 + i, teraflops=8.1, backend="local",
            )  # fmt: skip
            await repo.insert_session(session)
            ids.append(session.id)
    return account.id, key, ids


# Load: one process, asyncio, N concurrent keep-alive connections per server


@dataclass
class Load:
    """What the measured slices of one server added up to."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0  # measured time, the slices together
    cpu: dict[str, float] = field(default_factory=lambda: {"server": 0.0, "client": 0.0, "other": 0.0})

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def cores(self, who: str) -> float:
        """CPU use as a share of one core over the measured time."""
        return self.cpu[who] / self.seconds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class RawConnection:
    """A minimal keep-alive HTTP/1.1 client on an asyncio TLS stream: a fraction of httpx's CPU per request,
    so the one client process does not become the bottleneck on a 2-core machine."""

    def __init__(self, base: str, headers: dict[str, str], verify: ssl.SSLContext) -> None:
        self.url = httpx.URL(base)
        self.header_lines = "".join(f"{k}: {v}\r\n" for k, v in {"Host": self.url.netloc.decode(), **headers}.items())
        self.verify = verify
        self.reconnects = -1
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, base: str, headers: dict[str, str], verify: ssl.SSLContext) -> RawConnection:
        connection = cls(base, headers, verify)
        await connection.connect()
        return connection

    async def connect(self) -> None:
        await self.close()
        self.reader, self.writer = await asyncio.open_connection(self.url.host, self.url.port, ssl=self.verify)
        self.reconnects += 1

    async def get(self, path: str) -> bool:
        """GET path; whether the answer was a 200 with a JSON object."""
        status, body = await self.send(f"GET {path} HTTP/1.1\r\n{self.header_lines}\r\n".encode())
        return status == 200 and body[:1] == b"{"

    async def put(self, path: str, body: bytes) -> tuple[int, bytes]:
        """PUT a JSON body; the answer's status and body."""
        head = (f"PUT {path} HTTP/1.1\r\n{self.header_lines}Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        return await self.send(head.encode() + body)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """One request and its answer (status, body), once more on a fresh connection if this one closed:
        uvicorn closes one idle for 5 s (while another server was measured, for instance). Both requests
        sent here are safe to repeat: a GET, and a create, which answers the same session again."""
        try:
            return await self._exchange(request)
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.connect()
            return await self._exchange(request)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        assert self.reader and self.writer
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return int(head[9:12]), await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer:
            self.writer.close()


class HttpxConnection:
    """The same, through httpx.AsyncClient limited to one connection (heavier on the client's CPU)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @classmethod
    async def open(cls, base: str, headers: dict[str, str], verify: ssl.SSLContext) -> HttpxConnection:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        return cls(httpx.AsyncClient(base_url=base, verify=verify, headers=headers, timeout=10, limits=limits))

    async def get(self, path: str) -> bool:
        return (await self.client.get(path)).status_code == 200

    async def close(self) -> None:
        await self.client.aclose()


@dataclass
class Target:
    """A server under load: its connections, their random streams, and what was measured."""

    name: str
    pid: int
    connections: list[RawConnection | HttpxConnection]
    rngs: list[random.Random]
    load: Load = field(default_factory=Load)


async def drive(target: Target, path: Callable[[random.Random], str], seconds: float, measure: bool) -> None:
    """Keep every connection busy for `seconds`; when measuring, record requests answered within them."""
    start = time.perf_counter()
    stop_at = start + seconds
    load = target.load

    async def worker(connection: RawConnection | HttpxConnection, rng: random.Random) -> None:
        while (sent := time.perf_counter()) < stop_at:
            ok = await connection.get(path(rng))
            answered = time.perf_counter()
            if measure and answered <= stop_at:
                if ok:
                    load.latencies.append(answered - sent)
                else:
                    load.errors += 1

    before = cpu_seconds(target.pid), time.process_time(), machine_busy_seconds()
    await asyncio.gather(*(worker(c, r) for c, r in zip(target.connections, target.rngs, strict=True)))
    after = cpu_seconds(target.pid), time.process_time(), machine_busy_seconds()
    if measure:
        server, client, machine = (b - a for a, b in zip(before, after, strict=True))
        load.seconds += seconds
        load.cpu["server"] += server
        load.cpu["client"] += client
        load.cpu["other"] += max(0.0, machine - server - client)


async def measure(
    servers: list[tuple[str, str, int]], path: Callable[[random.Random], str], headers: dict[str, str],
    verify: ssl.SSLContext, args: argparse.Namespace,
) -> list[Load]:  # fmt: skip
    """Warm each (name, base URL, pid) server up, then measure them in alternating slices, so that whatever
    else runs on this machine meanwhile disturbs them alike."""
    kind: type[RawConnection | HttpxConnection] = RawConnection if args.client == "raw" else HttpxConnection
    targets = []
    for i, (name, base, pid) in enumerate(servers):
        connections: list[RawConnection | HttpxConnection] = []
        for _ in range(args.concurrency):
            connections.append(await kind.open(base, headers, verify))
        rngs = [random.Random(i * 1000 + n) for n in range(args.concurrency)]
        targets.append(Target(name, pid, connections, rngs))
    try:
        for target in targets:
            print(f"warming {target.name} up for {args.warmup:g} s ...", flush=True)
            await drive(target, path, args.warmup, measure=False)
        print(f"measuring {', '.join(t.name for t in targets)} in {args.rounds} alternating rounds ...", flush=True)
        for _ in range(args.rounds):
            for target in targets:
                await drive(target, path, args.duration / args.rounds, measure=True)
    finally:
        for target in targets:
            for connection in target.connections:
                await connection.close()
    return [t.load for t in targets]


def run_loop(work: Coroutine[Any, Any, T]) -> T:
    """Run the load on uvloop (as uvicorn runs the servers), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    return uvloop.run(work)


# Create-to-Ready with the local backend


def create_to_ready(
    client: httpx.Client, base: str, count: int, poll: float, before_each: Callable[[], None] = lambda: None
) -> list[float]:
    """Seconds from sending each create to the first answer saying Ready (the create's own answer counts: from a
    warm pool it is Ready); each session is stopped afterwards. `before_each` runs before each create, unmeasured."""
    times = []
    for i in range(count):
        before_each()
        url = f"{base}/sessions/ready-{i:02d}"
        sent = time.perf_counter()
        created = client.put(f"{url}?{API}", json={"maxLeaseTimeMinutes": 10, "size": "Standard"})
        if created.status_code != 201:
            raise RuntimeError(f"create answered {created.status_code}: {created.text}")
        status = created.json()["status"]
        deadline = sent + 30
        while status != "Ready":
            if status != "Starting" or time.perf_counter() > deadline:
                raise RuntimeError(f"session ready-{i:02d} ended up {status}")
            time.sleep(poll)
            status = client.get(f"{url}?{API}").json()["status"]
        times.append(time.perf_counter() - sent)
        stopped = client.post(f"{url}/:stop?{API}")
        if stopped.status_code != 204:
            raise RuntimeError(f"stop answered {stopped.status_code}: {stopped.text}")
    return times


def pool_filled(data_dir: Path, size: int, timeout: float = 60) -> Callable[[], None]:
    """A wait until the hub's warm pool holds `size` Ready servers (read from its SQLite database)."""
    database = sa.engine.make_url(Settings(data_dir=data_dir).async_database_url).database

    def wait() -> None:
        deadline = time.monotonic() + timeout
        query = "SELECT count(*) FROM pooled_servers WHERE status = 'Ready'"
        while (ready := sqlite3.connect(database).execute(query).fetchone()[0]) < size:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the warm pool holds {ready} Ready servers after {timeout:g} s, not {size}")
            time.sleep(0.05)

    return wait


def warm_create_to_ready(tmp: Path, args: argparse.Namespace) -> list[float]:
    """create-to-Ready on a hub keeping a warm pool of `args.warm_pool` Standard servers, full before each create."""
    data_dir = tmp / "warm-hub"
    data_dir.mkdir()
    account_id, key, _ = asyncio.run(populate(data_dir, 0))
    port = free_port()
    ca, _, _ = tls_files(Settings(data_dir=data_dir, port=port), Clock())
    assert ca
    command = [RENDERHUB, "serve", "--data-dir", str(data_dir), "--port", str(port), "--rate-limit", "0",
               "--warm-pool", f"Standard={args.warm_pool}"]  # fmt: skip
    try:
        with server("warm hub", command, port, tmp / "warm-hub.log") as hub:
            verify = ssl.create_default_context(cafile=str(ca))
            hub.wait_until("/health", verify)
            headers = {"Authorization": f"Bearer {token(hub.base, account_id, key, verify)}"}
            print(f"creating {args.creates} sessions one by one from a warm pool of {args.warm_pool} ...", flush=True)
            with httpx.Client(verify=verify, headers=headers, timeout=10) as client:
                base = f"{hub.base}/accounts/{account_id}"
                return create_to_ready(client, base, args.creates, args.poll, pool_filled(data_dir, args.warm_pool))
    finally:
        kill_render_servers(data_dir)


def token(base: str, account_id: str, key: str, verify: ssl.SSLContext) -> str:
    """The account's access token from the hub's token service."""
    answer = httpx.get(f"{base}/Accounts/{account_id}/token?api-version=2019-02-28-preview",
                       headers={"Authorization": f"Bearer {account_id}:{key}"}, verify=verify)  # fmt: skip
    answer.raise_for_status()
    return str(answer.json()["AccessToken"])


# The run


def report(hub: Load, bare: Load, ready: list[float], warm: list[float], args: argparse.Namespace) -> None:
    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.2f}" if values else "-"

    window = f"{args.duration:g} s each in {args.rounds} alternating rounds, after {args.warmup:g} s warm-up"
    print(f"\nGET one session: {args.concurrency} concurrent {args.client} clients, {window}")
    print(f"{'':26}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'req/s':>9}{'errors':>8}"
          f"{'server CPU':>12}{'client CPU':>12}{'other CPU':>11}")  # fmt: skip
    for name, r in ((f"hub ({args.sessions} sessions stored)", hub), ("bare FastAPI endpoint", bare)):
        print(f"{name:26}{ms(r.latencies, 0.5):>9}{ms(r.latencies, 0.9):>9}{ms(r.latencies, 0.99):>9}"
              f"{ms(r.latencies, 1.0):>9}{r.rate:>9.0f}{r.errors:>8}{r.cores('server'):>11.0%}"
              f"{r.cores('client'):>11.0%} {r.cores('other'):>10.0%}")  # fmt: skip
    ratio = hub.rate / bare.rate if bare.rate else 0.0
    p99 = percentile(hub.latencies, 0.99) * 1000 if hub.latencies else math.inf
    median = statistics.median(ready) if ready else math.inf
    warm_median = statistics.median(warm) if warm else math.inf
    print(f"\ncreate-to-Ready, local backend, from sending the create to the first answer saying Ready "
          f"(GET every {args.poll * 1000:g} ms while Starting):")  # fmt: skip
    for name, times in (("cold", ready), (f"warm pool of {args.warm_pool}", warm)):
        print(f"  {name:18} {len(times)} sessions: " + " ".join(f"{t:.3f}" for t in times) + " s")
        print(f"  {'':18} median {statistics.median(times):.3f} s   p90 {percentile(times, 0.9):.3f} s   "
              f"max {max(times):.3f} s")  # fmt: skip
    print(f"\n{'figure':34}{'measured':>14}{'target':>14}   verdict")
    rows = [
        ("GET p99, 1,000 sessions stored", f"{p99:.2f} ms", f"<= {TARGET_P99_MS:g} ms", p99 <= TARGET_P99_MS),
        ("throughput hub / bare", f"{ratio:.2f}", f">= {TARGET_RATIO:g}", ratio >= TARGET_RATIO),
        ("create-to-Ready median, cold", f"{median:.3f} s", f"<= {TARGET_READY_S:g} s", median <= TARGET_READY_S),
        (
            "create-to-Ready median, warm pool",
            f"{warm_median:.3f} s",
            f"<= {TARGET_WARM_S:g} s",
            warm_median <= TARGET_WARM_S,
        ),
    ]
    for name, measured, target, met in rows:
        print(f"{name:34}{measured:>14}{target:>14}   {'met' if met else 'MISSED'}")
    print(f"\n(hub {hub.rate:.0f} req/s, bare {bare.rate:.0f} req/s)")
    print("CPU: share of one core over the measured window; other CPU: every other process on this machine")
    busy = max(hub.cores("other"), bare.cores("other"))
    if busy > 0.1:
        print(f"WARNING: other processes used up to {busy:.0%} of a core while measuring: the figures are disturbed")


def run(args: argparse.Namespace, tmp: Path) -> None:
    data_dir = tmp / "hub"
    data_dir.mkdir()
    started = time.perf_counter()
    account_id, key, ids = asyncio.run(populate(data_dir, args.sessions))
    print(f"stored {len(ids)} Stopped sessions for account {account_id} in {time.perf_counter() - started:.1f} s")
    hub_port, bare_port = free_port(), free_port()
    # The certificates the hub would make on its first start; made here so the client can trust its CA at once.
    ca, cert, cert_key = tls_files(Settings(data_dir=data_dir, port=hub_port), Clock())
    assert ca and cert and cert_key
    command = [RENDERHUB, "serve", "--data-dir", str(data_dir), "--port", str(hub_port), "--rate-limit", "0"]
    try:
        with server("hub", command, hub_port, tmp / "hub.log") as hub:
            verify = ssl.create_default_context(cafile=str(ca))
            hub.wait_until("/health", verify)
            headers = {"Authorization": f"Bearer {token(hub.base, account_id, key, verify)}"}
            base = f"{hub.base}/accounts/{account_id}"
            sample = httpx.get(f"{base}/sessions/{ids[0]}?{API}", headers=headers, verify=verify)
            sample.raise_for_status()
            (tmp / "body.json").write_bytes(sample.content)
            print(f"session body ({len(sample.content)} bytes): {sample.text}")

            bare_command = [
                sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(bare_port),
                str(cert), str(cert_key), str(tmp / "body.json"),
            ]  # fmt: skip
            with server("bare", bare_command, bare_port, tmp / "bare.log") as bare:
                bare.wait_until(f"/accounts/{account_id}/sessions/{ids[0]}", verify)

                def path(rng: random.Random) -> str:
                    return f"/accounts/{account_id}/sessions/{rng.choice(ids)}?{API}"

                servers = [("hub", hub.base, hub.process.pid), ("bare", bare.base, bare.process.pid)]
                hub_load, bare_load = run_loop(measure(servers, path, headers, verify, args))
            print(f"creating {args.creates} sessions one by one ...", flush=True)
            with httpx.Client(verify=verify, headers=headers, timeout=10) as client:
                ready = create_to_ready(client, base, args.creates, args.poll)
    finally:
        kill_render_servers(data_dir)
    warm = warm_create_to_ready(tmp, args)
    report(hub_load, bare_load, ready, warm, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=1000, help="ended sessions stored for the account")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent GET clients")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per server")
    parser.add_argument("--rounds", type=int, default=5, help="alternating measured slices per server")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="GET load client")
    parser.add_argument("--creates", type=int, default=10, help="sessions for create-to-Ready")
    parser.add_argument("--warm-pool", type=int, default=2, help="Standard servers the warm hub keeps pooled")
    parser.add_argument("--poll", type=float, default=0.01, help="seconds between GETs while Starting")
    parser.add_argument("--limit", type=int, default=180, help="give up after this many seconds")
    parser.add_argument("--serve-bare", nargs=4, metavar=("PORT", "CERT", "KEY", "BODY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        port, cert, key, body = args.serve_bare
        serve_bare(int(port), cert, key, body)
        return

    stop_after(args.limit)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="renderhub-bench-") as tmp:
        run(args, Path(tmp))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
