"""Account keys and STS tokens: issue, verify, revoke, and a payload the Azure SDK can decode."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from renderhub import auth
from renderhub.errors import Unauthorized

NOW = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def tokens() -> auth.TokenService:
    return auth.TokenService(auth.new_signing_key(), timedelta(hours=24))


def test_keys_are_stored_only_as_hashes() -> None:
    account, primary, secondary = auth.new_account("a", NOW)
    assert primary not in account.__dict__.values() and secondary not in account.__dict__.values()
    assert auth.matching_slot(account, primary) == 1
    assert auth.matching_slot(account, secondary) == 2
    assert auth.matching_slot(account, auth.new_account_key()) is None


def test_token_round_trip(tokens: auth.TokenService) -> None:
    account, _, _ = auth.new_account("a", NOW)
    claims = tokens.verify(tokens.issue(account, 2, NOW), NOW + timedelta(hours=23))
    assert (claims.account_id, claims.key_slot, claims.key_serial) == (account.id, 2, 1)
    auth.check_account(claims, account)


def test_expired_token_is_refused(tokens: auth.TokenService) -> None:
    account, _, _ = auth.new_account("a", NOW)
    token = tokens.issue(account, 1, NOW)
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(token, NOW + timedelta(hours=24, seconds=1))


def test_token_from_another_hub_key_is_refused(tokens: auth.TokenService) -> None:
    account, _, _ = auth.new_account("a", NOW)
    stranger = auth.TokenService(auth.new_signing_key(), timedelta(hours=1))
    with pytest.raises(Unauthorized):
        tokens.verify(stranger.issue(account, 1, NOW), NOW)
    with pytest.raises(Unauthorized):
        tokens.verify("not.a.token", NOW)


def test_rotated_key_revokes_its_tokens_only(tokens: auth.TokenService) -> None:
    from dataclasses import replace

    account, _, _ = auth.new_account("a", NOW)
    primary_token = tokens.verify(tokens.issue(account, 1, NOW), NOW)
    secondary_token = tokens.verify(tokens.issue(account, 2, NOW), NOW)
    rotated = replace(account, primary_serial=account.primary_serial + 1)
    with pytest.raises(Unauthorized, match="revoked"):
        auth.check_account(primary_token, rotated)
    auth.check_account(secondary_token, rotated)
    with pytest.raises(Unauthorized):
        auth.check_account(secondary_token, None)  # a deleted account


def test_a_token_naming_no_key_slot_is_refused(tokens: auth.TokenService) -> None:
    """Account.serial reads every slot but 1 as the secondary's: a validly signed slot 3 passed as slot 2."""
    account, _, _ = auth.new_account("a", NOW)
    for slot in (0, 3, -1, True):
        with pytest.raises(Unauthorized, match="malformed"):
            tokens.verify(tokens.issue(account, slot, NOW), NOW)
    for slot in (0, 3, -1):
        with pytest.raises(Unauthorized, match="revoked"):
            auth.check_account(auth.TokenClaims(account.id, slot, account.secondary_serial, 0), account)


def test_payload_decodes_with_the_standard_alphabet(tokens: auth.TokenService) -> None:
    """The SDK decodes with b64decode (standard alphabet), which silently drops '-' and '_'."""
    for i in range(500):
        account, _, _ = auth.new_account(f"a{i}", NOW)
        payload = tokens.issue(account, 1 + i % 2, NOW + timedelta(seconds=i * 7919)).split(".")[1]
        assert "-" not in payload and "_" not in payload
        assert json.loads(base64.b64decode(payload + "==="))["accountId"] == account.id


def test_bearer_header_parsing() -> None:
    assert auth.parse_bearer("Bearer abc") == "abc"
    for bad in (None, "", "Basic abc", "Bearer ", "abc"):
        with pytest.raises(Unauthorized):
            auth.parse_bearer(bad)
