"""Dated tags and point-in-time features on the built sample."""

from __future__ import annotations

from datetime import timedelta

from tests.support import DAYS, START, query


def test_every_member_has_exactly_one_lifecycle_stage_on_every_day(built):
    overlaps = query(
        built,
        f"""
        with days as (
            select unnest(range(date '{START}', date '{START + timedelta(days=DAYS)}', interval 1 day))::date
                as d
        )
        select m.member_id, days.d, count(t.tag_value) as stages
        from dim_member m
        join days on days.d >= m.first_seen_on
        left join member_tags t on t.member_id = m.member_id and t.tag_group = 'lifecycle'
            and t.valid_from <= days.d and (t.valid_to is null or t.valid_to > days.d)
        group by all
        having count(t.tag_value) != 1
        """,
    )
    assert overlaps.height == 0, overlaps.head()


def test_tags_of_a_past_day_can_be_read_back(built):
    day = START + timedelta(days=30)
    stages = query(
        built,
        f"""
        select tag_value, count(*) as members from member_tags
        where tag_group = 'lifecycle'
            and valid_from <= date '{day}' and (valid_to is null or valid_to > date '{day}')
        group by tag_value
        """,
    )
    counts = dict(stages.rows())
    assert {"new", "active", "at_risk"} <= set(counts)
    health = query(
        built,
        "select distinct health_related, health_consent_on_record from member_tags "
        "where tag_group = 'interest'",
    )
    assert health.height >= 3  # health and non-health interests, with and without consent


def test_features_for_several_cutoffs_use_only_earlier_data(workspace_copy):
    from memberflow.transform import build_warehouse

    cutoffs = [START + timedelta(days=20), START + timedelta(days=40)]
    build_warehouse(workspace_copy, feature_dates=cutoffs)
    dates = query(workspace_copy, "select distinct as_of_date from member_features order by 1")
    # incremental by as-of date: the cutoffs join the dates earlier builds computed
    assert set(cutoffs) <= set(dates["as_of_date"].to_list())
    features = query(
        workspace_copy,
        "select as_of_date, sum(orders_total) as orders, count(*) as members from member_features "
        f"where as_of_date in ('{cutoffs[0]}', '{cutoffs[1]}') group by 1 order by 1",
    )
    assert [row[0] for row in features.rows()] == cutoffs
    for cutoff, orders, members in features.rows():
        # each order as known on the cutoff: its newest version landed before it
        expected = query(
            workspace_copy,
            f"""
            select count(*) as n from (
                select v.order_key, v.is_purchase, v.order_date
                from int_member_order_versions v join dim_member m using (member_id)
                where v.loaded_on < date '{cutoff}' and m.first_seen_on < date '{cutoff}'
                qualify row_number() over (
                    partition by v.order_key order by v.updated_at desc, v.loaded_on desc
                ) = 1
            ) where is_purchase and order_date < date '{cutoff}'
            """,
        )["n"][0]
        assert orders == expected
        born = query(
            workspace_copy, f"select count(*) as n from dim_member where first_seen_on < date '{cutoff}'"
        )
        assert members == born["n"][0]
    assert features["orders"][0] < features["orders"][1]
