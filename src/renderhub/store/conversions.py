"""The conversions' SQL: stored at create, claimed by the replica that runs them, finished once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from renderhub.models import DEFAULT_REGION, ArrError, BlobLocation, Conversion, ConversionSettings, ConversionStatus
from renderhub.store.tables import conversions
from renderhub.store.transaction import transaction


class DuplicateConversion(Exception):
    """A conversion with this account and id already exists."""


def _settings_json(settings: ConversionSettings) -> dict[str, Any]:
    """The settings without their SAS (those have columns of their own, never rendered)."""
    return {
        "input": {"uri": settings.input.container_uri, "prefix": settings.input.blob_prefix},
        "relativeInputAssetPath": settings.relative_input_path,
        "output": {"uri": settings.output.container_uri, "prefix": settings.output.blob_prefix},
        "outputAssetFilename": settings.output_filename,
    }


def _conversion(row: sa.Row[Any]) -> Conversion:
    stored = row.settings
    settings = ConversionSettings(
        BlobLocation(stored["input"]["uri"], stored["input"]["prefix"], row.input_sas),
        stored["relativeInputAssetPath"],
        BlobLocation(stored["output"]["uri"], stored["output"]["prefix"], row.output_sas),
        stored["outputAssetFilename"],
    )
    return Conversion(
        account_id=row.account_id,
        id=row.id,
        settings=settings,
        status=ConversionStatus(row.status),
        created_at=row.created_at,
        seq=row.seq,
        error=ArrError(row.error_code, row.error_message or "") if row.error_code else None,
        output_uri=row.output_uri,
        runner=row.runner,
        attempts=row.attempts,
        started_at=row.started_at,
        ended_at=row.ended_at,
    )


class ConversionStore:
    """Every statement about conversions: those of one region (the hub's own), which its replicas run."""

    def __init__(self, engine: AsyncEngine, region: str = DEFAULT_REGION) -> None:
        self.engine = engine
        self.region = region

    async def insert(self, conversion: Conversion) -> Conversion:
        """Store a new conversion (DuplicateConversion if the account has one with this id)."""
        values = {
            "account_id": conversion.account_id,
            "region": self.region,
            "id": conversion.id,
            "created_at": conversion.created_at,
            "status": conversion.status.value,
            "settings": _settings_json(conversion.settings),
            "input_sas": conversion.settings.input.sas,
            "output_sas": conversion.settings.output.sas,
            "attempts": 0,
        }
        try:
            async with transaction(self.engine) as c:
                seq = (await c.execute(conversions.insert().values(**values))).inserted_primary_key[0]  # type: ignore[index]
        except IntegrityError as exc:
            raise DuplicateConversion(conversion.id) from exc
        return Conversion(**{**conversion.__dict__, "seq": seq})

    async def get(self, account_id: str, conversion_id: str) -> Conversion | None:
        async with transaction(self.engine) as c:
            row = (
                await c.execute(
                    conversions.select().where(
                        conversions.c.account_id == account_id,
                        conversions.c.region == self.region,
                        conversions.c.id == conversion_id,
                    )
                )
            ).first()
        return None if row is None else _conversion(row)

    async def page(self, account_id: str, after_seq: int, limit: int) -> list[Conversion]:
        """The account's conversions of every status, oldest first, as the real service listed them."""
        query = (
            conversions.select()
            .where(
                conversions.c.account_id == account_id,
                conversions.c.region == self.region,
                conversions.c.seq > after_seq,
            )
            .order_by(conversions.c.seq)
            .limit(limit)
        )
        async with transaction(self.engine) as c:
            return [_conversion(row) for row in (await c.execute(query)).all()]

    async def pending(self, limit: int) -> list[Conversion]:
        """Every Running conversion (their runners may have died; they are as many as the replicas run at once),
        then up to `limit` NotStarted ones, oldest first: however many run elsewhere, the waiting ones are seen."""
        mine = conversions.c.region == self.region
        running = conversions.select().where(mine, conversions.c.status == ConversionStatus.RUNNING.value)
        waiting = (
            conversions.select()
            .where(mine, conversions.c.status == ConversionStatus.NOT_STARTED.value)
            .order_by(conversions.c.seq)
            .limit(limit)
        )
        async with transaction(self.engine) as c:
            rows = [*(await c.execute(running.order_by(conversions.c.seq))).all(), *(await c.execute(waiting)).all()]
        return [_conversion(row) for row in rows]

    async def claim(self, conversion: Conversion, runner: str, now: datetime) -> bool:
        """Take a conversion to run, as it was read (NotStarted, or Running under a runner that died): one
        replica wins, whoever else tries at the same time."""
        async with transaction(self.engine) as c:
            result = await c.execute(
                conversions.update()
                .where(
                    conversions.c.seq == conversion.seq,
                    conversions.c.status == conversion.status.value,
                    conversions.c.attempts == conversion.attempts,
                )
                .values(
                    status=ConversionStatus.RUNNING.value,
                    runner=runner,
                    attempts=conversion.attempts + 1,
                    started_at=now,
                )
            )
        return bool(result.rowcount == 1)

    async def finish(
        self, conversion: Conversion, runner: str, now: datetime, output_uri: str | None, error: ArrError | None
    ) -> bool:
        """Succeeded (with its output) or Failed (with its error), once: only by the runner that claimed it."""
        status = ConversionStatus.FAILED if error is not None else ConversionStatus.SUCCEEDED
        async with transaction(self.engine) as c:
            result = await c.execute(
                conversions.update()
                .where(
                    conversions.c.seq == conversion.seq,
                    conversions.c.status == ConversionStatus.RUNNING.value,
                    conversions.c.runner == runner,
                )
                .values(
                    status=status.value,
                    ended_at=now,
                    output_uri=output_uri,
                    error_code=error.code if error else None,
                    error_message=error.message if error else None,
                    # The SAS were needed to run it: a finished conversion keeps none.
                    input_sas=None,
                    output_sas=None,
                )
            )
        return bool(result.rowcount == 1)
