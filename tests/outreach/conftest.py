"""Fixtures of the outreach tier: a built, trained and scored workspace, and the sandbox APIs."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from devkit.sandbox import SandboxConfig, SandboxServer
from memberflow.core.settings import Settings
from tests.support import make_settings

# A webhook segment big enough to interrupt mid-delivery, beside a WeCom and an SMS one; the caps keep the
# day's reach under the segments gate's 50 % of members.
BROAD_SEGMENTS = textwrap.dedent(
    """
    version: 1
    segments:
      care_wecom:
        description: at-risk members with a staff owner
        channel: wecom
        message: care_checkin
        priority: 1
        daily_cap: 300
        holdout: 0.1
        when: {lifecycle_stage: at_risk, has_wecom: true}
      coupon_sms:
        description: buyers without a mini-program account
        channel: sms
        message: replenishment_coupon
        priority: 2
        daily_cap: 300
        holdout: 0.1
        when: {funnel_stage: [first_order, repeat, loyal], has_miniprogram: false, has_phone: true}
      everyone_webhook:
        description: everybody else still reachable
        channel: webhook
        message: winback_content
        priority: 3
        daily_cap: 800
        holdout: 0.1
        when: {lifecycle_stage: {not_in: [lost]}}
    """
)


@pytest.fixture
def delivery_ws(tmp_path, scored) -> Settings:
    """A private copy of the scored workspace (deliveries write the ledger and the warehouse)."""
    shutil.copytree(scored.home, tmp_path / "ws")
    return make_settings(tmp_path / "ws", scored.data_dir)


@pytest.fixture
def broad_segments(tmp_path, monkeypatch):
    path = tmp_path / "segments.yml"
    path.write_text(BROAD_SEGMENTS)
    monkeypatch.setenv("MEMBERFLOW_SEGMENTS", str(path))
    return path


@pytest.fixture
def sandbox(monkeypatch):
    """Start sandbox servers and point the connectors at the last one started."""
    servers: list[SandboxServer] = []

    def start(config: SandboxConfig | None = None) -> SandboxServer:
        server = SandboxServer(config or SandboxConfig()).start()
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def quick_wecom(tmp_path, monkeypatch):
    """Tag sync against the sandbox without the production rate limit and timeouts."""
    path = tmp_path / "outreach.yml"
    path.write_text(
        "channels:\n  wecom_tags: {timeout_seconds: 0.5, max_attempts: 3, backoff_seconds: 0.01, "
        "backoff_max_seconds: 0.2, rate_per_second: 500}\n"
    )
    monkeypatch.setenv("MEMBERFLOW_OUTREACH_CONFIG", str(path))
