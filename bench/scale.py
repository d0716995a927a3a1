"""Benchmark hub replicas on PostgreSQL: a create burst across two replicas beside one, and the reaper's tick with
10,000 sessions stored (PostgreSQL beside SQLite)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import sqlalchemy as sa
import yaml
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from api import RawConnection, Server, cpu_seconds, machine_busy_seconds, percentile, run_loop, server
from processes import free_port, stop_after, wait_until
from renderhub.auth import TokenService, new_signing_key
from renderhub.backends.base import Assignment, ServerSpec
from renderhub.client import ArrConfig, HubClient
from renderhub.clock import Clock
from renderhub.config import Settings
from renderhub.manager import SessionManager
from renderhub.models import SessionStatus
from renderhub.reaper import HEALTH_CHECK_EVERY, Reaper
from renderhub.store import Repository, open_store
from renderhub.store.tables import sessions
from scale_hub import InstantBackend

HUB = str(Path(__file__).resolve().parent / "scale_hub.py")
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
# Our databases and folders are named PREFIX<pid>_...: a later run removes what a killed one left.
DATABASE_PREFIX = "renderhub_scale_"
TEMP_PREFIX = "renderhub-scale-"
API = "api-version=2021-01-01"
CREATE_BODY = json.dumps({"size": "Standard", "maxLeaseTimeMinutes": 30}).encode()
ACCOUNT = "5ca1ab1e-0000-4000-8000-000000000001"  # the reaper benchmark's sessions belong to it
# The targets.
TARGET_RATIO = 1.0  # two replicas' creates/s over one replica's, on this 2-core machine
TARGET_P99_MS = 100.0
TARGET_TICK_MS = 50.0


# PostgreSQL databases of our own, dropped afterwards


async def _admin(sql: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(f"{POSTGRES}/postgres")
    try:
        return await connection.fetch(sql)
    finally:
        await connection.close()


@contextmanager
def postgres_database(label: str) -> Iterator[str]:
    """A fresh database, dropped on the way out whatever happened (FORCE: a hub killed mid-query may linger)."""
    name = f"{DATABASE_PREFIX}{os.getpid()}_{secrets.token_hex(3)}_{label}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def stale(name: str, prefix: str) -> bool:
    """Whether a database or folder named PREFIX<pid>_... belongs to a run that is gone."""
    pid = name[len(prefix) :].split("_", 1)[0]
    return pid.isdigit() and not Path(f"/proc/{pid}").exists()


def clean_up_after_killed_runs() -> None:
    """Drop the databases and folders of earlier runs killed outright (SIGKILL leaves no finally to run; their
    hubs stopped with them, see scale_hub.die_with_parent)."""
    rows = asyncio.run(_admin(f"SELECT datname FROM pg_database WHERE datname LIKE '{DATABASE_PREFIX}%'"))
    for name in (row["datname"] for row in rows):
        if stale(name, DATABASE_PREFIX):
            print(f"dropping database {name}, left by a killed run", flush=True)
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    for folder in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        if stale(folder.name, TEMP_PREFIX):
            print(f"removing {folder}, left by a killed run", flush=True)
            shutil.rmtree(folder, ignore_errors=True)


def sizes_file(tmp: Path, capacity: int) -> Path:
    """The packaged sizes with room for every session of the burst on this one host."""
    sizes = yaml.safe_load(resources.files("renderhub").joinpath("sizes.yaml").read_text())
    sizes["Standard"]["capacity"] = capacity
    path = tmp / "sizes.yaml"
    path.write_text(yaml.safe_dump(sizes))
    return path


# 1. The create burst: hub replicas as processes, one load generator


@dataclass
class Replica:
    """A running hub replica and what the burst measured of it."""

    server: Server
    data_dir: Path
    requests: int = 0
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0

    @property
    def leads(self) -> bool:
        """Whether it ran the reaper (the manager logs when it takes the lead)."""
        return "leads the reaper" in self.server.log.read_text()


@dataclass
class Burst:
    """One burst of creates against one set of replicas on a fresh database."""

    replicas: list[Replica]
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_sample: str = ""
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=lambda: {"hubs": 0.0, "postgres": 0.0, "client": 0.0, "other": 0.0})
    ready: int = 0
    all_ready_after: float | None = None  # seconds after the last answer
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


async def _send_creates(
    replicas: list[Replica], connections: list[list[RawConnection]], account_id: str, ids: list[str], burst: Burst
) -> None:
    """Keep every worker's one request in flight; request n goes to replica n mod R (a round-robin balancer)."""
    counter = itertools.count()

    async def worker(own: list[RawConnection]) -> None:
        while (n := next(counter)) < len(ids):
            at = n % len(replicas)
            sent = time.perf_counter()
            status, body = await own[at].put(f"/accounts/{account_id}/sessions/{ids[n]}?{API}", CREATE_BODY)
            latency = time.perf_counter() - sent
            replicas[at].requests += 1
            if status == 201:
                burst.latencies.append(latency)
                replicas[at].latencies.append(latency)
            else:
                burst.errors[str(status)] += 1
                burst.error_sample = burst.error_sample or body.decode(errors="replace")[:300]

    await asyncio.gather(*(worker(own) for own in connections))


async def _backend_cpu(engine: AsyncEngine) -> dict[int, float]:
    """CPU seconds of each PostgreSQL server process serving this database (the server runs on this machine)."""
    query = sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    async with engine.connect() as c:
        pids = (await c.execute(query)).scalars().all()
    seconds = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # a connection closed meanwhile
            seconds[pid] = cpu_seconds(pid)
    return seconds


async def _settle(engine: AsyncEngine, burst: Burst, expected: int, window: float) -> None:
    """Wait up to `window` seconds for the burst's sessions to be Ready; then look for ports given out twice."""
    started = time.perf_counter()
    count = sa.select(sessions.c.status, sa.func.count()).where(sessions.c.id.like("bench-%")).group_by("status")
    while True:
        async with engine.connect() as c:
            burst.statuses = Counter({status: n for status, n in (await c.execute(count)).all()})
        burst.ready = burst.statuses[SessionStatus.READY.value]
        if burst.ready >= expected:
            burst.all_ready_after = time.perf_counter() - started
            break
        if time.perf_counter() - started > window:
            break
        await asyncio.sleep(0.02)


async def drive_burst(
    replicas: list[Replica], database_url: str, token: str, verify: ssl.SSLContext, args: argparse.Namespace
) -> Burst:
    """Warm up with one create per worker, then send the measured burst and wait for its sessions to be Ready."""
    burst = Burst(replicas)
    headers = {"Authorization": f"Bearer {token}"}
    account_id = ArrConfig.load(replicas[0].data_dir / "arrconfig.json").account_id
    engine = create_async_engine(Settings(database_url=database_url).async_database_url)
    connections: list[list[RawConnection]] = []
    try:
        for _ in range(args.concurrency):
            own = [RawConnection(r.server.base, headers, verify) for r in replicas]
            for connection in own:
                await connection.connect()
            connections.append(own)
        warm = Burst(replicas)
        await _send_creates(replicas, connections, account_id, [f"warm-{n:03d}" for n in range(args.warmup)], warm)
        if warm.errors:
            raise RuntimeError(f"warm-up creates failed {dict(warm.errors)}: {warm.error_sample}")
        for replica in replicas:
            replica.requests, replica.latencies = 0, []
        pids = [r.server.process.pid for r in replicas]
        backends = await _backend_cpu(engine)  # which also opens this engine's connection before the clock starts
        before = [cpu_seconds(pid) for pid in pids], time.process_time(), machine_busy_seconds()
        started = time.perf_counter()
        await _send_creates(replicas, connections, account_id, [f"bench-{n:04d}" for n in range(args.sessions)], burst)
        burst.seconds = time.perf_counter() - started
        after = [cpu_seconds(pid) for pid in pids], time.process_time(), machine_busy_seconds()
        # A server process that opened during the burst counts from zero; one that closed is lost (rare: the
        # hubs' pools keep their connections).
        burst.cpu["postgres"] = sum(t - backends.get(pid, 0.0) for pid, t in (await _backend_cpu(engine)).items())
        for replica, a, b in zip(replicas, before[0], after[0], strict=True):
            replica.cpu = b - a
        burst.cpu["hubs"] = sum(r.cpu for r in replicas)
        burst.cpu["client"] = after[1] - before[1]
        measured = burst.cpu["hubs"] + burst.cpu["postgres"] + burst.cpu["client"]
        burst.cpu["other"] = max(0.0, after[2] - before[2] - measured)
        await _settle(engine, burst, args.sessions, args.ready_within)
    finally:
        for own in connections:
            for connection in own:
                await connection.close()
        await engine.dispose()
    return burst


def start_replicas(count: int, database_url: str, sizes: Path, tmp: Path, stack: contextlib.ExitStack) -> list[Replica]:
    """Start replicas one after another: the first creates the account, CA and arrconfig.json; the others get
    its CA before they start, so one ca.pem is trusted for all, and share its database."""
    replicas: list[Replica] = []
    for i in range(count):
        data_dir = tmp / f"replica-{i}"
        (data_dir / "tls").mkdir(parents=True)
        if replicas:
            for name in ("ca.pem", "ca-key.pem"):
                shutil.copy2(replicas[0].data_dir / "tls" / name, data_dir / "tls" / name)
        port = free_port()
        command = [
            sys.executable, HUB, "--data-dir", str(data_dir), "--database-url", database_url, "--port", str(port),
            "--sizes", str(sizes), "--rate-limit", "0",
        ]  # fmt: skip
        running = stack.enter_context(server(f"replica {i}", command, port, data_dir / "hub.log"))
        ca = replicas[0].data_dir / "tls" / "ca.pem" if replicas else data_dir / "tls" / "ca.pem"
        # The first replica writes its CA once it starts: read the file on each try.
        wait_until(running.process, f"{running.base}/health", running.log, lambda ca=ca: trust(ca), 60)
        replicas.append(Replica(running, data_dir))
    verify = trust(replicas[0].data_dir / "tls" / "ca.pem")
    for replica in replicas:  # each has seen the others' heartbeats, so none takes another for dead
        deadline = time.monotonic() + 10
        while replicas_seen(replica, verify) != count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{replica.server.name} does not see {count} replicas")
            time.sleep(0.1)
    return replicas


def trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def replicas_seen(replica: Replica, verify: ssl.SSLContext) -> int:
    """How many replicas this one counts, as of its last heartbeat."""
    return int(httpx.get(f"{replica.server.base}/health", verify=verify, timeout=5).json()["replicas"])


def burst_run(count: int, sizes: Path, tmp: Path, args: argparse.Namespace) -> Burst:
    """One burst against `count` replicas on a fresh database; everything stopped and dropped afterwards."""
    with postgres_database(f"{count}r") as url, contextlib.ExitStack() as stack:
        print(f"starting {count} replica(s) on a fresh PostgreSQL database ...", flush=True)
        replicas = start_replicas(count, url, sizes, tmp, stack)
        ca = replicas[0].data_dir / "tls" / "ca.pem"
        config = ArrConfig.load(replicas[0].data_dir / "arrconfig.json")
        # Far above the burst, as for an account nowhere near its quota (the last slots of a quota are handed
        # out one create at a time across replicas: a different, slower case than the one measured here).
        quota = str(4 * (args.sessions + args.warmup))
        subprocess.run(
            [str(Path(sys.executable).with_name("renderhub")), "account", "set-quota", config.account_id,
             "--size", "Standard", "--max", quota, "--data-dir", str(replicas[0].data_dir), "--database-url", url],
            check=True, capture_output=True,
        )  # fmt: skip
        with HubClient(config, verify=str(ca)) as client:
            token = client.token()
        print(f"  {args.sessions} creates, {args.concurrency} in flight, across {count} replica(s) ...", flush=True)
        return run_loop(drive_burst(replicas, url, token, trust(ca), args))


# 2. The reaper's tick with many sessions stored


async def store_sessions(repo: Repository, backend: InstantBackend, stored: int, live: int) -> None:
    """`stored` sessions, the newest `live` of them Ready with a server each, the rest ended an hour ago
    (well inside the retention, so the purge keeps them and every tick sees the same table)."""
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for seq in range(1, stored + 1):
        created = now - timedelta(hours=3) + timedelta(seconds=seq / 10)
        row: dict[str, Any] = {
            "seq": seq, "account_id": ACCOUNT, "id": f"tick-{seq:05d}", "size": "Standard", "max_lease_minutes": 240,
            "created_at": created, "ready_at": created + timedelta(seconds=1), "hostname": "127.0.0.1",
            "handshake_port": 49152 + seq % 8000, "inspector_port": 57152 + seq % 8000, "teraflops": 8.1,
            "backend": backend.name, "backend_state": {"session_seq": seq, "id": f"{ACCOUNT}/tick-{seq:05d}"},
        }  # fmt: skip
        if seq > stored - live:
            _, state = await backend.start(ServerSpec("Standard", "", session=Assignment(ACCOUNT, row["id"], seq)))
            row.update(
                backend_state=state, handshake_port=state["handshake_port"], inspector_port=state["inspector_port"]
            )
            row.update(status=SessionStatus.READY.value, ended_at=None)
        else:
            ended = SessionStatus.STOPPED if seq % 2 else SessionStatus.EXPIRED
            row.update(status=ended.value, ended_at=now - timedelta(hours=1))
        rows.append(row)
    async with repo.engine.begin() as c:
        for start in range(0, len(rows), 1000):
            await c.execute(sessions.insert(), rows[start : start + 1000])
        if c.dialect.name == "postgresql":  # explicit seqs leave the serial behind: later inserts would collide
            await c.execute(sa.text("SELECT setval(pg_get_serial_sequence('sessions', 'seq'), :n)"), {"n": stored})


@dataclass
class Ticks:
    """The reaper's tick times on one database."""

    database: str
    seconds: list[float]
    statuses: Counter[str]
    store_seconds: float
    read_seconds: list[float]  # a reap pass's reads alone: the live seqs and the sessions due
    other: float  # share of a core other processes (PostgreSQL among them) used while ticking

    def ms(self, q: float) -> float:
        return percentile(self.seconds, q) * 1000


async def time_ticks(database: str, settings: Settings, args: argparse.Namespace) -> Ticks:
    """Time the leader's tick (heartbeat now and then, reap, a purge a minute) at the reaper's own cadence."""
    async with open_store(settings.async_database_url) as repo:
        backend = InstantBackend(settings)
        started = time.perf_counter()
        await store_sessions(repo, backend, args.stored, args.live)
        store_seconds = time.perf_counter() - started
        public_key = TokenService(new_signing_key(), timedelta(hours=1)).public_pem
        manager = SessionManager(settings, repo, backend, settings.load_sizes(), Clock(), public_key)
        reaper = Reaper(manager, settings, manager.clock)
        times = []
        try:
            await reaper.join()  # as the app's lifespan does before its reaper starts
            before = time.perf_counter(), time.process_time(), machine_busy_seconds()
            for _ in range(args.ticks):
                started = time.perf_counter()
                await reaper.tick()
                times.append(time.perf_counter() - started)
                await asyncio.sleep(settings.reaper_interval_seconds)
            wall, own, busy = (b - a for a, b in zip(before, (time.perf_counter(), time.process_time(),
                                                                machine_busy_seconds()), strict=True))  # fmt: skip
            other = max(0.0, busy - own) / wall
            if not reaper.leading:
                raise RuntimeError(f"the manager never led the reaper on {database}: nothing was reaped")
            reads = []
            slices = round(HEALTH_CHECK_EVERY / settings.reaper_interval_seconds)
            for turn in range(10):
                started = time.perf_counter()
                await repo.live_seqs()
                await repo.sessions_to_reap(datetime.now(UTC), slices, turn % slices)
                reads.append(time.perf_counter() - started)
                await asyncio.sleep(settings.reaper_interval_seconds)
        finally:
            await manager.close()
            await reaper.replicas.leave()
        async with repo.engine.connect() as c:
            counts = (await c.execute(sa.select(sessions.c.status, sa.func.count()).group_by("status"))).all()
    return Ticks(database, times, Counter({status: n for status, n in counts}), store_seconds, reads, other)


def tick_runs(sizes: Path, tmp: Path, args: argparse.Namespace) -> list[Ticks]:
    runs = []
    print(f"reaper: {args.stored} sessions stored, {args.live} Ready, {args.ticks} ticks on PostgreSQL ...", flush=True)
    with postgres_database("reaper") as url:
        settings = Settings(data_dir=tmp / "reaper-postgres", database_url=url, sizes_file=sizes)
        runs.append(run_loop(time_ticks("PostgreSQL", settings, args)))
    print("  ... and on SQLite", flush=True)
    settings = Settings(data_dir=tmp / "reaper-sqlite", sizes_file=sizes)
    runs.append(run_loop(time_ticks("SQLite", settings, args)))
    return runs


# The report


def report(bursts: dict[int, list[Burst]], ticks: list[Ticks], args: argparse.Namespace) -> None:
    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.1f}" if values else "-"

    def share(seconds: float, burst: Burst) -> str:
        return f"{seconds / burst.seconds:.0%}" if burst.seconds else "-"

    pooled: dict[int, tuple[float, list[float]]] = {}
    if bursts:
        print(f"\ncreate burst: {args.sessions} sessions, {args.concurrency} in flight (after {args.warmup} warm-up "
              f"creates), PUT .../sessions/{{id}}; a fresh PostgreSQL database per run; InstantBackend")  # fmt: skip
        within = f"Ready in {args.ready_within:g} s"
        print(f"{'run':>4}{'replicas':>10}{'creates/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}"
              f"{within:>15}{'all Ready':>11}{'hubs':>7}{'pg':>6}{'client':>8}{'other':>7}")  # fmt: skip
        for round_no in range(args.rounds):
            for count in sorted(bursts):
                b = bursts[count][round_no]
                after = f"{b.all_ready_after:.2f} s" if b.all_ready_after is not None else "never"
                print(f"{round_no + 1:>4}{count:>10}{b.rate:>11.0f}{ms(b.latencies, 0.5):>9}{ms(b.latencies, 0.99):>9}"
                      f"{ms(b.latencies, 1.0):>9}{sum(b.errors.values()):>8}{f'{b.ready}/{args.sessions}':>15}"
                      f"{after:>11}{share(b.cpu['hubs'], b):>7}{share(b.cpu['postgres'], b):>6}"
                      f"{share(b.cpu['client'], b):>8}{share(b.cpu['other'], b):>7}")  # fmt: skip
                if count > 1:
                    for i, r in enumerate(b.replicas):
                        role = "leads the reaper" if r.leads else ""
                        print(f"{'':14}replica {i}: {r.requests} requests, p50 {ms(r.latencies, 0.5)} ms, "
                              f"p99 {ms(r.latencies, 0.99)} ms, CPU {share(r.cpu, b)}  {role}")  # fmt: skip
                if b.errors:
                    print(f"{'':14}errors {dict(b.errors)}: {b.error_sample}")
                if set(b.statuses) - {SessionStatus.READY.value}:
                    print(f"{'':14}statuses at the end: {dict(b.statuses)}")
        print("CPU: share of one core over the burst. hubs: the replicas; pg: the PostgreSQL processes serving the "
              "database; client: this load generator; other: every other process on this machine")  # fmt: skip
        for count, runs in sorted(bursts.items()):
            latencies = [x for b in runs for x in b.latencies]
            pooled[count] = (len(latencies) / sum(b.seconds for b in runs), latencies)
            hubs, pg = (sum(b.cpu[who] for b in runs) * 1000 / len(latencies) for who in ("hubs", "postgres"))
            print(f"{count} replica(s): {hubs:.1f} ms of hub CPU and {pg:.1f} ms of PostgreSQL CPU per create "
                  "(its start included, as far as it ran within the burst)")  # fmt: skip
        busy = max(b.cpu["other"] / b.seconds for runs in bursts.values() for b in runs)
        if busy > 0.1:
            print(f"WARNING: other processes used up to {busy:.0%} of a core during a burst: the figures are disturbed")

    if ticks:
        print(f"\nreaper tick (heartbeat each second, reap, purge each minute): {args.stored} sessions stored, "
              f"{args.live} Ready, {args.ticks} ticks {Settings().reaper_interval_seconds:g} s apart")  # fmt: skip
        print(f"{'database':12}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'first ms':>10}{'read ms':>9}{'stored in':>11}"
              f"{'other':>7}   after the ticks")  # fmt: skip
        for t in ticks:
            read, statuses = statistics.median(t.read_seconds) * 1000, dict(sorted(t.statuses.items()))
            print(f"{t.database:12}{t.ms(0.5):>9.1f}{t.ms(0.99):>9.1f}{t.ms(1.0):>9.1f}{t.seconds[0] * 1000:>10.1f}"
                  f"{read:>9.1f}{t.store_seconds:>10.1f}s{t.other:>7.0%}   {statuses}")  # fmt: skip
        print("first: the first tick, which takes the reaper's lead and runs the purge; read: the median of 10 "
              f"reap passes' reads alone (the {args.live} live seqs, and the sessions due: Starting, lease over, or "
              "this pass's health-check slice); other: share of a core every other process used meanwhile "
              "(PostgreSQL included)")  # fmt: skip

    print(f"\n{'figure':46}{'measured':>14}{'target':>12}   verdict")
    rows: list[tuple[str, str, str, bool]] = []
    if 1 in pooled and 2 in pooled:
        ratio = pooled[2][0] / pooled[1][0]
        rows.append(("creates/s, 2 replicas / 1 replica", f"{ratio:.2f}", f">= {TARGET_RATIO:g}",
                     ratio >= TARGET_RATIO))  # fmt: skip
    for count, (_, latencies) in sorted(pooled.items()):
        p99 = percentile(latencies, 0.99) * 1000 if latencies else float("inf")
        rows.append((f"p99 create latency, {count} replica(s)", f"{p99:.1f} ms", f"< {TARGET_P99_MS:g} ms",
                     p99 < TARGET_P99_MS))  # fmt: skip
    for count, runs in sorted(bursts.items()):
        ready = sum(b.ready for b in runs)
        expected = args.sessions * len(runs)
        rows.append((f"Ready within {args.ready_within:g} s, {count} replica(s)", f"{ready}/{expected}", "all",
                     ready == expected))  # fmt: skip
    for t in ticks:
        rows.append((f"reaper tick p99, {t.database}", f"{t.ms(0.99):.1f} ms", f"<= {TARGET_TICK_MS:g} ms",
                     t.ms(0.99) <= TARGET_TICK_MS))  # fmt: skip
    for name, measured, target, met in rows:
        print(f"{name:46}{measured:>14}{target:>12}   {'met' if met else 'MISSED'}")
    if pooled:
        for count, (rate, _) in sorted(pooled.items()):
            print(f"({count} replica(s): {rate:.0f} creates/s over {args.rounds} run(s))")
        floor = args.concurrency * 1000 / TARGET_P99_MS
        print(f"At {args.concurrency} in flight the mean create latency is {args.concurrency} / (creates/s) "
              f"(Little's law): a p99 under {TARGET_P99_MS:g} ms needs well over {floor:.0f} creates/s.")  # fmt: skip
        print(f"With {os.cpu_count()} cores the replicas, PostgreSQL and the load generator contend for the same CPUs, "
              "so the 2-replica figure is bounded by the cores, not by the replicas.")  # fmt: skip
        print("On separate machines it should grow roughly with the number of replicas until PostgreSQL's write rate "
              "(1 INSERT + 3 UPDATEs per session, each its own commit) limits it.")  # fmt: skip


def run(args: argparse.Namespace, tmp: Path) -> None:
    sizes = sizes_file(tmp, capacity=2 * (args.sessions + args.warmup))
    bursts: dict[int, list[Burst]] = {1: [], 2: []}
    if args.part in ("all", "burst"):
        for round_no in range(args.rounds):
            # ABBA: drift in what else this machine runs weighs on both alike.
            for count in (1, 2) if round_no % 2 == 0 else (2, 1):
                bursts[count].append(burst_run(count, sizes, tmp / f"round-{round_no}-{count}r", args))
    ticks = tick_runs(sizes, tmp, args) if args.part in ("all", "reaper") else []
    report({k: v for k, v in bursts.items() if v}, ticks, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run for development")
    parser.add_argument("--part", choices=["all", "burst", "reaper"], default="all")
    parser.add_argument("--sessions", type=int, default=500, help="creates in the measured burst")
    parser.add_argument("--concurrency", type=int, default=32, help="creates in flight")
    parser.add_argument("--warmup", type=int, default=32, help="creates before the measured burst")
    parser.add_argument("--rounds", type=int, default=2, help="bursts per replica count (alternating order)")
    parser.add_argument("--ready-within", type=float, default=10.0, help="seconds the burst's sessions get to be Ready")
    parser.add_argument("--stored", type=int, default=10_000, help="sessions stored for the reaper's tick")
    parser.add_argument("--live", type=int, default=1000, help="... of which Ready")
    parser.add_argument("--ticks", type=int, default=50, help="reaper ticks timed per database")
    parser.add_argument("--limit", type=int, default=600, help="give up after this many seconds")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.rounds, args.stored, args.live, args.ticks = 100, 1, 2000, 200, 10

    stop_after(args.limit)
    started = time.perf_counter()
    clean_up_after_killed_runs()
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}_") as tmp:
        run(args, Path(tmp))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
