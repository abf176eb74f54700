"""What a sync stores and what a broken item raises stay byte for byte what they were.

The mapper and the write path have fast paths; this pins their output for
the reference fixtures, sandbox data and one variant per form of a field
(``pinned_corpus``), so a fast path cannot silently change a stored value.
"""

from __future__ import annotations

import json

import pytest
from pinned_corpus import PINNED, broken_outcomes, stored_records
from schwab_support import BASE_URL


@pytest.fixture(autouse=True)
def schwab_base_url(monkeypatch: pytest.MonkeyPatch, master_key: bytes) -> None:
    """Every Schwab call goes to the mocked origin; the vault's key comes from the environment."""
    del master_key
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)


def test_a_sync_stores_exactly_the_pinned_records() -> None:
    """Every stored column and payload of the corpus equals the pinned text, byte for byte."""
    pinned = json.loads(PINNED.read_text("utf-8"))
    stored = stored_records()
    assert stored["counts"] == pinned["stored"]["counts"]
    assert len(stored["rows"]) == len(pinned["stored"]["rows"])
    for got, expected in zip(stored["rows"], pinned["stored"]["rows"], strict=True):
        assert got == expected


def test_broken_items_raise_exactly_the_pinned_errors() -> None:
    """Each broken item gives the same one-line error and hint as before, naming its field."""
    pinned = json.loads(PINNED.read_text("utf-8"))["broken"]
    assert broken_outcomes() == pinned
