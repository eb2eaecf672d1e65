"""Reading the warehouse from ml code, and writing ``member_scores`` (the one table ml owns)."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from memberflow.core.settings import Settings
from memberflow.warehouse import open_warehouse, replace_rows

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
);
-- added later: the same reasons in Chinese (rows explained before have none; readers fall back to reasons)
alter table member_scores add column if not exists reasons_zh varchar[];
"""


# The meaning of member_scores.decile, kept on the column itself. Workspaces scored before it was written
# down numbered the other way (1 = highest); ``ensure_scores_table`` renumbers their rows once.
DECILE_COMMENT = "decile 10 = the highest-scoring tenth of the model population that day, 1 = the lowest"


def ensure_scores_table(settings: Settings) -> bool:
    """Create member_scores if needed and make sure every stored decile means 10 = top; returns whether
    old rows were renumbered."""
    with open_warehouse(settings, read_only=False) as con:
        existed = bool(
            con.execute(
                "select count(*) from information_schema.tables where table_name = 'member_scores'"
            ).fetchall()[0][0]
        )
        con.execute(SCORES_DDL)
        comment = con.execute(
            "select comment from duckdb_columns() where table_name = 'member_scores' "
            "and column_name = 'decile'"
        ).fetchall()
        if comment and comment[0][0] == DECILE_COMMENT:
            return False
        con.execute("begin")
        renumbered = existed
        if existed:
            con.execute("update member_scores set decile = 11 - decile")
        con.execute(f"comment on column member_scores.decile is '{DECILE_COMMENT}'")
        con.execute("commit")
        return renumbered


def write_scores(settings: Settings, model: str, as_of: date, scores: pa.Table) -> int:
    """Replace the model's scores for the date in one transaction; returns the rows written."""
    ensure_scores_table(settings)
    columns = [
        "member_id",
        "model",
        "as_of",
        "probability",
        "decile",
        "reasons",
        "reasons_zh",
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
    """Set the reasons (``member_id``, ``reasons``, ``reasons_zh``) of the model's scores on the date, in one
    transaction."""
    with open_warehouse(settings, read_only=False) as con:
        con.execute(SCORES_DDL)
        con.register("incoming", reasons)
        con.execute(
            "update member_scores set reasons = incoming.reasons, reasons_zh = incoming.reasons_zh "
            "from incoming where member_scores.member_id = incoming.member_id "
            "and member_scores.model = ? and member_scores.as_of = ?",
            [model, as_of],
        )
    return reasons.num_rows
