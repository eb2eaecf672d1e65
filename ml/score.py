"""Score a model's population with its champion (calibrated probability and decile), and explain members.

Scoring is one plain prediction per member. Reasons (the top contributions from LightGBM's
``pred_contrib``, a TreeSHAP pass that costs tens of plain predictions) are computed by ``explain`` only for
the members someone will look at: segment members when segments are built (messages, exports and the
ops API's lists carry them), or everyone with ``score(..., reasons=True)``. A member without reasons has
``reasons`` null in member_scores.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from memberflow.core.settings import Settings, spark_target
from memberflow.warehouse import read_warehouse, require_published
from ml.datasets import ensure_features, population_frame
from ml.evaluate import Calibration
from ml.reasons import top_reasons
from ml.registry import CHAMPION, load, load_version
from ml.spark_score import score_on_spark
from ml.warehouse import write_reasons, write_scores

SCORE_SCHEMA = pa.schema(
    [
        ("member_id", pa.string()),
        ("model", pa.string()),
        ("as_of", pa.date32()),
        ("probability", pa.float64()),
        ("decile", pa.int32()),
        ("reasons", pa.list_(pa.string())),
        ("reasons_zh", pa.list_(pa.string())),
        ("model_version", pa.string()),
        ("scored_at", pa.timestamp("us")),
    ]
)


def deciles(raw: np.ndarray, member_ids: np.ndarray) -> np.ndarray:
    """10 = the tenth with the highest scores, 1 = the lowest (the way ops staff and BI tools read a
    decile); ties broken by member_id so sizes stay balanced."""
    order = np.lexsort((member_ids, -raw))
    ranks = np.empty(len(raw), dtype=np.int64)
    ranks[order] = np.arange(len(raw))
    return (10 - ranks * 10 // max(len(raw), 1)).astype(np.int32)


# Fewer rows than this per slice are predicted in one call: a thread is not worth it for them.
MIN_SLICE_ROWS = 64


def predict_rows(booster, frame, threads: int, **kwargs) -> np.ndarray:
    """``booster.predict(frame, **kwargs)``, the rows cut into ``threads`` slices predicted side by side.

    Each slice is a single-threaded LightGBM call in a Python thread: the call releases the GIL and a
    booster serves concurrent predictions (each takes a shared lock and its own predictor), so slices use
    the cores without OpenMP threads, which spin and slow to a crawl on a busy machine. A row's prediction
    depends on that row alone, so the result is the one call's, row for row."""
    slices = max(1, min(threads, len(frame) // MIN_SLICE_ROWS))
    if slices == 1:
        return booster.predict(frame, num_threads=1, **kwargs)
    bounds = np.linspace(0, len(frame), slices + 1).astype(int)
    with ThreadPoolExecutor(slices) as pool:
        parts = pool.map(
            lambda span: booster.predict(frame.iloc[span[0] : span[1]], num_threads=1, **kwargs),
            pairwise(bounds),
        )
        return np.concatenate(list(parts))


def reasons_of(booster, features: list[str], frame, threads: int = 1) -> list[list[str]]:
    """The reason sentences of each row of ``frame``, in English."""
    return reasons_in_both(booster, features, frame, threads)[0]


def reasons_in_both(
    booster, features: list[str], frame, threads: int = 1
) -> tuple[list[list[str]], list[list[str]]]:
    """The reason sentences of each row of ``frame`` in English and in Chinese (one ``pred_contrib`` pass)."""
    if len(frame) == 0:
        return [], []
    contrib = predict_rows(booster, frame[features], threads, pred_contrib=True)
    return top_reasons(contrib, frame, features), top_reasons(contrib, frame, features, lang="zh")


def score_frame(
    booster,
    features: list[str],
    calibration: Calibration,
    frame,
    model: str,
    as_of: date,
    version: str,
    threads: int = 1,
    reasons: bool = False,
) -> pa.Table:
    """Scores of the frame's rows as a member_scores table; with ``reasons``, each row explained too."""
    raw = predict_rows(booster, frame[features], threads, raw_score=True)
    member_ids = frame["member_id"].to_numpy(dtype=object)
    explained, explained_zh = reasons_in_both(booster, features, frame, threads) if reasons else (None, None)
    scored = pa.table(
        {
            "member_id": pa.array(member_ids, pa.string()),
            "probability": pa.array(calibration.apply(raw), pa.float64()),
            "decile": pa.array(deciles(raw, member_ids.astype(str)), pa.int32()),
        }
    )
    return scores_table(scored, model, as_of, version, explained, explained_zh)


def scores_table(
    scored: pa.Table,
    model: str,
    as_of: date,
    version: str,
    reasons: list | None = None,
    reasons_zh: list | None = None,
) -> pa.Table:
    """member_scores rows from ``scored`` (member_id, probability, decile), made by whichever scorer."""
    n = scored.num_rows
    return pa.table(
        {
            "member_id": scored.column("member_id"),
            "model": pa.array([model] * n, pa.string()),
            "as_of": pa.array([as_of] * n, pa.date32()),
            "probability": scored.column("probability"),
            "decile": scored.column("decile").cast(pa.int32()),
            "reasons": pa.array(reasons or [None] * n, pa.list_(pa.string())),
            "reasons_zh": pa.array(reasons_zh or [None] * n, pa.list_(pa.string())),
            "model_version": pa.array([version] * n, pa.string()),
            "scored_at": pa.array([datetime.now(UTC).replace(tzinfo=None)] * n, pa.timestamp("us")),
        },
        schema=SCORE_SCHEMA,
    )


@dataclass
class ScoreResult:
    model: str
    as_of: date
    rows: int
    version: str
    out: Path | None
    mean_probability: float
    explained: int = 0
    partitions: int = 1  # the tasks that scored (Spark)


def score(
    settings: Settings, model: str, as_of: date, out: Path | None = None, reasons: bool = False
) -> ScoreResult:
    """Score the model's population on ``as_of`` with the champion into member_scores (and ``out``).

    ``reasons``: explain every member now (slow); otherwise ``explain`` does it for the members who need it.
    """
    require_published(settings, "marts")
    loaded = load(settings, model, CHAMPION)
    ensure_features(settings, [as_of])
    if spark_target():
        table, partitions = _score_on_spark(settings, model, as_of, loaded)
        write_scores(settings, model, as_of, table)
        if reasons:
            explain(settings, as_of, {model: table.column("member_id").to_pylist()})
        return _result(
            model, as_of, table, loaded.ref.version, out, table.num_rows if reasons else 0, partitions
        )
    with read_warehouse(settings) as con:
        frame = population_frame(con, model, [as_of])
    _check_features(loaded, model, frame.columns)
    table = score_frame(
        loaded.booster,
        loaded.features,
        Calibration.from_dict(loaded.calibration),
        frame,
        model,
        as_of,
        loaded.ref.version,
        settings.predict_threads,
        reasons,
    )
    write_scores(settings, model, as_of, table)
    return _result(model, as_of, table, loaded.ref.version, out, table.num_rows if reasons else 0)


def _check_features(loaded, model: str, columns) -> None:
    missing = [f for f in loaded.features if f not in columns]
    if missing:
        raise ValueError(
            f"champion v{loaded.ref.version} of {model} needs features the warehouse lacks: {missing}"
        )


def _score_on_spark(settings: Settings, model: str, as_of: date, loaded) -> tuple[pa.Table, int]:
    """The population scored on the Spark target's executors (ml.spark_score), in member order; and how
    many tasks scored it."""
    with read_warehouse(settings) as con:  # the serving store holds member_features' columns
        columns = [r[0] for r in con.execute("describe member_features").fetchall()]
    _check_features(loaded, model, columns)
    scored, ran = score_on_spark(settings, model, as_of, loaded.booster, loaded.features, loaded.calibration)
    return scores_table(scored.sort_by("member_id"), model, as_of, loaded.ref.version), ran["partitions"]


def _result(
    model: str,
    as_of: date,
    table: pa.Table,
    version: str,
    out: Path | None,
    explained: int,
    partitions: int = 1,
) -> ScoreResult:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.select(["member_id", "model", "as_of", "probability", "decile", "reasons"]), out)
    mean = float(np.mean(table.column("probability").to_numpy())) if table.num_rows else float("nan")
    return ScoreResult(model, as_of, table.num_rows, version, out, mean, explained, partitions)


def explain(settings: Settings, as_of: date, wanted: dict[str, Iterable[str]]) -> dict[str, int]:
    """Compute and store the reasons of the wanted members' scores on ``as_of`` that have none yet.

    ``wanted``: model -> member ids. Each model's reasons come from the version that scored it (recorded in
    member_scores), whatever the champion is now. Returns how many members were explained per model.
    """
    explained: dict[str, int] = {}
    for model, members in wanted.items():
        ids = sorted(set(members))
        if not ids:
            continue
        with read_warehouse(settings) as con:
            con.register("wanted", pa.table({"member_id": pa.array(ids, pa.string())}))
            todo = con.sql(
                "select member_id, model_version from member_scores join wanted using (member_id) "
                "where model = ? and as_of = ? and reasons is null",
                params=[model, as_of],
            ).pl()
            if todo.is_empty():
                continue
            con.register("todo", todo.select("member_id").to_arrow())
            frame = population_frame(con, model, [as_of], members="todo")
        for version, group in todo.group_by("model_version"):
            loaded = load_version(settings, model, str(version[0]))
            rows = frame[frame["member_id"].isin(set(group["member_id"].to_list()))]
            sentences, sentences_zh = reasons_in_both(
                loaded.booster, loaded.features, rows, settings.predict_threads
            )
            updates = pl.DataFrame(
                {
                    "member_id": rows["member_id"].astype(str).tolist(),
                    "reasons": sentences,
                    "reasons_zh": sentences_zh,
                },
                schema={
                    "member_id": pl.String,
                    "reasons": pl.List(pl.String),
                    "reasons_zh": pl.List(pl.String),
                },
            )
            write_reasons(settings, model, as_of, updates.to_arrow())
            explained[model] = explained.get(model, 0) + updates.height
    return explained
