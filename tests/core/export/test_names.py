"""Book account names: defaults, overrides, counters, and the file an export is written to."""

from __future__ import annotations

import datetime as dt
import stat
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from dashtam_cli.core.errors import ConfigError
from dashtam_cli.core.export.files import write_export
from dashtam_cli.core.export.names import book_names, component, valid_name
from dashtam_cli.core.models import Account

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WHERE = "config file /x/config.toml"


def _account(number: str, name: str, kind: str = "CHECKING", account_id: str = "") -> Account:
    return Account(
        id=account_id or f"id-{number}",
        connection="banks",
        provider="simplefin",
        name=name,
        type=kind,
        number=number,
        currency="USD",
        cash=Decimal(1),
        market_value=None,
        total_value=Decimal(1),
        buying_power=None,
        fetched_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


def test_components_are_valid_names_whatever_the_text() -> None:
    """Free text becomes CamelCase letters and digits; nothing usable falls back."""
    assert component("Roth IRA") == "RothIRA"
    assert component("chase.com") == "ChaseCom"
    assert component("¡ñ!") == "Account"
    assert component("x" * 100) == "X" + "x" * 47
    for text in ("Total Checking (1234)", "401(k) plan", "  ", "été"):
        assert valid_name(f"Assets:{component(text)}")


def test_defaults_split_assets_from_liabilities_and_tell_twins_apart() -> None:
    """Cards and loans are liabilities; two accounts that would share a name get -2."""
    accounts = [
        _account("****1111", "Checking"),
        _account("****2222", "Sapphire", "CREDIT_CARD"),
        _account("****1111", "Checking", account_id="twin"),
    ]
    names = book_names(
        accounts, {}, where=WHERE, institutions={a.id: "Chase Bank" for a in accounts}
    )
    assert names.accounts["id-****1111"] == "Assets:ChaseBank:Checking-1111"
    assert names.accounts["id-****2222"] == "Liabilities:ChaseBank:Sapphire-2222"
    assert names.accounts["twin"] == "Assets:ChaseBank:Checking-1111-2"
    assert names.overridden == frozenset()


def test_counters_by_kind_then_sign_and_their_overrides() -> None:
    """A kind's own account first; otherwise income or expenses by sign; config wins."""
    names = book_names([], {}, where=WHERE, institutions={})
    assert names.counter("dividend", amount_positive=True) == "Income:Dividends"
    assert names.counter("purchase", amount_positive=False) == "Expenses:Uncategorized"
    assert names.counter("deposit", amount_positive=True) == "Income:Uncategorized"
    config = {"counter": {"expenses": "Expenses:ToSort", "trade": "Assets:Broker:Securities"}}
    names = book_names([], config, where=WHERE, institutions={})
    assert names.counter("purchase", amount_positive=False) == "Expenses:ToSort"
    assert names.counter("trade", amount_positive=False) == "Assets:Broker:Securities"


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"counter": {"bogus": "Expenses:X"}}, "unknown key 'bogus'"),
        ({"counter": {"fee": "expenses:fees"}}, "invalid account name"),
        ({"counter": "Expenses:X"}, "a table expected"),
        ({"accounts": {"****1111": 7}}, "invalid account name"),
        ({"accounts": {"****1111": "Assets:Bad Name"}}, "invalid account name"),
    ],
)
def test_bad_config_is_one_config_error_naming_the_file(
    config: dict[str, object], needle: str
) -> None:
    """Each mistake in [export] is a ConfigError that says where, never a traceback."""
    with pytest.raises(ConfigError, match=needle) as caught:
        book_names([_account("****1111", "Checking")], config, where=WHERE, institutions={})
    assert WHERE in caught.value.message


def test_an_export_that_fails_half_way_leaves_the_old_file(tmp_path: Path) -> None:
    """The old file stays whole when writing fails; no temporary file is left; a new one is 0600."""
    target = tmp_path / "books.beancount"
    target.write_text("kept\n")

    def pieces() -> Iterator[str]:
        yield "half"
        message = "the vault went away"
        raise RuntimeError(message)

    with pytest.raises(RuntimeError):
        write_export(target, pieces())
    assert target.read_text() == "kept\n"
    assert list(tmp_path.iterdir()) == [target]
    write_export(target, iter(["new\n"]))
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
