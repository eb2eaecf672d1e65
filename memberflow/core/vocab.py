"""Every fixed vocabulary of the project, each defined once: the models, the channels, identifier types,
consent scopes, tag values and the product category catalogue.

The category catalogue lives in the dbt project's variables (``category_catalog`` in dbt_project.yml), so
the warehouse's ``category_catalog`` table and the Python code read the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from memberflow.core.settings import REPO_ROOT

MODELS = ("repurchase", "churn", "conversion")
# the landing channels (DESIGN §3), in the order members usually first meet the brand
ACQUISITION_CHANNELS = ("wecom", "miniprogram", "livestream", "store_pos", "ecommerce", "insurance")
# outreach systems a segment can push to
OUTREACH_CHANNELS = ("wecom", "webhook", "sms", "file")
ID_TYPES = ("unionid", "openid", "external_userid", "card_no", "buyer_id", "phone_token", "policy_id")
CONSENT_SCOPES = ("marketing", "personalization", "health_data")
# Tag groups with a fixed vocabulary (interest comes from the category catalogue).
TAG_VALUES = {
    "lifecycle": ("new", "active", "at_risk", "silent", "lost"),
    "funnel_stage": ("prospect", "first_order", "repeat", "loyal"),
    "value_tier": ("under_80", "80_120", "120_280", "over_280"),
}

# What ops read for each of those values, in Chinese and English (the page, the reasons, WeCom corp tags).
LABELS: dict[str, dict[str, tuple[str, str]]] = {
    "acquisition_channel": {
        "wecom": ("企业微信", "WeCom"),
        "miniprogram": ("小程序", "mini-program"),
        "livestream": ("直播", "livestream"),
        "store_pos": ("门店", "store"),
        "ecommerce": ("电商平台", "e-commerce"),
        "insurance": ("保险合作方", "insurance partner"),
    },
    "lifecycle": {
        "new": ("新会员", "new"),
        "active": ("活跃", "active"),
        "at_risk": ("有流失风险", "at risk"),
        "silent": ("沉默", "silent"),
        "lost": ("已流失", "lost"),
    },
    "funnel_stage": {
        "prospect": ("潜客", "prospect"),
        "first_order": ("首单", "first order"),
        "repeat": ("复购", "repeat"),
        "loyal": ("忠诚", "loyal"),
    },
    "value_tier": {
        "under_80": ("客单价 80 元以下", "orders under ¥80"),
        "80_120": ("客单价 80-120 元", "orders ¥80-120"),
        "120_280": ("客单价 120-280 元", "orders ¥120-280"),
        "over_280": ("客单价 280 元以上", "orders over ¥280"),
    },
    "interest": {
        "calcium": ("补钙", "calcium"),
        "stomach_care": ("肠胃养护", "stomach care"),
        "blood_glucose": ("血糖管理", "blood glucose"),
        "blood_pressure": ("血压管理", "blood pressure"),
        "maternal_infant": ("母婴", "mother and baby"),
        "cognitive_health": ("认知健康", "cognitive health"),
        "skincare": ("护肤", "skincare"),
        "cold_flu": ("感冒", "colds and flu"),
    },
    # check-in group topics the brand runs (a topic not listed shows as written)
    "checkin_topic": {
        "glucose_log": ("血糖记录", "glucose log"),
        "bp_log": ("血压记录", "blood-pressure log"),
        "pregnancy_diary": ("孕期日记", "pregnancy diary"),
        "baby_growth": ("宝宝成长", "baby growth"),
        "brain_game": ("脑力训练", "brain games"),
        "daily_walk": ("每日步行", "daily walk"),
    },
    "live_platform": {
        "wechat_channels": ("微信视频号", "WeChat Channels"),
        "douyin": ("抖音", "Douyin"),
    },
    "tag_group": {
        "lifecycle": ("生命周期", "lifecycle"),
        "funnel_stage": ("转化阶段", "funnel stage"),
        "value_tier": ("客单价层级", "value tier"),
        "interest": ("兴趣", "interest"),
        "acquisition_channel": ("获客渠道", "acquisition channel"),
    },
    "model": {
        "churn": ("流失模型", "churn"),
        "repurchase": ("复购模型", "repurchase"),
        "conversion": ("转化模型", "conversion"),
    },
    "outreach_channel": {
        "wecom": ("企业微信", "WeCom"),
        "webhook": ("Webhook 推送", "webhook"),
        "sms": ("短信", "SMS"),
        "file": ("文件导出", "file export"),
    },
    "id_type": {
        "unionid": ("微信 unionid", "WeChat unionid"),
        "openid": ("小程序/直播 openid", "openid"),
        "external_userid": ("企微联系人", "WeCom contact"),
        "card_no": ("会员卡号", "store card"),
        "buyer_id": ("电商买家", "e-commerce buyer"),
        "phone_token": ("手机号(令牌)", "phone (token)"),
        "phone": ("手机号", "phone"),  # a phone token as the profile shows it: the masked number
        "policy_id": ("保单", "insurance policy"),
    },
    "member_fact": {
        "first_seen_on": ("首次出现", "first seen"),
        "acquisition_channel": ("获客渠道", "acquisition channel"),
        "staff_owner": ("专属员工", "staff owner"),
        "channels_used": ("接触渠道", "channels used"),
        "phone": ("手机(脱敏)", "phone (masked)"),
        "marketing_opt_out": ("已退订营销", "opted out of marketing"),
        "health_data_consent": ("已授权健康数据", "health-data consent"),
    },
    # why a member was not sent to (memberflow.outreach.suppression.REASONS; a unit test keeps both in step)
    "suppression_reason": {
        "undeliverable": ("无可用联系方式", "no way to reach"),
        "opted_out": ("已退订", "opted out"),
        "no_health_consent": ("未授权健康数据", "no health-data consent"),
        "no_address": ("该渠道无地址", "no address on the channel"),
        "left_programme": ("已退出项目", "left the programme"),
        "stale": ("数据过旧", "stale data"),
        "once_per_member": ("每人仅一次,已发过", "once per member, already sent"),
        "once_per_due_cycle": ("本补货周期已发过", "already sent this replenishment cycle"),
        "message_cooldown": ("同一消息冷却期内", "message cooldown"),
        "already_contacted_today": ("今天已联系过", "already contacted today"),
        "member_daily_cap": ("超出每人每日上限", "member daily cap"),
        "member_weekly_cap": ("超出每人每周上限", "member weekly cap"),
        "service_daily_cap": ("超出服务消息每日上限", "service daily cap"),
        "service_weekly_cap": ("超出服务消息每周上限", "service weekly cap"),
        "sms_daily_cap": ("超出短信每日上限", "SMS daily cap"),
        "wecom_monthly_cap": ("超出企微每月上限", "WeCom monthly cap"),
        "quiet_hours": ("免打扰时段", "quiet hours"),
        "segment_daily_cap": ("超出人群每日上限", "segment daily cap"),
        "staff_capacity": ("超出员工服务容量", "over the staff member's capacity"),
    },
    # a model's evaluation on the held-out cutoff (ml/evaluate.py), its promotion, and live monitoring
    "metric": {
        "auc": ("AUC(区分度)", "AUC"),
        "pr_auc": ("PR-AUC(查准与查全)", "PR-AUC"),
        "brier": ("Brier 分数(越低越好)", "Brier score (lower is better)"),
        "lift_top_decile": ("前 10% 提升度", "lift in the top tenth"),
        "ece": ("校准误差 ECE(越低越好)", "calibration error, ECE (lower is better)"),
        "rows": ("测试样本数", "test rows"),
    },
    "model_decision": {
        "promoted": ("已晋升为线上模型:胜过全部对照", "promoted: beats every rival"),
        "challenger": ("仍为挑战模型:未胜过全部对照", "stays challenger: does not beat every rival"),
    },
    "monitor_check": {
        "realized": ("实际效果", "realized"),
        "feature_drift": ("特征漂移", "feature drift"),
        "score_drift": ("分数漂移", "score drift"),
    },
    # who signs in to the ops API (a token's role) and what the audit trail records them doing
    "api_role": {
        "staff": ("导购", "shop assistant"),
        "health_manager": ("健康管理师", "health manager"),
        "store_manager": ("店长", "store manager"),
        "ops": ("运营", "ops"),
        "admin": ("管理员", "admin"),
    },
    "audit_action": {
        "export": ("导出名单", "export"),
        "lookup": ("查找会员", "member lookup"),
        "profile": ("查看会员档案", "member profile"),
        "members_page": ("查看人群成员", "segment members"),
        "queue": ("查看服务队列", "staff queue"),
    },
    "audit_state": {
        "started": ("进行中", "started"),
        "completed": ("已完成", "completed"),
        "aborted": ("已中断", "aborted"),
    },
    # the staff directory's roles (wecom.staff)
    "staff_role": {
        "health_manager": ("健康管理师", "health manager"),
        "shop_assistant": ("导购", "shop assistant"),
    },
    # what WeCom says became of a queued member's message (get_groupmsg_send_result, outreach/readback.py)
    "wecom_result": {
        "waiting": ("待员工在企微确认发送", "waiting for the staff member to send it"),
        "sent": ("已在企微发出", "sent in WeCom"),
        "not_a_contact": ("客户已不是好友", "no longer a contact"),
        "wecom_daily_limit": ("客户当天已收到其他群发", "already got a mass message that day"),
    },
    "delivery_status": {
        "pending": ("待发送", "pending"),
        "sending": ("发送中", "sending"),
        "sent": ("已发送", "sent"),
        "failed": ("发送失败,待重试", "failed, will retry"),
        "cancelled": ("已取消", "cancelled"),
    },
}


def all_labels() -> dict[str, dict[str, dict[str, str]]]:
    """Every vocabulary's labels, categories included, as {group: {code: {zh, en}}} (the ops page's)."""
    out = {
        group: {code: {"zh": zh, "en": en} for code, (zh, en) in values.items()}
        for group, values in LABELS.items()
    }
    out["category"] = {name: {"zh": c.label_zh, "en": c.label} for name, c in CATEGORIES.items()}
    return out


def label(group: str, value: str | None, lang: str) -> str:
    """A vocabulary value as ops read it in ``lang`` (zh or en); an unknown value as it is."""
    if value is None:
        return "未知" if lang == "zh" else "unknown"
    if group == "category":
        category = CATEGORIES.get(value)
        return value if category is None else category.label_zh if lang == "zh" else category.label
    found = LABELS.get(group, {}).get(value)
    return value if found is None else found[0 if lang == "zh" else 1]


DBT_PROJECT_FILE = REPO_ROOT / "dbt_project" / "dbt_project.yml"


@dataclass(frozen=True)
class Category:
    name: str
    interest: str
    replenishment_days: int | None  # None: a device, bought rarely
    is_device: bool
    health_related: bool
    label: str
    label_zh: str


def _catalog(path: Path = DBT_PROJECT_FILE) -> dict[str, Category]:
    rows = yaml.safe_load(path.read_text(encoding="utf-8"))["vars"]["category_catalog"]
    return {row[0]: Category(*row) for row in rows}


CATEGORIES: dict[str, Category] = _catalog()
INTERESTS = tuple(sorted({c.interest for c in CATEGORIES.values()}))
CONSUMABLES = tuple(name for name, c in CATEGORIES.items() if not c.is_device)
