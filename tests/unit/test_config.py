import base64
import shutil
import stat

import pytest

from memberflow.core.settings import PRIVACY_DEFAULTS, ConfigError, Settings, apply_privacy_defaults


def test_defaults_live_under_the_workspace(tmp_path):
    s = Settings.from_env({"MEMBERFLOW_HOME": str(tmp_path)})
    assert s.home == tmp_path
    assert s.data_dir == tmp_path / "sample"
    assert s.warehouse_path == tmp_path / "warehouse.duckdb"
    assert s.quarantine_max_share == 0.05


def test_per_table_quarantine_limits(tmp_path):
    s = Settings.from_env(
        {
            "MEMBERFLOW_HOME": str(tmp_path),
            "MEMBERFLOW_QUARANTINE_MAX_SHARE": "0.1",
            "MEMBERFLOW_QUARANTINE_LIMITS": "store_pos.members=0.3, wecom.group_events=0",
        }
    )
    assert s.quarantine_limit("store_pos", "members") == 0.3
    assert s.quarantine_limit("wecom", "group_events") == 0.0
    assert s.quarantine_limit("consent", "events") == 0.1


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MEMBERFLOW_QUARANTINE_MAX_SHARE", "lots", "not a number"),
        ("MEMBERFLOW_QUARANTINE_MAX_SHARE", "1.5", "between 0 and 1"),
        ("MEMBERFLOW_QUARANTINE_LIMITS", "members=0.2", "channel.table=share"),
        ("MEMBERFLOW_QUARANTINE_MIN_ROWS", "-3", "whole number"),
    ],
)
def test_bad_settings_name_the_variable(tmp_path, name, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        Settings.from_env({"MEMBERFLOW_HOME": str(tmp_path), name: value})
    assert name in str(info.value)


def test_keys_from_environment_win(tmp_path):
    vault_key = base64.urlsafe_b64encode(bytes(range(64))).decode()
    s = Settings.from_env(
        {"MEMBERFLOW_HOME": str(tmp_path), "MEMBERFLOW_ID_KEY": "abc", "MEMBERFLOW_VAULT_KEY": vault_key}
    )
    assert s.id_key() == b"abc"
    assert s.vault_key() == bytes(range(64))
    assert not (tmp_path / "secrets").exists()


def test_keys_made_for_a_workspace_live_outside_it(tmp_path):
    """A copy of a workspace (a backup, a laptop) must not carry the keys that open its vault or let its
    tokens be tested against phone numbers."""
    config = tmp_path / "config"
    env = {"MEMBERFLOW_HOME": str(tmp_path / "ws"), "XDG_CONFIG_HOME": str(config)}
    s = Settings.from_env(env)
    first = s.id_key()
    assert s.id_key() == first and len(s.vault_key()) == 64
    assert s.secrets_dir.parent == config / "memberflow" / "workspaces"
    assert stat.S_IMODE((s.secrets_dir / "id_key").stat().st_mode) == 0o600
    assert stat.S_IMODE(s.secrets_dir.stat().st_mode) == 0o700
    assert sorted(p.name for p in (tmp_path / "ws").rglob("*")) == ["keys.json", "workspace-id"]
    _holds_data(tmp_path / "ws")
    # the copy, read with another user's config folder, finds no key and stops instead of making new ones
    shutil.copytree(tmp_path / "ws", tmp_path / "copy")
    copy = Settings.from_env(
        {"MEMBERFLOW_HOME": str(tmp_path / "copy"), "XDG_CONFIG_HOME": str(tmp_path / "x")}
    )
    with pytest.raises(ConfigError, match="holds data but its vault_key is missing"):
        copy.vault_key()
    # moved on its own machine, the workspace keeps its keys (its id moves with it)
    shutil.move(tmp_path / "ws", tmp_path / "moved")
    assert Settings.from_env({**env, "MEMBERFLOW_HOME": str(tmp_path / "moved")}).id_key() == first
    other = Settings.from_env({**env, "MEMBERFLOW_HOME": str(tmp_path / "b")})
    assert other.id_key() != first


def test_keys_kept_inside_an_older_workspace_stop_with_how_to_move_them(tmp_path):
    home = tmp_path / "ws"
    inside = Settings.from_env(
        {"MEMBERFLOW_HOME": str(home), "MEMBERFLOW_SECRETS_DIR": str(home / "secrets")}
    )
    key = inside.vault_key()
    _holds_data(home)
    s = Settings.from_env({"MEMBERFLOW_HOME": str(home), "XDG_CONFIG_HOME": str(tmp_path / "config")})
    with pytest.raises(
        ConfigError, match=r"keeps its vault_key inside itself .*mv .*MEMBERFLOW_SECRETS_DIR="
    ):
        s.vault_key()
    s.secrets_dir.mkdir(parents=True)
    shutil.move(home / "secrets" / "vault_key", s.secrets_dir / "vault_key")
    assert s.vault_key() == key


def test_a_vault_key_of_the_wrong_size_is_refused(tmp_path):
    s = Settings.from_env(
        {
            "MEMBERFLOW_HOME": str(tmp_path),
            "MEMBERFLOW_VAULT_KEY": base64.urlsafe_b64encode(b"short").decode(),
        }
    )
    with pytest.raises(ConfigError, match="64 bytes"):
        s.vault_key()


def test_privacy_defaults_do_not_override_an_explicit_choice():
    env = {"DO_NOT_TRACK": "false"}
    apply_privacy_defaults(env)
    assert env["DO_NOT_TRACK"] == "false"
    assert env["GX_ANALYTICS_ENABLED"] == "false"
    assert set(PRIVACY_DEFAULTS) <= set(env)


def test_the_schedules_start_on_the_go_live_day_in_china_time():
    from memberflow.core.settings import schedule_start

    assert schedule_start({}).isoformat() == "2026-01-01T00:00:00+08:00"
    assert schedule_start({"MEMBERFLOW_START_DATE": "2026-12-01"}).isoformat() == "2026-12-01T00:00:00+08:00"
    with pytest.raises(ConfigError, match="MEMBERFLOW_START_DATE"):
        schedule_start({"MEMBERFLOW_START_DATE": "next monday"})


def test_an_unknown_dbt_target_stops_with_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="MEMBERFLOW_DBT_TARGET='duckbd': choose one of duckdb, postgres"):
        Settings.from_env({"MEMBERFLOW_HOME": str(tmp_path), "MEMBERFLOW_DBT_TARGET": "duckbd"})


def test_outreach_credentials_stay_out_of_the_settings_repr(tmp_path):
    settings = Settings.from_env({"MEMBERFLOW_HOME": str(tmp_path), "MEMBERFLOW_SMS_KEY": "sms-secret-value"})
    assert settings.sms_key == "sms-secret-value" and "sms-secret-value" not in repr(settings)


def _holds_data(home):
    """What a workspace looks like once a day has landed."""
    (home / "landing" / "wecom" / "contacts" / "dt=2026-03-01").mkdir(parents=True)


def test_a_workspace_refuses_an_id_key_it_was_not_built_with(tmp_path):
    # Another key would give every phone a new token: members split, opt-outs stop matching.
    home = tmp_path / "ws"
    assert Settings.from_env({"MEMBERFLOW_HOME": str(home), "MEMBERFLOW_ID_KEY": "key-one"}).id_key()
    _holds_data(home)
    other = Settings.from_env({"MEMBERFLOW_HOME": str(home), "MEMBERFLOW_ID_KEY": "key-two"})
    with pytest.raises(ConfigError, match="MEMBERFLOW_ID_KEY is not the id key this workspace was built"):
        other.id_key()
    assert "key-one" not in (home / "keys.json").read_text()  # a fingerprint, never the key
    # its own key still works
    assert Settings.from_env({"MEMBERFLOW_HOME": str(home), "MEMBERFLOW_ID_KEY": "key-one"}).id_key()


def test_a_lost_key_stops_a_workspace_with_data_instead_of_making_a_new_one(tmp_path):
    home = tmp_path / "ws"
    s = Settings.from_env({"MEMBERFLOW_HOME": str(home), "XDG_CONFIG_HOME": str(tmp_path / "config")})
    s.id_key(), s.vault_key()
    _holds_data(home)
    shutil.rmtree(s.secrets_dir)
    for key, name in ((s.id_key, "id_key"), (s.vault_key, "vault_key")):
        with pytest.raises(ConfigError, match=f"restore {s.secrets_dir}/{name}") as info:
            key()
        assert ("MEMBERFLOW_ID_KEY" if name == "id_key" else "MEMBERFLOW_VAULT_KEY") in str(info.value)
    # without the fingerprint file too (a workspace from before it was kept): its data is enough to stop
    (home / "keys.json").unlink()
    with pytest.raises(ConfigError, match="restore"):
        s.id_key()
    assert not s.secrets_dir.exists()


def test_keys_rotate_says_what_it_needs_and_replaces_a_kept_key(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from memberflow.cli import app

    monkeypatch.setenv("MEMBERFLOW_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("MEMBERFLOW_ID_KEY", "MEMBERFLOW_VAULT_KEY", "MEMBERFLOW_SECRETS_DIR"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["keys", "rotate"])
    assert result.exit_code == 2 and "--id-key" in result.output
    with monkeypatch.context() as env:
        env.setenv("MEMBERFLOW_HOME", str(tmp_path / "deployed"))
        env.setenv("MEMBERFLOW_ID_KEY", "key-in-the-environment")
        result = CliRunner().invoke(app, ["keys", "rotate", "--id-key"])
        assert result.exit_code == 2 and "set MEMBERFLOW_NEW_ID_KEY" in result.output, result.output
    old = Settings.from_env().vault_key()
    result = CliRunner().invoke(app, ["keys", "rotate", "--vault-key"])
    assert result.exit_code == 0, result.output
    settings = Settings.from_env()
    assert settings.vault_key() != old and not (settings.secrets_dir / "vault_key.next").exists()
    new = CliRunner().invoke(app, ["keys", "new", "id"]).output.strip()
    assert len(new) == 64 and int(new, 16) >= 0


def test_the_outcomes_mart_and_suppression_agree_on_who_is_in_neither_arm():
    """segment_outcomes (dbt) puts members suppressed before the holdout in neither arm; the reasons are the
    ones ``decide`` checks before drawing the holdout."""
    import yaml

    from memberflow.core.vocab import DBT_PROJECT_FILE
    from memberflow.outreach.suppression import BEFORE_HOLDOUT

    project = yaml.safe_load(DBT_PROJECT_FILE.read_text())
    assert project["vars"]["suppressed_before_holdout"] == list(BEFORE_HOLDOUT)


def test_a_monitoring_check_without_a_value_still_gives_a_reason():
    """A version whose reference population is gone raises a warning with no PSI to print."""
    from ml.monitor import Check, _reason

    assert _reason(Check("feature_drift", "no reference population", None, None, 0, "warning")) == (
        "feature_drift no reference population"
    )
    assert _reason(Check("realized", "auc@2026-02-15", 0.7, 0.8, 500, "critical")) == (
        "realized auc@2026-02-15: 0.700 (evaluation 0.800)"
    )


def test_every_vocabulary_value_ops_read_has_both_labels_and_every_script_loads():
    from memberflow.core.vocab import ACQUISITION_CHANNELS, CATEGORIES, INTERESTS, LABELS, TAG_VALUES
    from memberflow.outreach.scripts import LANGS, load_scripts
    from memberflow.segments import TEMPLATES, load_segments

    assert set(LABELS["acquisition_channel"]) == set(ACQUISITION_CHANNELS)
    assert set(LABELS["interest"]) == set(INTERESTS)
    for group, values in TAG_VALUES.items():
        assert set(LABELS[group]) == set(values), group
    assert all(c.label and c.label_zh for c in CATEGORIES.values())
    # the codes the ops page shows for a member not sent to, a delivery, a model, an outreach channel
    from memberflow.core.vocab import MODELS, OUTREACH_CHANNELS
    from memberflow.outreach.ledger import UNSETTLED
    from memberflow.outreach.suppression import REASONS

    assert set(LABELS["suppression_reason"]) == set(REASONS)
    assert set(LABELS["delivery_status"]) == {*UNSETTLED, "sent", "cancelled"}
    assert set(LABELS["model"]) == set(MODELS) and set(LABELS["outreach_channel"]) == set(OUTREACH_CHANNELS)
    from memberflow.outreach.readback import SEND_STATUS

    assert set(LABELS["wecom_result"]) == set(SEND_STATUS.values())
    from memberflow.api.access import ROLES
    from memberflow.core.contracts import STAFF_ROLES

    assert set(LABELS["api_role"]) == set(ROLES) and set(LABELS["staff_role"]) == set(STAFF_ROLES)
    import numpy as np

    from ml.evaluate import metrics

    evaluated = metrics(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.8]))
    assert set(LABELS["metric"]) == set(evaluated) - {"label_rate"}  # the models page hides the label rate
    assert all(zh and en for values in LABELS.values() for zh, en in values.values())
    segments = load_segments()
    assert all(s.label and not isinstance(s.description, str) for s in segments)  # the starter library
    scripts = load_scripts()
    for message in {s.message for s in segments if s.channel == "wecom"} | set(TEMPLATES):
        assert set(scripts.templates[message]) == set(LANGS), message


def test_a_script_naming_an_unknown_variable_stops_the_load(tmp_path):
    from memberflow.core.settings import ConfigError
    from memberflow.outreach.scripts import load_scripts

    path = tmp_path / "scripts.yml"
    path.write_text("version: 1\nscripts:\n  care_checkin:\n    zh: 您好{{ due_prodcut }}\n    en: Hello\n")
    with pytest.raises(ConfigError, match=r"scripts.yml: script 'care_checkin' \(zh\).*due_prodcut"):
        load_scripts(path)
