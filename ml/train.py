"""Train, evaluate against baselines, track in MLflow and gate promotion.

The held-out (newest) cutoff's members are split in two by a hash of member_id: the "tune" half stops the
boosting early and fits the calibration, the "test" half measures the model, the baselines and the
champion. Nothing that chose the model or its calibration is scored in the figures that promote it.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from memberflow.core.settings import Settings
from memberflow.warehouse import require_published
from ml.baselines import bgnbd_baseline, recency_baseline
from ml.config import ModelSpec, model_spec
from ml.datasets import TrainingSet, build_training_set
from ml.evaluate import Calibration, fit_calibration, metrics, plot_all
from ml.monitor import PROFILE_ARTIFACT, reference_profile
from ml.registry import (
    CHALLENGER,
    CHAMPION,
    alias_version,
    connect,
    experiment_id,
    load,
    registered_name,
    set_alias,
)


def split_holdout(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tune and test halves of the held-out cutoff, by a stable hash of member_id."""
    hashed = pd.util.hash_array(frame["member_id"].to_numpy(dtype=object), hash_key="mf-holdout-split")
    in_test = (hashed % 2).astype(bool)
    return frame[~in_test], frame[in_test]


def lightgbm_params(spec: ModelSpec, features: list[str], rows: int, threads: int) -> dict:
    """The configured parameters, a minimum leaf size that also suits a few thousand rows, explicit
    threads, and the monotone constraints (e.g. a more recent purchase never lowers repurchase)."""
    params = dict(spec.lightgbm)
    params["min_data_in_leaf"] = int(min(params.get("min_data_in_leaf", 50), max(10, rows // 200)))
    params["num_threads"] = int(threads)
    params["metric"] = ["binary_logloss", "auc"]
    if spec.monotone:
        unknown = set(spec.monotone) - set(features)
        if unknown:
            raise ValueError(f"{spec.name}: monotone constraint on unknown feature(s) {sorted(unknown)}")
        params["monotone_constraints"] = [spec.monotone.get(f, 0) for f in features]
    return params


@dataclass
class FittedModel:
    booster: object
    features: list[str]
    calibration: Calibration
    params: dict
    best_iteration: int
    fit_seconds: float

    def raw_score(self, frame: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(frame[self.features], raw_score=True)

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        return self.calibration.apply(self.raw_score(frame))

    def importance(self) -> dict[str, float]:
        gains = self.booster.feature_importance(importance_type="gain")
        return {f: float(g) for f, g in zip(self.features, gains, strict=True)}


def fit(training_set: TrainingSet, spec: ModelSpec, threads: int) -> tuple[FittedModel, pd.DataFrame]:
    """LightGBM, early stopping and Platt calibration on the tune half; returns the model and test half."""
    import lightgbm as lgb

    train_x, train_y = training_set.train_matrix()
    tune, test = split_holdout(training_set.holdout_frame)
    features = training_set.features
    categorical = [c for c in training_set.manifest["categorical"] if c in features]
    params = lightgbm_params(spec, features, len(train_x), threads)
    started = time.perf_counter()
    dtrain = lgb.Dataset(train_x, label=train_y, categorical_feature=categorical)
    del train_x, train_y  # the Dataset frees its copy once built (free_raw_data)
    dtune = lgb.Dataset(
        tune[features], label=tune["label"], categorical_feature=categorical, reference=dtrain
    )
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=spec.num_boost_round,
        valid_sets=[dtune],
        valid_names=["tune"],
        callbacks=[lgb.early_stopping(spec.early_stopping_rounds, first_metric_only=True, verbose=False)],
    )
    booster.best_iteration = booster.best_iteration or booster.current_iteration()
    # Keep only the trees early stopping chose, so every later predict uses exactly them.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
    seconds = time.perf_counter() - started
    raw = booster.predict(tune[features], raw_score=True)
    calibration = fit_calibration(raw, tune["label"].to_numpy())
    return FittedModel(booster, features, calibration, params, booster.current_iteration(), seconds), test


@dataclass
class Evaluation:
    model: str
    training_set: TrainingSet
    fitted: FittedModel
    test: pd.DataFrame
    probabilities: dict[str, np.ndarray]
    metrics: dict[str, dict[str, float]]
    baseline_params: dict[str, dict] = field(default_factory=dict)


def evaluate(training_set: TrainingSet, fitted: FittedModel, test: pd.DataFrame) -> Evaluation:
    """The model and its baselines on the test half of the held-out cutoff."""
    tune, _ = split_holdout(training_set.holdout_frame)
    label = test["label"].to_numpy()
    probs = {"model": fitted.probability(test)}
    probs["recency"], _ = recency_baseline(training_set.model, tune, test)
    extra: dict[str, dict] = {}
    if training_set.model == "repurchase":
        probs["bgnbd"], extra["bgnbd"] = bgnbd_baseline(
            training_set.holdout_frame, test, training_set.horizon_days
        )
    return Evaluation(
        training_set.model,
        training_set,
        fitted,
        test,
        probs,
        {name: metrics(label, p) for name, p in probs.items()},
        extra,
    )


def beats(
    challenger: dict[str, float], rival: dict[str, float], margin: dict[str, float]
) -> tuple[bool, str]:
    """Whether the challenger's AUC is higher and its Brier score lower than the rival's by the margins;
    the text gives both metrics and, for one that falls short, the value it needed."""
    verdicts = []
    for metric, label, higher in (("auc", "AUC", True), ("brier", "Brier", False)):
        need = rival[metric] + margin.get(metric, 0.0) * (1 if higher else -1)
        ok = challenger[metric] >= need if higher else challenger[metric] <= need
        # enough digits that two different values never print alike (a Brier of 0.08894 against 0.08891)
        digits = next((d for d in range(4, 9) if f"{challenger[metric]:.{d}f}" != f"{need:.{d}f}"), 8)
        rule = "ok" if ok else f"needs {'at least' if higher else 'at most'} {need:.{digits}f}"
        verdicts.append(
            (ok, f"{label} {challenger[metric]:.{digits}f} vs {rival[metric]:.{digits}f}: {rule}")
        )
    return all(ok for ok, _ in verdicts), "; ".join(text for _, text in verdicts)


@dataclass
class Decision:
    promote: bool
    reason: str
    comparisons: dict[str, str]
    previous_champion: str | None = None


def decide(evaluation: Evaluation, spec: ModelSpec, champion_metrics: dict[str, float] | None) -> Decision:
    """Promote only when the new model beats every baseline and the champion on the same test rows."""
    mine = evaluation.metrics["model"]
    comparisons: dict[str, str] = {}
    failed: list[str] = []
    for name, rival in evaluation.metrics.items():
        if name == "model":
            continue
        ok, text = beats(mine, rival, spec.margins["baseline"])
        comparisons[name] = text
        if not ok:
            failed.append(name)
    if champion_metrics is not None:
        ok, text = beats(mine, champion_metrics, spec.margins["champion"])
        comparisons["champion"] = text
        if not ok:
            failed.append("champion")
    if failed:
        reason = "stays challenger: does not beat " + ", ".join(f"{n} ({comparisons[n]})" for n in failed)
        return Decision(False, reason, comparisons)
    rivals = ", ".join(comparisons)
    return Decision(True, f"promoted: beats {rivals} on the held-out cutoff", comparisons)


def _champion_metrics(
    settings: Settings, model: str, test: pd.DataFrame
) -> tuple[dict | None, str | None, str]:
    """The current champion's metrics on the same test rows, or why it could not be scored."""
    if alias_version(settings, model, CHAMPION) is None:
        return None, None, "no champion yet"
    loaded = load(settings, model, CHAMPION)
    missing = [f for f in loaded.features if f not in test.columns]
    if missing:
        return (
            None,
            loaded.ref.version,
            f"champion v{loaded.ref.version} needs features no longer built: {missing}",
        )
    raw = loaded.booster.predict(test[loaded.features], raw_score=True)
    prob = Calibration.from_dict(loaded.calibration).apply(raw)
    return metrics(test["label"].to_numpy(), prob), loaded.ref.version, f"champion v{loaded.ref.version}"


def _log_run(
    settings: Settings, evaluation: Evaluation, kind: str, folder: Path, extra_params: dict | None = None
) -> str:
    """One MLflow run with parameters and metrics in batches and the plots and manifest as artifacts."""
    import mlflow

    ts = evaluation.training_set
    fitted = evaluation.fitted
    params = {
        "kind": kind,
        "horizon_days": ts.horizon_days,
        "cutoffs": ",".join(c.isoformat() for c in ts.cutoffs),
        "holdout_cutoff": ts.holdout.isoformat(),
        "best_iteration": fitted.best_iteration,
        "features": len(fitted.features),
        "train_rows": len(ts.train),
        "population_rows": ts.manifest["sample"]["population_rows"],
        "sample_fraction": ts.manifest["sample"]["fraction"],
        "test_rows": len(evaluation.test),
        **{f"lgb.{k}": v for k, v in fitted.params.items() if k != "monotone_constraints"},
        "monotone": json.dumps(evaluation.training_set.manifest.get("monotone", {})),
        **(extra_params or {}),
    }
    run_metrics = {f"{name}.{m}": v for name, values in evaluation.metrics.items() for m, v in values.items()}
    run_metrics["fit_seconds"] = fitted.fit_seconds
    run = mlflow.start_run(
        experiment_id=experiment_id(settings, evaluation.model), run_name=f"{kind}-{ts.holdout}"
    )
    mlflow.log_params(params)
    mlflow.log_metrics(run_metrics)
    mlflow.log_artifacts(str(folder))
    return run.info.run_id


def write_report(evaluation: Evaluation, folder: Path) -> Path:
    """Plots, the manifest, metrics side by side (JSON and Markdown) in one folder."""
    ts = evaluation.training_set
    folder.mkdir(parents=True, exist_ok=True)
    plot_all(
        folder,
        evaluation.test["label"].to_numpy(),
        evaluation.probabilities,
        f"{evaluation.model}, cutoff {ts.holdout}",
        evaluation.fitted.importance(),
    )
    (folder / "manifest.json").write_text(json.dumps(ts.manifest, indent=2, sort_keys=True))
    (folder / "metrics.json").write_text(
        json.dumps({"metrics": evaluation.metrics, "baseline_params": evaluation.baseline_params}, indent=2)
    )
    (folder / "report.md").write_text(report_markdown(evaluation))
    return folder


# What a registered version runs when loaded (MLflow models from code): the booster plus its calibration.
CHAMPION_MODEL_CODE = Path(__file__).with_name("champion_model.py")
METRIC_COLUMNS = ("auc", "pr_auc", "brier", "lift_top_decile", "ece")


def report_markdown(evaluation: Evaluation) -> str:
    ts = evaluation.training_set
    lines = [
        f"# {evaluation.model}: held-out cutoff {ts.holdout}, horizon {ts.horizon_days} days",
        "",
        f"Trained on cutoffs {', '.join(c.isoformat() for c in ts.cutoffs[:-1])} ({len(ts.train):,} rows); "
        f"evaluated on {len(evaluation.test):,} held-out members "
        f"(label rate {evaluation.metrics['model']['label_rate']:.3f}).",
        "",
        "| | " + " | ".join(METRIC_COLUMNS) + " |",
        "|---|" + "---|" * len(METRIC_COLUMNS),
    ]
    for name, values in evaluation.metrics.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[m]:.4f}" for m in METRIC_COLUMNS) + " |")
    lines += ["", *(f"![{p}]({p})" for p in ("roc.png", "pr.png", "calibration.png", "gain_lift.png"))]
    lines.append("![feature importance](feature_importance.png)")
    return "\n".join(lines) + "\n"


def fit_and_evaluate(
    settings: Settings,
    model: str,
    cutoffs: Sequence[date] | None = None,
    horizon: int | None = None,
    params: dict | None = None,
) -> Evaluation:
    """``params``: LightGBM parameters over the configured ones (experiments, tests)."""
    import dataclasses

    require_published(settings, "marts")
    spec = model_spec(model)
    if params:
        spec = dataclasses.replace(spec, lightgbm={**spec.lightgbm, **params})
    training_set = build_training_set(settings, spec, cutoffs, horizon)
    fitted, test = fit(training_set, spec, settings.ml_threads)
    return evaluate(training_set, fitted, test)


@dataclass
class TrainResult:
    evaluation: Evaluation
    version: str
    run_id: str
    decision: Decision


def train(
    settings: Settings,
    model: str,
    cutoffs: Sequence[date] | None = None,
    horizon: int | None = None,
    params: dict | None = None,
) -> TrainResult:
    """Train on the cutoffs, register the model as challenger and promote it if it earns it."""
    return register(settings, fit_and_evaluate(settings, model, cutoffs, horizon, params))


def register(settings: Settings, evaluation: Evaluation) -> TrainResult:
    """Log the evaluated model to MLflow, register it as challenger and apply the promotion gate."""
    import lightgbm
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    model = evaluation.model
    spec = model_spec(model)
    client = connect(settings)
    champion_metrics, champion_version, champion_note = _champion_metrics(settings, model, evaluation.test)
    if champion_metrics is not None:
        evaluation.metrics["champion"] = champion_metrics
    decision = decide(evaluation, spec, champion_metrics)
    if champion_metrics is None and champion_version is not None:
        decision = Decision(False, f"stays challenger: {champion_note}", decision.comparisons)
    decision.previous_champion = champion_version
    fitted = evaluation.fitted
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_report(evaluation, Path(tmp))
        promotion = {
            "promote": decision.promote,
            "reason": decision.reason,
            "comparisons": decision.comparisons,
        }
        (folder / "promotion.json").write_text(json.dumps(promotion, indent=2))
        # what live monitoring compares later scoring days with (ml.monitor): the held-out population
        holdout = evaluation.training_set.holdout_frame
        profile = reference_profile(holdout, fitted.features, fitted.probability(holdout))
        (folder / PROFILE_ARTIFACT).write_text(json.dumps(profile))
        run_id = _log_run(settings, evaluation, "train", folder)
    try:
        example = evaluation.test[fitted.features].head(200).copy()
        for column in example.columns:
            if isinstance(example[column].dtype, pd.CategoricalDtype):
                example[column] = example[column].astype("string")
        signature = infer_signature(example, fitted.probability(evaluation.test.head(200)))
        with tempfile.TemporaryDirectory() as tmp:
            booster_file = Path(tmp) / "booster.txt"
            fitted.booster.save_model(str(booster_file))
            # The version is the calibrated model (ml/champion_model.py), the booster one of its artifacts.
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=CHAMPION_MODEL_CODE,
                artifacts={"booster": str(booster_file)},
                model_config={"features": fitted.features, "calibration": fitted.calibration.as_dict()},
                signature=signature,
                pip_requirements=[
                    f"lightgbm=={lightgbm.__version__}",
                    f"pandas=={pd.__version__}",
                    f"numpy=={np.__version__}",
                ],
                registered_model_name=registered_name(model),
                metadata={
                    "features": fitted.features,
                    "calibration": fitted.calibration.as_dict(),
                    "horizon_days": evaluation.training_set.horizon_days,
                    "holdout_cutoff": evaluation.training_set.holdout.isoformat(),
                },
            )
        version = str(info.registered_model_version)
        mlflow.set_tags(
            {
                "promotion.decision": "promoted" if decision.promote else "challenger",
                "promotion.reason": decision.reason[:4000],
            }
        )
    finally:
        mlflow.end_run()
    name = registered_name(model)
    client.set_model_version_tag(name, version, "decision", "promoted" if decision.promote else "challenger")
    client.set_model_version_tag(name, version, "reason", decision.reason[:4000])
    set_alias(settings, model, CHALLENGER, version)
    if decision.promote:
        if champion_version is not None:
            client.set_model_version_tag(name, version, "previous_champion", champion_version)
        set_alias(settings, model, CHAMPION, version)
    return TrainResult(evaluation, version, run_id, decision)


@dataclass
class BacktestResult:
    evaluation: Evaluation
    report_dir: Path
    run_id: str


def backtest(
    settings: Settings, model: str, cutoffs: Sequence[date], test_cutoff: date, horizon: int | None = None
) -> BacktestResult:
    """Train at the cutoffs, evaluate at the test cutoff beside the baselines; report on disk and MLflow."""
    import mlflow

    evaluation = fit_and_evaluate(settings, model, [*cutoffs, test_cutoff], horizon)
    folder = settings.reports_dir / "backtest" / f"{model}-{test_cutoff.isoformat()}"
    write_report(evaluation, folder)
    try:
        run_id = _log_run(settings, evaluation, "backtest", folder)
    finally:
        mlflow.end_run()
    return BacktestResult(evaluation, folder, run_id)
