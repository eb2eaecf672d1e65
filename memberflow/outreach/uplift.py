"""Uplift-ranked targeting: rank a segment's members by how much its message moves them, not by how likely
they are to act anyway.

A propensity score ranks first the members who would buy (or churn) whatever the brand does; under a daily
cap those are the sends a message wastes. Once a segment has holdout history (``segment_outcomes``: the
members held out at random beside those sent), a two-model learner estimates each member's uplift: one
LightGBM model of the response among the treated, one among the held out, uplift = the difference. Features
are the member's ``member_features`` on the decision day, the same point-in-time features the propensity
models read.

Promotion is a backtest on past decisions: the learner is fitted on the older weeks and both rankings, the
uplift model's and the segment's own ``rank_by`` (its propensity ranking; a segment without one: random
order), are scored on the newest weeks by the Qini area, the incremental responses their top fractions
collect beyond a random order, estimated from treated and held-out members alike. The uplift model is
promoted to the segment's champion only when it wins, and beats both the segment's ranking and a random
order in at least ``CONFIDENCE`` of paired bootstrap resamples of those weeks. The champion is then fitted
again on every week.

MLflow: experiment ``memberflow-uplift``, registered model ``memberflow-uplift-<segment>`` per segment with
the ``champion`` alias. A segment that says ``rank_by_uplift: true`` ranks by its champion's predicted
uplift under its daily cap (``rank_frame``); without a champion it keeps ``rank_by``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from memberflow.core.settings import Settings
from memberflow.core.vocab import MODELS
from memberflow.outreach.outcomes import NoOutcomesError, units
from memberflow.segments import Segment, unit_hash
from memberflow.warehouse import read_warehouse
from ml.datasets import feature_columns, prepare_frame
from ml.registry import CHAMPION, alias_version, connect, experiment_id, registered_name

# Enough holdout history: held-out units and responders the learner's control model needs (training weeks),
# and held-out units the backtest needs to tell rankings apart (validation weeks).
MIN_HOLDOUT = 200
MIN_RESPONDERS = 20
MIN_VALIDATION_HOLDOUT = 100
VALIDATION_WEEKS = 2  # the newest weeks with matured outcomes are the backtest
CONFIDENCE = 0.95  # the share of bootstrap resamples the uplift model must win
BOOTSTRAP = 200
FRACTIONS = np.linspace(0.05, 1.0, 20)  # the top fractions the Qini area averages over
ROUNDS = 120


class UpliftError(ValueError):
    """The segment cannot have an uplift model yet; the message says why and what to do."""


def model_key(segment: str) -> str:
    """The registry's model key of a segment's uplift model (``memberflow-uplift-<segment>``)."""
    return f"uplift-{segment}"


# ------------------------------------------------------------------------------------------------ data


def baseline_expr(segment: Segment, features: list[str]) -> str:
    """SQL for the segment's own ranking value at the decision (its ``rank_by``; higher goes first)."""
    name = segment.rank_by
    sign = "-" if segment.direction == "low" else ""
    for model in MODELS:
        if name in (f"{model}_probability", f"{model}_decile"):
            column = "probability" if name.endswith("_probability") else "decile"
            return (
                f"{sign}(select max(s.{column}) from member_scores s where s.member_id = u.decided_member_id "
                f"and s.as_of = u.as_of and s.model = '{model}')"
            )
    if name in features:
        return f"f.{name}"
    return "null"  # no ranking of its own (or a field only plans compute): random order


def baseline_name(segment: Segment, features: list[str]) -> str:
    """What the backtest compares the uplift model with (what ``baseline_expr`` reads)."""
    return "random order" if baseline_expr(segment, features) == "null" else str(segment.rank_by)


def uplift_frame(con, segment: Segment, as_of: date) -> tuple[pd.DataFrame, list[str]]:
    """The segment's compared units (``outcomes.units``: a member's first decision in a week, treated or
    held out, outcome window landed by ``as_of``) with the member's features on the decision day, the
    response, and ``baseline`` (the segment's own ranking value then). Returns the frame and the features."""
    compared = units(con, as_of, segment.name).select(
        "member_id", "decided_member_id", "as_of", "week", "arm", "responded"
    )
    features = feature_columns(con)
    if compared.is_empty():
        return pd.DataFrame(), features
    con.register("uplift_units", compared.to_arrow())
    try:
        frame = con.execute(
            f"""
            select u.member_id, u.decided_member_id, u.as_of, u.week, u.arm = 'treated' as treated,
                u.responded::int as responded, {baseline_expr(segment, features)} as baseline,
                {", ".join(f"f.{c}" for c in features)}
            from uplift_units u
            inner join member_features f on f.member_id = u.decided_member_id and f.as_of_date = u.as_of
            order by u.as_of, u.member_id
            """
        ).df()
    finally:
        con.unregister("uplift_units")
    keys = frame[["member_id", "decided_member_id", "week", "treated", "responded", "baseline"]]
    frame = pd.concat(
        [keys, prepare_frame(frame[["as_of", *features]].rename(columns={"as_of": "as_of_date"}))], axis=1
    )
    frame["treated"] = frame["treated"].astype(bool)
    frame["baseline"] = pd.to_numeric(frame["baseline"], errors="coerce").astype("float64")
    frame["week"] = pd.to_datetime(frame["week"])
    frame["tie"] = [unit_hash(m, segment.name, "rank") for m in frame["decided_member_id"]]
    return frame, features


# --------------------------------------------------------------------------------------------- learner


@dataclass
class TwoModel:
    """Response models of the treated and the held out; uplift = their difference."""

    treated: object  # lightgbm.Booster
    holdout: object
    features: list[str]

    def predict(self, frame: pd.DataFrame, threads: int = 1) -> np.ndarray:
        x = frame[self.features]
        return self.treated.predict(x, num_threads=threads) - self.holdout.predict(x, num_threads=threads)


def _params(rows: int, threads: int, seed: int) -> dict:
    # small, regularized trees: a control arm of a few hundred members overfits anything deeper
    return {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 7,
        "min_data_in_leaf": max(20, rows // 40),
        "lambda_l2": 10.0,
        "feature_fraction": 0.7,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": seed,
        "deterministic": True,
        "num_threads": threads,
        "verbose": -1,
    }


def fit_two_model(frame: pd.DataFrame, features: list[str], threads: int = 1, seed: int = 7) -> TwoModel:
    import lightgbm

    boosters = []
    for arm in (True, False):
        part = frame[frame["treated"] == arm]
        data = lightgbm.Dataset(part[features], part["responded"], free_raw_data=True)
        boosters.append(lightgbm.train(_params(len(part), threads, seed), data, ROUNDS))
    return TwoModel(boosters[0], boosters[1], features)


# -------------------------------------------------------------------------------------------- backtest


def qini(score: np.ndarray, tie: np.ndarray, treated: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Incremental responses collected by the top ``FRACTIONS`` of the units ranked by ``score`` (ties and
    missing scores by ``tie``): treated responders minus held-out responders scaled to the treated count."""
    score = np.where(np.isnan(score), -np.inf, score)
    order = np.lexsort((tie, -score))
    t, r = treated[order].astype(float), y[order].astype(float)
    n_t, n_c = np.cumsum(t), np.cumsum(1 - t)
    r_t, r_c = np.cumsum(t * r), np.cumsum((1 - t) * r)
    at = np.maximum(np.ceil(FRACTIONS * len(t)).astype(int), 1) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        gained = np.where(n_c[at] > 0, r_t[at] - r_c[at] * n_t[at] / n_c[at], 0.0)
    return gained


def qini_area(score, tie, treated, y) -> float:
    """The mean gain of the ranking over a random order across the top fractions, per unit ranked."""
    curve = qini(score, tie, treated, y)
    return float(np.mean(curve - FRACTIONS * curve[-1]) / max(len(y), 1))


@dataclass
class Backtest:
    segment: str
    train_weeks: list[str]
    validation_weeks: list[str]
    train_units: int
    train_holdout: int
    validation_units: int
    validation_holdout: int
    baseline: str  # what the segment ranks by without the uplift model
    qini_uplift: float
    qini_baseline: float
    wins: float  # share of bootstrap resamples in which the uplift model's area is larger than baseline's
    beats_random: float  # share of bootstrap resamples in which its area is above 0 (a random order's)
    promote: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _weeks(frame: pd.DataFrame) -> list[pd.Timestamp]:
    return sorted(frame["week"].unique())


def check_history(frame: pd.DataFrame, segment: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into training and validation weeks, or say why the history is not enough yet."""
    weeks = _weeks(frame)
    if len(weeks) <= VALIDATION_WEEKS:
        raise UpliftError(
            f"{segment}: {len(weeks)} week(s) of matured outcomes; an uplift backtest needs more than "
            f"{VALIDATION_WEEKS} (the newest {VALIDATION_WEEKS} are the backtest): keep delivering with a "
            f"holdout"
        )
    cut = weeks[-VALIDATION_WEEKS]
    train, valid = frame[frame["week"] < cut], frame[frame["week"] >= cut]
    held = train[~train["treated"]]
    responders = (int(held["responded"].sum()), int(train.loc[train["treated"], "responded"].sum()))
    if len(held) < MIN_HOLDOUT or min(responders) < MIN_RESPONDERS:
        raise UpliftError(
            f"{segment}: {len(held):,} held-out decisions ({responders[0]:,} responded) and "
            f"{responders[1]:,} treated responders in the training weeks; the learner needs at least "
            f"{MIN_HOLDOUT:,} held out and {MIN_RESPONDERS} responders per arm: keep the holdout longer, "
            f"or raise the segment's holdout share"
        )
    if int((~valid["treated"]).sum()) < MIN_VALIDATION_HOLDOUT:
        raise UpliftError(
            f"{segment}: {int((~valid['treated']).sum()):,} held-out decisions in the newest "
            f"{VALIDATION_WEEKS} weeks; the backtest needs at least {MIN_VALIDATION_HOLDOUT:,}"
        )
    return train, valid


def backtest(
    frame: pd.DataFrame, features: list[str], segment: Segment, threads: int = 1, seed: int = 7
) -> tuple[Backtest, TwoModel]:
    """Fit on the older weeks, compare the rankings on the newest (see the module docstring)."""
    train, valid = check_history(frame, segment.name)
    learner = fit_two_model(train, features, threads, seed)
    predicted = learner.predict(valid, threads)
    base = valid["baseline"].to_numpy(dtype="float64")
    tie = valid["tie"].to_numpy()
    treated, y = valid["treated"].to_numpy(dtype=bool), valid["responded"].to_numpy()
    ours, theirs = qini_area(predicted, tie, treated, y), qini_area(base, tie, treated, y)
    rng = np.random.default_rng(seed)
    wins = gains = 0
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(valid), len(valid))
        area = qini_area(predicted[i], tie[i], treated[i], y[i])
        wins += area > qini_area(base[i], tie[i], treated[i], y[i])
        gains += area > 0
    share, positive = wins / BOOTSTRAP, gains / BOOTSTRAP
    # it must beat the segment's own ranking and a random order, each in CONFIDENCE of the resamples: a
    # message that moves everyone alike leaves nothing to rank by, and noise can beat a ranking that is
    # itself no better than random
    promote = ours > theirs and share >= CONFIDENCE and positive >= CONFIDENCE
    baseline = baseline_name(segment, features)
    reason = (
        f"uplift ranking gains {ours:+.4f} per decision over random order, {baseline} {theirs:+.4f}; "
        f"it beats {baseline} in {share:.0%} and random order in {positive:.0%} of {BOOTSTRAP} resamples"
        + ("" if promote else f" (promotion needs both in at least {CONFIDENCE:.0%})")
    )
    result = Backtest(
        segment=segment.name,
        train_weeks=[w.date().isoformat() for w in _weeks(train)],
        validation_weeks=[w.date().isoformat() for w in _weeks(valid)],
        train_units=len(train),
        train_holdout=int((~train["treated"]).sum()),
        validation_units=len(valid),
        validation_holdout=int((~valid["treated"]).sum()),
        baseline=baseline,
        qini_uplift=ours,
        qini_baseline=theirs,
        wins=share,
        beats_random=positive,
        promote=promote,
        reason=reason,
    )
    return result, learner


# -------------------------------------------------------------------------------------------- registry


@dataclass
class UpliftResult:
    backtest: Backtest
    version: str
    champion: bool
    run_id: str
    previous_champion: str | None = None

    def to_dict(self) -> dict:
        return {**self.backtest.to_dict(), "version": self.version, "champion": self.champion,
                "run_id": self.run_id, "previous_champion": self.previous_champion}  # fmt: skip


def train_uplift(
    settings: Settings, segment: Segment, as_of: date, threads: int | None = None
) -> UpliftResult:
    """Backtest the segment's uplift model on the outcomes matured by ``as_of``; log it to MLflow, register
    the model fitted on every week, and make it the segment's champion when the backtest promotes it.
    Raises UpliftError when the history is not enough yet."""
    import mlflow

    threads = threads or settings.ml_threads
    with read_warehouse(settings) as con:
        frame, features = uplift_frame(con, segment, as_of)
    if frame.empty:
        raise UpliftError(
            f"{segment.name}: no decisions with matured outcomes by {as_of}: deliver the segment with a "
            f"holdout and build the warehouse (segment_outcomes) first"
        )
    result, _ = backtest(frame, features, segment, threads)
    final = fit_two_model(frame, features, threads)
    client = connect(settings)
    name = registered_name(model_key(segment.name))
    with mlflow.start_run(
        experiment_id=experiment_id(settings, "uplift"), run_name=f"{segment.name} {as_of}"
    ) as run:
        mlflow.set_tags({"segment": segment.name, "as_of": as_of.isoformat(), "promote": str(result.promote)})
        mlflow.log_params({"learner": "two-model lightgbm", "rounds": ROUNDS, "units": len(frame)})
        mlflow.log_metrics(
            {"qini_uplift": result.qini_uplift, "qini_baseline": result.qini_baseline, "wins": result.wins}
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "model"
            folder.mkdir()
            final.treated.save_model(str(folder / "treated.txt"))
            final.holdout.save_model(str(folder / "holdout.txt"))
            meta = {"segment": segment.name, "features": features, "as_of": as_of.isoformat()}
            (folder / "uplift.json").write_text(json.dumps({**meta, "backtest": result.to_dict()}, indent=1))
            mlflow.log_artifacts(str(folder), "model")
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name, description=f"uplift of segment {segment.name}")
        version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    previous = champion_version(settings, segment.name)
    if result.promote:
        if previous:
            client.set_model_version_tag(name, version.version, "previous_champion", previous)
        client.set_registered_model_alias(name, CHAMPION, version.version)
    return UpliftResult(result, str(version.version), result.promote, run.info.run_id, previous)


def champion_version(settings: Settings, segment: str) -> str | None:
    if settings.mlflow_uri_env is None and not (settings.mlflow_dir / "mlflow.db").exists():
        return None  # no model was ever trained here (and opening the store would create it)
    ref = alias_version(settings, model_key(segment), CHAMPION)
    return ref.version if ref else None


def load_champion(settings: Settings, segment: str) -> tuple[TwoModel, str] | None:
    """The segment's champion uplift model and its version, or None when it has none."""
    import lightgbm
    import mlflow

    version = champion_version(settings, segment)
    if version is None:
        return None
    mv = connect(settings).get_model_version(registered_name(model_key(segment)), version)
    # a folder of its own, removed after loading: a plan loads the champions every day
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=tmp))
        meta = json.loads((folder / "uplift.json").read_text())
        model = TwoModel(
            lightgbm.Booster(model_file=str(folder / "treated.txt")),
            lightgbm.Booster(model_file=str(folder / "holdout.txt")),
            list(meta["features"]),
        )
    return model, version


def train_segments(
    settings: Settings, segments: list[Segment], as_of: date
) -> tuple[list[UpliftResult], dict[str, str]]:
    """``train_uplift`` for each segment; those without the history it needs are returned with why (the
    normal state of a new or small segment), the rest with their result."""
    results, refused = [], {}
    for segment in segments:
        try:
            results.append(train_uplift(settings, segment, as_of))
        except (UpliftError, NoOutcomesError) as exc:
            refused[segment.name] = str(exc)
    return results, refused


def rank_frame(
    settings: Settings, frame: pl.DataFrame, segments: list[Segment]
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Replace ``rank_value`` with the predicted uplift for the members of segments that rank by uplift and
    have a champion. Returns the frame and, per such segment, what ranked it (``uplift model vN``)."""
    ranked: dict[str, str] = {}
    predicted = []
    for seg in segments:
        if not seg.rank_by_uplift or frame.is_empty():
            continue
        part = frame.filter(pl.col("segment") == seg.name)
        found = load_champion(settings, seg.name) if part.height else None
        if found is None:
            continue
        model, version = found
        x = prepare_frame(part.select("member_id", "as_of_date", *model.features).to_pandas())
        predicted.append(
            pl.DataFrame(
                {
                    "member_id": part["member_id"],
                    "segment": seg.name,
                    "uplift": model.predict(x, settings.ml_threads),
                }
            )
        )
        ranked[seg.name] = f"uplift model v{version}"
    if predicted:
        frame = (
            frame.join(pl.concat(predicted), on=["member_id", "segment"], how="left")
            .with_columns(rank_value=pl.coalesce("uplift", "rank_value"))
            .drop("uplift")
        )
    return frame, ranked
