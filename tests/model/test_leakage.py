"""Leakage: features at a cutoff use only what was known strictly before it.

The check rebuilds the warehouse after scrambling what landed on or after the cutoff (order times, amounts
and statuses, including status changes of older orders; item categories; event types and times), among those
later rows only: every feature at the cutoff must come out identical. The same comparison flags a feature
that peeks past the cutoff.

Orders are taken as known on the cutoff (the newest version landed before it), so a later refund or a late
export cannot leak. Engagement events and store receipts are daily facts without versions: one dated before
the cutoff that landed after it (a late re-send) still counts, so the scramble leaves those few rows alone.
Tags (lifecycle, funnel stage, value tier) are rebuilt from today's facts, so models do not learn from them.
"""

from __future__ import annotations

import shutil
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from memberflow.extract import partition_days
from memberflow.transform import build_warehouse
from memberflow.warehouse import read_warehouse
from ml.datasets import ensure_features, feature_columns
from tests.support import make_settings, published_copy

CUTOFF = date(2026, 2, 8)
# table -> columns scrambled among the rows landed on or after the cutoff
SCRAMBLE = {
    # an order's time never changes between its versions; its status and amount do
    ("ecommerce", "orders"): ["status", "amount_cny"],
    ("ecommerce", "order_items"): ["category", "qty", "unit_price_cny"],
    ("store_pos", "orders"): ["order_time", "amount_cny"],
    ("store_pos", "order_items"): ["category", "qty", "unit_price_cny"],
    ("wecom", "group_events"): ["event_type", "event_time"],
    ("miniprogram", "events"): ["event_type", "event_time"],
}
# daily facts without versions: only rows both landed and dated on or after the cutoff are scrambled
EVENTS = {("wecom", "group_events"), ("miniprogram", "events"), ("store_pos", "orders")}


def scramble_future(settings, cutoff: date, seed: int = 3) -> int:
    """Permute the listed columns among the rows landed on or after the cutoff; returns rows touched."""
    rng = np.random.default_rng(seed)
    touched = 0
    for (channel, table), columns in SCRAMBLE.items():
        parts = [
            (day, f)
            for day, folder in partition_days(settings.landing_dir / channel / table).items()
            for f in sorted(folder.glob("*.parquet"))
        ]
        files = [f for _, f in parts]
        tables = [pq.read_table(f) for f in files]
        whole = pa.concat_tables(tables)
        landed = np.concatenate(
            [np.full(t.num_rows, day >= cutoff) for (day, _), t in zip(parts, tables, strict=True)]
        )
        if (channel, table) in EVENTS:
            dated = pc.greater_equal(whole["local_date"], pa.scalar(cutoff, pa.date32()))
            landed &= dated.to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(landed)
        if len(rows) < 2:
            continue
        touched += len(rows)
        shuffled = rows[rng.permutation(len(rows))]
        for column in columns:
            values = whole[column].to_numpy(zero_copy_only=False).copy()
            values[rows] = values[shuffled]
            whole = whole.set_column(
                whole.schema.get_field_index(column), column, pa.array(values, whole[column].type)
            )
        offset = 0
        for f, part in zip(files, tables, strict=True):
            pq.write_table(whole.slice(offset, part.num_rows), f)
            offset += part.num_rows
    return touched


def changed_columns(before: pd.DataFrame, after: pd.DataFrame, keys: list[str]) -> list[str]:
    """Columns whose values differ between two computations of the same keyed rows."""
    a = before.sort_values(keys).reset_index(drop=True)
    b = after.sort_values(keys).reset_index(drop=True)
    assert a[keys].equals(b[keys]), "the two computations do not cover the same members"
    changed = []
    for column in a.columns:
        if column in keys:
            continue
        x, y = a[column], b[column]
        if pd.api.types.is_float_dtype(x) and pd.api.types.is_float_dtype(y):
            # sums of the same values in another order differ in the last bits
            same = pd.Series(np.isclose(x, y, rtol=1e-9, atol=1e-9, equal_nan=True))
        else:
            same = (x == y) | (x.isna() & y.isna())
        if not bool(same.all()):
            changed.append(column)
    return changed


def feature_columns_of(settings) -> list[str]:
    with read_warehouse(settings) as con:
        return feature_columns(con)


def features_at(settings, day: date) -> pd.DataFrame:
    with read_warehouse(settings) as con:
        return con.execute("select * from member_features where as_of_date = ?", [day]).df()


LEAKY_SQL = """
    select m.member_id, count(o.order_key) as orders_next_14d
    from dim_member m
    left join fct_orders o on o.member_id = m.member_id and o.is_purchase
        and o.order_date >= $day - 7 and o.order_date < $day + 14
    group by m.member_id
"""


@pytest.fixture(scope="module")
def original_and_scrambled(tmp_path_factory, built):
    original = published_copy(built, tmp_path_factory.mktemp("original"))
    ensure_features(original, [CUTOFF])
    home = tmp_path_factory.mktemp("scrambled") / "ws"
    shutil.copytree(original.home, home)
    scrambled = make_settings(home, built.data_dir)
    assert scramble_future(scrambled, CUTOFF) > 1000
    build_warehouse(scrambled, feature_dates=[CUTOFF], snapshot=False)
    return original, scrambled


def test_scrambling_what_happened_after_the_cutoff_changes_no_feature(original_and_scrambled):
    original, scrambled = original_and_scrambled
    before, after = features_at(original, CUTOFF), features_at(scrambled, CUTOFF)
    assert len(before) > 1000
    # tag columns are read back from a tag history rebuilt from today's facts; models do not learn from them
    tags = ["lifecycle_stage", "funnel_stage", "value_tier"]
    assert not set(tags) & set(feature_columns_of(original))
    changed = changed_columns(
        before.drop(columns=tags), after.drop(columns=tags), ["member_id", "as_of_date"]
    )
    assert changed == [], f"features at {CUTOFF} changed with what landed later: {changed}"


def test_a_feature_computed_from_after_the_cutoff_is_caught(original_and_scrambled):
    original, scrambled = original_and_scrambled
    with read_warehouse(original) as con:
        before = con.execute(LEAKY_SQL, {"day": CUTOFF}).df()
    with read_warehouse(scrambled) as con:
        after = con.execute(LEAKY_SQL, {"day": CUTOFF}).df()
    assert changed_columns(before, after, ["member_id"]) == ["orders_next_14d"]


def test_the_scramble_really_changed_the_future(original_and_scrambled):
    """Guard against a scramble that does nothing (which would make the first test pass vacuously)."""
    original, scrambled = original_and_scrambled
    later = date(2026, 3, 1)
    ensure_features(original, [later])
    ensure_features(scrambled, [later])
    changed = changed_columns(
        features_at(original, later), features_at(scrambled, later), ["member_id", "as_of_date"]
    )
    assert {"spend_total", "orders_total"} & set(changed)
