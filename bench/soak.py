"""Soak a real hub: the official SDK and `renderhub connect` through create, connect, load, stop, lease expiry and
bad input, with the hub and render servers SIGKILLed now and then; then what leaked and what the books say."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.mixedreality.remoterendering import RemoteRenderingClient, RenderingSessionSize, RenderingSessionStatus

from processes import free_port, kill_render_servers, stop_after, stop_process, wait_until
from renderhub.backends.local import render_servers
from renderhub.client import ArrConfig

RENDERHUB = str(Path(sys.executable).with_name("renderhub"))
API = "2021-01-01"
WARM_UP = 60.0  # seconds of a hub's life before its memory counts as warmed up


@dataclass
class Book:
    """What the workers did and saw."""

    handled: Counter[str] = field(default_factory=Counter)  # scenario -> runs
    errors: Counter[str] = field(default_factory=Counter)  # error code -> count
    server_errors: list[str] = field(default_factory=list)  # every 5xx the hub answered
    created: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, code: str, status: int, what: str) -> None:
        with self.lock:
            self.errors[code] += 1
            if status >= 500:
                self.server_errors.append(f"{status} {code} ({what})")


@dataclass
class Sample:
    at: float
    hub_pid: int
    hub_rss_kb: int
    hub_fds: int
    hub_threads: int
    render_servers: int
    render_rss_kb: int
    render_fds: int
    sessions_rows: int
    usage_rows: int


class Hub:
    """A `renderhub serve` process on a data dir of its own, restartable on the same port."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.endpoint = f"https://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        log = self.data_dir.parent / "hub.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [RENDERHUB, "serve", "--data-dir", str(self.data_dir), "--port", str(self.port), "--rate-limit", "0"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(self.process, f"{self.endpoint}/health", log, lambda: str(self.ca), timeout=60)
        self.started = time.monotonic()

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


def proc_figures(pid: int) -> tuple[int, int, int]:
    """(RSS in kB, open descriptors, threads) of a live process; zeros when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0, 0, 0
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), fds, int(fields["Threads"])


def rows(data_dir: Path) -> tuple[int, int]:
    with sqlite3.connect(f"file:{data_dir / 'renderhub.db'}?mode=ro", uri=True, timeout=5) as db:
        return (
            db.execute("SELECT count(*) FROM sessions").fetchone()[0],
            db.execute("SELECT count(*) FROM usage_records").fetchone()[0],
        )


def sample(hub: Hub, at: float) -> Sample:
    assert hub.process is not None
    rss, fds, threads = proc_figures(hub.process.pid)
    servers = list(render_servers(str(hub.data_dir.resolve())))
    figures = [proc_figures(pid) for pid in servers]
    sessions, usage = rows(hub.data_dir)
    return Sample(at, hub.process.pid, rss, fds, threads, len(servers), sum(f[0] for f in figures),
                  sum(f[1] for f in figures), sessions, usage)  # fmt: skip


class Driver:
    """One worker's scenarios against the hub, with the SDK (blocking, so each worker is a thread)."""

    def __init__(self, hub: Hub, config: ArrConfig, book: Book, rng: random.Random, name: str) -> None:
        self.hub, self.config, self.book, self.rng, self.name = hub, config, book, rng, name
        self.count = 0

    def sdk(self) -> RemoteRenderingClient:
        return RemoteRenderingClient(
            endpoint=self.hub.endpoint, account_id=self.config.account_id, account_domain="127.0.0.1",
            credential=AzureKeyCredential(self.config.account_key), authentication_endpoint_url=self.hub.endpoint,
            polling_interval=0.2,
        )  # fmt: skip

    def run_one(self) -> None:
        scenario = self.rng.choices(["stream", "expire", "bad_input", "list"], weights=[5, 2, 2, 1])[0]
        with self.book.lock:
            self.book.handled[scenario] += 1
        try:
            getattr(self, scenario)()
            return
        except HttpResponseError as exc:
            code = exc.error.code if exc.error is not None else "HttpResponseError"
            self.book.error(str(code), exc.status_code or 0, scenario)
        except (httpx.HTTPError, ServiceRequestError, ServiceResponseError, OSError, TimeoutError) as exc:
            self.book.error(f"no answer ({type(exc).__name__})", 0, scenario)  # the hub was being killed
        except Exception as exc:  # counted and shown: a soak goes on
            self.book.error(f"unexpected {type(exc).__name__}: {str(exc)[:80]}", 0, scenario)
        time.sleep(0.5)  # a client that was refused does not hammer the hub

    def new_id(self) -> str:
        self.count += 1
        return f"soak-{self.name}-{self.count}"

    def stream(self) -> None:
        """Create, wait for Ready, connect and load the sample model, stop."""
        session_id = self.new_id()
        client = self.sdk()
        try:
            poller = client.begin_rendering_session(session_id, RenderingSessionSize.STANDARD, 10)
            with self.book.lock:
                self.book.created.add(session_id)
            session = poller.result(timeout=60)
            if session.status == RenderingSessionStatus.READY:
                out = subprocess.run(
                    [RENDERHUB, "connect", session_id, "--frames", "15", "--width", "320", "--height", "240",
                     "--json", "--data-dir", str(self.hub.data_dir)],
                    capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                if out.returncode != 0:
                    self.book.error("ConnectFailed", 0, out.stderr.strip().splitlines()[-1][:120] if out.stderr else "")
            client.stop_rendering_session(session_id)
        finally:
            client.close()

    def expire(self) -> None:
        """A session left to its one-minute lease."""
        session_id = self.new_id()
        client = self.sdk()
        try:
            client.begin_rendering_session(session_id, RenderingSessionSize.STANDARD, 1)
            with self.book.lock:
                self.book.created.add(session_id)
        finally:
            client.close()

    def bad_input(self) -> None:
        """A client mistake: each must be a 4xx with ARR's error shape, never a 5xx."""
        token = self.token()
        url = f"{self.hub.endpoint}/accounts/{self.config.account_id}/sessions/{self.new_id()}"
        bodies = [
            b"{", b'{"size": "Huge", "maxLeaseTimeMinutes": 5}', b'{"size": "Standard", "maxLeaseTimeMinutes": -1}',
            b"[" * 1000, b'{"maxLeaseTimeMinutes": 5}', b"x" * 100_000,
        ]  # fmt: skip
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        with httpx.Client(verify=str(self.hub.ca), timeout=10) as http:
            for body in bodies:
                answer = http.put(url, params={"api-version": API}, content=body, headers=headers)
                try:
                    code = answer.json()["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    code = f"HTTP{answer.status_code}"
                self.book.error(str(code), answer.status_code, "bad input")

    def list(self) -> None:
        client = self.sdk()
        try:
            list(client.list_rendering_sessions())
        finally:
            client.close()

    def token(self) -> str:
        with httpx.Client(verify=str(self.hub.ca), timeout=10) as http:
            answer = http.get(
                f"{self.hub.endpoint}/Accounts/{self.config.account_id}/token",
                headers={"Authorization": f"Bearer {self.config.account_id}:{self.config.account_key}"},
            )
        answer.raise_for_status()
        return str(answer.json()["AccessToken"])


@contextmanager
def running_hub(work: Path) -> Iterator[Hub]:
    hub = Hub(work / "data", free_port())
    hub.start()
    try:
        yield hub
    finally:
        if hub.process is not None:
            stop_process(hub.process)
        kill_render_servers(hub.data_dir)


def chaos(
    hub: Hub, rng: random.Random, until: float, stop: threading.Event, log: Callable[[str], None], hub_kills: bool
) -> Counter[str]:
    """Now and then a render server is SIGKILLed (every ~45 s) or the hub (every ~120 s), then restarted."""
    done: Counter[str] = Counter()
    next_server = time.monotonic() + rng.uniform(20, 45)
    next_hub = time.monotonic() + rng.uniform(60, 120) if hub_kills else float("inf")
    while not stop.wait(1.0) and time.monotonic() < until:
        now = time.monotonic()
        if now >= next_server:
            servers = list(render_servers(str(hub.data_dir.resolve())))
            if servers:
                os.kill(rng.choice(servers), signal.SIGKILL)
                done["render server killed"] += 1
            next_server = now + rng.uniform(30, 60)
        if now >= next_hub:
            hub.kill()
            done["hub killed"] += 1
            log("hub SIGKILLed; restarting")
            hub.start()
            next_hub = now + rng.uniform(90, 150)
    return done


def settle(hub: Hub, config: ArrConfig, timeout: float = 120.0) -> None:
    """Stop every live session and wait until none is live and no render server is left."""
    with RemoteRenderingClient(
        endpoint=hub.endpoint, account_id=config.account_id, account_domain="127.0.0.1",
        credential=AzureKeyCredential(config.account_key), authentication_endpoint_url=hub.endpoint,
    ) as client:  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = list(client.list_rendering_sessions())
            for session in live:
                client.stop_rendering_session(session.id)
            if not live and not render_servers(str(hub.data_dir.resolve())):
                return
            time.sleep(1)


def accounting(data_dir: Path) -> dict[str, int]:
    """Sessions that reached Ready must have exactly one usage record; the others none."""
    with sqlite3.connect(f"file:{data_dir / 'renderhub.db'}?mode=ro", uri=True) as db:
        per_session = dict(
            db.execute(
                "SELECT s.seq, count(u.seq) FROM sessions s LEFT JOIN usage_records u "
                "ON u.account_id = s.account_id AND u.session_id = s.id GROUP BY s.seq"
            ).fetchall()
        )
        ready = {seq for (seq,) in db.execute("SELECT seq FROM sessions WHERE ready_at IS NOT NULL")}
    return {
        "sessions stored": len(per_session),
        "reached Ready": len(ready),
        "Ready without one usage record": sum(1 for seq in ready if per_session[seq] != 1),
        "never Ready with a usage record": sum(1 for seq, n in per_session.items() if seq not in ready and n),
    }


def growth(samples: list[Sample], attribute: str) -> float | None:
    """The largest relative growth of a hub figure within one hub process's life, after its warm-up."""
    worst = None
    for pid in {s.hub_pid for s in samples}:
        life = [s for s in samples if s.hub_pid == pid]
        warm = [s for s in life if s.at - life[0].at >= WARM_UP]
        if len(warm) >= 2 and getattr(warm[0], attribute):
            change = getattr(warm[-1], attribute) / getattr(warm[0], attribute) - 1
            worst = change if worst is None else max(worst, change)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=15.0, help="how long to drive the hub")
    parser.add_argument("--workers", type=int, default=2, help="concurrent clients")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-hub-kills", action="store_true", help="kill render servers only: one hub life, for its growth figures"
    )
    args = parser.parse_args()
    stop_after(args.minutes * 60 + 600)
    rng = random.Random(args.seed)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", flush=True)

    with tempfile.TemporaryDirectory(prefix="rh-soak-") as tmp, running_hub(Path(tmp)) as hub:
        os.environ["REQUESTS_CA_BUNDLE"] = str(hub.ca)  # the SDK's transport trusts the hub's CA
        config = ArrConfig.load(hub.data_dir / "arrconfig.json")
        # Every worker may hold a session streaming and a few waiting for their lease: above the default quota.
        subprocess.run(
            [RENDERHUB, "account", "set-quota", config.account_id, "--size", "Standard", "--max", str(4 * args.workers),
             "--data-dir", str(hub.data_dir)],
            check=True, capture_output=True,
        )  # fmt: skip
        book = Book()
        until = started + args.minutes * 60
        stop = threading.Event()
        samples: list[Sample] = []

        def work(name: str) -> None:
            driver = Driver(hub, config, book, random.Random(rng.random()), name)
            while time.monotonic() < until and not stop.is_set():
                driver.run_one()

        async def drive() -> Counter[str]:
            workers = [asyncio.to_thread(work, f"w{n}") for n in range(args.workers)]
            chaos_done = asyncio.to_thread(
                chaos, hub, random.Random(rng.random()), until, stop, log, not args.no_hub_kills
            )
            sampling = asyncio.create_task(sample_every(10.0))
            try:
                done, *_ = await asyncio.gather(chaos_done, *workers)
            finally:
                sampling.cancel()
            return done

        async def sample_every(seconds: float) -> None:
            while True:
                with_hub = hub.process is not None and hub.process.poll() is None
                if with_hub:
                    try:
                        samples.append(await asyncio.to_thread(sample, hub, time.monotonic()))
                    except (OSError, sqlite3.Error) as exc:
                        log(f"no sample: {exc}")
                    if len(samples) % 6 == 0:
                        last = samples[-1]
                        log(f"hub {last.hub_rss_kb / 1024:.0f} MB, {last.hub_fds} fds; {last.render_servers} render "
                            f"servers; {last.sessions_rows} sessions, {last.usage_rows} usage records")  # fmt: skip
                await asyncio.sleep(seconds)

        log(f"driving {hub.endpoint} for {args.minutes:g} minutes with {args.workers} workers")
        chaos_done = asyncio.run(drive())
        log("settling: stopping every live session")
        settle(hub, config)
        time.sleep(2)
        leftover = render_servers(str(hub.data_dir.resolve()))
        final = sample(hub, time.monotonic())
        books = accounting(hub.data_dir)

        print("\nfigure                                      measured")
        for scenario, runs in sorted(book.handled.items()):
            print(f"{'runs: ' + scenario:<42}{runs:>10}")
        for what, times in sorted(chaos_done.items()):
            print(f"{what:<42}{times:>10}")
        for code, times in book.errors.most_common():
            print(f"{'error: ' + code:<42}{times:>10}")
        print(f"{'5xx answers':<42}{len(book.server_errors):>10}")
        for what in book.server_errors[:10]:
            print(f"    {what}")
        for name in ("hub_rss_kb", "hub_fds", "hub_threads"):
            change = growth(samples, name)
            shown = "n/a (no hub lived past warm-up twice)" if change is None else f"{change * 100:+.1f} %"
            print(f"{'hub growth after warm-up: ' + name:<42}{shown:>10}")
        print(f"{'render servers left after settling':<42}{len(leftover):>10}")
        print(f"{'hub fds at the end':<42}{final.hub_fds:>10}")
        for what, count in books.items():
            print(f"{what:<42}{count:>10}")
        print(json.dumps({"samples": len(samples)}))


if __name__ == "__main__":
    main()
