"""Score a model's population with its champion: calibrated probability, decile and reason sentences.

One ``pred_contrib`` pass gives both the explanation and the score: the contributions of a row sum to its
raw margin, so the probability is the calibrated sum and no second predict is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memberflow.config import Settings
from ml.evaluate import Calibration

SCORE_SCHEMA = pa.schema(
    [
        ("member_id", pa.string()),
        ("model", pa.string()),
        ("as_of", pa.date32()),
        ("probability", pa.float64()),
        ("decile", pa.int32()),
        ("reasons", pa.list_(pa.string())),
        ("model_version", pa.string()),
        ("scored_at", pa.timestamp("us")),
    ]
)


def deciles(raw: np.ndarray, member_ids: np.ndarray) -> np.ndarray:
    """1 = the tenth with the highest scores; ties broken by member_id so sizes stay balanced."""
    order = np.lexsort((member_ids, -raw))
    ranks = np.empty(len(raw), dtype=np.int64)
    ranks[order] = np.arange(len(raw))
    return (ranks * 10 // max(len(raw), 1) + 1).astype(np.int32)


def score_frame(
    booster, features: list[str], calibration: Calibration, frame, model: str, as_of: date, version: str
) -> pa.Table:
    """Scores of the frame's rows as a member_scores table."""
    from ml.reasons import top_reasons

    contrib = booster.predict(frame[features], pred_contrib=True)
    raw = contrib.sum(axis=1)
    member_ids = frame["member_id"].to_numpy(dtype=object)
    n = len(frame)
    return pa.table(
        {
            "member_id": pa.array(member_ids, pa.string()),
            "model": pa.array([model] * n, pa.string()),
            "as_of": pa.array([as_of] * n, pa.date32()),
            "probability": pa.array(calibration.apply(raw), pa.float64()),
            "decile": pa.array(deciles(raw, member_ids.astype(str)), pa.int32()),
            "reasons": pa.array(top_reasons(contrib, frame, features), pa.list_(pa.string())),
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


def score(settings: Settings, model: str, as_of: date, out: Path | None = None) -> ScoreResult:
    """Score the model's population on ``as_of`` with the champion into member_scores (and ``out``)."""
    from expectations.marts import require_published
    from ml.datasets import ensure_features, population_frame
    from ml.registry import CHAMPION, load
    from ml.warehouse import read_warehouse, write_scores

    require_published(settings, "marts")
    loaded = load(settings, model, CHAMPION)
    ensure_features(settings, [as_of])
    with read_warehouse(settings) as con:
        frame = population_frame(con, model, [as_of])
    missing = [f for f in loaded.features if f not in frame.columns]
    if missing:
        raise ValueError(
            f"champion v{loaded.ref.version} of {model} needs features the warehouse lacks: {missing}"
        )
    table = score_frame(
        loaded.booster,
        loaded.features,
        Calibration.from_dict(loaded.calibration),
        frame,
        model,
        as_of,
        loaded.ref.version,
    )
    write_scores(settings, model, as_of, table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.select(["member_id", "model", "as_of", "probability", "decile", "reasons"]), out)
    mean = float(np.mean(table.column("probability").to_numpy())) if table.num_rows else float("nan")
    return ScoreResult(model, as_of, table.num_rows, loaded.ref.version, out, mean)
