"""The `renderhub` command: serve, session, account and usage."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from renderhub.client import ApiError, ArrConfig, HubClient
from renderhub.clock import Clock

if TYPE_CHECKING:
    from renderhub.store import Repository

# The store, auth, config and bootstrap modules (SQLAlchemy, Alembic, pydantic, cryptography) are imported
# where used: the session commands need none of them, and start in a third of the time without them.

T = TypeVar("T")
console = Console()
errors = Console(stderr=True)
TERMINAL = ("Ready", "Error", "Expired", "Stopped")


def _run(work: Callable[[Repository], Coroutine[Any, Any, T]], data_dir: Path, database_url: str | None) -> T:
    from renderhub.config import Settings
    from renderhub.store import open_store

    async def main() -> T:
        settings = Settings(data_dir=data_dir, database_url=database_url)
        data_dir.mkdir(parents=True, exist_ok=True)
        async with open_store(settings.async_database_url) as repo:
            return await work(repo)

    return asyncio.run(main())


def _fail(message: str, code: int = 1) -> None:
    # escape: messages carry paths and server text, not markup; soft_wrap: one line, whatever the width
    errors.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    sys.exit(code)


data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=Path(".renderhub"), show_default=True,
    help="Where the hub keeps its database, certificates, logs and arrconfig.json.",
)  # fmt: skip
database_option = click.option(
    "--database-url",
    default=None,
    help="sqlite:///PATH or postgresql://... (default: SQLite in the data dir).",
)


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
    help="Seconds a new session may wait for room on a full Ray cluster (0: fail it at once).",
)
@click.option("--sizes", "sizes_file", type=click.Path(exists=True, path_type=Path), help="Sizes and prices file.")
@click.option("--tls-cert", type=click.Path(exists=True, path_type=Path), help="Your own certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, path_type=Path), help="Its private key (PEM).")
@click.option("--insecure-http", is_flag=True, help="Serve plain HTTP (the Azure SDK refuses it).")
@click.option("--rate-limit", type=float, default=20.0, show_default=True, help="Requests/s per account; 0: off.")
@click.option("--page-size", type=click.IntRange(min=1), default=100, show_default=True, help="Sessions per list page.")
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
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve(
    host: str, port: int, public_host: str | None, data_dir: Path, database_url: str | None, backend: str,
    ray_address: str | None, ray_namespace: str, queue_timeout: float, sizes_file: Path | None,
    tls_cert: Path | None, tls_key: Path | None, insecure_http: bool,
    rate_limit: float, page_size: int, assets_dir: Path | None, ice_servers: tuple[str, ...],
    allow_private_model_urls: bool, access_log: bool,
) -> None:  # fmt: skip
    """Run the hub: the ARR session API and token service over HTTPS."""
    import uvicorn

    from renderhub.api import create_app
    from renderhub.bootstrap import first_start
    from renderhub.config import Settings, parse_ice_server

    if bool(tls_cert) != bool(tls_key):
        _fail("--tls-cert and --tls-key go together")
    if backend == "ray" and not ray_address:
        _fail("--backend ray needs --ray-address HOST:PORT (the Ray head's address)")
    try:
        ice = [parse_ice_server(url) for url in ice_servers]
    except ValueError as exc:
        _fail(str(exc))
    settings = Settings(
        host=host, port=port, public_host=public_host, data_dir=data_dir, database_url=database_url,
        backend=backend, ray_address=ray_address, ray_namespace=ray_namespace, queue_timeout_seconds=queue_timeout,
        sizes_file=sizes_file, tls_cert=tls_cert, tls_key=tls_key,
        insecure_http=insecure_http, rate_limit_per_second=rate_limit, page_size=page_size,
        assets_dir=assets_dir, ice_servers=ice, allow_private_model_urls=allow_private_model_urls,
    )  # fmt: skip
    settings.load_sizes()  # a broken sizes file should fail here, not at the first session
    files = asyncio.run(first_start(settings, Clock()))
    # soft_wrap: whole lines, never broken at 80 columns (this usually goes to a log); paths escaped from markup
    if insecure_http:
        errors.print("[yellow]warning:[/yellow] serving plain HTTP: tokens and keys cross the network in clear.",
                     soft_wrap=True)  # fmt: skip
    console.print(f"RenderHub hub on [bold]{settings.endpoint}[/bold] (backend: {backend})", soft_wrap=True)
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
    # The hub's own log lines (sessions failing, replicas taking over the reaper) beside uvicorn's.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per relayed request otherwise
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        ssl_certfile=str(files.cert) if files.cert else None,
        ssl_keyfile=str(files.key) if files.key else None,
        log_level="info",
        access_log=access_log,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )


# Sessions: clients of the API, like RenderingSession.ps1


def _client(config: Path | None, data_dir: Path) -> HubClient:
    path = config or data_dir / "arrconfig.json"
    if not path.exists():
        _fail(f"no account config at {path} (run `renderhub serve` once, or pass --config)")
    try:
        arr = ArrConfig.load(path)
    except KeyError as exc:
        _fail(f"{path} is not a usable arrconfig.json: it has no {exc} setting")
    except (OSError, ValueError, TypeError) as exc:
        _fail(f"{path} is not a usable arrconfig.json: {exc}")
    # The hub's CA: beside the config (in tls/ as in a data dir, or as it is), else the data dir's.
    cas = [path.parent / "tls" / "ca.pem", path.parent / "ca.pem", data_dir / "tls" / "ca.pem"]
    ca = next((c for c in cas if c.exists()), None)
    return HubClient(arr, verify=str(ca) if ca else True)


def _show(session: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(session, indent=2))
        return
    table = Table(show_header=False, box=None)
    for key in ("id", "status", "size", "maxLeaseTimeMinutes", "elapsedTimeMinutes", "hostname",
                "handshakePort", "arrInspectorPort", "teraflops", "creationTime"):  # fmt: skip
        if key in session:
            table.add_row(key, str(session[key]))
    if "error" in session:
        table.add_row("error", f"[red]{session['error']['code']}: {session['error']['message']}[/red]")
    console.print(table)


def _origin(exc: httpx.HTTPError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # no request attached
        return "the hub"
    return f"{url.scheme}://{url.netloc.decode()}"


def _session_command(func: Callable[..., None]) -> Callable[..., None]:
    """Options every session command shares, and ApiError as a message with exit code 1."""
    func = click.option("--json", "as_json", is_flag=True, help="Print the ARR JSON.")(func)
    func = click.option("--config", type=click.Path(path_type=Path), help="arrconfig.json (default: data dir's).")(func)
    func = data_dir_option(func)

    def wrapper(**kwargs: Any) -> None:
        try:
            func(**kwargs)
        except ApiError as exc:
            _fail(f"{exc.code}: {exc.message} (HTTP {exc.status})")
        except httpx.HTTPError as exc:  # not reachable, TLS not trusted, timeout
            hub = _origin(exc)
            hint = ""
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                hint = " (trust the hub's tls/ca.pem: pass its --data-dir, or set SSL_CERT_FILE to it)"
            _fail(f"cannot reach {hub}: {exc or type(exc).__name__}{hint}")

    wrapper.__doc__, wrapper.__name__ = func.__doc__, func.__name__
    wrapper.__click_params__ = func.__click_params__  # type: ignore[attr-defined]
    return wrapper


@main.group()
def session() -> None:
    """Create, inspect, extend and stop rendering sessions."""


@session.command("create")
@click.option("--size", default=None, help="Standard or Premium (default: the config's vmSize).")
@click.option("--lease-minutes", type=int, default=None, help="Lease in minutes (default: the config's).")
@click.option("--id", "session_id", default=None, help="Session id (default: a new one).")
@click.option("--wait", is_flag=True, help="Show progress until the session is Ready or fails.")
@_session_command
def session_create(size: str | None, lease_minutes: int | None, session_id: str | None, wait: bool,
                   config: Path | None, data_dir: Path, as_json: bool) -> None:  # fmt: skip
    """Start a session."""
    import uuid

    with _client(config, data_dir) as client:
        session_id = session_id or f"session-{uuid.uuid4()}"
        lease = lease_minutes if lease_minutes is not None else client.config.max_lease_minutes
        body = client.create(session_id, size or client.config.vm_size, lease)
        if wait:
            body = _wait(client, body, quiet=as_json)
        _show(body, as_json)
        if body["status"] == "Error":
            sys.exit(2)


def _wait(client: HubClient, body: dict[str, Any], quiet: bool) -> dict[str, Any]:
    started = time.monotonic()
    with console.status("", spinner="dots") as status:
        while body["status"] not in TERMINAL:
            if not quiet:
                status.update(f"session {body['id']}: {body['status']} ({time.monotonic() - started:.1f} s)")
            time.sleep(0.25)
            body = client.get(body["id"])
    if not quiet:
        console.print(f"session {body['id']}: [bold]{body['status']}[/bold] after {time.monotonic() - started:.1f} s")
    return body


@session.command("get")
@click.argument("session_id")
@_session_command
def session_get(session_id: str, config: Path | None, data_dir: Path, as_json: bool) -> None:
    """Show one session."""
    with _client(config, data_dir) as client:
        _show(client.get(session_id), as_json)


@session.command("list")
@_session_command
def session_list(config: Path | None, data_dir: Path, as_json: bool) -> None:
    """List the Starting and Ready sessions."""
    with _client(config, data_dir) as client:
        sessions = client.list()
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
@click.argument("session_id")
@click.option("--lease-minutes", type=int, required=True, help="The new total lease (as ARR's PATCH).")
@_session_command
def session_extend(session_id: str, lease_minutes: int, config: Path | None, data_dir: Path, as_json: bool) -> None:
    """Set a session's total lease."""
    with _client(config, data_dir) as client:
        _show(client.update(session_id, lease_minutes), as_json)


@session.command("stop")
@click.argument("session_id")
@_session_command
def session_stop(session_id: str, config: Path | None, data_dir: Path, as_json: bool) -> None:
    """Stop a session and its render server."""
    with _client(config, data_dir) as client:
        client.stop(session_id)
        _show(client.get(session_id), as_json)


@main.command()
@click.argument("session_id")
@click.option("--model", default="sample", show_default=True, help="A glTF URL, or a name in the hub's assets.")
@click.option("--frames", type=click.IntRange(min=1), default=120, show_default=True, help="Frames to measure.")
@click.option("--out", type=click.Path(path_type=Path), help="Save the last frame here (PNG).")
@click.option("--width", type=int, default=1280, show_default=True)
@click.option("--height", type=int, default=720, show_default=True)
@click.option("--fps", type=int, default=30, show_default=True)
@click.option("--direct", is_flag=True, help="Signal to hostname:handshakePort, not through the hub's relay.")
@_session_command
def connect(session_id: str, model: str, frames: int, out: Path | None, width: int, height: int, fps: int,
            direct: bool, config: Path | None, data_dir: Path, as_json: bool) -> None:  # fmt: skip
    """Connect to a Ready session, load a model, orbit it, and print frame rate and latency."""
    from renderhub.connect import ConnectError, run_client

    with _client(config, data_dir) as client:
        session = client.get(session_id)
        if session["status"] != "Ready":
            _fail(f"session {session_id} is {session['status']}; a client can connect only while it is Ready")
        token = client.token()
        offer = (f"https://{session['hostname']}:{session['handshakePort']}/offer" if direct
                 else f"{client.base}/render/{client.config.account_id}/{session_id}/offer")  # fmt: skip
        trust = client.trust if not isinstance(client.trust, bool) else None
    try:
        figures = asyncio.run(run_client(offer, token, ssl_context=trust, model=model, frames=frames,
                                         width=width, height=height, fps=fps, out=out))  # fmt: skip
    except ConnectError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(figures))
        return
    table = Table(show_header=False, box=None)
    for key, value in figures.items():
        table.add_row(key, f"{value:.1f}" if isinstance(value, float) else str(value))
    console.print(table)
    if out:
        console.print(f"last frame: {out}", soft_wrap=True)


# Accounts and usage: administration, straight on the database


@main.group()
def account() -> None:
    """Manage accounts and their keys (on the hub's database)."""


@account.command("create")
@click.option("--name", default="account", show_default=True)
@click.option("--endpoint", default=None, help="For --arrconfig (default: the data dir's arrconfig.json's hub).")
@click.option("--arrconfig", type=click.Path(path_type=Path), help="Also write an arrconfig.json for it here.")
@data_dir_option
@database_option
def account_create(name: str, endpoint: str, arrconfig: Path | None, data_dir: Path, database_url: str | None) -> None:
    """Create an account; its keys are shown once."""
    from renderhub.auth import new_account
    from renderhub.bootstrap import write_arrconfig

    acct, primary, secondary = new_account(name, Clock().now())

    async def work(repo: Repository) -> None:
        await repo.insert_account(acct)

    _run(work, data_dir, database_url)
    if arrconfig:
        endpoint = endpoint or _hub_endpoint(data_dir)
        write_arrconfig(arrconfig, ArrConfig(acct.id, primary, endpoint, endpoint, "standard", 30))
    console.print(f"account  {acct.id}  ({name})\nprimary key    {primary}\nsecondary key  {secondary}")


def _hub_endpoint(data_dir: Path) -> str:
    """The hub this data dir serves, as `serve` wrote it into arrconfig.json; else serve's default."""
    from renderhub.config import Settings

    try:
        return ArrConfig.load(data_dir / "arrconfig.json").account_domain
    except (OSError, ValueError, KeyError, TypeError):
        return Settings(data_dir=data_dir).endpoint


@account.command("list")
@data_dir_option
@database_option
def account_list(data_dir: Path, database_url: str | None) -> None:
    """List accounts."""
    accounts = _run(lambda repo: repo.list_accounts(), data_dir, database_url)
    table = Table(Column("id", overflow="fold"), "name", "created")
    for a in accounts:
        table.add_row(a.id, a.name, a.created_at.isoformat(timespec="seconds"))
    console.print(table)


@account.command("rotate-key")
@click.argument("account_id")
@click.option("--key", "which", type=click.Choice(["primary", "secondary"]), default="primary", show_default=True)
@data_dir_option
@database_option
def account_rotate_key(account_id: str, which: str, data_dir: Path, database_url: str | None) -> None:
    """Replace one key; tokens issued from the old one stop working."""
    from renderhub.auth import hash_key, new_account_key

    key = new_account_key()
    slot = 1 if which == "primary" else 2
    if not _run(lambda repo: repo.replace_key(account_id, slot, hash_key(key)), data_dir, database_url):
        _fail(f"no account {account_id}")
    console.print(f"new {which} key  {key}")


@account.command("delete")
@click.argument("account_id")
@data_dir_option
@database_option
def account_delete(account_id: str, data_dir: Path, database_url: str | None) -> None:
    """Delete an account without live sessions; its tokens stop working within a second."""

    async def work(repo: Repository) -> str | None:
        if await repo.get_account(account_id) is None:
            return f"no account {account_id}"
        if not await repo.delete_account(account_id):
            live = await repo.list_live_sessions(account_id, 0, 1000)
            return f"account {account_id} has {len(live)} live session(s); stop them first: " + ", ".join(
                s.id for s in live
            )
        return None

    problem = _run(work, data_dir, database_url)
    if problem:
        _fail(problem)
    console.print(f"deleted account {account_id}")


def _date(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@main.command()
@click.option("--account", "account_id", default=None, help="Only this account.")
@click.option("--from", "start", default=None, help="Sessions that ended at or after (ISO date or time, UTC).")
@click.option("--to", "end", default=None, help="... and before this.")
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
@database_option
def usage(account_id: str | None, start: str | None, end: str | None, as_json: bool,
          data_dir: Path, database_url: str | None) -> None:  # fmt: skip
    """Print usage records and totals: billable minutes (rounded up) times the size's price."""
    try:
        span = _date(start), _date(end)
    except ValueError as exc:
        _fail(f"bad date: {exc}")
    records = _run(lambda repo: repo.usage(account_id, *span), data_dir, database_url)
    minutes = sum(r.billable_minutes for r in records)
    total = sum((r.cost for r in records), Decimal(0))
    if as_json:
        rows = [{"accountId": r.account_id, "sessionId": r.session_id, "size": r.size.value,
                 "readyAt": r.ready_at.isoformat() if r.ready_at else None, "endedAt": r.ended_at.isoformat(),
                 "billableMinutes": r.billable_minutes, "cost": str(r.cost)} for r in records]  # fmt: skip
        click.echo(json.dumps({"records": rows, "billableMinutes": minutes, "cost": str(total)}, indent=2))
        return
    session_col, ready_col, ended_col = (Column(name, overflow="fold") for name in ("session", "ready", "ended"))
    table = Table("account", session_col, "size", ready_col, ended_col, "minutes", "cost")
    for r in records:
        table.add_row(r.account_id[:8], r.session_id, r.size.value,
                      r.ready_at.isoformat(timespec="seconds") if r.ready_at else "-",
                      r.ended_at.isoformat(timespec="seconds"), str(r.billable_minutes), str(r.cost))  # fmt: skip
    table.add_row("total", f"{len(records)} sessions", "", "", "", str(minutes), str(total), style="bold")
    console.print(table)
