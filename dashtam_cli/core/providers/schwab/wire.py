"""Schwab's transaction list decoded straight into the fields dashtam reads.

``json.loads`` builds a dict for every object of an answer, with every field
of it, most of which dashtam never reads, and calls back into Python for each
amount. msgspec decodes the same bytes into these few slotted records in C,
skipping the other fields: about a third of the time, and fewer objects for
the cycle collector (``gc=False``: decoded JSON holds no cycles).

Only the *shape* is typed here (a list of objects, ``transferItems`` a list of
objects, ``instrument`` an object). Every value stays what ``json.loads`` with
``parse_float=Decimal`` gives: amounts as Decimal or int, text as str, and
anything odd (an object where text belongs) as it came, so the mapping applies
its own checks to it exactly as to a parsed dict. A body of another shape, or
that msgspec refuses, decodes to None: the caller reads it the general way,
which names what is wrong with it.
"""

from __future__ import annotations

import decimal
from typing import Any, Final

import msgspec

__all__ = [
    "RawTransaction",
    "WireInstrument",
    "WireItem",
    "WireTransaction",
    "decode_transactions",
]


class WireInstrument(msgspec.Struct, rename="camel", gc=False):
    """The instrument of a transfer item."""

    asset_type: Any = None
    symbol: Any = None
    description: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The instrument as ``json.loads`` gives it, absent fields as None."""
        return {
            "assetType": self.asset_type,
            "symbol": self.symbol,
            "description": self.description,
        }


class WireItem(msgspec.Struct, rename="camel", gc=False):
    """One line of a transaction's ``transferItems``."""

    instrument: WireInstrument | None = None
    amount: Any = None
    cost: Any = None
    price: Any = None
    fee_type: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The line as ``json.loads`` gives it, absent fields as None (read alike by ``.get``)."""
        instrument = self.instrument
        return {
            "instrument": None if instrument is None else instrument.as_dict(),
            "amount": self.amount,
            "cost": self.cost,
            "price": self.price,
            "feeType": self.fee_type,
        }


class WireTransaction(msgspec.Struct, rename="camel", gc=False):
    """One transaction, with only the fields the mapping reads."""

    activity_id: Any = None
    time: Any = None
    status: Any = None
    trade_date: Any = None
    settlement_date: Any = None
    type: Any = None
    description: Any = None
    net_amount: Any = None
    transfer_items: list[WireItem] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The transaction as ``json.loads`` gives it, for the field-by-field readers.

        Those readers read no other field (a test holds them to it), and an
        absent field reads as None, as here.
        """
        items = self.transfer_items
        return {
            "activityId": self.activity_id,
            "time": self.time,
            "status": self.status,
            "tradeDate": self.trade_date,
            "settlementDate": self.settlement_date,
            "type": self.type,
            "description": self.description,
            "netAmount": self.net_amount,
            "transferItems": None if items is None else [item.as_dict() for item in items],
        }


# A transaction as the client returns it: decoded by shape, or parsed by json.loads.
RawTransaction = dict[str, Any] | WireTransaction

_DECODER: Final = msgspec.json.Decoder(list[WireTransaction], float_hook=decimal.Decimal)


def decode_transactions(data: bytes) -> list[WireTransaction] | None:
    """The transactions of a list answer, or None when the body is not of that shape or not JSON.

    The caller bounds the body's nesting first.
    """
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError:  # ValidationError (another shape) is one of these
        return None
