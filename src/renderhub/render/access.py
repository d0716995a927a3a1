"""Who may connect: a valid, unexpired hub token for this session's account, checked by the server itself."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from renderhub.render.errors import RenderError

# The hub's tokens as render servers check them; the hub's STS (renderhub.auth) issues them with these.
ALGORITHM = "EdDSA"
ISSUER = "renderhub-sts"
AUDIENCE = "renderhub-arr"


class AccessDenied(RenderError):
    """The request's token does not open this render server."""

    code = "Unauthorized"


@dataclass(frozen=True)
class Grant:
    """A token that passed the check, and the account key it was issued from (slot 1 or 2, and its serial)."""

    token: str
    key_slot: int
    key_serial: int


class TokenCheck:
    """Verifies tokens with the hub's public key: signature, issuer, audience, lifetime and account."""

    def __init__(self, public_pem: str, account_id: str | None) -> None:
        self._key = load_pem_public_key(public_pem.encode())
        self.account_id = account_id.lower() if account_id else None  # None: a pooled server, open to nobody

    def check(self, authorization: str | None) -> Grant:
        if self.account_id is None:
            raise AccessDenied("This render server serves no session yet.")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AccessDenied("An 'Authorization: Bearer <token>' header with a hub token is required.")
        try:
            claims = jwt.decode(
                token.strip(), self._key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,  # type: ignore[arg-type]
                options={"require": ["exp", "accountId", "slot", "serial"]},
            )  # fmt: skip
        except jwt.ExpiredSignatureError as exc:
            raise AccessDenied("The token has expired.") from exc
        except jwt.InvalidTokenError as exc:
            raise AccessDenied("The token is not valid for this render server.") from exc
        if str(claims["accountId"]).lower() != self.account_id or claims["exp"] <= time.time():
            raise AccessDenied("The token is for another account.")
        slot, serial = claims["slot"], claims["serial"]
        if type(slot) is not int or slot not in (1, 2) or type(serial) is not int:
            raise AccessDenied("The token is not valid for this render server.")
        return Grant(token.strip(), slot, serial)
