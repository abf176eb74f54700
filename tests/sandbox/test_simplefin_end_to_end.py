"""dashtam's SimpleFIN provider against the sandbox's SimpleFIN server over verified TLS, end to end.

Nothing on dashtam's side is replaced: the setup token is claimed over HTTPS,
the access URL sealed in the vault, and `sync` fetches its windows from the
sandbox, whose clock the test moves so that pending transactions post.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime as dt
import decimal
import urllib.parse
from typing import TYPE_CHECKING, Any

import pytest
from sandbox_support import point_dashtam_at
from sync_support import accounts, positions, transactions

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.sync import SyncOptions, SyncResult, sync
from dashtam_cli.core.vault.vault import OpenOptions

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import CliCall
    from sandbox_support import FakeClock, RunningSandbox

    from dashtam_cli.core.models import SyncReport, Transaction

DAY = 86_400


def _sync(clock: FakeClock) -> SyncReport:
    """`dashtam sync` with dashtam's clock on the sandbox's; the only connection's report."""
    options = SyncOptions(clock=clock.now)
    result: SyncResult = asyncio.run(sync(load_settings(), options, OpenOptions()))
    (report,) = result.reports
    return report


def _sandbox_set(running: RunningSandbox, start: int) -> dict[str, Any]:
    """The sandbox's own Account Set from ``start`` on (pending included), through a fresh access."""
    token = running.sandbox.simplefin_setup_token()
    with running.client() as http:
        access = http.post(base64.b64decode(token).decode()).text
        parts = urllib.parse.urlsplit(access)
        answer = http.get(
            "/simplefin/accounts",
            params={"start-date": start, "pending": 1},
            auth=(parts.username or "", parts.password or ""),
        )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _pending(rows: list[Transaction]) -> collections.Counter[str]:
    return collections.Counter(t.account_id for t in rows if t.status == "PENDING")


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def connected(
    request: pytest.FixtureRequest,
    start_sandbox: Callable[..., RunningSandbox],
    monkeypatch: pytest.MonkeyPatch,
    master_key: bytes,
    cli: CliCall,
) -> RunningSandbox:
    """A sandbox serving protocol version 1 or 2, and dashtam connected to it with a setup token."""
    del master_key
    running = start_sandbox(simplefin_version=request.param)
    point_dashtam_at(running, monkeypatch)
    token = running.sandbox.simplefin_setup_token()
    done = cli("connect", "simplefin", "--name", "bridge", input=f"{token}\n")
    assert done.exit_code == 0, done.stderr
    assert token not in done.stdout + done.stderr
    return running


def _check_first_sync(running: RunningSandbox, clock: FakeClock) -> list[Transaction]:
    """Sync two years in 90-day windows; the queries show what the sandbox has. The rows."""
    first = _sync(clock)
    assert first.result == "ok", first.message
    assert first.requests == 9  # the newest 89 days, then 8 windows back to 730 days
    # The sandbox's own view of the same data, for the comparison.
    truth = _sandbox_set(running, int(clock()) - 80 * DAY)
    by_name = {a["name"]: a for a in truth["accounts"]}
    stored, _ = accounts()
    assert sorted(a.name for a in stored) == sorted(by_name)
    for account in stored:
        expected = by_name[account.name]
        assert account.total_value == decimal.Decimal(expected["balance"])
        currency = expected.get("currency") or "USD"
        assert account.currency == (currency if "://" in currency else currency.upper())
        assert account.institution
    assert any(a.currency.startswith("https://") for a in stored)  # the miles
    held, _ = positions()
    brokerage = next(a for a in truth["accounts"] if a.get("holdings"))
    assert sorted(p.symbol for p in held) == sorted(h["symbol"] for h in brokerage["holdings"])
    rows, _ = transactions(limit=1_000_000)
    assert first.new == len(rows)
    assert sorted(_pending(rows).values()) == [3, 3]  # the checking account's and the card's
    oldest = min(t["posted"] for a in truth["accounts"] for t in a["transactions"] if t["posted"])
    recent = {(t.description, t.amount) for t in rows if t.time.timestamp() >= oldest}
    for item in truth["accounts"]:
        for txn in item["transactions"]:
            if txn["posted"]:
                assert (txn["description"], decimal.Decimal(txn["amount"])) in recent
    return rows


def test_connect_sync_query_then_pending_transactions_post_a_day_later(
    connected: RunningSandbox, sandbox_clock: FakeClock
) -> None:
    """Claim, sync two years in 90-day windows, query; a day on, posted ones replace pending ones."""
    rows = _check_first_sync(connected, sandbox_clock)
    pending = {t.id: t for t in rows if t.status == "PENDING"}
    # The next morning (UTC), after the sandbox's posting time: every pending one posts.
    now = sandbox_clock.now()
    tomorrow = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(7), dt.UTC)
    sandbox_clock.advance((tomorrow - now).total_seconds())
    second = _sync(sandbox_clock)
    assert second.result == "ok", second.message
    assert second.requests == 1
    # Per account: two post under their id (changed), one under a new id (new; its pending removed).
    assert (second.new, second.removed) == (2, 2)
    assert second.changed >= 4
    after, _ = transactions(limit=1_000_000)
    assert not _pending(after)
    assert len(after) == len(rows)
    by_id = {t.id: t for t in after}
    kept = [by_id[i] for i in pending if i in by_id]
    assert len(kept) == 4
    assert all(t.status == "POSTED" for t in kept)
    tipped = [t for t in kept if t.amount != pending[t.id].amount]
    assert len(tipped) == 2
    assert all(t.amount == pending[t.id].amount - decimal.Decimal("3.50") for t in tipped)
