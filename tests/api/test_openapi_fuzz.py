"""Schemathesis against the published OpenAPI: generated requests to every operation (valid ones and
invalid ones) must never get a server error, and answers must match the schema (status codes, content
types, bodies); invalid input must be rejected. Authenticated as admin (the widest role) through
schemathesis's auth hook, so its own checks of missing or wrong credentials still run; as ops, no 5xx either.

The schema is read at collection from the app over an empty workspace (it does not depend on data); the
requests go over HTTP to the app serving the delivered test workspace.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.support import LiveServer, auth, make_settings


def _published_spec() -> dict:
    from memberflow.api.app import create_app

    with tempfile.TemporaryDirectory(prefix="memberflow-openapi-") as home:
        return create_app(make_settings(Path(home) / "ws")).openapi()


schema = schemathesis.openapi.from_dict(_published_spec())
ADMIN: dict[str, str] = {}
ANSWERED: Counter = Counter()  # (operation, status class) of the admin calls, checked after the run


@schema.auth(refresh_interval=None)  # no caching: the first call comes before the token exists
class AdminToken:
    def get(self, case, ctx):
        # called at collection too (explicit examples), before the fixture has made the token
        return ADMIN.get("token", "not-yet")

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module")
def live_api(api_app, tokens):
    ADMIN["token"] = tokens.admin
    with LiveServer(api_app) as server:
        yield server


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_error_and_answers_match_the_schema(case, live_api, tokens):
    answer = case.call_and_validate(base_url=live_api.url)
    ANSWERED[(f"{case.method} {case.path}", answer.status_code // 100)] += 1
    response = case.call(base_url=live_api.url, headers=auth(tokens.ops))
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code)


# it reads what the fuzzing run above collected: same worker, after it
@pytest.mark.slow
@pytest.mark.xdist_group("scored")
def test_the_fuzzing_reached_the_data():
    """Guard against a run where every request bounced (say, on authentication): each operation that needs
    no known name or id must have answered 2xx to generated requests (the others mostly meet 404s)."""
    published = {f"{m.upper()} {path}" for path, ops in _published_spec()["paths"].items() for m in ops}
    operations = {op for op, _ in ANSWERED} & published  # the unsupported-method probes count separately
    succeeded = {op for (op, cls), n in ANSWERED.items() if cls == 2 and n}
    keyless = {f"GET /api/{p}" for p in ("health", "me", "segments", "models", "deliveries", "audit")}
    assert operations == published and keyless <= succeeded, (sorted(operations), sorted(succeeded))
    assert not any(cls == 5 for _, cls in ANSWERED)
