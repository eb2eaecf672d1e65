from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from memberflow.core.contracts import (
    CONTRACTS,
    BadValue,
    Column,
    Kind,
    Reason,
    coerce_value,
    get_contract,
    parse_time,
)

LATEST = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)  # end of 2026-03-02 in China


def test_all_fourteen_landing_tables_have_contracts():
    # the twelve channel tables of DESIGN §3, the marketing spend file the channel economics report reads,
    # and the staff directory store managers' access follows
    assert len(CONTRACTS) == 14 and "wecom.staff" in {c.name for c in CONTRACTS}
    assert {c.channel for c in CONTRACTS} == {
        "wecom",
        "miniprogram",
        "ecommerce",
        "store_pos",
        "livestream",
        "insurance",
        "consent",
        "marketing",
    }
    # spend is booked against the channels members are acquired through
    from memberflow.core.contracts import SPEND_CHANNELS
    from memberflow.core.vocab import ACQUISITION_CHANNELS

    spend = get_contract("marketing", "costs").column("channel").values
    assert spend == SPEND_CHANNELS == ACQUISITION_CHANNELS
    for contract in CONTRACTS:
        assert set(contract.key) <= set(contract.column_names)
        assert set(contract.key) <= set(contract.required), contract.name


def test_unknown_table_names_the_known_ones():
    with pytest.raises(KeyError, match=r"wecom\.contacts"):
        get_contract("wecom", "nope")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01 08:00:00", datetime(2026, 3, 1, 0, 0, tzinfo=UTC)),
        ("2026-03-01T08:00:00", datetime(2026, 3, 1, 0, 0, tzinfo=UTC)),
        ("2026/03/01 08:00:00", datetime(2026, 3, 1, 0, 0, tzinfo=UTC)),
        ("2026-03-01T08:00:00+08:00", datetime(2026, 3, 1, 0, 0, tzinfo=UTC)),
        ("2026-03-01T00:00:00Z", datetime(2026, 3, 1, 0, 0, tzinfo=UTC)),
        ("2026-03-01 01:30:00", datetime(2026, 2, 28, 17, 30, tzinfo=UTC)),
    ],
)
def test_times_are_china_local_unless_they_carry_an_offset(text, expected):
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    ("column", "raw", "expected"),
    [
        (Column("t", Kind.TIME), "2026-03-02 23:59:59", datetime(2026, 3, 2, 15, 59, 59, tzinfo=UTC)),
        (Column("a", Kind.AMOUNT), "89", Decimal("89.00")),
        (Column("a", Kind.AMOUNT), " 12.345 ", Decimal("12.35")),
        (Column("q", Kind.QTY), "3", 3),
        (Column("b", Kind.BOOL), "TRUE", True),
        (Column("b", Kind.BOOL), "0", False),
        (Column("d", Kind.DATE), "1980-02-29", date(1980, 2, 29)),
        (Column("e", Kind.ENUM, values=("x", "y")), "y", "y"),
        (Column("k", Kind.TOKEN), "AB" * 32, "ab" * 32),
        (Column("o", Kind.TEXT), "", None),
        (Column("o", Kind.TEXT), None, None),
    ],
)
def test_coercion(column, raw, expected):
    assert coerce_value(column, raw, LATEST) == expected


@pytest.mark.parametrize(
    ("column", "raw", "reason"),
    [
        (Column("t", Kind.TIME, required=True), "", Reason.MISSING_REQUIRED),
        (Column("t", Kind.TIME, required=True), None, Reason.MISSING_REQUIRED),
        (Column("t", Kind.TIME), "2026-02-30 10:00:00", Reason.BAD_TIME),
        (Column("t", Kind.TIME), "yesterday", Reason.BAD_TIME),
        (Column("t", Kind.TIME), "2026-03-03 00:00:01", Reason.FUTURE_TIME),
        (Column("a", Kind.AMOUNT), "12,30元", Reason.BAD_AMOUNT),
        (Column("a", Kind.AMOUNT), "-5", Reason.BAD_AMOUNT),
        (Column("a", Kind.AMOUNT), "NaN", Reason.BAD_AMOUNT),
        (Column("a", Kind.AMOUNT), "99999999", Reason.BAD_AMOUNT),
        (Column("q", Kind.QTY), "-1", Reason.NEGATIVE_QTY),
        (Column("q", Kind.QTY), "1.5", Reason.BAD_NUMBER),
        (Column("c", Kind.COUNT), "-2", Reason.BAD_NUMBER),
        (Column("b", Kind.BOOL), "maybe", Reason.BAD_BOOL),
        (Column("d", Kind.DATE), "1980-2-3", Reason.BAD_DATE),
        (Column("d", Kind.DATE), "1981-02-29", Reason.BAD_DATE),
        (Column("e", Kind.ENUM, values=("x",)), "z", Reason.BAD_ENUM),
        (Column("k", Kind.TOKEN), "abc", Reason.BAD_TOKEN),
    ],
)
def test_bad_values_name_their_reason(column, raw, reason):
    with pytest.raises(BadValue) as info:
        coerce_value(column, raw, LATEST)
    assert info.value.reason is reason
    assert info.value.column == column.name


# Values of every shape the column path treats apart: the common shapes Arrow parses, the edges of those
# shapes (rolled-over dates, hour 24, leap days, offsets, years before China's fixed offset), and the rest.
TRICKY = {
    Kind.TIME: [
        "2026-03-01 08:00:00",
        "2026-03-01T08:00:00",
        "2026/03/01 08:00:00",
        "2026-03-01T08:00:00+08:00",
        "2026-03-01T00:00:00Z",
        "2026-03-01T08:00:00+09:00",
        "2026-03-01 08:00:00.250",
        " 2026-03-01 08:00:00 ",
        "2026-02-30 10:00:00",
        "2025-02-29 10:00:00",
        "2024-02-29 10:00:00",
        "2026-03-01 24:00:00",
        "2026-03-01 23:59:60",
        "2026-03-02 23:59:59",
        "2026-03-03 00:00:01",
        "1988-06-01 12:00:00",
        "1991-12-31 23:59:59",
        "0999-01-01 00:00:00",
        "２０２６-03-01 08:00:00",
        "yesterday",
        "",
        None,
    ],
    Kind.DATE: ["1980-02-29", "1981-02-29", "1980-2-3", "2026-13-01", "0001-01-01", " 2026-03-01", "x", None],
    Kind.AMOUNT: [
        "89",
        " 12.345 ",
        "12.3",
        "0.05",
        "1000000",
        "1000000.01",
        "99999999",
        "-5",
        "NaN",
        "1e3",
        "12,30元",
        "007.10",
        ".5",
        "5.",
        "１２",
        None,
    ],
    Kind.QTY: ["3", "007", "-1", "1.5", "+2", "３", "99999999999999999999", "", None],
    Kind.COUNT: ["0", "-2", "12", "x", None],
    Kind.BOOL: ["TRUE", "0", "Yes", " f ", "maybe", "", None],
    Kind.TOKEN: ["AB" * 32, " " + "ab" * 32, "abc", None],
    Kind.ENUM: ["x", " y ", "z", "", None],
    Kind.TEXT: [" a ", "", None, "  "],
}


@pytest.mark.parametrize("kind", list(TRICKY))
@pytest.mark.parametrize("required", [True, False])
def test_a_column_is_coerced_as_its_values_are_one_by_one(kind, required):
    from memberflow.core.contracts import coerce_column

    column = Column("c", kind, required, values=("x", "y") if kind is Kind.ENUM else ())
    raw = TRICKY[kind]
    coerced = coerce_column(column, raw, LATEST)
    for i, value in enumerate(raw):
        try:
            expected = coerce_value(column, value, LATEST)
        except BadValue as bad:
            assert i in coerced.bad, (value, bad)
            assert (coerced.bad[i].reason, coerced.bad[i].detail) == (bad.reason, bad.detail), value
            assert coerced.values[i].as_py() is None
            continue
        assert i not in coerced.bad, (value, coerced.bad.get(i))
        assert coerced.values[i].as_py() == expected, value
