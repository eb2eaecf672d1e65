"""Segment rules: the starter library loads; a broken file fails with the file, segment and field named."""

from __future__ import annotations

import textwrap

import pytest

from memberflow.segments import SegmentConfigError, load_segments, rule_fields

VALID = """
version: 1
segments:
  a:
    description: d
    channel: webhook
    message: first_order_offer
    priority: 2
    daily_cap: 10
    holdout: 0.1
    when:
      funnel_stage: prospect
"""


def write(tmp_path, text: str):
    path = tmp_path / "segments.yml"
    path.write_text(textwrap.dedent(text))
    return path


def test_starter_library_loads_in_priority_order():
    segments = load_segments()
    names = [s.name for s in segments]
    assert names[0] == "care_high_value_at_risk" and names[-1] == "silent_winback_content"
    assert [s.priority for s in segments] == sorted(s.priority for s in segments)
    by_name = {s.name: s for s in segments}
    # replenishment reveals what a member buys (test strips, bp medication): health-based without saying so
    assert by_name["replenishment_coupon_sms"].uses_health_data
    assert not by_name["new_member_care_plan"].uses_health_data
    assert {s.channel for s in segments} == {"wecom", "webhook", "sms", "file"}


def test_every_field_of_the_starter_library_is_known():
    fields = set(rule_fields())
    for segment in load_segments():
        assert set(segment.when) <= fields


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("funnel_stage: prospect", "funel_stage: prospect"),
            "segment 'a': unknown field 'funel_stage' (did you mean funnel_stage",
        ),
        (
            ("funnel_stage: prospect", "funnel_stage: prospekt"),
            "segment 'a': field 'funnel_stage' has no tag 'prospekt'",
        ),
        (
            ("funnel_stage: prospect", "interests: {any_of: [calcum]}"),
            "field 'interests' has no tag 'calcum'",
        ),
        (("funnel_stage: prospect", "value_tier: [120_280]"), "quote tags in YAML"),
        (("funnel_stage: prospect", "interests: calcium"), "field 'interests' is a list"),
        (("funnel_stage: prospect", "churn_decile: {above: 8}"), "segment 'a': field 'when.churn_decile"),
        (("channel: webhook", "channel: fax"), "segment 'a': field 'channel'"),
        (("holdout: 0.1", "holdout: 0.9"), "segment 'a': field 'holdout'"),
        (("message: first_order_offer", "message: free_money"), "segment 'a': unknown message 'free_money'"),
        (("    priority: 2\n", "    priority: 2\n    colour: red\n"), "segment 'a': field 'colour'"),
        (("version: 1", "version: 2"), "version"),
        # a rule on a score that keeps its top out is written backwards (decile 10 is the top tenth)
        (
            ("funnel_stage: prospect", "conversion_decile: {max: 3}"),
            "field 'conversion_decile' selects 1-3, which keeps out the top of the score",
        ),
        (
            ("funnel_stage: prospect", "churn_probability: {min: 0.05, max: 0.15}"),
            "field 'churn_probability' selects 0.05-0.15, which keeps out the top",
        ),
        (("funnel_stage: prospect", "churn_decile: [1, 2]"), "field 'churn_decile' selects 1-2"),
        (("funnel_stage: prospect", "churn_decile: {not_in: [10]}"), "is a score: use min / max"),
        (
            ("funnel_stage: prospect", "churn_decile: {min: 8}\n    direction: low"),
            "field 'churn_decile' selects 8-10, but the segment says 'direction: low'",
        ),
        (
            ("    priority: 2\n", "    priority: 2\n    kind: service\n"),
            "a service segment names the programme that implies its message",
        ),
        (
            ("    priority: 2\n", "    priority: 2\n    once_per: due_cycle\n"),
            "once_per: due_cycle needs a rule on days_until_next_due",
        ),
        (("    priority: 2\n", "    priority: 2\n    cooldown_days: 0\n"), "field 'cooldown_days'"),
    ],
)
def test_a_broken_rule_names_file_segment_and_field(tmp_path, change, message):
    path = write(tmp_path, VALID.replace(*change))
    with pytest.raises(SegmentConfigError) as info:
        load_segments(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_every_score_rule_of_the_starter_library_reaches_the_top_of_its_score():
    """The rules read deciles as 10 = top tenth: the likely-to-buy and likely-to-convert segments take the
    upper deciles of their model (the starter library once took the bottom ones), and the at-risk care
    list a churn probability of 30 % or more."""
    scored = {s.name: s for s in load_segments() if s.score_fields}
    assert set(scored) == {
        "care_high_value_at_risk",
        "replenishment_coupon_miniprogram",
        "replenishment_coupon_sms",
        "prospect_first_order",
    }
    for segment in scored.values():
        assert segment.direction == "high"
        for name in segment.score_fields:
            floor = 7 if name.endswith("_decile") else 0.3
            assert segment.when[name].min >= floor and segment.when[name].max is None, segment.name


def test_a_low_end_segment_says_so(tmp_path):
    text = VALID.replace("funnel_stage: prospect", "churn_decile: {max: 2}\n    direction: low")
    (segment,) = load_segments(write(tmp_path, text))
    assert segment.direction == "low" and segment.score_fields == ["churn_decile"]


def test_priorities_must_be_unique(tmp_path):
    second = VALID.split("segments:\n")[1].replace("  a:", "  b:")
    path = write(tmp_path, VALID + second)
    with pytest.raises(SegmentConfigError, match=r"priorities must be unique \(repeated: \[2\]\)"):
        load_segments(path)


def test_missing_file_and_bad_yaml_are_clear(tmp_path):
    with pytest.raises(SegmentConfigError, match="segments file not found"):
        load_segments(tmp_path / "nope.yml")
    with pytest.raises(SegmentConfigError, match="not valid YAML"):
        load_segments(write(tmp_path, "segments: [\n"))
