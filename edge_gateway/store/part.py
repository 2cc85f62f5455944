"""What the parts of the store (its mixins) may use of :class:`edge_gateway.store.Store`."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from edge_gateway.order import OrderGate
from edge_gateway.store.schema import Limits
from edge_gateway.store.seen import SeenRanges


class StorePart:
    """A part of the store: its methods run on the store thread, inside its transactions."""

    path: Path
    limits: Limits
    bytes: int
    depth: int
    leased: set[int]
    _last_age_check: float
    seen: dict[tuple[str, int], SeenRanges]
    _boots: dict[str, list[int]]
    order: OrderGate

    if TYPE_CHECKING:

        @property
        def db(self) -> sqlite3.Connection: ...

        def _bump(self, name: str, n: int = 1) -> None: ...

        def transaction(
            self, mirrors: bool = True
        ) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
