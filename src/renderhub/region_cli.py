"""`renderhub regions`, and sessions in a region: the latency test built in, and the nearest region with room."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from renderhub.cli_client import SESSION_TERMINAL, api_command, hub_client, wait_until
from renderhub.client import ApiError, HubClient
from renderhub.latency import SAMPLES, RoundTrip, nearest_first
from renderhub.models import REGION_PATTERN, REGION_RULE
from renderhub.terminal import console, errors, fail

# What a region answers when it has no room for the session, where another region may have some.
REFUSALS = ("CapacityExceeded", "QuotaExceeded")

region_option = click.option(
    "--region", default=None, metavar="NAME",
    help="A region of the deployment (`renderhub regions` lists them); default: the config's hub.",
)  # fmt: skip


def checked_region(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A region name as the directory keeps it, refused here (saying what is allowed)."""
    if value is not None and not REGION_PATTERN.fullmatch(value):
        fail(f"{value[:80]!r} is not a region name: a region name is {REGION_RULE}", code=2)
    return value


def in_region(client: HubClient, name: str | None) -> HubClient:
    """The client for region `name`'s endpoint (None: the config's own hub)."""
    if name is None:
        return client
    directory = client.regions()
    for region in directory:
        if region["name"] == name:
            return client.at(region["endpoint"])
    fail(f"no region named {name!r}: the regions are {', '.join(r['name'] for r in directory)}")


@click.command()
@click.option("--samples", type=click.IntRange(min=1, max=100), default=SAMPLES, show_default=True,
              help="Round trips per region; the median is reported.")  # fmt: skip
@api_command
def regions(samples: int, config: Path | None, data_dir: Path, as_json: bool) -> None:
    """Measure the round trip from here to every region, nearest first (as ARR's latency page did)."""
    with hub_client(config, data_dir) as client:
        measured = nearest_first(client.regions(), client.trust, samples)
    if as_json:
        click.echo(json.dumps({"regions": [m.to_json() for m in measured]}, indent=2))
        return
    table = Table("region", "round trip", "endpoint")
    for m in measured:
        median = m.median_ms
        table.add_row(m.name, f"{median:.1f} ms" if median is not None else f"[red]unreachable[/red] ({m.error})",
                      m.endpoint)  # fmt: skip
    console.print(table)


def create_in_nearest(
    client: HubClient, session_id: str, size: str, lease: int, idle_timeout: float | None, quiet: bool
) -> dict[str, Any]:
    """Create the session in the nearest region that has room: on CapacityExceeded or QuotaExceeded, the next
    nearest, saying so. Each try is followed until the session is Ready or fails (only then is a refusal known)."""
    measured = [m for m in nearest_first(client.regions(), client.trust) if m.median_ms is not None]
    if not measured:
        fail("no region answered the latency test (`renderhub regions` says why)")
    for n, region in enumerate(measured):
        more = n + 1 < len(measured)
        errors.print(f"region {region.name}: {region.median_ms:.1f} ms round trip", soft_wrap=True)
        with client.at(region.endpoint) as there:
            try:
                body = there.create(session_id, size, lease, idle_timeout)
            except ApiError as exc:
                if exc.code in REFUSALS and more:
                    _moving_on(region, exc.code, exc.message, measured[n + 1])
                    continue
                raise
            body = wait_until(body, there.get, SESSION_TERMINAL, "session", quiet=quiet)
        error = body.get("error") or {}
        if body["status"] == "Error" and error.get("code") in REFUSALS and more:
            _moving_on(region, error["code"], error["message"], measured[n + 1])
            continue
        return {**body, "region": region.name}
    raise AssertionError("unreachable: the last region's answer is returned")


def _moving_on(region: RoundTrip, code: str, message: str, following: RoundTrip) -> None:
    errors.print(
        f"region {region.name} refused the session ({code}: {message}); trying {following.name} "
        f"({following.median_ms:.1f} ms)",
        soft_wrap=True,
    )
