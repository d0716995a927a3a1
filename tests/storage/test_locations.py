"""Which container a conversion's location names, and which storage addresses a conversion may reach."""

from __future__ import annotations

import pytest

from renderhub.storage.blob import Container, LinkedAccount, check_address, container_for
from renderhub.storage.errors import StorageFailed

AZURITE = LinkedAccount(name="devstoreaccount1", key="a2V5", endpoint="http://127.0.0.1:10000/devstoreaccount1")
AZURE = LinkedAccount(name="mystorage", key="c2VjcmV0", endpoint="https://mystorage.blob.core.windows.net")


@pytest.mark.parametrize("sas", ["sv=x&sig=y", "?sv=x&sig=y"])
def test_a_sas_from_the_request_is_used_as_given(sas: str) -> None:
    assert container_for("https://other.blob.core.windows.net/input/", sas, [AZURITE]) == Container(
        uri="https://other.blob.core.windows.net/input", sas="sv=x&sig=y", account=None
    )


@pytest.mark.parametrize("sas", [None, "", "?"])
def test_no_sas_and_no_linked_account_names_no_container(sas: str | None) -> None:
    assert container_for("https://other.blob.core.windows.net/input", sas, [AZURITE, AZURE]) is None
    assert container_for("http://127.0.0.1:10000/devstoreaccount1/input", sas, []) is None


@pytest.mark.parametrize(
    "uri",
    [
        "https://devstoreaccount1.blob.core.windows.net/arrinput",  # as Conversion.ps1 builds it
        "https://DevStoreAccount1.blob.core.windows.net/arrinput/",
        "http://127.0.0.1:10000/devstoreaccount1/arrinput",  # the configured endpoint
    ],
)
def test_a_linked_account_needs_no_sas(uri: str) -> None:
    linked = container_for(uri, "", [AZURE, AZURITE])
    assert linked == Container(uri="http://127.0.0.1:10000/devstoreaccount1/arrinput", sas=None, account=AZURITE)
    # With a SAS as well (Conversion.ps1 -UseContainerSas), the SAS decides what the conversion may do.
    with_sas = container_for(uri, "?sp=r&sig=z", [AZURITE])
    assert with_sas is not None and (with_sas.uri, with_sas.sas) == (linked.uri, "sp=r&sig=z")


def test_an_azure_account_maps_onto_itself() -> None:
    linked = container_for("https://mystorage.blob.core.windows.net/models", None, [AZURE])
    assert linked == Container(uri="https://mystorage.blob.core.windows.net/models", sas=None, account=AZURE)


@pytest.mark.parametrize(
    "uri",
    [
        "https://devstoreaccount2.blob.core.windows.net/arrinput",
        "https://devstoreaccount1.blob.core.windows.net.evil.example/arrinput",
        "https://devstoreaccount1.blob.core.windows.net/arrinput/sub",  # not a container
        "https://devstoreaccount1.blob.core.windows.net/",
        "https://devstoreaccount1.blob.core.windows.net/arrinput?sig=x",
        "http://127.0.0.1:10001/devstoreaccount1/arrinput",  # another port
        "http://127.0.0.1:10000/otheraccount/arrinput",
        "http://127.0.0.1:10000/devstoreaccount1",
        "http://127.0.0.1:99999/devstoreaccount1/arrinput",
        "https://devstoreaccount1.blob.core.windows.net:port/arrinput",
        "ftp://devstoreaccount1.blob.core.windows.net/arrinput",
        "('https://devstoreaccount1.blob.core.windows.net/arrinput',)",
    ],
)
def test_uris_off_the_linked_accounts_are_not_linked(uri: str) -> None:
    assert container_for(uri, None, [AZURITE]) is None


def test_secrets_stay_out_of_reprs() -> None:
    container = container_for("https://devstoreaccount1.blob.core.windows.net/c", "sv=1&sig=SECRETSIG", [AZURITE])
    assert "SECRETSIG" not in repr(container) and AZURITE.key not in repr(container)


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:10000/devstoreaccount1/c",
        "https://localhost/c",
        "https://[::1]/c",
        "https://[::ffff:127.0.0.1]/c",
        "https://10.1.2.3/c",
        "https://192.168.0.10/c",
        "http://169.254.169.254/c",  # cloud metadata
        "https://[fe80::1]/c",
        "https://0.0.0.0/c",
    ],
)
def test_private_storage_addresses_only_where_allowed(uri: str) -> None:
    with pytest.raises(StorageFailed) as refused:
        check_address(uri, allow_private=False)
    assert refused.value.code == "ConversionProcessFailed"
    assert "private address" in refused.value.message
    check_address(uri, allow_private=True)


def test_public_addresses_pass() -> None:
    check_address("https://20.60.0.1/c", allow_private=False)  # a literal: no DNS needed
    check_address("https://[2603:1000::1]:443/c", allow_private=False)


@pytest.mark.parametrize("uri", ["ftp://20.60.0.1/c", "not a uri", "https:///c", "https://20.60.0.1:99999/c"])
def test_non_http_uris_fail_as_arr_failed_them(uri: str) -> None:
    for allow_private in (False, True):
        with pytest.raises(StorageFailed) as failed:
            check_address(uri, allow_private)
        assert failed.value.code == "InternalServerError"
