"""One ID on generated data with ground truth."""

from __future__ import annotations

import json
from datetime import timedelta

import polars as pl

from memberflow.core.contracts import get_contract
from memberflow.core.phones import normalize_phone, phone_token
from memberflow.extract import partition_dir
from memberflow.identity_report import identity_report
from memberflow.transform import blocked_phones
from tests.support import DAYS, START, TEST_ID_KEY, land_and_build, make_settings, query

KEY = TEST_ID_KEY.encode()


def test_pairwise_precision_and_recall_against_truth(built):
    report = identity_report(built)
    assert report.truth is not None
    assert report.truth.predicted_pairs > 1000
    assert report.truth.precision >= 0.999
    assert report.truth.recall >= 0.99
    assert report.dropped_by_reason.get("cap_exceeded", 0) >= 2
    assert report.oversize == []


def test_clerk_phone_and_test_numbers_merge_nobody(built):
    truth = pl.read_parquet(built.data_dir / "_truth" / "identifiers.parquet")
    assigned = query(built, "select member_id, id_type, id_value from member_identifiers")
    people_per_member = (
        assigned.join(truth, on=["id_type", "id_value"])
        .group_by("member_id")
        .agg(pl.col("person_id").n_unique())
    )
    assert people_per_member["person_id"].max() == 1

    blocked = {phone_token(p, KEY) for p in blocked_phones()}
    assert not set(assigned.filter(pl.col("id_type") == "phone_token")["id_value"]) & blocked
    dropped = query(built, "select id_value_a, drop_reason from identity_dropped_edges")
    assert "blocked_value" in set(dropped["drop_reason"])  # test numbers were seen and stopped
    # The clerk phones (not anyone's phone) were stopped by the cap.
    clerk = dropped.filter(pl.col("drop_reason") == "cap_exceeded")["id_value_a"].unique()
    assert clerk.len() >= 1 and not set(clerk) & set(truth["id_value"])


def test_weak_links_are_candidates_never_merges(built):
    candidates = query(built, "select member_id, candidate_member_id from identity_candidate_links")
    assert candidates.height > 0
    assert (candidates["member_id"] != candidates["candidate_member_id"]).all()


def test_rebuilding_unchanged_input_changes_no_member_id(workspace_copy):
    before = query(workspace_copy, "select * from member_identifiers order by id_type, id_value")
    land_and_build(workspace_copy, workspace_copy.data_dir)
    after = query(workspace_copy, "select * from member_identifiers order by id_type, id_value")
    assert before.equals(after)


def _source_phone_of_card(data_dir, card_no: str) -> str:
    for path in sorted((data_dir / "store_pos" / "members").glob("dt=*/part-0.csv")):
        frame = pl.read_csv(path, infer_schema=False)
        row = frame.filter(pl.col("card_no") == card_no)
        if row.height:
            return normalize_phone(row["mobile"][0])
    raise AssertionError(card_no)


def test_a_new_day_linking_two_members_keeps_the_older_id(workspace_copy, tmp_path, monkeypatch):
    settings = workspace_copy
    members = query(
        settings,
        """
        select m.member_id, m.first_seen_on, i.id_type, i.id_value
        from dim_member m join member_identifiers i using (member_id)
        where m.identifier_count = 1 or (m.identifier_count = 2 and m.store_card_count = 1)
        """,
    )
    contact = (
        members.filter(pl.col("id_type") == "external_userid")
        .sort("first_seen_on", "id_value")
        .row(0, named=True)
    )
    card = members.filter(
        (pl.col("id_type") == "card_no") & (pl.col("first_seen_on") > contact["first_seen_on"])
    )
    card = card.sort("first_seen_on", "id_value").row(0, named=True)
    # The contact's own record gains the phone (a new version of it, not a second staff's contact): the
    # link is evidence of the day it landed, not of the day the contact was first added.
    staff = query(
        settings,
        f"select staff_userid from stg_wecom__contacts where external_userid = '{contact['id_value']}'",
    )["staff_userid"][0]
    phone = _source_phone_of_card(settings.data_dir, card["id_value"])
    assert phone is not None and phone_token(phone, KEY) not in set(blocked_phones())

    new_day = START + timedelta(days=DAYS)
    for contract_name in ("wecom.contacts",):
        contract = get_contract(*contract_name.split("."))
        folder = partition_dir(settings.data_dir, contract.channel, contract.table, new_day)
        folder.mkdir(parents=True)
        row = {
            "external_userid": contact["id_value"],
            "unionid": None,
            "staff_userid": staff,
            "add_time": f"{contact['first_seen_on']} 10:00:00",
            "add_way": "qr_code",
            "state": "store_001_qr",
            "remark_mobile": phone,
            "deleted_time": None,
            "updated_at": f"{new_day} 09:00:00",
        }
        (folder / "part-0.jsonl").write_text(json.dumps(row) + "\n")
    for contract_name in (
        "wecom.group_events",
        "miniprogram.users",
        "miniprogram.events",
        "ecommerce.orders",
        "ecommerce.order_items",
        "store_pos.members",
        "store_pos.orders",
        "store_pos.order_items",
        "livestream.views",
        "insurance.policies",
        "consent.events",
    ):
        channel, table = contract_name.split(".")
        partition_dir(settings.data_dir, channel, table, new_day).mkdir(parents=True)

    # The day is made up of one contact and empty exports: the volume check would rightly stop it.
    quiet = tmp_path / "quality.yml"
    quiet.write_text("landing:\n  checks:\n    volume: {severity: warning}\n")
    monkeypatch.setenv("MEMBERFLOW_QUALITY_CONFIG", str(quiet))
    land_and_build(settings, settings.data_dir)
    after = query(settings, "select member_id, id_type, id_value from member_identifiers")
    owner = dict(zip(after["id_value"], after["member_id"], strict=True))
    assert owner[contact["id_value"]] == owner[card["id_value"]] == contact["member_id"]
    history = query(settings, "select * from member_id_history")
    merged = history.filter(pl.col("retired_member_id") == card["member_id"]).row(0, named=True)
    assert merged["member_id"] == contact["member_id"] and merged["changed_on"] == new_day


def test_identity_works_with_only_some_channels(tmp_path, business_sample):
    from tests.support import make_settings

    data = tmp_path / "data"
    for table in ("members", "orders", "order_items"):
        (data / "store_pos").mkdir(parents=True, exist_ok=True)
        import shutil

        shutil.copytree(business_sample / "store_pos" / table, data / "store_pos" / table)
    settings = make_settings(tmp_path / "ws", data)
    land_and_build(settings, data)
    counts = query(
        settings,
        "select (select count(*) from dim_member) as members, "
        "(select count(*) from fct_orders) as orders, "
        "(select count(*) from fct_member_daily_engagement) as active_days",
    )
    members, orders, active_days = counts.row(0)
    assert members > 100 and orders > 100 and active_days > 0
    channels = query(settings, "select distinct acquisition_channel from dim_member")["acquisition_channel"]
    assert set(channels) == {"store_pos"}


def test_blocking_a_linking_phone_splits_the_member_and_records_it(workspace_copy):
    settings = workspace_copy
    linked = query(
        settings,
        """
        select m.member_id, c.id_value as card_no
        from dim_member m
        join member_identifiers c on c.member_id = m.member_id and c.id_type = 'card_no'
        where m.phone_count = 1 and m.openid_count >= 1 and m.store_card_count = 1
        order by m.member_id
        limit 1
        """,
    ).row(0, named=True)
    phone = _source_phone_of_card(settings.data_dir, linked["card_no"])
    blocked = make_settings(settings.home, settings.data_dir, MEMBERFLOW_BLOCKED_PHONES=phone)
    land_and_build(blocked, settings.data_dir)

    after = query(settings, "select member_id, id_type, id_value from member_identifiers")
    owners = set(after.filter(pl.col("id_value") == linked["card_no"])["member_id"])
    history = query(settings, "select * from member_id_history where change_type = 'split'")
    assert history.height >= 1
    split = history.filter(pl.col("split_from_member_id") == linked["member_id"])
    assert split.height == 1
    assert split["member_id"][0] != linked["member_id"]
    assert split["member_id"][0] in set(after["member_id"])
    assert owners  # the card is still somebody's
    # The split stays on record in later builds.
    land_and_build(blocked, settings.data_dir)
    again = query(settings, "select * from member_id_history where change_type = 'split'")
    assert again.height == history.height


def test_rotating_both_keys_keeps_every_member_and_leaves_nothing_under_the_old_keys(workspace_copy, built):
    """`memberflow keys rotate --id-key --vault-key`, then a build: the same members under the same ids
    with the same identifiers (phones compared as numbers), no landed value or ledger row under the old id
    key, a vault that opens with the new key only, and the old id key refused from then on."""
    import sqlite3

    import pyarrow.parquet as pq
    import pytest

    from memberflow.core.settings import ConfigError, new_key_text
    from memberflow.core.vault import ContactVault, VaultError, partition_files
    from memberflow.keys import rotate_keys
    from memberflow.outreach.ledger import Ledger, ledger_path
    from memberflow.pipeline import build
    from memberflow.warehouse import NotPublishedError, require_published
    from tests.support import vault_phones

    settings = workspace_copy
    phones = vault_phones(settings)
    old_tokens = {phone_token(p, KEY): p for p in phones}

    def members(s, phone_of: dict[str, str]) -> set[tuple[str, str, str]]:
        rows = query(s, "select member_id, id_type, id_value from member_identifiers").iter_rows()
        return {(m, t, phone_of.get(v, v) if t == "phone_token" else v) for m, t, v in rows}

    def landed_values(s) -> set[str]:
        return {
            value
            for path in s.landing_dir.rglob("*.parquet")
            for column in pq.read_table(path).itercolumns()
            if column.type == "string"
            for value in column.unique().to_pylist()
        }

    before = members(settings, old_tokens)
    tokens_landed = len(landed_values(settings) & set(old_tokens))
    assert sum(t == "phone_token" and v in phones for _, t, v in before) > 1000
    Ledger.open(settings).close()  # an SMS counted against a number: the per-number caps read its token
    counted = next(iter(old_tokens))
    with sqlite3.connect(ledger_path(settings)) as con:
        con.execute(
            "insert into deliveries (idempotency_key, as_of, segment, member_id, channel, phone_token, "
            "status, decided_day, decided_run, updated_at) values ('k1', '2026-03-01', 's', 'm1', 'sms', ?, "
            "'sent', '2026-03-01', 'r1', '2026-03-01T10:00:00')",
            [counted],
        )
    old_vault = settings.vault_key()
    new_id = new_key_text("id_key")

    report = rotate_keys(settings, ["id_key", "vault_key"], {"MEMBERFLOW_NEW_ID_KEY": new_id})

    assert report.phones == len(phones) and report.ledger_rows == 1
    assert report.set_variables == ["MEMBERFLOW_ID_KEY"]  # the tests pass the id key in the environment
    with pytest.raises(ConfigError, match="not the id key this workspace was built with"):
        settings.id_key()
    with pytest.raises(NotPublishedError):
        require_published(settings, "marts")  # nothing scores or delivers on the old tokens
    rotated = make_settings(settings.home, settings.data_dir, MEMBERFLOW_ID_KEY=new_id)
    build(rotated)
    new_tokens = {phone_token(p, new_id.encode()): p for p in phones}
    assert members(rotated, new_tokens) == before
    landed = landed_values(rotated)
    assert not landed & set(old_tokens) and len(landed & set(new_tokens)) == tokens_landed
    assert vault_phones(rotated) == phones
    sealed = next(
        v for f in partition_files(rotated.vault_dir) for v in pq.read_table(f)["phone_sealed"].to_pylist()
    )
    with pytest.raises(VaultError):
        ContactVault(old_vault).open(sealed)
    with sqlite3.connect(ledger_path(rotated)) as con:
        assert con.execute("select phone_token from deliveries").fetchall() == [
            (phone_token(old_tokens[counted], new_id.encode()),)
        ]
    # the workspace it was copied from shared its secrets folder on this machine: it keeps its own keys
    assert built.vault_key() == old_vault and vault_phones(built) == phones
