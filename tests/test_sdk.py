"""The official Azure Remote Rendering SDK (1.0.0b3), unmodified, against a hub over TLS: a real hub process
with real render servers for the whole happy path, the app served in a thread (servers in memory) for the rest."""

from __future__ import annotations

import base64
import gc
import json
import ssl
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import httpx
import pytest
import yaml
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.mixedreality.authentication._utils import retrieve_jwt_expiration_timestamp
from azure.mixedreality.remoterendering import (
    RemoteRenderingClient,
    RenderingSession,
    RenderingSessionSize,
    RenderingSessionStatus,
)

from tests.hubs import HubEndpoint, RunningHub, ServedHub

POLL = 0.1  # seconds between the SDK's polls (5 s by default; the hub readies a session in a fraction of a second)
ARR_PORTS = range(49152, 65535)
DAY = 24 * 60 * 60


def sizes_file(directory: Path, standard_capacity: int) -> Path:
    """The packaged sizes.yaml with another Standard capacity, for `renderhub serve --sizes`."""
    sizes = yaml.safe_load(resources.files("renderhub").joinpath("sizes.yaml").read_text())
    sizes["Standard"]["capacity"] = standard_capacity
    path = directory / f"sizes-standard-{standard_capacity}.yaml"
    path.write_text(yaml.safe_dump(sizes))
    return path


@pytest.fixture
def open_sdk(
    hub_factory: Callable[..., RunningHub], served_hub_factory: Callable[..., ServedHub]
) -> Iterator[Callable[..., RemoteRenderingClient]]:
    """SDK clients for a hub, with the hub's account key or another; all closed before the hubs stop.

    A hub shutting down waits out its 5 s grace on TLS connections a client still holds open, and
    RemoteRenderingClient.close() leaves its token client's connection open, so that one is closed too. (It asks
    for the hub factories so that it is torn down before them.)"""
    clients: list[RemoteRenderingClient] = []

    def open_client(hub: HubEndpoint, key: str | None = None) -> RemoteRenderingClient:
        if key is None:
            client = hub.sdk(polling_interval=POLL)
        else:
            client = RemoteRenderingClient(
                endpoint=hub.endpoint,
                account_id=hub.config.account_id,
                account_domain="127.0.0.1",
                credential=AzureKeyCredential(key),
                authentication_endpoint_url=hub.endpoint,
                polling_interval=POLL,
            )
        clients.append(client)
        return client

    yield open_client
    gc.collect()  # an error a test caught sits in a reference cycle, holding its response's connection
    for client in clients:
        client.close()
        client._client._config.authentication_policy._credential.stsClient.close()


@pytest.fixture
def client(served_hub: ServedHub, open_sdk: Callable[..., RemoteRenderingClient]) -> RemoteRenderingClient:
    return open_sdk(served_hub)


def assert_ready(session: RenderingSession) -> None:
    assert session.status == RenderingSessionStatus.READY
    assert session.hostname
    assert session.handshake_port in ARR_PORTS
    assert session.arr_inspector_port in ARR_PORTS
    assert session.handshake_port != session.arr_inspector_port
    assert session.teraflops == pytest.approx(8.1)  # Standard, as ARR reported it


def test_session_lifecycle(hub: RunningHub, open_sdk: Callable[..., RemoteRenderingClient]) -> None:
    """Create and wait for Ready, read, extend, stop: the SDK's whole happy path, on a real render server."""
    client = open_sdk(hub)
    poller = client.begin_rendering_session("life-1", RenderingSessionSize.STANDARD, 10)
    ready = poller.result(timeout=30)
    assert poller.done()
    assert ready.id == "life-1"
    assert ready.size == RenderingSessionSize.STANDARD
    assert ready.lease_time_minutes == 10
    assert ready.elapsed_time_minutes == 0
    assert ready.created_on is not None
    assert ready.error is None
    assert_ready(ready)

    fetched = client.get_rendering_session("life-1")
    assert fetched.status == RenderingSessionStatus.READY
    assert (fetched.hostname, fetched.handshake_port, fetched.arr_inspector_port) == (
        ready.hostname,
        ready.handshake_port,
        ready.arr_inspector_port,
    )

    # PATCH sets a new total lease (25 minutes), it does not add to the old one (which would make 35).
    updated = client.update_rendering_session("life-1", lease_time_minutes=25)
    assert updated.lease_time_minutes == 25
    assert client.get_rendering_session("life-1").lease_time_minutes == 25

    client.stop_rendering_session("life-1")
    stopped = client.get_rendering_session("life-1")
    assert stopped.status == RenderingSessionStatus.STOPPED
    assert stopped.error is None
    assert stopped.teraflops == pytest.approx(8.1)  # kept after the session ends
    assert "life-1" not in {s.id for s in client.list_rendering_sessions()}
    # Stop is idempotent: a second stop of an ended session is no error either.
    client.stop_rendering_session("life-1")
    # An ended session's lease can no longer change.
    with pytest.raises(ResourceExistsError) as raised:
        client.update_rendering_session("life-1", lease_time_minutes=60)
    assert raised.value.status_code == 409


def test_retried_create_returns_the_same_session(client: RemoteRenderingClient) -> None:
    first = client.begin_rendering_session("retry-1", RenderingSessionSize.STANDARD, 5).result(timeout=30)
    again = client.begin_rendering_session("retry-1", RenderingSessionSize.STANDARD, 5).result(timeout=30)
    assert (again.id, again.created_on, again.handshake_port) == (first.id, first.created_on, first.handshake_port)
    assert [s.id for s in client.list_rendering_sessions()] == ["retry-1"]

    # An ended session is never restarted: the retried create hands it back as it is.
    client.stop_rendering_session("retry-1")
    ended = client.begin_rendering_session("retry-1", RenderingSessionSize.STANDARD, 5).result(timeout=30)
    assert ended.status == RenderingSessionStatus.STOPPED
    assert ended.created_on == first.created_on
    assert list(client.list_rendering_sessions()) == []


def test_session_ids_are_case_sensitive(client: RemoteRenderingClient, served_hub: ServedHub) -> None:
    served_hub.set_quota("Standard", 3)  # above the default quota (half the capacity of 4)
    for session_id in ("Case-1", "case-1", "CASE-1"):
        client.begin_rendering_session(session_id, RenderingSessionSize.STANDARD, 5)
    assert sorted(s.id for s in client.list_rendering_sessions()) == ["CASE-1", "Case-1", "case-1"]
    client.stop_rendering_session("case-1")
    assert client.get_rendering_session("Case-1").status != RenderingSessionStatus.STOPPED


def test_a_zero_lease_expires_as_soon_as_ready(client: RemoteRenderingClient) -> None:
    done = client.begin_rendering_session("zero", RenderingSessionSize.STANDARD, 0).result(timeout=30)
    assert done.status in (RenderingSessionStatus.READY, RenderingSessionStatus.EXPIRED)
    deadline = time.monotonic() + 10
    while (session := client.get_rendering_session("zero")).status != RenderingSessionStatus.EXPIRED:
        assert time.monotonic() < deadline, session.status
        time.sleep(POLL)
    assert session.error is None
    assert session.elapsed_time_minutes == 0
    assert "zero" not in {s.id for s in client.list_rendering_sessions()}


def test_list_follows_next_links_and_leaves_out_stopped_sessions(
    hub_factory: Callable[..., RunningHub], open_sdk: Callable[..., RemoteRenderingClient], tmp_path: Path
) -> None:
    # Room for all five sessions (the packaged Standard capacity is 4); a list page of two.
    hub = hub_factory("--rate-limit", "0", "--page-size", "2", "--sizes", str(sizes_file(tmp_path, 8)))
    hub.set_quota("Standard", 5)  # above the default quota (half the capacity)
    client = open_sdk(hub)
    ids = [f"page-{i}" for i in range(5)]
    for session_id in ids:
        client.begin_rendering_session(session_id, RenderingSessionSize.STANDARD, 30)

    pages = [[s.id for s in page] for page in client.list_rendering_sessions().by_page()]
    assert len(pages) == 3, pages  # 2 + 2 + 1: the SDK followed two @nextLinks
    assert all(len(page) <= 2 for page in pages), pages
    assert sorted(i for page in pages for i in page) == ids

    for session_id in ("page-1", "page-3"):
        client.stop_rendering_session(session_id)
    pages = [[s.id for s in page] for page in client.list_rendering_sessions().by_page()]
    assert len(pages) == 2, pages
    assert sorted(i for page in pages for i in page) == ["page-0", "page-2", "page-4"]


def test_get_of_an_unknown_session_is_404(client: RemoteRenderingClient) -> None:
    with pytest.raises(ResourceNotFoundError) as raised:
        client.get_rendering_session("no-such-session")
    assert raised.value.status_code == 404
    with pytest.raises(ResourceNotFoundError) as raised:
        client.stop_rendering_session("no-such-session")
    assert raised.value.status_code == 404


def test_create_with_the_same_id_and_other_settings_is_409(client: RemoteRenderingClient) -> None:
    client.begin_rendering_session("taken", RenderingSessionSize.STANDARD, 10).result(timeout=30)
    with pytest.raises(ResourceExistsError) as raised:
        client.begin_rendering_session("taken", RenderingSessionSize.STANDARD, 20)
    assert raised.value.status_code == 409
    with pytest.raises(ResourceExistsError) as raised:
        client.begin_rendering_session("taken", RenderingSessionSize.PREMIUM, 10)
    assert raised.value.status_code == 409
    assert client.get_rendering_session("taken").lease_time_minutes == 10


def test_update_to_a_lease_not_larger_than_the_current_is_422(client: RemoteRenderingClient) -> None:
    client.begin_rendering_session("lease", RenderingSessionSize.STANDARD, 10).result(timeout=30)
    for lease in (10, 5, 1441):
        with pytest.raises(HttpResponseError) as raised:
            client.update_rendering_session("lease", lease_time_minutes=lease)
        assert raised.value.status_code == 422, lease
        assert raised.value.error is not None and raised.value.error.code == "UnprocessableEntity"
    assert client.get_rendering_session("lease").lease_time_minutes == 10


def test_a_session_that_fails_while_polled_raises(
    served_hub_factory: Callable[..., ServedHub], open_sdk: Callable[..., RemoteRenderingClient], tmp_path: Path
) -> None:
    """No Standard server may run: the session ends in Error, and the SDK's poller must raise, not hang."""
    hub = served_hub_factory(sizes_file=sizes_file(tmp_path, 0))
    client = open_sdk(hub)
    poller = client.begin_rendering_session("no-room", RenderingSessionSize.STANDARD, 10)
    with pytest.raises(HttpResponseError) as raised:
        poller.result(timeout=30)
    assert raised.value.error is not None and raised.value.error.code == "CapacityExceeded"
    failed = client.get_rendering_session("no-room")
    assert failed.status == RenderingSessionStatus.ERROR
    assert failed.error is not None and failed.error.code == "CapacityExceeded"
    assert "no-room" not in {s.id for s in client.list_rendering_sessions()}


def test_a_wrong_account_key_is_401(served_hub: ServedHub, open_sdk: Callable[..., RemoteRenderingClient]) -> None:
    client = open_sdk(served_hub, key=base64.b64encode(b"not the account key, 32 bytes!!").decode())
    with pytest.raises(ClientAuthenticationError) as raised:
        client.get_rendering_session("anything")
    assert raised.value.status_code == 401


def test_every_token_decodes_with_the_sdks_standard_base64(served_hub: ServedHub) -> None:
    """The SDK reads `exp` with base64.b64decode (standard alphabet), which garbles a base64url payload holding
    '-' or '_'. Many tokens, each with a fresh jti and iat, must all read right that way."""
    hub = served_hub
    url = f"{hub.endpoint}/Accounts/{hub.config.account_id}/token"
    auth = {"Authorization": f"Bearer {hub.config.account_id}:{hub.config.account_key}"}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(hub.ca))) as http:
        for _ in range(300):
            response = http.get(url, headers=auth)
            assert response.status_code == 200, response.text
            assert response.headers["cache-control"] == "no-store,no-cache"
            token = response.json()["AccessToken"]
            payload = token.split(".")[1]
            assert not set(payload) & set("-_"), payload  # the characters b64decode would silently drop
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            assert retrieve_jwt_expiration_timestamp(token) == claims["exp"]
            assert claims["exp"] - time.time() == pytest.approx(DAY, abs=120)
