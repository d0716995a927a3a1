"""Mesh formats other than glTF (FBX, OBJ, DAE, 3DS, STL, mesh PLY): assimp's command line writes them as GLB.

assimp runs as a child process with a time limit and dies with us: a file that hangs or crashes its parser
costs one failed conversion, nothing more.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import signal
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

from renderhub.conversion.errors import ConversionFailed, bad_input

ASSIMP = "assimp"
TIMEOUT_S = 600.0
# Post-processing as ARR's assimp-based importer needed it: triangles, points and lines in separate parts, smooth
# normals where the file has none, degenerate and invalid data cleaned, checked, and FBX's unit scale applied
# (--global-scale; ARR: "the conversion implicitly scales the model to meter units"). Not -jiv: with it the
# exporter wrote every triangle's corners apart (and -jiv alone crashed assimp 5.2 here): transforms.weld joins.
FLAGS = ("-tri", "-sbpt", "-gsn", "-fd", "-fid", "-vds", "-guv", "--global-scale")
# Collapses the node graph and drops animations: the retry when the glTF exporter fails on a scene it imported.
FLATTEN = "-ptv"
FORMATS = {
    ".fbx": "Autodesk FBX Importer",
    ".obj": "Wavefront Object Importer",
    ".dae": "Collada Importer",
    ".3ds": "Discreet 3DS Importer",
    ".stl": "Stereolithography (STL) Importer",
    ".ply": "Stanford Polygon Library (PLY) Importer",
}
_LOAD_FAILED, _EXPORT_FAILED = 10, 11  # assimp_cmd's exit codes
_HEAD_BYTES = 1 << 16


def _die_with(parent: int) -> Callable[[], None]:
    """For the child: SIGKILL when the conversion process dies, so a hung assimp never outlives a killed one.

    prctl is looked up here, in the parent: between fork and exec the child only makes the system call (a dlopen
    there could wait forever on a lock another thread of the parent held, numpy's BLAS threads for one).
    """
    prctl = ctypes.CDLL(None).prctl

    def hook() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # it died before the request took effect
            os._exit(1)

    return hook


def _run(command: list[str], cwd: Path, timeout: float, name: str) -> tuple[int, str]:
    with subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with(os.getpid()),
    ) as child:
        try:
            output, _ = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise bad_input(f"{name}: reading it did not finish within {timeout:g} s") from None
    return child.returncode, output.decode("utf-8", "replace")


def _reason(output: str) -> str:
    """assimp's own explanation: its last ERROR line."""
    errors = [line.split("ERROR:", 1)[1].strip() for line in output.splitlines() if "ERROR:" in line]
    reason = next((e for e in reversed(errors) if e), "no reason given")
    reason = reason.removeprefix("Failed to load file: ")
    if "contains no faces" in reason:
        reason += " (points only: point clouds are read from XYZ, PLY, E57, LAS and LAZ files)"
    return reason[:300]


def export(source: Path, scratch: Path, timeout: float | None = None) -> tuple[bytes, bool]:
    """The model as assimp's GLB, and whether its scene graph had to be collapsed for the exporter."""
    timeout = TIMEOUT_S if timeout is None else timeout
    out = scratch / "assimp.glb"
    command = [ASSIMP, "export", str(source.resolve()), str(out), "-fglb2", *FLAGS]
    flattened = False
    code, output = _run(command, scratch, timeout, source.name)
    if code == _EXPORT_FAILED:
        flattened = True
        out.unlink(missing_ok=True)
        code, output = _run([*command, FLATTEN], scratch, timeout, source.name)
    if code < 0:
        raise bad_input(f"{source.name}: assimp crashed reading it ({signal.Signals(-code).name})")
    if code == _LOAD_FAILED:
        raise bad_input(f"{source.name}: assimp could not read it: {_reason(output)}")
    if code != 0 or not out.is_file():
        raise bad_input(f"{source.name}: assimp could not convert it to glTF: {_reason(output)}")
    return out.read_bytes(), flattened


def utf8(glb: bytes) -> bytes:
    """assimp copies names' bytes into its JSON as they were (Latin-1 OBJ materials): make the JSON chunk UTF-8."""
    if len(glb) < 20 or glb[:4] != b"glTF":
        return glb
    (length,) = struct.unpack_from("<I", glb, 12)
    text = glb[20 : 20 + length]
    try:
        text.decode("utf-8")
        return glb
    except UnicodeDecodeError:
        fixed = text.decode("latin-1").encode("utf-8")
    fixed += b" " * (-len(fixed) % 4)
    rest = glb[20 + length :]
    total = 20 + len(fixed) + len(rest)
    return b"glTF" + struct.pack("<IIII", 2, total, len(fixed), 0x4E4F534A) + fixed + rest


@functools.cache
def assimp_version() -> str:
    try:
        done = subprocess.run([ASSIMP, "version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    found = re.search(r"Version (\S+)", done.stdout)
    return found.group(1) if found else "unknown"


def check_available() -> None:
    if assimp_version() == "unknown":
        raise ConversionFailed("InternalServerError", "the assimp command line (Debian's assimp-utils) is missing")


def source_info(path: Path) -> tuple[str, str]:
    """The format version and generating tool a file names in its first bytes, where the format says them."""
    with path.open("rb") as f:
        head = f.read(_HEAD_BYTES)
    suffix = path.suffix.lower()
    if suffix == ".fbx":
        if head.startswith(b"Kaydara FBX Binary") and len(head) >= 27:
            version = str(struct.unpack_from("<I", head, 23)[0])
            creator = re.search(rb"CreatorS(.{4})", head, re.DOTALL)
            generator = ""
            if creator:
                (size,) = struct.unpack("<I", creator.group(1))
                generator = head[creator.end() : creator.end() + min(size, 200)].decode("utf-8", "replace")
            return version, generator
        text = head.decode("utf-8", "replace")
        version_match = re.search(r"FBXVersion:\s*(\d+)", text)
        creator_match = re.search(r'Creator:\s*"([^"]{0,200})"', text)
        return (version_match.group(1) if version_match else "", creator_match.group(1) if creator_match else "")
    if suffix == ".dae":
        text = head.decode("utf-8", "replace")
        version_match = re.search(r"<COLLADA[^>]*\sversion=\"([^\"]{0,20})\"", text)
        tool = re.search(r"<authoring_tool>([^<]{0,200})</authoring_tool>", text)
        return (version_match.group(1) if version_match else "", tool.group(1).strip() if tool else "")
    if suffix == ".ply":
        found = re.search(rb"format \w+ (\S+)", head[:4096])
        return (found.group(1).decode("ascii", "replace") if found else "", "")
    return "", ""
