"""ARR's list pages: a page of rows read one beyond the limit, and the cursor of the next page (a row's seq)."""

from __future__ import annotations

from typing import Protocol, TypeVar


class Listed(Protocol):
    @property
    def seq(self) -> int: ...


T = TypeVar("T", bound=Listed)


def split_page(rows: list[T], limit: int) -> tuple[list[T], int | None]:
    """The first `limit` of up to limit + 1 rows, and the seq to continue after when there were more."""
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].seq
    return rows, None
