"""The production shape, natively: Airflow (api-server, scheduler, dag-processor, triggerer and two Celery
workers on Redis: CeleryExecutor) and an MLflow tracking server with authentication, both on the local
PostgreSQL server.

The same services docker-compose.yml runs in containers with its ``celery`` profile, started here as
processes of this machine. Each service runs in its own session (process group), so stopping it by its pid
also stops what it forked (Celery's worker processes, uvicorn workers). Databases are created per stack and
dropped when it stops. The workers serve one Celery queue named after the stack, so two stacks on one Redis
(a developer's run beside CI's) never take each other's tasks.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import httpx

from devkit.orchestrate import import_pools
from memberflow.core.contracts import LOCAL_TZ

PG_DSN = os.environ.get("MEMBERFLOW_IT_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("MEMBERFLOW_IT_REDIS", "redis://127.0.0.1:6379/0")
# as docker-compose.yml's celery profile runs them (tests/unit/test_compose.py keeps the two alike)
EXECUTOR = "CeleryExecutor"
CELERY_WORKERS = 2
WORKER_CONCURRENCY = 2
VENV_BIN = Path(sys.executable).parent

HISTORY_START = date(2026, 1, 1)
HISTORY_END = date(2026, 3, 1)  # loaded before go-live, without Airflow (`memberflow build --as-of`)
DAYS = [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]  # the three days run through Airflow
MEMBERS = 1500
# deliveries happen "now" for the sample's dates: the morning after the last day, outside quiet hours
CLOCK = "2026-03-05T10:00:00+08:00"
DAG_IDS = {"extract_channels", "transform_members", "score_members", "train_models", "deliver_segments"}


def logical(day: date, hour: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=LOCAL_TZ)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin_connection():
    import psycopg2

    con = psycopg2.connect(f"{PG_DSN}/postgres")
    con.autocommit = True
    return con


def _admin(*statements: str) -> None:
    # not ``with connection``: psycopg2 opens a transaction there, and CREATE/DROP DATABASE refuse one
    con = _admin_connection()
    try:
        with con.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        con.close()


def create_database(name: str) -> str:
    _admin(f'drop database if exists "{name}" with (force)', f'create database "{name}"')
    return f"{PG_DSN}/{name}"


def drop_database(name: str) -> None:
    _admin(f'drop database if exists "{name}" with (force)')


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the service's process group, SIGKILL to what is left after ``grace`` seconds."""
        pid = self.process.pid
        if self.process.poll() is None:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        # the leader may be gone while its children (task runners) still hold the group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        self.process.wait(5)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Stack:
    """Databases, processes and their environment; ``stop()`` undoes everything ``start_*`` did."""

    root: Path
    base_env: dict[str, str]
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    services: list[Service] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    airflow_env: dict[str, str] = field(default_factory=dict)
    airflow_url: str = ""
    airflow_password: str = ""
    mlflow_url: str = ""
    mlflow_user: str = "memberflow"
    mlflow_password: str = ""

    def _database(self, purpose: str) -> str:
        name = f"memberflow_it_{self.tag}_{purpose}"
        url = create_database(name)
        self.databases.append(name)
        return url

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Service:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root
            )
        service = Service(name, proc, log)
        self.services.append(service)
        return service

    def _wait_http(self, service: Service, url: str, timeout: float, ok=(200,)) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not service.alive():
                raise RuntimeError(f"{service.name} exited ({service.process.returncode}):\n{service.tail()}")
            try:
                if httpx.get(url, timeout=2).status_code in ok:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{service.name} did not answer {url} in {timeout:.0f} s:\n{service.tail()}")

    # --- MLflow -------------------------------------------------------------------------------------------
    def start_mlflow(self) -> dict[str, str]:
        """MLflow tracking server with basic auth: runs and registry in Postgres, artifacts served from a
        folder. Returns the client environment (URI and credentials)."""
        backend = self._database("mlflow").replace("postgresql://", "postgresql+psycopg2://")
        auth_db = self._database("mlflow_auth").replace("postgresql://", "postgresql+psycopg2://")
        self.mlflow_password = secrets.token_urlsafe(16)
        config = self.root / "mlflow" / "basic_auth.ini"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {auth_db}\n"
            f"admin_username = {self.mlflow_user}\n"
            f"admin_password = {self.mlflow_password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        port = free_port()
        env = {
            **self.base_env,
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            # the auth app signs its CSRF tokens with it (required; one value for every server process)
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
        }
        service = self._spawn(
            "mlflow",
            [
                str(VENV_BIN / "mlflow"),
                "server",
                "--app-name",
                "basic-auth",
                "--backend-store-uri",
                backend,
                "--artifacts-destination",
                str(self.root / "mlflow" / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env,
        )
        self.mlflow_url = f"http://127.0.0.1:{port}"
        self._wait_http(service, f"{self.mlflow_url}/health", 120)
        return {
            "MEMBERFLOW_MLFLOW_URI": self.mlflow_url,
            "MLFLOW_TRACKING_USERNAME": self.mlflow_user,
            "MLFLOW_TRACKING_PASSWORD": self.mlflow_password,
        }

    # --- Airflow ------------------------------------------------------------------------------------------
    def start_airflow(self, extra_env: dict[str, str]) -> None:
        """Migrate a fresh metadata database, then start api-server, scheduler, dag-processor, triggerer."""
        from cryptography.fernet import Fernet

        home = self.root / "airflow"
        home.mkdir(parents=True, exist_ok=True)
        self.airflow_password = secrets.token_urlsafe(12)
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({"admin": self.airflow_password}))
        api_port = free_port()
        self.airflow_url = f"http://127.0.0.1:{api_port}"
        conn = self._database("airflow").replace("postgresql://", "postgresql+psycopg2://")
        env = {
            **self.base_env,
            **extra_env,
            "PATH": f"{VENV_BIN}{os.pathsep}{self.base_env.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).resolve().parents[2] / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
            "AIRFLOW__CORE__PARALLELISM": str(CELERY_WORKERS * WORKER_CONCURRENCY),
            "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conn,
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.airflow_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        }
        env.pop("AIRFLOW_CONFIG", None)
        self.airflow_env = env
        migrate = subprocess.run(
            [str(VENV_BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, cwd=home
        )
        if migrate.returncode:
            output = f"{migrate.stdout[-3000:]}\n{migrate.stderr[-3000:]}"
            raise RuntimeError(f"airflow db migrate failed:\n{output}")
        airflow = str(VENV_BIN / "airflow")
        import_pools([airflow], env)
        api = self._spawn("api-server", [airflow, "api-server", "--port", str(api_port)], env)
        for component in ("scheduler", "dag-processor", "triggerer"):
            self._spawn(component, [airflow, component], env)
        for n in range(1, CELERY_WORKERS + 1):
            self.start_worker(n)
        self._wait_http(api, f"{self.airflow_url}/api/v2/monitor/health", 180)
        self.wait_for_workers(120)

    @property
    def queue(self) -> str:
        return f"memberflow_it_{self.tag}"

    def start_worker(self, n: int) -> Service:
        """Celery worker ``n`` on this stack's queue: a pid file and a log server port of its own."""
        env = {**self.airflow_env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
        argv = [
            str(VENV_BIN / "airflow"),
            "celery",
            "worker",
            "--celery-hostname",
            f"worker{n}@{self.queue}",
            "--queues",
            self.queue,
            "--concurrency",
            str(WORKER_CONCURRENCY),
            "--pid",
            str(self.root / "airflow" / f"worker{n}.pid"),
            "--without-gossip",
            "--without-mingle",
        ]
        return self._spawn(f"worker{n}", argv, env)

    def workers(self) -> list[Service]:
        return [s for s in self.services if s.name.startswith("worker")]

    def wait_for_workers(self, timeout: float) -> None:
        """Until every worker has connected to the broker and is ready for tasks."""
        deadline = time.monotonic() + timeout
        waiting = self.workers()
        while waiting and time.monotonic() < deadline:
            self.check_alive()
            waiting = [w for w in waiting if " ready." not in w.log.read_text(errors="replace")]
            time.sleep(0.5)
        if waiting:
            raise TimeoutError(
                f"Celery workers not ready in {timeout:.0f} s (broker {REDIS_URL}, MEMBERFLOW_IT_REDIS): "
                + "; ".join(f"{w.name}:\n{w.tail()}" for w in waiting)
            )

    def tasks_run_by_worker(self) -> dict[str, int]:
        """How many task workloads each worker took from the queue (Celery logs each one it receives)."""
        return {w.name: w.log.read_text(errors="replace").count("] received") for w in self.workers()}

    def check_alive(self) -> None:
        dead = [s for s in self.services if not s.alive()]
        if dead:
            raise RuntimeError("; ".join(f"{s.name} exited:\n{s.tail()}" for s in dead))

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        for name in self.databases:
            drop_database(name)
