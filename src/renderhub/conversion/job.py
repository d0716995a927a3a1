"""One conversion as the hub runs it: the input fetched, converted, the outputs put where the request said.

Run as `python -m renderhub.conversion.job` with the job's JSON on stdin (it holds SAS tokens: never on a command
line, which every local user can read); prints one JSON line: {"outputUri": ...} or {"error": {code, message}}.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
from pathlib import Path
from typing import Any

from renderhub.conversion import hub_storage
from renderhub.conversion.engine import convert
from renderhub.render.lifetime import die_with_parent
from renderhub.storage.blob import Container, LinkedAccount, Network, container_for, download, upload
from renderhub.storage.errors import INTERNAL_ERROR, PROCESS_FAILED, StorageError, StorageFailed
from renderhub.storage.names import folder

# ARR's wording for a failed conversion, which scripts may match on; what failed follows it.
INVALID_INPUT = "Invalid input provided. Check logs in output container for details."


def bound(spec: dict[str, Any]) -> None:
    """Memory and CPU time capped first thing, and no life beyond the hub's (its conversion is run again)."""
    memory, cpu = int(spec["memoryBytes"]), int(spec["cpuSeconds"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    die_with_parent()


def _container(location: dict[str, Any], spec: dict[str, Any], network: Network) -> Container:
    linked = [LinkedAccount(**account) for account in spec.get("linkedAccounts", [])]
    container = container_for(location["uri"], location.get("sas"), linked)
    if container is None:  # the hub checked at create; a linked account may have been removed since
        raise StorageFailed(INTERNAL_ERROR, "The container is neither linked nor given a SAS any more.")
    return container


def fetch(spec: dict[str, Any], into: Path, network: Network) -> Path:
    """The folder holding the input (the blobs under its prefix, the prefix stripped)."""
    source = spec["input"]
    if "folder" in source:  # the hub's own storage: read in place
        root = Path(source["folder"]) / folder(source["prefix"])
        if not (root / spec["relativeInputAssetPath"]).is_file():
            missing = f"{folder(source['prefix'])}{spec['relativeInputAssetPath']}"
            raise StorageFailed(PROCESS_FAILED, f"{INVALID_INPUT} The input '{missing}' is not in the container.")
        return root
    if "hubContainer" in source:  # the hub's own storage, from a cluster node
        hub_storage.download(hub_storage.HubContainer.of(source), source["prefix"], into, int(spec["maxInputBytes"]))
        return into
    download(_container(source, spec, network), source["prefix"], into, int(spec["maxInputBytes"]), network=network)
    return into


def deliver(spec: dict[str, Any], outputs: Path, network: Network) -> None:
    """Every output file to the output container's folder, each replacing any earlier one whole."""
    files = sorted(path for path in outputs.iterdir() if path.is_file())
    target = spec["output"]
    if "folder" in target:
        destination = Path(target["folder"]) / folder(target["prefix"])
        destination.mkdir(parents=True, exist_ok=True)
        for path in files:
            partial = destination / f".upload-{path.name}"
            shutil.copyfile(path, partial)
            os.replace(partial, destination / path.name)
        return
    if "hubContainer" in target:
        hub_storage.upload(hub_storage.HubContainer.of(target), target["prefix"], files)
        return
    upload(_container(target, spec, network), target["prefix"], files, network=network)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    work = Path(spec["work"])
    network = Network(allow_private=bool(spec["allowPrivate"]), ca_file=spec.get("caFile"))
    inputs, outputs = work / "input", work / "output"
    outputs.mkdir(parents=True, exist_ok=True)
    root = fetch(spec, inputs, network)
    outcome = convert(root, spec["relativeInputAssetPath"], outputs, spec["outputAssetFilename"], spec["conversionId"])
    deliver(spec, outputs, network)  # a failed conversion's result.json too: ARR's error points there
    if outcome.error is not None:
        message = outcome.error.message
        if outcome.error.code == PROCESS_FAILED:
            message = f"{INVALID_INPUT} {message}"
        return {"error": {"code": outcome.error.code, "message": message}}
    return {"outputUri": spec["outputAssetUri"], "result": outcome.result, "warnings": len(outcome.warnings)}


def main() -> None:
    spec = json.loads(sys.stdin.read())
    bound(spec)
    try:
        report = run(spec)
    except StorageError as exc:
        report = {"error": {"code": exc.code, "message": exc.message}}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
