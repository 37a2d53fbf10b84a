from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from forgea_gh.store import sqlite
from tests import support


@pytest.fixture
def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    return support.make_config(tmp_path)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[sqlite.SqliteStore]:
    s = sqlite.SqliteStore(str(tmp_path / "store.db"), max_attempts=3)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def clock() -> support.FakeClock:
    return support.FakeClock()
