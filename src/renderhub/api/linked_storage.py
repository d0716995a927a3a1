"""A linked storage account's blob for a render server (ARR's three-field model load): a redirect to the blob with
a read SAS good for minutes, since only the hub holds the account's key."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from azure.storage.blob import BlobSasPermissions, generate_blob_sas
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from renderhub.api.access import authorize, hub
from renderhub.api.storage import blob_path
from renderhub.errors import NotFound
from renderhub.render.asset_lookup import CONTAINER

LINKED_BLOB = "/accounts/{account_id}/linked-storage/{storage_account}/{container}/{blob:path}"
SAS_LIFETIME = timedelta(minutes=10)  # long enough to start a download; a render server fetches at once
AZURE_SUFFIX = ".blob.core.windows.net"


async def linked_blob(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    await authorize(request, account_id)
    h = hub(request)
    # As ARR's clients name it: "NAME.blob.core.windows.net", or the bare account name.
    name = str(request.path_params["storage_account"]).lower().removesuffix(AZURE_SUFFIX)
    linked = next((a for a in h.links.accounts_for(account_id) if a.name.lower() == name), None)
    container = str(request.path_params["container"])
    if linked is None or not CONTAINER.fullmatch(container):
        raise NotFound("No storage account of that name is linked to this account.", target="storage_account")
    blob = blob_path(request.path_params["blob"]).as_posix()
    sas = generate_blob_sas(
        linked.name,
        container,
        blob,
        account_key=linked.key,
        permission=BlobSasPermissions(read=True),
        expiry=h.clock.now() + SAS_LIFETIME,
    )
    return RedirectResponse(f"{linked.endpoint.rstrip('/')}/{container}/{quote(blob)}?{sas}", status_code=307)


routes = [Route(LINKED_BLOB, linked_blob, methods=["GET"])]
