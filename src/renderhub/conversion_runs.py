"""Every replica's conversion loop: claim pending conversions and run each in a process of its own, under limits."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import signal
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from renderhub.accounts import Accounts
from renderhub.auth import TokenService
from renderhub.clock import Clock
from renderhub.config import Settings
from renderhub.conversion_places import ConversionPlace
from renderhub.errors import StoreUnavailable
from renderhub.models import ArrError, BlobLocation, Conversion, ConversionStatus
from renderhub.periodic import every
from renderhub.storage_links import StorageLinks
from renderhub.store.conversions import ConversionStore

log = logging.getLogger("renderhub.conversions")

STORE_RETRY_SECONDS = 1.0
INVALID_INPUT = "Invalid input provided. Check logs in output container for details."
INTERNAL = "Unexpected internal server error encountered."


class ConversionRuns:
    """Runs up to `conversion_concurrency` conversions at a time from this replica (as its children, or as Ray tasks
    with the Ray backend), whether it leads or not (claims
    are conditional updates: one runner each); a conversion whose runner died (a replica that stopped
    heartbeating, or this one's previous life) is claimed again and run from the start, its outputs replaced
    whole, so it completes once."""

    def __init__(
        self,
        settings: Settings,
        store: ConversionStore,
        links: StorageLinks,
        alive: Callable[[str | None], bool],
        replica_id: str,
        clock: Clock,
        place: ConversionPlace,
        accounts: Accounts,
        tokens: TokenService,
    ) -> None:
        self.settings = settings
        self.store = store
        self.links = links
        self.place = place
        self.accounts = accounts
        self.tokens = tokens
        self.alive = alive
        self.replica_id = replica_id
        self.clock = clock
        self.tasks: dict[int, asyncio.Task[None]] = {}

    async def run(self, now: datetime) -> None:
        free = self.settings.conversion_concurrency - len(self.tasks)
        if free <= 0:
            return
        for conversion in await self.store.pending(limit=free):
            if free <= 0:
                return
            if conversion.seq in self.tasks:
                continue
            mine = conversion.runner == self.replica_id  # its task ended without recording an outcome
            if conversion.status is ConversionStatus.RUNNING and not mine and self.alive(conversion.runner):
                continue
            if not await self.store.claim(conversion, self.replica_id, now):
                continue  # another replica took it
            if conversion.status is ConversionStatus.RUNNING:
                log.info("conversion %s: its runner %s is gone; running it again", conversion.id, conversion.runner)
            claimed = dataclasses.replace(
                conversion, status=ConversionStatus.RUNNING, runner=self.replica_id, attempts=conversion.attempts + 1
            )
            free -= 1
            task = asyncio.create_task(self._run(claimed), name=f"conversion {conversion.id}")
            self.tasks[conversion.seq] = task
            task.add_done_callback(functools.partial(self._done, conversion.seq))

    def _done(self, seq: int, task: asyncio.Task[None]) -> None:
        self.tasks.pop(seq, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s ended with an error", task.get_name(), exc_info=exc)

    async def _run(self, conversion: Conversion) -> None:
        output_uri, error = await self._process(conversion)
        while True:  # the outcome is recorded, whatever the store does meanwhile
            try:
                recorded = await self.store.finish(conversion, self.replica_id, self.clock.now(), output_uri, error)
                break
            except StoreUnavailable:
                await asyncio.sleep(STORE_RETRY_SECONDS)
        if not recorded:
            # This replica was taken for dead (silent past the heartbeat timeout) and another claimed the conversion
            # again: its run is the one that counts; both wrote the same outputs whole.
            log.warning("conversion %s: finished, but another replica had claimed it again", conversion.id)
        elif error is None:
            log.info("conversion %s succeeded: %s", conversion.id, output_uri)
        else:
            log.warning("conversion %s failed: %s: %s", conversion.id, error.code, error.message)

    async def _process(self, conversion: Conversion) -> tuple[str | None, ArrError | None]:
        """Run the conversion process where this hub runs them; what it reports, or the error its end says."""
        limit = self.settings.conversion_timeout_minutes * 60
        spec = await self._spec(conversion)
        end = await self.place.run(f"{conversion.seq}-{conversion.attempts}", spec, limit)
        if end.code is None:
            return None, ArrError(
                "ConversionProcessFailed", f"The conversion ran past its time limit of {limit / 60:g} minutes."
            )
        return self._outcome(conversion, end.code, end.stdout, end.stderr)

    def _outcome(
        self, conversion: Conversion, code: int, stdout: bytes, stderr: bytes
    ) -> tuple[str | None, ArrError | None]:
        if code == -signal.SIGXCPU:  # RLIMIT_CPU: the same minutes as the wall-clock limit, in CPU time
            minutes = self.settings.conversion_timeout_minutes
            return None, ArrError("ConversionProcessFailed", f"The conversion ran past its time limit of {minutes:g} "
                                  "minutes (CPU time).")  # fmt: skip
        if code in (-signal.SIGKILL, -signal.SIGSEGV) or b"MemoryError" in stderr[-2000:]:
            return None, ArrError(
                "ConversionProcessFailed",
                f"{INVALID_INPUT} The conversion process ran out of memory (limit: "
                f"{self.settings.conversion_memory_mb} MB).",
            )
        try:
            report: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError, UnicodeDecodeError):
            log.error("conversion %s: the conversion process ended with %s:\n%s", conversion.id, code,
                      stderr.decode(errors="replace")[-3000:])  # fmt: skip
            return None, ArrError("InternalServerError", INTERNAL)
        error = report.get("error")
        if error:
            return None, ArrError(str(error["code"]), str(error["message"]))
        return str(report["outputUri"]), None

    async def _spec(self, conversion: Conversion) -> dict[str, Any]:
        settings = conversion.settings
        token = None if self.place.hub_url is None else await self._token(conversion.account_id)
        return {
            "conversionId": conversion.id,
            "input": self._location(conversion.account_id, settings.input, token),
            "relativeInputAssetPath": settings.relative_input_path,
            "output": self._location(conversion.account_id, settings.output, token),
            "outputAssetFilename": settings.output_filename,
            "outputAssetUri": settings.output_uri,
            "maxInputBytes": self.settings.conversion_max_input_mb * 1024 * 1024,
            "allowPrivate": self.settings.allow_private_storage,
            "linkedAccounts": [
                {"name": a.name, "key": a.key, "endpoint": a.endpoint}
                for a in self.links.accounts_for(conversion.account_id)
            ],
            # The process bounds itself first thing (a preexec_fn is unsafe in a hub with threads), and dies
            # with the hub: the conversion is then claimed again.
            "memoryBytes": self.settings.conversion_memory_mb * 1024 * 1024,
            "cpuSeconds": int(self.settings.conversion_timeout_minutes * 60),
        }

    async def _token(self, account_id: str) -> str | None:
        """A token of the account's primary key for a process elsewhere to reach the hub's storage (None: the
        account is gone, and so is its storage)."""
        account = await self.accounts.current(account_id)
        return None if account is None else self.tokens.issue(account, 1, self.clock.now())

    def _location(self, account_id: str, location: BlobLocation, token: str | None) -> dict[str, Any]:
        hub = self.links.hub_container(location.container_uri)
        if hub is not None and hub.account_id == account_id:
            if self.place.hub_url is None:
                folder = hub.folder(self.settings.storage_root.resolve())
                return {"folder": str(folder), "prefix": location.blob_prefix}
            url = f"{self.place.hub_url}accounts/{hub.account_id}/storage/{hub.container}"
            return {"hubContainer": url, "token": token, "caPem": self.place.ca_pem, "prefix": location.blob_prefix}
        return {"uri": location.container_uri, "sas": location.sas, "prefix": location.blob_prefix}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """A pass every reaper interval for the block's duration (none on a replica that runs no conversions);
        then the conversions' processes end (close)."""
        try:
            if self.settings.conversion_concurrency == 0:
                yield
            else:
                async with every(self.settings.reaper_interval_seconds, self._pass, "conversion runs"):
                    yield
        finally:
            await self.close()

    async def _pass(self) -> None:
        try:
            await self.run(self.clock.now())
        except StoreUnavailable:
            log.warning("conversions: the store is unavailable; retrying")
        except Exception:
            log.exception("conversions: a pass failed")  # the next pass goes on

    async def close(self) -> None:
        """The hub is stopping: its conversions' processes end; the next runner claims them again."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
