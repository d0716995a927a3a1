"""What the API commands share: the account's client from an arrconfig.json, and API errors as messages."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import httpx

from renderhub.client import ApiError, ArrConfig, HubClient
from renderhub.models import ID_PATTERN, ID_RULE
from renderhub.terminal import console, data_dir_option, fail

# A session's statuses that `--wait` stops at.
SESSION_TERMINAL = ("Ready", "Error", "Expired", "Stopped")


def hub_client(config: Path | None, data_dir: Path) -> HubClient:
    path = config or data_dir / "arrconfig.json"
    if not path.exists():
        fail(f"no account config at {path} (run `renderhub serve` once, or pass --config)")
    try:
        arr = ArrConfig.load(path)
    except KeyError as exc:
        fail(f"{path} is not a usable arrconfig.json: it has no {exc} setting")
    except (OSError, ValueError, TypeError) as exc:
        fail(f"{path} is not a usable arrconfig.json: {exc}")
    # The hub's CA: beside the config (in tls/ as in a data dir, or as it is), else the data dir's.
    cas = [path.parent / "tls" / "ca.pem", path.parent / "ca.pem", data_dir / "tls" / "ca.pem"]
    ca = next((c for c in cas if c.exists()), None)
    return HubClient(arr, verify=str(ca) if ca else True)


def _origin(exc: httpx.HTTPError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # no request attached
        return "the hub"
    return f"{url.scheme}://{url.netloc.decode()}"


def checked_id(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A session or conversion id as the API takes it, refused here (saying what is allowed) rather than sent."""
    if value is not None and not ID_PATTERN.fullmatch(value):
        what = (param.name or "id").replace("_", " ")
        fail(f"{value[:80]!r} is not a {what}: an id is {ID_RULE}", code=2)
    return value


def api_command(func: Callable[..., None]) -> Callable[..., None]:
    """Options every session command shares, and ApiError as a message with exit code 1."""
    func = click.option("--json", "as_json", is_flag=True, help="Print the ARR JSON.")(func)
    func = click.option("--config", type=click.Path(path_type=Path), help="arrconfig.json (default: data dir's).")(func)
    func = data_dir_option(func)

    def wrapper(**kwargs: Any) -> None:
        try:
            func(**kwargs)
        except ApiError as exc:
            fail(f"{exc.code}: {exc.message} (HTTP {exc.status})")
        except httpx.HTTPError as exc:  # not reachable, TLS not trusted, timeout
            hub = _origin(exc)
            hint = ""
            if "mismatch, certificate is not valid for" in str(exc):
                # Trusted, but issued for other names: the hub does not know this is one of its addresses.
                hint = " (the hub's certificate does not name this address: start the hub with --public-host ADDRESS)"
            elif "CERTIFICATE_VERIFY_FAILED" in str(exc):
                hint = " (trust the hub's tls/ca.pem: pass its --data-dir, or set SSL_CERT_FILE to it)"
            fail(f"cannot reach {hub}: {exc or type(exc).__name__}{hint}")

    wrapper.__doc__, wrapper.__name__ = func.__doc__, func.__name__
    wrapper.__click_params__ = func.__click_params__  # type: ignore[attr-defined]
    return wrapper


def wait_until(
    body: dict[str, Any], get: Callable[[str], dict[str, Any]], terminal: tuple[str, ...], what: str, quiet: bool,
    interval: float = 0.25,
) -> dict[str, Any]:  # fmt: skip
    """Poll `get(id)` until the object's status is terminal, showing its status and the time taken."""
    started = time.monotonic()
    with console.status("", spinner="dots") as status:
        while body["status"] not in terminal:
            if not quiet:
                queued = f", number {body['queuePosition']} in the queue" if "queuePosition" in body else ""
                status.update(f"{what} {body['id']}: {body['status']}{queued} ({time.monotonic() - started:.1f} s)")
            time.sleep(interval)
            body = get(body["id"])
    if not quiet:
        took = time.monotonic() - started
        console.print(f"{what} {body['id']}: [bold]{body['status']}[/bold] after {took:.1f} s")
    return body
