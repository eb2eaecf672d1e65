"""Connectors against the local sandbox APIs: faults, rate limits, token expiry, per-number caps, files."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devkit.sandbox import SandboxConfig, SandboxServer
from memberflow.core.vault import ContactVault
from memberflow.outreach.connectors import (
    ChannelConfig,
    FatalError,
    FileConnector,
    Message,
    OutreachConfig,
    RetryableError,
    SmsConnector,
    WebhookConnector,
    WecomConnector,
    _WaitRetryAfter,
    dispatch,
)
from memberflow.outreach.ledger import Ledger
from memberflow.outreach.suppression import CHINA, Caps
from tests.support import fake_phone

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=CHINA)


def clock():
    return NOON


def messages(n: int, channel: str, **address) -> list[Message]:
    out = []
    for i in range(n):
        addr = {k: (v(i) if callable(v) else v) for k, v in address.items()}
        key, member = f"seg/m{i:05d}/2026-03-02", f"m{i:05d}"
        out.append(
            Message(
                key, member, "seg", channel, "2026-03-02", "care_checkin", ["no activity for 12 days"], addr
            )
        )
    return out


def ledger_with(settings, batch: list[Message]) -> tuple[Ledger, str]:
    ledger = Ledger.open(settings)
    run_id = ledger.start_run(NOON.date(), NOON, False)
    ledger.decide(
        run_id,
        NOON,
        [
            {"idempotency_key": m.key, "as_of": m.as_of, "segment": m.segment, "member_id": m.member_id,
             "channel": m.channel, "phone_token": m.address.get("phone_token")}
            for m in batch
        ],
    )  # fmt: skip
    return ledger, run_id


def fast(name: str, url: str | None, **extra) -> ChannelConfig:
    values = {"batch_size": 20, "timeout_seconds": 0.3, "max_attempts": 12, "backoff_seconds": 0.01,
              "backoff_max_seconds": 0.2, **extra}  # fmt: skip
    # the credentials the environment gives now (the sandbox's, once a test started one)
    credentials = OutreachConfig.load().channels[name].credentials
    return ChannelConfig(name=name, url=url, credentials=credentials, **values)


@pytest.fixture
def sandbox_env(monkeypatch):
    def start(config: SandboxConfig) -> SandboxServer:
        server = SandboxServer(config).start()
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        return server

    servers = []
    yield lambda config: servers.append(start(config)) or servers[-1]
    for server in servers:
        server.stop()


def test_webhook_delivers_everything_once_through_20_percent_faults(settings, sandbox_env):
    server = sandbox_env(SandboxConfig(failure_rate=0.2, slow_seconds=0.6, seed=3))
    batch = messages(300, "webhook")
    ledger, run_id = ledger_with(settings, batch)
    connector = WebhookConnector(fast("webhook", server.env()["MEMBERFLOW_WEBHOOK_URL"]), settings, clock)
    stats = dispatch(connector, batch, ledger, run_id, clock)
    snap = server.state.snapshot()
    keys = Counter(r["key"] for r in snap["received"])
    assert set(keys) == {m.key for m in batch} and max(keys.values()) == 1
    assert stats.sent == 300 and not stats.failed
    assert stats.retried_requests > 0 and sum(snap["rejected"].values()) > 0  # faults did happen
    # a slow answer was applied but looked failed: its retry came back as duplicates, not new deliveries
    assert snap["duplicates"] <= 20 * snap["rejected"].get("slow", 0)
    assert {r["status"] for r in ledger.rows()} == {"sent"}
    attempts = ledger.attempts(run_id)
    assert {a["outcome"] for a in attempts} == {"ok", "error"}


def test_backoff_waits_at_least_retry_after():
    class State:
        attempt_number = 1
        outcome = None

    wait = _WaitRetryAfter(ChannelConfig("webhook", backoff_seconds=0.01, backoff_max_seconds=30))
    state = State()

    class Outcome:
        def exception(self):
            return RetryableError("429", retry_after=4.5)

    state.outcome = Outcome()
    assert 4.5 <= wait(state) <= 30
    Outcome.exception = lambda self: RetryableError("503")
    assert wait(state) < 1


def test_client_pacing_keeps_under_the_server_limit(settings, sandbox_env):
    server = sandbox_env(SandboxConfig(limits={"webhook": 10}, window_seconds=1.0))
    batch = messages(400, "webhook")
    ledger, run_id = ledger_with(settings, batch)
    url = server.env()["MEMBERFLOW_WEBHOOK_URL"]
    connector = WebhookConnector(fast("webhook", url, rate_per_second=9.5), settings, clock)
    began = time.monotonic()
    stats = dispatch(connector, batch, ledger, run_id, clock)
    elapsed = time.monotonic() - began
    assert stats.sent == 400 and stats.requests == 20
    assert elapsed >= 1.9  # 20 requests at 9.5/s
    assert server.state.snapshot()["rejected"].get("rate_limited", 0) <= 2


def test_rate_limit_429_is_retried_after_the_servers_wait(settings, sandbox_env):
    server = sandbox_env(SandboxConfig(limits={"webhook": 3}, window_seconds=1.0))
    batch = messages(160, "webhook")
    ledger, run_id = ledger_with(settings, batch)
    connector = WebhookConnector(fast("webhook", server.env()["MEMBERFLOW_WEBHOOK_URL"]), settings, clock)
    stats = dispatch(connector, batch, ledger, run_id, clock)
    snap = server.state.snapshot()
    assert stats.sent == 160 and snap["rejected"]["rate_limited"] >= 1
    assert len(snap["received"]) == 160


def test_wecom_one_task_per_staff_member_token_refresh_and_fail_list(settings, sandbox_env):
    reachable = {f"wm{i:05d}" for i in range(60) if i != 7}
    server = sandbox_env(SandboxConfig(wecom_contacts=reachable))
    batch = messages(
        60, "wecom", external_userid=lambda i: f"wm{i:05d}", staff_owner=lambda i: f"staff{i % 3}"
    )
    ledger, run_id = ledger_with(settings, batch)
    connector = WecomConnector(fast("wecom", server.url), settings, clock)
    first, rest = batch[:5], batch[5:]
    assert all(o.ok for o in connector.send_batch(first))
    server.state.tokens.clear()  # the token stops being valid (expired, or rotated elsewhere)
    stats = dispatch(connector, rest, ledger, run_id, clock)
    received = server.state.snapshot()["received"]
    assert stats.sent == 54 and list(stats.failed.values()) == [1]  # member 7 is not the sender's contact
    assert len(received) == 59
    tasks = {}
    for r in received:
        tasks.setdefault(r["msgid"], set()).add(r["sender"])
    assert all(len(senders) == 1 for senders in tasks.values())
    assert {r["sender"] for r in received} == {"staff0", "staff1", "staff2"}


def test_wecom_needs_credentials(settings, monkeypatch):
    monkeypatch.delenv("MEMBERFLOW_WECOM_CORPID", raising=False)
    with pytest.raises(FatalError, match="MEMBERFLOW_WECOM_CORPID"):
        WecomConnector(fast("wecom", "http://127.0.0.1:9"), settings, clock)
    with pytest.raises(FatalError, match="MEMBERFLOW_WEBHOOK_URL"):
        WebhookConnector(fast("webhook", None), settings, clock)


def _vault(settings, phones: dict[str, str]) -> None:
    vault = ContactVault(settings.vault_key())
    folder = settings.vault_dir / "store_pos" / "members" / "dt=2026-03-01"
    folder.mkdir(parents=True)
    rows = [{"phone_token": t, "phone_sealed": vault.seal(p)} for t, p in phones.items()]
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")


def test_sms_decrypts_only_into_the_request_and_honours_the_per_number_cap(settings, sandbox_env):
    phones = {f"tok{i}": fake_phone(i) for i in range(5)}
    _vault(settings, phones)
    server = sandbox_env(SandboxConfig(sms_per_number_per_day=3))
    server.state.sms_per_number[phones["tok2"]] = 3  # this number had its three today
    batch = messages(6, "sms", phone_token=lambda i: f"tok{i}")  # tok5 is not in the vault
    ledger, run_id = ledger_with(settings, batch)
    cfg = OutreachConfig.load().channels["sms"]
    cfg.url = server.url
    connector = SmsConnector(cfg, settings, clock, Caps())
    stats = dispatch(connector, batch, ledger, run_id, clock)
    assert stats.sent == 4
    assert stats.failed == {"sms isv.BUSINESS_LIMIT_CONTROL": 1, "sms: no phone in the contact vault": 1}
    assert sorted(server.state.sms_phones) == sorted(p for t, p in phones.items() if t != "tok2")
    # nothing the sender keeps holds a number: ledger rows and attempts, the receiver's records
    stored = repr(ledger.rows()) + repr(ledger.attempts()) + repr(server.state.snapshot())
    assert not any(p in stored for p in phones.values())


def test_sms_waits_out_quiet_hours(settings, sandbox_env):
    _vault(settings, {"tok0": fake_phone(0)})
    server = sandbox_env(SandboxConfig())
    batch = messages(1, "sms", phone_token="tok0")
    ledger, run_id = ledger_with(settings, batch)
    cfg = OutreachConfig.load().channels["sms"]
    cfg.url = server.url
    night = datetime(2026, 3, 2, 22, 30, tzinfo=CHINA)
    stats = dispatch(SmsConnector(cfg, settings, lambda: night, Caps()), batch, ledger, run_id, lambda: night)
    assert stats.sent == 0 and stats.requests == 1
    assert server.state.snapshot()["requests"]["sms"] == 0
    assert ledger.rows()[0]["status"] == "failed" and ledger.rows()[0]["error_class"] == "retryable"


def test_file_drop_is_masked_and_merges_reruns(settings):
    batch = messages(4, "file", phone_masked="139****0001", staff_owner="staff1")
    ledger, run_id = ledger_with(settings, batch)
    connector = FileConnector(ChannelConfig("file", batch_size=1000), settings, clock)
    dispatch(connector, batch[:3], ledger, run_id, clock)
    dispatch(connector, batch[1:], ledger, run_id, clock)
    table = pq.read_table(settings.home / "exports" / "segments" / "2026-03-02" / "seg.parquet")
    assert table.num_rows == 4
    assert set(table["phone_masked"].to_pylist()) == {"139****0001"}
    csv = (settings.home / "exports" / "segments" / "2026-03-02" / "seg.csv").read_text()
    assert csv.count("\n") == 5


def test_outreach_config_merges_overrides_and_names_bad_settings(tmp_path):
    from memberflow.core.settings import ConfigError, Settings

    hooked = Settings.from_env(
        {"MEMBERFLOW_HOME": str(tmp_path), "MEMBERFLOW_WEBHOOK_URL": "http://hooks.local/x"}
    )
    bare = Settings.from_env({"MEMBERFLOW_HOME": str(tmp_path)})
    override = tmp_path / "outreach.yml"
    override.write_text('caps: {quiet_hours: ["22:00", "07:30"]}\nchannels:\n  webhook: {batch_size: 50}\n')
    config = OutreachConfig.load(override, settings=hooked)
    assert config.caps.quiet(datetime(2026, 3, 2, 21, 30, tzinfo=CHINA)) is False
    assert config.caps.quiet(datetime(2026, 3, 2, 7, 0, tzinfo=CHINA)) is True
    assert config.channels["webhook"].batch_size == 50 and config.channels["webhook"].rate_per_second == 20
    assert config.channels["webhook"].url == "http://hooks.local/x"
    assert (
        config.channels["wecom"].url == "https://qyapi.weixin.qq.com" and config.channels["sms"].url is None
    )
    override.write_text("channels:\n  webhook: {batchsize: 50}\n")
    with pytest.raises(ConfigError, match="batchsize"):
        OutreachConfig.load(override, settings=bare)
    with pytest.raises(ConfigError, match="cannot read outreach config"):
        OutreachConfig.load(tmp_path / "missing.yml", settings=bare)


def test_wecom_asks_before_recreating_a_task_whose_answer_was_lost(settings, sandbox_env):
    # WeCom has no idempotency key: 40% of tasks are created but their answer never arrives
    server = sandbox_env(SandboxConfig(failure_rate=0.4, faults=("slow",), slow_seconds=0.6, seed=5))
    batch = messages(
        60, "wecom", external_userid=lambda i: f"wm{i:05d}", staff_owner=lambda i: f"staff{i % 3}"
    )
    ledger, run_id = ledger_with(settings, batch)
    connector = WecomConnector(fast("wecom", server.url, batch_size=5), settings, clock)
    stats = dispatch(connector, batch, ledger, run_id, clock)
    received = Counter(r["external_userid"] for r in server.state.snapshot()["received"])
    assert server.state.snapshot()["rejected"].get("slow", 0) >= 3  # answers were lost
    assert stats.sent == 60 and len(received) == 60 and max(received.values()) == 1
    tasks = len(server.state.tasks)
    assert tasks == 12  # 3 staff x 20 customers / 5: no task was created twice

    # a process killed after the request left: the next run sees the rows in doubt and asks first
    again = [Message(m.key, m.member_id, m.segment, m.channel, m.as_of, m.message, m.reasons, m.address, True)
             for m in batch if m.address["staff_owner"] == "staff0"]  # fmt: skip
    outcomes = WecomConnector(fast("wecom", server.url, batch_size=5), settings, clock).send_batch(again)
    assert all(o.ok and o.external_id for o in outcomes)
    assert len(server.state.tasks) == tasks


def test_a_retry_after_past_the_ceiling_defers_the_batch_to_the_next_run(settings, sandbox_env):
    # One request per 300 s: the second batch is told to come back in about five minutes.
    server = sandbox_env(SandboxConfig(limits={"webhook": 1}, window_seconds=300.0))
    batch = messages(40, "webhook")
    ledger, run_id = ledger_with(settings, batch)
    config = fast("webhook", server.env()["MEMBERFLOW_WEBHOOK_URL"], retry_after_max_seconds=120)
    slept: list[float] = []
    stats = dispatch(
        WebhookConnector(config, settings, clock), batch, ledger, run_id, clock, sleep=slept.append
    )
    # the first batch went; the second waited neither five minutes nor the backoff cap over and over
    assert stats.sent == 20 and stats.requests == 2 and not [s for s in slept if s > 1]
    assert len(server.state.snapshot()["received"]) == 20
    deferred = [row for row in ledger.rows() if row["status"] != "sent"]
    # left for the next run (which retries a retryable failure), saying why
    assert len(deferred) == 20 and {(r["status"], r["error_class"]) for r in deferred} == {
        ("failed", "retryable")
    }
    [error] = {row["last_error"] for row in deferred}
    assert "Retry-After" in error and "retry_after_max_seconds" in error and "120" in error


def test_a_retry_after_within_the_ceiling_is_waited_in_full():
    class State:
        attempt_number = 1

        class outcome:
            @staticmethod
            def exception():
                return RetryableError("429", retry_after=90)

    # the backoff cap (30 s) paces our own retries; the server's 90 s is honoured up to the ceiling
    config = ChannelConfig(
        "webhook", backoff_seconds=0.01, backoff_max_seconds=30, retry_after_max_seconds=120
    )
    assert _WaitRetryAfter(config)(State()) == 90
