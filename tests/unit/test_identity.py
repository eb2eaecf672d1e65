from datetime import date

import polars as pl

from memberflow.identity import find_splits, member_id_for, node_key, resolve

D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)


def nodes(*rows):
    return pl.DataFrame(
        rows, schema={"id_type": pl.String, "id_value": pl.String, "first_seen_on": pl.Date}, orient="row"
    )


def edges(*rows):
    return pl.DataFrame(
        rows,
        schema={
            "id_type_a": pl.String,
            "id_value_a": pl.String,
            "id_type_b": pl.String,
            "id_value_b": pl.String,
            "first_seen_on": pl.Date,
        },
        orient="row",
    )


def members(resolution) -> dict[str, str]:
    return {
        f"{t}:{v}": m for t, v, m in resolution.assignments.select("id_type", "id_value", "member_id").rows()
    }


def test_connected_identifiers_share_the_founders_id():
    r = resolve(
        nodes(("card_no", "C1", D1), ("phone_token", "p1", D1), ("openid", "o1", D2)),
        edges(("phone_token", "p1", "card_no", "C1", D1), ("phone_token", "p1", "openid", "o1", D2)),
    )
    ids = members(r)
    assert len(set(ids.values())) == 1
    assert ids["card_no:C1"] == member_id_for(node_key("card_no", "C1"))  # earliest, then smallest key
    assert r.merges.height == 0  # o1 was new on D2: it joined, nothing merged


def test_linking_two_existing_members_keeps_the_older_id_and_records_the_other():
    before = resolve(nodes(("card_no", "C1", D1), ("openid", "o1", D2)), edges())
    older, younger = members(before)["card_no:C1"], members(before)["openid:o1"]
    after = resolve(
        nodes(("card_no", "C1", D1), ("openid", "o1", D2), ("phone_token", "p1", D3)),
        edges(("phone_token", "p1", "card_no", "C1", D3), ("phone_token", "p1", "openid", "o1", D3)),
    )
    assert set(members(after).values()) == {older}
    assert after.merges.rows() == [(younger, older, older, D3)]


def test_rebuilding_the_same_input_gives_the_same_ids_and_as_of_hides_the_future():
    n = nodes(("card_no", "C1", D1), ("openid", "o1", D1), ("unionid", "u1", D2))
    e = edges(("unionid", "u1", "openid", "o1", D2), ("unionid", "u1", "card_no", "C1", D3))
    assert resolve(n, e).assignments.equals(resolve(n, e).assignments)
    past = resolve(n, e, as_of=D2)
    assert len(set(members(past).values())) == 2 and past.merges.height == 0
    assert len(set(members(resolve(n, e)).values())) == 1


def test_a_chain_of_merges_resolves_to_todays_survivor():
    n = nodes(("card_no", "C1", D1), ("card_no", "C2", D1), ("card_no", "C3", D1))
    e = edges(("phone_token", "p", "card_no", "C2", D1), ("phone_token", "p", "card_no", "C3", D1))
    e = pl.concat(
        [e, edges(("phone_token", "q", "card_no", "C3", D2), ("phone_token", "q", "card_no", "C1", D3))]
    )
    r = resolve(n, e)
    c1 = member_id_for(node_key("card_no", "C1"))
    assert set(members(r).values()) == {c1}
    retired = {row[0]: (row[1], row[2]) for row in r.merges.rows()}
    c2 = member_id_for(node_key("card_no", "C2"))
    assert retired == {c2: (c1, c1)}  # C2's member (with C3) folded into C1's on D3


def test_an_edge_that_disappears_is_found_as_a_split():
    n = nodes(("card_no", "C1", D1), ("phone_token", "p1", D1), ("card_no", "C2", D1))
    linked = resolve(
        n, edges(("phone_token", "p1", "card_no", "C1", D1), ("phone_token", "p1", "card_no", "C2", D1))
    )
    unlinked = resolve(n, edges(("phone_token", "p1", "card_no", "C1", D1)))
    splits = find_splits(linked.assignments, unlinked.assignments, unlinked.merges, D2)
    whole = members(linked)["card_no:C1"]
    assert splits.rows() == [(members(unlinked)["card_no:C2"], whole, D2)]
    assert find_splits(linked.assignments, linked.assignments, linked.merges, D2).height == 0


def test_empty_graph():
    r = resolve(nodes(), edges())
    assert r.assignments.height == 0 and r.merges.height == 0
