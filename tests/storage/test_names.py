"""Blob names: prefixes as folders, and names that cannot leave their folder on disk."""

from __future__ import annotations

import pickle
from pathlib import PurePosixPath

import pytest

from renderhub.storage.errors import StorageDenied, StorageFailed, denied
from renderhub.storage.names import folder, layout, relative


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("Input", "Input/"), ("Input/", "Input/"), ("/Input/", "Input/"), ("a/b", "a/b/"), ("", ""), (None, "")],
)
def test_a_prefix_is_a_folder(prefix: str | None, expected: str) -> None:
    assert folder(prefix) == expected


@pytest.mark.parametrize("name", ["Input/a.fbx", "Input/tex/a.png", "Input/a..b", "Input/.hidden", "Input/C:/x"])
def test_names_inside_the_folder(name: str) -> None:
    assert relative(name, "Input/") == PurePosixPath(name.removeprefix("Input/"))


@pytest.mark.parametrize(
    "name",
    ["Input/../x", "Input/a/../../x", "Input/..\\x", "Input/a\\..\\..\\x", "Input//etc/passwd", "Input/\\x",
     "Input/", "Other/x", "Input/a\0b"],
)  # fmt: skip
def test_names_that_would_escape_are_refused(name: str) -> None:
    with pytest.raises(StorageFailed) as failed:
        relative(name, "Input/")
    assert failed.value.code == "ConversionProcessFailed"


def test_layout_skips_folder_markers_and_refuses_clashes() -> None:
    blobs = [("Input/", 0), ("Input/tex/", 0), ("Input/tex", 0), ("Input/tex/a.png", 3), ("Input/m.fbx", 5)]
    assert layout(blobs, "Input/") == [
        ("Input/tex/a.png", PurePosixPath("tex/a.png")),
        ("Input/m.fbx", PurePosixPath("m.fbx")),
    ]
    with pytest.raises(StorageFailed, match="both a file and a folder"):
        layout([("Input/tex", 1), ("Input/tex/a.png", 3)], "Input/")
    with pytest.raises(StorageFailed, match="folder's name"):
        layout([("Input/tex/", 1)], "Input/")


def test_errors_carry_arr_codes_and_cross_processes() -> None:
    error = denied("InputContainerAccessDenied")
    assert isinstance(error, StorageDenied)
    assert str(error) == (
        "Access to the input blob container was denied. Invalid access rights or invalid shared access signature."
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.code, copy.message) == (StorageDenied, error.code, error.message)
    failed = pickle.loads(pickle.dumps(StorageFailed("ConversionProcessFailed", "too big")))
    assert (failed.code, str(failed)) == ("ConversionProcessFailed", "too big")
