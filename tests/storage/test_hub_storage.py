"""The hub's own storage as a conversion on a cluster node reaches it: over HTTPS with a token for the account,
through the account's rate limit, refused for a token of another account, bounded like Azure downloads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from renderhub.client import HubClient
from renderhub.conversion import hub_storage
from renderhub.conversion.hub_storage import HubContainer
from renderhub.storage.errors import INPUT_DENIED, OUTPUT_DENIED, StorageDenied, StorageFailed
from tests.hubs import ServedHub


def container(hub: ServedHub, client: HubClient, name: str, token: str | None = None) -> HubContainer:
    return HubContainer(client.storage_uri(name), token or client.token(), hub.ca.read_text())


def model_files(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    files = [folder / f"part-{i}.bin" for i in range(count)]
    for i, path in enumerate(files):
        path.write_bytes(bytes([i]) * (300_000 + i))  # several chunks each
    return files


def test_files_go_up_and_come_back_whole_through_the_rate_limit(
    served_hub_factory: Callable[..., ServedHub], tmp_path: Path
) -> None:
    # Two requests a second for the account: each 429 is waited out, not taken for a failed conversion.
    hub = served_hub_factory(rate_limit_per_second=2, rate_limit_burst=2)
    files = model_files(tmp_path / "out", 5)
    with HubClient(hub.config, verify=str(hub.ca)) as client:
        target = container(hub, client, "converted")
        hub_storage.upload(target, "model/", files)
        listed = {blob["name"]: blob["size"] for blob in client.blobs("converted")}
        assert listed == {f"model/{path.name}": path.stat().st_size for path in files}
        got = hub_storage.download(target, "/model", tmp_path / "back", max_bytes=10_000_000)
    assert sorted(got) == sorted(path.name for path in files)
    for path in files:
        assert (tmp_path / "back" / path.name).read_bytes() == path.read_bytes()


def test_another_accounts_token_is_denied_and_a_big_input_refused(served_hub: ServedHub, tmp_path: Path) -> None:
    files = model_files(tmp_path / "out", 2)
    other = served_hub.new_account("other")
    with HubClient(other, verify=str(served_hub.ca)) as theirs:
        foreign = theirs.token()
    with HubClient(served_hub.config, verify=str(served_hub.ca)) as client:
        with pytest.raises(StorageDenied) as refused:
            hub_storage.upload(container(served_hub, client, "converted", foreign), "m", files)
        assert refused.value.code == OUTPUT_DENIED
        assert client.blobs("converted") == []  # nothing written
        hub_storage.upload(container(served_hub, client, "models", None), "m", files)
        with pytest.raises(StorageDenied) as unread:
            hub_storage.download(container(served_hub, client, "models", foreign), "m", tmp_path / "x", 10_000_000)
        assert unread.value.code == INPUT_DENIED
        with pytest.raises(StorageFailed, match="larger than this hub's limit of 500000 bytes"):
            hub_storage.download(container(served_hub, client, "models"), "m", tmp_path / "y", 500_000)
