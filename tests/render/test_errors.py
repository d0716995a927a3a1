"""The render server's errors share one base: a stable code (what clients see on the wire) and a message."""

from __future__ import annotations

import pytest

from renderhub.render.access import AccessDenied
from renderhub.render.errors import RenderError
from renderhub.render.gltf import ModelError
from renderhub.render.peer import OfferError
from renderhub.render.ports import NoFreePort
from renderhub.render.protocol import ProtocolError
from renderhub.render.worker import PickFailed, WorkerError

CASES = [
    (AccessDenied("The token has expired."), "Unauthorized"),
    (OfferError("the offer has no video section"), "BadRequest"),
    (WorkerError("the render worker is gone"), "RenderingUnavailable"),
    (PickFailed("the depth read-back failed"), "PickFailed"),
    (NoFreePort("port 50000 on 127.0.0.1 is in use"), "NoFreePort"),
    (ModelError("UnsupportedVersion", "glTF 1.0 is not supported"), "UnsupportedVersion"),
    (ProtocolError("BadMessage", "not JSON", ref="7"), "BadMessage"),
]


@pytest.mark.parametrize(("error", "code"), CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_every_render_error_has_a_code_and_a_message(error: RenderError, code: str) -> None:
    assert isinstance(error, RenderError)
    assert error.code == code and error.message and error.message in str(error)


def test_a_model_error_reads_with_its_code() -> None:
    assert str(ModelError("InvalidModel", "no scenes")) == "InvalidModel: no scenes"
