"""Fixtures for the field-tool tests: virtual boards on pseudo-terminals."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from host_tools.sim.virtual_board import VirtualBoard


@pytest.fixture
def vboard_factory(tmp_path: Path) -> Iterator[Callable[..., VirtualBoard]]:
    """Start virtual boards (each with its own flash directory); all closed at the end."""
    boards: list[VirtualBoard] = []

    def make(
        name: str = "board", mac: str = "246f28000001", kind: str | None = None
    ) -> VirtualBoard:
        vb = VirtualBoard(tmp_path / f"flash-{name}", sim={"unique_id": mac})
        if kind is not None:
            vb.attach_sensors(kind, mac, seed=int(mac[-4:], 16) + 1)
        boards.append(vb)
        return vb.start()

    yield make
    for vb in boards:
        vb.close()


@pytest.fixture
def vboard(vboard_factory: Callable[..., VirtualBoard]) -> VirtualBoard:
    return vboard_factory()
