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
