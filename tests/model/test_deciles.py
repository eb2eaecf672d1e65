"""Deciles read one way: 10 is the top tenth of the day's scores, in new and in older workspaces."""

from __future__ import annotations

from datetime import date, datetime

import duckdb
import numpy as np
import pyarrow as pa

from ml.score import SCORE_SCHEMA, deciles
from ml.warehouse import DECILE_COMMENT, write_scores


def test_decile_10_holds_the_highest_scores_and_each_decile_a_tenth():
    raw = np.linspace(-3, 3, 1000)
    ids = np.array([f"m{i:04d}" for i in range(1000)])
    got = deciles(raw, ids)
    assert (got[raw > np.quantile(raw, 0.9)] == 10).all() and (got[raw < np.quantile(raw, 0.1)] == 1).all()
    assert np.bincount(got)[1:].tolist() == [100] * 10
    assert all(raw[got == d].min() > raw[got == d - 1].max() for d in range(2, 11))


def test_a_workspace_scored_when_1_meant_the_top_is_renumbered_once(settings):
    """Scores written before the reading was fixed (1 = top) are turned round the first time scores are
    written again, and only that time: the column then says what it means."""
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute(
            "create table member_scores (member_id varchar not null, model varchar not null, as_of date "
            "not null, probability double not null, decile integer not null, reasons varchar[], "
            "model_version varchar not null, scored_at timestamp not null)"
        )
        con.execute(
            "insert into member_scores values ('old-top', 'churn', '2026-03-01', 0.9, 1, null, '1', now()), "
            "('old-bottom', 'churn', '2026-03-01', 0.1, 10, null, '1', now())"
        )
    today = pa.table(
        {"member_id": ["a"], "model": ["churn"], "as_of": [date(2026, 3, 2)], "probability": [0.5],
         "decile": [10], "reasons": [None], "reasons_zh": [None], "model_version": ["2"],
         "scored_at": [datetime(2026, 3, 2)]},
        schema=SCORE_SCHEMA,
    )  # fmt: skip
    for _ in range(2):  # the second write must not turn them round again
        write_scores(settings, "churn", date(2026, 3, 2), today)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        rows = dict(con.execute("select member_id, decile from member_scores").fetchall())
        (comment,) = con.execute(
            "select comment from duckdb_columns() "
            "where table_name = 'member_scores' and column_name = 'decile'"
        ).fetchall()[0]
    assert rows == {"old-top": 10, "old-bottom": 1, "a": 10}
    assert comment == DECILE_COMMENT


def test_predicting_in_slices_gives_every_row_its_own_prediction_in_order():
    """Scoring and reasons cut the rows into slices predicted side by side (predict_rows): each row gets
    exactly the prediction and contributions one call gives it, in the frame's order, categories included;
    a frame too small to cut is one call."""
    import lightgbm as lgb
    import pandas as pd

    from ml.score import MIN_SLICE_ROWS, predict_rows

    rng = np.random.default_rng(7)
    n = 1000
    frame = pd.DataFrame(
        {
            "days": rng.integers(0, 90, n).astype("float32"),
            "spend": rng.gamma(2.0, 50.0, n).astype("float32"),
            "channel": pd.Categorical(rng.choice(["wecom", "tmall", "store"], n)),
        }
    )
    label = ((frame["days"] < 30) ^ (frame["channel"] == "store")).astype(int)
    params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1, "seed": 1}
    booster = lgb.train(params, lgb.Dataset(frame, label), num_boost_round=40)
    # sorted by channel: each slice holds some of the categories only
    shuffled = frame.sort_values(["channel", "days"]).reset_index(drop=True)
    for kwargs in ({"raw_score": True}, {"pred_contrib": True}):
        whole = booster.predict(shuffled, num_threads=1, **kwargs)
        for threads in (2, 3):
            assert np.array_equal(predict_rows(booster, shuffled, threads, **kwargs), whole)
    small = shuffled.head(MIN_SLICE_ROWS + 1)
    assert np.array_equal(predict_rows(booster, small, 4), booster.predict(small, num_threads=1))
