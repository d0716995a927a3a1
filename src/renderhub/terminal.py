"""What every `renderhub` command shares: its output, failing with a message, the data-dir and database
options, and running work on the hub's store."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from renderhub.datadir import make_private
from renderhub.errors import ConfigurationError

if TYPE_CHECKING:
    from renderhub.store import Repository

T = TypeVar("T")
console = Console()
errors = Console(stderr=True)


def on_store(work: Callable[[Repository], Coroutine[Any, Any, T]], data_dir: Path, database_url: str | None) -> T:
    """Run `work` on the hub's database (imported here: the session commands need none of it)."""
    from renderhub.config import Settings
    from renderhub.store import open_store

    async def main() -> T:
        settings = Settings(data_dir=data_dir, database_url=database_url)
        private_data_dir(data_dir)
        async with open_store(settings.async_database_url) as repo:
            return await work(repo)

    return asyncio.run(main())


def private_data_dir(data_dir: Path) -> None:
    """Make the data dir private to this user (see datadir.py), or stop with why not."""
    try:
        make_private(data_dir)
    except ConfigurationError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot make the data dir {data_dir} private: {exc.strerror or exc}")


def fail(message: str, code: int = 1) -> NoReturn:
    # escape: messages carry paths and server text, not markup; soft_wrap: one line, whatever the width
    errors.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    sys.exit(code)


data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=Path(".renderhub"), show_default=True,
    help="Where the hub keeps its database, certificates, logs and arrconfig.json.",
)  # fmt: skip
database_option = click.option(
    "--database-url",
    default=None,
    help="sqlite:///PATH or postgresql://... (default: SQLite in the data dir).",
)
