"""话术: the suggested words for a 1-on-1 queue item, from the library in ``memberflow/scripts.yml``.

Each script is a Jinja template (sandboxed, strict about undefined names) filled with the member's context
of the day. ``load_scripts`` renders every template once with a full and an empty context, so a misspelt
variable stops the load with the file and the key instead of reaching a member half-filled.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from memberflow.core.settings import ConfigError, get_settings
from memberflow.core.vocab import CATEGORIES

DEFAULT_SCRIPTS = Path(__file__).resolve().parents[1] / "scripts.yml"
LANGS = ("zh", "en")
Lang = Literal["zh", "en"]
# The context a script may use (scripts.yml documents each), with a full sample to check templates by.
SAMPLE_CONTEXT: dict[str, Any] = {
    "tenure_days": 120,
    "orders_total": 3,
    "days_since_last_order": 25,
    "lifecycle_stage": "at_risk",
    "due_product": "钙片",
    "due_in_days": 3,
    "in_checkin_group": True,
    "checkin_streak": 0,
    "checkin_rate_prev_21d": 0.6,
}
EMPTY_CONTEXT: dict[str, Any] = {
    **dict.fromkeys(SAMPLE_CONTEXT),
    "orders_total": 0,
    "in_checkin_group": False,
    "checkin_streak": 0,
}
# a consumable counts as due (in the item and its script) from this many days before its date; the profile
# forgets it 7 days after
DUE_WITHIN_DAYS = 7
_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
_CJK_GAP = re.compile(r"(?<=[^\x00-\x7f])\s+|\s+(?=[^\x00-\x7f])")


class ScriptLibrary:
    def __init__(self, templates: dict[str, dict[str, jinja2.Template]], path: Path) -> None:
        self.templates = templates
        self.path = path

    def render(self, message: str, lang: Lang, context: dict[str, Any]) -> str | None:
        """The script for ``message`` in ``lang`` filled with ``context``; None when the library has none."""
        template = self.templates.get(message, {}).get(lang)
        if template is None:
            return None
        return tidy(template.render({**EMPTY_CONTEXT, **context}), lang)


def tidy(text: str, lang: str) -> str:
    """One line of text: Chinese has no spaces between sentences, English one."""
    text = " ".join(text.split())
    return _CJK_GAP.sub("", text) if lang == "zh" else text


@functools.cache
def _load(path: Path, mtime: float) -> ScriptLibrary:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: scripts file not found (MEMBERFLOW_SCRIPTS)") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("version") != 1 or not isinstance(raw.get("scripts"), dict):
        raise ConfigError(f"{path}: expected 'version: 1' and a 'scripts:' mapping")
    templates: dict[str, dict[str, jinja2.Template]] = {}
    for key, texts in raw["scripts"].items():
        if not isinstance(texts, dict) or set(texts) != set(LANGS):
            raise ConfigError(f"{path}: script '{key}': needs exactly the languages {', '.join(LANGS)}")
        templates[key] = {}
        for lang, text in texts.items():
            try:
                template = _ENV.from_string(str(text))
                for context in (SAMPLE_CONTEXT, EMPTY_CONTEXT):
                    template.render(context)
            except jinja2.TemplateError as exc:
                raise ConfigError(f"{path}: script '{key}' ({lang}): {exc}") from exc
            templates[key][lang] = template
    return ScriptLibrary(templates, path)


def load_scripts(path: Path | None = None) -> ScriptLibrary:
    """The validated script library (``MEMBERFLOW_SCRIPTS`` or the packaged one)."""
    path = Path(path or get_settings().scripts_file or DEFAULT_SCRIPTS)
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: scripts file not found (MEMBERFLOW_SCRIPTS)") from exc
    return _load(path, mtime)


def product_label(category: str | None, lang: Lang) -> str | None:
    if category is None or category not in CATEGORIES:
        return None
    found = CATEGORIES[category]
    return found.label_zh if lang == "zh" else found.label


def due_soon(category: str | None, due_in: int | None) -> bool:
    """The consumable due soonest counts as due: a known category within DUE_WITHIN_DAYS of its date."""
    return category in CATEGORIES and due_in is not None and due_in <= DUE_WITHIN_DAYS


def may_show(category: str, health_allowed: bool) -> bool:
    """A product may be shown (in a queue, a script, a WeCom tag) unless it is health data nobody allowed."""
    return health_allowed or not CATEGORIES[category].health_related


def script_context(item: dict[str, Any], lang: Lang, health_allowed: bool) -> dict[str, Any]:
    """A queue item's context for its script. Health data (a health-related product due) only when the
    member consented and the reader may see it."""
    category = item.get("next_due_category")
    due_in = item.get("days_until_next_due")
    shown = due_soon(category, due_in) and may_show(category, health_allowed)
    return {
        "tenure_days": item.get("tenure_days"),
        "orders_total": item.get("orders_total") or 0,
        "days_since_last_order": item.get("days_since_last_order"),
        "lifecycle_stage": item.get("lifecycle_stage"),
        "due_product": product_label(category, lang) if shown else None,
        "due_in_days": due_in if shown else None,
        "in_checkin_group": bool(item.get("in_checkin_group")),
        "checkin_streak": item.get("checkin_streak") or 0,
        "checkin_rate_prev_21d": item.get("checkin_rate_prev_21d"),
    }
