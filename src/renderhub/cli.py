"""The `renderhub` command: serve, session and connect (account and usage in admin.py, conversions in
conversion_cli.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from rich.markup import escape
from rich.table import Column, Table

from renderhub import admin, conversion_cli, region_cli
from renderhub.cli_client import SESSION_TERMINAL, api_command, checked_id, hub_client, wait_until
from renderhub.clock import Clock
from renderhub.region_cli import checked_region, create_in_nearest, in_region, region_option
from renderhub.terminal import console, data_dir_option, database_option, errors, fail

# The store, auth, config and bootstrap modules (SQLAlchemy, Alembic, pydantic, cryptography) are imported
# where used: the session commands need none of them, and start in a third of the time without them.


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="renderhub")
def main() -> None:
    """RenderHub: Azure Remote Rendering's session API, on your own machines."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=int)
@click.option("--public-host", default=None, help="Hostname clients are given for sessions (default: the host).")
@data_dir_option
@database_option
@click.option(
    "--region",
    default="local",
    show_default=True,
    callback=checked_region,
    help="The region this hub serves: its sessions, conversions and render servers are that region's.",
)
@click.option(
    "--region-endpoint",
    metavar="URL",
    help="Where clients reach this region (a load balancer before its replicas); default: this hub.",
)
@click.option(
    "--backend",
    default="local",
    show_default=True,
    type=click.Choice(["local", "ray"]),
    help="Where render servers run: processes on this machine, or a Ray cluster.",
)
@click.option("--ray-address", metavar="HOST:PORT", help="The Ray cluster's head (with --backend ray).")
@click.option("--ray-namespace", default="renderhub", show_default=True, help="Ray namespace of the session actors.")
@click.option(
    "--queue-timeout",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds a new session may wait for a free render server, in arrival order (0: fail it at once).",
)
@click.option(
    "--warm-pool",
    multiple=True,
    metavar="SIZE=N",
    help="Keep N render servers of SIZE started ahead of demand: a create takes one and is Ready at once "
    "(repeat per size; on one host at most the size's capacity).",
)
@click.option("--sizes", "sizes_file", type=click.Path(exists=True, path_type=Path), help="Sizes and prices file.")
@click.option("--tls-cert", type=click.Path(exists=True, path_type=Path), help="Your own certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, path_type=Path), help="Its private key (PEM).")
@click.option("--insecure-http", is_flag=True, help="Serve plain HTTP (the Azure SDK refuses it).")
@click.option("--rate-limit", type=float, default=20.0, show_default=True, help="Requests/s per account; 0: off.")
@click.option("--page-size", type=click.IntRange(min=1), default=100, show_default=True, help="Sessions per list page.")
@click.option(
    "--max-connections-per-address",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Open connections one client address may hold; more are closed at once.",
)
@click.option("--assets-dir", type=click.Path(path_type=Path), help="Named models (default: DATA/assets).")
@click.option(
    "--ice-server",
    "ice_servers",
    multiple=True,
    metavar="URL",
    help="STUN/TURN server for render servers and clients: stun:HOST:PORT or turn:USER:PASS@HOST:PORT.",
)
@click.option(
    "--allow-private-model-urls",
    is_flag=True,
    help="Let model URLs point at loopback, link-local and private addresses (off: no SSRF).",
)
@click.option(
    "--scene-grace",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a session keeps its model and camera after its client left, for the next client (0: reset).",
)
@click.option(
    "--conversions",
    "conversion_concurrency",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Conversions this hub runs at once (0: none; another replica runs them).",
)
@click.option(
    "--conversion-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    metavar="MINUTES",
    help="Wall and CPU time a conversion may take.",
)
@click.option(
    "--conversion-memory",
    type=click.IntRange(min=256),
    default=8192,
    show_default=True,
    metavar="MB",
    help="Address space a conversion process may take.",
)
@click.option(
    "--upload-limit",
    type=click.IntRange(min=1),
    default=2048,
    show_default=True,
    metavar="MB",
    help="The largest upload (or unpacked .zip) the hub's own storage takes.",
)
@click.option("--storage-retention-days", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Delete files of the hub's storage not written for this many days (0: keep them).")  # fmt: skip
@click.option(
    "--storage-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The hub's own storage (default: DATA/storage); replicas share one (a shared file system).",
)
@click.option(
    "--linked-storage",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON file of Azure Blob accounts conversions reach without a SAS: "
    '[{"name", "endpoint", "key", "accounts": [ids] (default: every account)}].',
)
@click.option(
    "--allow-private-storage",
    is_flag=True,
    help="Let conversions' storage URIs point at loopback and private addresses (an Azurite here).",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve(
    host: str, port: int, public_host: str | None, data_dir: Path, database_url: str | None, region: str,
    region_endpoint: str | None, backend: str,
    ray_address: str | None, ray_namespace: str, queue_timeout: float, warm_pool: tuple[str, ...],
    sizes_file: Path | None, tls_cert: Path | None, tls_key: Path | None, insecure_http: bool,
    rate_limit: float, page_size: int, max_connections_per_address: int, assets_dir: Path | None,
    ice_servers: tuple[str, ...],
    allow_private_model_urls: bool, scene_grace: float,
    conversion_concurrency: int, conversion_timeout: float, conversion_memory: int,
    upload_limit: int, storage_retention_days: float, storage_dir: Path | None, linked_storage: Path | None,
    allow_private_storage: bool,
    access_log: bool,
) -> None:  # fmt: skip
    """Run the hub: the ARR session API and token service over HTTPS."""
    from renderhub.bootstrap import first_start, run_hub
    from renderhub.config import Settings, load_linked_storage, parse_ice_server, parse_warm_pool
    from renderhub.models import ServerSize

    if bool(tls_cert) != bool(tls_key):
        fail("--tls-cert and --tls-key go together")
    if region_endpoint and not region_endpoint.startswith(("https://", "http://")):
        fail(f"--region-endpoint {region_endpoint!r}: give the URL clients use, https://HOST:PORT")
    if backend == "ray":
        from renderhub.backends import check_ray_address
        from renderhub.errors import ConfigurationError

        try:
            check_ray_address(ray_address)
        except ConfigurationError as exc:
            fail(str(exc))
    try:
        ice = [parse_ice_server(url) for url in ice_servers]
    except ValueError as exc:
        fail(str(exc))
    try:
        if linked_storage:
            load_linked_storage(linked_storage)
    except (OSError, ValueError) as exc:
        fail(f"--linked-storage {linked_storage}: {exc}")
    try:
        pools = parse_warm_pool(warm_pool)
    except ValueError as exc:
        fail(str(exc))
    settings = Settings(
        host=host, port=port, public_host=public_host, data_dir=data_dir, database_url=database_url,
        region=region, region_endpoint=region_endpoint, backend=backend, ray_address=ray_address,
        ray_namespace=ray_namespace, queue_timeout_seconds=queue_timeout, warm_pool=pools,
        sizes_file=sizes_file, tls_cert=tls_cert, tls_key=tls_key,
        insecure_http=insecure_http, rate_limit_per_second=rate_limit, page_size=page_size,
        max_connections_per_address=max_connections_per_address,
        assets_dir=assets_dir, ice_servers=ice, allow_private_model_urls=allow_private_model_urls,
        scene_grace_seconds=scene_grace,
        conversion_concurrency=conversion_concurrency, conversion_timeout_minutes=conversion_timeout,
        conversion_memory_mb=conversion_memory, storage_upload_limit_mb=upload_limit, storage_dir=storage_dir,
        storage_retention_days=storage_retention_days,
        linked_storage=load_linked_storage(linked_storage) if linked_storage else [],
        allow_private_storage=allow_private_storage,
    )  # fmt: skip
    try:
        sizes = settings.load_sizes()  # a broken sizes file should fail here, not at the first session
    except (OSError, ValueError, yaml.YAMLError) as exc:
        fail(f"--sizes {sizes_file}: {exc}" if sizes_file else str(exc))
    for size, count in pools.items():
        if backend != "ray" and count > sizes[ServerSize(size)].capacity:
            fail(f"--warm-pool {size}={count}: one host runs at most {sizes[ServerSize(size)].capacity} {size} "
                 "render servers (its capacity in the sizes file)")  # fmt: skip
    files = asyncio.run(first_start(settings, Clock()))
    # soft_wrap: whole lines, never broken at 80 columns (this usually goes to a log); paths escaped from markup
    if insecure_http:
        errors.print("[yellow]warning:[/yellow] serving plain HTTP: tokens and keys cross the network in clear.",
                     soft_wrap=True)  # fmt: skip
    console.print(f"RenderHub hub on [bold]{settings.endpoint}[/bold] (region {region}, backend: {backend})",
                  soft_wrap=True)  # fmt: skip
    if region_endpoint:
        console.print(f"  region endpoint: {region_endpoint}", soft_wrap=True)
    if files.ca:
        console.print(f"  CA certificate: {escape(str(files.ca.resolve()))}  (trust this one file)", soft_wrap=True)
    if files.replaced_ca:
        console.print("  (this data dir's CA was replaced by the one the database's other hubs share)", soft_wrap=True)
    if files.created_account:
        console.print(f"  created account {files.created_account}", soft_wrap=True)
    if files.arrconfig:
        console.print(f"  account config: {escape(str(files.arrconfig.resolve()))}", soft_wrap=True)
    else:
        console.print("  account config: none here (accounts exist already: `renderhub account create`)",
                      soft_wrap=True)  # fmt: skip
    run_hub(settings, files, access_log=access_log)


# Sessions: clients of the API, like RenderingSession.ps1


def _show(session: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(session, indent=2))
        return
    table = Table(show_header=False, box=None)
    for key in ("id", "status", "queuePosition", "size", "maxLeaseTimeMinutes", "elapsedTimeMinutes",
                "idleTimeoutMinutes", "hostname", "handshakePort", "arrInspectorPort", "teraflops",
                "creationTime"):  # fmt: skip
        if key in session:
            table.add_row(key, str(session[key]))
    if "error" in session:
        table.add_row("error", f"[red]{session['error']['code']}: {session['error']['message']}[/red]")
    console.print(table)


@main.group()
def session() -> None:
    """Create, inspect, extend and stop rendering sessions."""


@session.command("create")
@click.option("--size", default=None, help="Standard or Premium (default: the config's vmSize).")
@click.option("--lease-minutes", type=int, default=None, help="Lease in minutes (default: the config's).")
@click.option("--id", "session_id", default=None, callback=checked_id, help="Session id (default: a new one).")
@click.option("--wait", is_flag=True, help="Show progress until the session is Ready or fails.")
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, max=1440),
    default=None,
    metavar="MINUTES",
    help="Stop the session after this long without a client (0: never; default: the account's).",
)
@click.option("--region", default=None, metavar="NAME|nearest",
              help="Where: a region's name, or `nearest` (measured; the next nearest when it has no room, which "
              "implies --wait). Default: the config's hub.")  # fmt: skip
@api_command
def session_create(size: str | None, lease_minutes: int | None, session_id: str | None, wait: bool,
                   idle_timeout: float | None, region: str | None, config: Path | None, data_dir: Path,
                   as_json: bool) -> None:  # fmt: skip
    """Start a session."""
    import uuid

    with hub_client(config, data_dir) as client:
        session_id = f"session-{uuid.uuid4()}" if session_id is None else session_id
        lease = lease_minutes if lease_minutes is not None else client.config.max_lease_minutes
        size = size or client.config.vm_size
        if region == "nearest":
            body = create_in_nearest(client, session_id, size, lease, idle_timeout, quiet=as_json)
        else:
            with in_region(client, region) as there:
                body = there.create(session_id, size, lease, idle_timeout)
                if wait:
                    body = wait_until(body, there.get, SESSION_TERMINAL, "session", quiet=as_json)
        _show(body, as_json)
        if body["status"] == "Error":
            sys.exit(2)


@session.command("get")
@click.argument("session_id", callback=checked_id)
@region_option
@api_command
def session_get(session_id: str, region: str | None, config: Path | None, data_dir: Path, as_json: bool) -> None:
    """Show one session."""
    with hub_client(config, data_dir) as client, in_region(client, region) as there:
        _show(there.get(session_id), as_json)


@session.command("list")
@region_option
@api_command
def session_list(region: str | None, config: Path | None, data_dir: Path, as_json: bool) -> None:
    """List the Starting and Ready sessions (of one region: each region knows its own)."""
    with hub_client(config, data_dir) as client, in_region(client, region) as there:
        sessions = there.list()
    if as_json:
        click.echo(json.dumps({"sessions": sessions}, indent=2))
        return
    # fold, not "…": an id must stay whole in an 80-column terminal
    table = Table(Column("id", overflow="fold"), "status", "size", "lease", "elapsed", "endpoint")
    for s in sessions:
        endpoint = f"{s['hostname']}:{s['handshakePort']}" if "hostname" in s else ""
        table.add_row(s["id"], s["status"], s["size"], f"{s['maxLeaseTimeMinutes']} min",
                      f"{s['elapsedTimeMinutes']} min", endpoint)  # fmt: skip
    console.print(table if sessions else "no live sessions")


@session.command("extend")
@click.argument("session_id", callback=checked_id)
@click.option("--lease-minutes", type=int, required=True, help="The new total lease (as ARR's PATCH).")
@region_option
@api_command
def session_extend(session_id: str, lease_minutes: int, region: str | None, config: Path | None, data_dir: Path,
                   as_json: bool) -> None:  # fmt: skip
    """Set a session's total lease."""
    with hub_client(config, data_dir) as client, in_region(client, region) as there:
        _show(there.update(session_id, lease_minutes), as_json)


@session.command("stop")
@click.argument("session_id", callback=checked_id)
@region_option
@api_command
def session_stop(session_id: str, region: str | None, config: Path | None, data_dir: Path, as_json: bool) -> None:
    """Stop a session and its render server."""
    with hub_client(config, data_dir) as client, in_region(client, region) as there:
        there.stop(session_id)
        _show(there.get(session_id), as_json)


@main.command()
@click.argument("session_id", callback=checked_id)
@click.option("--model", default="sample", show_default=True, help="A glTF URL, or a name in the hub's assets.")
@click.option("--frames", type=click.IntRange(min=1), default=120, show_default=True, help="Frames to measure.")
@click.option("--out", type=click.Path(path_type=Path), help="Save the last frame here (PNG).")
@click.option("--width", type=int, default=1280, show_default=True)
@click.option("--height", type=int, default=720, show_default=True)
@click.option("--fps", type=int, default=30, show_default=True)
@click.option("--direct", is_flag=True, help="Signal to hostname:handshakePort, not through the hub's relay.")
@region_option
@api_command
def connect(session_id: str, model: str, frames: int, out: Path | None, width: int, height: int, fps: int,
            direct: bool, region: str | None, config: Path | None, data_dir: Path, as_json: bool) -> None:  # fmt: skip
    """Connect to a Ready session, load a model, orbit it, and print frame rate and latency."""
    from renderhub.connect import ConnectError, run_client

    with hub_client(config, data_dir) as client, in_region(client, region) as there:
        session = there.get(session_id)
        if session["status"] != "Ready":
            fail(f"session {session_id} is {session['status']}; a client can connect only while it is Ready")
        token = there.token()
        offer = (f"https://{session['hostname']}:{session['handshakePort']}/offer" if direct
                 else f"{there.base}/render/{there.config.account_id}/{session_id}/offer")  # fmt: skip
        trust = there.trust if not isinstance(there.trust, bool) else None
    try:
        figures = asyncio.run(run_client(offer, token, ssl_context=trust, model=model, frames=frames,
                                         width=width, height=height, fps=fps, out=out))  # fmt: skip
    except ConnectError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(figures))
        return
    table = Table(show_header=False, box=None)
    for key, value in figures.items():
        table.add_row(key, f"{value:.1f}" if isinstance(value, float) else str(value))
    console.print(table)
    if out:
        console.print(f"last frame: {out}", soft_wrap=True)


# Conversions: clients of the API, like Conversion.ps1 (conversion_cli.py)
main.add_command(conversion_cli.convert)
main.add_command(conversion_cli.conversion)
# Regions: the latency test (region_cli.py)
main.add_command(region_cli.regions)
# Accounts, usage, the region directory and the warm pools: administration, straight on the database (admin.py)
main.add_command(admin.account)
main.add_command(admin.usage)
main.add_command(admin.region)
main.add_command(admin.pool)
