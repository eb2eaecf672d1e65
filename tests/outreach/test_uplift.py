"""Did it work? Two weeks of daily deliveries into a world that reacts, then the uplift report against the
world's counterfactual truth.

The business sample's world (devkit.world) hides who each message persuades: a care plan moves some new
members to a first order, a check-in reminder brings some back to the group, health reading moves nobody.
Each replayed day scores, plans and delivers; the world then writes what the sends caused, the warehouse is
built again, and ``memberflow outcomes report`` compares each segment's members sent with its holdout.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from datetime import date

import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from devkit.replay import days_between, replay
from devkit.world import World
from memberflow.api.access import AccessStore
from memberflow.api.app import create_app
from memberflow.cli import app
from memberflow.outreach.outcomes import outcomes_report, units
from memberflow.warehouse import read_warehouse
from tests.support import TEST_ID_KEY, browser_page, land_and_build, make_settings, query, screenshot

DAYS = days_between(date(2026, 2, 2), date(2026, 2, 15))  # two weeks, Monday to Sunday
REPORT_DAY = date(2026, 3, 1)  # the last landed day: every window of those two weeks has landed

# Half of each segment held out, so that two weeks of a 2,500-person sample give intervals worth reading.
SEGMENTS = textwrap.dedent(
    """
    version: 1
    segments:
      welcome_plan:
        description: new members get a care plan from their staff owner
        channel: wecom
        message: welcome_care_plan
        priority: 1
        daily_cap: 1000
        holdout: 0.5
        once_per: member
        when: {tenure_days: {max: 30}, has_wecom: true}
      checkin_back:
        description: members slipping from the check-in group
        channel: wecom
        message: checkin_reminder
        priority: 2
        daily_cap: 1000
        holdout: 0.5
        kind: service
        programme: in_checkin_group
        outcome: checkin
        outcome_days: 7
        when: {checkin_rate_7d: {max: 0.5}, has_wecom: true}
      reading:
        description: health reading for everyone else
        channel: webhook
        message: winback_content
        priority: 3
        daily_cap: 300
        holdout: 0.5
        cooldown_days: 14
        when: {lifecycle_stage: {not_in: [lost]}}
    """
)


@pytest.fixture(scope="module")
def reacted(tmp_path_factory, scored):
    """The scored workspace over its own copy of the sample, after the two weeks: replayed, reacted to by the
    world, built again. The segments above stay in force for the module's tests."""
    base = tmp_path_factory.mktemp("reacted")
    shutil.copytree(scored.home, base / "ws")
    shutil.copytree(scored.data_dir, base / "data")  # file times kept: only reactions are landed again
    (base / "segments.yml").write_text(SEGMENTS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEMBERFLOW_SEGMENTS", str(base / "segments.yml"))
        settings = make_settings(base / "ws", base / "data")
        replay(settings, DAYS, retry_runs=False)
        world = World(settings.data_dir)
        reacted = world.react(settings)
        assert reacted.orders > 0 and reacted.checkins > 0
        land_and_build(settings, settings.data_dir)
        yield settings, world


def test_uplift_intervals_hold_the_worlds_true_uplift(reacted, monkeypatch):
    settings, world = reacted

    rows = outcomes_report(settings, REPORT_DAY)
    with read_warehouse(settings) as con:
        compared = units(con, REPORT_DAY)
    truth = world.true_outcomes(settings, compared)
    true = {
        (r["segment"], r["week"].isoformat()): r["true_uplift"]
        for r in truth.group_by("segment", "week")
        .agg((pl.col("y1").cast(pl.Float64) - pl.col("y0").cast(pl.Float64)).mean().alias("true_uplift"))
        .to_dicts()
    }
    seen = [
        f"{r.segment} {r.week}: {r.treated}/{r.holdout} {r.uplift:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] "
        f"truth {true[(r.segment, r.week)]:+.3f}"
        for r in rows
    ]
    # every segment-week of the two weeks is reported, both arms of a fair size (half held out)
    assert {(r.segment, r.week) for r in rows} == set(true), seen
    assert all(r.treated >= 20 and r.holdout >= 20 for r in rows), seen
    assert all(0.5 < r.treated / r.holdout < 2 for r in rows), seen
    # the interval holds the true uplift (95 % intervals: one miss in six is allowed)
    covered = [r.ci_low <= true[(r.segment, r.week)] <= r.ci_high for r in rows]
    assert sum(covered) >= len(rows) - 1, seen
    by_key = {(r.segment, r.week): r for r in rows}
    # health reading persuades nobody: its intervals hold 0; the care plan's first week is seen above 0
    for week in ("2026-02-02", "2026-02-09"):
        reading = by_key[("reading", week)]
        assert true[("reading", week)] == 0 and reading.ci_low <= 0 <= reading.ci_high, seen
    assert by_key[("welcome_plan", "2026-02-02")].ci_low > 0, seen

    # the report's counts are the warehouse's: an independent count of the compared units
    counts = query(
        settings,
        f"""
        with firsts as (
            select segment, date_trunc('week', as_of) as week, member_id,
                arg_min(arm, as_of) as arm, arg_min(responded, as_of) as responded
            from segment_outcomes
            where arm <> 'ineligible' and window_complete and window_end <= date '{REPORT_DAY}' + 1
            group by 1, 2, 3
        )
        select segment, cast(week as date) as week,
            count(*) filter (arm = 'treated') as treated, count(*) filter (arm = 'holdout') as holdout,
            count(*) filter (arm = 'treated' and responded) as treated_responded,
            count(*) filter (arm = 'holdout' and responded) as holdout_responded
        from firsts group by 1, 2
        """,
    )
    expected = {(r.pop("segment"), r.pop("week").isoformat()): r for r in counts.to_dicts()}
    got = {
        (r.segment, r.week): {
            "treated": r.treated,
            "holdout": r.holdout,
            "treated_responded": r.treated_responded,
            "holdout_responded": r.holdout_responded,
        }
        for r in rows
    }
    assert got == expected

    # the same report as an ops user pulls it: the command's JSON and the API
    monkeypatch.setenv("MEMBERFLOW_HOME", str(settings.home))
    monkeypatch.setenv("MEMBERFLOW_ID_KEY", TEST_ID_KEY)
    result = CliRunner().invoke(app, ["outcomes", "report", "--as-of", REPORT_DAY.isoformat(), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert [r.to_dict() for r in rows] == printed
    keys = (
        "segment",
        "week",
        "treated",
        "holdout",
        "treated_rate",
        "holdout_rate",
        "uplift",
        "ci_low",
        "ci_high",
    )
    assert all(set(keys) <= set(item) for item in printed)
    token = AccessStore.open(settings).create("olivia", "ops").token
    with TestClient(create_app(settings)) as client:
        answer = client.get(f"/api/outcomes?as_of={REPORT_DAY}", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json() == printed


@pytest.mark.browser
def test_the_outcomes_page_charts_each_segments_weeks_with_their_intervals(reacted):
    """An ops user opens Outcomes: a card per segment with a chart (a point and an interval per week, an axis
    in percentage points) and the week's numbers as the report has them; in Chinese, then English."""
    settings, _ = reacted
    rows = outcomes_report(settings, REPORT_DAY)
    token = AccessStore.open(settings).create("olivia", "ops").token
    with browser_page(create_app(settings)) as page:
        page.goto(f"{page.base_url}/")
        page.fill("#token", token)
        page.click("#signin-form button")
        page.wait_for_selector("[data-testid=segments]")
        page.click("a[href='#/outcomes']")
        page.wait_for_selector("[data-testid=uplift-chart]")
        screenshot(page, "outcomes-zh")
        for segment in {r.segment for r in rows}:
            card = page.locator(f".card[data-segment={segment}]")
            weeks = [r for r in rows if r.segment == segment]
            assert card.locator("svg circle").count() == len(weeks)
            assert card.locator("svg line.zero").count() == 1  # the zero line is on the axis
            assert card.locator("svg text").count() > len(weeks) + 2  # ticks, the axis title, the weeks
            for r in weeks:
                shown = card.locator(f"tbody tr[data-week='{r.week}']").inner_text()
                assert f"{100 * r.uplift:+.1f} ({100 * r.ci_low:+.1f} … {100 * r.ci_high:+.1f})" in shown
        text = page.inner_text("#view")
        assert "提升(百分点)" in text and "尚不能确定" in text and "有提升" in text
        assert "interval" not in text  # every business string of the view is in Chinese
        page.click("[data-testid=lang]")
        page.wait_for_selector("text=Outcomes against the holdout")
        assert "Uplift (points)" in page.inner_text("#view")
        screenshot(page, "outcomes-en")
