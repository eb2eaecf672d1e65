"""dbt by the book, checked on the parsed project: staging reads only the landing source, and every model
states its grain and has a primary-key test or an enforced primary-key constraint. The landing source's
freshness answers on fresh and on stale data."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from devkit import sqllint
from devkit.generate import GenerateConfig, generate
from memberflow.cli import app
from memberflow.core.contracts import CONTRACTS, LOCAL_TZ
from memberflow.dbt_env import BUILD_LAYERS, ensure_manifest, output_tail, run_dbt_process
from memberflow.pipeline import land_pending
from memberflow.transform import source_freshness
from tests.support import TEST_ID_KEY, make_settings

# a key test: a unique column (with not_null), a unique combination of columns, or an enforced constraint
KEY_TESTS = ("unique", "unique_combination")


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    return make_settings(tmp_path_factory.mktemp("parse") / "ws")


@pytest.fixture(scope="module")
def manifest(parsed) -> dict:
    return json.loads(ensure_manifest(parsed).read_text())


def models(manifest: dict) -> dict[str, dict]:
    return {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}


def test_staging_reads_only_the_landing_source_and_nothing_else_does(manifest) -> None:
    """Each staging model reads one landed table: from the source itself, or through the staging model of
    the same table that it refines (stg_ecommerce__orders: the latest of stg_ecommerce__order_versions)."""
    sources = {s["unique_id"] for s in manifest["sources"].values()}
    assert len(sources) == len(CONTRACTS)
    nodes = models(manifest)

    def landed_tables(name: str) -> set[str]:
        upstream = set(nodes[name]["depends_on"]["nodes"])
        staged = {u.rsplit(".", 1)[-1] for u in upstream - sources}
        assert all(s.startswith("stg_") for s in staged), (name, staged)
        return (upstream & sources).union(*(landed_tables(s) for s in staged))

    read = {}
    for name, node in nodes.items():
        if name.startswith("stg_"):
            read[name] = landed_tables(name)
            assert len(read[name]) == 1, (name, read[name])
        else:
            assert not set(node["depends_on"]["nodes"]) & sources, name
    assert set().union(*read.values()) == sources


def test_the_build_layers_run_every_model_and_test_once_after_what_they_read(parsed, manifest) -> None:
    """The transform DAG builds the project as BUILD_LAYERS, one `dbt build --selector` task each: together
    they must cover every model and test exactly once, and nothing may read a node of a later layer (a
    model built before its parent, or a test over a model not built yet)."""
    layer_of: dict[str, int] = {}
    for number, layer in enumerate(BUILD_LAYERS):
        listed = run_dbt_process(parsed, ["ls", "--selector", layer, "--output", "json", "--quiet"])
        assert listed.returncode == 0, output_tail(listed)
        for line in listed.stdout.splitlines():
            node = json.loads(line)["unique_id"]
            if node.startswith(("model.", "test.")):
                assert node not in layer_of, (node, layer)
                layer_of[node] = number
    expected = {
        uid
        for uid, node in manifest["nodes"].items()
        if node["resource_type"] in ("model", "test") and node["config"].get("enabled", True)
    }
    assert set(layer_of) == expected
    assert len({uid for uid in expected if uid.startswith("model.")}) >= 40
    late = {
        (uid, parent)
        for uid in expected
        for parent in manifest["nodes"][uid]["depends_on"]["nodes"]
        if layer_of.get(parent, -1) > layer_of[uid]
    }
    assert not late


def test_every_model_states_its_grain_and_has_a_primary_key_check(manifest) -> None:
    keyed = set()
    for node in manifest["nodes"].values():
        if node["resource_type"] == "test" and node.get("test_metadata", {}).get("name") in KEY_TESTS:
            keyed |= {n.rsplit(".", 1)[-1] for n in node["depends_on"]["nodes"]}
    unguarded, ungrained = [], []
    for name, node in models(manifest).items():
        constraints = [c["type"] for c in node.get("constraints", [])]
        constraints += [c["type"] for col in node["columns"].values() for c in col.get("constraints", [])]
        enforced = node["config"].get("contract", {}).get("enforced") and "primary_key" in constraints
        # a view keeping the rows of one keyed model it reads (meta key_of) has that model's key
        key_of = node["config"].get("meta", {}).get("key_of")
        inherited = (
            node["config"]["materialized"] == "view"
            and key_of in keyed
            and any(n.rsplit(".", 1)[-1] == key_of for n in node["depends_on"]["nodes"])
        )
        if name not in keyed and not enforced and not inherited:
            unguarded.append(name)
        if not re.match(r"(grain: )?one row per ", node["description"].lower()):
            ungrained.append(name)
    assert unguarded == [] and ungrained == []


def land_recent(tmp_path, first) -> object:
    data = tmp_path / f"data-{first}"
    generate(GenerateConfig(120, first, 2, 3, data, dirt_rate=0.0), TEST_ID_KEY.encode())
    settings = make_settings(tmp_path / f"ws-{first}", data)
    assert land_pending(settings, data).ok
    return settings


def test_freshness_passes_on_yesterdays_landing_and_fails_on_a_stale_one(tmp_path) -> None:
    today = datetime.now(LOCAL_TZ).date()
    fresh = land_recent(tmp_path, today - timedelta(days=2))
    # days a channel delivered without a row (no livestream on a Sunday) still landed: as fresh as the rest
    for part in (fresh.landing_dir / "livestream" / "views").glob("dt=*/part-0.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.slice(0, 0), part)
    found = source_freshness(fresh)
    # every landed table but the staff directory, which sends only changes: its age says nothing
    assert {f.table for f in found} == {f"{c.channel}__{c.table}" for c in CONTRACTS} - {"wecom__staff"}
    assert {f.status for f in found} <= {"pass", "warn"}, found
    assert all(24 <= f.age_hours <= 50 for f in found if f.newest_load), found
    newest = {f.newest_load for f in found}
    assert len(newest) == 1 and next(f for f in found if f.table == "livestream__views").newest_load in newest
    stale = land_recent(tmp_path, today - timedelta(days=30))
    runner = CliRunner()
    env = {"MEMBERFLOW_HOME": str(stale.home), "MEMBERFLOW_ID_KEY": TEST_ID_KEY}
    result = runner.invoke(app, ["freshness"], env=env)
    assert result.exit_code == 1, result.output
    assert "error" in result.output and "stale" in result.output


def test_sqlfluff_passes_on_every_model() -> None:
    done = sqllint.run("lint")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
