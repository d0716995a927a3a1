"""`renderhub convert` and `renderhub conversion get|list`: a model uploaded to the hub's storage, converted, named."""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from renderhub.cli_client import api_command, checked_id, hub_client, wait_until
from renderhub.client import HubClient
from renderhub.terminal import console, fail

MODEL_SUFFIXES = (".fbx", ".gltf", ".glb", ".obj", ".dae", ".3ds", ".stl", ".ply", ".xyz", ".e57", ".las", ".laz")
INPUT_CONTAINER = "models"  # what the CLI uploads
OUTPUT_CONTAINER = "converted"  # where conversions it starts write; a converted model's name starts with it
TERMINAL = ("Succeeded", "Failed", "Cancelled")


def _model_in(names: list[str], chosen: str | None) -> str:
    """The one model among uploaded file names (relative to the upload's folder), or the one chosen."""
    if chosen:
        if chosen not in names:
            fail(f"--model {chosen}: not among the uploaded files ({', '.join(sorted(names)[:10])})")
        return chosen
    models = [name for name in names if name.lower().endswith(MODEL_SUFFIXES)]
    if len(models) != 1:
        found = ", ".join(sorted(models)[:10]) or "none"
        fail(f"pick the model with --model: {len(models)} model files found ({found})")
    return models[0]


def upload(client: HubClient, path: Path, settings: Path | None, chosen: str | None) -> tuple[str, str]:
    """PATH (a model file, a folder, or a .zip) into the hub's storage; returns (folder, model path in it)."""
    folder = path.stem if path.is_file() else path.name
    folder = "".join(c if c.isalnum() or c in "-_." else "-" for c in folder) or "model"
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        names = [p.relative_to(path).as_posix() for p in files]
        with tempfile.TemporaryDirectory() as tmp:  # one request, not one per texture
            archive = Path(tmp) / "upload.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
                for file, name in zip(files, names, strict=True):
                    zipped.write(file, name)
            client.upload(INPUT_CONTAINER, folder, archive, extract_zip=True)
    elif path.suffix.lower() == ".zip":
        uploaded = client.upload(INPUT_CONTAINER, folder, path, extract_zip=True)
        names = [name.removeprefix(folder + "/") for name in uploaded]
    else:
        client.upload(INPUT_CONTAINER, f"{folder}/{path.name}", path)
        names = [path.name]
    model = _model_in(names, chosen)
    if settings is not None:  # ARR's rule: <model name>.ConversionSettings.json beside the model
        beside = str(Path(model).with_name(Path(model).stem + ".ConversionSettings.json").as_posix())
        client.upload(INPUT_CONTAINER, f"{folder}/{beside}", settings)
    return folder, model


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--settings", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A ConversionSettings.json for the model.")  # fmt: skip
@click.option("--model", "chosen", help="The model's path in a folder or .zip holding several.")
@click.option("--id", "conversion_id", callback=checked_id, help="The conversion id (default: a new one).")
@click.option("--wait", is_flag=True, help="Show progress until the conversion ends.")
@api_command
def convert(path: Path, settings: Path | None, chosen: str | None, conversion_id: str | None, wait: bool,
            config: Path | None, data_dir: Path, as_json: bool) -> None:  # fmt: skip
    """Upload a model (a file, a folder or a .zip) to the hub's storage and convert it; prints the converted
    model's name (for `renderhub connect --model`) and URI."""
    with hub_client(config, data_dir) as client:
        _convert(client, path, settings, chosen, conversion_id, wait, as_json)


def _convert(client: HubClient, path: Path, settings: Path | None, chosen: str | None, conversion_id: str | None,
             wait: bool, as_json: bool) -> None:  # fmt: skip
    folder, model = upload(client, path, settings, chosen)
    conversion_id = f"{folder[:200]}-{uuid.uuid4().hex[:8]}" if conversion_id is None else conversion_id
    body = client.create_conversion(
        conversion_id,
        {
            "inputLocation": {"storageContainerUri": client.storage_uri(INPUT_CONTAINER), "blobPrefix": folder,
                              "relativeInputAssetPath": model},
            "outputLocation": {"storageContainerUri": client.storage_uri(OUTPUT_CONTAINER), "blobPrefix": folder},
        },
    )  # fmt: skip
    if wait:
        body = wait_until(body, client.get_conversion, TERMINAL, "conversion", as_json, interval=0.5)
    show(body, as_json)
    if body["status"] == "Failed":
        sys.exit(2)


def model_name(conversion: dict[str, Any]) -> str | None:
    """The converted model's name in the hub's storage (container/prefix/file), when it is there."""
    output = conversion["settings"]["outputLocation"]
    marker = "/storage/"
    if conversion["status"] != "Succeeded" or marker not in output["storageContainerUri"]:
        return None
    container = output["storageContainerUri"].rsplit(marker, 1)[1]
    return f"{container}/{output.get('blobPrefix', '')}{output['outputAssetFilename']}"


def show(conversion: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(conversion, indent=2))
        return
    table = Table(show_header=False, box=None)
    table.add_row("id", conversion["id"])
    table.add_row("status", conversion["status"])
    table.add_row("input", conversion["settings"]["inputLocation"]["relativeInputAssetPath"])
    if name := model_name(conversion):
        table.add_row("model", f"[bold]{name}[/bold]  (renderhub connect SESSION --model {name})")
    if "output" in conversion:
        table.add_row("uri", conversion["output"]["outputAssetUri"])
    if conversion.get("error"):
        table.add_row("error", f"[red]{conversion['error']['code']}: {conversion['error']['message']}[/red]")
    table.add_row("created", conversion["creationTime"])
    console.print(table)


@click.group()
def conversion() -> None:
    """Conversions of the account (ARR's conversion API)."""


@conversion.command("get")
@click.argument("conversion_id", callback=checked_id)
@api_command
def conversion_get(conversion_id: str, config: Path | None, data_dir: Path, as_json: bool) -> None:
    """Show one conversion."""
    with hub_client(config, data_dir) as client:
        show(client.get_conversion(conversion_id), as_json)


@conversion.command("list")
@api_command
def conversion_list(config: Path | None, data_dir: Path, as_json: bool) -> None:
    """Every conversion of the account, oldest first."""
    with hub_client(config, data_dir) as client:
        conversions = client.list_conversions()
    if as_json:
        click.echo(json.dumps(conversions, indent=2))
        return
    table = Table("id", "status", "input", "model")
    for item in conversions:
        table.add_row(item["id"], item["status"], item["settings"]["inputLocation"]["relativeInputAssetPath"],
                      model_name(item) or "")  # fmt: skip
    console.print(table)
