"""Reason codes: a member's top contributions (LightGBM ``pred_contrib``) as sentences ops understand.

Only contributions that push the probability up are reasons ("why is this member likely to …"). Each
feature has a sentence that carries the member's own value: "no activity for 12 days", "test strips due in
3 days", "4 orders in the last 90 days".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from memberflow.core.vocab import CATEGORIES, CONSUMABLES

CATEGORY_LABELS = {name: CATEGORIES[name].label for name in CONSUMABLES}


def _n(v: float) -> str:
    return f"{round(v):,}"


def _money(v: float) -> str:
    return f"¥{v:,.0f}"


def _trend(v: float, unit: str, what: str) -> str:
    return f"{what} {'down' if v < 0 else 'up'} {abs(v):.0f}{unit} on the weeks before"


def _due(label: str) -> Callable[[float], str]:
    def sentence(v: float) -> str:
        if v > 0:
            return f"{label} due in {_n(v)} days"
        if v == 0:
            return f"{label} due today"
        return f"{label} overdue by {_n(-v)} days"

    return sentence


SENTENCES: dict[str, Callable[[float], str]] = {
    "tenure_days": lambda v: f"member for {_n(v)} days",
    "channels_used": lambda v: "reachable on 1 channel" if v == 1 else f"reachable on {_n(v)} channels",
    "orders_total": lambda v: f"{_n(v)} orders so far",
    "orders_90d": lambda v: f"{_n(v)} orders in the last 90 days",
    "spend_total": lambda v: f"spent {_money(v)} so far",
    "spend_90d": lambda v: f"spent {_money(v)} in the last 90 days",
    "days_since_last_order": lambda v: f"last order {_n(v)} days ago",
    "days_since_first_order": lambda v: f"first order {_n(v)} days ago",
    "purchase_days": lambda v: f"bought on {_n(v)} different days",
    "purchase_overdue_ratio": lambda v: (
        f"next purchase {v:.1f}× past the usual interval"
        if v >= 1
        else f"{v:.0%} into the usual purchase interval"
    ),
    "avg_order_value": lambda v: f"average order {_money(v)}",
    "purchase_gap_mean": lambda v: f"buys every {_n(v)} days on average",
    "purchase_gap_std": lambda v: f"purchase rhythm varies by ±{_n(v)} days",
    "purchase_gap_last": lambda v: f"{_n(v)} days between the last two orders",
    "baby_age_months": lambda v: f"baby about {_n(v)} months old",
    "checkin_days_7d": lambda v: (
        "no check-in in the last 7 days" if v == 0 else f"checked in {_n(v)} of the last 7 days"
    ),
    "checkin_days_prev_21d": lambda v: f"checked in {_n(v)} days in the 3 weeks before",
    "checkin_rate_7d": lambda v: f"check-in rate {v:.0%} this week",
    "checkin_rate_prev_21d": lambda v: f"check-in rate {v:.0%} in the 3 weeks before",
    "checkin_rate_change": lambda v: _trend(v * 100, " points", "check-in rate"),
    "checkin_streak": lambda v: "no current check-in streak" if v == 0 else f"{_n(v)}-day check-in streak",
    "live_minutes_30d": lambda v: f"watched {_n(v)} livestream minutes in 30 days",
    "live_minutes_prev_30d": lambda v: f"watched {_n(v)} livestream minutes the month before",
    "live_minutes_trend": lambda v: _trend(v, " min", "livestream watching"),
    "live_sessions_30d": lambda v: f"{_n(v)} livestreams in 30 days",
    "mp_visits_30d": lambda v: (
        "no mini-program visit in 30 days" if v == 0 else f"{_n(v)} mini-program visits in 30 days"
    ),
    "mp_events_30d": lambda v: f"{_n(v)} mini-program actions in 30 days",
    "article_views_30d": lambda v: f"read {_n(v)} articles in 30 days",
    "group_messages_30d": lambda v: f"{_n(v)} group messages in 30 days",
    "days_since_last_activity": lambda v: f"no activity for {_n(v)} days",
}

MISSING = {
    "days_since_last_order": "no order yet",
    "days_since_first_order": "no order yet",
    "purchase_overdue_ratio": "fewer than two purchase days",
    "purchase_gap_mean": "fewer than two purchase days",
    "purchase_gap_std": "fewer than three purchase days",
    "purchase_gap_last": "fewer than two purchase days",
    "avg_order_value": "no order yet",
    "baby_age_months": "no infant-formula purchase",
}
for _key, _label in CATEGORY_LABELS.items():
    SENTENCES[f"orders_{_key}"] = lambda v, lb=_label: f"{_n(v)} {lb} orders"
    SENTENCES[f"spend_{_key}"] = lambda v, lb=_label: f"spent {_money(v)} on {lb}"
    SENTENCES[f"days_since_{_key}"] = lambda v, lb=_label: f"last bought {lb} {_n(v)} days ago"
    SENTENCES[f"days_until_due_{_key}"] = _due(_label)
    MISSING[f"days_since_{_key}"] = f"never bought {_label}"
    MISSING[f"days_until_due_{_key}"] = f"never bought {_label}"

CATEGORICAL_SENTENCES = {
    "acquisition_channel": "came in through {}",
    "lifecycle_stage": "lifecycle stage: {}",
    "funnel_stage": "funnel stage: {}",
    "value_tier": "order value tier: {}",
}


def sentence(feature: str, value) -> str:
    """The sentence for one feature value; unknown features fall back to "name = value"."""
    if feature in CATEGORICAL_SENTENCES:
        return CATEGORICAL_SENTENCES[feature].format("unknown" if value is None or value != value else value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING.get(feature, f"{feature.replace('_', ' ')} unknown")
    make = SENTENCES.get(feature)
    return make(float(value)) if make else f"{feature.replace('_', ' ')} = {value}"


def top_reasons(contrib: np.ndarray, frame: pd.DataFrame, features: list[str], k: int = 3) -> list[list[str]]:
    """For each row, sentences of the ``k`` features that push its probability up the most.

    ``contrib``: rows × (features + 1) from ``Booster.predict(pred_contrib=True)`` (last column: bias).
    """
    values = contrib[:, : len(features)]
    k = min(k, len(features))
    top = np.argpartition(-values, k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(values, top, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    positive = np.take_along_axis(picked, order, axis=1) > 0
    columns = {f: frame[f].to_numpy(dtype=object) for f in features}
    reasons: list[list[str]] = [[] for _ in range(len(frame))]
    for slot in range(k):
        feature_idx = top[:, slot]
        for fi in np.unique(feature_idx):
            rows = np.flatnonzero((feature_idx == fi) & positive[:, slot])
            name = features[fi]
            column = columns[name]
            for row in rows:
                reasons[row].append(sentence(name, column[row]))
    return reasons
