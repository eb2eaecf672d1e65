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

DBT_PROJECT_FILE = REPO_ROOT / "dbt_project" / "dbt_project.yml"


@dataclass(frozen=True)
class Category:
    name: str
    interest: str
    replenishment_days: int | None  # None: a device, bought rarely
    is_device: bool
    health_related: bool
    label: str


def _catalog(path: Path = DBT_PROJECT_FILE) -> dict[str, Category]:
    rows = yaml.safe_load(path.read_text(encoding="utf-8"))["vars"]["category_catalog"]
    return {row[0]: Category(*row) for row in rows}


CATEGORIES: dict[str, Category] = _catalog()
INTERESTS = tuple(sorted({c.interest for c in CATEGORIES.values()}))
CONSUMABLES = tuple(name for name, c in CATEGORIES.items() if not c.is_device)
