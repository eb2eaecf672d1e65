"""Reason codes: a member's top contributions (LightGBM ``pred_contrib``) as sentences ops understand.

Only contributions that push the probability up are reasons ("why is this member likely to …"). Each
feature has a sentence that carries the member's own value, in English and in Chinese: "no activity for 12
days" / "已 12 天没有互动", "test strips due in 3 days" / "血糖试纸 3 天后用完".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from memberflow.core.vocab import CATEGORIES, CONSUMABLES, label

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


def _due_zh(name: str) -> Callable[[float], str]:
    def sentence(v: float) -> str:
        if v > 0:
            return f"{name} {_n(v)} 天后用完"
        if v == 0:
            return f"{name}今天用完"
        return f"{name}已用完 {_n(-v)} 天"

    return sentence


def _trend_zh(v: float, unit: str, what: str) -> str:
    return f"{what}比前几周{'减少' if v < 0 else '增加'} {abs(v):.0f}{unit}"


SENTENCES_ZH: dict[str, Callable[[float], str]] = {
    "tenure_days": lambda v: f"入会 {_n(v)} 天",
    "channels_used": lambda v: f"可通过 {_n(v)} 个渠道联系",
    "orders_total": lambda v: f"累计 {_n(v)} 笔订单",
    "orders_90d": lambda v: f"近 90 天 {_n(v)} 笔订单",
    "spend_total": lambda v: f"累计消费 {_money(v)}",
    "spend_90d": lambda v: f"近 90 天消费 {_money(v)}",
    "days_since_last_order": lambda v: f"上次下单在 {_n(v)} 天前",
    "days_since_first_order": lambda v: f"首单在 {_n(v)} 天前",
    "purchase_days": lambda v: f"在 {_n(v)} 个不同的日子购买过",
    "purchase_overdue_ratio": lambda v: (
        f"距上次购买已是平常间隔的 {v:.1f} 倍" if v >= 1 else f"已过平常购买间隔的 {v:.0%}"
    ),
    "avg_order_value": lambda v: f"平均客单价 {_money(v)}",
    "purchase_gap_mean": lambda v: f"平均每 {_n(v)} 天购买一次",
    "purchase_gap_std": lambda v: f"购买间隔波动 ±{_n(v)} 天",
    "purchase_gap_last": lambda v: f"最近两笔订单相隔 {_n(v)} 天",
    "baby_age_months": lambda v: f"宝宝约 {_n(v)} 个月大",
    "checkin_days_7d": lambda v: "近 7 天没有打卡" if v == 0 else f"近 7 天打卡 {_n(v)} 天",
    "checkin_days_prev_21d": lambda v: f"之前 3 周打卡 {_n(v)} 天",
    "checkin_rate_7d": lambda v: f"本周打卡率 {v:.0%}",
    "checkin_rate_prev_21d": lambda v: f"之前 3 周打卡率 {v:.0%}",
    "checkin_rate_change": lambda v: _trend_zh(v * 100, " 个百分点", "打卡率"),
    "checkin_streak": lambda v: "目前没有连续打卡" if v == 0 else f"已连续打卡 {_n(v)} 天",
    "live_minutes_30d": lambda v: f"近 30 天看直播 {_n(v)} 分钟",
    "live_minutes_prev_30d": lambda v: f"上个月看直播 {_n(v)} 分钟",
    "live_minutes_trend": lambda v: _trend_zh(v, " 分钟", "看直播时长"),
    "live_sessions_30d": lambda v: f"近 30 天看了 {_n(v)} 场直播",
    "mp_visits_30d": lambda v: "近 30 天没有访问小程序" if v == 0 else f"近 30 天访问小程序 {_n(v)} 次",
    "mp_events_30d": lambda v: f"近 30 天在小程序操作 {_n(v)} 次",
    "article_views_30d": lambda v: f"近 30 天阅读 {_n(v)} 篇文章",
    "group_messages_30d": lambda v: f"近 30 天在群里发言 {_n(v)} 次",
    "days_since_last_activity": lambda v: f"已 {_n(v)} 天没有互动",
}
MISSING_ZH = {
    "days_since_last_order": "还没有下单",
    "days_since_first_order": "还没有下单",
    "purchase_overdue_ratio": "购买不足两天",
    "purchase_gap_mean": "购买不足两天",
    "purchase_gap_std": "购买不足三天",
    "purchase_gap_last": "购买不足两天",
    "avg_order_value": "还没有下单",
    "baby_age_months": "没有购买过婴儿奶粉",
}
for _key in CONSUMABLES:
    _zh = CATEGORIES[_key].label_zh
    SENTENCES_ZH[f"orders_{_key}"] = lambda v, lb=_zh: f"买过 {_n(v)} 次{lb}"
    SENTENCES_ZH[f"spend_{_key}"] = lambda v, lb=_zh: f"在{lb}上消费 {_money(v)}"
    SENTENCES_ZH[f"days_since_{_key}"] = lambda v, lb=_zh: f"{_n(v)} 天前买过{lb}"
    SENTENCES_ZH[f"days_until_due_{_key}"] = _due_zh(_zh)
    MISSING_ZH[f"days_since_{_key}"] = f"没有买过{_zh}"
    MISSING_ZH[f"days_until_due_{_key}"] = f"没有买过{_zh}"

# categorical features: the template and the vocabulary group whose labels fill it
CATEGORICAL = {
    "acquisition_channel": ("came in through {}", "通过{}加入", "acquisition_channel"),
    "lifecycle_stage": ("lifecycle stage: {}", "生命周期:{}", "lifecycle"),
    "funnel_stage": ("funnel stage: {}", "转化阶段:{}", "funnel_stage"),
    "value_tier": ("order value tier: {}", "价值层级:{}", "value_tier"),
}
LANGS = ("en", "zh")


def sentence(feature: str, value, lang: str = "en") -> str:
    """The sentence for one feature value in ``lang`` (en, zh); an unknown feature reads "name = value"."""
    zh = lang == "zh"
    if feature in CATEGORICAL:
        en_text, zh_text, group = CATEGORICAL[feature]
        missing = value is None or value != value
        if not zh:  # English keeps the value as stored (the tag the page and exports show)
            return en_text.format("unknown" if missing else value)
        return zh_text.format(label(group, None if missing else value, "zh"))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        found = (MISSING_ZH if zh else MISSING).get(feature)
        return found or (f"{feature} 未知" if zh else f"{feature.replace('_', ' ')} unknown")
    make = (SENTENCES_ZH if zh else SENTENCES).get(feature)
    return make(float(value)) if make else f"{feature.replace('_', ' ')} = {value}"


def top_reasons(
    contrib: np.ndarray, frame: pd.DataFrame, features: list[str], k: int = 3, lang: str = "en"
) -> list[list[str]]:
    """For each row, sentences in ``lang`` of the ``k`` features that push its probability up the most.

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
                reasons[row].append(sentence(name, column[row], lang))
    return reasons
