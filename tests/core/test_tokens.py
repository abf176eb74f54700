"""The token manager against a local OAuth server: when it refreshes, what it stores, how it fails."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import signal
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from token_support import (
    SCHWAB_REFUSALS,
    SERVER_ERROR,
    FakeClock,
    add_connection,
    audit_of,
    refresh_requests,
    stored,
    token_set,
)

from dashtam_cli.core import tokens as tokens_module
from dashtam_cli.core.connections import list_connections, load_tokens, store_tokens
from dashtam_cli.core.errors import ExitCode, ReauthRequired
from dashtam_cli.core.models import ConnectionInfo, ConnectionState
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.tokens import (
    REFRESH_MARGIN,
    RefreshFailed,
    RefreshOutcome,
    TokenManager,
    describe_remaining,
    hold_signals,
    refresh_connections,
    token_manager,
    token_status,
)
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from pathlib import Path

    from oauth_server import OAuthServer

    from dashtam_cli.core.models import TokenStatus

T = TypeVar("T")
START = dt.datetime(2025, 3, 3, 15, 0, tzinfo=dt.UTC)
NAME = "brokerage"
LOGIN_AGAIN = f"run: dashtam connect schwab --name {NAME}"


@pytest.fixture
def clock() -> FakeClock:
    """A clock that stands still at START unless the test moves it."""
    return FakeClock(START)


def with_manager(clock: FakeClock, job: Callable[[TokenManager], Coroutine[Any, Any, T]]) -> T:
    """Run ``job`` with a token manager on the test's vault, timed by ``clock``."""

    async def main() -> T:
        async with token_manager(load_settings(), OpenOptions(), clock=clock) as manager:
            return await job(manager)

    return asyncio.run(main())


def refresh(clock: FakeClock, *, force: bool = False) -> RefreshOutcome:
    """TokenManager.refresh of the connection NAME."""
    return with_manager(clock, lambda m: m.refresh(NAME, force=force))


def status_of(name: str) -> str:
    """The connection's recorded status (active, reauth_required)."""

    async def read() -> str:
        async with open_vault(load_settings()) as vault:
            (info,) = await list_connections(vault, name=name)
            return info.status

    return asyncio.run(read())


# --- when a refresh happens ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("access_in", "refreshed"),
    [
        (dt.timedelta(minutes=2), True),
        (dt.timedelta(minutes=-10), True),
        (REFRESH_MARGIN, True),
        (REFRESH_MARGIN + dt.timedelta(seconds=1), False),
        (dt.timedelta(minutes=20), False),
    ],
    ids=["2min", "expired", "at-margin", "margin+1s", "20min"],
)
def test_refresh_ahead_of_expiry(
    oauth: OAuthServer, clock: FakeClock, access_in: dt.timedelta, refreshed: bool
) -> None:
    """An access token expiring within the 5-minute margin is refreshed; a later one is left alone."""
    original = token_set(START, access_in=access_in)
    add_connection(NAME, original)

    outcome = refresh(clock)

    assert outcome.refreshed is refreshed
    assert outcome.connection == NAME
    _, now_stored = stored(NAME)
    if not refreshed:
        assert refresh_requests(oauth) == []
        assert now_stored == original
        assert outcome.tokens == original
        return
    (request,) = refresh_requests(oauth)
    assert request.form == {"grant_type": "refresh_token", "refresh_token": original.refresh_token}
    credentials = base64.b64encode(f"{oauth.client_id}:{oauth.client_secret}".encode()).decode()
    assert request.authorization == f"Basic {credentials}"
    (issued,) = oauth.issued
    assert now_stored.access_token == issued["access_token"] == outcome.tokens.access_token
    assert now_stored.issued_at == START
    assert now_stored.access_expires_at == START + dt.timedelta(seconds=1800)
    assert status_of(NAME) == "active"
    (entry, *_) = audit_of(NAME)
    assert (entry.operation, entry.outcome, entry.http_status) == ("oauth.refresh", "ok", 200)
    assert entry.correlation_id  # the Schwab-Client-CorrelId header, kept for support


def test_force_refreshes_a_fresh_token(oauth: OAuthServer, clock: FakeClock) -> None:
    """With force, a token valid for 20 more minutes is refreshed anyway."""
    add_connection(NAME, token_set(START, access_in=dt.timedelta(minutes=20)))

    outcome = refresh(clock, force=True)

    assert outcome.refreshed is True
    assert len(refresh_requests(oauth)) == 1
    assert stored(NAME)[1].access_token == oauth.issued[0]["access_token"]


def test_access_token_returns_the_stored_token_while_fresh(
    oauth: OAuthServer, clock: FakeClock
) -> None:
    """A fresh access token is returned as stored, and no request goes to the provider."""
    add_connection(NAME, token_set(START, access_in=dt.timedelta(minutes=20)))

    async def twice(manager: TokenManager) -> list[str]:
        return [await manager.access_token(NAME), await manager.access_token(NAME)]

    assert with_manager(clock, twice) == ["A0.stored-access@", "A0.stored-access@"]
    assert oauth.token_requests == []


def test_access_token_commits_the_new_tokens_before_returning(
    oauth: OAuthServer, clock: FakeClock
) -> None:
    """After a refresh, the token returned is already committed: another engine reads it back."""
    add_connection(NAME, token_set(START, access_in=dt.timedelta(minutes=2)))
    settings = load_settings()

    async def main() -> tuple[str, str, str]:
        async with token_manager(settings, OpenOptions(), clock=clock) as manager:
            token = await manager.access_token(NAME)
            # Still inside the manager: a second engine sees only committed data.
            async with open_vault(settings) as other:
                _, seen = await load_tokens(other, NAME)
            again = await manager.access_token(NAME)
        return token, seen.access_token, again

    token, committed, again = asyncio.run(main())

    (issued,) = oauth.issued
    assert token == issued["access_token"]
    assert token != "A0.stored-access@"
    assert committed == token
    assert again == token
    assert len(refresh_requests(oauth)) == 1  # the second call used the new token


def test_a_stale_cache_rereads_under_the_lock(oauth: OAuthServer, clock: FakeClock) -> None:
    """A manager whose cached token expired finds another manager's refresh and sends nothing."""
    add_connection(NAME, token_set(START, access_in=dt.timedelta(minutes=20)))
    settings = load_settings()

    async def main() -> tuple[str, str, str]:
        async with (
            token_manager(settings, OpenOptions(), clock=clock) as first,
            token_manager(settings, OpenOptions(), clock=clock) as second,
        ):
            cached = await first.access_token(NAME)
            clock.advance(dt.timedelta(minutes=18))
            refreshed = await second.access_token(NAME)
            return cached, refreshed, await first.access_token(NAME)

    cached, refreshed, reread = asyncio.run(main())

    assert cached == "A0.stored-access@"
    assert refreshed == oauth.issued[0]["access_token"]
    assert reread == refreshed
    assert len(refresh_requests(oauth)) == 1


def test_requests_refused_together_refresh_once(oauth: OAuthServer, clock: FakeClock) -> None:
    """Several API calls refused with the same token ask for a new one; only the first refreshes."""
    add_connection(NAME, token_set(START, access_in=dt.timedelta(minutes=20)))

    async def job(manager: TokenManager) -> list[str]:
        rejected = await manager.access_token(NAME)
        return list(
            await asyncio.gather(*(manager.replace_rejected(NAME, rejected) for _ in range(4)))
        )

    tokens = with_manager(clock, job)

    assert len(refresh_requests(oauth)) == 1
    assert tokens == [oauth.issued[0]["access_token"]] * 4


# --- rotation -----------------------------------------------------------------------------------


def test_a_rotated_refresh_token_replaces_the_old_one(oauth: OAuthServer, clock: FakeClock) -> None:
    """A new refresh token replaces the old one and inherits the login's deadline, not a new 7 days."""
    oauth.behaviour.rotate_refresh = True
    original = token_set(START, access_in=dt.timedelta(minutes=1), refresh_in=dt.timedelta(days=2))
    add_connection(NAME, original)

    refresh(clock)

    _, tokens = stored(NAME)
    (issued,) = oauth.issued
    assert tokens.refresh_token == issued["refresh_token"] != original.refresh_token
    # Schwab's 7 days run from the login: the rotated token expires when the first would have.
    assert tokens.refresh_expires_at == original.refresh_expires_at == START + dt.timedelta(days=2)
    assert audit_of(NAME)[0].detail == "refresh token rotated"
    # The next refresh presents the new refresh token, not the old one.
    clock.advance(dt.timedelta(minutes=29))
    refresh(clock)
    assert refresh_requests(oauth)[1].form["refresh_token"] == issued["refresh_token"]


def test_without_rotation_the_old_refresh_token_keeps_its_original_expiry(
    oauth: OAuthServer, clock: FakeClock
) -> None:
    """When the provider sends no refresh token, the old one stays, expiring when it always did."""
    oauth.behaviour.rotate_refresh = False
    original = token_set(
        START, access_in=dt.timedelta(minutes=1), refresh_in=dt.timedelta(days=2, hours=3)
    )
    add_connection(NAME, original)

    refresh(clock)

    _, tokens = stored(NAME)
    assert "refresh_token" not in oauth.issued[0]
    assert tokens.access_token == oauth.issued[0]["access_token"]
    assert tokens.refresh_token == original.refresh_token
    assert tokens.refresh_expires_at == original.refresh_expires_at
    assert tokens.refresh_expires_at == START + dt.timedelta(days=2, hours=3)
    assert audit_of(NAME)[0].detail == "refresh token kept"


# --- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("refusal", list(SCHWAB_REFUSALS))
def test_a_refused_refresh_token_requires_a_new_login(
    oauth: OAuthServer, clock: FakeClock, refusal: str
) -> None:
    """Schwab's 400 and 401 refusals: ReauthRequired (exit 4) with the exact command, tokens kept."""
    original = token_set(START, access_in=dt.timedelta(minutes=-1))
    add_connection(NAME, original)
    status, body = SCHWAB_REFUSALS[refusal]
    oauth.behaviour.refresh_answers[str(original.refresh_token)] = (status, body)

    with pytest.raises(ReauthRequired) as caught:
        refresh(clock)

    error = caught.value
    assert error.exit_code == ExitCode.REAUTH
    assert int(error.exit_code) == 4
    assert error.hint == LOGIN_AGAIN
    assert f"HTTP {status}" in error.message
    assert NAME in error.message
    assert len(refresh_requests(oauth)) == 1
    assert status_of(NAME) == "reauth_required"
    assert stored(NAME)[1] == original  # nothing deleted: a new login replaces them
    (entry, *_) = audit_of(NAME)
    assert (entry.operation, entry.outcome, entry.http_status) == (
        "oauth.refresh",
        "reauth_required",
        status,
    )


def test_an_expired_refresh_token_requires_a_new_login_without_a_request(
    oauth: OAuthServer, clock: FakeClock
) -> None:
    """A refresh token past its expiry is not even sent: ReauthRequired at once."""
    add_connection(
        NAME,
        token_set(START, access_in=dt.timedelta(minutes=-1), refresh_in=dt.timedelta(hours=-2)),
    )

    with pytest.raises(ReauthRequired) as caught:
        with_manager(clock, lambda m: m.access_token(NAME))

    assert caught.value.hint == LOGIN_AGAIN
    assert "refresh token expired 2 h 0 min ago" in caught.value.message
    assert oauth.token_requests == []
    assert status_of(NAME) == "reauth_required"
    assert audit_of(NAME)[0].outcome == "reauth_required"


def test_no_refresh_token_requires_a_new_login_without_a_request(
    oauth: OAuthServer, clock: FakeClock
) -> None:
    """A connection without a refresh token cannot refresh: ReauthRequired, nothing sent."""
    add_connection(
        NAME, token_set(START, access_in=dt.timedelta(minutes=1), refresh=None, refresh_in=None)
    )

    with pytest.raises(ReauthRequired) as caught:
        refresh(clock)

    assert caught.value.hint == LOGIN_AGAIN
    assert oauth.token_requests == []


@pytest.mark.parametrize(
    ("status", "body"),
    [SERVER_ERROR, (503, b"<html>Service Unavailable</html>"), (429, b'{"message":"slow"}')],
    ids=["500", "503", "429"],
)
def test_a_provider_failure_is_not_a_reauth(
    oauth: OAuthServer, clock: FakeClock, status: int, body: bytes
) -> None:
    """A 5xx (or 429) from the token endpoint: RefreshFailed (exit 1), status and tokens unchanged."""
    original = token_set(START, access_in=dt.timedelta(minutes=1))
    add_connection(NAME, original)
    oauth.behaviour.refresh_answers[str(original.refresh_token)] = (status, body)

    with pytest.raises(RefreshFailed) as caught:
        refresh(clock)

    assert caught.value.exit_code == ExitCode.ERROR
    assert int(caught.value.exit_code) == 1
    assert not isinstance(caught.value, ReauthRequired)
    assert caught.value.hint is not None
    assert "try again in a few minutes" in caught.value.hint
    assert status_of(NAME) == "active"
    assert stored(NAME)[1] == original
    (entry, *_) = audit_of(NAME)
    assert (entry.outcome, entry.http_status) == ("failed", status)


def test_after_an_ambiguous_failure_a_refused_token_means_log_in_again(
    oauth: OAuthServer, clock: FakeClock
) -> None:
    """The provider rotated but the answer was lost: the retry's invalid_grant asks for a login."""
    original = token_set(START, access_in=dt.timedelta(minutes=1))
    add_connection(NAME, original)
    oauth.behaviour.check_refresh = True
    oauth.live_refresh.add(str(original.refresh_token))
    oauth.behaviour.drop_answer = True

    with pytest.raises(RefreshFailed):
        refresh(clock)
    assert len(oauth.issued) == 1  # the provider did rotate
    assert stored(NAME)[1] == original
    assert status_of(NAME) == "active"

    oauth.behaviour.drop_answer = False
    with pytest.raises(ReauthRequired) as caught:
        refresh(clock)

    assert caught.value.hint == LOGIN_AGAIN
    assert "HTTP 400" in caught.value.message
    assert len(refresh_requests(oauth)) == 2
    assert status_of(NAME) == "reauth_required"


# --- status -------------------------------------------------------------------------------------


def _info(
    *,
    access_in: dt.timedelta | None,
    refresh_in: dt.timedelta | None,
    status: ConnectionState = ConnectionState.ACTIVE,
) -> ConnectionInfo:
    return ConnectionInfo(
        id="c0ffee00-0000-4000-8000-000000000000",
        name=NAME,
        provider="schwab",
        status=status,
        created_at=START - dt.timedelta(days=1),
        updated_at=START - dt.timedelta(days=1),
        access_expires_at=None if access_in is None else START + access_in,
        refresh_expires_at=None if refresh_in is None else START + refresh_in,
    )


MIN, HOUR, DAY = dt.timedelta(minutes=1), dt.timedelta(hours=1), dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("access_in", "refresh_in", "status", "state"),
    [
        (20 * MIN, 5 * DAY, "active", "ok"),
        (-10 * MIN, 5 * DAY, "active", "access_expired"),
        (20 * MIN, 23 * HOUR, "active", "refresh_expiring"),
        (-10 * MIN, 23 * HOUR, "active", "refresh_expiring"),
        (20 * MIN, 24 * HOUR + MIN, "active", "ok"),
        (-10 * MIN, -1 * MIN, "active", "reauth_required"),
        (20 * MIN, 5 * DAY, "reauth_required", "reauth_required"),
        (None, None, "active", "reauth_required"),
        (-10 * MIN, None, "active", "reauth_required"),
        (20 * MIN, None, "active", "ok"),
    ],
    ids=[
        "ok",
        "access-expired",
        "refresh-under-24h",
        "both",
        "refresh-just-over-24h",
        "refresh-expired",
        "refused-before",
        "no-tokens",
        "no-refresh-token-expired",
        "no-refresh-token-fresh",
    ],
)
def test_token_states(
    access_in: dt.timedelta | None, refresh_in: dt.timedelta | None, status: str, state: str
) -> None:
    """Each combination of lifetimes and recorded status gives its documented state and action."""
    info = _info(access_in=access_in, refresh_in=refresh_in, status=ConnectionState(status))
    row = token_status(info, START)

    assert row.state == state
    assert row.connection == NAME
    if state in {"refresh_expiring", "reauth_required"}:
        assert row.action.endswith(f"dashtam connect schwab --name {NAME}")
    elif state == "ok":
        assert row.action == "none"
    else:
        assert "dashtam tokens refresh" in row.action


def test_status_gives_seconds_and_words_by_the_fake_clock(clock: FakeClock) -> None:
    """Seconds remaining are exact integers; the words read 'in 3 h 10 min'; times keep their offset."""
    add_connection(
        NAME,
        token_set(
            START, access_in=dt.timedelta(minutes=25), refresh_in=dt.timedelta(hours=3, minutes=10)
        ),
    )

    rows: list[TokenStatus] = with_manager(clock, lambda m: m.status(None))

    (row,) = rows
    assert row.state == "refresh_expiring"
    assert row.access_expires_in_seconds == 25 * 60
    assert row.access_expires == "in 25 min"
    assert row.refresh_expires_in_seconds == 3 * 3600 + 10 * 60
    assert row.refresh_expires == "in 3 h 10 min"
    assert row.refresh_expires_at == START + dt.timedelta(hours=3, minutes=10)
    assert row.refresh_expires_at.utcoffset() == dt.timedelta(0)

    clock.advance(dt.timedelta(hours=4))
    (later,) = with_manager(clock, lambda m: m.status(None))
    assert later.state == "reauth_required"
    assert later.refresh_expires_in_seconds == -50 * 60
    assert later.refresh_expires == "50 min ago"
    assert later.access_expires == "3 h 35 min ago"


@pytest.mark.parametrize(
    ("delta", "words"),
    [
        (dt.timedelta(hours=3, minutes=10), "in 3 h 10 min"),
        (dt.timedelta(hours=3, minutes=10, seconds=59), "in 3 h 10 min"),
        (dt.timedelta(days=6, hours=23, minutes=59), "in 6 d 23 h"),
        (dt.timedelta(minutes=4, seconds=30), "in 4 min"),
        (dt.timedelta(seconds=45), "in 45 s"),
        (dt.timedelta(0), "in 0 s"),
        (-dt.timedelta(days=2, hours=4), "2 d 4 h ago"),
        (-dt.timedelta(seconds=30), "30 s ago"),
    ],
)
def test_describe_remaining(delta: dt.timedelta, words: str) -> None:
    """Remaining time in words, coarse enough to read at a glance, past times with 'ago'."""
    assert describe_remaining(delta) == words


# --- signals ------------------------------------------------------------------------------------


def test_a_signal_during_a_refresh_waits_for_the_tokens_and_the_audit_entry(
    oauth: OAuthServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the new tokens are being stored: they are stored and audited, then it stops."""
    add_connection(NAME, token_set(START, access_in=dt.timedelta(minutes=2)))
    store = store_tokens  # the function tokens_module calls, replaced below

    async def interrupted_store(*args: Any, **kwargs: Any) -> None:
        signal.raise_signal(signal.SIGINT)  # held off: the store goes on
        await store(*args, **kwargs)

    monkeypatch.setattr(tokens_module, "store_tokens", interrupted_store)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            refresh(clock)
    finally:
        signal.signal(signal.SIGINT, inherited)

    (issued,) = oauth.issued
    assert stored(NAME)[1].access_token == issued["access_token"]
    (entry, *_) = audit_of(NAME)
    assert (entry.operation, entry.outcome, entry.http_status) == ("oauth.refresh", "ok", 200)


def test_hold_signals_defers_sigint_to_the_end_of_the_block() -> None:
    """A SIGINT raised inside the block interrupts nothing there; it arrives when the block ends."""
    # Python's own handler, even if this process inherited SIGINT ignored (as in some CI shells).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    steps: list[str] = []
    try:
        with pytest.raises(KeyboardInterrupt):  # noqa: PT012 - the point is where it is raised
            with hold_signals():
                signal.raise_signal(signal.SIGINT)
                steps.append("after the signal, inside the block")
            steps.append("after the block")  # pragma: no cover - must not be reached
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)

    assert steps == ["after the signal, inside the block"]


def test_hold_signals_defers_sigterm_and_restores_the_handler() -> None:
    """A SIGTERM inside the block reaches the previous handler once, after the block."""
    received: list[tuple[int, str]] = []
    where = ["inside"]

    def handler(signum: int, _frame: object) -> None:
        received.append((signum, where[0]))

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with hold_signals():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            assert received == []
            where[0] = "after"
        assert received == [(signal.SIGTERM, "after")]  # delivered once, after the block
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_hold_signals_is_a_no_op_off_the_main_thread() -> None:
    """Only the main thread may install handlers: elsewhere the block simply runs."""
    ran: list[bool] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with hold_signals():
                ran.append(True)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=5)

    assert not thread.is_alive()
    assert errors == []
    assert ran == [True]


def test_a_refresh_lock_held_too_long_is_a_clear_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another holder keeps a connection's refresh lock past the limit, the wait ends in an error."""
    import fcntl

    from dashtam_cli.core.vault.files import ensure_private_dir, open_lock_file

    directory = tmp_path / "locks"
    ensure_private_dir(directory)
    holder = open_lock_file(directory / "conn-1.lock")
    fcntl.flock(holder, fcntl.LOCK_EX)
    monkeypatch.setattr(tokens_module, "LOCK_TIMEOUT", 0.0)
    entered: list[bool] = []

    async def wait_for_lock() -> None:
        async with tokens_module._connection_lock(directory, "conn-1"):
            entered.append(True)

    try:
        with pytest.raises(RefreshFailed, match="refreshing this connection for too long"):
            asyncio.run(wait_for_lock())
    finally:
        os.close(holder)
    assert entered == []
    asyncio.run(wait_for_lock())  # released: the next one gets it at once
    assert entered == [True]


def test_refreshing_everything_without_a_vault_does_nothing() -> None:
    """`tokens refresh` with no vault yet refreshes nothing and creates no vault."""
    settings = load_settings()
    assert asyncio.run(refresh_connections(settings, None, OpenOptions())) == []
    assert not settings.paths.vault_file.exists()
