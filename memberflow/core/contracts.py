"""The landing contract (DESIGN §3): what each channel table delivers, and how a raw value is checked.

A contract lists a table's columns with a kind and whether the column is required, the key that identifies
a row within a partition, and the column whose local China date the row belongs to. ``coerce_value`` turns
one raw value into its typed form or names what is wrong with it; ``coerce_column`` does the same for a
whole column (Arrow for the common shapes, ``coerce_value`` for the rest), which is how extract applies it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from memberflow.core.phones import normalize_token
from memberflow.core.settings import CHINA_TZ

LOCAL_TZ = ZoneInfo(CHINA_TZ)


class Kind(StrEnum):
    TEXT = "text"  # a code or identifier: a phone written in it is replaced by its token at extract
    NOTE = "note"  # free text: a phone written in it is masked (138****1234) at extract
    TIME = "time"  # local China time unless the value carries an offset
    DATE = "date"
    AMOUNT = "amount"  # CNY, >= 0, two decimals
    QTY = "qty"  # non-negative integer
    COUNT = "count"  # non-negative integer
    BOOL = "bool"
    ENUM = "enum"
    PHONE = "phone"  # plain phone: tokenized at extract, never landed
    TOKEN = "token"  # partner HMAC of a phone, 64 hex digits


class Reason(StrEnum):
    """Why a row was quarantined. Stable codes: reports and quality suites group on them."""

    UNDECODABLE_BYTES = "undecodable_bytes"
    MALFORMED_ROW = "malformed_row"
    MISSING_REQUIRED = "missing_required"
    BAD_TIME = "bad_time"
    FUTURE_TIME = "future_time"
    BAD_DATE = "bad_date"
    BAD_AMOUNT = "bad_amount"
    NEGATIVE_QTY = "negative_qty"
    BAD_NUMBER = "bad_number"
    BAD_BOOL = "bad_bool"
    BAD_ENUM = "bad_enum"
    BAD_TOKEN = "bad_token"
    BAD_PHONE = "bad_phone"
    BAD_ID = "bad_id"
    DUPLICATE_ROW = "duplicate_row"
    DUPLICATE_KEY_CONFLICT = "duplicate_key_conflict"


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind = Kind.TEXT
    required: bool = False
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableContract:
    channel: str
    table: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    date_column: str | None  # whose local date is the row's ``local_date``; None: the partition date
    # (value column, type column, type value): a column that holds a plain phone only on rows of that type,
    # e.g. consent events given by SMS reply carry id_type=mobile and the number in id_value.
    phone_when: tuple[str, str, str] | None = None
    # (value column, type column): a column holding an identifier of the type the other column names; its
    # value must be written as One ID keys that type (ID_FORMS), or the row could never match a member.
    id_of_type: tuple[str, str] | None = None
    # False: the valid rows land whatever share of the partition is bad (the bad ones are quarantined and
    # reported). Consent: an opt-out is never held back by other rows' faults.
    all_or_nothing: bool = True

    @property
    def name(self) -> str:
        return f"{self.channel}.{self.table}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


def _c(name: str, kind: Kind = Kind.TEXT, required: bool = False, values: tuple[str, ...] = ()) -> Column:
    return Column(name, kind, required, values)


# How an identifier named by its type is written: the form One ID keys it by (types not listed: any text).
# An openid is only unique within its mini-program, so One ID keys it as platform:app_id:openid; a
# livestream viewer's as platform:live:openid (wechat_channels:live:..., douyin:live:...).
ID_FORMS: dict[str, tuple[re.Pattern[str], str]] = {
    "openid": (
        re.compile(r"(wechat|alipay|douyin|wechat_channels):[^:\s]+:\S+"),
        "platform:app_id:openid (wechat:wx8a1b:o6_bm...), or platform:live:openid for a livestream viewer",
    ),
}

# The channels members come through, as the warehouse names them (dim_member.acquisition_channel; the
# vocabulary module lists the same, with labels): what the marketing spend file books its costs against.
SPEND_CHANNELS = ("wecom", "miniprogram", "livestream", "store_pos", "ecommerce", "insurance")
# who serves members one-on-one: 健康管理师 and 导购 (the staff directory's roles)
STAFF_ROLES = ("health_manager", "shop_assistant")

R = True  # readability: _c("x", Kind.TEXT, R) marks a required column

# fmt: off
CONTRACTS: tuple[TableContract, ...] = (
    TableContract(
        "wecom", "contacts",
        (
            _c("external_userid", required=R), _c("unionid"), _c("staff_userid", required=R),
            _c("add_time", Kind.TIME, R), _c("add_way", Kind.NOTE), _c("state", Kind.NOTE),
            _c("remark_mobile", Kind.PHONE),
            _c("deleted_time", Kind.TIME), _c("updated_at", Kind.TIME, R),
        ),
        key=("external_userid", "staff_userid", "updated_at"),
        date_column="updated_at",
    ),
    TableContract(
        "wecom", "group_events",
        (
            _c("event_id", required=R), _c("external_userid", required=R), _c("chat_id", required=R),
            _c("event_type", Kind.ENUM, R, ("join", "leave", "checkin", "message")),
            _c("checkin_topic", Kind.NOTE),
            _c("event_time", Kind.TIME, R),
        ),
        key=("event_id",),
        date_column="event_time",
    ),
    TableContract(
        "miniprogram", "users",
        (
            _c("platform", Kind.ENUM, R, ("wechat", "alipay", "douyin")), _c("app_id", required=R),
            _c("openid", required=R), _c("unionid"), _c("mobile", Kind.PHONE),
            _c("register_time", Kind.TIME, R), _c("updated_at", Kind.TIME, R),
        ),
        key=("platform", "app_id", "openid", "updated_at"),
        date_column="updated_at",
    ),
    TableContract(
        "miniprogram", "events",
        (
            _c("event_id", required=R), _c("platform", Kind.ENUM, R, ("wechat", "alipay", "douyin")),
            _c("app_id", required=R), _c("openid", required=R),
            _c("event_type", Kind.ENUM, R,
               ("visit", "login", "article_view", "assessment", "coupon_claim", "add_cart", "share")),
            _c("topic", Kind.NOTE), _c("event_time", Kind.TIME, R),
        ),
        key=("event_id",),
        date_column="event_time",
    ),
    TableContract(
        "ecommerce", "orders",
        (
            _c("platform", Kind.ENUM, R, ("tmall", "jd", "meituan", "eleme", "pdd")),
            _c("order_id", required=R), _c("buyer_id", required=R), _c("mobile_masked", Kind.NOTE),
            _c("member_mobile", Kind.PHONE), _c("order_time", Kind.TIME, R),
            _c("status", Kind.ENUM, R, ("paid", "shipped", "completed", "refunded", "cancelled")),
            _c("amount_cny", Kind.AMOUNT, R), _c("updated_at", Kind.TIME, R),
        ),
        key=("platform", "order_id", "updated_at"),
        date_column="updated_at",
    ),
    TableContract(
        "ecommerce", "order_items",
        (
            _c("platform", Kind.ENUM, R, ("tmall", "jd", "meituan", "eleme", "pdd")),
            _c("order_id", required=R), _c("sku_id", required=R), _c("category", required=R),
            _c("qty", Kind.QTY, R), _c("unit_price_cny", Kind.AMOUNT, R),
        ),
        key=("platform", "order_id", "sku_id"),
        date_column=None,
    ),
    TableContract(
        "store_pos", "members",
        (
            _c("card_no", required=R), _c("mobile", Kind.PHONE, R), _c("store_id", required=R),
            _c("join_time", Kind.TIME, R), _c("birth_date", Kind.DATE), _c("updated_at", Kind.TIME, R),
        ),
        key=("card_no", "updated_at"),
        date_column="updated_at",
    ),
    TableContract(
        "store_pos", "orders",
        (
            _c("store_id", required=R), _c("receipt_no", required=R), _c("card_no"),
            _c("order_time", Kind.TIME, R), _c("amount_cny", Kind.AMOUNT, R),
            _c("pharmacist_consult", Kind.BOOL),
        ),
        key=("store_id", "receipt_no"),
        date_column="order_time",
    ),
    TableContract(
        "store_pos", "order_items",
        (
            _c("store_id", required=R), _c("receipt_no", required=R), _c("sku_id", required=R),
            _c("category", required=R), _c("qty", Kind.QTY, R), _c("unit_price_cny", Kind.AMOUNT, R),
        ),
        key=("store_id", "receipt_no", "sku_id"),
        date_column=None,
    ),
    TableContract(
        "livestream", "views",
        (
            _c("session_id", required=R), _c("platform", Kind.ENUM, R, ("wechat_channels", "douyin")),
            _c("viewer_openid", required=R), _c("viewer_unionid"), _c("join_time", Kind.TIME, R),
            _c("leave_time", Kind.TIME, R), _c("comments", Kind.COUNT), _c("product_clicks", Kind.COUNT),
        ),
        key=("session_id", "platform", "viewer_openid", "join_time"),
        date_column="join_time",
    ),
    TableContract(
        "insurance", "policies",
        (
            _c("partner", required=R), _c("policy_id", required=R),
            _c("holder_mobile_hmac", Kind.TOKEN, R), _c("product_code", required=R),
            _c("start_date", Kind.DATE, R), _c("end_date", Kind.DATE), _c("status", required=R),
            _c("updated_at", Kind.TIME, R),
        ),
        key=("partner", "policy_id", "updated_at"),
        date_column="updated_at",
    ),
    TableContract(
        "consent", "events",
        (
            _c("event_id", required=R),
            _c("id_type", Kind.ENUM, R, ("mobile", "unionid", "external_userid", "card_no", "openid")),
            _c("id_value", required=R),
            _c("scope", Kind.ENUM, R, ("marketing", "personalization", "health_data")),
            _c("granted", Kind.BOOL, R), _c("event_time", Kind.TIME, R), _c("source", Kind.NOTE),
        ),
        key=("event_id",),
        date_column="event_time",
        phone_when=("id_value", "id_type", "mobile"),
        id_of_type=("id_value", "id_type"),
        all_or_nothing=False,
    ),
    # What acquiring members cost: the marketing team's spend lines (ads, QR materials and staff bonuses,
    # livestream production, partner fees) per day and acquisition channel, optionally per QR / channel
    # code (the `state` a WeCom contact was added with). A corrected line is sent again with a later
    # updated_at; the latest version counts. Read by the channel economics report (CAC, LTV).
    TableContract(
        "marketing", "costs",
        (
            _c("cost_id", required=R), _c("spend_date", Kind.DATE, R),
            _c("channel", Kind.ENUM, R, SPEND_CHANNELS), _c("source_code", Kind.NOTE),
            _c("campaign", Kind.NOTE), _c("amount_cny", Kind.AMOUNT, R), _c("updated_at", Kind.TIME, R),
        ),
        key=("cost_id", "updated_at"),
        date_column="updated_at",
    ),
    # The staff directory (WeCom's address book, exported daily): who serves members, in which role and
    # store. A day's file holds the changes (a hire, a move, a new role, a departure as active = false),
    # empty on a quiet day; the latest version of each staff member counts. Store managers' tokens reach
    # the active staff of their store.
    TableContract(
        "wecom", "staff",
        (
            _c("userid", required=R), _c("role", Kind.ENUM, R, STAFF_ROLES), _c("store_id"),
            _c("active", Kind.BOOL, R), _c("updated_at", Kind.TIME, R),
        ),
        key=("userid", "updated_at"),
        date_column="updated_at",
    ),
)
# fmt: on

BY_NAME: dict[str, TableContract] = {c.name: c for c in CONTRACTS}


def get_contract(channel: str, table: str) -> TableContract:
    try:
        return BY_NAME[f"{channel}.{table}"]
    except KeyError:
        known = ", ".join(sorted(BY_NAME))
        raise KeyError(f"no landing contract for {channel}.{table}; known tables: {known}") from None


# --- value coercion --------------------------------------------------------------------------------------

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CENT = Decimal("0.01")
# A single line item or order above this is not a plausible member purchase in CNY; an export in cents
# or a typo shows up here. The quality gates hold the finer band.
MAX_AMOUNT_CNY = Decimal("1000000")
MAX_COUNT = 2**63 - 1  # a quantity or count lands as a 64-bit integer


class BadValue(ValueError):
    def __init__(self, reason: Reason, column: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {column}{' ' + detail if detail else ''}")
        self.reason = reason
        self.column = column
        self.detail = detail


def parse_time(text: str) -> datetime:
    """Parse a time; naive values are China local time. Returns an aware UTC datetime."""
    value = datetime.fromisoformat(text.strip().replace("/", "-"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=LOCAL_TZ)
    return value.astimezone(UTC)


def coerce_value(column: Column, raw: str | None, latest_utc: datetime) -> object:
    """Turn one raw text value into its typed value, or raise BadValue naming the reason.

    ``latest_utc`` is the end of the run's local day: a time after it is in the future.
    Missing optional values become None; PHONE values are returned as text for the caller to tokenize.
    """
    text = None if raw is None else raw.strip()
    if text == "" or text is None:
        if column.required:
            raise BadValue(Reason.MISSING_REQUIRED, column.name)
        return None
    kind = column.kind
    if kind in (Kind.TEXT, Kind.NOTE, Kind.PHONE):
        return text
    if kind is Kind.ENUM:
        if text not in column.values:
            raise BadValue(Reason.BAD_ENUM, column.name, f"{text!r} not in {list(column.values)}")
        return text
    if kind is Kind.TIME:
        try:
            value = parse_time(text)
        except ValueError:
            raise BadValue(Reason.BAD_TIME, column.name, repr(text)) from None
        if value > latest_utc:
            raise BadValue(Reason.FUTURE_TIME, column.name, f"{value.isoformat()} after run date")
        return value
    if kind is Kind.DATE:
        try:
            if not _DATE_RE.fullmatch(text):
                raise ValueError(text)
            return date.fromisoformat(text)
        except ValueError:
            raise BadValue(Reason.BAD_DATE, column.name, repr(text)) from None
    if kind is Kind.AMOUNT:
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise BadValue(Reason.BAD_AMOUNT, column.name, repr(text)) from None
        if not value.is_finite() or value < 0 or value > MAX_AMOUNT_CNY:
            raise BadValue(Reason.BAD_AMOUNT, column.name, repr(text))
        return value.quantize(_CENT, rounding=ROUND_HALF_UP)
    if kind in (Kind.QTY, Kind.COUNT):
        try:
            value = int(text)
        except ValueError:
            raise BadValue(Reason.BAD_NUMBER, column.name, repr(text)) from None
        if value < 0:
            reason = Reason.NEGATIVE_QTY if kind is Kind.QTY else Reason.BAD_NUMBER
            raise BadValue(reason, column.name, repr(text))
        if value > MAX_COUNT:
            raise BadValue(Reason.BAD_NUMBER, column.name, f"{text!r} is too large")
        return value
    if kind is Kind.BOOL:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise BadValue(Reason.BAD_BOOL, column.name, repr(text))
    if kind is Kind.TOKEN:
        token = normalize_token(text)
        if token is None:
            raise BadValue(Reason.BAD_TOKEN, column.name, "not a 64-digit hex HMAC")
        return token
    raise AssertionError(f"unhandled kind {kind}")


# --- whole columns at once -------------------------------------------------------------------------------
#
# Extract checks a partition a column at a time: the common shapes of each kind are parsed by Arrow, and
# every other value goes through ``coerce_value``, so a column's result is exactly what ``coerce_value``
# gives value by value, at a fraction of its cost on large partitions.

_MICROS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# China has kept UTC+8 without daylight saving since 1992: local times from then on convert by the offset;
# earlier ones (and every value of another shape) take coerce_value's zoneinfo path.
_FIXED_OFFSET_SINCE = datetime(1992, 1, 1, tzinfo=LOCAL_TZ)
_CHINA_OFFSET_US = 8 * 3600 * _MICROS
# Arrow's strptime rolls an impossible date over (February 30 → March 2): the shapes bound every field, and
# the parsed day of the month is compared with the written one.
_DATE_SHAPE = r"^[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
_TIME_SHAPE = _DATE_SHAPE + r"[ T]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(Z|\+08:00)?$"
_AMOUNT_SHAPE = r"^\d{1,7}(\.\d{1,2})?$"
_COUNT_SHAPE = r"^\d{1,18}$"
_BOOLS = {**dict.fromkeys(_TRUE, True), **dict.fromkeys(_FALSE, False)}
ARROW_TYPES = {
    Kind.TEXT: pa.string(),
    Kind.NOTE: pa.string(),
    Kind.ENUM: pa.string(),
    Kind.PHONE: pa.string(),
    Kind.TOKEN: pa.string(),
    Kind.TIME: pa.timestamp("us", tz="UTC"),
    Kind.DATE: pa.date32(),
    Kind.AMOUNT: pa.decimal128(14, 2),
    Kind.QTY: pa.int64(),
    Kind.COUNT: pa.int64(),
    Kind.BOOL: pa.bool_(),
}


def micros(value: datetime) -> int:
    """An aware datetime as microseconds since the epoch (exact, unlike a float timestamp)."""
    return (value - _EPOCH) // timedelta(microseconds=1)


@dataclass
class CoercedColumn:
    """One column of a partition, typed (``values``, of ``ARROW_TYPES[kind]``; null where the value is
    missing or bad), and the rows whose value is bad, by position."""

    values: pa.Array
    bad: dict[int, BadValue]


def coerce_column(column: Column, raw: Sequence[str | None], latest_utc: datetime) -> CoercedColumn:
    """``coerce_value`` over a whole column: the same typed values and the same BadValue per row."""
    text = [None if v is None else (v.strip() or None) for v in raw]
    kind = column.kind
    bad: dict[int, BadValue] = {}
    if column.required:
        bad.update(
            (i, BadValue(Reason.MISSING_REQUIRED, column.name)) for i, v in enumerate(text) if v is None
        )
    if kind in (Kind.TEXT, Kind.NOTE, Kind.PHONE):
        return CoercedColumn(pa.array(text, pa.string()), bad)
    if kind is Kind.ENUM:
        allowed = frozenset(column.values)
        for i, v in enumerate(text):
            if v is not None and v not in allowed:
                bad[i] = BadValue(Reason.BAD_ENUM, column.name, f"{v!r} not in {list(column.values)}")
        return CoercedColumn(_without(pa.array(text, pa.string()), bad), bad)
    if kind is Kind.TOKEN:
        tokens = [None if v is None else normalize_token(v) for v in text]
        for i, (v, token) in enumerate(zip(text, tokens, strict=True)):
            if v is not None and token is None:
                bad[i] = BadValue(Reason.BAD_TOKEN, column.name, "not a 64-digit hex HMAC")
        return CoercedColumn(pa.array(tokens, pa.string()), bad)
    if kind is Kind.BOOL:
        flags = [None if v is None else _BOOLS.get(v.lower()) for v in text]
        fallback = [
            i for i, (v, f) in enumerate(zip(text, flags, strict=True)) if v is not None and f is None
        ]
        return _finish(column, pa.array(flags, pa.bool_()), fallback, raw, latest_utc, bad)
    strings = pa.array(text, pa.string())
    if kind is Kind.TIME:
        fast = _fast_times(strings)
        future = pc.fill_null(pc.greater(fast, micros(latest_utc)), False)
        for i in np.flatnonzero(future.to_numpy(zero_copy_only=False)):
            value = _EPOCH + timedelta(microseconds=fast[int(i)].as_py())
            bad[int(i)] = BadValue(Reason.FUTURE_TIME, column.name, f"{value.isoformat()} after run date")
        typed = fast
    elif kind is Kind.DATE:
        shaped = pc.if_else(pc.match_substring_regex(strings, _DATE_SHAPE + "$"), strings, None)
        parsed = pc.strptime(shaped, format="%Y-%m-%d", unit="s", error_is_null=True)
        typed = pc.if_else(_same_day(parsed, shaped), parsed, None).cast(pa.date32())
    elif kind is Kind.AMOUNT:
        shaped = pc.if_else(pc.match_substring_regex(strings, _AMOUNT_SHAPE), strings, None)
        amounts = pc.cast(shaped, pa.decimal128(14, 2))
        typed = pc.if_else(
            pc.less_equal(amounts, pa.scalar(MAX_AMOUNT_CNY, pa.decimal128(14, 2))), amounts, None
        )
    else:  # QTY, COUNT
        shaped = pc.if_else(pc.match_substring_regex(strings, _COUNT_SHAPE), strings, None)
        typed = pc.cast(shaped, pa.int64())
    unparsed = pc.and_(pc.is_valid(strings), pc.is_null(typed))
    fallback = [int(i) for i in np.flatnonzero(unparsed.to_numpy(zero_copy_only=False)) if int(i) not in bad]
    return _finish(column, typed, fallback, raw, latest_utc, bad)


def _fast_times(strings: pa.Array) -> pa.Array:
    """Microseconds since the epoch (int64) of the values written ``YYYY-MM-DD hh:mm:ss`` (or with a ``T``)
    from 1992 on, as China local time or with ``+08:00`` or ``Z``; null for every other value."""
    shaped = pc.if_else(pc.match_substring_regex(strings, _TIME_SHAPE), strings, None)
    written = pc.replace_substring(pc.utf8_slice_codeunits(shaped, 0, 19), "T", " ")
    parsed = pc.strptime(written, format="%Y-%m-%d %H:%M:%S", unit="us", error_is_null=True)
    local = pc.if_else(_same_day(parsed, written), parsed.cast(pa.int64()), None)
    since = micros(_FIXED_OFFSET_SINCE.replace(tzinfo=UTC))
    offset = pc.if_else(pc.ends_with(shaped, "Z"), 0, _CHINA_OFFSET_US)
    return pc.subtract(pc.if_else(pc.greater_equal(local, since), local, None), offset)


def local_dates(times: pa.Array) -> pa.Array:
    """The China local date of each UTC time (none null): by the fixed offset from 1992 on, by zoneinfo
    before."""
    instants = times.cast(pa.int64()).to_numpy(zero_copy_only=False)
    dates = pa.array(((instants + _CHINA_OFFSET_US) // (86_400 * _MICROS)).astype(np.int32), pa.date32())
    early = np.flatnonzero(instants < micros(_FIXED_OFFSET_SINCE))
    return patched(dates, {int(i): times[int(i)].as_py().astimezone(LOCAL_TZ).date() for i in early})


def _same_day(parsed: pa.Array, written: pa.Array) -> pa.Array:
    """Whether strptime kept the day of the month written (characters 9 and 10): not a rolled-over date."""
    return pc.equal(pc.day(parsed), pc.cast(pc.utf8_slice_codeunits(written, 8, 10), pa.int64()))


def _finish(
    column: Column,
    typed: pa.Array,
    fallback: list[int],
    raw: Sequence[str | None],
    latest_utc: datetime,
    bad: dict[int, BadValue],
) -> CoercedColumn:
    """Run ``coerce_value`` on the values the fast path did not take, and type the column."""
    fixes: dict[int, object] = {}
    for i in fallback:
        try:
            value = coerce_value(column, raw[i], latest_utc)
        except BadValue as exc:
            bad[i] = exc
        else:
            fixes[i] = micros(value) if column.kind is Kind.TIME else value
    return CoercedColumn(_without(patched(typed, fixes), bad).cast(ARROW_TYPES[column.kind]), bad)


def patched(values: pa.Array, fixes: dict[int, object]) -> pa.Array:
    """``values`` with the values at some positions replaced (position → new value)."""
    if not fixes:
        return values
    positions = sorted(fixes)
    mask = np.zeros(len(values), dtype=bool)
    mask[positions] = True
    replacements = pa.array([fixes[i] for i in positions], values.type)
    return pc.replace_with_mask(values, pa.array(mask), replacements)


def _without(values: pa.Array, bad: dict[int, BadValue]) -> pa.Array:
    """``values`` with the bad rows' values nulled."""
    if not bad:
        return values
    mask = np.zeros(len(values), dtype=bool)
    mask[list(bad)] = True
    return pc.if_else(pa.array(mask), pa.nulls(len(values), values.type), values)
