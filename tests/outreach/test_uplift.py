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
from datetime import date, datetime
from pathlib import Path

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
from memberflow.outreach.suppression import CHINA
from memberflow.warehouse import read_warehouse
from ml.datasets import prepare_frame
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
        when: {checkin_rate_7d: {max: 0.72}, has_wecom: true}  # missed two days or more of the last seven
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

    def signed(value) -> str:
        return "–" if value is None else f"{value:+.3f}"

    seen = [
        f"{r.segment} {r.week}: {r.treated}/{r.holdout} {signed(r.uplift)} [{signed(r.ci_low)}, "
        f"{signed(r.ci_high)}] truth {signed(true.get((r.segment, r.week)))}"
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
    command = ["outcomes", "report", "--as-of", REPORT_DAY.isoformat(), "--json", "--mlflow"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert [r.to_dict() for r in rows] == printed
    # and the run an ML engineer finds in MLflow: the same rows, the newest week's figures as metrics
    import mlflow

    from ml.registry import connect, experiment_id

    (run,) = connect(settings).search_runs([experiment_id(settings, "outcomes")])
    artifact = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="uplift_report.json")
    assert json.loads(Path(artifact).read_text()) == printed
    newest = by_key[("welcome_plan", "2026-02-09")]
    assert run.data.metrics["welcome_plan.uplift"] == pytest.approx(newest.uplift)
    assert run.data.metrics["welcome_plan.holdout"] == newest.holdout
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


def test_a_promoted_uplift_model_ranks_the_segment_under_its_cap(reacted, monkeypatch):
    """Two weeks are too little history for the rule; with one week to train and one to backtest, the
    segment's model is trained, logged and registered, and once it is champion the daily cap keeps the
    members it predicts the message moves most."""
    import lightgbm
    import mlflow

    from memberflow.outreach import uplift
    from memberflow.outreach.run import plan
    from memberflow.outreach.suppression import History, decide
    from memberflow.segments import assign, load_segments, member_profiles
    from ml.registry import connect, registered_name

    settings, _ = reacted
    monkeypatch.setenv("MEMBERFLOW_HOME", str(settings.home))
    monkeypatch.setenv("MEMBERFLOW_ID_KEY", TEST_ID_KEY)
    args = ["models", "uplift", "--as-of", REPORT_DAY.isoformat(), "--segment", "welcome_plan"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit), refused.exception
    assert "2 week(s) of matured outcomes" in refused.output and "keep delivering" in refused.output

    for name, value in {
        "VALIDATION_WEEKS": 1,
        "MIN_HOLDOUT": 50,
        "MIN_RESPONDERS": 5,
        "MIN_VALIDATION_HOLDOUT": 50,
    }.items():
        monkeypatch.setattr(uplift, name, value)
    trained = CliRunner().invoke(app, [*args, "--json"])
    assert trained.exit_code == 0, trained.output
    (result,) = json.loads(trained.stdout)["trained"]
    assert result["train_weeks"] == ["2026-02-02"] and result["validation_weeks"] == ["2026-02-09"]
    assert result["baseline"] == "random order"  # the segment has no rank_by of its own
    rule = (
        result["qini_uplift"] > result["qini_baseline"]
        and min(result["wins"], result["beats_random"]) >= uplift.CONFIDENCE
    )
    assert result["champion"] == result["promote"] == rule
    assert (uplift.champion_version(settings, "welcome_plan") == result["version"]) == rule
    # whatever this sample's backtest said, an ML engineer can make the version champion (as a rollback
    # does); the segment then ranks by it
    client = connect(settings)
    name = registered_name(uplift.model_key("welcome_plan"))
    client.set_registered_model_alias(name, "champion", result["version"])

    day = date(2026, 2, 15)
    segment = next(s for s in load_segments() if s.name == "welcome_plan").model_copy(
        update={"daily_cap": 25, "holdout": 0.0, "rank_by_uplift": True, "once_per": None}
    )
    with read_warehouse(settings) as con:
        profiles = member_profiles(con, day)
    assigned = assign(profiles, [segment]).frame
    ranked, by = uplift.rank_frame(settings, assigned, [segment])
    assert by == {"welcome_plan": f"uplift model v{result['version']}"}
    decided = decide(ranked, {"welcome_plan": 25}, History(), day, datetime(2026, 2, 15, 10, tzinfo=CHINA))
    in_race = decided.filter(pl.col("status").eq("send") | pl.col("reason").eq("segment_daily_cap"))
    assert in_race.height > 25
    # the uplift of each member in the race, predicted independently from the registered artifacts
    folder = Path(
        mlflow.artifacts.download_artifacts(client.get_model_version(name, result["version"]).source)
    )
    features = json.loads((folder / "uplift.json").read_text())["features"]
    x = prepare_frame(in_race.select("member_id", "as_of_date", *features).to_pandas())
    predicted = lightgbm.Booster(model_file=str(folder / "treated.txt")).predict(
        x[features]
    ) - lightgbm.Booster(model_file=str(folder / "holdout.txt")).predict(x[features])
    raced = in_race.with_columns(predicted=pl.Series(predicted))
    sent = raced.filter(pl.col("status") == "send")
    capped = raced.filter(pl.col("status") != "send")
    assert sent.height == 25 and capped.height > 0
    assert sent["predicted"].min() >= capped["predicted"].max(), (sent["predicted"], capped["predicted"])
    assert raced["predicted"].n_unique() > 25  # the model tells the members apart: the order is its own
    # the day's plan says what ranked the segment
    summary = plan(settings, day, segments=[segment]).summary()
    assert summary["welcome_plan"]["ranked_by"] == f"uplift model v{result['version']}"


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
            # two labelled ticks or more, the axis title, the weeks
            assert card.locator("svg text").count() >= len(weeks) + 3
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
