"""Textures: ARR's suffix rule (inside the input folder only) and conversion to what glTF embeds."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from renderhub.conversion import textures
from renderhub.conversion.textures import TextureError, find_texture, prepare


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """input/models/car/car.fbx beside textures in several places, and a secret outside the input."""
    root = tmp_path / "input"
    for name in ("models/car/t.png", "models/car/X/x.png", "models/Textures/X/deep.png", "models/car/Paint/RED.PNG"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"png")
    (tmp_path / "secret.png").write_bytes(b"secret")
    return root


def model_dir(tree: Path) -> Path:
    return tree / "models" / "car"


def test_longest_existing_suffix_wins(tree: Path) -> None:
    # ..\Textures\X\deep.png tries <dir>/../Textures/X/deep.png first, which exists.
    assert find_texture("..\\Textures\\X\\deep.png", model_dir(tree), tree) == (tree / "models/Textures/X/deep.png")
    # ..\Textures\X\x.png: not above; then Textures/X/x.png, then X/x.png beside the model.
    assert find_texture("..\\Textures\\X\\x.png", model_dir(tree), tree) == model_dir(tree) / "X" / "x.png"
    assert find_texture("..\\Textures\\Y\\t.png", model_dir(tree), tree) == model_dir(tree) / "t.png"


def test_absolute_windows_and_unix_paths_are_suffixes_too(tree: Path) -> None:
    assert find_texture("D:\\art\\car\\X\\x.png", model_dir(tree), tree) == model_dir(tree) / "X" / "x.png"
    assert find_texture("/home/artist/t.png", model_dir(tree), tree) == model_dir(tree) / "t.png"
    assert find_texture("C:/t.png", model_dir(tree), tree) == model_dir(tree) / "t.png"


def test_case_is_ignored_as_windows_did(tree: Path) -> None:
    assert find_texture("paint\\red.png", model_dir(tree), tree) == model_dir(tree) / "Paint" / "RED.PNG"
    assert find_texture("T.PNG", model_dir(tree), tree) == model_dir(tree) / "t.png"


def test_url_encoded_gltf_uris(tree: Path) -> None:
    (model_dir(tree) / "with space.png").write_bytes(b"png")
    assert find_texture("with%20space.png", model_dir(tree), tree) == model_dir(tree) / "with space.png"


def test_nothing_outside_the_input_is_read(tree: Path) -> None:
    assert find_texture("../../../secret.png", model_dir(tree), tree) is None
    (model_dir(tree) / "link.png").symlink_to(tree.parent / "secret.png")
    assert find_texture("link.png", model_dir(tree), tree) is None
    assert find_texture("missing.png", model_dir(tree), tree) is None
    assert find_texture("data:image/png;base64,AAAA", model_dir(tree), tree) is None


def encoded(mode: str, kind: str, size: tuple[int, int] = (8, 4)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (200, 10, 10, 128)[: len(mode)] if mode != "P" else 3).save(out, kind)
    return out.getvalue()


def test_png_and_jpeg_are_embedded_as_they_are() -> None:
    png, jpeg = encoded("RGBA", "PNG"), encoded("RGB", "JPEG")
    assert prepare(png, "a.png") == (png, "image/png")
    assert prepare(jpeg, "a.jpg") == (jpeg, "image/jpeg")


@pytest.mark.parametrize(("mode", "kind", "name"), [("RGBA", "TGA", "a.tga"), ("RGB", "BMP", "a.bmp"),
                                                    ("RGBA", "DDS", "a.dds"), ("P", "GIF", "a.gif")])  # fmt: skip
def test_other_formats_become_png(mode: str, kind: str, name: str) -> None:
    data, mime = prepare(encoded(mode, kind), name)
    assert mime == "image/png"
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (8, 4)
    assert image.mode in ("RGB", "RGBA")


def test_broken_and_oversized_images_are_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TextureError, match="could not be decoded"):
        prepare(b"\x89PNG\r\n\x1a\nnot really", "a.png")
    monkeypatch.setattr(textures, "MAX_TEXTURE_SIZE", 6)
    with pytest.raises(TextureError, match="8x4 pixels is outside 1 to 6"):
        prepare(encoded("RGB", "PNG"), "a.png")


def test_textures_larger_than_render_servers_take_are_downscaled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(textures, "RENDER_TEXTURE_SIZE", 4)
    data, mime = prepare(encoded("RGB", "JPEG"), "a.jpg")
    assert mime == "image/jpeg" and Image.open(io.BytesIO(data)).size == (4, 2)
