"""API tokens with roles, and the audit trail of what was exported or looked up (SQLite in the workspace).

A token is shown once, when it is created; the store keeps only its SHA-256. Tokens are 32 random bytes,
so a fast hash is enough: there is nothing to brute-force that a slow hash would protect. Roles:

- ``staff`` (导购) and ``health_manager`` (健康管理师): a token bound to one staff member (their WeCom
  userid): their own daily queue and marking its items done or skipped, nothing else. A health manager's
  queue shows health details (a health product due) of the members who consented to it; a staff member's
  never does;
- ``store_manager`` (店长): a token bound to one store: the queues and completion of the store's active
  staff (the staff directory, ``dim_staff``) and the profiles of the members they own; no health details,
  no segment lists or exports;
- ``ops``: every read, member lookup, CSV exports with masked phones, every staff member's queue (without
  health details);
- ``admin``: the same, plus unmasked exports, health details and reading the audit trail.

Every export (masked or not) and every member lookup writes an audit row: who, when, what, how many rows.
An unmasked export writes its row before the first byte leaves and completes it when the last one has.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from memberflow.core.settings import ConfigError, Settings
from memberflow.core.sqlite import connect

ROLES = ("staff", "health_manager", "store_manager", "ops", "admin")
STAFF_ROLES = ("staff", "health_manager")  # bound to one staff member: their own queue and members
STORE_ROLES = ("store_manager",)  # bound to one store: its staff's queues and members
HEALTH_ROLES = ("health_manager", "admin")  # may see health details where the member consented
TOKEN_PREFIX = "mf_"

SCHEMA = """
create table if not exists tokens (
    token_id text primary key,
    name text not null,
    role text not null,
    token_hash text not null unique,
    created_at text not null,
    expires_at text,
    revoked_at text,
    last_used_at text,
    staff_id text,
    store_id text
);
create table if not exists audit (
    audit_id integer primary key autoincrement,
    at text not null,
    token_id text not null,
    token_name text not null,
    role text not null,
    action text not null,
    segment text,
    as_of text,
    detail text,
    unmasked integer not null default 0,
    rows integer,
    state text not null,
    finished_at text
);
create index if not exists audit_at on audit (at);
"""


@dataclass(frozen=True)
class Principal:
    token_id: str
    name: str
    role: str
    staff_id: str | None = None  # the staff member a staff or health_manager token acts as
    store_id: str | None = None  # the store a store_manager token oversees

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    @property
    def is_store_manager(self) -> bool:
        return self.role in STORE_ROLES

    @property
    def sees_health(self) -> bool:
        return self.role in HEALTH_ROLES


@dataclass(frozen=True)
class IssuedToken:
    token: str  # shown once
    token_id: str
    name: str
    role: str
    expires_at: str | None
    staff_id: str | None = None
    store_id: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def access_path(settings: Settings) -> Path:
    return settings.home / "api" / "access.sqlite"


class AccessStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        self.path = path
        with self._connect() as con:
            con.executescript(SCHEMA)
            have = {r[1] for r in con.execute("pragma table_info(tokens)").fetchall()}
            for column in ("staff_id", "store_id"):  # a store from before staff or store tokens
                if column not in have:
                    con.execute(f"alter table tokens add column {column} text")

    @classmethod
    def open(cls, settings: Settings) -> AccessStore:
        return cls(access_path(settings))

    def _connect(self):
        return connect(self.path)  # one short connection per call: the API serves from a thread pool

    # --- tokens ------------------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        role: str,
        days: int | None = 90,
        staff_id: str | None = None,
        store_id: str | None = None,
    ) -> IssuedToken:
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
        staff_id = (staff_id or "").strip() or None
        store_id = (store_id or "").strip() or None
        if role in STAFF_ROLES and staff_id is None:
            raise ConfigError(f"a {role} token acts as one staff member: give their WeCom userid (--staff)")
        if role not in STAFF_ROLES and staff_id is not None:
            raise ConfigError(f"a {role} token is not bound to a staff member: leave out --staff")
        if role in STORE_ROLES and store_id is None:
            raise ConfigError(f"a {role} token oversees one store: give its store id (--store)")
        if role not in STORE_ROLES and store_id is not None:
            raise ConfigError(f"a {role} token is not bound to a store: leave out --store")
        if not name.strip():
            raise ConfigError("a token needs a name (whose it is)")
        if days is not None and days <= 0:
            raise ConfigError("--days must be positive (or leave it out for no expiry)")
        token_id = secrets.token_hex(4)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        expires = (datetime.now(UTC) + timedelta(days=days)).isoformat(timespec="seconds") if days else None
        with self._connect() as con:
            con.execute(
                "insert into tokens (token_id, name, role, token_hash, created_at, expires_at, staff_id, "
                "store_id) values (?, ?, ?, ?, ?, ?, ?, ?)",
                (token_id, name.strip(), role, _hash(token), _now(), expires, staff_id, store_id),
            )
        return IssuedToken(token, token_id, name.strip(), role, expires, staff_id, store_id)

    def verify(self, token: str) -> Principal | None:
        """The token's holder, or None when it is unknown, revoked or expired."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        with self._connect() as con:
            row = con.execute(
                "select token_id, name, role, expires_at, staff_id, store_id from tokens "
                "where token_hash = ? and revoked_at is null",
                (_hash(token),),
            ).fetchone()
            if row is None:
                return None
            if row["expires_at"] and row["expires_at"] <= _now():
                return None
            con.execute("update tokens set last_used_at = ? where token_id = ?", (_now(), row["token_id"]))
        return Principal(row["token_id"], row["name"], row["role"], row["staff_id"], row["store_id"])

    def revoke(self, token_id: str) -> bool:
        with self._connect() as con:
            cur = con.execute(
                "update tokens set revoked_at = ? where token_id = ? and revoked_at is null",
                (_now(), token_id),
            )
        return cur.rowcount == 1

    def tokens(self) -> list[dict]:
        with self._connect() as con:
            rows = con.execute(
                "select token_id, name, role, staff_id, store_id, created_at, expires_at, revoked_at, "
                "last_used_at "
                "from tokens order by created_at"
            ).fetchall()
        return [dict(r) for r in rows]

    # --- audit -------------------------------------------------------------------------------------------
    def audit_start(
        self,
        who: Principal,
        action: str,
        segment: str | None = None,
        as_of: str | None = None,
        detail: str | None = None,
        unmasked: bool = False,
    ) -> int:
        with self._connect() as con:
            cur = con.execute(
                "insert into audit (at, token_id, token_name, role, action, segment, as_of, detail, "
                "unmasked, state) values (?, ?, ?, ?, ?, ?, ?, ?, ?, 'started')",
                (_now(), who.token_id, who.name, who.role, action, segment, as_of, detail, int(unmasked)),
            )
        return int(cur.lastrowid)

    def audit(
        self,
        who: Principal,
        action: str,
        rows: int,
        segment: str | None = None,
        as_of: str | None = None,
        detail: str | None = None,
    ) -> None:
        """A completed read in one go (a lookup, a page of members, a profile): no stream to wait for."""
        self.audit_finish(self.audit_start(who, action, segment, as_of, detail), rows)

    def audit_finish(self, audit_id: int, rows: int, state: str = "completed") -> None:
        with self._connect() as con:
            con.execute(
                "update audit set rows = ?, state = ?, finished_at = ? where audit_id = ?",
                (rows, state, _now(), audit_id),
            )

    def audit_rows(self, limit: int = 200) -> list[dict]:
        with self._connect() as con:
            rows = con.execute("select * from audit order by audit_id desc limit ?", (limit,)).fetchall()
        return [dict(r) | {"unmasked": bool(r["unmasked"])} for r in rows]
