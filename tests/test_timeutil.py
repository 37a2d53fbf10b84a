"""Store time text."""

from __future__ import annotations

import pytest


def test_store_time_text_sorts_as_the_instants_it_names() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from forgea_gh import timeutil

    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert timeutil.to_text(moment) == "2026-01-02T03:04:05.000006Z"
    assert timeutil.to_text(moment) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    shifted = moment.astimezone(timezone(timedelta(hours=5)))
    assert timeutil.to_text(shifted) == timeutil.to_text(moment)
    assert timeutil.from_text(timeutil.to_text(moment)) == moment
    with pytest.raises(ValueError, match="naive"):
        timeutil.to_text(datetime(2026, 1, 1))
