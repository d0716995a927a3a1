"""Monthly budgets: the arithmetic (pure), and a real hub with real render servers refusing a create and an
extension that would pass the budget (403 BudgetExceeded, through the official SDK), while running sessions go on."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mixedreality.remoterendering import RemoteRenderingClient, RenderingSessionSize

from renderhub.budgets import Budget, Spend, check, lease_spend, month_start
from renderhub.errors import BudgetExceeded
from tests.hubs import RENDERHUB, RunningHub
from tests.test_sdk import open_sdk  # noqa: F401  (a fixture)

STANDARD_PRICE = Decimal("0.05")  # the packaged sizes.yaml's, per minute


def test_a_month_is_a_utc_calendar_month() -> None:
    assert month_start(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(2026, 12, 1, tzinfo=UTC)


def test_what_is_asked_is_refused_only_past_what_is_left() -> None:
    budget = Budget(cost=Decimal("1.0000"))
    spent, committed = Spend(4, Decimal("0.2000")), lease_spend(10, STANDARD_PRICE)  # 0.20 + 0.50
    check(budget, spent, committed, lease_spend(6, STANDARD_PRICE))  # 0.30: exactly what is left
    with pytest.raises(BudgetExceeded, match=r"up to 0.3500 where 0.3000 .* budget of 1.0000 is left"):
        check(budget, spent, committed, lease_spend(7, STANDARD_PRICE))
    minutes = Budget(minutes=60)
    check(minutes, Spend(20), Spend(30), Spend(10))
    with pytest.raises(BudgetExceeded, match="up to 11 minutes where 10 of"):
        check(minutes, Spend(20), Spend(30), Spend(11))
    check(Budget(), Spend(10**6, Decimal(10**6)), Spend(), Spend(10**6, Decimal(10**6)))  # no limit


def renderhub(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([RENDERHUB, *(str(a) for a in args)], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.slow
def test_a_budget_refuses_what_would_pass_it_and_stops_nothing(
    hub: RunningHub,
    open_sdk: Callable[..., RemoteRenderingClient],  # noqa: F811
) -> None:
    account, data = hub.config.account_id, hub.data_dir
    said = renderhub("account", "set-budget", account, "--cost", "1", "--data-dir", data)
    assert said.returncode == 0 and "budget 1.0000 a month" in said.stdout, said.stderr
    client = open_sdk(hub)
    # 10 minutes of Standard: 0.50 of the 1.00.
    first = client.begin_rendering_session("within", RenderingSessionSize.STANDARD, 10).result(timeout=60)
    assert first.status == "Ready"
    attempts: list[int] = []
    with pytest.raises(HttpResponseError) as refused:
        client.begin_rendering_session(
            "beyond", RenderingSessionSize.STANDARD, 15,  # 0.75 more: 1.25
            raw_response_hook=lambda response: attempts.append(response.http_response.status_code),
        )  # fmt: skip
    assert (refused.value.status_code, refused.value.error.code) == (403, "BudgetExceeded")  # type: ignore[union-attr]
    assert "0.5000 of the account's monthly budget of 1.0000 is left" in str(refused.value.message)
    assert attempts == [403], "the SDK sent the PUT once"
    # A retried create of the session that exists is answered as that session, whatever the budget says.
    again = client.begin_rendering_session("within", RenderingSessionSize.STANDARD, 10).result(timeout=30)
    assert again.id == "within"
    # Extending: 15 more minutes (0.75) is refused, 10 more (0.50, all that is left) is granted.
    with pytest.raises(HttpResponseError) as extension:
        client.update_rendering_session(session_id="within", lease_time_minutes=25)
    assert extension.value.error.code == "BudgetExceeded"  # type: ignore[union-attr]
    assert client.update_rendering_session(session_id="within", lease_time_minutes=20).lease_time_minutes == 20
    # Lowered below what is committed: nothing new, but the running session goes on.
    assert renderhub("account", "set-budget", account, "--cost", "0.10", "--data-dir", data).returncode == 0
    with pytest.raises(HttpResponseError):
        client.begin_rendering_session("small", RenderingSessionSize.STANDARD, 1)
    assert client.get_rendering_session("within").status == "Ready"
    usage = json.loads(renderhub("usage", "--account", account, "--json", "--data-dir", data).stdout)
    assert usage["budget"] == {
        "monthlyCost": "0.1000",
        "monthlyMinutes": None,
        "spentThisMonth": {"cost": "0.0000", "billableMinutes": 0},
    }
    human = renderhub("usage", "--account", account, "--data-dir", data)
    assert "this month (UTC): spent 0.0000 of 0.1000 of the budget" in human.stdout
    client.stop_rendering_session("within")
    assert (
        renderhub("account", "set-budget", account, "--none", "--data-dir", data).stdout.strip().endswith("no budget")
    )
    assert (
        client.begin_rendering_session("small", RenderingSessionSize.STANDARD, 1).result(timeout=60).status == "Ready"
    )
    client.stop_rendering_session("small")
