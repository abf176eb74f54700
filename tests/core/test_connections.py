"""Connections on their own: saving a login, reading and replacing its tokens, status, removal."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from typing import TYPE_CHECKING, Any, Final, TypeVar

import pytest
from sqlalchemy import func, select

from dashtam_cli.core import audit
from dashtam_cli.core.connections import (
    ConnectionNotFound,
    connection_exists,
    disconnect,
    list_connections,
    listing,
    load_tokens,
    remove_connection,
    save_login,
    set_status,
    store_tokens,
)
from dashtam_cli.core.errors import DashtamError
from dashtam_cli.core.models import ConnectionState
from dashtam_cli.core.oauth.tokens import TokenSet
from dashtam_cli.core.redact import redact
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.vault import OpenOptions, Vault, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

    from dashtam_cli.core.models import ConnectionInfo

pytestmark = pytest.mark.usefixtures("master_key")

T = TypeVar("T")
T0: Final = dt.datetime(2026, 2, 1, 8, 30, tzinfo=dt.UTC)


def in_vault(job: Callable[[Vault], Coroutine[Any, Any, T]]) -> T:
    """Run ``job`` on the test's vault (made on first use)."""

    async def run() -> T:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return await job(vault)

    return asyncio.run(run())


def tokens(n: int = 1, *, refresh: bool = True) -> TokenSet:
    """A distinct token set number ``n``, issued ``n`` hours after T0."""
    issued = T0 + dt.timedelta(hours=n)
    return TokenSet(
        access_token=f"access-token-number-{n}",
        refresh_token=f"refresh-token-number-{n}" if refresh else None,
        token_type="Bearer",
        issued_at=issued,
        access_expires_at=issued + dt.timedelta(minutes=30),
        refresh_expires_at=issued + dt.timedelta(days=7) if refresh else None,
    )


def login(name: str = "brokerage", n: int = 1, provider: str = "schwab") -> ConnectionInfo:
    """Save a login for ``name`` with token set ``n``."""
    return in_vault(lambda v: save_login(v, provider=provider, name=name, tokens=tokens(n)))


def loaded(name: str = "brokerage") -> tuple[ConnectionInfo, TokenSet]:
    """The connection ``name`` and its opened tokens."""
    return in_vault(lambda v: load_tokens(v, name))


def token_rows() -> int:
    """How many token rows the vault holds."""

    async def count(vault: Vault) -> int:
        async with vault.reading() as conn:
            return int(await conn.scalar(select(func.count()).select_from(schema.tokens)) or 0)

    return in_vault(count)


def test_a_first_login_creates_an_active_connection() -> None:
    """The new connection is active and carries its tokens' lifetimes (never the tokens)."""
    info = login()
    expected = tokens(1)
    assert (info.name, info.provider, info.status) == ("brokerage", "schwab", "active")
    assert info.access_expires_at == expected.access_expires_at
    assert info.refresh_expires_at == expected.refresh_expires_at
    assert "access-token-number-1" not in info.model_dump_json()
    assert in_vault(lambda v: connection_exists(v, "brokerage"))
    assert not in_vault(lambda v: connection_exists(v, "other"))


def test_tokens_come_back_exactly_as_saved() -> None:
    """Every field of the token set survives sealing and opening, times in UTC."""
    login()
    info, opened = loaded()
    assert opened == tokens(1)
    assert info.name == "brokerage"
    assert opened.access_expires_at.utcoffset() == dt.timedelta(0)


def test_opened_tokens_are_masked_in_logs_from_then_on() -> None:
    """Loading registers both tokens as secrets, so any later log or audit text masks them."""
    login()
    loaded()
    text = redact("sent access-token-number-1 and refresh-token-number-1")
    assert text == "sent *** and ***"


def test_a_login_without_a_refresh_token_is_kept_as_such() -> None:
    """No refresh token: None stored and read back, not an empty string."""
    in_vault(lambda v: save_login(v, provider="schwab", name="b", tokens=tokens(2, refresh=False)))
    info, opened = loaded("b")
    assert opened.refresh_token is None
    assert opened.refresh_expires_at is None
    assert info.refresh_expires_at is None


def test_a_second_login_replaces_the_tokens_of_the_same_connection() -> None:
    """Logging in again keeps the connection (id, creation time) and swaps its one token row."""
    first = login(n=1)
    in_vault(lambda v: set_status(v, first.id, ConnectionState.REAUTH_REQUIRED))
    second = login(n=2)
    assert second.id == first.id
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at
    assert second.status == "active"
    assert loaded()[1] == tokens(2)
    assert token_rows() == 1


def test_a_name_taken_by_another_provider_is_refused_and_left_alone() -> None:
    """A login for another provider under a taken name is an error; the first keeps its tokens."""
    login(n=1)
    with pytest.raises(DashtamError) as caught:
        login(n=2, provider="otherbank")
    assert caught.value.message == "the connection 'brokerage' belongs to schwab, not otherbank"
    assert caught.value.hint == "choose another name with --name"
    assert loaded()[1] == tokens(1)


def test_store_tokens_replaces_them_and_marks_the_connection_active() -> None:
    """After a refresh the new tokens are stored and a connection needing re-login is active again."""
    info = login(n=1)
    in_vault(lambda v: set_status(v, info.id, ConnectionState.REAUTH_REQUIRED))
    assert in_vault(lambda v: list_connections(v, name="brokerage"))[0].status == "reauth_required"
    in_vault(lambda v: store_tokens(v, info.id, tokens(3)))
    after, opened = loaded()
    assert opened == tokens(3)
    assert after.status == "active"
    assert token_rows() == 1


def test_connections_are_listed_by_name() -> None:
    """Listing is in name order; a name filter gives just that one."""
    for name in ("zeta", "alpha", "mid"):
        login(name)
    assert [c.name for c in in_vault(list_connections)] == ["alpha", "mid", "zeta"]
    (one,) = in_vault(lambda v: list_connections(v, name="mid"))
    assert one.name == "mid"


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda v: list_connections(v, name="nobody"), id="list"),
        pytest.param(lambda v: load_tokens(v, "nobody"), id="load"),
        pytest.param(lambda v: remove_connection(v, "nobody"), id="remove"),
    ],
)
def test_an_unknown_name_is_one_error_everywhere(
    call: Callable[[Vault], Coroutine[Any, Any, object]],
) -> None:
    """Every function taking a name says the same thing for one no connection has."""
    login()
    with pytest.raises(ConnectionNotFound) as caught:
        in_vault(call)
    assert caught.value.message == "no connection named 'nobody'"
    assert caught.value.hint == "see: dashtam connections list"


@pytest.fixture
def new_york() -> Iterator[None]:
    """Local time five hours behind UTC, restored after the test."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


@pytest.mark.usefixtures("new_york")
def test_a_time_stored_without_an_offset_is_read_as_utc() -> None:
    """A naive ISO time in a row (written by an older version or by hand) is UTC, not local."""
    login()

    async def strip_offset(vault: Vault) -> None:
        t = schema.tokens
        async with vault.writing() as conn:
            await conn.execute(t.update().values(access_expires_at="2026-02-01T10:00:00.000000"))

    in_vault(strip_offset)
    info, opened = loaded()
    expected = dt.datetime(2026, 2, 1, 10, 0, tzinfo=dt.UTC)
    assert opened.access_expires_at == expected
    assert info.access_expires_at == expected


def test_removing_a_connection_deletes_its_tokens() -> None:
    """Removal returns what was removed and cascades to the token row; others stay."""
    login("a", 1)
    login("b", 2)
    removed = in_vault(lambda v: remove_connection(v, "a"))
    assert removed.name == "a"
    assert [c.name for c in in_vault(list_connections)] == ["b"]
    assert token_rows() == 1
    assert loaded("b")[1] == tokens(2)


def test_listing_and_disconnect_without_a_vault() -> None:
    """No vault: no connections, a disconnect names the connection as unknown, no vault is made."""
    settings = load_settings()
    assert asyncio.run(listing(settings, OpenOptions())) == []
    with pytest.raises(ConnectionNotFound):
        asyncio.run(disconnect(settings, "brokerage", OpenOptions()))
    assert not settings.paths.vault_file.exists()


def test_disconnect_removes_and_audits_under_the_name() -> None:
    """Disconnect removes the connection and leaves an audit entry readable under its name."""
    info = login()
    removed = asyncio.run(disconnect(load_settings(), "brokerage", OpenOptions()))
    assert removed.id == info.id
    assert asyncio.run(listing(load_settings(), OpenOptions())) == []
    entries = in_vault(lambda v: audit.list_audit(v, connection="brokerage"))
    assert [(e.operation, e.outcome, e.provider) for e in entries] == [
        ("connection.remove", "ok", "schwab")
    ]
