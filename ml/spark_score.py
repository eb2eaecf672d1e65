"""Scoring on the Spark target: the population's rows stay on the executors, the champion goes to them.

``score_on_spark`` (the caller's side) writes the champion's LightGBM model text to a file and runs
``score_here`` in memberflow.spark's child process. There the model text is broadcast once; each task of
``mapInArrow`` builds the booster from it once and scores its Arrow batches with the same conversion
(``prepare_frame``), the same ``predict(raw_score=True)`` and the same calibration as the single-machine
scorer, one LightGBM thread per task (Spark runs a task per core). Deciles need the whole population's
ranking, as ``ml.score.deciles`` ranks it (highest raw score first, ties by member_id); Spark sorts the
(member_id, raw score) pairs for that. The scores come back as Parquet for ``ml.score`` to store.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from memberflow import spark
from memberflow.core.settings import Settings, SparkSettings
from ml.datasets import POPULATIONS

SCORED = "member_id string, raw double, probability double"
RESULT = pa.schema([("member_id", pa.string()), ("probability", pa.float64()), ("decile", pa.int32())])


def _predict(model_text, features: list[str], calibration: dict):
    """The mapInArrow function: raw score and calibrated probability of each row of each batch."""

    def predict(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import lightgbm as lgb

        from ml.datasets import prepare_frame
        from ml.evaluate import Calibration

        booster = lgb.Booster(model_str=model_text.value)  # once per task, not per batch
        platt = Calibration.from_dict(calibration)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            frame = prepare_frame(batch.to_pandas())
            raw = booster.predict(frame[features], raw_score=True, num_threads=1)
            yield pa.RecordBatch.from_pydict(
                {
                    "member_id": pa.array(frame["member_id"].astype(str), pa.string()),
                    "raw": pa.array(raw, pa.float64()),
                    "probability": pa.array(platt.apply(raw), pa.float64()),
                }
            )

    return predict


def score_here(settings: Settings, request: dict) -> dict:
    """In the Spark child: score member_features' population rows on the day; Parquet to request["out"]."""
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    target = SparkSettings.from_env()
    session = spark.start_session(settings, target)
    features = request["features"]
    columns = ", ".join(f"f.`{c}`" for c in ["member_id", "as_of_date", *features])
    day, model = date.fromisoformat(request["as_of"]), request["model"]
    population = session.sql(
        f"select {columns} from {target.schema}.member_features f "
        f"where f.as_of_date = date'{day}' and {POPULATIONS[model]}"
    )
    # at least a task per core, however few files member_features has (a small population is one file)
    cores = session.sparkContext.defaultParallelism
    if population.rdd.getNumPartitions() < cores:
        population = population.repartition(cores)
    model_text = session.sparkContext.broadcast(Path(request["model_file"]).read_text())
    scored = population.mapInArrow(_predict(model_text, features, request["calibration"]), SCORED).cache()
    n = scored.count()
    # ml.score.deciles: rank 0 = highest raw score (ties: smaller member_id first); 10 - rank * 10 // n
    ranked = scored.withColumn(
        "rank", F.row_number().over(Window.orderBy(F.col("raw").desc(), F.col("member_id"))) - 1
    ).select(
        "member_id",
        "probability",
        (F.lit(10) - F.expr(f"(rank * 10) div {max(n, 1)}")).cast("int").alias("decile"),
    )
    ranked.write.mode("overwrite").parquet(request["out"])
    scored.unpersist()
    model_text.destroy()
    return {"rows": n, "partitions": population.rdd.getNumPartitions()}


def score_on_spark(
    settings: Settings, model: str, as_of: date, booster, features: list[str], calibration: dict
) -> tuple[pa.Table, dict]:
    """The model's population on ``as_of`` scored on Spark: member_id, probability, decile (any order), and
    how it ran (rows, partitions: the tasks that scored)."""
    folder = spark.spark_dir(settings) / "scores" / model
    folder.mkdir(parents=True, exist_ok=True)
    model_file = folder / "champion.txt"
    model_file.write_text(booster.model_to_string())
    out = folder / f"as_of={as_of.isoformat()}"
    request = {
        "model": model,
        "as_of": as_of.isoformat(),
        "features": features,
        "calibration": calibration,
        "model_file": str(model_file),
        "out": str(out),
    }
    ran = spark.run_job(settings, "ml.spark_score:score_here", request)
    return pq.read_table(out, schema=RESULT), ran
