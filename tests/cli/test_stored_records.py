"""Stored records printed without validation are byte for byte what their validated models print."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError
from rich.console import Console

from dashtam_cli.cli import output
from dashtam_cli.cli.output import Renderer
from dashtam_cli.core import lines
from dashtam_cli.core.models import KINDS, Kind, Transaction

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import BaseModel

FORMATS = ["json", "jsonl", "csv", "table"]
DECIMALS = {"amount", "fees", "quantity", "price"}
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
NEW_YORK_SUMMER = dt.timezone(dt.timedelta(hours=-4))


def transaction(n: int, **changes: Any) -> Transaction:
    """A transaction with every field set; ``changes`` replace some."""
    fields: dict[str, Any] = {
        "id": f"t-{n}",
        "account_id": "a-1",
        "account": "****1111",
        "time": dt.datetime(2025, 1, 17, 17, 19, 49, tzinfo=dt.UTC),
        "trade_date": dt.date(2025, 1, 17),
        "settlement_date": dt.date(2025, 1, 21),
        "type": "TRADE",
        "kind": Kind.TRADE,
        "description": "BOUGHT 10 AAPL",
        "amount": Decimal("-1850.25"),
        "symbol": "AAPL",
        "quantity": Decimal(10),
        "price": Decimal("185.025"),
        "fees": Decimal("0.00"),
        "status": "VALID",
    }
    fields.update(changes)
    return Transaction(**fields)


# Every shape a stored record takes: times in UTC, with microseconds and other
# offsets; money needing two decimal places (or more kept); decimals with
# exponents and trailing zeros; null fields; text needing escapes; every kind.
VARIED: list[Transaction] = [
    transaction(1),
    transaction(2, time=dt.datetime(2025, 1, 17, 17, 19, 49, 500000, tzinfo=dt.UTC)),
    transaction(3, time=dt.datetime(2025, 1, 17, 9, 5, 0, 123, tzinfo=IST)),
    transaction(4, time=dt.datetime(2025, 7, 4, 23, 59, 59, tzinfo=NEW_YORK_SUMMER)),
    transaction(5, amount=Decimal(5), fees=Decimal("1.5")),
    transaction(6, amount=Decimal("-0"), fees=Decimal(0)),
    transaction(7, amount=Decimal("12.345"), fees=Decimal("0.001")),
    transaction(8, amount=Decimal("1E+2"), fees=Decimal("1E-7")),
    transaction(9, quantity=Decimal("1.50"), price=Decimal("0.0000001")),
    transaction(10, quantity=Decimal("-2E+3"), price=Decimal("123456789012345678901234567890.1")),
    transaction(
        11,
        trade_date=None,
        settlement_date=None,
        description=None,
        symbol=None,
        quantity=None,
        price=None,
        status=None,
    ),
    transaction(12, description='Café "déjà vu" \\ 50% — 税 🙂'),
    transaction(13, description="two\nlines\tand\x01control\u2028separator\x7f"),
    transaction(14, symbol="META  270124C00550000", description=""),
    *(transaction(20 + n, kind=Kind(kind)) for n, kind in enumerate(KINDS)),
]


def printed(fmt: str, batches: Sequence[Sequence[BaseModel | dict[str, Any] | str]]) -> str:
    """What streaming ``batches`` of transactions prints in ``fmt``."""
    stream = io.StringIO()
    renderer = Renderer(fmt=fmt, console=Console(file=stream, width=250), stream=stream)
    with renderer.streaming(Transaction) as emit:
        for batch in batches:
            emit(batch)
    return stream.getvalue()


@pytest.mark.parametrize("fmt", FORMATS)
def test_stored_text_prints_as_the_validated_model(fmt: str) -> None:
    """The JSON text each record was stored as prints exactly what the model prints."""
    stored = [model.model_dump_json() for model in VARIED]
    assert printed(fmt, [stored]) == printed(fmt, [VARIED])


@pytest.mark.parametrize("fmt", FORMATS)
def test_stored_objects_print_as_the_validated_model(fmt: str) -> None:
    """The parsed JSON object of each stored record prints exactly what the model prints."""
    stored = [json.loads(model.model_dump_json()) for model in VARIED]
    assert printed(fmt, [stored]) == printed(fmt, [VARIED])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_record_stored_before_kinds_prints_as_its_model(fmt: str) -> None:
    """A record without ``kind`` gets it last (as the query adds it): the columns keep their order."""
    records = []
    for model in VARIED:
        record = json.loads(model.model_dump_json(exclude={"kind"}))
        record["kind"] = model.kind.value
        records.append(record)
    assert list(records[0])[-1] == "kind"
    assert printed(fmt, [records]) == printed(fmt, [VARIED])


@pytest.mark.parametrize("fmt", FORMATS)
def test_models_texts_and_objects_mix_in_one_stream(fmt: str) -> None:
    """A stream of batches mixing the three kinds of record prints as the models would."""
    mixed: list[BaseModel | dict[str, Any] | str] = []
    for n, model in enumerate(VARIED):
        text = model.model_dump_json()
        mixed.append((model, text, json.loads(text))[n % 3])
    assert printed(fmt, [mixed[:5], mixed[5:]]) == printed(fmt, [VARIED])


def test_the_fast_ways_are_taken_for_what_dashtam_stores() -> None:
    """Each varied record is printed without pydantic, from its text or its object.

    Except decimals written with an exponent (``1E+2``), rare, which pydantic
    reads; and a text with an escaped character goes the parsed way. So a
    regression that sends every record to validation is seen here, not only
    as a slower benchmark.
    """
    plain = lines.Plain.of(Transaction)
    assert plain is not None
    fields = list(Transaction.model_fields)
    exact = [model for model in VARIED if "E" not in model.model_dump_json(include=DECIMALS)]
    assert len(exact) == len(VARIED) - 3
    for model in exact:
        text = model.model_dump_json()
        assert plain.row(json.loads(text)) == output._row(model, fields), text
        if "\\" in text:
            continue
        converter = lines.line_of(Transaction)
        assert converter is not None
        line = converter.line(text)
        assert line is not None, text
        assert json.loads(line) == output._row(model, fields)
    unescaped = [m for m in exact if "\\" not in m.model_dump_json()]
    assert len(unescaped) == len(exact) - 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 12.5),  # a JSON number, not the string dashtam writes
        ("amount", "0012.50"),  # a leading zero: its decimal prints otherwise
        ("fees", " 1.00"),
        ("time", "2025-01-17T17:19:49.000000Z"),  # isoformat leaves out zero microseconds
        ("time", "2025-01-17 17:19:49Z"),
        ("time", 1737134389),  # a timestamp
        ("trade_date", "2025-01-17T00:00:00Z"),
        ("quantity", "1e2"),
    ],
)
def test_other_forms_go_through_pydantic(field: str, value: object) -> None:
    """A value not in the stored form is validated: printed as the model pydantic makes of it."""
    record = json.loads(transaction(1).model_dump_json())
    record[field] = value
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    converter = lines.line_of(Transaction)
    assert converter is not None
    assert converter.line(text) is None
    plain = lines.Plain.of(Transaction)
    assert plain is not None
    assert plain.row(record) is None
    model = Transaction.model_validate(record)
    for fmt in FORMATS:
        assert printed(fmt, [[text]]) == printed(fmt, [[model]])
        assert printed(fmt, [[record]]) == printed(fmt, [[model]])


@pytest.mark.parametrize(
    "change",
    [
        {"extra": "field"},
        {"kind": "not-a-kind"},
        {"time": "2025-01-17T17:19:49"},  # no offset
        {"amount": None},
        {"trade_date": "2025-02-30"},
        {"account": 1111},
    ],
)
def test_what_the_model_refuses_is_refused(change: dict[str, object]) -> None:
    """A record the model would refuse is not printed: pydantic's error, as before."""
    record = json.loads(transaction(1).model_dump_json())
    record.update(change)
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    for fmt in ("json", "jsonl", "csv"):
        for item in (text, record):
            with pytest.raises((ValidationError, ValueError)):
                printed(fmt, [[item]])


def test_a_text_that_is_not_an_object_is_refused() -> None:
    """Stored text that is not a JSON object fails validation, whatever the format."""
    for fmt in FORMATS:
        with pytest.raises(ValidationError):
            printed(fmt, [["[1, 2]"]])


@pytest.mark.parametrize("fmt", FORMATS)
def test_records_stored_as_their_lines_print_as_the_validated_model(fmt: str) -> None:
    """What a sync stores now: each record's line (marked Printed) or, without one, its dump.

    Printed as it is in JSON lines, and read as any stored text otherwise:
    every format prints exactly what the models print. Decimals with an
    exponent and texts with an escaped character have no line form.
    """
    stored: list[str] = []
    for model in VARIED:
        text, form = lines.stored_form(Transaction, model.model_dump_json())
        stored.append(lines.Printed(text) if form == lines.LINE_FORM else text)
    assert sum(type(item) is lines.Printed for item in stored) == len(VARIED) - 5
    assert printed(fmt, [stored]) == printed(fmt, [VARIED])


def test_a_printed_text_is_written_as_it_is() -> None:
    """JSON lines write a Printed text without looking at it: the fast way is the one taken."""
    text = lines.Printed('{"not":"checked"}')
    assert printed("jsonl", [[text]]) == '{"not":"checked"}\n'


def test_the_line_form_is_tied_to_the_transaction_fields() -> None:
    """Form 1 is the line of these fields and kinds: changing them needs a new form number.

    Rows of form 1 are printed as stored; with a field added or changed,
    they would print without it (or with a kind no longer known). Give the new fields a new LINE_FORM (and
    have rows of older forms read as texts to check), then update this pin.
    """
    fields = [(name, str(info.annotation)) for name, info in Transaction.model_fields.items()]
    assert lines.LINE_FORM == 1
    assert fields == [
        ("id", "<class 'str'>"),
        ("account_id", "<class 'str'>"),
        ("account", "<class 'str'>"),
        ("time", "<class 'datetime.datetime'>"),
        ("trade_date", "datetime.date | None"),
        ("settlement_date", "datetime.date | None"),
        ("type", "<class 'str'>"),
        ("kind", "<enum 'Kind'>"),
        ("description", "str | None"),
        ("amount", "<class 'decimal.Decimal'>"),
        ("symbol", "str | None"),
        ("quantity", "decimal.Decimal | None"),
        ("price", "decimal.Decimal | None"),
        ("fees", "<class 'decimal.Decimal'>"),
        ("status", "str | None"),
    ]
    # A kind renamed or removed would leave form-1 rows printing a kind the model refuses.
    assert [kind.value for kind in Kind] == [
        "trade",
        "dividend",
        "interest",
        "deposit",
        "withdrawal",
        "transfer",
        "purchase",
        "payment",
        "refund",
        "fee",
        "tax",
        "adjustment",
        "other",
    ]


def _random_transaction(rng: random.Random, n: int) -> Transaction:
    """A transaction with values drawn from every form each field takes, odd ones included."""
    chars = 'aZ9 -.,:;{}[]"\\/\n\t\x00\x01\x1f\x7f\x80é—税🙂\u2028\ufeff'

    def text() -> str:
        return "".join(rng.choice(chars) if rng.random() < 0.03 else "x" for _ in range(8))

    def number() -> Decimal:
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 12)))
        value = Decimal(f"{rng.choice(['', '-'])}{digits}").scaleb(rng.randint(-9, 0))
        return value if rng.random() < 0.9 else Decimal(rng.choice(["1E+2", "-0", "0E-7", "5"]))

    zones = [dt.UTC, IST, NEW_YORK_SUMMER, dt.timezone(dt.timedelta(seconds=3725))]
    moment = dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
        seconds=rng.randint(0, 10**8), microseconds=rng.choice([0, 0, 1, 500000, 999999])
    )

    def maybe(value: object) -> object:
        return None if rng.random() < 0.2 else value

    return transaction(
        n,
        time=moment.astimezone(rng.choice(zones)),
        trade_date=maybe(moment.date()),
        settlement_date=maybe(moment.date()),
        type=text(),
        kind=rng.choice(list(Kind)),
        description=maybe(text()),
        amount=number(),
        symbol=maybe(text()),
        quantity=maybe(number()),
        price=maybe(number()),
        fees=number(),
        status=maybe(text()),
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_records_print_as_their_validated_models(fmt: str) -> None:
    """Random records, stored as a sync stores them, print as the models they validate to.

    Every odd form of each field (text needing escapes, offsets, exponents,
    nulls); both kinds of stored text are met often. The models are those of
    the dumps (pydantic's JSON keeps an offset to the minute).
    """
    rng = random.Random(20261202)  # noqa: S311 - test data, seeded to repeat
    # A table sizes its columns over every row: fewer rows keep it quick.
    models = [_random_transaction(rng, n) for n in range(600 if fmt == "table" else 3000)]
    stored: list[str] = []
    for model in models:
        text, form = lines.stored_form(Transaction, model.model_dump_json())
        stored.append(lines.Printed(text) if form == lines.LINE_FORM else text)
    taken = sum(type(item) is lines.Printed for item in stored)
    assert len(models) / 6 < taken < len(models) * 5 / 6
    validated = [Transaction.model_validate_json(model.model_dump_json()) for model in models]
    assert printed(fmt, [stored[:100], stored[100:]]) == printed(fmt, [validated])
