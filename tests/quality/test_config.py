"""Severity and thresholds come from YAML: the shipped defaults, merged with an operator's file."""

from __future__ import annotations

import pytest

from expectations.config import QualityConfig
from memberflow.core.settings import ConfigError


def test_defaults_give_every_check_a_severity():
    config = QualityConfig.load()
    assert config.check("landing", "wecom.group_events", "volume")["severity"] == "critical"
    # a per-table setting wins over the gate-wide one, the rest of the check's settings are kept
    views = config.check("landing", "livestream.views", "volume")
    assert views["severity"] == "warning" and views["trailing_days"] == 14
    assert config.check("marts", "dim_member", "member_count_change")["low"] == 0.95


def test_an_override_file_changes_severity_and_thresholds(tmp_path, monkeypatch):
    override = tmp_path / "quality.yml"
    override.write_text(
        "landing:\n"
        "  checks:\n"
        "    amount_range: {max: 2000}\n"
        "  tables:\n"
        "    ecommerce.orders:\n"
        "      volume: {severity: off}\n"
        "marts:\n"
        "  checks:\n"
        "    feature_nulls: {severity: critical}\n"
    )
    monkeypatch.setenv("MEMBERFLOW_QUALITY_CONFIG", str(override))
    config = QualityConfig.load()
    assert config.check("landing", "store_pos.orders", "amount_range") == {
        "severity": "critical",
        "max": 2000,
    }
    assert config.check("landing", "ecommerce.orders", "volume")["severity"] == "off"
    assert config.check("landing", "store_pos.orders", "volume")["severity"] == "critical"
    assert config.check("marts", "member_features", "feature_nulls")["severity"] == "critical"
    assert str(override) in config.sources


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("landing:\n  checks:\n    volumes: {low: 0.1}\n", "unknown setting landing.checks.volumes"),
        ("landing:\n  tables:\n    wecom.contacts:\n      speed: {}\n", "unknown check landing.tables.wecom"),
        ("marts:\n  checks:\n    enum_values: {severity: fatal}\n", "marts.checks.enum_values.severity"),
        ("uplift:\n  checks: {}\n", "unknown gate 'uplift'"),
        ("landing: [1, 2\n", "not valid YAML"),
    ],
)
def test_a_bad_override_names_the_file_and_the_key(tmp_path, text, message):
    override = tmp_path / "bad.yml"
    override.write_text(text)
    with pytest.raises(ConfigError) as info:
        QualityConfig.load(override)
    assert message in str(info.value) and str(override) in str(info.value)


def test_a_missing_override_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        QualityConfig.load(tmp_path / "nothing.yml")


def _volume_band(history: dict, day, rows: int) -> tuple[int, int, str]:
    from expectations.landing import landing_suite
    from memberflow.core.contracts import get_contract

    suite = landing_suite(QualityConfig.load(), get_contract("wecom", "group_events"), {day: rows}, history)
    [check] = [c for c in suite.checks if c.id == "volume"]
    return check.expectation.min_value, check.expectation.max_value, check.about


def test_the_volume_band_follows_a_weekly_pattern_and_catches_a_40_percent_loss():
    from datetime import date, timedelta

    start = date(2026, 1, 5)  # a Monday
    days = [start + timedelta(days=i) for i in range(84)]
    # a channel whose Saturdays bring three times the rows of other days (weekend check-in campaigns)
    weekly = {d: (1500 if d.weekday() == 5 else 500) + (d.toordinal() * 37) % 41 for d in days}
    saturday, monday = days[-1] + timedelta(days=6), days[-1] + timedelta(days=1)  # days[-1]: a Sunday
    assert (saturday.weekday(), monday.weekday()) == (5, 0)
    low, high, about = _volume_band(weekly, saturday, 1500)
    assert low <= 1500 <= high and "Saturdays" in about  # an ordinary Saturday passes
    low, high, about = _volume_band(weekly, monday, 500)
    assert low <= 500 <= high  # and so does an ordinary Monday
    # a flat channel: losing 40 % of a day's rows is caught; an ordinary day is not
    flat = {d: 700 + (d.toordinal() * 37) % 41 for d in days}
    low, high, about = _volume_band(flat, days[-1] + timedelta(days=1), 720)
    assert low <= 720 <= high and "14-day median" in about
    assert low > 0.6 * 720
