"""ARR's conversion objects on the wire: the create request parsed and a conversion rendered, normalised as the real
service did (SAS never echoed, a trailing "/" on prefixes, the output file name filled in, "error": null)."""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from renderhub.api.schemas import body_object, check_id
from renderhub.errors import BadRequest
from renderhub.models import BlobLocation, Conversion, ConversionSettings, ConversionStatus

ASSET_SUFFIX = ".arrAsset"
MAX_TEXT = 2048  # URIs, paths and SAS tokens: longer than any real one, short enough to keep out of the way


def check_conversion_id(conversion_id: str) -> str:
    return check_id(conversion_id, "conversion")


def _text(body: dict[str, Any], name: str, where: str, *, required: bool = False) -> str | None:
    """An optional string field; "" counts as absent (Conversion.ps1 sends unset fields as empty strings)."""
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"The {where}.{name} field is required.", target=f"{where}.{name}")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"The {where}.{name} field must be a string.", target=f"{where}.{name}")
    if len(value) > MAX_TEXT or "\x00" in value:
        raise BadRequest(f"The {where}.{name} field is too long or holds a NUL.", target=f"{where}.{name}")
    return value


def _container_uri(text: str, where: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise BadRequest(
            f"The {where}.storageContainerUri must be a container's http(s) URL without a query "
            "(give a SAS in its own field).",
            target=f"{where}.storageContainerUri",
        )
    return text.rstrip("/")


def _prefix(text: str | None) -> str:
    """ARR's normalisation: 'Input' and 'Input/' are one folder, echoed as 'Input/'."""
    folder = (text or "").strip("/")
    return f"{folder}/" if folder else ""


def _location(settings: dict[str, Any], name: str, sas_field: str) -> tuple[dict[str, Any], BlobLocation]:
    where = f"settings.{name}"
    location = settings.get(name)
    if not isinstance(location, dict):
        raise BadRequest(f"The {where} object is required.", target=where)
    uri = _container_uri(_text(location, "storageContainerUri", where, required=True) or "", where)
    sas = _text(location, sas_field, where)
    sas = sas.lstrip("?") if sas else None  # the SDK's own tests send "?" + the token
    return location, BlobLocation(uri, _prefix(_text(location, "blobPrefix", where)), sas or None)


def _relative_path(text: str, target: str) -> str:
    path = PurePosixPath(text.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.name:
        raise BadRequest(f"The {target} must be a file's path inside the input folder.", target=target)
    return path.as_posix()


def parse_conversion(raw: bytes) -> ConversionSettings:
    """The create body's settings; unknown fields are ignored (Conversion.ps1 merges extra parameters in)."""
    settings = body_object(raw).get("settings")
    if not isinstance(settings, dict):
        raise BadRequest("The settings object is required.", target="settings")
    input_body, input_location = _location(settings, "inputLocation", "storageContainerReadListSas")
    output_body, output_location = _location(settings, "outputLocation", "storageContainerWriteSas")
    target = "settings.inputLocation.relativeInputAssetPath"
    relative = _relative_path(_text(input_body, "relativeInputAssetPath", "settings.inputLocation", required=True)
                              or "", target)  # fmt: skip
    filename = _text(output_body, "outputAssetFilename", "settings.outputLocation")
    if filename is None:
        filename = PurePosixPath(relative).stem + ASSET_SUFFIX
    elif (
        "/" in filename or "\\" in filename or not filename.lower().endswith(ASSET_SUFFIX.lower()) or filename[0] == "."
    ):
        raise BadRequest(
            f"The settings.outputLocation.outputAssetFilename must be a file name ending in {ASSET_SUFFIX}.",
            target="settings.outputLocation.outputAssetFilename",
        )
    return ConversionSettings(input_location, relative, output_location, filename)


def _plain_asset_name(name: str) -> bool:
    """A file name (no folders, not hidden) ending in .arrAsset, in any case."""
    return "/" not in name and "\\" not in name and not name.startswith(".") and name.lower().endswith(".arrasset")


def _timestamp(moment: datetime) -> str:
    """As the real service wrote it: seven fractional digits and a Z."""
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}0Z"


def _location_json(location: BlobLocation, last: tuple[str, str]) -> dict[str, str]:
    body = {"storageContainerUri": location.container_uri}
    if location.blob_prefix:
        body["blobPrefix"] = location.blob_prefix
    body[last[0]] = last[1]
    return body


def conversion_json(conversion: Conversion) -> dict[str, Any]:
    """The ARR conversion object, in the real service's key order; `output` only once Succeeded."""
    settings = conversion.settings
    body: dict[str, Any] = {
        "id": conversion.id,
        "creationTime": _timestamp(conversion.created_at),
        "settings": {
            "inputLocation": _location_json(settings.input, ("relativeInputAssetPath", settings.relative_input_path)),
            "outputLocation": _location_json(settings.output, ("outputAssetFilename", settings.output_filename)),
        },
    }
    if conversion.status is ConversionStatus.SUCCEEDED:
        body["output"] = {"outputAssetUri": conversion.output_uri or settings.output_uri}
    error = conversion.error
    body["error"] = None if error is None else {"code": error.code, "message": error.message}
    body["status"] = conversion.status.value
    return body
