"""Live model monitoring: how the champion does now, against how it did when it was trained (DESIGN §7a).

For one model and one day:

* **realized performance** of every scoring date whose label window has landed (``as_of + horizon`` on or
  before the last landed day; those of the last ``REALIZED_DAYS``): the scores ``member_scores`` holds for
  that date against the labels the training set would give it (``ml.datasets``), as AUC, Brier score and
  calibration error, beside the version's own evaluation on its held-out cutoff. Members a message reached
  in the label window (or as many days before it) are left out: a model predicts what members do on their
  own, and a campaign that moves its targets would otherwise read as the model going wrong;
* **drift** of the scoring population on the day against the population the version was evaluated on (its
  held-out cutoff): the population stability index (PSI) of every feature the version uses and of its
  calibrated score, over ten quantile bins of the reference (missing values a bin of their own, categories
  one bin each). Training keeps that reference with the version (``reference.json``: bin edges and
  shares, not rows); for a version trained before, monitoring computes it once and caches it.

Levels: the score's PSI from 0.1 is a warning and from 0.25 critical (the usual reading: a moderate and a
major shift); a feature's from 0.25 is a warning and from 1.0 critical (a unit changed, a channel's events
gone); a realized AUC 0.05 under the version's evaluation is a warning and 0.10 under it critical. A
critical level pauses the segments that use the model (``memberflow.segments``: the plan leaves them out)
until a retrained champion or a newer run clears it. Features whose distribution moves with the calendar
by construction (``CALENDAR_FEATURES``: tenure grows every day) are reported but never raise a level.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from memberflow.core.settings import Settings
from memberflow.warehouse import read_warehouse, replace_rows, table_names
from ml.datasets import ensure_features, population_frame
from ml.evaluate import Calibration, metrics
from ml.registry import CHAMPION, LoadedModel, alias_version, connect, load, registered_name

# The score: 0.1 a moderate, 0.25 a major shift (the usual reading of a PSI). A feature moves more than the
# score it feeds (a growing business changes its channel mix): a major shift is a warning, and a PSI of 1
# (a unit changed, a channel's events gone) a broken input.
SCORE_PSI_WARNING, SCORE_PSI_CRITICAL = 0.10, 0.25
FEATURE_PSI_WARNING, FEATURE_PSI_CRITICAL = 0.25, 1.0
AUC_DROP_WARNING, AUC_DROP_CRITICAL = 0.05, 0.10
LEVELS = ("ok", "warning", "critical")
# Grow with the calendar in any population that ages: their drift says nothing about the model.
CALENDAR_FEATURES = ("tenure_days", "days_since_first_order")
MIN_ROWS = 200  # realized metrics and PSI on fewer rows are reported without a level
# realized metrics of the scoring dates whose label window closed in this many days before the check: a date
# found bad stays in view four weeks, and a daily check does not recompute a whole year of dates
REALIZED_DAYS = 28

MONITORING_DDL = """
create table if not exists model_monitoring (
    model varchar not null,
    as_of date not null,
    version varchar not null,
    kind varchar not null,
    name varchar not null,
    value double,
    reference double,
    rows bigint,
    level varchar not null,
    checked_at timestamp not null
)
"""


@dataclass
class Check:
    kind: str  # realized | feature_drift | score_drift
    name: str  # the metric (auc, brier, ece) with its scoring date, or the feature
    value: float | None
    reference: float | None  # the version's evaluation, or 0 for a PSI
    rows: int
    level: str


@dataclass
class MonitorReport:
    model: str
    as_of: date
    version: str
    status: str
    checks: list[Check] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["as_of"] = self.as_of.isoformat()
        return out


def profile_of(values: pd.Series, bins: int = 10) -> dict:
    """A distribution kept for later comparison: for numbers, the reference's decile edges and the share of
    rows in each bin (missing values a bin of their own); for categories, the share of each."""
    if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object:
        return {"shares": _shares(values, None)}
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
    finite = x[np.isfinite(x)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])).tolist() if len(finite) else []
    return {"edges": edges, "shares": _shares(values, edges)}


def _shares(values: pd.Series, edges: list[float] | None) -> dict[str, float]:
    if edges is None:
        labels = values.astype("object").fillna("<missing>").astype(str)
    else:
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
        labels = pd.Series(np.where(np.isnan(x), -1, np.searchsorted(edges, x, side="right"))).astype(str)
    return {str(k): float(v) for k, v in labels.value_counts(normalize=True).items()}


def psi_against(profile: dict, current: pd.Series) -> float:
    """Population stability index of ``current`` against a kept ``profile``: the sum over bins of
    (cur% − ref%) · ln(cur% / ref%). Empty bins count as 0.01 % so the log stays finite."""
    ref = profile["shares"]
    cur = _shares(current, profile.get("edges"))
    keys = sorted(set(ref) | set(cur))
    p = np.array([ref.get(k, 0.0) for k in keys]).clip(1e-4)
    q = np.array([cur.get(k, 0.0) for k in keys]).clip(1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


def psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """PSI of ``current`` against ``reference`` over ten quantile bins of the reference."""
    return psi_against(profile_of(reference, bins), current)


def reference_profile(frame: pd.DataFrame, features: list[str], probabilities: np.ndarray) -> dict:
    """What monitoring compares later days with, kept by training beside the model (``reference.json``): the
    held-out cutoff's population, each feature and the calibrated score."""
    return {
        "rows": len(frame),
        "features": {f: profile_of(frame[f]) for f in features},
        "score": profile_of(pd.Series(np.asarray(probabilities, dtype="float64"))),
    }


def _psi_level(value: float, rows: int, warning: float, critical: float) -> str:
    if rows < MIN_ROWS:
        return "ok"
    return "critical" if value >= critical else "warning" if value >= warning else "ok"


def _run_params(settings: Settings, loaded: LoadedModel) -> tuple[date, dict[str, float]]:
    """The version's held-out cutoff and its evaluation metrics (``model.*`` of its training run)."""
    run = connect(settings).get_run(loaded.ref.run_id)
    return date.fromisoformat(run.data.params["holdout_cutoff"]), _metrics_of(run)


def _evaluation(settings: Settings, run_id: str) -> dict[str, float]:
    return _metrics_of(connect(settings).get_run(run_id))


def _metrics_of(run) -> dict[str, float]:
    return {k.split(".", 1)[1]: v for k, v in run.data.metrics.items() if k.startswith("model.")}


def realized(con, model: str, horizon: int, last_day: date, since: date | None = None) -> list[dict]:
    """Per scoring date with a landed label window: the version that scored it and its metrics on the
    labels the training set would give that date."""
    dates = con.execute(
        "select as_of, any_value(model_version) as version from member_scores "
        "where model = ? and as_of + ? <= ? and (? is null or as_of >= ?) group by 1 order by 1",
        [model, horizon, last_day, since, since],
    ).fetchall()
    out = []
    tables = table_names(con)
    for day, version in dates:
        labelled = population_frame(con, model, [day], horizon)[["member_id", "label"]]
        # members a message reached in the label window, or in as many days before it, are left out: the
        # outreach, not the model's population, decided what they did (the uplift report measures that)
        reached = (
            "and member_id not in (select member_id from delivery_ledger where status = 'sent' "
            "and as_of between $day - $h and $day + $h)"
            if "delivery_ledger" in tables
            else ""
        )
        scores = con.execute(
            "select member_id, probability from member_scores "
            f"where model = $model and as_of = $day {reached}",
            {"model": model, "day": day, **({"h": horizon} if reached else {})},
        ).df()
        both = labelled.merge(scores, on="member_id", how="inner")
        if both.empty or both["label"].nunique() < 2:
            continue
        found = metrics(both["label"].to_numpy(), both["probability"].to_numpy())
        out.append({"as_of": day, "version": str(version), "rows": len(both), **found})
    return out


def monitor(settings: Settings, model: str, as_of: date, since: date | None = None) -> MonitorReport:
    """Check ``model``'s champion on ``as_of`` (see the module docstring); the result is also written to the
    warehouse table ``model_monitoring`` (one row per check), replacing the model's rows of that day.
    Realized metrics cover the scoring dates from ``since`` (default: those whose label window closed in the
    last ``REALIZED_DAYS`` days)."""
    loaded = load(settings, model, CHAMPION)
    holdout, evaluation = _run_params(settings, loaded)
    profile = _kept_profile(settings, loaded)
    ensure_features(settings, [as_of] if profile else [holdout, as_of])
    checks: list[Check] = []
    with read_warehouse(settings) as con:
        ((last_day,),) = con.execute("select max(activity_date) from fct_member_daily_engagement").fetchall()
        if profile is None:  # a version trained before profiles were kept: its held-out population now
            reference = population_frame(con, model, [holdout])
            if len(reference):
                profile = reference_profile(reference, loaded.features, _score(loaded, reference))
                _cache_path(settings, loaded).write_text(json.dumps(profile))
        current = population_frame(con, model, [as_of])
        scored = con.execute(
            "select probability from member_scores where model = ? and as_of = ?", [model, as_of]
        ).df()
        through = min(last_day, as_of)
        if since is None:
            since = through - timedelta(days=loaded.horizon_days + REALIZED_DAYS - 1)
        done = realized(con, model, loaded.horizon_days, through, since)
    # realized performance, each matured scoring date beside the version's evaluation
    for row in done:
        versioned = (
            evaluation if row["version"] == loaded.ref.version else _evaluation_of(settings, model, row)
        )
        for name in ("auc", "brier", "ece"):
            level = "ok"
            if name == "auc" and row["rows"] >= MIN_ROWS and versioned.get("auc") is not None:
                drop = versioned["auc"] - row["auc"]
                level = (
                    "critical"
                    if drop >= AUC_DROP_CRITICAL
                    else "warning"
                    if drop >= AUC_DROP_WARNING
                    else "ok"
                )
            checks.append(
                Check(
                    "realized", f"{name}@{row['as_of']}", row[name], versioned.get(name), row["rows"], level
                )
            )
    # drift of the day's population against the version's held-out population
    if profile is None:
        checks.append(Check("feature_drift", "no reference population", None, None, 0, "warning"))
    elif len(current):
        for feature in loaded.features:
            value = psi_against(profile["features"][feature], current[feature])
            level = (
                "ok"
                if feature in CALENDAR_FEATURES
                else _psi_level(value, len(current), FEATURE_PSI_WARNING, FEATURE_PSI_CRITICAL)
            )
            checks.append(Check("feature_drift", feature, value, 0.0, len(current), level))
        if len(scored):
            value = psi_against(profile["score"], scored["probability"])
            level = _psi_level(value, len(scored), SCORE_PSI_WARNING, SCORE_PSI_CRITICAL)
            checks.append(Check("score_drift", "probability", value, 0.0, len(scored), level))
    status = max((c.level for c in checks), key=LEVELS.index, default="ok")
    reasons = [_reason(c) for c in sorted(checks, key=lambda c: -LEVELS.index(c.level)) if c.level != "ok"]
    if status == "critical":
        reasons.append(f"retrain: `memberflow train --model {model}`; its segments are paused until then")
    report = MonitorReport(model, as_of, loaded.ref.version, status, checks, reasons)
    _write(settings, report)
    return report


def _reason(check: Check) -> str:
    """One line on a check that raised a level (a check without a value, such as a missing reference, by
    its name alone)."""
    text = f"{check.kind} {check.name}"
    if check.value is not None:
        text += f": {check.value:.3f}"
    if check.kind == "realized" and check.reference is not None:
        text += f" (evaluation {check.reference:.3f})"
    return text


PROFILE_ARTIFACT = "reference.json"
DAY_FILES = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9].json"  # one result per checked day


def _kept_profile(settings: Settings, loaded: LoadedModel) -> dict | None:
    """The reference profile training kept with the version, or the one monitoring computed for a version
    trained before profiles were kept (member_features drops old dates: it is computed once and cached)."""
    import tempfile

    cached = _cache_path(settings, loaded)
    if cached.exists():
        return json.loads(cached.read_text())
    client = connect(settings)
    if PROFILE_ARTIFACT not in {a.path for a in client.list_artifacts(loaded.ref.run_id)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(
            Path(client.download_artifacts(loaded.ref.run_id, PROFILE_ARTIFACT, tmp)).read_text()
        )


def _cache_path(settings: Settings, loaded: LoadedModel) -> Path:
    folder = settings.quality_dir / "monitoring" / loaded.ref.model
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"reference-v{loaded.ref.version}.json"


def _evaluation_of(settings: Settings, model: str, row: dict) -> dict[str, float]:
    """The evaluation of the version that scored a past date (when it is not today's champion); empty when
    that version is gone from the registry (no reference, so no level)."""
    from mlflow.exceptions import MlflowException

    try:
        run_id = connect(settings).get_model_version(registered_name(model), row["version"]).run_id
    except MlflowException:
        return {}
    return _evaluation(settings, run_id)


def _score(loaded: LoadedModel, frame: pd.DataFrame) -> np.ndarray:
    """The version's calibrated probabilities of ``frame`` (as ``ml.score.score_frame`` computes them)."""
    raw = loaded.booster.predict(frame[loaded.features], raw_score=True, num_threads=1)
    return Calibration.from_dict(loaded.calibration).apply(raw)


def _write(settings: Settings, report: MonitorReport) -> None:
    import pyarrow as pa

    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    table = pa.Table.from_pylist(
        [
            {
                "model": report.model,
                "as_of": report.as_of,
                "version": report.version,
                "kind": c.kind,
                "name": c.name,
                "value": None if c.value is None or math.isnan(c.value) else float(c.value),
                "reference": c.reference,
                "rows": c.rows,
                "level": c.level,
                "checked_at": now.to_pydatetime(),
            }
            for c in report.checks
        ],
        schema=pa.schema(
            [
                ("model", pa.string()),
                ("as_of", pa.date32()),
                ("version", pa.string()),
                ("kind", pa.string()),
                ("name", pa.string()),
                ("value", pa.float64()),
                ("reference", pa.float64()),
                ("rows", pa.int64()),
                ("level", pa.string()),
                ("checked_at", pa.timestamp("us")),
            ]
        ),
    )
    replace_rows(
        settings,
        MONITORING_DDL,
        "model_monitoring",
        "model = ? and as_of = ?",
        [report.model, report.as_of],
        table,
    )
    folder = settings.quality_dir / "monitoring" / report.model
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{report.as_of.isoformat()}.json").write_text(
        json.dumps(report.to_dict(), indent=1, default=str)
    )


def paused_models(settings: Settings, as_of: date, lookback_days: int = 7) -> dict[str, str]:
    """Models whose latest check within ``lookback_days`` up to ``as_of`` is critical for their current
    champion: model -> why (the plan pauses their segments)."""
    out: dict[str, str] = {}
    root = settings.quality_dir / "monitoring"
    if not root.exists():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        recent = sorted(
            f
            for f in folder.glob(DAY_FILES)
            if as_of - timedelta(days=lookback_days) <= date.fromisoformat(f.stem) <= as_of
        )
        if not recent:
            continue
        latest = json.loads(recent[-1].read_text())
        if latest["status"] != "critical":
            continue
        champion = alias_version(settings, folder.name, CHAMPION)
        if champion is not None and champion.version == latest["version"]:
            out[folder.name] = "; ".join(latest["reasons"][:3])
    return out


def latest_report(settings: Settings, model: str) -> dict | None:
    """The newest monitoring result of ``model`` as written by ``monitor`` (None: never monitored)."""
    folder = settings.quality_dir / "monitoring" / model
    found = sorted(folder.glob(DAY_FILES)) if folder.exists() else []
    return json.loads(found[-1].read_text()) if found else None
