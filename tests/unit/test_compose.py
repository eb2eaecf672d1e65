"""docker-compose.yml, the Dockerfile and .env.example agree with each other and with the project.

Docker does not run on the project's machines: the file is checked here by parsing, and the same services
run natively in the integration tier (tests/integration).
"""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from memberflow.core.settings import REPO_ROOT

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
REQUIRED = AIRFLOW_SERVICES | {"postgres", "redis", "mlflow", "ops-api"}
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    pairs = {}
    for line in (REPO_ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value
    return pairs


def _command(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def _locked_version(package: str) -> str:
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == package)


def test_every_service_of_the_production_shape_is_there(compose):
    services = compose["services"]
    assert set(services) >= REQUIRED
    commands = {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
    }
    for name, command in commands.items():
        assert _command(services[name]) == command
    assert _command(services["airflow-worker"]) == "celery worker"
    # LocalExecutor unless the celery profile is chosen; Redis and the workers only come with that profile
    assert services["redis"]["profiles"] == ["celery"] == services["airflow-worker"]["profiles"]
    executor = services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"]
    assert executor == "${AIRFLOW_EXECUTOR:-LocalExecutor}"


def test_the_celery_profile_is_what_the_integration_tier_runs(compose):
    """The integration tier starts the same Celery shape natively: executor, broker, workers and slots."""
    from tests.integration import stack

    worker = compose["services"]["airflow-worker"]
    env = worker["environment"]
    assert stack.EXECUTOR == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert stack.REDIS_URL.startswith("redis://")
    assert worker["deploy"]["replicas"] == stack.CELERY_WORKERS >= 2
    assert int(env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]) == stack.WORKER_CONCURRENCY


def test_airflow_components_share_one_image_one_environment_and_one_jwt_secret(compose):
    services = compose["services"]
    airflow = {name: services[name] for name in AIRFLOW_SERVICES}
    images = {s["image"] for s in airflow.values()}
    assert images == {"${MEMBERFLOW_IMAGE:-memberflow:latest}"}
    assert all(s.get("build") == "." for s in airflow.values())
    keys = [
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "MEMBERFLOW_HOME",
        "MEMBERFLOW_ID_KEY",
        "MEMBERFLOW_MLFLOW_URI",
    ]
    for key in keys:
        values = {s["environment"][key] for s in airflow.values()}
        assert len(values) == 1, (key, values)
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?")
    # the task runners reach the api-server by its service name and container port
    api_port = services["airflow-apiserver"]["ports"][0].split(":")[-1]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://airflow-apiserver:{api_port}/execution/"
    assert "@postgres/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/memberflow/dags"
    # no telemetry from any tool
    for service in [*airflow.values(), services["mlflow"], services["ops-api"]]:
        assert service["environment"]["DO_NOT_TRACK"] == "true"
        assert service["environment"]["MLFLOW_ENABLE_TELEMETRY"] == "false"


def test_mlflow_runs_with_authentication_on_postgres_and_the_pipeline_logs_in(compose):
    services = compose["services"]
    mlflow = services["mlflow"]
    script = _command(mlflow)
    assert "--app-name basic-auth" in script
    assert "postgresql+psycopg2://" in script and "@postgres/mlflow" in script
    assert "@postgres/mlflow_auth" in script
    assert "--artifacts-destination /data/mlflow-artifacts" in script
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    init_sql = (REPO_ROOT / "docker" / "postgres-init.sql").read_text()
    assert "CREATE DATABASE mlflow;" in init_sql and "CREATE DATABASE mlflow_auth;" in init_sql
    mounted = services["postgres"]["volumes"]
    assert any(v.startswith("./docker/postgres-init.sql:/docker-entrypoint-initdb.d/") for v in mounted)
    env = services["airflow-scheduler"]["environment"]
    assert env["MEMBERFLOW_MLFLOW_URI"] == "http://mlflow:5000"
    assert env["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD")
    assert mlflow["environment"]["MLFLOW_ADMIN_PASSWORD"] == "${MLFLOW_ADMIN_PASSWORD}"


def test_ports_are_bound_to_localhost_and_every_service_has_a_healthcheck(compose):
    services = compose["services"]
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert set(published) == {"airflow-apiserver", "mlflow", "ops-api"}
    for ports in published.values():
        assert all(str(p).startswith("127.0.0.1:") for p in ports)
    for name, service in services.items():
        if name != "airflow-init":
            assert "healthcheck" in service, name
    ops = services["ops-api"]
    assert ops["command"][:3] == ["serve", "--host", "0.0.0.0"]
    assert "http://localhost:8700/api/health" in ops["healthcheck"]["test"]


def test_dependencies_and_volumes_are_declared(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
    declared = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/", "$")):
                assert source in declared, (name, source)
    # the pipeline and the ops API share the workspace; the API reads what the workers write
    assert "workspace:/data/memberflow" in services["ops-api"]["volumes"]
    assert "workspace:/data/memberflow" in services["airflow-scheduler"]["volumes"]
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_every_variable_compose_reads_is_documented_in_env_example(compose, env_example):
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    used = set(VARIABLE.findall(text))
    assert used, "the pattern found no variables"
    assert used - set(env_example) == set()
    # secrets have no defaults in compose: a missing one stops `docker compose up` with its name
    for secret in ("POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY", "MLFLOW_ADMIN_PASSWORD"):
        assert re.search(rf"\$\{{{secret}:\?", text), secret


def test_the_image_extends_the_official_airflow_image_of_the_locked_version():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM apache/airflow:(\S+)-python(\S+)$", dockerfile, re.M)
    assert base, "the image must extend apache/airflow"
    assert base.group(1) == _locked_version("apache-airflow")
    assert base.group(2) == (REPO_ROOT / ".python-version").read_text().strip()
    assert "uv export --frozen --no-dev" in dockerfile
    for folder in ("memberflow", "ml", "expectations", "dbt_project", "dags"):
        assert f"COPY --chown=airflow:0 {folder} ./{folder}" in dockerfile
        assert (REPO_ROOT / folder).is_dir()
    # installed editable: the code reads its dbt project and suites beside itself, under /opt/memberflow
    assert "--editable ." in dockerfile and "WORKDIR /opt/memberflow" in dockerfile


def test_named_volumes_of_our_image_mount_on_folders_the_image_owns(compose):
    # a named volume takes the owner of the folder it is mounted on; one Docker creates itself is root's
    # and the airflow user could not write to it
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    created = set(re.search(r"RUN mkdir -p ([^\\\n]+)", dockerfile).group(1).split())
    base_image = {"/opt/airflow/logs"}  # made by the official image
    for name, service in compose["services"].items():
        if service.get("image") != "${MEMBERFLOW_IMAGE:-memberflow:latest}":
            continue
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source in compose["volumes"]:
                assert target in created | base_image, (name, target)
