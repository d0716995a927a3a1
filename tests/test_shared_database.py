"""Hubs on one PostgreSQL database: the same accounts, the same tokens, one session store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from renderhub.client import ArrConfig, HubClient
from tests.hubs import RunningHub, free_port, wait_for


@pytest.mark.postgres
def test_two_hubs_on_postgresql_share_tokens_and_sessions(
    hub_factory: Callable[..., RunningHub], postgres_url: str
) -> None:
    first = hub_factory("--rate-limit", "0", "--database-url", postgres_url, name="first")
    second = hub_factory("--rate-limit", "0", "--database-url", postgres_url, name="second")
    assert not (second.data_dir / "arrconfig.json").exists(), "the account already existed in the database"
    # Point the first hub's account config at the second hub: same account, same signing key.
    at_second = ArrConfig(**{**first.config.__dict__, "account_domain": second.endpoint,
                             "rendering_domain": second.endpoint})  # fmt: skip
    with first.client() as a, HubClient(at_second, verify=str(first.ca)) as b:
        token = a.token()
        b._token = (token, float("inf"))  # a token issued by the first hub, verified by the second
        a.create("shared", "Standard", 20)
        ready = wait_for(lambda: (s := b.get("shared"))["status"] == "Ready" and s, timeout=15)
        assert ready["maxLeaseTimeMinutes"] == 20
        b.update("shared", 40)
        assert a.get("shared")["maxLeaseTimeMinutes"] == 40
        b.stop("shared")
        assert a.get("shared")["status"] == "Stopped"


@pytest.mark.postgres
def test_a_new_replica_takes_the_databases_certificate_authority(
    hub_factory: Callable[..., RunningHub], postgres_url: str, tmp_path: Path
) -> None:
    first = hub_factory("--rate-limit", "0", "--database-url", postgres_url, name="first")
    # A replica set up on its own, with no CA copied in: it makes one, then gives way to the database's.
    second = RunningHub(tmp_path / "fresh", free_port(), ["--rate-limit", "0", "--database-url", postgres_url])
    second.data_dir.mkdir()
    try:
        second.start()
        assert second.ca.read_bytes() == first.ca.read_bytes()
        assert "replaced by the one the database's other hubs share" in second.log
        with HubClient(ArrConfig(**{**first.config.__dict__, "account_domain": second.endpoint,
                                    "rendering_domain": second.endpoint}), verify=str(first.ca)) as client:  # fmt: skip
            assert client.list() == []  # the first replica's ca.pem opens the second replica too
    finally:
        second.stop()
