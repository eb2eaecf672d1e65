"""Local stand-ins for the outreach systems, for tests, benchmarks and the demo.

One small FastAPI app serves three APIs the way the real ones behave where it matters to a sender:

- ``POST /webhook/segments``: a mini-program backend. Answers per message key; a key it already has is a
  duplicate (acknowledged, not applied again); 429 + Retry-After over its rate limit.
- ``GET /cgi-bin/gettoken`` and ``POST /cgi-bin/externalcontact/add_msg_template``: WeCom. Access tokens
  expire (errcode 42001), the API frequency limit answers errcode 45009, busy answers errcode -1, and
  external_userids that are not the sender's contacts come back in ``fail_list``. WeCom has no idempotency
  key: a repeated task is a second task, so a sender in doubt asks ``get_groupmsg_list_v2`` and
  ``get_groupmsg_send_result`` what exists. A task's recipients wait (status 0) until the staff member
  confirms the task on their phone; ``POST /_sandbox/wecom/confirm`` plays that part: status 1 with a
  ``send_time``, 3 for a customer who already got another mass message that day, or 2 when the customer is
  no longer the sender's contact.
- ``POST /cgi-bin/externalcontact/get_corp_tag_list``, ``add_corp_tag`` and ``mark_tag``: WeCom's corp tags.
  The sandbox keeps the tag library and every contact's tags, so tests compare what members should carry with
  what WeCom holds (``GET /_sandbox/wecom/tags``); a tag id it does not know is errcode 40068, a customer who
  is not the staff member's contact errcode 84061.
- ``POST /sms/batch``: an SMS gateway. Per-number daily cap (``isv.BUSINESS_LIMIT_CONTROL``), 429 +
  ``Throttling.User`` over its rate limit, ``out_id`` deduplicates.

Faults are injected on a share of requests (seeded): 429, 5xx, and slow answers past the client's timeout
after the request was applied (the sender cannot tell it went through). Everything applied is recorded, so
tests count deliveries from the receiver's side (``GET /_sandbox/received``). Plain phones received by the
SMS gateway stay in memory; records show them masked.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from devkit.background import BackgroundServer
from memberflow.core.phones import mask_phone


@dataclass
class SandboxConfig:
    # requests allowed per `window_seconds` for each API (webhook, wecom, sms); None = unlimited
    limits: dict[str, int | None] = field(
        default_factory=lambda: {"webhook": None, "wecom": None, "sms": None}
    )
    window_seconds: float = 60.0
    failure_rate: float = 0.0  # share of requests answered with an injected fault
    faults: tuple[str, ...] = ("429", "5xx", "slow")
    slow_seconds: float = 2.0  # longer than the client's timeout in the tests
    token_ttl_seconds: float = 7200.0
    sms_per_number_per_day: int = 3
    wecom_contacts: set[str] | None = None  # external_userids reachable; None = everyone
    corpid: str = "sandbox-corp"
    corpsecret: str = "sandbox-secret"
    sms_key: str = "sandbox-sms-key"
    seed: int = 0


# WeCom's answers to an injected fault: its frequency limit, and "system busy"
WECOM_FAULTS = {
    "429": {"errcode": 45009, "errmsg": "api freq out of limit"},
    "5xx": {"errcode": -1, "errmsg": "system busy"},
}


class SandboxState:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.rng = random.Random(config.seed)
        self.windows: dict[str, deque] = {}
        self.tokens: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.received: list[dict] = []  # one row per applied message (what a member received)
            self.requests: dict[str, int] = {"webhook": 0, "wecom": 0, "sms": 0}
            self.rejected: dict[str, int] = {}  # fault or limit -> requests
            self.duplicates: int = 0
            self.seen: dict[str, dict] = {}  # idempotency key -> first result
            self.tasks: list[dict] = []  # WeCom mass-message tasks created
            self.tag_groups: dict[str, dict] = {}  # group_id -> {group_name, tags: {tag_id: name}}
            self.contact_tags: dict[tuple[str, str], set[str]] = {}  # (userid, external_userid) -> tag ids
            self.mark_tag_calls = 0
            self.sms_per_number: dict[str, int] = {}
            self.sms_phones: list[str] = []  # plain numbers, memory only
            self.request_times: dict[str, list[float]] = {"webhook": [], "wecom": [], "sms": []}

    def over_limit(self, api: str) -> float | None:
        """Seconds until a slot frees when the API is over its limit, else None (and the request counts)."""
        limit = self.config.limits.get(api)
        now = time.monotonic()
        with self.lock:
            self.requests[api] += 1
            self.request_times[api].append(time.time())
            if not limit:
                return None
            window = self.windows.setdefault(api, deque())
            while window and now - window[0] >= self.config.window_seconds:
                window.popleft()
            if len(window) >= limit:
                self._count("rate_limited")
                return max(self.config.window_seconds - (now - window[0]), 0.01)
            window.append(now)
            return None

    def fault(self) -> str | None:
        with self.lock:
            if self.config.failure_rate and self.rng.random() < self.config.failure_rate:
                kind = self.rng.choice(self.config.faults)
                self._count(kind)
                return kind
        return None

    def _count(self, what: str) -> None:
        self.rejected[what] = self.rejected.get(what, 0) + 1

    def record(self, api: str, key: str | None, row: dict) -> bool:
        """Apply a message once per key; returns False for a duplicate key."""
        with self.lock:
            if key is not None and key in self.seen:
                self.duplicates += 1
                return False
            if key is not None:
                self.seen[key] = row
            self.received.append({"api": api, "key": key, **row})
            return True

    def tags_of_contacts(self) -> dict[str, list[str]]:
        """'userid/external_userid' -> the contact's corp tags as 'group/tag' names (contacts with any)."""
        with self.lock:
            names = {
                tag_id: f"{group['group_name']}/{name}"
                for group in self.tag_groups.values()
                for tag_id, name in group["tags"].items()
            }
            return {
                f"{userid}/{ext}": sorted(names[t] for t in tags)
                for (userid, ext), tags in self.contact_tags.items()
                if tags
            }

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "mark_tag_calls": self.mark_tag_calls,
                "received": list(self.received),
                "requests": dict(self.requests),
                "rejected": dict(self.rejected),
                "duplicates": self.duplicates,
            }


def create_app(state: SandboxState) -> FastAPI:
    app = FastAPI(title="memberflow outreach sandbox", docs_url=None, redoc_url=None)
    cfg = state.config

    async def slow() -> None:
        await asyncio.sleep(cfg.slow_seconds)

    # ------------------------------------------------------------------------------------- webhook
    @app.post("/webhook/segments")
    async def webhook(request: Request):
        wait = state.over_limit("webhook")
        if wait is not None:
            return JSONResponse({"error": "rate limited"}, 429, headers={"Retry-After": f"{wait:.2f}"})
        fault = state.fault()
        if fault == "429":
            return JSONResponse({"error": "rate limited"}, 429, headers={"Retry-After": "1"})
        if fault == "5xx":
            return JSONResponse({"error": "internal"}, 503)
        body = await request.json()
        accepted, duplicates = [], []
        for m in body.get("messages", []):
            row = {"member_id": m.get("member_id"), "segment": m.get("segment"), "as_of": m.get("as_of")}
            (accepted if state.record("webhook", m["idempotency_key"], row) else duplicates).append(
                m["idempotency_key"]
            )
        if fault == "slow":
            await slow()  # applied, but the sender times out and cannot know
        return {"accepted": accepted, "duplicates": duplicates, "rejected": []}

    # --------------------------------------------------------------------------------------- wecom
    @app.get("/cgi-bin/gettoken")
    async def gettoken(corpid: str = "", corpsecret: str = ""):
        if corpid != cfg.corpid or corpsecret != cfg.corpsecret:
            return {"errcode": 40001, "errmsg": "invalid credential"}
        token = f"tok-{state.rng.getrandbits(64):016x}"
        with state.lock:
            state.tokens[token] = time.monotonic() + cfg.token_ttl_seconds
        return {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": int(cfg.token_ttl_seconds)}

    @app.post("/cgi-bin/externalcontact/add_msg_template")
    async def add_msg_template(request: Request, access_token: str = ""):
        refused = _refused(access_token)
        fault = None if refused else state.fault()
        if refused or fault in ("429", "5xx"):
            return refused or WECOM_FAULTS[fault]
        body = await request.json()
        sender, text = body.get("sender"), (body.get("text") or {}).get("content")
        if not sender:
            return {"errcode": 41048, "errmsg": "missing sender"}
        msgid = f"msg{state.rng.getrandbits(48):012x}"
        fail, sent = [], []
        for ext in body.get("external_userid", []):
            if cfg.wecom_contacts is not None and ext not in cfg.wecom_contacts:
                fail.append(ext)
                continue
            sent.append(ext)
            state.record(
                "wecom", None, {"external_userid": ext, "sender": sender, "text": text, "msgid": msgid}
            )
        with state.lock:
            state.tasks.append(
                {
                    "msgid": msgid,
                    "creator": sender,
                    "text": text,
                    "create_time": int(time.time()),
                    "sent": sent,
                    "status": dict.fromkeys(sent, (0, None)),  # external_userid -> (status, send_time)
                }
            )
        if fault == "slow":
            await slow()  # applied, but the answer is lost: WeCom has no idempotency key, the sender must ask
        return {"errcode": 0, "errmsg": "ok", "fail_list": fail, "msgid": msgid}

    def _token_error(access_token: str) -> dict | None:
        expires = state.tokens.get(access_token)
        if expires is None:
            return {"errcode": 40014, "errmsg": "invalid access_token"}
        if time.monotonic() >= expires:
            return {"errcode": 42001, "errmsg": "access_token expired"}
        return None

    def _refused(access_token: str) -> dict | None:
        """The answer to a WeCom call refused before it is applied (token, rate limit, injected 429/5xx)."""
        error = _token_error(access_token)
        if error:
            return error
        if state.over_limit("wecom") is not None:
            return WECOM_FAULTS["429"]
        return None

    @app.post("/cgi-bin/externalcontact/get_corp_tag_list")
    async def get_corp_tag_list(request: Request, access_token: str = ""):
        refused = _refused(access_token)
        if refused:
            return refused
        with state.lock:
            groups = [
                {
                    "group_id": gid,
                    "group_name": g["group_name"],
                    "tag": [{"id": tid, "name": name, "deleted": False} for tid, name in g["tags"].items()],
                }
                for gid, g in state.tag_groups.items()
            ]
        return {"errcode": 0, "errmsg": "ok", "tag_group": groups}

    @app.post("/cgi-bin/externalcontact/add_corp_tag")
    async def add_corp_tag(request: Request, access_token: str = ""):
        refused = _refused(access_token)
        if refused:
            return refused
        body = await request.json()
        with state.lock:
            gid = body.get("group_id")
            if gid is None:
                name = body.get("group_name")
                gid = next((k for k, g in state.tag_groups.items() if g["group_name"] == name), None)
                if gid is None:
                    gid = f"et{state.rng.getrandbits(40):010x}"
                    state.tag_groups[gid] = {"group_name": name, "tags": {}}
            elif gid not in state.tag_groups:
                return {"errcode": 40068, "errmsg": "invalid tagid"}
            group = state.tag_groups[gid]
            created = []
            for tag in body.get("tag", []):
                if tag["name"] in group["tags"].values():
                    return {"errcode": 40071, "errmsg": "UserTag Name Already Exist"}
                tid = f"et{state.rng.getrandbits(40):010x}"
                group["tags"][tid] = tag["name"]
                created.append({"id": tid, "name": tag["name"]})
        return {
            "errcode": 0,
            "errmsg": "ok",
            "tag_group": {"group_id": gid, "group_name": group["group_name"], "tag": created},
        }

    @app.post("/cgi-bin/externalcontact/mark_tag")
    async def mark_tag(request: Request, access_token: str = ""):
        refused = _refused(access_token)
        fault = None if refused else state.fault()
        if refused or fault in ("429", "5xx"):
            return refused or WECOM_FAULTS[fault]
        body = await request.json()
        userid, ext = body.get("userid"), body.get("external_userid")
        if cfg.wecom_contacts is not None and ext not in cfg.wecom_contacts:
            return {"errcode": 84061, "errmsg": "not external contact"}
        with state.lock:
            known = {t for g in state.tag_groups.values() for t in g["tags"]}
            asked = set(body.get("add_tag", [])) | set(body.get("remove_tag", []))
            if not asked or asked - known:
                return {"errcode": 40068, "errmsg": "invalid tagid"}
            tags = state.contact_tags.setdefault((userid, ext), set())
            tags |= set(body.get("add_tag", []))
            tags -= set(body.get("remove_tag", []))
            state.mark_tag_calls += 1
        if fault == "slow":
            await slow()  # applied, the answer lost: marking the same tags again changes nothing
        return {"errcode": 0, "errmsg": "ok"}

    @app.post("/cgi-bin/externalcontact/get_groupmsg_list_v2")
    async def get_groupmsg_list_v2(request: Request, access_token: str = ""):
        error = _token_error(access_token)
        if error:
            return error
        body = await request.json()
        with state.lock:
            tasks = [
                t
                for t in state.tasks
                if t["creator"] == body.get("creator")
                and body.get("start_time", 0) <= t["create_time"] <= body.get("end_time", 2**62)
            ]
        start = int(body.get("cursor") or 0)
        page = tasks[start : start + int(body.get("limit", 100))]
        more = start + len(page) < len(tasks)
        return {
            "errcode": 0,
            "errmsg": "ok",
            "next_cursor": str(start + len(page)) if more else "",
            "group_msg_list": [
                {
                    "msgid": t["msgid"],
                    "creator": t["creator"],
                    "create_type": 1,
                    "text": {"content": t["text"]},
                }
                for t in page
            ],
        }

    @app.post("/cgi-bin/externalcontact/get_groupmsg_send_result")
    async def get_groupmsg_send_result(request: Request, access_token: str = ""):
        error = _token_error(access_token)
        if error:
            return error
        body = await request.json()
        with state.lock:
            task = next((t for t in state.tasks if t["msgid"] == body.get("msgid")), None)
        if task is None:
            return {"errcode": 41063, "errmsg": "msgid not found"}
        start = int(body.get("cursor") or 0)
        rows = task["sent"][start : start + int(body.get("limit", 1000))]
        more = start + len(rows) < len(task["sent"])
        return {
            "errcode": 0,
            "errmsg": "ok",
            "next_cursor": str(start + len(rows)) if more else "",
            "send_list": [_send_row(task, e) for e in rows],
        }

    def _send_row(task: dict, ext: str) -> dict:
        status, send_time = task["status"][ext]
        row = {"external_userid": ext, "userid": task["creator"], "status": status}
        return row | ({"send_time": send_time} if send_time else {})

    @app.post("/_sandbox/wecom/confirm")
    async def confirm(request: Request) -> dict[str, int]:
        """The staff member confirms their waiting tasks on their phone. Body: ``sender``, optional
        ``external_userid`` (a list; default all of their waiting recipients), optional ``status`` (1, or 2
        for customers who deleted the contact). A customer who already got a mass message that day gets 3."""
        body = await request.json()
        sender, only, wanted = body["sender"], body.get("external_userid"), int(body.get("status", 1))
        now = int(body.get("at") or time.time())
        today = time.strftime("%Y-%m-%d", time.localtime(now))
        counts = {"1": 0, "2": 0, "3": 0}
        with state.lock:
            got_today = {
                ext
                for t in state.tasks
                for ext, (status, at) in t["status"].items()
                if status == 1 and time.strftime("%Y-%m-%d", time.localtime(at)) == today
            }
            for task in state.tasks:
                if task["creator"] != sender:
                    continue
                for ext, (status, _) in task["status"].items():
                    if status != 0 or (only is not None and ext not in only):
                        continue
                    result = 3 if wanted == 1 and ext in got_today else wanted
                    task["status"][ext] = (result, now if result == 1 else None)
                    got_today |= {ext} if result == 1 else set()
                    counts[str(result)] += 1
        return counts

    # ----------------------------------------------------------------------------------------- sms
    @app.post("/sms/batch")
    async def sms(request: Request):
        if request.headers.get("X-Api-Key") != cfg.sms_key:
            return JSONResponse({"code": "InvalidAccessKeyId.NotFound"}, 401)
        wait = state.over_limit("sms")
        if wait is not None:
            return JSONResponse({"code": "Throttling.User"}, 429, headers={"Retry-After": f"{wait:.2f}"})
        fault = state.fault()
        if fault == "429":
            return JSONResponse({"code": "Throttling.User"}, 429, headers={"Retry-After": "1"})
        if fault == "5xx":
            return JSONResponse({"code": "isp.SYSTEM_ERROR"}, 500)
        body = await request.json()
        results = []
        for item in body.get("items", []):
            phone, key = str(item.get("phone", "")), item.get("out_id")
            if len(phone) != 11 or not phone.isdigit():
                results.append({"out_id": key, "code": "isv.MOBILE_NUMBER_ILLEGAL"})
                continue
            with state.lock:
                first = state.seen.get(key)
            if first is not None:
                state.record("sms", key, {})  # counts the duplicate
                results.append({"out_id": key, "code": "OK", "biz_id": first["biz_id"]})
                continue
            with state.lock:
                sent = state.sms_per_number.get(phone, 0)
            if sent >= cfg.sms_per_number_per_day:
                results.append({"out_id": key, "code": "isv.BUSINESS_LIMIT_CONTROL"})
                continue
            biz_id = f"biz{state.rng.getrandbits(48):012x}"
            if state.record("sms", key, {"phone_masked": mask_phone(phone), "template": body.get("template"),
                                         "biz_id": biz_id}):  # fmt: skip
                with state.lock:
                    state.sms_per_number[phone] = sent + 1
                    state.sms_phones.append(phone)
            results.append({"out_id": key, "code": "OK", "biz_id": biz_id})
        if fault == "slow":
            await slow()  # applied, the sender times out
        return {"code": "OK", "results": results}

    # ------------------------------------------------------------------------------------ inspection
    @app.get("/_sandbox/received")
    async def received() -> dict[str, Any]:
        return state.snapshot()

    @app.get("/_sandbox/wecom/tags")
    async def wecom_tags() -> dict[str, list[str]]:
        return state.tags_of_contacts()

    @app.post("/_sandbox/reset")
    async def reset() -> dict[str, str]:
        state.reset()
        return {"status": "ok"}

    return app


class SandboxServer(BackgroundServer):
    """The sandbox app served by uvicorn on a free local port, in a background thread."""

    def __init__(self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = SandboxState(config or SandboxConfig())
        super().__init__(create_app(self.state), host, port, name="outreach sandbox")

    def env(self) -> dict[str, str]:
        """The environment that points memberflow's connectors at this sandbox."""
        cfg = self.state.config
        return {
            "MEMBERFLOW_WEBHOOK_URL": f"{self.url}/webhook/segments",
            "MEMBERFLOW_WECOM_URL": self.url,
            "MEMBERFLOW_WECOM_CORPID": cfg.corpid,
            "MEMBERFLOW_WECOM_SECRET": cfg.corpsecret,
            "MEMBERFLOW_SMS_URL": self.url,
            "MEMBERFLOW_SMS_KEY": cfg.sms_key,
        }
