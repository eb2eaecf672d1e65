"""The sample world reacts to outreach, and keeps the counterfactual truth.

``memberflow generate`` writes a fixed history: what people do when nobody messages them. ``World`` reads
what memberflow sent since (the delivery ledger) and what it held out (``segment_memberships``), and lets
the messages change what people do next, written into the channel folders as each day's
``reactions.<ext>`` file beside the generated one (a day already landed is landed again at the next build):

* every person has a hidden response to each message: **persuadable** (the first time the message reaches
  them they act within a few days: an order, or check-ins for a check-in reminder), or not; the middling
  engaged are the most persuadable. Who acts anyway
  (sure things) and who never does (lost causes) is the generated history itself, which no message changes.
  The share of persuadables per message is ``EFFECTS`` (1-on-1 care lifts first orders; a check-in reminder
  lifts check-ins most; health reading lifts nothing, so its segment's true uplift is 0);
* some people **react badly**: ``SENSITIVE_SHARE`` of them reply TD (opt out of marketing) the day after a
  marketing message that was their second within 7 days.

The truth: for every (member, segment) decided, the person behind it, whether they are persuadable by the
segment's message, and the day a reaction lands (for members sent: their first send of the message plus a
lag; for members held out: the day they were first held out plus the same lag — what would have happened
had they been sent). ``true_outcomes`` then gives each unit of the uplift report both potential outcomes,
so an estimate can be scored against what really happened. Deterministic: the same sample, sends and seed
give the same reactions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from devkit.generate import (
    CATEGORIES,
    CHECKIN_TOPICS,
    TABLE_FORMAT,
    GenerateConfig,
    _draw_people,
    _People,
)
from memberflow.core.contracts import BY_NAME
from memberflow.core.settings import Settings
from memberflow.outreach.ledger import Ledger
from memberflow.outreach.suppression import BEFORE_HOLDOUT, CHINA
from memberflow.segments import Segment, load_segments

REACTIONS = "reactions"  # file stem of the reactions in a partition folder


@dataclass(frozen=True)
class Effect:
    """What a message does to the people it persuades."""

    outcome: str  # order | checkin
    persuadable: float  # share of people the first such message moves to act
    lag_days: tuple[int, int]  # they act this many days after it reached them (inclusive range)


EFFECTS: dict[str, Effect] = {
    "welcome_care_plan": Effect("order", 0.12, (1, 5)),  # a staff owner's care plan: first orders
    "care_checkin": Effect("order", 0.08, (1, 5)),  # a 1-on-1 call to someone drifting away
    "replenishment_coupon": Effect("order", 0.10, (0, 3)),
    "first_order_offer": Effect("order", 0.08, (1, 5)),
    "checkin_reminder": Effect("checkin", 0.30, (1, 2)),  # back to the group's check-in
    "winback_content": Effect("order", 0.0, (1, 5)),  # health reading: no true effect
}
SENSITIVE_SHARE = 0.05
CHECKIN_STREAK = 5  # a persuaded member checks in on this many days in a row


def _unit(*parts: object) -> float:
    """A uniform number in [0, 1) fixed by ``parts``: the world's hidden draws."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class TruthMissingError(RuntimeError):
    """The sample folder has no ``_truth/config.json`` (written by ``memberflow generate``)."""


@dataclass
class ReactionSummary:
    orders: int
    checkins: int
    opt_outs: int
    files: int


class World:
    """The generated sample, able to react to what memberflow sent (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        config = self.data_dir / "_truth" / "config.json"
        if not config.exists():
            raise TruthMissingError(
                f"{config} is missing: the world needs a sample written by `memberflow generate`"
            )
        raw = json.loads(config.read_text())
        self.cfg = GenerateConfig(
            members=raw["members"],
            start=date.fromisoformat(raw["start"]),
            days=raw["days"],
            seed=raw["seed"],
            out=self.data_dir,
            dirt_rate=raw["dirt_rate"],
        )
        seq = np.random.SeedSequence(self.cfg.seed)
        rng_people, rng_orders, _, _, rng_ids = (np.random.default_rng(s) for s in seq.spawn(5))
        self.people: _People = _draw_people(self.cfg, rng_people, rng_orders, rng_ids)
        self.identifiers = pl.read_parquet(self.data_dir / "_truth" / "identifiers.parquet")

    # --- hidden responsiveness --------------------------------------------------------------------------
    def persuadable(self, person: int, message: str) -> bool:
        """Hidden: whether the message moves this person. Most movable are the middling engaged (the most
        engaged act anyway, the least ignore it): the share scales by 5·e·(1 − e), 1 on average over the
        population's Beta(2, 2) engagement."""
        effect = EFFECTS.get(message)
        if effect is None:
            return False
        engagement = float(self.people.engagement[person])
        share = effect.persuadable * 5 * engagement * (1 - engagement)
        return _unit(self.cfg.seed, person, message, "p") < share

    def lag(self, person: int, message: str) -> int:
        low, high = EFFECTS[message].lag_days
        return low + int(_unit(self.cfg.seed, person, message, "lag") * (high - low + 1))

    def sensitive(self, person: int) -> bool:
        return _unit(self.cfg.seed, person, "sensitive") < SENSITIVE_SHARE

    # --- who is who ---------------------------------------------------------------------------------------
    def persons_of(self, settings: Settings) -> dict[str, int]:
        """member_id -> the person most of the member's identifiers belong to."""
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            ids = con.sql("select member_id, id_type, id_value from member_identifiers").pl()
        joined = ids.join(self.identifiers, on=["id_type", "id_value"], how="inner")
        best = (
            joined.group_by("member_id", "person_id")
            .len()
            .sort(["member_id", "len", "person_id"], descending=[False, True, False])
            .unique("member_id", keep="first")
        )
        return dict(zip(best["member_id"].to_list(), best["person_id"].to_list(), strict=True))

    # --- what memberflow did --------------------------------------------------------------------------------
    def decisions(self, settings: Settings, segments: list[Segment] | None = None) -> pl.DataFrame:
        """One row per (member, segment) decided: the person, arm, first day decided and first day sent."""
        segments = segments or load_segments()
        message = {s.name: s.message for s in segments}
        kind = {s.name: s.kind for s in segments}
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            # eligible decisions: held out, or in the treated arm (not suppressed before the holdout)
            rows = con.sql(
                "select member_id, segment, min(as_of) as first_decided, "
                "bool_or(status = 'holdout') as held_out from segment_memberships "
                "where status <> 'suppressed' or reason not in (select unnest($before)) group by 1, 2",
                params={"before": list(BEFORE_HOLDOUT)},
            ).pl()
        ledger = Ledger.open(settings)
        try:
            sent = [r for r in ledger.rows() if r["status"] == "sent" and r["sent_at"]]
        finally:
            ledger.close()
        days_sent: dict[tuple[str, str], set[date]] = {}
        for r in sent:
            day = date.fromisoformat(r["sent_day"]) if r.get("sent_day") else _china_day(r["sent_at"])
            days_sent.setdefault((r["member_id"], r["segment"]), set()).add(day)
        persons = self.persons_of(settings)
        keys = list(zip(rows["member_id"].to_list(), rows["segment"].to_list(), strict=True))
        return rows.with_columns(
            person_id=pl.col("member_id").replace_strict(persons, default=None, return_dtype=pl.Int64),
            message=pl.col("segment").replace_strict(message, default=None),
            kind=pl.col("segment").replace_strict(kind, default="marketing"),
            first_sent=pl.Series([min(days_sent.get(k, {None})) for k in keys], dtype=pl.Date),
            sent_days=pl.Series([sorted(days_sent.get(k, ())) for k in keys], dtype=pl.List(pl.Date)),
        )

    def effects(self, decided: pl.DataFrame) -> pl.DataFrame:
        """Add each decision's truth: persuadable, and the day its reaction lands (or would have)."""
        persuadable, effect_day = [], []
        for person, message, held, first_decided, first_sent in decided.select(
            "person_id", "message", "held_out", "first_decided", "first_sent"
        ).iter_rows():
            moved = person is not None and self.persuadable(person, message)
            start = first_decided if held else first_sent
            persuadable.append(moved)
            effect_day.append(start + timedelta(days=self.lag(person, message)) if moved and start else None)
        return decided.with_columns(
            persuadable=pl.Series(persuadable, dtype=pl.Boolean),
            effect_day=pl.Series(effect_day, dtype=pl.Date),
        )

    # --- reactions -----------------------------------------------------------------------------------------
    def react(self, settings: Settings, segments: list[Segment] | None = None) -> ReactionSummary:
        """Write every reaction to what was sent so far into the channel folders (rewritten from scratch,
        a file only where it changed), and the truth into ``_truth/outreach.parquet``."""
        decided = self.effects(self.decisions(settings, segments))
        rows: dict[tuple[str, date], list[dict]] = {}
        counts = {"orders": 0, "checkins": 0, "opt_outs": 0}
        # the first send of a message to a person is what persuades (one reaction per person and message)
        treated = (
            decided.filter(~pl.col("held_out") & pl.col("persuadable") & pl.col("effect_day").is_not_null())
            .sort("effect_day", "segment")
            .unique(["person_id", "message"], keep="first", maintain_order=True)
        )
        known = self._known_ids(settings)
        for member, person, message, segment, day in treated.select(
            "member_id", "person_id", "message", "segment", "effect_day"
        ).iter_rows():
            if EFFECTS[message].outcome == "checkin":
                counts["checkins"] += self._checkins(rows, person, day, segment)
            else:
                counts["orders"] += self._order(rows, person, day, segment, known.get(member, set()))
        counts["opt_outs"] = self._opt_outs(rows, decided)
        files = self._write(rows)
        truth = self.data_dir / "_truth" / "outreach.parquet"
        decided.drop("sent_days").write_parquet(truth, statistics=False)
        return ReactionSummary(counts["orders"], counts["checkins"], counts["opt_outs"], files)

    def _day_index(self, day: date) -> int:
        return (day - self.cfg.start).days

    def _known_ids(self, settings: Settings) -> dict[str, set[str]]:
        """member_id -> the identifier types the brand knows the member by."""
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            pairs = con.execute("select distinct member_id, id_type from member_identifiers").fetchall()
        out: dict[str, set[str]] = {}
        for member, id_type in pairs:
            out.setdefault(member, set()).add(id_type)
        return out

    def _order(self, rows: dict, person: int, day: date, segment: str, known: set[str]) -> int:
        """A persuaded person buys through an account the brand knows them by: their store card, their shop
        account, or else at their home store, where the clerk opens a card with their phone (and the phone
        reaches the member the message went to: see ``_open_card``)."""
        if self._day_index(day) >= self.cfg.days:
            return 0
        p = self.people
        category = p.categories[p.interest[person]]
        price = CATEGORIES[category][1]
        key = hashlib.blake2b(f"{person}/{segment}/{day}".encode(), digest_size=5).hexdigest().upper()
        when = f"{day.isoformat()} {10 + int(_unit(person, segment, 'h') * 10):02d}:15:00"
        item = {
            "sku_id": f"SKU-{category}-1",
            "category": category,
            "qty": "1",
            "unit_price_cny": f"{price:.2f}",
        }
        by_card = "card_no" in known or 0 <= p.store_day[person] <= self._day_index(day)
        if not by_card and "buyer_id" not in known:  # a first visit to the store: a card with their phone
            by_card = True
            self._open_card(rows, person, day, when, "external_userid" in known)
        if by_card:
            store, receipt = f"S{p.home_store[person]:03d}", f"RX{key}"
            rows.setdefault(("store_pos.orders", day), []).append(
                {
                    "store_id": store,
                    "receipt_no": receipt,
                    "card_no": p.card_nos[person],
                    "order_time": when,
                    "amount_cny": f"{price:.2f}",
                    "pharmacist_consult": "false",
                }
            )
            rows.setdefault(("store_pos.order_items", day), []).append(
                {"store_id": store, "receipt_no": receipt, **item}
            )
        else:
            plat = p.ecom_names[p.ecom_platform[person]]
            order_id = f"RX{key}"
            rows.setdefault(("ecommerce.orders", day), []).append(
                {
                    "platform": plat,
                    "order_id": order_id,
                    "buyer_id": p.buyer_ids[person],
                    "mobile_masked": None,
                    # the shop membership the offer asked for: the phone links the order to the member
                    "member_mobile": p.phones[person],
                    "order_time": when,
                    "amount_cny": f"{price:.2f}",
                    "status": "paid",
                    "updated_at": when,
                }
            )
            rows.setdefault(("ecommerce.order_items", day), []).append(
                {"platform": plat, "order_id": order_id, **item}
            )
        return 1

    def _open_card(self, rows: dict, person: int, day: date, when: str, has_contact: bool) -> None:
        p = self.people
        rows.setdefault(("store_pos.members", day), []).append(
            {
                "card_no": p.card_nos[person],
                "mobile": p.phones[person],
                "store_id": f"S{p.home_store[person]:03d}",
                "join_time": when,
                "birth_date": None,
                "updated_at": when,
            }
        )
        # the phone reaches the member the message went to: their staff owner notes it on the WeCom contact,
        # and a mini-program user authorizes it at checkout
        contact = self._first_row("wecom.contacts", p.wecom_day[person], "external_userid", p.ext_ids[person])
        if has_contact and contact is not None and not contact.get("remark_mobile"):
            rows.setdefault(("wecom.contacts", day), []).append(
                {**contact, "remark_mobile": p.phones[person], "updated_at": when}
            )
        user = self._first_row("miniprogram.users", p.mp_day[person], "openid", p.mp_openids[person])
        if user is not None and not user.get("mobile"):
            rows.setdefault(("miniprogram.users", day), []).append(
                {**user, "mobile": p.phones[person], "updated_at": when}
            )

    def _first_row(self, table: str, day_index: int, column: str, value: str) -> dict | None:
        """The row the generator wrote for ``value`` in ``table`` on its day (None: not written)."""
        if day_index < 0 or day_index >= self.cfg.days:
            return None
        contract = BY_NAME[table]
        day = self.people.day_of(day_index).isoformat()
        path = self.data_dir / contract.channel / contract.table / f"dt={day}" / "part-0.jsonl"
        if not path.exists():
            return None
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get(column) == value:
                return row
        return None

    def _checkins(self, rows: dict, person: int, day: date, segment: str) -> int:
        p = self.people
        topic = CHECKIN_TOPICS.get(p.categories[p.interest[person]], "daily_walk")
        chat = f"wr{p.staff[person]:03d}_{p.acq_day[person] // 30}"
        written = 0
        for k in range(CHECKIN_STREAK):
            d = day + timedelta(days=k)
            if self._day_index(d) >= self.cfg.days:
                break
            rows.setdefault(("wecom.group_events", d), []).append(
                {
                    "event_id": f"gx{person:07d}{segment[:6]}{d:%m%d}",
                    "external_userid": p.ext_ids[person],
                    "chat_id": chat,
                    "event_type": "checkin",
                    "checkin_topic": topic,
                    "event_time": f"{d.isoformat()} 07:{10 + k:02d}:00",
                }
            )
            written += 1
        return written

    def _opt_outs(self, rows: dict, decided: pl.DataFrame) -> int:
        """Sensitive people answer TD the day after their second marketing message within 7 days."""
        days: dict[int, list[date]] = {}
        for person, kind, sent_days in decided.select("person_id", "kind", "sent_days").iter_rows():
            if person is not None and kind == "marketing" and sent_days:
                days.setdefault(person, []).extend(sent_days)
        written = 0
        for person, sent in sorted(days.items()):
            if not self.sensitive(person):
                continue
            sent.sort()
            second = next((b for a, b in itertools.pairwise(sent) if (b - a).days < 7), None)
            if second is None or self._day_index(second + timedelta(days=1)) >= self.cfg.days:
                continue
            d = second + timedelta(days=1)
            rows.setdefault(("consent.events", d), []).append(
                {
                    "event_id": f"ce-rx-{person:08d}",
                    "id_type": "mobile",
                    "id_value": self.people.phones[person],
                    "scope": "marketing",
                    "granted": "false",
                    "event_time": f"{d.isoformat()} 09:30:00",
                    "source": "sms_reply_TD",
                }
            )
            written += 1
        return written

    def _write(self, rows: dict[tuple[str, date], list[dict]]) -> int:
        """One reactions file per partition that has reactions; files no longer needed are removed."""
        wanted: dict[Path, bytes] = {}
        for (name, day), table_rows in rows.items():
            contract = BY_NAME[name]
            fmt = TABLE_FORMAT[contract.channel]
            folder = self.data_dir / contract.channel / contract.table / f"dt={day.isoformat()}"
            columns = list(contract.column_names)
            if fmt == "csv":
                frame = pl.DataFrame(
                    [{c: r.get(c) for c in columns} for r in table_rows],
                    schema={c: pl.String for c in columns},
                    orient="row",
                )
                body = frame.write_csv().encode()
            else:  # jsonl: the reacting tables are CSV or JSON Lines
                body = "".join(
                    json.dumps({c: r.get(c) for c in columns}, ensure_ascii=False) + "\n" for r in table_rows
                ).encode()
            wanted[folder / f"{REACTIONS}.{fmt}"] = body
        for old in self.data_dir.glob(f"*/*/dt=*/{REACTIONS}.*"):
            if old not in wanted:
                old.unlink()
        changed = 0
        for path, body in sorted(wanted.items()):
            if path.exists() and path.read_bytes() == body:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            changed += 1
        return changed

    # --- the truth of an uplift report's units -------------------------------------------------------------
    def true_outcomes(self, settings: Settings, units: pl.DataFrame) -> pl.DataFrame:
        """Both potential outcomes of each unit (member_id, segment, as_of, outcome_days, outcome).

        ``y0``: the outcome in [start, start + window) had the segment's message never reached the member
        (the generated history, plus reactions to other messages); ``y1``: had it been sent (``y0``, or a
        reaction of this message landing in the window). Read from ``_truth/outreach.parquet`` (written by
        ``react``), the generated history and the raw check-in events, never from the warehouse's marts."""
        persons = self.persons_of(settings)
        truth = pl.read_parquet(self.data_dir / "_truth" / "outreach.parquet")
        effect = {
            (m, s): (d if moved else None)
            for m, s, moved, d in truth.select(
                "member_id", "segment", "persuadable", "effect_day"
            ).iter_rows()
        }
        message_of = dict(truth.select("segment", "message").unique().iter_rows())
        order_days = self._order_days(truth)
        checkin_days = self._checkin_days(truth)
        y0, y1 = [], []
        for member, segment, start, window, outcome in units.select(
            "member_id", "segment", "as_of", "outcome_days", "outcome"
        ).iter_rows():
            person = persons.get(member)
            end = start + timedelta(days=window)
            message = message_of.get(segment)
            days = (checkin_days if outcome == "checkin" else order_days).get(person, [])
            base = any(start <= d < end for d, cause in days if cause != message)
            day = effect.get((member, segment))
            y0.append(base)
            y1.append(base or (day is not None and start <= day < end))
        return units.with_columns(y0=pl.Series(y0, dtype=pl.Boolean), y1=pl.Series(y1, dtype=pl.Boolean))

    def _order_days(self, truth: pl.DataFrame) -> dict[int, list[tuple[date, str | None]]]:
        """person -> (day, the message that caused it or None) of each order that counts."""
        orders = pl.read_parquet(self.data_dir / "_truth" / "orders.parquet").filter(
            ~pl.col("status").is_in(["cancelled", "refunded"])
        )
        out: dict[int, list[tuple[date, str | None]]] = {}
        for person, day in orders.select("person_id", "order_date").iter_rows():
            out.setdefault(person, []).append((day, None))
        for person, message, day in self._reacted(truth, "order"):
            out.setdefault(person, []).append((day, message))
        return out

    def _checkin_days(self, truth: pl.DataFrame) -> dict[int, list[tuple[date, str | None]]]:
        person_of = {ext: i for i, ext in enumerate(self.people.ext_ids.tolist())}
        out: dict[int, list[tuple[date, str | None]]] = {}
        for path in sorted(self.data_dir.glob("wecom/group_events/dt=*/part-0.jsonl")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(line)
                    day = date.fromisoformat(str(row["event_time"])[:10])
                except (ValueError, KeyError, TypeError):
                    continue
                if row.get("event_type") == "checkin":
                    person = person_of.get(row.get("external_userid"))
                    if person is not None:
                        out.setdefault(person, []).append((day, None))
        for person, message, day in self._reacted(truth, "checkin"):
            for k in range(CHECKIN_STREAK):
                out.setdefault(person, []).append((day + timedelta(days=k), message))
        return out

    def _reacted(self, truth: pl.DataFrame, outcome: str) -> list[tuple[int, str, date]]:
        """(person, message, day) of each reaction ``react`` wrote for this outcome."""
        done = (
            truth.filter(~pl.col("held_out") & pl.col("persuadable") & pl.col("effect_day").is_not_null())
            .sort("effect_day", "segment")
            .unique(["person_id", "message"], keep="first", maintain_order=True)
        )
        return [
            (person, message, day)
            for person, message, day in done.select("person_id", "message", "effect_day").iter_rows()
            if EFFECTS[message].outcome == outcome and self._day_index(day) < self.cfg.days
        ]


def _china_day(moment: object) -> date:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    assert isinstance(moment, datetime)
    return moment.astimezone(CHINA).date()
