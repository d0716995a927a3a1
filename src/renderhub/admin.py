"""`renderhub account` and `renderhub usage`: administration, straight on the hub's database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Column, Table

from renderhub.budgets import Budget, Spend, month_start
from renderhub.client import ArrConfig
from renderhub.clock import Clock
from renderhub.metering import COST_QUANTUM
from renderhub.models import DEFAULT_REGION, ServerSize
from renderhub.terminal import console, data_dir_option, database_option, fail, on_store

if TYPE_CHECKING:
    from renderhub.models import Account, UsageRecord
    from renderhub.store import Repository
    from renderhub.store.pools import PooledServer
    from renderhub.store.regions import Region


@click.group()
def account() -> None:
    """Manage accounts and their keys (on the hub's database)."""


@account.command("create")
@click.option("--name", default="account", show_default=True)
@click.option("--endpoint", default=None, help="For --arrconfig (default: the data dir's arrconfig.json's hub).")
@click.option(
    "--region", default=None, metavar="NAME", help="For --arrconfig: that region's endpoint (the directory's)."
)
@click.option("--arrconfig", type=click.Path(path_type=Path), help="Also write an arrconfig.json for it here.")
@data_dir_option
@database_option
def account_create(name: str, endpoint: str | None, region: str | None, arrconfig: Path | None, data_dir: Path,
                   database_url: str | None) -> None:  # fmt: skip
    """Create an account (valid in every region); its keys are shown once."""
    from renderhub.auth import new_account
    from renderhub.bootstrap import write_arrconfig

    if endpoint and region:
        fail("--endpoint and --region say the same thing: give one")
    acct, primary, secondary = new_account(name, Clock().now())

    async def work(repo: Repository) -> str | None:
        """The region's endpoint (None: no such region, and no account); the account is created."""
        there = {r.name: r.endpoint for r in await repo.regions.all()}.get(region) if region else endpoint
        if region is None or there is not None:
            await repo.insert_account(acct)
        return there

    there = on_store(work, data_dir, database_url)
    if region is not None and there is None:
        fail(f"no region named {region!r} in the directory (`renderhub region list`); nothing was created")
    endpoint = there
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


SIZE_CHOICE = click.Choice([size.value for size in ServerSize], case_sensitive=False)
sizes_option = click.option(
    "--sizes", "sizes_file", type=click.Path(exists=True, path_type=Path),
    help="The sizes file the hub serves with, for the default quotas (default: the packaged one).",
)  # fmt: skip


@account.command("list")
@sizes_option
@data_dir_option
@database_option
def account_list(sizes_file: Path | None, data_dir: Path, database_url: str | None) -> None:
    """List accounts and their quotas: live sessions per size ("default": half the size's capacity, at least one)."""
    from renderhub.config import Settings

    async def work(repo: Repository) -> tuple[list[Account], dict[str, dict[ServerSize, int]]]:
        return await repo.list_accounts(), await repo.quotas()

    try:
        sizes = Settings(sizes_file=sizes_file).load_sizes()
    except (OSError, ValueError) as exc:
        fail(f"--sizes {sizes_file}: {exc}" if sizes_file else str(exc))
    accounts, quotas = on_store(work, data_dir, database_url)
    table = Table(Column("id", overflow="fold"), "name", "created", *(f"{size} quota" for size in ServerSize))
    for a in accounts:
        set_here = quotas.get(a.id, {})
        shown = [
            str(set_here[size]) if size in set_here else f"{sizes[size].default_quota} (default)" for size in ServerSize
        ]
        table.add_row(a.id, a.name, a.created_at.isoformat(timespec="seconds"), *shown)
    console.print(table)


@account.command("set-quota")
@click.argument("account_id")
@click.option("--size", "size_name", type=SIZE_CHOICE, required=True)
@click.option("--max", "max_sessions", type=click.IntRange(min=0), help="Live sessions of the size it may hold.")
@click.option(
    "--default", "to_default", is_flag=True, help="Back to the default: half the size's capacity, at least one."
)
@data_dir_option
@database_option
def account_set_quota(account_id: str, size_name: str, max_sessions: int | None, to_default: bool,
                      data_dir: Path, database_url: str | None) -> None:  # fmt: skip
    """Set how many live sessions of a size an account may hold (creates beyond it: 403 QuotaExceeded). Sessions
    already live stay; the hubs apply it to the next create."""
    if (max_sessions is None) == (not to_default):
        fail("give either --max N or --default")
    size = ServerSize.parse(size_name)
    account_id = account_id.lower()
    if not on_store(lambda repo: repo.set_quota(account_id, size, max_sessions), data_dir, database_url):
        fail(f"no account {account_id}")
    if max_sessions is None:
        console.print(
            f"account {account_id}: {size} quota back to the default (half the size's capacity, at least one)"
        )
    else:
        console.print(f"account {account_id}: at most {max_sessions} live {size} session(s)")


@account.command("set-budget")
@click.argument("account_id")
@click.option("--cost", type=str, default=None, help="What its sessions may cost in a calendar month (UTC).")
@click.option("--minutes", type=click.IntRange(min=0), default=None, help="Billable minutes in a calendar month.")
@click.option("--none", "remove", is_flag=True, help="No budget.")
@data_dir_option
@database_option
def account_set_budget(account_id: str, cost: str | None, minutes: int | None, remove: bool, data_dir: Path,
                       database_url: str | None) -> None:  # fmt: skip
    """Set an account's monthly budget: creates and lease extensions that would pass it are refused (403
    BudgetExceeded); running sessions go on."""
    if remove == (cost is not None or minutes is not None):
        fail("give --cost and/or --minutes, or --none")
    try:
        amount = None if cost is None else Decimal(cost)
    except ArithmeticError:
        fail(f"--cost {cost!r} is not a number")
    if amount is not None and (not amount.is_finite() or amount < 0):
        fail(f"--cost {cost!r} must be a number of at least 0")
    budget = Budget(None if amount is None else amount.quantize(COST_QUANTUM), minutes)
    account_id = account_id.lower()
    if not on_store(lambda repo: repo.budgets.set(account_id, budget), data_dir, database_url):
        fail(f"no account {account_id}")
    limits = []
    if budget.cost is not None:
        limits.append(f"{budget.cost} a month")
    if budget.minutes is not None:
        limits.append(f"{budget.minutes} minutes a month")
    console.print(
        f"account {account_id}: " + (f"budget {' and '.join(limits)} (UTC months)" if limits else "no budget")
    )


@account.command("set-idle-timeout")
@click.argument("account_id")
@click.option("--minutes", type=click.FloatRange(min=0, max=1440, min_open=True), default=None,
              help="Stop its sessions after this long without a client.")  # fmt: skip
@click.option("--off", is_flag=True, help="No idle stop (the default).")
@data_dir_option
@database_option
def account_set_idle_timeout(account_id: str, minutes: float | None, off: bool, data_dir: Path,
                             database_url: str | None) -> None:  # fmt: skip
    """Set the idle timeout of the sessions an account creates from now on (a create's idleTimeoutMinutes
    overrides it): a session without a client that long is stopped (error IdleTimeout) and billed to then."""
    if off == (minutes is not None):
        fail("give either --minutes N or --off")
    seconds = None if minutes is None else round(minutes * 60)
    account_id = account_id.lower()
    if not on_store(lambda repo: repo.set_idle_timeout(account_id, seconds), data_dir, database_url):
        fail(f"no account {account_id}")
    console.print(f"account {account_id}: " + ("no idle stop" if seconds is None else f"idle timeout {minutes:g} min"))


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
    if not on_store(lambda repo: repo.replace_key(account_id, slot, hash_key(key)), data_dir, database_url):
        fail(f"no account {account_id}")
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
            live = await repo.live_sessions_in_every_region(account_id)
            return f"account {account_id} has {len(live)} live session(s); stop them first: " + ", ".join(
                f"{session_id} (region {region})" for region, session_id in live
            )
        return None

    problem = on_store(work, data_dir, database_url)
    if problem:
        fail(problem)
    console.print(f"deleted account {account_id}")


def _date(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command()
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
        fail(f"bad date: {exc}")

    async def work(repo: Repository) -> tuple[list[UsageRecord], Budget | None, Spend]:
        records = await repo.usage(account_id, *span)
        if account_id is None:
            return records, None, Spend()
        month = month_start(Clock().now())
        return records, await repo.budgets.get(account_id), await repo.budgets.spent(account_id, month)

    records, budget, month_spend = on_store(work, data_dir, database_url)
    minutes = sum(r.billable_minutes for r in records)
    total = sum((r.cost for r in records), Decimal(0))
    if as_json:
        rows = [{"accountId": r.account_id, "sessionId": r.session_id, "region": r.region, "size": r.size.value,
                 "readyAt": r.ready_at.isoformat() if r.ready_at else None, "endedAt": r.ended_at.isoformat(),
                 "billableMinutes": r.billable_minutes, "cost": str(r.cost)} for r in records]  # fmt: skip
        body: dict[str, object] = {"records": rows, "billableMinutes": minutes, "cost": str(total)}
        if budget is not None:
            body["budget"] = {
                "monthlyCost": None if budget.cost is None else str(budget.cost),
                "monthlyMinutes": budget.minutes,
                "spentThisMonth": {"cost": str(month_spend.cost), "billableMinutes": month_spend.minutes},
            }
        click.echo(json.dumps(body, indent=2))
        return
    session_col, ready_col, ended_col = (Column(name, overflow="fold") for name in ("session", "ready", "ended"))
    # The region column only where there are regions: an 80-column terminal has no room to spare.
    regional = any(r.region != DEFAULT_REGION for r in records)
    table = Table("account", session_col, *(["region"] if regional else []), "size", ready_col, ended_col,
                  "minutes", "cost")  # fmt: skip
    for r in records:
        table.add_row(r.account_id[:8], r.session_id, *([r.region] if regional else []), r.size.value,
                      r.ready_at.isoformat(timespec="seconds") if r.ready_at else "-",
                      r.ended_at.isoformat(timespec="seconds"), str(r.billable_minutes), str(r.cost))  # fmt: skip
    table.add_row("total", f"{len(records)} sessions", *([""] if regional else []), "", "", "", str(minutes),
                  str(total), style="bold")  # fmt: skip
    console.print(table)
    if budget is not None:
        against = []
        if budget.cost is not None:
            against.append(f"{month_spend.cost} of {budget.cost}")
        if budget.minutes is not None:
            against.append(f"{month_spend.minutes} of {budget.minutes} minutes")
        console.print(f"this month (UTC): spent {' and '.join(against)} of the budget")


@click.group()
def pool() -> None:
    """The warm pools (on the hub's database): render servers started ahead of demand (`serve --warm-pool`)."""


@pool.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
@database_option
def pool_list(as_json: bool, data_dir: Path, database_url: str | None) -> None:
    """List every region's pooled render servers: Ready ones a create takes at once, and those still booting."""

    async def work(repo: Repository) -> list[tuple[str, PooledServer]]:
        return await repo.pools.everywhere()

    found = on_store(work, data_dir, database_url)
    if as_json:
        click.echo(json.dumps([{"region": region, "size": p.size.value, "status": p.status, "poolId": p.pool_id,
                                "hostname": p.hostname, "createdAt": p.created_at.isoformat(),
                                "readyAt": p.ready_at.isoformat() if p.ready_at else None}
                               for region, p in found], indent=2))  # fmt: skip
        return
    table = Table("region", "size", "status", "host", "since")
    for region_name, p in found:
        since = p.ready_at or p.created_at
        table.add_row(region_name, p.size.value, p.status, p.hostname or "-", since.strftime("%Y-%m-%d %H:%M:%S"))
    console.print(table if found else "no pooled render servers (serve --warm-pool SIZE=N keeps some)")


@click.group()
def region() -> None:
    """The region directory (on the hub's database): each hub writes its own region's entry as it starts."""


@region.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
@database_option
def region_list(as_json: bool, data_dir: Path, database_url: str | None) -> None:
    """List the regions, their endpoints and their live sessions."""

    async def work(repo: Repository) -> list[tuple[Region, int]]:
        return [(r, await repo.regions.live_sessions(r.name)) for r in await repo.regions.all()]

    found = on_store(work, data_dir, database_url)
    if as_json:
        click.echo(json.dumps([{"name": r.name, "endpoint": r.endpoint, "probeUrl": r.probe_url,
                                "liveSessions": n} for r, n in found], indent=2))  # fmt: skip
        return
    table = Table("region", "endpoint", "live sessions")
    for r, live in found:
        table.add_row(r.name, r.endpoint, str(live))
    console.print(table if found else "no regions yet (a hub adds its own as it starts)")


@region.command("remove")
@click.argument("name")
@data_dir_option
@database_option
def region_remove(name: str, data_dir: Path, database_url: str | None) -> None:
    """Take a region out of the directory (one whose hubs are gone for good; a hub that starts puts it back)."""

    async def work(repo: Repository) -> str | None:
        live = await repo.regions.live_sessions(name)
        if live:
            return f"region {name!r} still holds {live} live session(s): stop them first"
        return None if await repo.regions.remove(name) else f"no region named {name!r}"

    refused = on_store(work, data_dir, database_url)
    if refused:
        fail(refused)
    console.print(f"removed region {name}")
