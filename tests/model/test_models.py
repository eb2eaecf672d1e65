"""Trained models: minimum quality on the fixed seeded sample, behaviour, reasons, scoring, MLflow storage."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import polars as pl
import pytest

from ml.datasets import CATEGORICAL
from tests.support import SCORE_DAY


def test_models_beat_their_baselines_on_the_fixed_sample(trained):
    """Minimum quality on the seeded business sample (2,500 people, 60 days, seed 21)."""
    repurchase = trained["repurchase"].evaluation.metrics
    churn = trained["churn"].evaluation.metrics
    assert repurchase["model"]["auc"] >= 0.70
    assert repurchase["model"]["auc"] >= repurchase["recency"]["auc"] + 0.03
    assert repurchase["model"]["auc"] > repurchase["bgnbd"]["auc"]
    assert repurchase["model"]["brier"] < repurchase["bgnbd"]["brier"]
    assert churn["model"]["auc"] >= 0.85
    assert churn["model"]["auc"] >= churn["recency"]["auc"] + 0.03
    for metrics in (repurchase, churn):
        # a few hundred held-out members: the ECE estimate itself is noisy at this size
        assert metrics["model"]["ece"] <= 0.06
        assert metrics["model"]["lift_top_decile"] > 1.5
    assert trained["churn"].decision.promote and trained["repurchase"].decision.promote


def test_a_more_recent_purchase_never_lowers_repurchase_probability(trained):
    """All else equal, a more recent last purchase never lowers the probability: a monotone constraint on
    days_since_last_order (ml/models.yml) guarantees it for every member."""
    fitted = trained["repurchase"].evaluation.fitted
    rows = trained["repurchase"].evaluation.test
    rows = rows[rows["days_since_last_order"] > 20]
    for days in (1.0, 5.0, 15.0):
        recent = rows.assign(days_since_last_order=days)
        assert (fitted.probability(recent) >= fitted.probability(rows) - 1e-12).all()


def test_probabilities_do_not_depend_on_member_id_or_row_order(trained):
    fitted = trained["churn"].evaluation.fitted
    rows = trained["churn"].evaluation.test
    assert "member_id" not in fitted.features
    renamed = rows.assign(member_id=[f"other-{i}" for i in range(len(rows))])
    shuffled = rows.sample(frac=1.0, random_state=5)
    base = pd.Series(fitted.probability(rows), index=rows.index)
    assert np.allclose(fitted.probability(renamed), base.to_numpy())
    assert np.allclose(fitted.probability(shuffled), base.loc[shuffled.index].to_numpy())


def test_categorical_features_are_native(trained):
    booster = trained["churn"].evaluation.fitted.booster
    model = booster.dump_model()
    assert model["pandas_categorical"], "categories are stored with the model"
    categorical = {f for f in trained["churn"].evaluation.fitted.features if f in CATEGORICAL}
    assert categorical == set(CATEGORICAL)


def test_the_champion_loaded_from_mlflow_without_pickle_predicts_the_stored_probabilities(
    trained, ml_workspace, monkeypatch
):
    """Anyone loading the registered champion with MLflow (a notebook, `mlflow models serve`) gets the
    calibrated probabilities member_scores holds, not the booster's uncalibrated output."""
    import mlflow.pyfunc

    from memberflow.warehouse import read_warehouse
    from ml.datasets import population_frame
    from ml.evaluate import Calibration
    from ml.registry import connect, load, registered_name
    from ml.score import score

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    loaded = load(ml_workspace, "churn")
    model_dir = ml_workspace.mlflow_dir / "artifacts"
    stored = list(model_dir.rglob("booster.txt"))
    assert stored and not list(model_dir.rglob("*.pkl"))
    assert stored[0].read_text().startswith("tree")
    assert loaded.features == trained["churn"].evaluation.fitted.features
    assert loaded.calibration["method"] == "platt"
    score(ml_workspace, "churn", SCORE_DAY)
    with read_warehouse(ml_workspace) as con:
        frame = population_frame(con, "churn", [SCORE_DAY])
        scores = dict(
            con.execute(
                "select member_id, probability from member_scores where model = 'churn' and as_of = ?",
                [SCORE_DAY],
            ).fetchall()
        )
    inputs = frame[loaded.features].copy()
    for column in CATEGORICAL:  # as the signature says: categories travel as strings
        inputs[column] = inputs[column].astype("string")
    connect(ml_workspace)
    champion = mlflow.pyfunc.load_model(f"models:/{registered_name('churn')}@champion")
    predicted = np.asarray(champion.predict(inputs))
    expected = np.array([scores[m] for m in frame["member_id"]])
    assert len(expected) > 500
    assert np.abs(predicted - expected).max() < 1e-12
    # the stored probabilities are the booster's scores through the registered Platt calibration, which
    # moves them: the booster alone does not give them
    margin = loaded.booster.predict(frame[loaded.features], raw_score=True, num_threads=1)
    calibrated = Calibration.from_dict(loaded.calibration).apply(margin)
    assert np.abs(calibrated - expected).max() < 1e-12
    uncalibrated = loaded.booster.predict(frame[loaded.features], num_threads=1)
    assert np.abs(uncalibrated - expected).max() > 1e-3


def test_runs_are_tracked_with_metrics_plots_and_manifest(trained, ml_workspace):
    from ml.registry import connect

    client = connect(ml_workspace)
    run = client.get_run(trained["churn"].run_id)
    assert run.data.metrics["model.auc"] == pytest.approx(trained["churn"].evaluation.metrics["model"]["auc"])
    assert "recency.brier" in run.data.metrics
    assert run.data.params["holdout_cutoff"] == "2026-02-15"
    assert run.data.params["lgb.num_threads"] == "1"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    for name in ("roc.png", "pr.png", "calibration.png", "gain_lift.png", "feature_importance.png"):
        assert name in artifacts
    assert {"manifest.json", "promotion.json", "report.md"} <= artifacts
    assert run.data.tags["promotion.decision"] == "promoted"


def test_scoring_writes_every_member_of_the_population(trained, ml_workspace, tmp_path):
    from expectations.marts import gate_warehouse
    from memberflow.warehouse import read_warehouse
    from ml.datasets import population_frame
    from ml.score import score

    out = tmp_path / "scores.parquet"
    result = score(ml_workspace, "repurchase", SCORE_DAY, out)
    score(ml_workspace, "churn", SCORE_DAY)
    with read_warehouse(ml_workspace) as con:
        population = population_frame(con, "repurchase", [SCORE_DAY])
        stored = con.execute(
            "select * from member_scores where model = 'repurchase' and as_of = ?", [SCORE_DAY]
        ).df()
    assert result.rows == len(population) == len(stored) > 500
    assert set(stored["member_id"]) == set(population["member_id"])
    assert stored["probability"].between(0, 1).all()
    sizes = stored["decile"].value_counts()
    assert set(sizes.index) == set(range(1, 11)) and sizes.max() - sizes.min() <= 1
    # decile 10 is the top tenth: each decile's probabilities sit above the one below it
    by_decile = stored.groupby("decile")["probability"]
    assert all(by_decile.min()[d + 1] >= by_decile.max()[d] for d in range(1, 10))
    assert stored["reasons"].isna().all()  # reasons come when someone needs them: explain
    file = pl.read_parquet(out)
    assert file.columns == ["member_id", "model", "as_of", "probability", "decile", "reasons"]
    assert file.height == result.rows
    # scoring the same day again replaces, never duplicates
    score(ml_workspace, "repurchase", SCORE_DAY)
    with read_warehouse(ml_workspace) as con:
        again = con.execute(
            "select count(*) from member_scores where model = 'repurchase' and as_of = ?", [SCORE_DAY]
        ).fetchall()[0][0]
    assert again == result.rows
    gate = gate_warehouse(ml_workspace, SCORE_DAY, gate="scores")
    assert gate.ok
    noted = next(s for s in gate.suites if s.subject == "member_scores.conversion")
    assert noted.notes and not noted.findings


def test_explain_stores_the_reasons_of_the_wanted_members_only_once(trained, ml_workspace):
    """Reasons for some members: the champion's top contributions as sentences, the others untouched;
    asking again computes nothing; ``reasons=True`` explains everyone at scoring time."""
    from memberflow.warehouse import read_warehouse
    from ml.datasets import population_frame
    from ml.registry import CHAMPION, load
    from ml.score import explain, reasons_of, score

    score(ml_workspace, "repurchase", SCORE_DAY)
    with read_warehouse(ml_workspace) as con:
        population = population_frame(con, "repurchase", [SCORE_DAY])
    wanted = sorted(population["member_id"])[::7]
    assert explain(ml_workspace, SCORE_DAY, {"repurchase": wanted}) == {"repurchase": len(wanted)}
    assert explain(ml_workspace, SCORE_DAY, {"repurchase": wanted}) == {}

    loaded = load(ml_workspace, "repurchase", CHAMPION)
    rows = population[population["member_id"].isin(wanted)]
    expected = dict(zip(rows["member_id"], reasons_of(loaded.booster, loaded.features, rows), strict=True))
    with read_warehouse(ml_workspace) as con:
        stored = con.execute(
            "select member_id, reasons, reasons_zh from member_scores "
            "where model = 'repurchase' and as_of = ?",
            [SCORE_DAY],
        ).df()
    explained = stored[stored["reasons"].notna()]
    assert set(explained["member_id"]) == set(wanted)
    assert {m: list(r) for m, r in zip(explained["member_id"], explained["reasons"], strict=True)} == expected
    assert explained["reasons"].map(len).between(1, 3).mean() > 0.95
    assert any(any(ch.isdigit() for ch in r) for rs in explained["reasons"] for r in rs)
    # the same reasons in Chinese, one for one, with the member's own numbers
    for english, chinese in zip(explained["reasons"], explained["reasons_zh"], strict=True):
        assert len(chinese) == len(english)
        assert all(re.search(r"[\u4e00-\u9fff]", r) for r in chinese), chinese
        assert [sorted(re.findall(r"\d+", r)) for r in chinese] == [
            sorted(re.findall(r"\d+", r)) for r in english
        ]

    result = score(ml_workspace, "repurchase", SCORE_DAY, reasons=True)
    with read_warehouse(ml_workspace) as con:
        unexplained = con.execute(
            "select count(*) from member_scores where model = 'repurchase' and as_of = ? and reasons is null",
            [SCORE_DAY],
        ).fetchall()[0][0]
    assert result.explained == result.rows and unexplained == 0


def test_the_scores_gate_fails_when_a_member_is_missing(trained, ml_workspace):
    import duckdb

    from expectations.marts import gate_warehouse
    from expectations.runner import QualityGateError
    from ml.score import score

    score(ml_workspace, "churn", SCORE_DAY)
    with duckdb.connect(str(ml_workspace.warehouse_path)) as con:
        con.execute(
            "delete from member_scores where model = 'churn' and as_of = ? and member_id in "
            "(select member_id from member_scores where model = 'churn' and as_of = ? limit 5)",
            [SCORE_DAY, SCORE_DAY],
        )
    with pytest.raises(QualityGateError, match="probability"):
        gate_warehouse(ml_workspace, SCORE_DAY, gate="scores")
    score(ml_workspace, "churn", SCORE_DAY)
    assert gate_warehouse(ml_workspace, SCORE_DAY, gate="scores").ok


def test_the_scores_gate_notes_models_without_scores(trained, ml_workspace):
    """A day on which only churn was scored: the other models' suites note it, the gate passes."""
    from datetime import timedelta

    from expectations.marts import gate_warehouse
    from ml.score import score

    day = SCORE_DAY + timedelta(days=1)
    score(ml_workspace, "churn", day)
    gate = gate_warehouse(ml_workspace, day, gate="scores")
    assert gate.ok
    notes = {s.subject: s.notes for s in gate.suites}
    assert notes["member_scores.repurchase"] and notes["member_scores.conversion"]
    assert not notes["member_scores.churn"]


def test_a_copied_workspace_reads_and_writes_its_own_model_store(trained_ws, tmp_path):
    """MLflow keeps absolute artifact locations: a copy of a workspace must not go on reading, or logging
    into, the folder it was copied from."""
    import mlflow

    from ml.registry import connect, experiment_name, load, registered_name
    from tests.support import copy_workspace

    original = trained_ws[0].mlflow_dir / "artifacts"
    files_before = sorted(original.rglob("*"))
    copy = copy_workspace(trained_ws[0], tmp_path)
    here = (copy.mlflow_dir / "artifacts").resolve().as_uri()
    loaded = load(copy, "churn")
    client = connect(copy)
    stored_at = client.get_model_version_download_uri(registered_name("churn"), loaded.ref.version)
    assert stored_at.startswith(here + "/churn/")
    experiment = client.get_experiment_by_name(experiment_name("churn"))
    assert experiment.artifact_location == here + "/churn"
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        mlflow.log_text("a run of the copy", "note.txt")
    assert (copy.mlflow_dir / "artifacts" / "churn" / run.info.run_id / "artifacts" / "note.txt").exists()
    assert sorted(original.rglob("*")) == files_before
    assert load(trained_ws[0], "churn").ref == loaded.ref  # the original still reads its own store
