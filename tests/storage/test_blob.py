"""Conversion inputs and outputs against a real Azurite: SAS permissions as Azure enforces them, linked accounts,
prefixes, the size cap, hostile blob names, private addresses, and errors that keep secrets out."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from renderhub.storage.blob import CHUNK, Container, LinkedAccount, container_for, download, upload
from renderhub.storage.errors import StorageDenied, StorageFailed
from tests.storage.azurite import Azurite, free_port

pytestmark = pytest.mark.integration

INPUT_BLOBS = {
    "Input/box.gltf": b'{"asset": {"version": "2.0"}}',
    "Input/box.bin": b"\x00" * 96,
    "Input/Textures/wood.png": b"\x89PNG",
    "Inputs/not-this.txt": b"a sibling folder whose name starts the same",
    "Other/not-this.txt": b"outside the prefix",
}
MAX = 1 << 20


def _input(azurite: Azurite, blobs: dict[str, bytes] = INPUT_BLOBS) -> str:
    uri = azurite.container()
    for name, data in blobs.items():
        azurite.put(uri, name, data)
    return uri


def _located(uri: str, sas: str | None, linked: Sequence[LinkedAccount] = ()) -> Container:
    container = container_for(uri, sas, linked)
    assert container is not None
    return container


def _sas(azurite: Azurite, uri: str, permission: str) -> Container:
    return _located(uri, azurite.sas(uri, permission))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _outputs(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "out"
    folder.mkdir(parents=True)
    (folder / "box.arrAsset").write_bytes(b"glTF" + b"\x01" * 60)
    (folder / "box.result.json").write_text('[{"result": "succeeded"}]')
    return [folder / "box.arrAsset", folder / "box.result.json"]


@pytest.mark.parametrize("prefix", ["Input", "Input/"])
def test_download_with_a_read_list_sas(azurite: Azurite, tmp_path: Path, prefix: str) -> None:
    uri = _input(azurite)
    container = container_for(uri, "?" + azurite.sas(uri, "rl"), [])  # the SDK's own tests send the '?' form
    assert container is not None
    names = download(container, prefix, tmp_path / "in", MAX, network=azurite.network())
    assert names == ["Textures/wood.png", "box.bin", "box.gltf"]
    assert _files(tmp_path / "in") == {n: INPUT_BLOBS[f"Input/{n}"] for n in names}


def test_download_of_the_whole_container(azurite: Azurite, tmp_path: Path) -> None:
    uri = _input(azurite)
    names = download(_sas(azurite, uri, "rl"), "", tmp_path / "in", MAX, network=azurite.network())
    assert sorted(names) == sorted(INPUT_BLOBS)
    assert _files(tmp_path / "in") == INPUT_BLOBS


@pytest.mark.parametrize("permission", ["cw", "rwdl"])
def test_upload_with_a_write_sas(azurite: Azurite, tmp_path: Path, permission: str) -> None:
    uri = azurite.container()
    files = _outputs(tmp_path)
    urls = upload(_sas(azurite, uri, permission), "conv-1", files, network=azurite.network())
    assert urls == [f"{uri}/conv-1/box.arrAsset", f"{uri}/conv-1/box.result.json"]  # no SAS in them
    assert azurite.names(uri) == ["conv-1/box.arrAsset", "conv-1/box.result.json"]
    assert azurite.read(uri, "conv-1/box.arrAsset") == files[0].read_bytes()
    assert azurite.content_type(uri, "conv-1/box.result.json") == "application/json"
    # Again, as a retried conversion would: the outputs are replaced.
    files[0].write_bytes(b"glTF again")
    upload(_sas(azurite, uri, permission), "conv-1/", files[:1], network=azurite.network())
    assert azurite.read(uri, "conv-1/box.arrAsset") == b"glTF again"


def _assert_clean(error: Exception, *secrets: str) -> None:
    for text in (str(error), repr(error)):
        for secret in secrets:
            assert secret not in text


def _signature(sas: str) -> str:
    return dict(part.split("=", 1) for part in sas.split("&"))["sig"]


def test_a_read_only_sas_for_the_output_fails(azurite: Azurite, tmp_path: Path) -> None:
    uri = azurite.container()
    sas = azurite.sas(uri, "rl")
    container = container_for(uri, sas, [])
    assert container is not None
    with pytest.raises(StorageDenied) as denied:
        upload(container, "out", _outputs(tmp_path), network=azurite.network())
    assert denied.value.code == "OutputContainerAccessDenied"
    assert denied.value.message == (
        "Access to the output blob container was denied. Invalid access rights or invalid shared access signature."
    )
    _assert_clean(denied.value, _signature(sas), azurite.key)
    assert azurite.names(uri) == []


@pytest.mark.parametrize("permission", ["cw", "w", "r"])  # 'r' alone cannot list
def test_an_input_sas_without_read_and_list_is_denied(azurite: Azurite, tmp_path: Path, permission: str) -> None:
    uri = _input(azurite)
    sas = azurite.sas(uri, permission)
    container = container_for(uri, sas, [])
    assert container is not None
    with pytest.raises(StorageDenied) as denied:
        download(container, "Input", tmp_path / "in", MAX, network=azurite.network())
    assert denied.value.code == "InputContainerAccessDenied"
    assert denied.value.message == (
        "Access to the input blob container was denied. Invalid access rights or invalid shared access signature."
    )
    _assert_clean(denied.value, _signature(sas))


def test_a_bad_or_expired_signature_is_denied(azurite: Azurite, tmp_path: Path) -> None:
    uri = _input(azurite)
    good = azurite.sas(uri, "rwdl")
    forged = good.replace(_signature(good), "AAAA" + _signature(good)[4:])
    expired = azurite.sas(uri, "rwdl", expiry=timedelta(minutes=-5))
    for attempt, sas in enumerate((forged, expired)):
        container = container_for(uri, sas, [])
        assert container is not None
        with pytest.raises(StorageDenied, match="input blob container was denied"):
            download(container, "Input", tmp_path / "in", MAX, network=azurite.network())
        with pytest.raises(StorageDenied, match="output blob container was denied"):
            upload(container, "out", _outputs(tmp_path / str(attempt)), network=azurite.network())


def test_no_secret_in_debug_logs(azurite: Azurite, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """urllib3 logs every request's URL at DEBUG: the SAS signature in it is blanked; the key is never sent."""
    caplog.set_level(logging.DEBUG)
    uri = _input(azurite)
    read, write = azurite.sas(uri, "rl"), azurite.sas(uri, "cw")
    download(_located(uri, read), "Input", tmp_path / "in", MAX, network=azurite.network())
    upload(_located(uri, write), "out", _outputs(tmp_path), network=azurite.network())
    download(_located(uri, None, [azurite.linked()]), "Input", tmp_path / "key", MAX, network=azurite.network())
    # By the records, not caplog.text: its format is whatever the worker's logging was given (Ray changes it).
    urllib3_lines = [r.getMessage() for r in caplog.records if r.name == "urllib3.connectionpool"]
    assert urllib3_lines and any("sig=REDACTED" in line for line in urllib3_lines), urllib3_lines
    _assert_clean(Exception(caplog.text), _signature(read), _signature(write), azurite.key)


def test_a_linked_account_as_conversion_ps1_names_it(azurite: Azurite, tmp_path: Path) -> None:
    uri = _input(azurite)
    name = uri.rsplit("/", 1)[1]
    # Linked storage is the operator's own: it is reached on loopback although the request's URIs may not be.
    network = azurite.network(allow_private=False)
    linked = container_for(f"https://devstoreaccount1.blob.core.windows.net/{name}", None, [azurite.linked()])
    assert linked is not None and linked.uri == uri
    assert download(linked, "Input", tmp_path / "in", MAX, network=network) == [
        "Textures/wood.png",
        "box.bin",
        "box.gltf",
    ]
    urls = upload(linked, "conv-2", _outputs(tmp_path), network=network)
    assert urls[0] == f"{uri}/conv-2/box.arrAsset"
    assert "conv-2/box.result.json" in azurite.names(uri)


def test_a_sas_on_a_linked_account_still_decides(azurite: Azurite, tmp_path: Path) -> None:
    """Conversion.ps1 -UseContainerSas names the account's Azure URI and sends a SAS: the SAS's rights apply."""
    uri = azurite.container()
    name = uri.rsplit("/", 1)[1]
    container = container_for(
        f"https://devstoreaccount1.blob.core.windows.net/{name}", azurite.sas(uri, "rl"), [azurite.linked()]
    )
    assert container is not None
    with pytest.raises(StorageDenied, match="output blob container was denied"):
        upload(container, "out", _outputs(tmp_path), network=azurite.network())


def test_a_wrong_account_key_is_denied(azurite: Azurite, tmp_path: Path) -> None:
    uri = _input(azurite)
    wrong = LinkedAccount(name=azurite.account, key="d3Jvbmcga2V5", endpoint=azurite.endpoint)
    container = container_for(uri, None, [wrong])
    assert container is not None
    with pytest.raises(StorageDenied) as denied:
        download(container, "Input", tmp_path / "in", MAX, network=azurite.network())
    _assert_clean(denied.value, wrong.key, azurite.key)


def test_the_size_cap(azurite: Azurite, tmp_path: Path) -> None:
    uri = _input(azurite)
    container = _sas(azurite, uri, "rl")
    total = sum(len(data) for name, data in INPUT_BLOBS.items() if name.startswith("Input/"))
    assert len(download(container, "Input", tmp_path / "exact", total, network=azurite.network())) == 3
    with pytest.raises(StorageFailed) as failed:
        download(container, "Input", tmp_path / "less", total - 1, network=azurite.network())
    assert failed.value.code == "ConversionProcessFailed"
    assert f"larger than this hub's limit of {total - 1} bytes" in failed.value.message


def test_big_blobs_go_in_blocks(azurite: Azurite, tmp_path: Path) -> None:
    uri = azurite.container()
    big = tmp_path / "big.arrAsset"
    big.write_bytes(os.urandom(2 * CHUNK + 12345))  # more than one block up, more than one range down
    container = _sas(azurite, uri, "rwdl")
    upload(container, "Input", [big], network=azurite.network())
    assert download(container, "Input", tmp_path / "in", 3 * CHUNK, network=azurite.network()) == ["big.arrAsset"]
    assert (tmp_path / "in" / "big.arrAsset").read_bytes() == big.read_bytes()


@pytest.mark.parametrize("hostile", ["Input/..\\escaped.txt", "Input//absolute.txt"])
def test_blob_names_that_leave_the_folder_are_refused(azurite: Azurite, tmp_path: Path, hostile: str) -> None:
    # Azure and Azurite store '\' as '/': the first is listed as 'Input/../escaped.txt'.
    uri = _input(azurite, {"Input/box.gltf": b"{}", hostile: b"escaped"})
    with pytest.raises(StorageFailed) as failed:
        download(_sas(azurite, uri, "rl"), "Input", tmp_path / "a" / "in", MAX, network=azurite.network())
    assert failed.value.code == "ConversionProcessFailed"
    assert "outside the input folder" in failed.value.message
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_private_addresses_in_a_request_are_refused_unless_allowed(azurite: Azurite, tmp_path: Path) -> None:
    uri = _input(azurite)
    with pytest.raises(StorageFailed) as refused:
        download(_sas(azurite, uri, "rl"), "Input", tmp_path / "in", MAX, network=azurite.network(allow_private=False))
    assert refused.value.code == "ConversionProcessFailed"
    assert "'127.0.0.1' is a loopback, link-local or private address" in refused.value.message
    with pytest.raises(StorageFailed, match="private address"):
        upload(_sas(azurite, uri, "cw"), "out", _outputs(tmp_path), network=azurite.network(allow_private=False))


def test_a_missing_container(azurite: Azurite, tmp_path: Path) -> None:
    uri = f"{azurite.endpoint}/never-made"
    with pytest.raises(StorageFailed) as failed:
        download(_sas(azurite, uri, "rl"), "Input", tmp_path / "in", MAX, network=azurite.network())
    assert (failed.value.code, failed.value.message) == (
        "ConversionProcessFailed",
        "The input container does not exist.",
    )
    with pytest.raises(StorageFailed, match="output container does not exist"):
        upload(_sas(azurite, uri, "cw"), "out", _outputs(tmp_path), network=azurite.network())


def test_unreachable_storage_and_unusable_uris(azurite: Azurite, tmp_path: Path) -> None:
    sas = azurite.sas(f"{azurite.endpoint}/anything", "rl")
    closed = container_for(f"http://127.0.0.1:{free_port()}/{azurite.account}/anything", sas, [])
    assert closed is not None
    with pytest.raises(StorageFailed) as failed:
        download(closed, "", tmp_path / "in", MAX, network=azurite.network(retries=0, connect_timeout=2.0))
    assert failed.value.code == "InternalServerError"
    assert failed.value.message.startswith("Unexpected internal server error encountered. The input storage host")
    _assert_clean(failed.value, _signature(sas))
    # ARR accepted a storageContainerUri that was no URI and failed the conversion with InternalServerError.
    garbage = container_for("('https://acct.blob.core.windows.net/test',)", sas, [])
    assert garbage is not None
    with pytest.raises(StorageFailed) as failed:
        download(garbage, "", tmp_path / "in", MAX, network=azurite.network())
    assert failed.value.code == "InternalServerError"


def test_over_https(azurite_https: Azurite, tmp_path: Path) -> None:
    uri = _input(azurite_https)
    assert uri.startswith("https://127.0.0.1:")
    names = download(_sas(azurite_https, uri, "rl"), "Input", tmp_path / "in", MAX, network=azurite_https.network())
    assert names == ["Textures/wood.png", "box.bin", "box.gltf"]
    upload(_sas(azurite_https, uri, "cw"), "out", _outputs(tmp_path), network=azurite_https.network())
    assert "out/box.arrAsset" in azurite_https.names(uri)
    with pytest.raises(StorageFailed, match="private address"):  # checked before the TLS handshake
        download(
            _sas(azurite_https, uri, "rl"), "", tmp_path / "x", MAX, network=azurite_https.network(allow_private=False)
        )
    # Without its CA the certificate is not trusted, and nothing is sent.
    with pytest.raises(StorageFailed) as failed:
        download(
            _sas(azurite_https, uri, "rl"),
            "Input",
            tmp_path / "again",
            MAX,
            network=azurite_https.network(ca_file=None, retries=0),
        )
    assert failed.value.code == "InternalServerError"
