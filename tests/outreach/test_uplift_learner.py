"""The uplift learner and its promotion rule on worlds whose truth is known by construction.

No warehouse: frames shaped like ``memberflow.outreach.uplift.uplift_frame``'s, drawn so that the members a
message moves are not the ones a propensity ranking puts first (the middling engaged are persuadable, the
most engaged buy anyway). The rule must promote the uplift model there, and must not where the message
moves everyone alike (nothing to rank by).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from memberflow.outreach import uplift
from memberflow.outreach.uplift import UpliftError, backtest, qini, qini_area
from memberflow.segments import Segment

SEGMENT = Segment(
    name="care",
    description="care call",
    channel="wecom",
    message="care_checkin",
    priority=1,
    daily_cap=100,
    holdout=0.5,
    rank_by="repurchase_probability",
    when={"tenure_days": {"min": 0}},
)


def world(effect, weeks: int = 5, per_week: int = 2400, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """Decisions over ``weeks``: half held out; ``effect(engagement)`` is each member's true uplift.
    Returns the frame and the true uplift of each row."""
    rng = np.random.default_rng(seed)
    n = weeks * per_week
    engagement = rng.uniform(0, 1, n)
    spend = rng.gamma(2.0, 100.0, n)
    noise = rng.normal(0, 1, n)
    base = 0.04 + 0.30 * engagement**2  # the most engaged buy anyway
    tau = effect(engagement)
    treated = rng.uniform(0, 1, n) < 0.5
    responded = rng.uniform(0, 1, n) < base + treated * tau
    start = pd.Timestamp("2026-03-02")
    frame = pd.DataFrame(
        {
            "member_id": [f"m{i}" for i in range(n)],
            "week": [start + pd.Timedelta(weeks=i // per_week) for i in range(n)],
            "treated": treated,
            "responded": responded.astype(int),
            "baseline": base + rng.normal(0, 0.01, n),  # a good propensity model
            "tie": rng.uniform(0, 1, n),
            "engagement": engagement.astype("float32"),
            "spend": spend.astype("float32"),
            "noise": noise.astype("float32"),
        }
    )
    return frame, tau


FEATURES = ["engagement", "spend", "noise"]


def test_qini_counts_the_responses_a_ranking_adds_by_hand():
    # ranked by score: T1 T0 C1 T1 C0 C0 (T treated, C held out; 1 responded)
    score = np.array([6, 5, 4, 3, 2, 1], dtype=float)
    treated = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    y = np.array([1, 0, 1, 1, 0, 0])
    tie = np.zeros(6)
    curve = qini(score, tie, treated, y)
    fractions = uplift.FRACTIONS
    # top 3 (fraction 0.5): treated 2 with 1 responder, held out 1 with 1: 1 - 1 * 2/1 = -1
    assert curve[np.isclose(fractions, 0.5)][0] == pytest.approx(-1.0)
    # all 6: treated 3 with 2 responders, held out 3 with 1: 2 - 1 * 3/3 = 1
    assert curve[-1] == pytest.approx(1.0)
    # top 1 (fractions up to 1/6): no one held out yet: nothing is credited
    assert curve[0] == 0.0
    # the area is the mean gain over a random order's line, per unit; a random score's is near 0
    assert qini_area(score, tie, treated, y) == pytest.approx(np.mean(curve - fractions * curve[-1]) / 6)
    # a missing score ranks last
    missing = score.copy()
    missing[0] = np.nan
    assert qini(missing, tie, treated, y)[-1] == pytest.approx(1.0)


def test_uplift_ranking_is_promoted_where_the_persuadable_are_not_the_likely_buyers():
    frame, tau = world(lambda e: 0.30 * 4 * e * (1 - e))  # the middling engaged are moved most
    result, learner = backtest(frame, FEATURES, SEGMENT)
    assert result.validation_weeks == ["2026-03-23", "2026-03-30"]
    assert result.train_units == 3 * 2400 and result.validation_units == 2 * 2400
    assert result.qini_uplift > result.qini_baseline
    assert result.promote and result.wins >= uplift.CONFIDENCE, result.reason
    # and the promoted ranking reaches the persuadable: true uplift of the top 30 % of the backtest weeks
    valid = frame["week"] >= pd.Timestamp(result.validation_weeks[0])
    top = int(0.3 * valid.sum())
    truth = tau[valid.to_numpy()]
    by_uplift = truth[np.argsort(-learner.predict(frame[valid]))[:top]].mean()
    by_propensity = truth[np.argsort(-frame.loc[valid, "baseline"].to_numpy())[:top]].mean()
    assert by_uplift > 1.3 * by_propensity, (by_uplift, by_propensity)


def test_uplift_ranking_is_not_promoted_when_the_message_moves_everyone_alike():
    frame, _ = world(lambda e: np.full_like(e, 0.08))
    result, _ = backtest(frame, FEATURES, SEGMENT)
    assert not result.promote, result.reason
    assert "promotion needs both" in result.reason


def test_too_little_holdout_history_says_what_the_segment_needs():
    frame, _ = world(lambda e: 0.1 * e, weeks=2)
    with pytest.raises(UpliftError, match=r"2 week\(s\) of matured outcomes.*keep delivering with a holdout"):
        backtest(frame, FEATURES, SEGMENT)
    small, _ = world(lambda e: 0.1 * e, weeks=4, per_week=150)
    with pytest.raises(UpliftError, match="the learner needs at least 200 held out"):
        backtest(small, FEATURES, SEGMENT)
