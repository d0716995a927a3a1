"""Account keys, STS tokens and their verification.

Keys are 32 random bytes in base64 (like ARR's) and stored only as SHA-256 hashes: they are random, so a
slow password hash would add latency and no strength. Each key slot has a serial that rotating bumps;
a token names its slot and serial, so rotating or deleting revokes the tokens issued from the old key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from renderhub.errors import Unauthorized
from renderhub.models import Account

# The token format is the render servers': they check the hub's tokens themselves.
from renderhub.render.access import ALGORITHM, AUDIENCE, ISSUER

# The Azure SDK decodes the payload with the standard base64 alphabet, which silently drops "-" and "_".
# In ASCII JSON only these three characters can produce them, so no claim may contain them.
UNSAFE_PAYLOAD_CHARS = frozenset(">?~")
KEY_SLOTS = (1, 2)  # primary and secondary


def new_account_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_account(name: str, now: datetime) -> tuple[Account, str, str]:
    """A fresh account and its two keys, which are shown once and never stored."""
    primary, secondary = new_account_key(), new_account_key()
    account = Account(
        id=str(uuid.uuid4()),
        name=name,
        primary_key_hash=hash_key(primary),
        secondary_key_hash=hash_key(secondary),
        primary_serial=1,
        secondary_serial=1,
        created_at=now,
    )
    return account, primary, secondary


def matching_slot(account: Account, key: str) -> int | None:
    """1 or 2 for the key slot this key opens, None for a wrong key (compared in constant time)."""
    digest = hash_key(key)
    if hmac.compare_digest(digest, account.primary_key_hash):
        return 1
    if hmac.compare_digest(digest, account.secondary_key_hash):
        return 2
    return None


def new_signing_key() -> str:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says: whose it is, which key issued it, until when."""

    account_id: str
    key_slot: int
    key_serial: int
    expires: int


class TokenService:
    """Issues and verifies STS tokens with the hub's Ed25519 key (the same on every replica)."""

    def __init__(self, private_pem: str, lifetime: timedelta) -> None:
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        self._private = key
        self.public_pem = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        self._public = key.public_key()
        self.lifetime = lifetime

    def issue(self, account: Account, key_slot: int, now: datetime) -> str:
        issued = int(now.timestamp())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "accountId": account.id,
            "slot": key_slot,
            "serial": account.serial(key_slot),
            "jti": uuid.uuid4().hex,
            "iat": issued,
            "nbf": issued - 60,
            "exp": issued + int(self.lifetime.total_seconds()),
        }
        assert not UNSAFE_PAYLOAD_CHARS & set(json.dumps(claims))
        return jwt.encode(claims, self._private, algorithm=ALGORITHM)

    def verify(self, token: str, now: datetime) -> TokenClaims:
        """Check signature, audience and lifetime; the caller checks the key serial against the account."""
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
            account_id, slot, serial, exp = (
                claims["accountId"],
                claims["slot"],
                claims["serial"],
                claims["exp"],
            )
            # Account.serial reads any slot but 1 as the secondary's: slot 3 would pass as slot 2.
            if not (isinstance(account_id, str) and type(slot) is int and type(serial) is int and slot in KEY_SLOTS):
                raise ValueError("malformed claims")
        except (jwt.InvalidTokenError, KeyError, ValueError) as exc:
            raise Unauthorized("The access token is malformed or its signature is invalid.") from exc
        if not isinstance(exp, int) or exp <= now.timestamp() or claims.get("nbf", 0) > now.timestamp():
            raise Unauthorized("The access token has expired or is not valid yet.")
        return TokenClaims(account_id, slot, serial, exp)


def check_account(claims: TokenClaims, account: Account | None) -> None:
    """A token is valid only while its account exists and its key has not been rotated since."""
    if account is None or claims.key_slot not in KEY_SLOTS or account.serial(claims.key_slot) != claims.key_serial:
        raise Unauthorized("The access token has been revoked.")


def parse_bearer(header: str | None) -> str:
    if not header:
        raise Unauthorized("The Authorization header is missing.")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("The Authorization header must be 'Bearer <token>'.")
    return value.strip()
