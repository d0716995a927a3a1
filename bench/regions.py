"""Regions at real distances (root: network namespaces behind delay lines, tests/delay_line.py): how close
`renderhub regions` comes to the line's round trip, beside a UDP echo through the same line; and what a hub
pays per request when its database is as far away as its clients."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests package: the delay line
from tests.conftest import _postgres
from tests.delay_line import FarHost, far_host, udp_round_trips
from tests.hubs import RENDERHUB, RegionHub, free_port, hub_dir, kill_render_servers
from tests.tcp_proxy import cuttable_link

from renderhub.client import HubClient
from renderhub.clock import Clock
from renderhub.latency import nearest_first
from renderhub.tls import ensure_certificates


def udp_median(far: FarHost, count: int) -> float:
    """The UDP echo's median round trip through the line, in ms: the baseline."""
    return statistics.median(udp_round_trips(far, count))


@contextlib.contextmanager
def region_hub(far: FarHost, root: Path, tls: Path, region: str, *extra: str) -> Iterator[RegionHub]:
    hub = RegionHub(hub_dir(root / region, tls), free_port(), far=far, region=region, extra=list(extra))
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()
        kill_render_servers(hub.data_dir)


def p50(call: Callable[[], object], count: int) -> float:
    call()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def request_costs(hub: RegionHub, count: int) -> dict[str, float]:
    """p50 ms of the token exchange, GET session, list and a create (its answer, not its server's start)."""
    with HubClient(hub.config, verify=ssl.create_default_context(cafile=str(hub.ca))) as client:
        client.create("bench-get", "Standard", 10)
        figures = {
            "token": p50(lambda: (setattr(client, "_token", None), client.token()), count),
            "get": p50(lambda: client.get("bench-get"), count),
            "list": p50(client.list, count),
        }
        creates = []
        for n in range(min(count, 3)):
            started = time.perf_counter()
            client.create(f"bench-{n}", "Standard", 10)
            creates.append((time.perf_counter() - started) * 1000)
            client.stop(f"bench-{n}")
        figures["create"] = statistics.median(creates)
        client.stop("bench-get")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delays", default="5,10,40", help="one-way delays in ms, for the latency test")
    parser.add_argument("--database-delay", type=float, default=10.0, help="one-way ms to the far database")
    parser.add_argument("--samples", type=int, default=10, help="round trips per measurement")
    parser.add_argument("--requests", type=int, default=20, help="requests per API figure")
    parser.add_argument("--parts", default="latency,database,stream",
                        help="which figures: latency, database, stream (comma-separated)")  # fmt: skip
    parser.add_argument("--frames", type=int, default=90, help="frames per stream (the stream part)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/regions.py makes network namespaces: run it as root")
    root = Path(tempfile.mkdtemp(prefix="bench-regions-"))
    tls = root / "tls"
    ensure_certificates(tls, ["localhost", "127.0.0.1"], Clock().now())
    results: dict[str, object] = {}

    if "latency" in args.parts:
        results["latency_test"] = latency_test(args, root, tls)
    if "stream" in args.parts:
        results["stream"] = stream_latency(args, root, tls)
    if "database" in args.parts:
        results["database_cost"] = database_cost(args, root, tls)
    print(json.dumps(results))


def latency_test(args: argparse.Namespace, root: Path, tls: Path) -> list[dict[str, float]]:
    print("latency test: `renderhub regions` (median of", args.samples, "over one connection) beside UDP echo")
    print(f"{'one way':>8} {'expected':>9} {'UDP echo':>9} {'probe':>9} {'probe/expected':>15}")
    rows = []
    for index, delay in enumerate(float(d) for d in args.delays.split(",")):
        with far_host(delay / 1000, tag="rb", index=index) as far, region_hub(far, root, tls, f"r{index}") as hub:
            udp = udp_median(far, 20)
            trust = ssl.create_default_context(cafile=str(hub.ca))
            region = {"name": hub.region, "endpoint": hub.endpoint, "probeUrl": f"{hub.endpoint}/probe"}
            probe = nearest_first([region], trust, args.samples)[0].median_ms or float("nan")
            expected = 2 * delay
            print(f"{delay:>6.0f}ms {expected:>7.1f}ms {udp:>7.1f}ms {probe:>7.1f}ms {probe / expected:>14.2f}x")
            rows.append({"delay_ms": delay, "expected_ms": expected, "udp_ms": udp, "probe_ms": probe})
    return rows


def stream_latency(args: argparse.Namespace, root: Path, tls: Path) -> dict[str, dict[str, Any]]:
    """`renderhub connect` (640x360, 30 fps) to a session in a region at each delay: what the round trip adds to
    pose-to-frame latency (the comparison: the same stream on loopback, no delay)."""
    print(f"\nstreams: pose-to-frame latency, `renderhub connect --frames {args.frames}` at 640x360 30 fps")
    print(f"{'one way':>8} {'round trip':>11} {'p50':>8} {'p95':>8} {'fps':>6}")
    figures: dict[str, dict[str, Any]] = {}
    for index, delay in enumerate([0.0, *(float(d) for d in args.delays.split(","))]):
        with far_host(delay / 1000, tag="rb", index=20 + index) as far:
            with region_hub(far, root, tls, f"s{index}") as hub:
                config = hub.data_dir / "arrconfig.json"
                common = ["--config", str(config), "--data-dir", str(hub.data_dir)]
                created = run_cli("session", "create", "--id", "bench", "--wait", "--json", *common)
                assert json.loads(created)["status"] == "Ready", created
                try:
                    out = run_cli("connect", "bench", "--frames", str(args.frames), "--width", "640", "--height",
                                  "360", "--json", *common)  # fmt: skip
                finally:
                    run_cli("session", "stop", "bench", *common)
        got = json.loads(out)
        p50, p95, fps = got["pose_to_frame_ms_p50"], got["pose_to_frame_ms_p95"], got["fps"]
        print(f"{delay:>6.0f}ms {2 * delay:>9.0f}ms {p50:>6.1f}ms {p95:>6.1f}ms {fps:>6.1f}")
        figures[f"{delay:g}"] = {"p50_ms": p50, "p95_ms": p95, "fps": fps}
    return figures


def run_cli(*args: str) -> str:
    done = subprocess.run([RENDERHUB, *args], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"renderhub {' '.join(args[:2])} failed: {done.stderr}")
    return done.stdout


def database_cost(args: argparse.Namespace, root: Path, tls: Path) -> dict[str, dict[str, float]]:
    print(f"\nrequest cost of a far database: a hub {args.database_delay:g} ms away (each way) from its client,")
    print("its database beside it (Unix socket) or as far again (through the line); p50 ms")
    name = f"renderhub_bench_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(_postgres(f'CREATE DATABASE "{name}"'))
    costs = {}
    try:
        with far_host(args.database_delay / 1000, tag="rb", index=9) as far:
            near_db = f"postgresql://postgres@/{name}?host=/var/run/postgresql"
            with region_hub(far, root, tls, "near-db", "--database-url", near_db) as hub:
                costs["near"] = request_costs(hub, args.requests)
            with cuttable_link("127.0.0.1", 5432, host=far.host_address) as link:
                far_db = f"postgresql://postgres@{far.host_address}:{link.port}/{name}"
                config = hub.config
                with region_hub(far, root, tls, "far-db", "--database-url", far_db) as hub:
                    hub.config = replace(config, account_domain=hub.endpoint, rendering_domain=hub.endpoint)
                    costs["far"] = request_costs(hub, args.requests)
    finally:
        asyncio.run(_postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    rtt = 2 * args.database_delay
    print(f"{'request':>8} {'db near':>9} {'db far':>9} {'extra':>9} {'db round trips':>15}")
    for what in ("token", "get", "list", "create"):
        near, far_ms = costs["near"][what], costs["far"][what]
        print(f"{what:>8} {near:>7.1f}ms {far_ms:>7.1f}ms {far_ms - near:>7.1f}ms {(far_ms - near) / rtt:>15.1f}")
    return costs


if __name__ == "__main__":
    main()
