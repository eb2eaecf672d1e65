"""Outreach connectors behind one interface, and the dispatcher that drives them (DESIGN §7).

A connector turns a batch of messages into one request to its system and classifies what came back: per
message ``Outcome`` (ok / failed with ``retryable`` or ``fatal``), or an exception for the whole batch —
``RetryableError`` (429, 5xx, timeouts, WeCom's frequency errcode; may carry Retry-After) or ``FatalError``
(auth, bad request). ``dispatch`` does the rest the same way for every channel: batching, a rate limit,
retries with exponential backoff and jitter that wait at least Retry-After, and the ledger writes around
every request. The idempotency key (segment, member, date) travels with every message.

- ``file``: CSV and Parquet per segment and date for ops (masked phone, staff owner, reasons);
- ``webhook``: JSON batches, signed with HMAC-SHA256 when a secret is set;
- ``wecom``: one customer-contact mass-message task per staff member (``add_msg_template``, chat_type
  single); the staff member confirms it in WeCom. Access tokens are fetched and refreshed on expiry;
- ``sms``: the gateway; phones are decrypted from the contact vault for the request only (the one other
  reader of the vault is the ops API's audited admin export).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from memberflow.core.settings import ConfigError, Settings, get_settings
from memberflow.core.vault import ContactVault, VaultError, partition_files
from memberflow.outreach.suppression import Caps
from memberflow.segments import TEMPLATES

log = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "outreach.yml"


class RetryableError(Exception):
    """The whole batch failed in a way worth retrying (429, 5xx, timeout, busy)."""

    def __init__(self, message: str, retry_after: float | None = None, in_doubt: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # the request may have been applied (the answer was lost): a retry must not assume it was not
        self.in_doubt = in_doubt


class DeferredError(RetryableError):
    """Not now (SMS quiet hours): leave the batch for the next run, do not retry within this one."""


class FatalError(Exception):
    """The batch cannot succeed as it is (bad credentials, rejected request). ``errcode``: the API's own
    error code when it gave one (WeCom), for callers that treat some codes their own way."""

    def __init__(self, message: str, errcode: int | None = None) -> None:
        super().__init__(message)
        self.errcode = errcode


@dataclass
class Message:
    key: str
    member_id: str
    segment: str
    channel: str
    as_of: str
    message: str
    reasons: list[str] = field(default_factory=list)
    address: dict[str, Any] = field(default_factory=dict)
    in_doubt: bool = False  # a request carrying it may have been applied (the sending process was killed)


@dataclass
class Outcome:
    key: str
    ok: bool
    error_class: str | None = None  # retryable | in_doubt (may have been applied) | fatal
    error: str | None = None
    external_id: str | None = None


@dataclass
class ChannelConfig:
    name: str
    batch_size: int = 100
    rate_per_second: float | None = None
    timeout_seconds: float = 10.0
    max_attempts: int = 6
    backoff_seconds: float = 0.5
    backoff_max_seconds: float = 60.0
    # a server's Retry-After is waited in full up to this; past it the batch is left for the next run
    retry_after_max_seconds: float = 120.0
    url: str | None = None
    # the system's credentials (webhook signing secret; WeCom corp id and secret; SMS API key), never printed
    credentials: dict[str, str | None] = field(default_factory=dict, repr=False)


@dataclass
class OutreachConfig:
    caps: Caps
    channels: dict[str, ChannelConfig]

    @classmethod
    def load(cls, override: str | Path | None = None, settings: Settings | None = None) -> OutreachConfig:
        """The packaged defaults, merged with the override file (argument, else MEMBERFLOW_OUTREACH_CONFIG);
        the APIs' addresses come from the settings."""
        settings = settings or get_settings()
        data = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
        path = override or settings.outreach_config
        if path:
            try:
                extra = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"{path}: cannot read outreach config: {exc}") from exc
            for section in ("caps", "channels"):
                for key, value in (extra.get(section) or {}).items():
                    if isinstance(value, dict) and isinstance(data[section].get(key), dict):
                        data[section][key] = {**data[section][key], **value}
                    else:
                        data[section][key] = value
        caps_raw = data["caps"]
        try:
            start, end = (datetime.strptime(t, "%H:%M").time() for t in caps_raw["quiet_hours"])
            age = caps_raw.get("max_age_days", 3)
            caps = Caps(
                int(caps_raw["member_per_day"]),
                int(caps_raw["sms_per_day"]),
                start,
                end,
                None if age is None else int(age),
                int(caps_raw["member_per_week"]),
                int(caps_raw["cooldown_days"]),
                int(caps_raw["service_per_day"]),
                int(caps_raw["service_per_week"]),
                int(caps_raw.get("staff_per_day", 40)),
                {str(k): int(v) for k, v in (caps_raw.get("staff_capacity") or {}).items()},
            )
            if caps.cooldown_days < 1 or min(caps.member_per_week, caps.service_per_week) < 0:
                raise ValueError("caps.cooldown_days must be at least 1 and weekly caps at least 0")
            if min([caps.staff_per_day, *caps.staff_capacity.values()]) < 0:
                raise ValueError("caps.staff_per_day and caps.staff_capacity must not be negative")
            urls = {"webhook": settings.webhook_url, "wecom": settings.wecom_url, "sms": settings.sms_url}
            urls["wecom_tags"] = settings.wecom_url  # the same WeCom, its corp-tag API
            wecom = {"corpid": settings.wecom_corpid, "secret": settings.wecom_secret}
            credentials = {
                "webhook": {"secret": settings.webhook_secret},
                "wecom": wecom,
                "wecom_tags": wecom,
                "sms": {"key": settings.sms_key},
            }
            channels = {
                name: ChannelConfig(
                    name=name, url=urls.get(name), credentials=credentials.get(name, {}), **(values or {})
                )
                for name, values in data["channels"].items()
            }
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"outreach config: {exc}") from exc
        return cls(caps, channels)


class RateLimiter:
    """At most ``rate`` acquisitions per second, evenly spaced (no bursts that trip the server's limit)."""

    def __init__(self, rate: float | None, clock=time.monotonic, sleep=time.sleep) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.clock, self.sleep = clock, sleep
        self.next_at = 0.0

    def acquire(self) -> None:
        if not self.interval:
            return
        now = self.clock()
        if self.next_at > now:
            self.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = now + self.interval


class Connector(ABC):
    name = "connector"

    def __init__(self, config: ChannelConfig, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.settings = settings
        self.clock = clock

    def batches(self, messages: list[Message]) -> Iterator[list[Message]]:
        size = max(self.config.batch_size, 1)
        for start in range(0, len(messages), size):
            yield messages[start : start + size]

    @abstractmethod
    def send_batch(self, batch: list[Message]) -> list[Outcome]: ...
    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class HttpConnector(Connector):
    def __init__(self, config: ChannelConfig, settings: Settings, clock) -> None:
        super().__init__(config, settings, clock)

        if not config.url:
            raise FatalError(
                f"channel {config.name} is not configured: set MEMBERFLOW_{config.name.upper()}_URL"
            )
        self.client = httpx.Client(timeout=config.timeout_seconds)
        self.requests_made = 0

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, url: str, **kwargs):
        """One HTTP call; transport problems, 429 and 5xx become RetryableError, other 4xx FatalError."""
        self.requests_made += 1
        try:
            response = self.client.request(method, url, **kwargs)
        except (httpx.ConnectTimeout, httpx.ConnectError) as exc:  # nothing reached the server
            raise RetryableError(f"{self.name}: {type(exc).__name__}") from exc
        except httpx.TimeoutException as exc:
            raise RetryableError(
                f"{self.name}: timed out after {self.config.timeout_seconds}s", in_doubt=True
            ) from exc
        except httpx.TransportError as exc:
            raise RetryableError(f"{self.name}: {type(exc).__name__}", in_doubt=True) from exc
        if response.status_code == 429:
            raise RetryableError(f"{self.name}: HTTP 429", _retry_after(response.headers.get("Retry-After")))
        if response.status_code >= 500:
            raise RetryableError(
                f"{self.name}: HTTP {response.status_code}", _retry_after(response.headers.get("Retry-After"))
            )
        if response.status_code >= 400:
            raise FatalError(f"{self.name}: HTTP {response.status_code} {response.text[:200]}")
        try:
            return response.json()
        except ValueError as exc:
            raise RetryableError(f"{self.name}: response is not JSON") from exc


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max((when - datetime.now(when.tzinfo)).total_seconds(), 0.0)


# ----------------------------------------------------------------------------------------------- file


class FileConnector(Connector):
    """CSV + Parquet per segment and date under exports/segments/<date>/ (masked phones only)."""

    name = "file"
    COLUMNS = ("idempotency_key", "member_id", "segment", "message", "phone_masked", "staff_owner", "reasons")

    def batches(self, messages: list[Message]) -> Iterator[list[Message]]:
        by_segment: dict[tuple[str, str], list[Message]] = {}
        for m in messages:
            by_segment.setdefault((m.as_of, m.segment), []).append(m)
        yield from by_segment.values()

    def send_batch(self, batch: list[Message]) -> list[Outcome]:
        folder = self.settings.home / "exports" / "segments" / batch[0].as_of
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{batch[0].segment}.parquet"
        rows = {}
        if target.exists():
            rows = {r["idempotency_key"]: r for r in pq.read_table(target).to_pylist()}
        for m in batch:
            rows[m.key] = {
                "idempotency_key": m.key,
                "member_id": m.member_id,
                "segment": m.segment,
                "message": m.message,
                "phone_masked": m.address.get("phone_masked"),
                "staff_owner": m.address.get("staff_owner"),
                "reasons": "; ".join(m.reasons),
            }
        table = pa.Table.from_pylist(
            [rows[k] for k in sorted(rows)], schema=pa.schema([(c, pa.string()) for c in self.COLUMNS])
        )
        for suffix, write in ((".parquet", pq.write_table), (".csv", pacsv.write_csv)):
            tmp = target.with_suffix(suffix + ".tmp")
            write(table, tmp)
            tmp.replace(target.with_suffix(suffix))
        return [Outcome(m.key, True, external_id=str(target.with_suffix(".csv").name)) for m in batch]


# -------------------------------------------------------------------------------------------- webhook


class WebhookConnector(HttpConnector):
    """POST {"messages": [...]} to the mini-program backend; it answers per message key."""

    name = "webhook"

    def send_batch(self, batch: list[Message]) -> list[Outcome]:
        body = json.dumps(
            {
                "messages": [
                    {
                        "idempotency_key": m.key,
                        "member_id": m.member_id,
                        "unionid": m.address.get("unionid"),
                        "segment": m.segment,
                        "message": m.message,
                        "as_of": m.as_of,
                        "reasons": m.reasons,
                    }
                    for m in batch
                ]
            },
            ensure_ascii=False,
        ).encode("utf-8")
        headers = {"Content-Type": "application/json", "Idempotency-Key": _batch_key(batch)}
        secret = self.config.credentials.get("secret")
        if secret:
            headers["X-Memberflow-Signature"] = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        reply = self.request("POST", self.config.url, content=body, headers=headers)
        done = set(reply.get("accepted", [])) | set(reply.get("duplicates", []))
        rejected = {r["idempotency_key"]: r.get("error", "rejected") for r in reply.get("rejected", [])}
        return [
            Outcome(m.key, True)
            if m.key in done
            else Outcome(
                m.key, False, "fatal", f"webhook rejected: {rejected.get(m.key, 'not acknowledged')}"
            )
            for m in batch
        ]


def _batch_key(batch: list[Message]) -> str:
    return hashlib.sha256("\n".join(m.key for m in batch).encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------------------------- wecom

WECOM_TOKEN_ERRORS = {40014, 41001, 42001}  # invalid, missing, expired access_token
WECOM_RETRYABLE = {-1, 45009, 45033}  # system busy, API frequency limit, concurrency limit


class WecomConnector(HttpConnector):
    name = "wecom"

    def __init__(self, config: ChannelConfig, settings: Settings, clock) -> None:
        super().__init__(config, settings, clock)
        self.corpid = config.credentials.get("corpid")
        self.secret = config.credentials.get("secret")
        if not (self.corpid and self.secret):
            raise FatalError(
                "channel wecom is not configured: set MEMBERFLOW_WECOM_CORPID and MEMBERFLOW_WECOM_SECRET"
            )
        self._token: str | None = None
        self._token_until = 0.0
        self._in_doubt: set[str] = set()  # batches whose add_msg_template answer was lost

    def batches(self, messages: list[Message]) -> Iterator[list[Message]]:
        """One task per staff member and message (a task carries one text), split at batch_size."""
        groups: dict[tuple[str, str], list[Message]] = {}
        for m in messages:
            groups.setdefault((m.address.get("staff_owner") or "", m.message), []).append(m)
        for group in groups.values():
            yield from super().batches(group)

    def token(self) -> str:
        if self._token and time.monotonic() < self._token_until:
            return self._token
        reply = self.request(
            "GET",
            f"{self.config.url}/cgi-bin/gettoken",
            params={"corpid": self.corpid, "corpsecret": self.secret},
        )
        if reply.get("errcode", 0) != 0:
            code = reply.get("errcode")
            if code in WECOM_RETRYABLE:
                raise RetryableError(f"wecom gettoken errcode {code}")
            raise FatalError(f"wecom gettoken errcode {code}: {reply.get('errmsg')}")
        self._token = reply["access_token"]
        # refresh a little early: a token that expires in flight costs a round trip
        self._token_until = time.monotonic() + max(float(reply.get("expires_in", 7200)) - 60, 1)
        return self._token

    def _call(self, path: str, body: dict) -> dict:
        reply = self.request(
            "POST",
            f"{self.config.url}/cgi-bin/externalcontact/{path}",
            params={"access_token": self.token()},
            json=body,
        )
        code = reply.get("errcode", 0)
        if code in WECOM_TOKEN_ERRORS:
            self._token = None
            raise RetryableError(f"wecom errcode {code}: access token refreshed", retry_after=0)
        if code in WECOM_RETRYABLE:
            raise RetryableError(f"wecom errcode {code}")
        if code != 0:
            raise FatalError(f"wecom errcode {code}: {reply.get('errmsg')}", errcode=code)
        return reply

    def already_created(self, sender: str, text: str) -> dict[str, tuple[str, int]]:
        """external_userid -> (msgid, send status) of the tasks this sender already has with this text, in
        the last 24 hours (status 0 awaiting the staff member's confirmation, 1 sent, 2 not a contact,
        3 the customer already got a mass message today).

        WeCom's add_msg_template takes no idempotency key. When a request's answer was lost, or the sending
        process died, the task may exist: ask WeCom (get_groupmsg_list_v2, get_groupmsg_send_result) before
        creating it again."""
        now = int(time.time())
        found: dict[str, tuple[str, int]] = {}
        cursor = ""
        while True:
            listing = self._call(
                "get_groupmsg_list_v2",
                {"chat_type": "single", "start_time": now - 86400, "end_time": now + 60, "creator": sender,
                 "limit": 100, "cursor": cursor},
            )  # fmt: skip
            for task in listing.get("group_msg_list", []):
                if (task.get("text") or {}).get("content") != text:
                    continue
                for ext, (status, _) in self.send_results(task["msgid"], sender).items():
                    found.setdefault(ext, (task["msgid"], status))
            cursor = listing.get("next_cursor") or ""
            if not cursor:
                return found

    def send_results(self, msgid: str, sender: str) -> dict[str, tuple[int, int | None]]:
        """external_userid -> (send status, send_time as epoch seconds or None) of one task's recipients
        (get_groupmsg_send_result, every page): 0 waiting for the staff member to confirm it, 1 sent, 2 not
        the sender's contact any more, 3 the customer already got another mass message that day."""
        out: dict[str, tuple[int, int | None]] = {}
        cursor = ""
        while True:
            result = self._call(
                "get_groupmsg_send_result",
                {"msgid": msgid, "userid": sender, "limit": 1000, "cursor": cursor},
            )
            for row in result.get("send_list", []):
                out[row["external_userid"]] = (int(row.get("status", 0)), row.get("send_time"))
            cursor = result.get("next_cursor") or ""
            if not cursor:
                return out

    def send_batch(self, batch: list[Message]) -> list[Outcome]:
        sender = batch[0].address.get("staff_owner")
        text = TEMPLATES.get(batch[0].message, {}).get("zh", batch[0].message)
        fingerprint = _batch_key(batch)
        done: dict[str, tuple[str, int]] = {}
        if fingerprint in self._in_doubt or any(m.in_doubt for m in batch):
            done = self.already_created(sender, text)
        todo = [m for m in batch if m.address["external_userid"] not in done]
        outcomes = {}
        for m in batch:
            if m.address["external_userid"] in done:
                msgid, status = done[m.address["external_userid"]]
                outcomes[m.key] = (
                    Outcome(m.key, True, external_id=msgid)
                    if status in (0, 1)
                    else Outcome(m.key, False, "fatal", f"wecom task {msgid}: send status {status}")
                )
        if todo:
            body = {
                "chat_type": "single",
                "external_userid": [m.address["external_userid"] for m in todo],
                "sender": sender,
                "allow_select": False,
                "text": {"content": text},
            }
            try:
                reply = self._call("add_msg_template", body)
            except RetryableError as exc:
                if exc.in_doubt:
                    self._in_doubt.add(fingerprint)
                raise
            failed = set(reply.get("fail_list", []))
            for m in todo:
                outcomes[m.key] = (
                    Outcome(m.key, False, "fatal", "wecom fail_list: not reachable by the sender")
                    if m.address["external_userid"] in failed
                    else Outcome(m.key, True, external_id=reply.get("msgid"))
                )
        return [outcomes[m.key] for m in batch]


# ------------------------------------------------------------------------------------------------ sms

SMS_RETRYABLE = {"Throttling.User", "isp.SYSTEM_ERROR", "isp.RAM_PERMISSION_DENY"}


class SmsConnector(HttpConnector):
    """The SMS gateway. Phones are decrypted from the vault per batch, only into the request body."""

    name = "sms"

    def __init__(self, config: ChannelConfig, settings: Settings, clock, caps: Caps) -> None:
        super().__init__(config, settings, clock)
        self.caps = caps
        self.api_key = config.credentials.get("key")
        if not self.api_key:
            raise FatalError("channel sms is not configured: set MEMBERFLOW_SMS_KEY")
        self._sealed: dict[str, str] | None = None

    def _sealed_phones(self) -> dict[str, str]:
        """phone_token -> sealed phone, from every landed vault partition (newest wins)."""
        if self._sealed is None:
            sealed: dict[str, str] = {}
            for path in partition_files(self.settings.vault_dir):
                t = pq.read_table(path, columns=["phone_token", "phone_sealed"])
                sealed.update(zip(t["phone_token"].to_pylist(), t["phone_sealed"].to_pylist(), strict=True))
            self._sealed = sealed
        return self._sealed

    def send_batch(self, batch: list[Message]) -> list[Outcome]:
        if self.caps.quiet(self.clock()):
            raise DeferredError("sms: quiet hours (21:00-08:00 China time), left for the next run")
        vault = ContactVault(self.settings.vault_key())
        sealed = self._sealed_phones()
        items, outcomes = [], {}
        for m in batch:
            token = m.address.get("phone_token")
            if token not in sealed:
                outcomes[m.key] = Outcome(m.key, False, "fatal", "sms: no phone in the contact vault")
                continue
            try:
                phone = vault.open(sealed[token])
            except VaultError:
                outcomes[m.key] = Outcome(m.key, False, "fatal", "sms: vault entry does not decrypt")
                continue
            items.append({"phone": phone, "out_id": m.key, "params": {}})
        if items:
            body = {"template": batch[0].message, "sign": "memberflow", "items": items}
            reply = self.request(
                "POST", f"{self.config.url}/sms/batch", json=body, headers={"X-Api-Key": self.api_key}
            )
            del items, body  # the plain numbers live no longer than the request
            if reply.get("code") != "OK":
                code = reply.get("code")
                if code in SMS_RETRYABLE:
                    raise RetryableError(f"sms gateway {code}")
                raise FatalError(f"sms gateway {code}")
            for result in reply.get("results", []):
                key, code = result.get("out_id"), result.get("code")
                if code == "OK":
                    outcomes[key] = Outcome(key, True, external_id=result.get("biz_id"))
                elif code in SMS_RETRYABLE:
                    outcomes[key] = Outcome(key, False, "retryable", f"sms {code}")
                else:
                    outcomes[key] = Outcome(key, False, "fatal", f"sms {code}")
        return [outcomes.get(m.key) or Outcome(m.key, False, "retryable", "sms: no result") for m in batch]


# ------------------------------------------------------------------------------------------ dispatch


def make_connector(channel: str, config: OutreachConfig, settings: Settings, clock) -> Connector:
    cfg = config.channels[channel]
    if channel == "file":
        return FileConnector(cfg, settings, clock)
    if channel == "webhook":
        return WebhookConnector(cfg, settings, clock)
    if channel == "wecom":
        return WecomConnector(cfg, settings, clock)
    if channel == "sms":
        return SmsConnector(cfg, settings, clock, config.caps)
    raise ConfigError(f"unknown channel {channel!r}")


def _too_long(exc: BaseException, cfg: ChannelConfig) -> bool:
    """The server asked for a longer wait than this run gives it (``retry_after_max_seconds``)."""
    retry_after = getattr(exc, "retry_after", None)
    return retry_after is not None and retry_after > cfg.retry_after_max_seconds


def _worth_retrying(cfg: ChannelConfig) -> Callable[[BaseException], bool]:
    def worth(exc: BaseException) -> bool:
        return (
            isinstance(exc, RetryableError) and not isinstance(exc, DeferredError) and not _too_long(exc, cfg)
        )

    return worth


class _WaitRetryAfter:
    """Exponential backoff with jitter (capped at ``backoff_max_seconds``), but never less than the
    server's Retry-After (a longer one than ``retry_after_max_seconds`` is not retried in this run)."""

    def __init__(self, cfg: ChannelConfig) -> None:
        self.backoff = wait_exponential_jitter(
            multiplier=cfg.backoff_seconds, max=cfg.backoff_max_seconds, jitter=cfg.backoff_seconds
        )

    def __call__(self, state) -> float:
        wait = self.backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            if exc.retry_after == 0:  # e.g. a refreshed token: go again now
                return 0.0
            wait = max(wait, exc.retry_after)
        return wait


def _retrying(cfg: ChannelConfig, sleep: Callable[[float], None]) -> Retrying:
    """The channel's retries: up to max_attempts, backoff honouring Retry-After, the last error raised."""
    return Retrying(
        stop=stop_after_attempt(cfg.max_attempts),
        wait=_WaitRetryAfter(cfg),
        retry=retry_if_exception(_worth_retrying(cfg)),
        reraise=True,
        sleep=sleep,
    )


def with_retries(cfg: ChannelConfig, call: Callable[[], Any], sleep: Callable[[float], None] = time.sleep):
    """``call()`` with the channel's retries and backoff (for calls outside a batch, e.g. listing tags)."""
    for attempt in _retrying(cfg, sleep):
        with attempt:
            return call()
    raise AssertionError("unreachable: Retrying reraises the last error")


@dataclass
class DispatchStats:
    sent: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # error -> rows
    retried_requests: int = 0
    requests: int = 0


def dispatch(
    connector: Connector,
    messages: list[Message],
    ledger,
    run_id: str,
    clock: Callable[[], datetime],
    sleep: Callable[[float], None] = time.sleep,
    limiter: RateLimiter | None = None,
) -> DispatchStats:
    """Send every message through the connector, batch by batch, with the ledger written around each."""
    cfg = connector.config
    limiter = limiter or RateLimiter(cfg.rate_per_second, sleep=sleep)
    stats = DispatchStats()
    for batch in connector.batches(messages):
        keys = [m.key for m in batch]
        ledger.mark_sending(run_id, clock(), keys)
        attempt_no = 0
        try:
            for attempt in _retrying(cfg, sleep):
                with attempt:
                    attempt_no = attempt.retry_state.attempt_number
                    if attempt_no > 1:
                        stats.retried_requests += 1
                    limiter.acquire()
                    stats.requests += 1
                    try:
                        outcomes = connector.send_batch(batch)
                    except (RetryableError, FatalError) as exc:
                        kind = "fatal" if isinstance(exc, FatalError) else "retryable"
                        ledger.record_attempt(run_id, clock(), keys, attempt_no, "error", kind, str(exc))
                        raise
        except RetryableError as exc:
            # in_doubt: the last attempt may have been applied; the next run checks before sending again
            kind = "in_doubt" if exc.in_doubt else "retryable"
            message = str(exc)
            if _too_long(exc, cfg):
                message += (
                    f": the server asked to wait {exc.retry_after:.0f} s (Retry-After), longer than a run "
                    f"waits (retry_after_max_seconds {cfg.retry_after_max_seconds:g} s); left for the next "
                    "run"
                )
            outcomes = [Outcome(k, False, kind, message) for k in keys]
        except FatalError as exc:
            outcomes = [Outcome(k, False, "fatal", str(exc)) for k in keys]
        else:
            ledger.record_attempt(
                run_id, clock(), keys, attempt_no, "ok", None, f"{sum(o.ok for o in outcomes)} accepted"
            )
        ledger.settle(run_id, clock(), outcomes)
        for o in outcomes:
            if o.ok:
                stats.sent += 1
            else:
                stats.failed[o.error or "failed"] = stats.failed.get(o.error or "failed", 0) + 1
    return stats


def sent_keys(outcomes: Iterable[Outcome]) -> set[str]:
    return {o.key for o in outcomes if o.ok}
