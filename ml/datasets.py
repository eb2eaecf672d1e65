"""Point-in-time training and scoring sets from ``member_features``.

A cutoff is an as-of date: features use only what happened strictly before it (member_features guarantees
that), the label only what happened in ``(cutoff, cutoff + horizon]``. Training sets stack several cutoffs;
the newest is held out for early stopping, calibration and evaluation, and every training cutoff must have
its whole label window before the held-out cutoff, so no training label sees the held-out period.

Populations and labels (DESIGN §6):
- repurchase: members with at least one completed order; label: another completed order;
- churn: members with any activity in the 60 days before the cutoff and not lost; label: no activity at all
  in the horizon, or lost (WeCom contact removed or marketing opt-out) in it;
- conversion: prospects (no order yet) first seen in the 15 days before the cutoff; label: a first order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import pandas as pd

from memberflow.core.settings import Settings, postgres_target, spark_target
from memberflow.serving import refresh_serving
from memberflow.transform import DbtError, run_dbt
from memberflow.warehouse import read_warehouse
from ml.config import ModelSpec

CATEGORICAL = ("acquisition_channel",)
# Consent flags decide who may be contacted (segments), they are not behaviour to learn from. Tag columns
# (lifecycle, funnel stage, value tier) are read back from a tag history rebuilt from today's facts: a
# refund or a late export can change a past day's tag, so a model trained on them would see the future.
# The numeric features they summarize are point in time and are learned from instead.
NOT_FEATURES = (
    "member_id",
    "as_of_date",
    "marketing_opt_out",
    "health_data_consent",
    "lifecycle_stage",
    "funnel_stage",
    "value_tier",
)

POPULATIONS = {
    "repurchase": "f.orders_total >= 1",
    "churn": "f.days_since_last_activity <= 60 and coalesce(f.lifecycle_stage, '') <> 'lost'",
    "conversion": "f.orders_total = 0 and f.tenure_days <= 15 and coalesce(f.lifecycle_stage, '') <> 'lost'",
}

# Each label reads only (as_of_date, as_of_date + horizon]; {h} is the horizon in days. Each window is a
# set of (member_id, as_of_date) pairs: the events joined to the handful of cutoffs by date range, then
# joined to the population by equality. (A correlated `exists` per population row made DuckDB join every
# row with all of its member's days: 1.3 GB at its peak for a 91 MB training frame at 100k members.)
WINDOWS = {
    "purchased": """select distinct p.member_id, c.as_of_date
        from fct_orders p
        inner join cutoffs c on p.order_date > c.as_of_date and p.order_date <= c.as_of_date + {h}
        where p.member_id is not null and p.is_purchase""",
    "active": """select distinct e.member_id, c.as_of_date
        from fct_member_daily_engagement e
        inner join cutoffs c on e.activity_date > c.as_of_date and e.activity_date <= c.as_of_date + {h}""",
    "lost": """select distinct m.member_id, c.as_of_date
        from int_member_milestones m
        inner join cutoffs c on m.lost_on >= c.as_of_date and m.lost_on <= c.as_of_date + {h}""",
}
LABELS = {
    "repurchase": ("purchased.member_id is not null", ("purchased",)),
    "conversion": ("purchased.member_id is not null", ("purchased",)),
    "churn": ("active.member_id is null or lost.member_id is not null", ("active", "lost")),
}


class DatasetError(ValueError):
    """The cutoffs or the warehouse cannot give an honest training set; the message says why."""


@dataclass
class TrainingSet:
    model: str
    horizon_days: int
    cutoffs: list[date]
    holdout: date
    frame: pd.DataFrame  # member_id, as_of_date, the features and the label
    features: list[str]
    manifest: dict = field(default_factory=dict)

    @property
    def train(self) -> pd.DataFrame:
        return self.frame[self.frame["as_of_date"] < pd.Timestamp(self.holdout)]

    def train_matrix(self) -> tuple[pd.DataFrame, pd.Series]:
        """The training cutoffs' features and labels, sliced once (``train[features]`` copies twice)."""
        rows = self.frame["as_of_date"] < pd.Timestamp(self.holdout)
        return self.frame.loc[rows, self.features], self.frame.loc[rows, "label"]

    @property
    def holdout_frame(self) -> pd.DataFrame:
        return self.frame[self.frame["as_of_date"] == pd.Timestamp(self.holdout)]


def default_cutoffs(spec: ModelSpec, first_day: date, last_day: date, horizon: int) -> list[date]:
    """Training cutoffs then the held-out one: the newest cutoff whose label window has landed, and the
    configured number of weekly cutoffs before it whose label windows end before it."""
    holdout = last_day - timedelta(days=horizon)
    earliest = first_day + timedelta(days=spec.warmup_days)
    if holdout < earliest:
        raise DatasetError(
            f"data from {first_day} to {last_day} is too short for a {horizon}-day horizon: the held-out "
            f"cutoff {holdout} would come before the warm-up ends ({earliest})"
        )
    newest_train = holdout - timedelta(days=horizon)
    cutoffs = [newest_train - timedelta(days=spec.cutoff_step_days * k) for k in range(spec.training_cutoffs)]
    cutoffs = sorted(c for c in cutoffs if c >= earliest)
    if not cutoffs:
        raise DatasetError(
            f"no training cutoff fits between {earliest} and {newest_train} (holdout {holdout}, horizon "
            f"{horizon} days): land more history or pass --cutoffs and --horizon-days"
        )
    return [*cutoffs, holdout]


def check_cutoffs(cutoffs: Sequence[date], horizon: int, last_day: date) -> None:
    """The newest cutoff is held out; all label windows must have landed and training windows must end
    before the held-out cutoff."""
    if len(cutoffs) < 2:
        raise DatasetError("give at least two cutoffs: one or more to train on and the newest to hold out")
    ordered = sorted(cutoffs)
    holdout = ordered[-1]
    if holdout + timedelta(days=horizon) > last_day:
        raise DatasetError(
            f"the label window of cutoff {holdout} ends {holdout + timedelta(days=horizon)}, after the last "
            f"landed day {last_day}"
        )
    late = [c for c in ordered[:-1] if c + timedelta(days=horizon) > holdout]
    if late:
        raise DatasetError(
            f"training cutoff(s) {', '.join(map(str, late))}: their {horizon}-day label windows reach "
            f"past the held-out cutoff {holdout}; use cutoffs up to {holdout - timedelta(days=horizon)}"
        )


def data_span(con) -> tuple[date, date]:
    """First and last day with any member activity in the warehouse."""
    first, last = con.execute(
        "select min(activity_date), max(activity_date) from fct_member_daily_engagement"
    ).fetchall()[0]
    if first is None:
        raise DatasetError("the warehouse has no member activity yet: run `memberflow build` first")
    return first, last


def feature_dates(con) -> set[date]:
    return {row[0] for row in con.sql("select distinct as_of_date from member_features").fetchall()}


def ensure_features(settings: Settings, dates: Sequence[date]) -> list[date]:
    """Compute member_features for the dates it does not hold yet (a dbt run of that model only)."""
    with read_warehouse(settings) as con:
        missing = sorted(set(dates) - feature_dates(con))
    if missing:
        result = run_dbt(settings, ["run", "--select", "int_feature_dates", "member_features"], None, missing)
        if result.failures:
            raise DbtError("computing member_features failed:\n  " + "\n  ".join(result.failures))
        if spark_target() or postgres_target():  # computed on the target: the serving store gets them
            refresh_serving(settings, ["member_features"])
    return missing


def sample_threshold(fraction: float) -> str:
    """The members of a ``fraction`` sample are those whose md5(member_id), as hex, sorts below this (8 hex
    digits): the same members at every cutoff and in every run, in any SQL engine with md5."""
    return f"{min(int(fraction * 16**8), 16**8 - 1):08x}"


def _frame_sql(
    model: str, horizon: int | None, columns: str, members: str | None = None, sample: str | None = None
) -> str:
    windows, joins, label = ["cutoffs as (select unnest($dates) as as_of_date)"], [], ""
    if horizon is not None:
        expression, used = LABELS[model]
        label = f", ({expression})::int as label"
        for name in used:
            windows.append(f"{name} as ({WINDOWS[name].format(h=int(horizon))})")
            joins.append(
                f"left join {name} on {name}.member_id = f.member_id and {name}.as_of_date = f.as_of_date"
            )
    newline = "\n        "
    return f"""
        with {("," + newline).join(windows)}
        select {columns}{label}
        from member_features f
        {newline.join(joins)}
        where f.as_of_date in (select as_of_date from cutoffs) and {POPULATIONS[model]}
        {f"and f.member_id in (select member_id from {members})" if members else ""}
        {f"and left(md5(f.member_id), 8) < '{sample}'" if sample else ""}
        order by f.as_of_date, f.member_id
    """


def feature_columns(con) -> list[str]:
    return [r[0] for r in con.sql("describe member_features").fetchall() if r[0] not in NOT_FEATURES]


def population_sizes(con, model: str, dates: Sequence[date]) -> dict[date, int]:
    """How many members the model's population has at each date."""
    rows = con.execute(
        f"select f.as_of_date, count(*) from member_features f "
        f"where f.as_of_date in (select unnest($dates)) and {POPULATIONS[model]} group by 1",
        {"dates": sorted(set(dates))},
    ).fetchall()
    return {day: n for day, n in rows}


def population_frame(
    con,
    model: str,
    dates: Sequence[date],
    horizon: int | None = None,
    members: str | None = None,
    sample: str | None = None,
) -> pd.DataFrame:
    """Features (and the label when a horizon is given) of the model's population at the dates; only the
    members in relation ``members`` (a table or registered view with a member_id column) when given, and
    only the sampled members when ``sample`` (``sample_threshold``) is."""
    cols = ", ".join(f"f.{c}" for c in ["member_id", "as_of_date", *feature_columns(con)])
    sql = _frame_sql(model, horizon, cols, members, sample)
    # One date at a time, each narrowed to float32 before the next: DuckDB sorts (and pandas converts) a
    # cutoff's rows, not the whole stack of cutoffs at once.
    days = [[day] for day in sorted(set(dates))] or [[]]
    parts = [prepare_frame(con.execute(sql, {"dates": day}).df(), categorize=False) for day in days]
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    del parts
    for column in CATEGORICAL:
        if column in frame:
            frame[column] = frame[column].astype("category")
    return frame


def prepare_frame(frame: pd.DataFrame, categorize: bool = True) -> pd.DataFrame:
    """Types LightGBM reads natively: categories for the categorical columns, floats for the rest.

    float32: LightGBM bins features into at most max_bin values and converts to float32 itself when every
    column is float32, so float64 only doubles the matrix (at 1M members, 3M training rows by 70 features);
    day counts are exact and money keeps its cents up to ¥100,000."""
    for column in frame.columns:
        if column in CATEGORICAL:
            if categorize:  # (population_frame categorizes once all dates are stacked)
                frame[column] = frame[column].astype("category")
        elif column not in ("member_id", "as_of_date", "label"):
            # decimals, nullable integers and booleans alike: float32 with NaN for missing
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float32")
    frame["as_of_date"] = pd.to_datetime(frame["as_of_date"])
    return frame


def frame_hash(frame: pd.DataFrame) -> str:
    """SHA-256 over the rows' content hashes: the same data gives the same hash."""
    hashed = pd.util.hash_pandas_object(
        frame.astype({c: "object" for c in CATEGORICAL if c in frame}), index=False
    )
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()


def build_training_set(
    settings: Settings,
    spec: ModelSpec,
    cutoffs: Sequence[date] | None = None,
    horizon: int | None = None,
) -> TrainingSet:
    """Stack the model's population at each cutoff with its label; the newest cutoff is the holdout."""
    horizon = horizon or spec.horizon_days
    with read_warehouse(settings) as con:
        first_day, last_day = data_span(con)
    chosen = sorted(set(cutoffs)) if cutoffs else default_cutoffs(spec, first_day, last_day, horizon)
    check_cutoffs(chosen, horizon, last_day)
    ensure_features(settings, chosen)
    with read_warehouse(settings) as con:
        sizes = population_sizes(con, spec.name, chosen)
        largest = max(sizes.values(), default=0)
        fraction = min(1.0, spec.max_rows_per_cutoff / largest) if largest else 1.0
        threshold = sample_threshold(fraction) if fraction < 1.0 else None
        frame = population_frame(con, spec.name, chosen, horizon, sample=threshold)
        features = feature_columns(con)
    per_cutoff = frame.groupby("as_of_date", observed=True)["label"].agg(["size", "mean"])
    empty = [c for c in chosen if pd.Timestamp(c) not in per_cutoff.index]
    if empty:
        raise DatasetError(
            f"{spec.name}: no member in the population at cutoff(s) {', '.join(map(str, empty))}"
        )
    holdout = chosen[-1]
    manifest = {
        "model": spec.name,
        "horizon_days": horizon,
        "cutoffs": [c.isoformat() for c in chosen],
        "holdout_cutoff": holdout.isoformat(),
        "data_span": [first_day.isoformat(), last_day.isoformat()],
        "rows": len(frame),
        "per_cutoff": {
            ts.date().isoformat(): {"rows": int(row["size"]), "label_rate": round(float(row["mean"]), 5)}
            for ts, row in per_cutoff.iterrows()
        },
        "features": features,
        "categorical": [c for c in CATEGORICAL if c in features],
        "monotone": spec.monotone,
        "data_sha256": frame_hash(frame),
        # the population and the share of it trained on (1.0: everyone)
        "sample": {
            "population_rows": sum(sizes.values()),
            "fraction": round(fraction, 6),
            "max_rows_per_cutoff": spec.max_rows_per_cutoff,
            "rule": f"left(md5(member_id), 8) < '{threshold}'" if threshold else "all members",
        },
    }
    for name, part in (
        ("training cutoffs", frame["as_of_date"] < pd.Timestamp(holdout)),
        ("held-out cutoff", frame["as_of_date"] == pd.Timestamp(holdout)),
    ):
        if frame.loc[part, "label"].nunique() < 2:
            raise DatasetError(f"{spec.name}: the {name} hold only one label value; choose other cutoffs")
    return TrainingSet(spec.name, horizon, chosen, holdout, frame, features, manifest)
