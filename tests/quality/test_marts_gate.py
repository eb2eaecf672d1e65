"""The marts gate on a clean build and on the defects it guards against, planted in a warehouse copy."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest

from expectations.marts import SUITES, gate_warehouse
from expectations.runner import QualityGateError
from memberflow.warehouse import NotPublishedError, published_marker, require_published
from tests.support import DAYS, START

DAY = START + timedelta(days=DAYS - 1)


def plant(settings, *statements: str) -> None:
    """Change the built warehouse as a faulty model or a bypassed contract would."""
    with duckdb.connect(str(settings.warehouse_path)) as con:
        for sql in statements:
            con.execute(sql)


def unconstrained(table: str) -> str:
    # dbt's enforced contract made the table with NOT NULL constraints: a copy without them
    return f"create or replace table {table} as select * from {table}"


def failure(settings, day=DAY) -> str:
    with pytest.raises(QualityGateError) as info:
        gate_warehouse(settings, day)
    assert not published_marker(settings, "marts").exists()
    with pytest.raises(NotPublishedError):
        require_published(settings)
    return str(info.value)


def test_a_clean_build_passes_and_is_published(workspace_copy):
    result = gate_warehouse(workspace_copy, DAY)
    assert result.ok and result.status == "passed"
    assert (
        {s.subject for s in result.suites}
        == set(SUITES["marts"])
        == {
            "dim_member",
            "member_identifiers",
            "member_tags",
            "member_features",
        }
    )
    assert require_published(workspace_copy)["date"] == DAY.isoformat()
    folder = workspace_copy.quality_dir / "results" / "marts" / f"dt={DAY.isoformat()}"
    assert (folder / "_gate.json").exists() and (folder / "dim_member.gx.json").exists()
    assert (workspace_copy.quality_dir / "docs" / "index.html").exists()
    members = next(s for s in result.suites if s.subject == "dim_member")
    assert members.rows > 2000 and "member count not compared" in members.notes[0]


def test_a_null_member_id_fails(workspace_copy):
    plant(
        workspace_copy,
        unconstrained("dim_member"),
        "update dim_member set member_id = null where member_id = (select min(member_id) from dim_member)",
    )
    message = failure(workspace_copy)
    assert "marts gate, dim_member 2026-03-01: expect_column_values_to_not_be_null(member_id)" in message
    assert "observed 1 of" in message


def test_an_identifier_mapped_to_two_members_fails(workspace_copy):
    plant(
        workspace_copy,
        "insert into member_identifiers select member_id || 'x', id_type, id_value, first_seen_on, "
        "first_channel, channels from member_identifiers where id_type = 'phone_token' limit 1",
    )
    message = failure(workspace_copy)
    assert "member_identifiers 2026-03-01: expect_compound_columns_to_be_unique(id_type,id_value)" in message
    assert "[identifier_one_member, critical]" in message and "observed 2 of" in message


def test_an_unknown_tag_value_fails(workspace_copy):
    plant(
        workspace_copy,
        "update member_tags set tag_value = 'vip' where tag_group = 'lifecycle' and tag_value = 'active'",
    )
    message = failure(workspace_copy)
    assert "member_tags 2026-03-01: expect_column_values_to_be_in_set(tag)" in message
    assert '"lifecycle:vip"' in message


def test_features_out_of_range_fail(workspace_copy):
    """Also in a nullable day count, which GX is handed as floats (its range check compares other types
    value by value in Python): the one planted value is counted and shown as stored, and the members
    without an order (null) are not."""
    plant(
        workspace_copy,
        "update member_features set checkin_rate_7d = checkin_rate_7d + 2",
        "update member_features set days_since_last_order = -5 where member_id = "
        "(select min(member_id) from member_features where days_since_last_order is not null)",
    )
    with duckdb.connect(str(workspace_copy.warehouse_path), read_only=True) as con:
        nulls = con.execute(
            "select count(*) from member_features where days_since_last_order is null"
        ).fetchall()
    assert nulls[0][0] > 100
    message = failure(workspace_copy)
    assert "member_features 2026-03-01: expect_column_values_to_be_between(checkin_rate_7d)" in message
    assert "[feature_ranges, critical]" in message
    line = next(m for m in message.splitlines() if "to_be_between(days_since_last_order)" in m)
    assert "observed 1 of" in line and line.endswith("e.g. -5"), line


def test_a_member_count_that_drops_day_over_day_fails(workspace_copy):
    assert gate_warehouse(workspace_copy, DAY).ok
    plant(workspace_copy, "delete from dim_member where hash(member_id) % 5 = 0")
    message = failure(workspace_copy, DAY + timedelta(days=1))
    assert (
        "dim_member 2026-03-02: expect_table_row_count_to_be_between [member_count_change, critical]"
        in message
    )
