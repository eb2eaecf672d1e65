"""A small client of Airflow 3's public REST API (``/api/v2``), as an operator's script would use it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime

import httpx

FINISHED = {"success", "failed"}


@dataclass
class AirflowAPI:
    base_url: str
    username: str
    password: str
    _client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            token = httpx.post(
                f"{self.base_url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=30,
            )
            token.raise_for_status()
            self._client = httpx.Client(
                base_url=f"{self.base_url}/api/v2",
                headers={"Authorization": f"Bearer {token.json()['access_token']}"},
                timeout=60,
            )
        return self._client

    def _call(self, method: str, path: str, **kwargs) -> dict:
        response = self.client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else {}

    # --- DAGs ---------------------------------------------------------------------------------------------
    def dags(self) -> dict[str, dict]:
        return {d["dag_id"]: d for d in self._call("GET", "/dags", params={"limit": 100})["dags"]}

    def import_errors(self) -> list[dict]:
        return self._call("GET", "/importErrors")["import_errors"]

    def wait_for_dags(self, dag_ids: set[str], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            errors = self.import_errors()
            if errors:
                raise RuntimeError(f"DAG import errors: {errors}")
            if dag_ids <= set(self.dags()):
                return
            time.sleep(2)
        raise TimeoutError(f"DAGs not parsed in {timeout:.0f} s: {dag_ids - set(self.dags())}")

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    # --- runs ---------------------------------------------------------------------------------------------
    def backfill(self, dag_id: str, first: datetime, last: datetime, reprocess: str = "none") -> dict:
        """Create a backfill of the DAG's scheduled runs with logical dates in [first, last], one at a time
        (``reprocess``: none | failed | completed decides what happens to days that already have a run)."""
        return self._call(
            "POST",
            "/backfills",
            json={
                "dag_id": dag_id,
                "from_date": first.isoformat(),
                "to_date": last.isoformat(),
                "max_active_runs": 1,
                "reprocess_behavior": reprocess,
            },
        )

    def run_at(self, dag_id: str, logical_date: datetime, timeout: float = 60) -> dict:
        """The run of ``dag_id`` with that logical date (a backfill creates it asynchronously)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.runs(dag_id):
                if run["logical_date"] and datetime.fromisoformat(run["logical_date"]) == logical_date:
                    return run
            time.sleep(1)
        raise TimeoutError(f"no run of {dag_id} at {logical_date.isoformat()}")

    def runs(self, dag_id: str) -> list[dict]:
        return self._call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "run_after"})[
            "dag_runs"
        ]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 500})[
            "task_instances"
        ]

    def wait_run(self, dag_id: str, run_id: str, timeout: float, check=None) -> dict:
        """Poll until the run is success or failed; ``check()`` is called between polls (dead services)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(dag_id, run_id)
            if run["state"] in FINISHED:
                return run
            if check:
                check()
            time.sleep(2)
        raise TimeoutError(f"{dag_id} {run_id} still {run['state']} after {timeout:.0f} s")

    def wait_new_run(self, dag_id: str, known: set[str], timeout: float, check=None) -> dict:
        """Wait for a run of ``dag_id`` not in ``known`` (an Asset-triggered run) to appear and finish."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fresh = [r for r in self.runs(dag_id) if r["dag_run_id"] not in known]
            if fresh:
                left = max(1.0, deadline - time.monotonic())
                return self.wait_run(dag_id, fresh[0]["dag_run_id"], left, check)
            if check:
                check()
            time.sleep(2)
        raise TimeoutError(f"no new run of {dag_id} in {timeout:.0f} s")

    def clear(
        self, dag_id: str, run_id: str, task_ids: list[str] | None = None, only_failed: bool = True
    ) -> list[dict]:
        """Clear tasks of a run and everything downstream of them, so the scheduler runs them again (the run
        goes back to queued): the failed ones, or ``task_ids`` (all tasks when ``only_failed`` is off)."""
        body = {
            "dag_run_id": run_id,
            "only_failed": only_failed,
            "reset_dag_runs": True,
            "include_downstream": True,
            "dry_run": False,
        }
        if task_ids:
            body["task_ids"] = task_ids
        return self._call("POST", f"/dags/{dag_id}/clearTaskInstances", json=body)["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The task try's log as text, one JSON record per line (Airflow 3 serves structured logs)."""
        found = self._call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        return "\n".join(json.dumps(line, ensure_ascii=False) for line in found["content"])
