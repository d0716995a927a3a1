"""Model resolution: names stay inside the asset roots; URLs are fetched with limits and no SSRF."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from renderhub.render.asset_lookup import find_named
from renderhub.render.assets import Fetcher
from renderhub.render.scene import ModelError

GLB = b"glTF" + b"\x02\x00\x00\x00" + b"\x00" * 64


@pytest.fixture
def root(tmp_path: Path) -> Path:
    assets = tmp_path / "assets"
    (assets / "cars").mkdir(parents=True)
    (assets / "cars" / "truck.glb").write_bytes(GLB)
    (tmp_path / "secret.glb").write_bytes(GLB)
    (assets / "escape.glb").symlink_to(tmp_path / "secret.glb")
    return assets


def test_names_resolve_inside_the_roots(root: Path) -> None:
    assert find_named("cars/truck", [root]) == (root / "cars" / "truck.glb").resolve()
    assert find_named("cars/truck.glb", [root]) == (root / "cars" / "truck.glb").resolve()


@pytest.mark.parametrize("name", ["../secret.glb", "../secret", "/etc/passwd", "cars/../../secret.glb",
                                  "escape.glb", "cars\\..\\..\\secret.glb", "", "nope", "a\0b"])  # fmt: skip
def test_names_that_leave_the_roots_or_do_not_exist_are_refused(root: Path, name: str) -> None:
    with pytest.raises(ModelError) as refused:
        find_named(name, [root])
    assert refused.value.code in ("ModelNotFound", "InvalidModelName")


class Site(http.server.BaseHTTPRequestHandler):
    """A model server on loopback: /model.glb, /big.glb, /slow.glb, /redirect, /scene.gltf + /scene.bin, and
    /lost.gltf, whose lost.bin is missing."""

    def do_GET(self) -> None:
        if self.path == "/slow.glb":
            time.sleep(3)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/model.glb")
            self.end_headers()
            return
        bodies = {
            "/model.glb": GLB,
            "/slow.glb": GLB,
            "/big.glb": GLB * 10_000,
            "/scene.gltf": b'{"asset": {"version": "2.0"}, "buffers": [{"uri": "scene.bin", "byteLength": 4}]}',
            "/scene.bin": b"\0\0\0\0",
            "/lost.gltf": b'{"asset": {"version": "2.0"}, "buffers": [{"uri": "lost.bin", "byteLength": 4}]}',
        }
        body = bodies.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def progress(stage: str, fraction: float) -> None:
    pass


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x.glb", "http://localhost:9/x.glb", "http://[::1]:9/x.glb",
                                 "http://169.254.169.254/latest/meta-data", "http://10.1.2.3/x.glb",
                                 "http://192.168.0.1/x.glb", "http://[::ffff:127.0.0.1]/x.glb"])  # fmt: skip
async def test_private_addresses_are_refused_before_connecting(tmp_path: Path, url: str) -> None:
    fetcher = Fetcher(max_bytes=10_000, timeout=5, allow_private=False)
    with pytest.raises(ModelError) as refused:
        await fetcher.fetch(url, tmp_path / "work", progress)
    assert refused.value.code == "ModelUrlForbidden"
    assert "--allow-private-model-urls" in refused.value.message  # the option that allows them, named


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x.glb", "http:///x.glb"])
async def test_only_http_urls(tmp_path: Path, url: str) -> None:
    with pytest.raises(ModelError, match="http"):
        await Fetcher(max_bytes=10_000, timeout=5, allow_private=True).fetch(url, tmp_path / "work", progress)


async def test_allowed_private_fetch_follows_redirects_and_gltf_references(tmp_path: Path, site: str) -> None:
    fetcher = Fetcher(max_bytes=100_000, timeout=5, allow_private=True)
    assert (await fetcher.fetch(f"{site}/redirect", tmp_path / "a", progress)).read_bytes() == GLB
    gltf = await fetcher.fetch(f"{site}/scene.gltf", tmp_path / "b", progress)
    assert gltf.name == "model.gltf" and (gltf.parent / "scene.bin").read_bytes() == b"\0\0\0\0"


async def test_errors_name_what_failed_and_why_in_words(tmp_path: Path, site: str) -> None:
    fetcher = Fetcher(max_bytes=100_000, timeout=5, allow_private=True)
    with pytest.raises(ModelError) as missing:
        await fetcher.fetch(f"{site}/nothing.glb?sig=secret", tmp_path / "a", progress)
    assert missing.value.message == f"The model's URL {site}/nothing.glb answered HTTP 404."  # no SAS in messages
    # A .gltf whose buffer is missing: the buffer is named, not the .gltf (which was found).
    with pytest.raises(ModelError) as lost:
        await fetcher.fetch(f"{site}/lost.gltf", tmp_path / "b", progress)
    assert lost.value.message == f"'lost.bin', a file the model uses, at {site}/lost.bin answered HTTP 404."
    with pytest.raises(ModelError) as refused:
        await fetcher.fetch("http://127.0.0.1:9/x.glb", tmp_path / "c", progress)  # nothing listens on port 9
    assert refused.value.message == "The model's URL http://127.0.0.1:9/x.glb: could not connect to its server."


async def test_size_limit_and_timeout(tmp_path: Path, site: str) -> None:
    with pytest.raises(ModelError) as too_big:
        await Fetcher(max_bytes=50_000, timeout=5, allow_private=True).fetch(f"{site}/big.glb", tmp_path, progress)
    assert too_big.value.code == "ModelTooLarge"
    with pytest.raises(ModelError) as too_slow:
        await Fetcher(max_bytes=50_000, timeout=0.5, allow_private=True).fetch(f"{site}/slow.glb", tmp_path, progress)
    assert too_slow.value.code == "ModelFetchTimeout"
