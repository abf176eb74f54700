"""The audit log on its own: what one record stores, how details are cleaned, how listing filters."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any, Final, TypeVar

import pytest

from dashtam_cli.core import audit
from dashtam_cli.core.connections import ConnectionNotFound, save_login
from dashtam_cli.core.oauth.tokens import TokenSet
from dashtam_cli.core.redact import register_secret
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.vault import OpenOptions, Vault, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from dashtam_cli.core.models import AuditEntry

pytestmark = pytest.mark.usefixtures("master_key")

T = TypeVar("T")
SECRET: Final = "s3cr3t-refresh-token-value"
T0: Final = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def in_vault(job: Callable[[Vault], Coroutine[Any, Any, T]]) -> T:
    """Run ``job`` on the test's vault (made on first use)."""

    async def run() -> T:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return await job(vault)

    return asyncio.run(run())


def record_one(**fields: Any) -> AuditEntry:
    """Record one entry with ``fields`` (operation and outcome defaulted) and read it back."""

    async def job(vault: Vault) -> AuditEntry:
        entry_id = await audit.record(
            vault, operation=fields.pop("operation", "op"), outcome="ok", **fields
        )
        (entry,) = [e for e in await audit.list_audit(vault) if e.id == entry_id]
        return entry

    return in_vault(job)


def record_at(*entries: tuple[str | None, str, dt.datetime]) -> None:
    """Record (connection name, operation, time) entries."""

    async def job(vault: Vault) -> None:
        for name, operation, at in entries:
            await audit.record(
                vault, operation=operation, outcome="ok", connection_name=name, at=at
            )

    in_vault(job)


# --- one record ---------------------------------------------------------------------------------


def test_a_record_keeps_every_field_and_returns_its_id() -> None:
    """Each column given comes back as given, under the id ``record`` returned."""
    entry = record_one(
        operation="schwab.accounts",
        connection_name="brokerage",
        provider="schwab",
        http_status=503,
        duration_ms=125,
        correlation_id="corr-1",
        detail="service unavailable",
        at=T0,
    )
    assert (
        entry.operation,
        entry.outcome,
        entry.connection,
        entry.provider,
        entry.http_status,
        entry.duration_ms,
        entry.correlation_id,
        entry.detail,
        entry.time,
    ) == (
        "schwab.accounts",
        "ok",
        "brokerage",
        "schwab",
        503,
        125,
        "corr-1",
        "service unavailable",
        T0,
    )


def test_a_time_in_another_zone_is_stored_as_the_same_instant_in_utc() -> None:
    """An aware time in UTC-5 is the same moment, shown in UTC."""
    eastern = dt.datetime(2026, 1, 5, 4, 0, tzinfo=dt.timezone(-dt.timedelta(hours=5)))
    entry = record_one(at=eastern)
    assert entry.time == T0
    assert entry.time.utcoffset() == dt.timedelta(0)


def test_without_a_time_the_entry_is_stamped_now() -> None:
    """No ``at``: the entry carries the time it was recorded (between before and after)."""
    before = dt.datetime.now(dt.UTC)
    entry = record_one()
    after = dt.datetime.now(dt.UTC)
    assert before <= entry.time <= after


# --- cleaning -----------------------------------------------------------------------------------


def test_a_registered_secret_is_masked_in_every_text_field() -> None:
    """A token that slips into any text column is stored as ***, never in the clear."""
    register_secret(SECRET)
    entry = record_one(
        operation=f"op {SECRET}",
        connection_name=f"name-{SECRET}",
        provider=f"p {SECRET}",
        correlation_id=f"c {SECRET}",
        detail=f"refresh with {SECRET} failed",
    )
    dumped = entry.model_dump_json()
    assert SECRET not in dumped
    assert entry.detail == "refresh with *** failed"
    assert entry.operation == "op ***"


def test_a_detail_becomes_one_line_without_control_characters() -> None:
    """Escape sequences, newlines and tabs from a provider's text are flattened to one line."""
    entry = record_one(detail="\x1b[31mbad\x1b[0m\r\ngateway\t\x00page\x07")
    assert entry.detail == "bad gateway page"


def test_account_numbers_in_a_detail_or_correlation_id_are_masked() -> None:
    """Anything shaped like an account number or hash is masked in untrusted fields."""
    entry = record_one(
        detail="account 12345678 refused", correlation_id="A" * 64, operation="op 12345678"
    )
    assert entry.detail == "account *** refused"
    assert entry.correlation_id == "***"
    # Operation names are ours, not a provider's: only secrets are masked there.
    assert entry.operation == "op 12345678"


def test_a_long_detail_is_cut_to_500_characters_with_an_ellipsis() -> None:
    """A provider's page is cut to 500 characters, the cut marked."""
    entry = record_one(detail="word " * 400)
    assert entry.detail is not None
    assert len(entry.detail) <= 500
    assert entry.detail.endswith("…")
    assert entry.detail.startswith("word word")


def test_a_long_own_field_is_cut_to_500_characters() -> None:
    """Even the trusted text columns are bounded."""
    entry = record_one(operation="o" * 2000, connection_name="n" * 2000)
    assert entry.operation == "o" * 500
    assert entry.connection == "n" * 500


def test_absent_optional_fields_stay_empty() -> None:
    """Fields not given are None, not empty strings or zeros."""
    entry = record_one()
    assert (
        entry.connection,
        entry.provider,
        entry.http_status,
        entry.duration_ms,
        entry.correlation_id,
        entry.detail,
    ) == (None, None, None, None, None, None)


# --- listing ------------------------------------------------------------------------------------


def operations(**filters: Any) -> list[str]:
    """The operations ``list_audit`` returns with ``filters``, in its order."""
    return [e.operation for e in in_vault(lambda v: audit.list_audit(v, **filters))]


def test_entries_come_newest_first() -> None:
    """Entries recorded out of order are listed newest first."""
    record_at(
        ("a", "second", T0 + dt.timedelta(minutes=1)),
        ("a", "first", T0),
        ("a", "third", T0 + dt.timedelta(minutes=2)),
    )
    assert operations() == ["third", "second", "first"]


def test_filter_by_connection_name() -> None:
    """Only the named connection's entries are listed."""
    record_at(("a", "a1", T0), ("b", "b1", T0), ("a", "a2", T0 + dt.timedelta(seconds=1)))
    assert operations(connection="a") == ["a2", "a1"]
    assert operations(connection="b") == ["b1"]


def test_since_is_inclusive_and_compares_instants() -> None:
    """``since`` keeps entries at or after it, whatever zone it is given in."""
    record_at(
        (None, "before", T0 - dt.timedelta(microseconds=1)),
        (None, "at", T0),
        (None, "after", T0 + dt.timedelta(hours=1)),
    )
    assert operations(since=T0) == ["after", "at"]
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert operations(since=T0.astimezone(plus_two) + dt.timedelta(minutes=1)) == ["after"]


def test_limit_keeps_the_newest() -> None:
    """``limit`` keeps the newest entries, not the first recorded."""
    record_at(*[(None, f"op{n}", T0 + dt.timedelta(seconds=n)) for n in range(5)])
    assert operations(limit=2) == ["op4", "op3"]


def test_filters_combine() -> None:
    """Connection, since and limit apply together."""
    record_at(
        ("a", "old", T0),
        ("a", "new1", T0 + dt.timedelta(hours=1)),
        ("a", "new2", T0 + dt.timedelta(hours=2)),
        ("b", "other", T0 + dt.timedelta(hours=3)),
    )
    assert operations(connection="a", since=T0 + dt.timedelta(minutes=1), limit=1) == ["new2"]


def test_an_unknown_connection_is_not_found() -> None:
    """A name no connection has and no entry names is ConnectionNotFound, not an empty list."""
    record_at(("a", "a1", T0))
    with pytest.raises(ConnectionNotFound) as caught:
        operations(connection="nobody")
    assert caught.value.message == "no connection named 'nobody'"
    assert caught.value.hint == "see: dashtam connections list"


def test_a_removed_connections_entries_stay_readable() -> None:
    """A name only the audit log still knows lists its entries (no connection row needed)."""
    record_at(("gone", "connection.remove", T0))
    assert operations(connection="gone") == ["connection.remove"]


def test_an_existing_connection_without_entries_lists_nothing() -> None:
    """A connection that exists but has no entries yet is an empty list, not an error."""
    tokens = TokenSet(
        access_token="access",
        refresh_token=None,
        token_type="Bearer",
        issued_at=T0,
        access_expires_at=T0 + dt.timedelta(minutes=30),
        refresh_expires_at=None,
    )
    in_vault(lambda v: save_login(v, provider="schwab", name="quiet", tokens=tokens))
    assert operations(connection="quiet") == []
