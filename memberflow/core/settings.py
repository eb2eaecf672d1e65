"""Settings and workspace paths, read from the environment in one place.

Everything a run writes lives under ``MEMBERFLOW_HOME`` (default ``./.memberflow``). Secrets (the identity
key that turns phones into tokens, the contact-vault key) come from the environment; when they are not set,
random ones are made on a workspace's first use in its secrets folder: ``MEMBERFLOW_SECRETS_DIR``, by default
``~/.config/memberflow/workspaces/<workspace id>/``, outside the workspace, so a copy of the workspace
neither decrypts its vault nor can test phone numbers against its tokens (the demo keeps its keys inside its
own workspace and says so). The repository never holds a key and a second workspace never shares the first
one's tokens. A workspace remembers a fingerprint of each key it used (``keys.json``) and refuses another
key, or a lost one once it holds data.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Fingerprints of the keys a workspace was built with, under MEMBERFLOW_HOME (never the keys themselves).
KEYS_FILE = "keys.json"
# A workspace's random id (under MEMBERFLOW_HOME): names its default secrets folder, and follows the
# workspace when it moves.
WORKSPACE_ID_FILE = "workspace-id"
# In $MEMBERFLOW_HOME/secrets/ of a demo workspace: its keys are kept there on purpose.
DEMO_KEYS_MARKER = "DEMO-KEYS-KEPT-HERE"
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
DAGS_FOLDER = REPO_ROOT / "dags"
# The Airflow pools of the single-writer resources (memberflow/assets.py names them); every deployment
# imports this file.
POOLS_FILE = REPO_ROOT / "docker" / "airflow-pools.json"
CHINA_TZ = "Asia/Shanghai"

# A pipeline holding health data must not phone home: usage telemetry of dbt, Cosmos, GX and MLflow is off
# unless the operator explicitly turns it on.
PRIVACY_DEFAULTS = {
    "DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "SCARF_ANALYTICS": "false",
    "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
}


def apply_privacy_defaults(environ: dict[str, str] | None = None) -> None:
    """Switch third-party telemetry off unless the environment already says otherwise."""
    target = os.environ if environ is None else environ
    for name, value in PRIVACY_DEFAULTS.items():
        target.setdefault(name, value)


def schedule_start(environ: dict[str, str] | None = None):
    """The first China-local day the DAGs' schedules cover (``MEMBERFLOW_START_DATE``, default 2026-01-01).

    A deployment sets it to its go-live day: the scheduler then creates no daily run before it (with catchup
    off, only the newest finished day), and earlier days are loaded with a backfill. Runs triggered with an
    earlier logical date (REST API, ``airflow dags trigger``, backfills) are not affected.
    """
    import pendulum

    env = os.environ if environ is None else environ
    raw = env.get("MEMBERFLOW_START_DATE") or "2026-01-01"
    try:
        day = pendulum.Date.fromisoformat(raw)
    except ValueError as exc:
        raise ConfigError(f"MEMBERFLOW_START_DATE must be a date YYYY-MM-DD, got {raw!r}") from exc
    return pendulum.datetime(day.year, day.month, day.day, tz=CHINA_TZ)


class ConfigError(ValueError):
    """A setting is present but unusable; the message names the variable."""


def _read_float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number") from exc
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}={raw!r} must be a share between 0 and 1")
    return value


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which a container's CPU set narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _read_count(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.strip().isdigit():
        raise ConfigError(f"{name}={raw!r} is not a non-negative whole number")
    return int(raw)


def _read_limits(env: dict[str, str], name: str) -> dict[str, float]:
    """Parse ``channel.table=share`` pairs separated by commas."""
    raw = env.get(name, "").strip()
    limits: dict[str, float] = {}
    if not raw:
        return limits
    for item in raw.split(","):
        table, sep, share = item.strip().partition("=")
        if not sep or "." not in table:
            raise ConfigError(f"{name}: {item!r} is not of the form channel.table=share")
        limits[table.strip()] = _read_float({name: share.strip()}, name, 0.0)
    return limits


def _read_path(env: dict[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw).expanduser() if raw else None


DBT_TARGETS = ("duckdb", "postgres", "spark")


def _read_target(env: dict[str, str]) -> str:
    target = env.get("MEMBERFLOW_DBT_TARGET") or "duckdb"
    if target not in DBT_TARGETS:
        raise ConfigError(f"MEMBERFLOW_DBT_TARGET={target!r}: choose one of {', '.join(DBT_TARGETS)}")
    return target


IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


SPARK_MEMORY = re.compile(r"[1-9][0-9]*[kmgt]")


class SparkSettingsError(RuntimeError):
    """Spark cannot run with these settings (no Java, a bad schema name, a bad number)."""


@dataclass(frozen=True)
class SparkSettings:
    """The Spark target's settings (MEMBERFLOW_SPARK_*, and JAVA_HOME for the runtime): memberflow.spark."""

    java_home: str | None
    schema: str
    master: str
    shuffle_partitions: int
    replay_groups: int
    driver_memory: str = "4g"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SparkSettings:
        env = dict(os.environ if environ is None else environ)
        schema = env.get("MEMBERFLOW_SPARK_SCHEMA") or "memberflow"
        if not IDENTIFIER.fullmatch(schema):
            raise SparkSettingsError(
                f"MEMBERFLOW_SPARK_SCHEMA={schema!r}: use lower-case letters, digits and underscores"
            )
        numbers = {}
        for name, default in (
            ("MEMBERFLOW_SPARK_SHUFFLE_PARTITIONS", 2),
            ("MEMBERFLOW_SPARK_REPLAY_GROUPS", 8),
        ):
            raw = env.get(name) or str(default)
            if not raw.isdigit() or int(raw) < 1:
                raise SparkSettingsError(f"{name}={raw!r}: a whole number of at least 1")
            numbers[name] = int(raw)
        memory = env.get("MEMBERFLOW_SPARK_DRIVER_MEMORY") or "4g"
        if not SPARK_MEMORY.fullmatch(memory):
            raise SparkSettingsError(
                f"MEMBERFLOW_SPARK_DRIVER_MEMORY={memory!r}: a size such as 4g or 512m (Java's spelling)"
            )
        return cls(
            java_home=env.get("JAVA_HOME") or None,
            schema=schema,
            master=env.get("MEMBERFLOW_SPARK_MASTER") or "local[2]",
            shuffle_partitions=numbers["MEMBERFLOW_SPARK_SHUFFLE_PARTITIONS"],
            replay_groups=numbers["MEMBERFLOW_SPARK_REPLAY_GROUPS"],
            driver_memory=memory,
        )

    @property
    def raw_schema(self) -> str:
        return f"{self.schema}_raw"


class PgSettingsError(ValueError):
    """A MEMBERFLOW_PG_* setting that cannot be used."""


@dataclass(frozen=True)
class PgSettings:
    """Where the postgres target builds. The database and schema names go into SQL (and dbt's profile) as
    identifiers, so they are limited to lower-case letters, digits and underscores (PgSettingsError)."""

    host: str
    port: int
    user: str
    password: str
    database: str
    schema: str

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> PgSettings:
        env = dict(os.environ if environ is None else environ)
        port = env.get("MEMBERFLOW_PG_PORT", "5432")
        if not port.isdigit():
            raise PgSettingsError(f"MEMBERFLOW_PG_PORT must be a port number, not {port!r}")
        names = {}
        for var, default in (
            ("MEMBERFLOW_PG_DATABASE", "memberflow"),
            ("MEMBERFLOW_PG_SCHEMA", "memberflow"),
        ):
            value = env.get(var, default)
            # the schema gets a "_raw" twin: it must leave room for the suffix within PostgreSQL's 63 bytes
            if not IDENTIFIER.fullmatch(value) or len(value) > 59:
                raise PgSettingsError(
                    f"{var} must be 1-59 lower-case letters, digits or underscores, starting with a letter "
                    f"or underscore; got {value!r}"
                )
            names[var] = value
        return cls(
            host=env.get("MEMBERFLOW_PG_HOST", "127.0.0.1"),
            port=int(port),
            user=env.get("MEMBERFLOW_PG_USER", "postgres"),
            password=env.get("MEMBERFLOW_PG_PASSWORD", ""),
            database=names["MEMBERFLOW_PG_DATABASE"],
            schema=names["MEMBERFLOW_PG_SCHEMA"],
        )

    @property
    def raw_schema(self) -> str:
        return f"{self.schema}_raw"

    def connect(self, database: str | None = None):
        import psycopg2  # only the postgres target needs the driver

        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database or self.database,
        )


@dataclass(frozen=True)
class Settings:
    home: Path
    data_dir: Path
    quarantine_max_share: float = 0.05
    quarantine_limits: dict[str, float] = field(default_factory=dict)
    # A partition fails only when its quarantined rows pass the share AND this count: on a quiet day one bad
    # row out of eight is noise, not a broken export.
    quarantine_min_rows: int = 10
    id_key_env: str | None = None
    blocked_phones: tuple[str, ...] = ()
    vault_key_env: str | None = None
    # Where keys not given in the environment are kept (MEMBERFLOW_SECRETS_DIR); default: the user's config
    # folder, one subfolder per workspace.
    secrets_dir_env: Path | None = None
    config_home: Path = field(default_factory=lambda: Path.home() / ".config")
    # MLflow tracking store (MEMBERFLOW_MLFLOW_URI); default: SQLite + local artifacts in the workspace.
    mlflow_uri_env: str | None = None
    # LightGBM threads when training; one by default: on a busy 2-core machine two can be far slower than one.
    ml_threads: int = 1
    # Slices of the rows scoring and reasons predict side by side (MEMBERFLOW_PREDICT_THREADS), each in a
    # Python thread running single-threaded LightGBM (ml.score.predict_rows): no OpenMP threads spin against
    # a busy machine, so the default is the CPUs this process may use.
    predict_threads: int = field(default_factory=usable_cpus)
    # Processes a backfill lands its tables in (MEMBERFLOW_LANDING_WORKERS). One by default: each more process
    # pays Great Expectations' start-up, and on a busy 2-core machine two gained no time.
    landing_workers: int = 1
    # Files that change the packaged defaults (each optional): segment rules, model settings, quality
    # severities and thresholds, outreach caps and channels.
    segments_file: Path | None = None
    scripts_file: Path | None = None  # 话术 library of the staff queues (memberflow/scripts.yml)
    models_config: Path | None = None
    quality_config: Path | None = None
    outreach_config: Path | None = None
    # The delivery clock pinned to a moment (ISO 8601 with offset): replays, tests and the demo's past dates.
    clock: str | None = None
    # Where dbt builds: "duckdb" (the workspace's warehouse) or "postgres" (MEMBERFLOW_PG_*).
    dbt_target: str = "duckdb"
    # Browser origins the ops API answers cross-origin requests from (none by default).
    api_cors_origins: tuple[str, ...] = ()
    # Member lookups one API token may make per minute (testing phone numbers for membership, slowed).
    api_lookups_per_minute: int = 30
    # Credentials of the outreach systems, never printed.
    webhook_url: str | None = None
    wecom_url: str = "https://qyapi.weixin.qq.com"
    sms_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    wecom_corpid: str | None = field(default=None, repr=False)
    wecom_secret: str | None = field(default=None, repr=False)
    sms_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        home = Path(env.get("MEMBERFLOW_HOME") or ".memberflow").expanduser().resolve()
        data_dir = Path(env.get("MEMBERFLOW_DATA_DIR") or home / "sample").expanduser().resolve()
        return cls(
            home=home,
            data_dir=data_dir,
            quarantine_max_share=_read_float(env, "MEMBERFLOW_QUARANTINE_MAX_SHARE", 0.05),
            quarantine_limits=_read_limits(env, "MEMBERFLOW_QUARANTINE_LIMITS"),
            quarantine_min_rows=_read_count(env, "MEMBERFLOW_QUARANTINE_MIN_ROWS", 10),
            id_key_env=env.get("MEMBERFLOW_ID_KEY") or None,
            blocked_phones=tuple(
                p.strip() for p in env.get("MEMBERFLOW_BLOCKED_PHONES", "").split(",") if p.strip()
            ),
            vault_key_env=env.get("MEMBERFLOW_VAULT_KEY") or None,
            secrets_dir_env=_read_path(env, "MEMBERFLOW_SECRETS_DIR"),
            # the user's config folder belongs to the machine, not to memberflow's settings
            config_home=Path(
                env.get("XDG_CONFIG_HOME") or os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
            ).expanduser(),
            mlflow_uri_env=env.get("MEMBERFLOW_MLFLOW_URI") or None,
            ml_threads=max(1, _read_count(env, "MEMBERFLOW_ML_THREADS", 1)),
            predict_threads=max(1, _read_count(env, "MEMBERFLOW_PREDICT_THREADS", usable_cpus())),
            landing_workers=max(1, _read_count(env, "MEMBERFLOW_LANDING_WORKERS", 1)),
            segments_file=_read_path(env, "MEMBERFLOW_SEGMENTS"),
            scripts_file=_read_path(env, "MEMBERFLOW_SCRIPTS"),
            models_config=_read_path(env, "MEMBERFLOW_MODELS_CONFIG"),
            quality_config=_read_path(env, "MEMBERFLOW_QUALITY_CONFIG"),
            outreach_config=_read_path(env, "MEMBERFLOW_OUTREACH_CONFIG"),
            clock=env.get("MEMBERFLOW_CLOCK") or None,
            dbt_target=_read_target(env),
            api_cors_origins=tuple(
                o.strip() for o in env.get("MEMBERFLOW_API_CORS_ORIGINS", "").split(",") if o.strip()
            ),
            api_lookups_per_minute=max(1, _read_count(env, "MEMBERFLOW_API_LOOKUPS_PER_MINUTE", 30)),
            webhook_url=env.get("MEMBERFLOW_WEBHOOK_URL") or None,
            wecom_url=env.get("MEMBERFLOW_WECOM_URL") or "https://qyapi.weixin.qq.com",
            sms_url=env.get("MEMBERFLOW_SMS_URL") or None,
            webhook_secret=env.get("MEMBERFLOW_WEBHOOK_SECRET") or None,
            wecom_corpid=env.get("MEMBERFLOW_WECOM_CORPID") or None,
            wecom_secret=env.get("MEMBERFLOW_WECOM_SECRET") or None,
            sms_key=env.get("MEMBERFLOW_SMS_KEY") or None,
        )

    @property
    def postgres_target(self) -> bool:
        return self.dbt_target == "postgres"

    @property
    def spark_target(self) -> bool:
        return self.dbt_target == "spark"

    # --- workspace layout -------------------------------------------------------------------------------
    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def audit_dir(self) -> Path:
        """Extracted partitions waiting for the landing quality gate (write, audit, then publish)."""
        return self.home / "audit"

    @property
    def quality_dir(self) -> Path:
        """Quality gate results (JSON), GX validation results and Data Docs."""
        return self.home / "quality"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def cache_dir(self) -> Path:
        """Copies of what a step read from the warehouse, kept for the steps after it (safe to delete)."""
        return self.home / "cache"

    @property
    def vault_dir(self) -> Path:
        return self.home / "vault"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_uri(self) -> str:
        """``MEMBERFLOW_MLFLOW_URI`` when set (a shared server), else a SQLite store in the workspace.

        Not ``MLFLOW_TRACKING_URI``: MLflow writes that variable itself when a URI is set, so reading it back
        would let one workspace's store leak into the next in the same process.
        """
        return self.mlflow_uri_env or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def secrets_dir(self) -> Path:
        """Where this workspace's keys are kept when the environment does not give them."""
        return self._named_secrets_dir() or self._default_secrets_dir(self.workspace_id())

    def _named_secrets_dir(self) -> Path | None:
        """The folder the settings name: MEMBERFLOW_SECRETS_DIR, or a demo workspace's own (marked)."""
        if self.secrets_dir_env is not None:
            return self.secrets_dir_env.resolve()
        inside = self.home / "secrets"
        return inside if (inside / DEMO_KEYS_MARKER).exists() else None

    def _default_secrets_dir(self, workspace_id: str) -> Path:
        return self.config_home / "memberflow" / "workspaces" / workspace_id

    def own_secrets_folder(self) -> None:
        """Give the workspace a new id and copy its key files to that id's folder. Copies of a workspace on
        one machine share the default folder; a key rotation must replace this workspace's keys only. A
        folder the settings name (MEMBERFLOW_SECRETS_DIR, a demo's) is left as it is."""
        if self._named_secrets_dir() is not None:
            return
        shared = self.secrets_dir
        fresh = secrets.token_hex(8)
        own = self._default_secrets_dir(fresh)
        own.mkdir(parents=True, exist_ok=True)
        own.chmod(0o700)
        for path in shared.iterdir() if shared.is_dir() else ():
            if path.is_file() and not path.name.startswith("."):
                shutil.copy2(path, own / path.name)
        _replace_text(self.home / WORKSPACE_ID_FILE, fresh)

    def keep_keys_inside(self) -> Path:
        """Mark this workspace as a demo's: its made-up keys are kept inside it, where every command finds
        them (a copy of the workspace carries them, which is harmless for made-up data)."""
        folder = self.home / "secrets"
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        marker = folder / DEMO_KEYS_MARKER
        if not marker.exists():
            marker.write_text(
                "A demo workspace: `memberflow demo` keeps its made-up keys in this folder on purpose.\n"
                "A real workspace keeps them outside (MEMBERFLOW_SECRETS_DIR, or the environment).\n"
            )
        return folder

    def workspace_id(self) -> str:
        """The workspace's random id, made on first use."""
        return create_once(self.home / WORKSPACE_ID_FILE, lambda: secrets.token_hex(8), private=False)

    def quarantine_limit(self, channel: str, table: str) -> float:
        return self.quarantine_limits.get(f"{channel}.{table}", self.quarantine_max_share)

    # --- secrets ----------------------------------------------------------------------------------------
    # A workspace keeps a fingerprint of each key it was built with (KEYS_FILE, outside secrets/), so a
    # different key or a lost one stops every command instead of silently re-keying identities.
    def id_key(self) -> bytes:
        """Key of the HMAC that turns a normalized phone into ``phone_token``."""
        return self._key(
            "id_key", "MEMBERFLOW_ID_KEY", self.id_key_env, lambda: new_key_text("id_key")
        ).encode("utf-8")

    def vault_key(self) -> bytes:
        """64-byte AES-SIV key of the contact vault, given as URL-safe base64."""
        return vault_key_bytes(
            self._key(
                "vault_key", "MEMBERFLOW_VAULT_KEY", self.vault_key_env, lambda: new_key_text("vault_key")
            )
        )

    def holds_data(self) -> bool:
        """Whether anything was landed, built or vaulted here (a key made now would not match it)."""
        return self.warehouse_path.exists() or any(
            folder.is_dir() and any(folder.iterdir()) for folder in (self.landing_dir, self.vault_dir)
        )

    def _key(self, name: str, variable: str, given: str | None, make) -> str:
        """The key from the environment, else the workspace's secret file (made on a workspace's first use
        only); checked against the fingerprint the workspace recorded when it first used a key."""
        if given:
            text, origin = given, variable
        else:
            path = self.secrets_dir / name
            if not path.exists():
                self._refuse_key_inside(name)
                if self.holds_data():
                    raise ConfigError(
                        f"this workspace ({self.home}) holds data but its {name} is missing: restore {path} "
                        f"from a backup, set MEMBERFLOW_SECRETS_DIR to the folder that holds it, or set "
                        f"{variable} to the key it was built with. A new key would "
                        + (
                            "give every phone a new token (members split)."
                            if name == "id_key"
                            else "not open the vault."
                        )
                    )
            text, origin = self._workspace_secret(name, make), str(path)
        fingerprint = _fingerprint(text)
        keys_file = self.home / KEYS_FILE
        recorded = json.loads(keys_file.read_text()) if keys_file.exists() else {}
        if recorded.get(name) not in (None, fingerprint):
            raise ConfigError(
                f"{origin} is not the {name.replace('_', ' ')} this workspace was built with (fingerprint "
                f"{fingerprint}, the workspace's is {recorded[name]} in {keys_file}): set {variable} to the "
                f"workspace's key, or use a new MEMBERFLOW_HOME for a new key"
            )
        if name not in recorded:
            self._record_fingerprint(name, text)
        return text

    def key_in_environment(self, name: str) -> bool:
        """Whether the key ``name`` (id_key, vault_key) comes from the environment, not the secrets folder."""
        return bool(self.id_key_env if name == "id_key" else self.vault_key_env)

    def install_key(self, name: str, text: str) -> None:
        """Make ``text`` the workspace's ``name`` after a rotation: its fingerprint replaces the recorded one,
        and it replaces the key file when the workspace keeps its keys in the secrets folder (a deployment
        that passes keys in the environment sets the variable to the new key itself)."""
        if not self.key_in_environment(name):
            _replace_text(self.secrets_dir / name, text, private=True)
        self._record_fingerprint(name, text)

    def _record_fingerprint(self, name: str, text: str) -> None:
        keys_file = self.home / KEYS_FILE
        recorded = json.loads(keys_file.read_text()) if keys_file.exists() else {}
        keys_file.parent.mkdir(parents=True, exist_ok=True)
        _replace_text(keys_file, json.dumps({**recorded, name: _fingerprint(text)}, indent=2) + "\n")

    def _refuse_key_inside(self, name: str) -> None:
        """Make no key while this workspace still keeps one inside itself (made before keys moved out of
        workspaces): say how to move it instead."""
        inside = self.home / "secrets" / name
        if not inside.exists():
            return
        target = self.secrets_dir
        raise ConfigError(
            f"this workspace keeps its {name} inside itself ({inside}), where every copy of the workspace "
            f"carries it: move it out (`mkdir -p {target} && mv {inside} {target}/`), or set "
            f"MEMBERFLOW_SECRETS_DIR={inside.parent} to keep it there (a demo or test workspace)"
        )

    def _workspace_secret(self, name: str, make) -> str:
        return create_once(self.secrets_dir / name, make, private=True)


def _fingerprint(key: str) -> str:
    """What a workspace records of a key: an HMAC of a fixed text under it, never the key."""
    return hmac.new(key.encode("utf-8"), b"memberflow key fingerprint", "sha256").hexdigest()[:16]


def new_key_text(name: str) -> str:
    """A fresh random key as text: 32 random bytes in hex (id key), 64 in URL-safe base64 (vault key)."""
    if name == "id_key":
        return secrets.token_hex(32)
    return base64.urlsafe_b64encode(secrets.token_bytes(64)).decode("ascii")


def vault_key_bytes(text: str, variable: str = "MEMBERFLOW_VAULT_KEY") -> bytes:
    """The 64-byte AES-SIV key a vault key's text stands for (ConfigError naming ``variable`` otherwise)."""
    try:
        key = base64.urlsafe_b64decode(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ConfigError(f"{variable} is not URL-safe base64") from exc
    if len(key) != 64:
        raise ConfigError(f"{variable} must decode to 64 bytes, got {len(key)}")
    return key


def _write_aside(path: Path, text: str, private: bool) -> Path:
    """``text`` in a new file beside ``path`` (readable by its owner only when ``private``); its path."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return tmp


def _replace_text(path: Path, text: str, private: bool = False) -> None:
    """Replace ``path`` with ``text`` at once: readers see the old file or the new one, never half of it."""
    _write_aside(path, text, private).replace(path)


def create_once(path: Path, make, private: bool) -> str:
    """The text of ``path``, written with ``make()`` when it does not exist yet. Written aside, then linked
    into place: concurrent first uses (parallel Airflow tasks) all read the one that won, never a half-written
    file. A private file is readable by its owner only, in a folder only its owner can list."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        if private:
            path.parent.chmod(0o700)
        tmp = _write_aside(path, make(), private)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def get_settings() -> Settings:
    return Settings.from_env()


def postgres_target() -> bool:
    """Whether this process builds on PostgreSQL (MEMBERFLOW_DBT_TARGET=postgres)."""
    return get_settings().postgres_target


def spark_target() -> bool:
    """Whether this process builds on Spark (MEMBERFLOW_DBT_TARGET=spark, local mode: memberflow.spark)."""
    return get_settings().spark_target
