"""The sizes file: the packaged one as documented, and every mistake in a copy named, not taken for a default."""

from __future__ import annotations

import copy
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest
import yaml

from renderhub.config import parse_sizes
from renderhub.models import ServerSize

PACKAGED: dict[str, Any] = yaml.safe_load(resources.files("renderhub").joinpath("sizes.yaml").read_text())


def test_the_packaged_sizes() -> None:
    sizes = parse_sizes(PACKAGED)
    standard, premium = sizes[ServerSize.STANDARD], sizes[ServerSize.PREMIUM]
    assert standard.teraflops == 8.1 and standard.price_per_minute == Decimal("0.05") and standard.capacity == 4
    assert standard.profile["max_primitives"] == 20_000_000 and premium.profile["max_primitives"] is None
    assert premium.profile["resources"] == {"renderhub_premium": 1}


def edited(path: str, value: Any) -> dict[str, Any]:
    """The packaged sizes with one key (dotted path) set, or removed when `value` is ...; a new key is added."""
    raw = copy.deepcopy(PACKAGED)
    *parents, key = path.split(".")
    entry = raw
    for parent in parents:
        entry = entry[parent]
    if value is ...:
        del entry[key]
    else:
        entry[key] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("Standard.profile.max_primitves", 100, "unknown key Standard.profile.max_primitves"),
        ("Premium.capacty", 2, "unknown key Premium.capacty"),
        ("Standard.capacity", ..., "Standard.capacity is missing"),
        ("Premium", ..., "missing the Premium size"),
        ("Standard.profile.max_width", "wide", "Standard.profile.max_width must be a whole number of pixels"),
        ("Standard.profile.max_fps", 0, "Standard.profile.max_fps must be a whole number"),
        ("Standard.profile.max_model_mb", True, "Standard.profile.max_model_mb must be a number or null"),
        ("Standard.profile.resources", ["gpu"], "Standard.profile.resources must be a mapping"),
        ("Standard.profile", [1], "Standard.profile must be a mapping"),
        ("Standard.price_per_minute", "free", "Standard has a value that is not a number"),
    ],
)
def test_mistakes_are_named(path: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_sizes(edited(path, value))
    assert message in str(raised.value)


def test_a_file_that_is_not_a_mapping() -> None:
    with pytest.raises(ValueError, match="top level"):
        parse_sizes(["Standard", "Premium"])
