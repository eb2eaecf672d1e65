"""Reading the warehouse from ml code, and writing ``member_scores`` (the one table ml owns)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date

import pyarrow as pa

from memberflow.config import Settings

SCORES_DDL = """
create table if not exists member_scores (
    member_id varchar not null,
    model varchar not null,
    as_of date not null,
    probability double not null,
    decile integer not null,
    reasons varchar[],
    model_version varchar not null,
    scored_at timestamp not null
)
"""


@contextlib.contextmanager
def read_warehouse(settings: Settings) -> Iterator:
    """A read-only DuckDB connection, taken under the single-writer lock so no build is mid-write."""
    from memberflow.transform import open_warehouse

    if not settings.warehouse_path.exists():
        raise FileNotFoundError(f"no warehouse at {settings.warehouse_path}: run `memberflow build` first")
    with open_warehouse(settings) as con:
        yield con


def write_scores(settings: Settings, model: str, as_of: date, scores: pa.Table) -> int:
    """Replace the model's scores for the date in one transaction; returns the rows written."""
    from memberflow.transform import replace_rows

    columns = [
        "member_id",
        "model",
        "as_of",
        "probability",
        "decile",
        "reasons",
        "model_version",
        "scored_at",
    ]
    return replace_rows(
        settings,
        SCORES_DDL,
        "member_scores",
        "model = ? and as_of = ?",
        [model, as_of],
        scores.select(columns),
    )


def write_reasons(settings: Settings, model: str, as_of: date, reasons: pa.Table) -> int:
    """Set the reasons (``member_id``, ``reasons``) of the model's scores on the date, in one transaction."""
    from memberflow.transform import open_warehouse

    with open_warehouse(settings, read_only=False) as con:
        con.register("incoming", reasons)
        con.execute(
            "update member_scores set reasons = incoming.reasons from incoming "
            "where member_scores.member_id = incoming.member_id "
            "and member_scores.model = ? and member_scores.as_of = ?",
            [model, as_of],
        )
    return reasons.num_rows
