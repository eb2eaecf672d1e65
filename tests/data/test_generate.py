"""The generated sample: deterministic, complete, and behaving like the business it stands for."""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from devkit.generate import TEST_NUMBERS, GenerateConfig, generate
from memberflow.core.contracts import CONTRACTS
from memberflow.core.phones import normalize_phone, phone_token
from tests.support import TEST_ID_KEY

START = date(2026, 1, 1)
DAYS = 90
END = START + timedelta(days=DAYS)
KEY = TEST_ID_KEY.encode()


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    generate(GenerateConfig(3000, START, DAYS, 5, out, dirt_rate=0.0), KEY)
    return out


@pytest.fixture(scope="module")
def dirty(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dirty")
    generate(GenerateConfig(3000, START, DAYS, 5, out, dirt_rate=0.02), KEY)
    return out


def read_table(root: Path, channel: str, table: str) -> pl.DataFrame:
    folder = root / channel / table
    frames = []
    for path in sorted(folder.glob("dt=*/part-0.*")):
        if path.stat().st_size == 0:
            continue
        if path.suffix == ".csv":
            frame = pl.read_csv(path, infer_schema=False)
        elif path.suffix == ".jsonl":
            frame = pl.read_ndjson(path, infer_schema_length=None)
        else:
            frame = pl.read_parquet(path)
        if frame.height:
            frames.append(
                frame.select(pl.all().cast(pl.String)).with_columns(dt=pl.lit(path.parent.name[3:]))
            )
    return pl.concat(frames, how="diagonal")


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path):
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate(GenerateConfig(300, START, 12, seed, tmp_path / name), KEY)
        runs.append(digests(tmp_path / name))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_every_table_has_a_partition_every_day_and_progress_is_reported(tmp_path):
    seen = []
    generate(GenerateConfig(200, START, 5, 1, tmp_path), KEY, on_day=seen.append)
    assert seen == list(range(5))
    for contract in CONTRACTS:
        for d in range(5):
            folder = tmp_path / contract.channel / contract.table / f"dt={START + timedelta(d)}"
            assert len(list(folder.glob("part-0.*"))) == 1, folder


def test_prospects_convert_7_to_15_days_after_first_touch_at_15_to_30_percent(clean):
    persons = pl.read_parquet(clean / "_truth" / "persons.parquet")
    prospects = persons.filter(
        ~pl.col("acquisition_channel").is_in(["ecommerce", "store"])
        & (pl.col("acquired_on") <= END - timedelta(days=16))
    )
    rate = prospects["first_order_on"].is_not_null().mean()
    assert 0.15 <= rate <= 0.30
    gaps = (
        prospects.drop_nulls("first_order_on").select(
            (pl.col("first_order_on") - pl.col("acquired_on")).dt.total_days()
        )
    ).to_series()
    assert gaps.min() >= 7 and gaps.max() <= 15


def test_about_40_percent_of_buyers_come_back_and_devices_are_rare(clean):
    orders = pl.read_parquet(clean / "_truth" / "orders.parquet")
    per_buyer = orders.group_by("person_id").agg(
        pl.len().alias("n"), pl.col("order_date").min().alias("first")
    )
    settled = per_buyer.filter(pl.col("first") <= END - timedelta(days=60))
    assert 0.30 <= (settled["n"] >= 2).mean() <= 0.50
    items = pl.concat(
        [read_table(clean, "ecommerce", "order_items"), read_table(clean, "store_pos", "order_items")],
        how="diagonal",
    )
    device_share = items["category"].is_in(["glucometer", "bp_monitor"]).mean()
    assert 0.0 < device_share < 0.08


def test_repeat_orders_follow_the_replenishment_cycle(clean):
    persons = pl.read_parquet(clean / "_truth" / "persons.parquet").select("person_id", "main_interest")
    orders = pl.read_parquet(clean / "_truth" / "orders.parquet").join(persons, on="person_id")
    gaps = (
        orders.sort("person_id", "order_date")
        .with_columns(gap=pl.col("order_date").diff().over("person_id").dt.total_days())
        .drop_nulls("gap")
        .group_by("main_interest")
        .agg(pl.col("gap").median())
    )
    medians = dict(gaps.iter_rows())
    assert 24 <= medians["calcium"] <= 36
    assert 16 <= medians["stomach_care"] <= 24
    assert 10 <= medians["infant_formula"] <= 18


def test_engaged_members_check_in_60_to_90_percent_of_days_and_fade_before_churn(clean):
    persons = pl.read_parquet(clean / "_truth" / "persons.parquet")
    ids = (
        pl.read_parquet(clean / "_truth" / "identifiers.parquet")
        .filter(pl.col("id_type") == "external_userid")
        .select("person_id", pl.col("id_value").alias("external_userid"))
    )
    events = read_table(clean, "wecom", "group_events").with_columns(
        day=pl.col("event_time").str.slice(0, 10).str.to_date()
    )
    joined = (
        events.filter(pl.col("event_type") == "join")
        .group_by("external_userid")
        .agg(pl.col("day").min().alias("joined"))
    )
    checks = (
        events.filter(pl.col("event_type") == "checkin")
        .join(joined, on="external_userid")
        .join(ids, on="external_userid")
    )
    checks = checks.join(persons.select("person_id", "engagement", "churned_on"), on="person_id")

    steady = (
        joined.join(ids, on="external_userid")
        .join(persons, on="person_id")
        .filter(
            (pl.col("engagement") > 0.45)
            & pl.col("churned_on").is_null()
            & (pl.col("joined") <= END - timedelta(days=30))
        )
    )
    counts = checks.group_by("person_id").len()
    rates = (
        steady.join(counts, on="person_id", how="left")
        .fill_null(0)
        .with_columns(rate=pl.col("len") / (pl.lit(END) - pl.col("joined")).dt.total_days())
    )
    assert 0.6 <= rates["rate"].median() <= 0.9

    # Members who churn check in less in their last three weeks than before.
    fading = checks.filter(
        pl.col("churned_on").is_not_null()
        & (pl.col("engagement") > 0.45)
        & (pl.col("joined") <= pl.col("churned_on") - timedelta(days=35))
    )
    late = fading.filter(pl.col("day") >= pl.col("churned_on") - timedelta(days=14)).height
    early = fading.filter(
        (pl.col("day") < pl.col("churned_on") - timedelta(days=21))
        & (pl.col("day") >= pl.col("churned_on") - timedelta(days=35))
    ).height
    assert early > 50 and late < 0.6 * early


def test_channels_overlap_the_way_they_really_do(clean):
    contacts = read_table(clean, "wecom", "contacts")
    users = read_table(clean, "miniprogram", "users")
    wechat_unionids = set(users.filter(pl.col("platform") == "wechat")["unionid"].drop_nulls())
    contact_unionids = set(contacts["unionid"].drop_nulls())
    assert contact_unionids and contact_unionids <= wechat_unionids  # shared open-platform account only
    assert 0.1 < contacts["unionid"].is_null().mean() < 0.95
    assert (
        users.filter(pl.col("platform") != "wechat")["unionid"].null_count()
        == users.filter(pl.col("platform") != "wechat").height
    )
    assert 0.3 < users["mobile"].is_not_null().mean() < 0.8  # authorized on some only
    orders = read_table(clean, "ecommerce", "orders")
    assert orders["mobile_masked"].drop_nulls().str.contains(r"^\d{3}\*{4}\d{4}$").all()
    truth = set(
        pl.read_parquet(clean / "_truth" / "identifiers.parquet").filter(pl.col("id_type") == "phone_token")[
            "id_value"
        ]
    )
    policies = read_table(clean, "insurance", "policies")
    assert set(policies["holder_mobile_hmac"]) <= truth  # partner HMACs join our tokens
    first_touch = pl.read_parquet(clean / "_truth" / "persons.parquet")["acquisition_channel"].value_counts()
    assert first_touch.height == 6


def test_ground_truth_names_the_person_behind_every_identifier(clean):
    ids = pl.read_parquet(clean / "_truth" / "identifiers.parquet")
    assert ids.select("id_type", "id_value").is_unique().all()
    assert set(ids["id_type"]) == {
        "phone_token",
        "external_userid",
        "openid",
        "unionid",
        "card_no",
        "buyer_id",
        "policy_id",
    }
    contacts = read_table(clean, "wecom", "contacts")
    assert set(contacts["external_userid"]) <= set(
        ids.filter(pl.col("id_type") == "external_userid")["id_value"]
    )


def test_dirt_is_planted_at_the_configured_rate(dirty):
    dirt = json.loads((dirty / "_truth" / "dirt.json").read_text())
    kinds = {k.rsplit(".", 1)[1] for k in dirt}
    assert {
        "late_row",
        "duplicate_row",
        "duplicate_key_conflict",
        "malformed_row",
        "undecodable_bytes",
        "missing_required",
        "bad_time",
        "future_time",
    } <= kinds
    events = sum(v for k, v in dirt.items() if k.startswith("wecom.group_events.late_row"))
    total = sum(1 for p in (dirty / "wecom" / "group_events").rglob("*.jsonl") for _ in p.open("rb"))
    assert 0.01 < events / total < 0.03

    members = read_table(dirty, "store_pos", "members")
    mobiles = members["mobile"].drop_nulls()
    assert mobiles.str.starts_with("+86").any() and mobiles.str.contains(" ").any()
    assert mobiles.str.contains("[０-９]").any() and mobiles.str.contains("-").any()
    assert mobiles.is_in(list(TEST_NUMBERS)).any()
    per_phone = mobiles.map_elements(normalize_phone, return_dtype=pl.String).value_counts().sort("count")
    assert per_phone["count"].max() >= 10  # a clerk's phone on many walk-in cards


def test_truth_holds_tokens_not_phones(clean):
    ids = pl.read_parquet(clean / "_truth" / "identifiers.parquet")
    members = read_table(clean, "store_pos", "members")
    phone = normalize_phone(members["mobile"][0])
    assert phone_token(phone, KEY) in set(ids["id_value"])
    for path in (clean / "_truth").iterdir():
        assert phone.encode() not in path.read_bytes()
