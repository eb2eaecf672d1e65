# The memberflow image: the official Airflow image of the version uv.lock pins, with the project and its
# locked dependencies installed. docker-compose.yml runs every Airflow component, the MLflow server and the
# ops API from it.
FROM apache/airflow:3.3.2-python3.11

USER root
# the DuckDB warehouse, landing zone and source folders live on volumes mounted here
# (named volumes take the owner of the folder they are mounted on: airflow, so the components can write)
RUN mkdir -p /opt/memberflow /opt/airflow/auth /data/memberflow /data/sources /data/mlflow-artifacts \
 && chown -R airflow:0 /opt/memberflow /opt/airflow/auth /data
USER airflow

WORKDIR /opt/memberflow
# dependencies first (cached while only the code changes): exactly what uv.lock says, no dev tools
COPY --chown=airflow:0 pyproject.toml uv.lock README.md ./
RUN pip install --no-cache-dir "uv>=0.5,<1" \
 && uv export --frozen --no-dev --no-emit-project --no-hashes -o /tmp/requirements.txt \
 && uv pip install --python "$(command -v python)" --no-cache --compile-bytecode -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY --chown=airflow:0 memberflow ./memberflow
COPY --chown=airflow:0 ml ./ml
COPY --chown=airflow:0 expectations ./expectations
COPY --chown=airflow:0 devkit ./devkit
COPY --chown=airflow:0 dbt_project ./dbt_project
COPY --chown=airflow:0 dags ./dags
COPY --chown=airflow:0 docker/airflow-pools.json ./docker/airflow-pools.json
# editable: the DAGs, dbt project and suites are read from /opt/memberflow, where the code sits.
# Bytecode is compiled into the image (above for the dependencies, here for the project): each Airflow task
# is a new process, and without it every one compiles the few thousand modules it imports (5-10 s).
RUN uv pip install --python "$(command -v python)" --no-cache --no-deps --editable . \
 && python -m compileall -q memberflow ml expectations devkit dags \
 && rm -rf dbt_project/target dbt_project/logs

ENV MEMBERFLOW_HOME=/data/memberflow \
    MEMBERFLOW_DATA_DIR=/data/sources \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/memberflow/dags \
    DO_NOT_TRACK=true \
    GX_ANALYTICS_ENABLED=false \
    MLFLOW_ENABLE_TELEMETRY=false \
    SCARF_ANALYTICS=false \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False \
    AIRFLOW__USAGE_DATA_COLLECTION__ENABLED=False
