"""Schemathesis against the published OpenAPI: generated requests to every operation (valid ones and
invalid ones) must never get a server error, and answers must match the schema (status codes, content
types, bodies); invalid input must be rejected. Authenticated as admin (the widest role) through
schemathesis's auth hook, so its own checks of missing or wrong credentials still run; as ops, no 5xx either.

The schema is read at collection from the app over an empty workspace (it does not depend on data); the
requests go over HTTP to the app serving the delivered test workspace.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.api.conftest import LiveServer, auth
from tests.conftest import make_settings


def _published_spec() -> dict:
    from memberflow.api.app import create_app

    with tempfile.TemporaryDirectory(prefix="memberflow-openapi-") as home:
        return create_app(make_settings(Path(home) / "ws")).openapi()


schema = schemathesis.openapi.from_dict(_published_spec())
ADMIN: dict[str, str] = {}


@schema.auth()
class AdminToken:
    def get(self, case, ctx):
        return ADMIN["token"]

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
    case.call_and_validate(base_url=live_api.url)
    response = case.call(base_url=live_api.url, headers=auth(tokens.ops))
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code)
