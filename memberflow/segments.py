"""Segments: declarative rules over a member's tags, features and scores (DESIGN §7).

``load_segments`` reads ``memberflow/segments.yml`` (or ``MEMBERFLOW_SEGMENTS``) and validates it against the
fields a rule can use, so a typo names the file, the segment and the field before anything runs.
``member_profiles`` reads one row per member for a delivery date from the warehouse (``kept_profiles``: once
per build and scoring, for the day's several readers), and ``assign`` puts each member in at most one
segment: the matching one with the smallest priority number.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memberflow.core.settings import REPO_ROOT, ConfigError, Settings, get_settings
from memberflow.core.vocab import (
    ACQUISITION_CHANNELS,
    CATEGORIES,
    CONSUMABLES,
    INTERESTS,
    MODELS,
    OUTREACH_CHANNELS,
    TAG_VALUES,
)
from memberflow.warehouse import published_marker, table_names

DEFAULT_SEGMENTS = Path(__file__).with_name("segments.yml")
CHANNELS = OUTREACH_CHANNELS
FEATURES_YML = REPO_ROOT / "dbt_project" / "models" / "marts" / "member" / "_member_features.yml"

# Tag vocabularies: the ones the marts quality gate holds the warehouse to.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "lifecycle_stage": TAG_VALUES["lifecycle"],
    "funnel_stage": TAG_VALUES["funnel_stage"],
    "value_tier": TAG_VALUES["value_tier"],
    "acquisition_channel": ACQUISITION_CHANNELS,
    "interests": INTERESTS,
    "next_due_category": CONSUMABLES,
}
LIST_FIELDS = ("interests",)
PROFILE_EXTRA = (
    "interests",
    "days_until_next_due",
    "next_due_category",
    "staff_owner",
    "has_phone",
    "has_miniprogram",
    "has_wecom",
    "in_checkin_group",
    *(f"{m}_{part}" for m in MODELS for part in ("probability", "decile")),
)
# Fields that are a model's score: where each one's top end is (the end "likely" and "at risk" mean).
SCORE_TOPS = {
    **{f"{m}_probability": 1.0 for m in MODELS},
    **{f"{m}_decile": 10.0 for m in MODELS},
}
SCORE_BOTTOMS = {
    **{f"{m}_probability": 0.0 for m in MODELS},
    **{f"{m}_decile": 1.0 for m in MODELS},
}
# Programme fields: true while the member takes part in the programme a service message belongs to.
PROGRAMME_FIELDS = ("in_checkin_group",)
# What each message key says. WeCom mass messages and SMS carry one text per task/template.
TEMPLATES: dict[str, dict[str, str]] = {
    "care_checkin": {
        "zh": "您好，最近身体怎么样？您的健康管理师想和您聊聊近况，有任何问题随时回复我。",
        "en": "Hello, how have you been? Your health manager would like to check in; reply any time.",
    },
    "welcome_care_plan": {
        "zh": "欢迎加入！这是为您准备的新会员健康计划，第一周我们一起开始吧。",
        "en": "Welcome! Here is your new-member care plan; let's start the first week together.",
    },
    "replenishment_coupon": {
        "zh": "您常用的产品快用完了，为您准备了一张补货优惠券，点击领取。",
        "en": "Your regular product is running low: a replenishment coupon is waiting for you.",
    },
    "checkin_reminder": {
        "zh": "好久没在群里打卡啦，今天一起继续打卡吧！",
        "en": "We miss your check-ins in the group: join today's check-in!",
    },
    "first_order_offer": {
        "zh": "新人首单专享优惠已发放到您的账户，欢迎选购。",
        "en": "Your first-order offer is in your account.",
    },
    "winback_content": {
        "zh": "为您精选了几篇健康小知识，有空看看。",
        "en": "A few health reads picked for you.",
    },
}

# Not for rules: identifiers, the date and consent (consent is applied by suppression, always).
NOT_RULE_FIELDS = ("member_id", "as_of_date", "marketing_opt_out", "health_data_consent")


@functools.cache
def _feature_columns() -> tuple[str, ...]:
    spec = yaml.safe_load(FEATURES_YML.read_text(encoding="utf-8"))
    return tuple(c["name"] for c in spec["models"][0]["columns"])


def rule_fields() -> tuple[str, ...]:
    """Every field a segment rule may name."""
    names = [c for c in _feature_columns() if c not in NOT_RULE_FIELDS]
    return tuple(dict.fromkeys([*names, *PROFILE_EXTRA]))


def is_health_field(name: str) -> bool:
    """Fields that reveal a health condition (purchases by category, replenishment, baby age, interests)."""
    if name in ("interests", "next_due_category", "days_until_next_due", "baby_age_months"):
        return True
    return any(name.endswith(f"_{c}") and CATEGORIES[c].health_related for c in CATEGORIES)


class SegmentConfigError(ConfigError):
    """The segments file is not valid; the message names the file, the segment and the field."""


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    min: float | None = None
    max: float | None = None
    equals: str | float | bool | None = None
    in_: list[str | float | bool] | None = Field(default=None, alias="in")
    not_in: list[str | float | bool] | None = None
    present: bool | None = None
    any_of: list[str] | None = None
    none_of: list[str] | None = None


class Texts(BaseModel):
    """A text ops read, in both languages of the page."""

    model_config = ConfigDict(extra="forbid")

    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)


class Segment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    # what ops call it and who it reaches and why, in Chinese and English (a plain description is both)
    label: Texts | None = None
    description: str | Texts
    channel: Literal["wecom", "webhook", "sms", "file"]
    message: str = Field(min_length=1)
    priority: int
    daily_cap: int = Field(gt=0)
    holdout: float = Field(ge=0.0, le=0.5)
    health_based: bool = False
    rank_by: str | None = None
    # rank by the segment's uplift model (memberflow.outreach.uplift) once one beat rank_by in a backtest
    # on the segment's holdout history and was promoted; rank_by until then
    rank_by_uplift: bool = False
    # marketing (the default) counts against the marketing caps; service is a message the member's own
    # programme implies (a check-in reminder in a group they joined): its own caps, and only while
    # ``programme`` (a field such as in_checkin_group) is true for the member
    kind: Literal["marketing", "service"] = "marketing"
    programme: str | None = None
    # the same message to the same member at most once in this many days (default: outreach.yml)
    cooldown_days: int | None = Field(default=None, ge=1)
    # member: the message goes to a member once ever (a welcome); due_cycle: once per due date of the
    # consumable due soonest (a replenishment coupon)
    once_per: Literal["member", "due_cycle"] | None = None
    # high (the default): rules and rank_by on a model's score look at its top end, where "at risk" and
    # "likely to buy" are; low: the segment means to reach the bottom end, and says so
    direction: Literal["high", "low"] = "high"
    # what a decision of the segment is judged by, over how many days from the delivery date: an order
    # (any completed purchase) or a check-in; the uplift report compares members sent with those held out
    outcome: Literal["order", "checkin"] = "order"
    outcome_days: int = Field(default=14, ge=1, le=60)
    when: dict[str, Condition]

    def label_in(self, lang: str) -> str:
        """The segment's name in ``lang`` (zh or en); its key when the library gives no label."""
        return getattr(self.label, lang) if self.label else self.name

    def description_in(self, lang: str) -> str:
        return self.description if isinstance(self.description, str) else getattr(self.description, lang)

    @property
    def uses_health_data(self) -> bool:
        return self.health_based or any(is_health_field(f) for f in self.when)

    @property
    def score_fields(self) -> list[str]:
        """The model score fields the rules select on."""
        return [f for f in self.when if f in SCORE_TOPS]

    @property
    def score_models(self) -> list[str]:
        """The models whose scores the rules select on."""
        return list(dict.fromkeys(f.rsplit("_", 1)[0] for f in self.score_fields))

    @property
    def models(self) -> list[str]:
        """The models the segment's ranking and rules name, rank_by's first."""
        names = [self.rank_by or "", *self.when]
        return list(dict.fromkeys(m for name in names for m in MODELS if name.startswith(f"{m}_")))


class SegmentLibrary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    segments: dict[str, Segment]


def _coerce_condition(raw: Any) -> Any:
    """A bare value means equals, a bare list means one of."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, list):
        return {"in": raw}
    return {"equals": raw}


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _check_segment(path: Path, seg: Segment) -> None:
    fields = rule_fields()
    where = f"{path}: segment '{seg.name}'"
    if not seg.when:
        raise SegmentConfigError(f"{where}: 'when' needs at least one condition")
    for name, cond in seg.when.items():
        if name not in fields:
            raise SegmentConfigError(f"{where}: unknown field '{name}'{_suggest(name, fields)}")
        is_list = name in LIST_FIELDS
        used = {k for k, v in cond.model_dump(by_alias=True).items() if v is not None}
        if not used:
            raise SegmentConfigError(f"{where}: field '{name}' has an empty condition")
        if is_list and used - {"any_of", "none_of", "present"}:
            raise SegmentConfigError(f"{where}: field '{name}' is a list: use any_of, none_of or present")
        if not is_list and used & {"any_of", "none_of"}:
            raise SegmentConfigError(f"{where}: any_of / none_of apply to list fields only, not '{name}'")
        vocab = VOCABULARY.get(name)
        if vocab:
            values = [cond.equals] if cond.equals is not None else []
            for key in ("in_", "not_in", "any_of", "none_of"):
                values += getattr(cond, key) or []
            for value in values:
                if not isinstance(value, str):
                    raise SegmentConfigError(
                        f"{where}: field '{name}' has no tag {value!r}: quote tags in YAML "
                        f"(an unquoted 120_280 is read as the number 120280)"
                    )
                if value not in vocab:
                    raise SegmentConfigError(
                        f"{where}: field '{name}' has no tag '{value}'{_suggest(str(value), vocab)}; "
                        f"known: {', '.join(vocab)}"
                    )
        if (cond.min is not None or cond.max is not None) and vocab:
            raise SegmentConfigError(f"{where}: field '{name}' is a tag: min / max do not apply")
    for name, cond in seg.when.items():
        if name in SCORE_TOPS:
            _check_score_end(where, name, cond, seg.direction)
    if seg.kind == "service":
        if seg.programme not in PROGRAMME_FIELDS:
            raise SegmentConfigError(
                f"{where}: a service segment names the programme that implies its message "
                f"(programme: one of {', '.join(PROGRAMME_FIELDS)}); otherwise it is marketing"
            )
        if seg.once_per == "due_cycle":
            raise SegmentConfigError(f"{where}: once_per: due_cycle is for marketing coupons")
    elif seg.programme is not None:
        raise SegmentConfigError(f"{where}: programme applies to kind: service only")
    if seg.once_per == "due_cycle" and "days_until_next_due" not in seg.when:
        raise SegmentConfigError(
            f"{where}: once_per: due_cycle needs a rule on days_until_next_due (the cycle is its due date)"
        )
    if seg.message not in TEMPLATES:
        raise SegmentConfigError(
            f"{where}: unknown message '{seg.message}'{_suggest(seg.message, TEMPLATES)}; "
            f"known: {', '.join(TEMPLATES)}"
        )
    if seg.rank_by is not None and seg.rank_by not in fields:
        raise SegmentConfigError(
            f"{where}: unknown rank_by field '{seg.rank_by}'{_suggest(seg.rank_by, fields)}"
        )


def _admitted(cond: Condition, bottom: float, top: float) -> tuple[float, float] | None:
    """The lowest and highest score a condition admits (None: it names values, checked one by one)."""
    if cond.equals is not None or cond.in_ is not None:
        values = [cond.equals] if cond.equals is not None else list(cond.in_ or [])
        numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        return (min(numbers), max(numbers)) if numbers else None
    if cond.min is None and cond.max is None:
        return None
    return (bottom if cond.min is None else cond.min, top if cond.max is None else cond.max)


def _check_score_end(where: str, name: str, cond: Condition, direction: str) -> None:
    """A rule on a model's score must reach the end the segment says it wants (the top unless
    ``direction: low``): a rule that keeps the top out is a rule written backwards."""
    bottom, top = SCORE_BOTTOMS[name], SCORE_TOPS[name]
    if cond.not_in is not None:
        raise SegmentConfigError(f"{where}: field '{name}' is a score: use min / max, not not_in")
    span = _admitted(cond, bottom, top)
    if span is None:
        return
    low, high = span
    scale = "decile 10 is the highest tenth, 1 the lowest" if name.endswith("_decile") else "1 is certain"
    if direction == "high" and high < top:
        raise SegmentConfigError(
            f"{where}: field '{name}' selects {low:g}-{high:g}, which keeps out the top of the score "
            f"({scale}); select the top (e.g. {name}: {{min: {'9' if top == 10 else '0.5'}}}), or say "
            f"'direction: low' if the segment means to reach the least likely members"
        )
    if direction == "low" and low > bottom:
        raise SegmentConfigError(
            f"{where}: field '{name}' selects {low:g}-{high:g}, but the segment says 'direction: low' "
            f"({scale}); select the bottom (max only)"
        )


def load_segments(path: Path | None = None) -> list[Segment]:
    """The validated segment library, highest priority (smallest number) first."""
    path = Path(path or get_settings().segments_file or DEFAULT_SEGMENTS)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SegmentConfigError(f"{path}: segments file not found") from exc
    except yaml.YAMLError as exc:
        raise SegmentConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("segments"), dict):
        raise SegmentConfigError(f"{path}: expected 'version: 1' and a 'segments:' mapping")
    for seg in raw["segments"].values():
        if isinstance(seg, dict) and isinstance(seg.get("when"), dict):
            seg["when"] = {k: _coerce_condition(v) for k, v in seg["when"].items()}
    try:
        library = SegmentLibrary.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        if len(loc) >= 2 and loc[0] == "segments":
            where = f"segment '{loc[1]}'"
            detail = ".".join(p for p in loc[2:] if p not in ("equals", "in_"))
            what = f"field '{detail}': " if detail else ""
        else:
            where, what = ".".join(loc) or "file", ""
        raise SegmentConfigError(f"{path}: {where}: {what}{err['msg']}") from exc
    segments = []
    for name, seg in library.segments.items():
        seg.name = name
        _check_segment(path, seg)
        segments.append(seg)
    priorities = [s.priority for s in segments]
    if len(set(priorities)) != len(priorities):
        dup = sorted({p for p in priorities if priorities.count(p) > 1})
        raise SegmentConfigError(f"{path}: priorities must be unique (repeated: {dup})")
    return sorted(segments, key=lambda s: s.priority)


# --------------------------------------------------------------------------------------------- profiles

PROFILES_SQL = """
with features as (
    select * from member_features where as_of_date = $as_of
),
interests as (
    select member_id, list(distinct tag_value order by tag_value) as interests
    from member_tags
    where tag_group = 'interest' and valid_from <= $as_of and (valid_to is null or valid_to > $as_of)
    group by member_id
),
due as (
    select member_id,
        min(days) as days_until_next_due,
        arg_min(replace(category, 'days_until_due_', ''), days) as next_due_category
    from (unpivot (select member_id, columns('^days_until_due_') from features)
          on columns('^days_until_due_') into name category value days)
    where days >= -7
    group by member_id
),
scores as (
    select member_id,
        {score_columns}
    from member_scores where as_of = $as_of
    group by member_id
),
wecom as (
    -- the member's contact with their staff owner, still in place
    select ids.member_id, min(contacts.external_userid) as external_userid
    from member_identifiers as ids
    inner join dim_member using (member_id)
    inner join stg_wecom__contacts as contacts
        on ids.id_type = 'external_userid' and contacts.external_userid = ids.id_value
        and contacts.staff_userid = dim_member.staff_owner and not contacts.is_removed
    group by ids.member_id
),
groups as (
    -- members whose latest event in some group chat before the day is not a leave: still in the group
    select ids.member_id, true as in_checkin_group
    from (
        select external_userid, chat_id, arg_max(event_type, event_time) as last_event
        from stg_wecom__group_events
        where event_date < $as_of
        group by external_userid, chat_id
    ) as chats
    inner join member_identifiers as ids
        on ids.id_type = 'external_userid' and ids.id_value = chats.external_userid
    where chats.last_event != 'leave'
    group by ids.member_id
),
addresses as (
    select member_id,
        min(id_value) filter (where id_type = 'phone_token') as phone_token,
        min(id_value) filter (where id_type = 'unionid') as unionid,
        count(*) filter (where id_type = 'openid' and not id_value like '%:live:%') as miniprogram_ids
    from member_identifiers
    group by member_id
),
-- everything but the features, one narrow row per member, materialized: the wide feature rows are then
-- joined once (inlined, the optimizer put them on the build side of two joins, hashing every column twice)
extras as materialized (
    select
        dim_member.member_id,
        coalesce(interests.interests, []::varchar[]) as interests,
        due.days_until_next_due,
        due.next_due_category,
        dim_member.staff_owner,
        dim_member.phone_masked,
        addresses.phone_token is not null as has_phone,
        coalesce(addresses.miniprogram_ids, 0) > 0 as has_miniprogram,
        wecom.external_userid is not null as has_wecom,
        coalesce(groups.in_checkin_group, false) as in_checkin_group,
        wecom.external_userid,
        addresses.phone_token,
        addresses.unionid,
        coalesce(dim_member.marketing_opt_out, false) as opt_out_on_record,
        coalesce(dim_member.health_data_consent, false) as health_consent,
        scores.* exclude (member_id)
    from dim_member
    left join interests using (member_id)
    left join due using (member_id)
    left join addresses using (member_id)
    left join wecom using (member_id)
    left join groups using (member_id)
    left join scores using (member_id)
)
select features.*, extras.* exclude (member_id)
from features
inner join extras using (member_id)
order by member_id
"""


def _score_columns() -> str:
    cols = []
    for m in MODELS:
        cols += [
            f"max(probability) filter (where model = '{m}') as {m}_probability",
            f"max(decile) filter (where model = '{m}') as {m}_decile",
        ]
    return ",\n        ".join(cols)


class ProfilesError(RuntimeError):
    """The warehouse has no features (or no scores) for the delivery date."""


def member_profiles(con, as_of: date) -> pl.DataFrame:
    """One row per member on ``as_of``: features, tags, scores, consent on record and addresses.

    Scores come without their reasons: planning reads those after explaining the members it acts on
    (outreach.run.with_reasons), so a copy taken here would be stale, and carrying the lists cost a second
    per call at 1M members."""
    has = table_names(con)
    if "member_scores" not in has:
        raise ProfilesError("no member_scores in the warehouse: run `memberflow score` first")
    n = con.execute("select count(*) from member_features where as_of_date = ?", [as_of]).fetchall()[0][0]
    if not n:
        raise ProfilesError(f"no member_features as of {as_of}: score that date first (`memberflow score`)")
    sql = PROFILES_SQL.replace("{score_columns}", _score_columns())
    return pl.from_arrow(con.sql(sql, params={"as_of": as_of}).to_arrow_table())


def kept_profiles(settings: Settings, con, as_of: date) -> pl.DataFrame:
    """``member_profiles`` for ``as_of``, read once per published build and scoring of the day.

    A day's delivery reads the same profiles up to four times in as many processes (planning, the segments
    gate, delivery's own plan, the WeCom tag sync), each a multi-way join over the member tables (8-9 s at
    1M members). The first reader keeps its result under the workspace's cache folder with the state it was
    read from (``_profiles_state``); a later reader uses the copy only when that state is unchanged, and
    reads the warehouse again (replacing the copy) when it is not: after a build (whose marts gate
    publishes anew), any change to the day's scores, or a change to this module's query."""
    state = _profiles_state(settings, con, as_of)
    path = settings.cache_dir / f"member_profiles-{as_of.isoformat()}.parquet"
    if state is not None and path.exists():
        try:
            kept = pl.read_parquet_metadata(path)
        except (OSError, pl.exceptions.ComputeError):  # a copy cut short (a disk filled up): read again
            kept = {}
        if kept.get(_STATE_KEY) == state:
            return pl.read_parquet(path)
    profiles = member_profiles(con, as_of)
    for old in settings.cache_dir.glob("member_profiles-*.parquet"):  # one day kept: stale copies go
        old.unlink(missing_ok=True)
    if state is not None:
        partial = path.with_suffix(f".{os.getpid()}.partial")
        profiles.write_parquet(partial, compression="lz4", metadata={_STATE_KEY: state}, mkdir=True)
        partial.replace(path)  # a reader sees a whole copy or none
    return profiles


_STATE_KEY = "memberflow.profiles_state"


def _profiles_state(settings: Settings, con, as_of: date) -> str | None:
    """What member_profiles read on ``as_of``, summed up: the marts gate's publication (a build clears it,
    and its gate publishes anew with the time), the day's feature rows, a checksum of each model's scores of
    the day (scoring writes them outside builds; any change to a member's probability or decile shows) and
    the query's text. None when the marts are not published: nothing is kept of an ungated warehouse."""
    marker = published_marker(settings, "marts")
    if not marker.exists() or "member_scores" not in table_names(con):
        return None
    published = json.loads(marker.read_text())["published_at"]
    features = con.execute("select count(*) from member_features where as_of_date = ?", [as_of]).fetchall()
    scores = con.execute(
        "select model, count(*), sum(hash(member_id, probability, decile))::varchar from member_scores "
        "where as_of = ? group by model order by model",
        [as_of],
    ).fetchall()
    query = PROFILES_SQL.replace("{score_columns}", _score_columns())
    summary = [str(settings.warehouse_path), published, as_of.isoformat(), features, scores, query]
    return hashlib.sha256(json.dumps(summary, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------------------------- assignment


def _condition(name: str, cond: Condition) -> pl.Expr:
    col = pl.col(name)
    parts: list[pl.Expr] = []
    if name in LIST_FIELDS:
        if cond.present is not None:
            parts.append(col.list.len() > 0 if cond.present else col.list.len() == 0)
        if cond.any_of:
            parts.append(pl.any_horizontal([col.list.contains(pl.lit(v)) for v in cond.any_of]))
        if cond.none_of:
            parts.append(~pl.any_horizontal([col.list.contains(pl.lit(v)) for v in cond.none_of]))
        return pl.all_horizontal(parts).fill_null(False)
    if cond.present is not None:
        parts.append(col.is_not_null() if cond.present else col.is_null())
    if cond.equals is not None:
        parts.append(col == pl.lit(cond.equals))
    if cond.in_ is not None:
        parts.append(col.is_in([v for v in cond.in_]))
    if cond.not_in is not None:
        parts.append(col.is_not_null() & ~col.is_in([v for v in cond.not_in]))
    if cond.min is not None:
        parts.append(col >= cond.min)
    if cond.max is not None:
        parts.append(col <= cond.max)
    return pl.all_horizontal(parts).fill_null(False)


def rule_expr(segment: Segment) -> pl.Expr:
    return pl.all_horizontal([_condition(n, c) for n, c in segment.when.items()])


def score_pool_expr(segment: Segment) -> pl.Expr:
    """The members a segment's score conditions choose from: everything else in its rule holds. Members of
    this pool whom the rule turns away were turned away by the score; the segments gate and the outcome
    audit hold the chosen ones above them."""
    rest = [_condition(n, c) for n, c in segment.when.items() if n not in SCORE_TOPS]
    return pl.all_horizontal(rest) if rest else pl.lit(True)


def unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) from the parts (same input, same number, on every machine)."""
    digest = hashlib.blake2b("|".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class Assignment:
    """Each member in at most one segment, and how many matched each segment before priorities."""

    frame: pl.DataFrame  # profile columns + segment, channel, priority, holdout, rank
    matched: dict[str, int] = field(default_factory=dict)


def _ranks_low(segment: Segment) -> bool:
    return segment.direction == "low" and segment.rank_by in SCORE_TOPS


def _programme_flags(frame: pl.DataFrame, segs: list[Segment]) -> pl.Series:
    """Marketing: true. Service: the member's programme field that day (missing or null: false)."""
    flags = {n: frame[n].fill_null(False).to_list() for n in PROGRAMME_FIELDS if n in frame.columns}
    values = [
        True if seg.programme is None else bool(flags.get(seg.programme) and flags[seg.programme][i])
        for i, seg in enumerate(segs)
    ]
    return pl.Series(values, dtype=pl.Boolean)


def _due_cycles(frame: pl.DataFrame, segs: list[Segment]) -> pl.Series:
    """For once-per-due-cycle segments: '<category>:<due date>' of the consumable due soonest (the due date
    stays the same day after day until the member buys again)."""
    if not any(s.once_per == "due_cycle" for s in segs):
        return pl.Series([None] * len(segs), dtype=pl.Utf8)
    cycles = (
        frame.select(
            pl.format(
                "{}:{}",
                pl.col("next_due_category"),
                (pl.col("as_of_date") + pl.duration(days=pl.col("days_until_next_due"))).cast(pl.Utf8),
            )
        )
        .to_series()
        .to_list()
    )
    return pl.Series(
        [c if s.once_per == "due_cycle" else None for c, s in zip(cycles, segs, strict=True)], dtype=pl.Utf8
    )


def assign(profiles: pl.DataFrame, segments: list[Segment]) -> Assignment:
    """The highest-priority matching segment per member; members matching none are left out."""
    if profiles.is_empty() or not segments:
        empty = profiles.head(0).with_columns(
            segment=pl.lit(None, pl.Utf8),
            message=pl.lit(None, pl.Utf8),
            kind=pl.lit(None, pl.Utf8),
            outcome=pl.lit(None, pl.Utf8),
            outcome_days=pl.lit(None, pl.Int32),
            in_programme=pl.lit(None, pl.Boolean),
            cycle=pl.lit(None, pl.Utf8),
        )
        return Assignment(empty, {})
    ordered = sorted(segments, key=lambda s: s.priority)
    flags = profiles.select([rule_expr(s).alias(s.name) for s in ordered])
    matched = {s.name: int(flags[s.name].sum()) for s in ordered}
    chosen = pl.coalesce([pl.when(pl.col(s.name)).then(pl.lit(s.name)) for s in ordered])
    picked = flags.select(chosen.alias("segment"))["segment"]
    frame = profiles.with_columns(segment=picked).filter(pl.col("segment").is_not_null())
    by_name = {s.name: s for s in ordered}
    members, names = frame["member_id"].to_list(), frame["segment"].to_list()
    seg_of = [by_name[n] for n in names]

    def of_segment(value: Callable[[Segment], object], dtype: pl.DataType) -> pl.Expr:
        """A column of each row's segment's ``value`` (looked up once per segment, not once per row)."""
        return pl.col("segment").replace_strict({s.name: value(s) for s in ordered}, return_dtype=dtype)

    frame = frame.with_columns(
        channel=of_segment(lambda s: s.channel, pl.Utf8),
        message=of_segment(lambda s: s.message, pl.Utf8),
        kind=of_segment(lambda s: s.kind, pl.Utf8),
        outcome=of_segment(lambda s: s.outcome, pl.Utf8),
        outcome_days=of_segment(lambda s: s.outcome_days, pl.Int32),
        # the member takes part in the programme a service message belongs to (marketing: always true)
        in_programme=_programme_flags(frame, seg_of),
        cycle=_due_cycles(frame, seg_of),
        priority=of_segment(lambda s: s.priority, pl.Int64),
        health_based=of_segment(lambda s: s.uses_health_data, pl.Boolean),
        holdout=pl.Series(
            [unit_hash(m, n, "holdout") < by_name[n].holdout for m, n in zip(members, names, strict=True)],
            dtype=pl.Boolean,
        ),
        tie=pl.Series(
            [unit_hash(m, n, "rank") for m, n in zip(members, names, strict=True)], dtype=pl.Float64
        ),
    )
    # rank within the segment for the daily cap: rank_by descending (nulls last), ties by a stable hash;
    # a segment with direction: low ranks a model's score from the bottom
    ranked = [
        pl.when(pl.col("segment") == s.name).then(
            pl.col(s.rank_by).cast(pl.Float64) * (-1.0 if _ranks_low(s) else 1.0)
        )
        for s in ordered
        if s.rank_by is not None
    ]
    rank = pl.coalesce(ranked) if ranked else pl.lit(None, pl.Float64)
    frame = frame.with_columns(rank_value=rank.fill_nan(None).fill_null(float("-inf")))
    return Assignment(frame, matched)
