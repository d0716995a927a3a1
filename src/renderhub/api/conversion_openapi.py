"""The conversion operations and the hub's own storage in the OpenAPI document (openapi.py merges them in)."""

from __future__ import annotations

from typing import Any

from renderhub import errors
from renderhub.api.conversion_schemas import ASSET_SUFFIX
from renderhub.api.conversions import CONVERSION, CONVERSIONS
from renderhub.api.schemas import SESSION_ID
from renderhub.api.storage import BLOB, STORAGE
from renderhub.models import ConversionStatus

CONVERSION_TAG = "asset conversion"
STORAGE_TAG = "hub storage"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref("schemas", schema)}}


def _location(direction: str, sas: str, last: str, last_description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"Where the conversion {direction}. Empty strings count as absent (Conversion.ps1).",
        "required": ["storageContainerUri", *([last] if last == "relativeInputAssetPath" else [])],
        "properties": {
            "storageContainerUri": {
                "type": "string",
                "format": "uri",
                "description": "An Azure Blob container's URL, or one of the hub's own: "
                "`{hub}/accounts/{account_id}/storage/{container}`.",
            },
            sas: {
                "type": "string",
                "description": "A container SAS (a leading `?` is dropped); never echoed. Without one the container "
                "must be the hub's own storage of this account or on a storage account linked to the hub.",
            },
            "blobPrefix": {"type": "string", "description": "A folder in the container; echoed ending in `/`."},
            last: {"type": "string", "description": last_description},
        },
    }


def schemas() -> dict[str, Any]:
    return {
        "conversion_status": {
            "type": "string",
            "enum": [status.value for status in ConversionStatus],
            "description": "Failed and Succeeded are terminal. Cancelled, in ARR's enum, is never reported: there is "
            "no cancel operation, and the SDK's poller would wait on it forever.",
        },
        "conversion_input_settings": _location(
            "reads its model",
            "storageContainerReadListSas",
            "relativeInputAssetPath",
            "The model's path in the folder.",
        ),
        "conversion_output_settings": _location(
            "writes the converted model, its result.json and info.json",
            "storageContainerWriteSas",
            "outputAssetFilename",
            f"Ends in {ASSET_SUFFIX}; when absent, the model's name with {ASSET_SUFFIX} (and echoed so).",
        ),
        "conversion_settings": {
            "type": "object",
            "required": ["inputLocation", "outputLocation"],
            "properties": {
                "inputLocation": _ref("schemas", "conversion_input_settings"),
                "outputLocation": _ref("schemas", "conversion_output_settings"),
            },
        },
        "create_conversion_settings": {
            "type": "object",
            "description": "Other fields are ignored.",
            "required": ["settings"],
            "properties": {"settings": _ref("schemas", "conversion_settings")},
        },
        "conversion": {
            "type": "object",
            "required": ["id", "settings", "status", "error", "creationTime"],
            "properties": {
                "id": {"type": "string"},
                "settings": _ref("schemas", "conversion_settings"),
                "output": {
                    "type": "object",
                    "description": "Only once Succeeded.",
                    "properties": {"outputAssetUri": {"type": "string", "format": "uri"}},
                },
                "error": {
                    "anyOf": [_ref("schemas", "error"), {"type": "null"}],
                    "description": "Null unless Failed.",
                },
                "status": _ref("schemas", "conversion_status"),
                "creationTime": {"type": "string", "format": "date-time"},
            },
        },
        "conversion_list": {
            "type": "object",
            "required": ["conversions"],
            "properties": {
                "conversions": {"type": "array", "items": _ref("schemas", "conversion")},
                "@nextLink": {
                    "type": ["string", "null"],
                    "description": "The next page's whole URL, api-version included; null on the last page.",
                },
            },
        },
    }


def responses() -> dict[str, Any]:
    return {
        errors.DelegatedResourceAccessError.code: {
            "description": "The token is for another account, or a container has no SAS and is not linked.",
            "content": _json("error_response"),
        },
        "ContentTooLarge": {"description": "Over the hub's upload limit.", "content": _json("error_response")},
    }


def _operation(
    tag: str, operation_id: str, summary: str, success: dict[str, Any], failures: dict[str, str], params: list[Any]
) -> dict[str, Any]:
    return {
        "tags": [tag],
        "summary": summary,
        "operationId": operation_id,
        "security": [{"ArrToken": []}],
        "parameters": params,
        "responses": {**success, **{status: _ref("responses", code) for status, code in failures.items()}},
    }


def paths() -> dict[str, dict[str, Any]]:
    version, account = _ref("parameters", "api_version"), _ref("parameters", "account_id")
    conversion_id = {
        "name": "conversion_id",
        "in": "path",
        "required": True,
        "description": "Case-sensitive.",
        "schema": {"type": "string", "pattern": f"^{SESSION_ID.pattern}$"},
    }
    common = {
        "401": "Unauthorized",
        "403": "Forbidden",
        "429": "TooManyRequests",
        "500": "InternalServerError",
        "503": "ServiceUnavailable",
    }
    one = {"description": "The conversion.", "content": _json("conversion")}
    create = _operation(
        CONVERSION_TAG,
        "RemoteRendering_CreateConversion",
        "Creates a conversion; it starts NotStarted.",
        {
            "200": {**one, "description": "It exists with these settings (a retried create)."},
            "201": {**one, "description": "Created."},
        },
        {**common, "400": "BadRequest", "403": "DelegatedResourceAccessError", "409": "Conflict"},
        [version, account, conversion_id],
    )
    create["requestBody"] = {"required": True, "content": _json("create_conversion_settings")}
    container = {"name": "container", "in": "path", "required": True, "schema": {"type": "string"}}
    blob = {"name": "blob", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        CONVERSION: {
            "get": _operation(
                CONVERSION_TAG,
                "RemoteRendering_GetConversion",
                "Gets a conversion.",
                {"200": one},
                {**common, "404": "NotFound"},
                [version, account, conversion_id],
            ),
            "put": create,
        },
        CONVERSIONS: {
            "get": _operation(
                CONVERSION_TAG,
                "RemoteRendering_ListConversions",
                "Lists every conversion of the account, oldest first, a page at a time.",
                {"200": {"description": "A page.", "content": _json("conversion_list")}},
                common,
                [version, account],
            )
        },
        STORAGE: {
            "get": _operation(
                STORAGE_TAG,
                "Storage_List",
                "Lists a container's blobs (`prefix` narrows it).",
                {"200": {"description": '`{"blobs": [{"name", "size"}]}`'}},
                common,
                [version, account, container],
            )
        },
        BLOB: {
            "get": _operation(
                STORAGE_TAG,
                "Storage_Download",
                "Downloads a blob.",
                {"200": {"description": "Its bytes."}},
                {**common, "404": "NotFound"},
                [version, account, container, blob],
            ),
            "put": _operation(
                STORAGE_TAG,
                "Storage_Upload",
                "Uploads a blob (streamed; up to the hub's upload limit), or with `extract=zip` a .zip unpacked "
                "under the name as a folder.",
                {"201": {"description": '`{"blobs": [names written]}`'}},
                {**common, "400": "BadRequest", "413": "ContentTooLarge"},
                [version, account, container, blob],
            ),
            "delete": _operation(
                STORAGE_TAG,
                "Storage_Delete",
                "Deletes a blob, or a folder and what it holds.",
                {"204": {"description": "Deleted."}},
                {**common, "404": "NotFound"},
                [version, account, container, blob],
            ),
        },
    }


TAGS = [
    {"name": CONVERSION_TAG, "description": "ARR's conversion REST API, api-version 2021-01-01."},
    {"name": STORAGE_TAG, "description": "The hub's own storage: containers of models per account (not ARR's)."},
]
