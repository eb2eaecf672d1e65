"""Point-in-time training sets: cutoffs, populations, labels and the manifest."""

from __future__ import annotations

import itertools
from datetime import date

import pandas as pd
import pytest

from ml.config import model_spec
from ml.datasets import DatasetError, build_training_set, check_cutoffs, default_cutoffs
from tests.support import CUTOFFS, HORIZON


def test_default_cutoffs_hold_out_the_newest_landed_window_and_train_before_it():
    spec = model_spec("repurchase")
    cutoffs = default_cutoffs(spec, date(2026, 1, 1), date(2026, 6, 30), 30)
    assert cutoffs[-1] == date(2026, 5, 31)
    assert len(cutoffs) == spec.training_cutoffs + 1
    assert all(c.toordinal() + 30 <= cutoffs[-1].toordinal() for c in cutoffs[:-1])
    gaps = {(b - a).days for a, b in itertools.pairwise(cutoffs[:-1])}
    assert gaps == {7}


def test_too_little_history_is_a_clear_error():
    with pytest.raises(DatasetError, match="too short"):
        default_cutoffs(model_spec("churn"), date(2026, 1, 1), date(2026, 2, 1), 30)


@pytest.mark.parametrize(
    ("cutoffs", "message"),
    [
        ([date(2026, 2, 1)], "at least two cutoffs"),
        ([date(2026, 2, 1), date(2026, 2, 20)], "after the last landed day"),
        ([date(2026, 2, 10), date(2026, 2, 15)], "reach past the held-out cutoff"),
    ],
)
def test_cutoffs_that_would_leak_or_lack_labels_are_refused(cutoffs, message):
    with pytest.raises(DatasetError, match=message):
        check_cutoffs(cutoffs, 14, date(2026, 3, 1))


def test_training_set_has_a_manifest_and_the_newest_cutoff_held_out(ml_workspace):
    ts = build_training_set(ml_workspace, model_spec("churn"), CUTOFFS, HORIZON)
    manifest = ts.manifest
    assert ts.holdout == CUTOFFS[-1] and manifest["holdout_cutoff"] == "2026-02-15"
    assert manifest["cutoffs"] == [c.isoformat() for c in CUTOFFS]
    assert set(manifest["per_cutoff"]) == set(manifest["cutoffs"])
    assert sum(v["rows"] for v in manifest["per_cutoff"].values()) == manifest["rows"] == len(ts.frame)
    assert all(0 < v["label_rate"] < 1 for v in manifest["per_cutoff"].values())
    for column in ("member_id", "as_of_date", "marketing_opt_out", "health_data_consent"):
        assert column not in ts.features
    assert manifest["categorical"] == ["acquisition_channel"]
    assert "lifecycle_stage" not in ts.features, "tags are rebuilt from today's facts: not point in time"
    assert len(manifest["data_sha256"]) == 64
    # one row per member and cutoff; the holdout is the newest cutoff only
    assert not ts.frame.duplicated(["member_id", "as_of_date"]).any()
    assert set(ts.holdout_frame["as_of_date"]) == {pd.Timestamp(CUTOFFS[-1])}
    # the same warehouse gives the same data hash
    again = build_training_set(ml_workspace, model_spec("churn"), CUTOFFS, HORIZON)
    assert again.manifest["data_sha256"] == manifest["data_sha256"]


def test_populations_follow_the_design(ml_workspace):
    repurchase = build_training_set(ml_workspace, model_spec("repurchase"), CUTOFFS, HORIZON).frame
    assert (repurchase["orders_total"] >= 1).all()
    conversion = build_training_set(ml_workspace, model_spec("conversion"), CUTOFFS, HORIZON).frame
    assert (conversion["orders_total"] == 0).all() and (conversion["tenure_days"] <= 15).all()
    churn = build_training_set(ml_workspace, model_spec("churn"), CUTOFFS, HORIZON).frame
    assert (churn["days_since_last_activity"] <= 60).all()


def test_repurchase_labels_are_orders_strictly_inside_the_horizon(ml_workspace):
    from memberflow.warehouse import read_warehouse

    ts = build_training_set(ml_workspace, model_spec("repurchase"), CUTOFFS, HORIZON)
    with read_warehouse(ml_workspace) as con:
        orders = con.sql(
            "select distinct member_id, order_date from fct_orders "
            "where is_purchase and member_id is not null"
        ).df()
    orders["order_date"] = pd.to_datetime(orders["order_date"])
    sample = ts.frame.sample(300, random_state=1)
    merged = sample[["member_id", "as_of_date", "label"]].merge(orders, on="member_id", how="left")
    delta = (merged["order_date"] - merged["as_of_date"]).dt.days
    merged["inside"] = (delta > 0) & (delta <= HORIZON)
    expected = merged.groupby(["member_id", "as_of_date"])["inside"].any().astype(int)
    actual = sample.set_index(["member_id", "as_of_date"])["label"]
    assert (expected.loc[actual.index] == actual).all()


def test_a_large_population_is_sampled_by_member_the_same_way_at_every_cutoff(ml_workspace):
    """Over max_rows_per_cutoff, a training set keeps the members whose md5(member_id) falls below the
    share that brings the largest cutoff to the cap: the same members wherever they appear, recorded in
    the manifest (which train logs to MLflow)."""
    import dataclasses
    import hashlib

    spec = model_spec("churn")
    full = build_training_set(ml_workspace, spec, CUTOFFS, HORIZON)
    assert full.manifest["sample"]["fraction"] == 1.0 and full.manifest["sample"]["rule"] == "all members"
    largest = max(v["rows"] for v in full.manifest["per_cutoff"].values())
    cap = largest // 4
    sampled = build_training_set(
        ml_workspace, dataclasses.replace(spec, max_rows_per_cutoff=cap), CUTOFFS, HORIZON
    )
    record = sampled.manifest["sample"]
    assert record["population_rows"] == len(full.frame) and record["max_rows_per_cutoff"] == cap
    assert record["fraction"] == pytest.approx(cap / largest, abs=1e-6)
    threshold = record["rule"].split("'")[1]
    chosen = {m for m in full.frame["member_id"] if hashlib.md5(m.encode()).hexdigest()[:8] < threshold}
    expected = full.frame[full.frame["member_id"].isin(chosen)]
    assert sorted(zip(sampled.frame["member_id"], sampled.frame["as_of_date"], strict=True)) == sorted(
        zip(expected["member_id"], expected["as_of_date"], strict=True)
    )
    for day, counts in sampled.manifest["per_cutoff"].items():  # about a quarter of each cutoff
        share = counts["rows"] / full.manifest["per_cutoff"][day]["rows"]
        assert 0.15 < share < 0.35, (day, share)
    assert (
        sampled.frame["label"].values == expected.sort_values(["as_of_date", "member_id"])["label"].values
    ).all()
