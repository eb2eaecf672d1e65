"""Sample channel data that behaves like a private-domain health brand, written in the landing layout.

The simulation runs per person, then per day:

* people are acquired over time through one channel (a store QR code into WeCom, a livestream, a
  mini-program, an e-commerce order, a store membership card, an insurance partner) and may adopt others
  later; each channel sees only its own ids. The WeChat unionid reaches WeCom only for people who also use
  the brand's WeChat mini-program (the two share an open-platform account), phones are authorized on some
  channels only, e-commerce shows masked phones, insurance sends HMACs of the holder's phone;
* every person carries a latent engagement level and a churn day drawn from a hazard that falls with
  engagement; check-ins, visits and livestream watching fade over the three weeks before churn, and some
  churners remove the WeCom contact or opt out;
* 15–30 % of prospects place a first order 7–15 days after first touch; about 40 % of buyers come back on
  their category's replenishment cycle; devices are bought rarely, with strips or medication;
* dirt at a configurable rate: mixed phone formats, duplicate events, rows a day late, malformed rows,
  undecodable bytes, conflicting duplicates, a clerk's phone on many walk-in cards, test numbers.

The truth is written apart under ``_truth/`` (the person behind each identifier, outcomes, injected dirt).
Same seed and identity key → same bytes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from memberflow.core.contracts import BY_NAME
from memberflow.core.phones import phone_token

# category: (replenishment cycle in days, unit price CNY, weight as a person's main interest)
CATEGORIES: dict[str, tuple[int, float, float]] = {
    "calcium": (30, 89.0, 0.17),
    "stomach_care": (20, 68.0, 0.10),
    "glucose_strips": (30, 118.0, 0.13),
    "bp_medication": (30, 45.0, 0.12),
    "maternal_nutrition": (30, 158.0, 0.09),
    "infant_formula": (14, 238.0, 0.08),
    "cognitive_training": (365, 399.0, 0.04),
    "skincare": (45, 129.0, 0.17),
    "otc_cold": (60, 35.0, 0.10),
}
DEVICES = {"glucose_strips": ("glucometer", 299.0), "bp_medication": ("bp_monitor", 259.0)}
CHECKIN_TOPICS = {
    "glucose_strips": "glucose_log",
    "bp_medication": "bp_log",
    "maternal_nutrition": "pregnancy_diary",
    "infant_formula": "baby_growth",
    "cognitive_training": "brain_game",
}
ACQUISITION = {
    "wecom_qr": 0.30,
    "livestream": 0.15,
    "miniprogram": 0.20,
    "ecommerce": 0.20,
    "store": 0.10,
    "insurance": 0.05,
}
ECOM_PLATFORMS = {"tmall": 0.40, "jd": 0.30, "meituan": 0.12, "eleme": 0.08, "pdd": 0.10}
MP_APPS = {"wechat": "wx5f3c8a21d9b04e67", "alipay": "2021004123456789", "douyin": "tt8a61c0d2e4f5b3a1"}
N_STORES = 40
N_STAFF = 25
TEST_NUMBERS = ("13800000000", "13900000000", "18888888888")
TABLE_FORMAT = {
    "wecom": "jsonl",
    "miniprogram": "jsonl",
    "ecommerce": "csv",
    "store_pos": "csv",
    "livestream": "csv",
    "insurance": "parquet",
    "consent": "jsonl",
    "marketing": "csv",
}
# what acquiring one person costs through each channel (CNY; acquisition name → landing channel, cost):
# QR materials and the staff's bonus per added contact, ads per mini-program sign-up, platform ads per new
# e-commerce buyer, a store's card incentive, the insurance partner's referral fee; a livestream pays a
# production cost per session on top of its per-viewer promotion
ACQUISITION_COST: dict[str, tuple[str, float]] = {
    "wecom_qr": ("wecom", 35.0),
    "livestream": ("livestream", 20.0),
    "miniprogram": ("miniprogram", 45.0),
    "ecommerce": ("ecommerce", 90.0),
    "store": ("store_pos", 15.0),
    "insurance": ("insurance", 120.0),
}
LIVESTREAM_SESSION_COST = 800.0
# livestream sessions: WeChat Channels on Mon/Wed/Fri, Douyin on Tue/Sat, at 19:30 local
LIVESTREAM_DAYS = (("wechat_channels", (0, 2, 4)), ("douyin", (1, 5)))
EVENT_TABLES = {
    "wecom.group_events",
    "miniprogram.events",
    "livestream.views",
    "consent.events",
    "store_pos.orders",
}


@dataclass(frozen=True)
class GenerateConfig:
    members: int
    start: date
    days: int
    seed: int
    out: Path
    dirt_rate: float = 0.02

    def __post_init__(self) -> None:
        if self.members < 1 or self.days < 1:
            raise ValueError("members and days must be at least 1")
        if not 0.0 <= self.dirt_rate <= 0.2:
            raise ValueError("dirt_rate must be between 0 and 0.2")


@dataclass
class GenerateSummary:
    out: Path
    rows: dict[str, int] = field(default_factory=dict)
    dirt: dict[str, int] = field(default_factory=dict)
    persons: int = 0


def _hex_ids(rng: np.random.Generator, n: int, prefix: str, width: int = 16) -> np.ndarray:
    """n distinct random ids such as wm3fa9…; 64 random bits, collisions redrawn."""
    values = rng.integers(0, 2**63, size=n, dtype=np.int64)
    while len(np.unique(values)) < n:
        _, first = np.unique(values, return_index=True)
        dup = np.setdiff1d(np.arange(n), first)
        values[dup] = rng.integers(0, 2**63, size=len(dup), dtype=np.int64)
    return np.array([f"{prefix}{v:0{width}x}" for v in values.tolist()], dtype=object)


def _phones(rng: np.random.Generator, n: int) -> np.ndarray:
    prefixes = np.array(
        [
            130,
            131,
            132,
            133,
            135,
            136,
            137,
            139,
            150,
            151,
            152,
            155,
            157,
            158,
            159,
            166,
            176,
            177,
            180,
            181,
            182,
            185,
            186,
            187,
            188,
            189,
            191,
            198,
            199,
        ]
    )
    taken: set[str] = set(TEST_NUMBERS)
    out = np.empty(n, dtype=object)
    i = 0
    while i < n:
        need = n - i
        head = rng.choice(prefixes, size=need)
        tail = rng.integers(0, 10**8, size=need)
        for h, t in zip(head.tolist(), tail.tolist(), strict=True):
            phone = f"{h}{t:08d}"
            if phone not in taken and len(set(phone)) > 2:
                taken.add(phone)
                out[i] = phone
                i += 1
    return out


_FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def format_phone(phone: str, style: int) -> str:
    """The ways people and systems write one number."""
    return [
        phone,
        f"+86 {phone}",
        f"0086{phone}",
        f"{phone[:3]} {phone[3:7]} {phone[7:]}",
        f"{phone[:3]}-{phone[3:7]}-{phone[7:]}",
        phone.translate(_FULL_WIDTH),
        f"86{phone}",
    ][style]


class _Writer:
    """Collects rows per table and local date, applies dirt, writes partitions."""

    def __init__(
        self, cfg: GenerateConfig, rng: np.random.Generator, table_rngs: dict[str, np.random.Generator]
    ) -> None:
        self.cfg = cfg
        self.rng = rng
        # a table added later plants its dirt from a stream of its own, so the older tables keep their bytes
        self.table_rngs = table_rngs
        self.rows: dict[tuple[str, int], list[dict]] = defaultdict(list)
        self.frames: dict[tuple[str, int], list[pl.DataFrame]] = defaultdict(list)
        self.late: dict[tuple[str, int], list[dict]] = defaultdict(list)
        self.counts: dict[str, int] = defaultdict(int)
        self.dirt: dict[str, int] = defaultdict(int)

    def add(self, table: str, day: int, row: dict) -> None:
        if 0 <= day < self.cfg.days:
            self.rows[(table, day)].append(row)

    def add_items(self, table: str, day: int, order: dict, items: list[tuple[str, str, int, float]]) -> None:
        """Line items (category, sku, qty, unit price) of one order, keyed by the order's columns."""
        for category, sku, qty, unit in items:
            row = {
                **order,
                "sku_id": sku,
                "category": category,
                "qty": str(qty),
                "unit_price_cny": f"{unit:.2f}",
            }
            self.add(table, day, row)

    def add_frame(self, table: str, day: int, frame: pl.DataFrame) -> None:
        if frame.height:
            self.frames[(table, day)].append(frame)

    def flush_day(self, day: int) -> None:
        for name in BY_NAME:
            self._write(name, day)

    def _collect(self, name: str, day: int) -> list[dict]:
        rows = self.rows.pop((name, day), [])
        for frame in self.frames.pop((name, day), []):
            rows.extend(frame.to_dicts())
        rows.extend(self.late.pop((name, day), []))
        return rows

    def _write(self, name: str, day: int) -> None:
        contract = BY_NAME[name]
        columns = list(contract.column_names)
        rows = self._collect(name, day)
        extra_lines: list[bytes] = []
        if rows and self.cfg.dirt_rate > 0:
            rows, extra_lines = self._dirty(name, day, rows, columns, self.table_rngs.get(name, self.rng))
        fmt = TABLE_FORMAT[contract.channel]
        folder = (
            self.cfg.out
            / contract.channel
            / contract.table
            / f"dt={(self.cfg.start + timedelta(day)).isoformat()}"
        )
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-0.{fmt}"
        frame = pl.DataFrame(
            [{c: r.get(c) for c in columns} for r in rows],
            schema={c: pl.String for c in columns},
            orient="row",
        )
        if fmt == "csv":
            body = frame.write_csv().encode("utf-8") if rows else (",".join(columns) + "\n").encode()
            path.write_bytes(body + b"".join(extra_lines))
        elif fmt == "jsonl":
            lines = [json.dumps({c: r.get(c) for c in columns}, ensure_ascii=False) + "\n" for r in rows]
            path.write_bytes("".join(lines).encode("utf-8") + b"".join(extra_lines))
        else:
            frame.write_parquet(path, compression="zstd", statistics=False)
        self.counts[name] += len(rows) + len(extra_lines)

    def _dirty(
        self, name: str, day: int, rows: list[dict], columns: list[str], rng: np.random.Generator
    ) -> tuple[list[dict], list[bytes]]:
        """Plant the defects real exports have; counts go to the truth folder."""
        rate = self.cfg.dirt_rate
        contract = BY_NAME[name]
        fmt = TABLE_FORMAT[contract.channel]
        n = len(rows)
        extra: list[bytes] = []

        def pick(share: float) -> list[int]:
            k = rng.binomial(n, min(share, 1.0))
            return sorted(rng.choice(n, size=k, replace=False).tolist()) if k else []

        if name in EVENT_TABLES and day + 1 < self.cfg.days:
            late = set(pick(rate))
            if late:
                self.late[(name, day + 1)].extend(rows[i] for i in late)
                rows = [r for i, r in enumerate(rows) if i not in late]
                self.dirt[f"{name}.late_row"] += len(late)
                n = len(rows)
        if name in EVENT_TABLES and n:
            for i in pick(rate / 2):
                rows.append(dict(rows[i]))
                self.dirt[f"{name}.duplicate_row"] += 1
        if n and fmt != "parquet":
            mutable = [
                c.name
                for c in contract.columns
                if c.name not in contract.key and c.kind in ("text", "amount", "count")
            ]
            for i in pick(rate / 10):
                twin = dict(rows[i])
                changed = next((c for c in mutable if twin.get(c)), None)
                if changed is None:
                    continue
                twin[changed] = _altered(str(twin[changed]))
                rows.append(twin)
                self.dirt[f"{name}.duplicate_key_conflict"] += 1
        if n and fmt != "parquet":
            for i in pick(rate / 4):
                kind = self._corrupt(rows[i], contract, day, rng)
                self.dirt[f"{name}.{kind}"] += 1
            for i in sorted(pick(rate / 20), reverse=True):
                row = rows.pop(i)
                if fmt == "csv" and rng.random() < 0.5:
                    values = [str(row.get(c) or "") for c in columns]
                    extra.append((",".join(values[:-2]) + "\n").encode("utf-8"))
                    self.dirt[f"{name}.malformed_row"] += 1
                elif fmt == "jsonl" and rng.random() < 0.5:
                    extra.append(json.dumps(row, ensure_ascii=False)[:-7].encode("utf-8") + b"\n")
                    self.dirt[f"{name}.malformed_row"] += 1
                else:
                    # An export tool that wrote a remark in GBK instead of UTF-8.
                    text = (
                        ",".join(str(row.get(c) or "") for c in columns)
                        if fmt == "csv"
                        else json.dumps(row, ensure_ascii=False)
                    ) + "\n"
                    extra.append(text.encode("utf-8").replace(b"\n", "备注".encode("gbk") + b"\n"))
                    self.dirt[f"{name}.undecodable_bytes"] += 1
        return rows, extra

    def _corrupt(self, row: dict, contract, day: int, rng: np.random.Generator) -> str:
        choice = int(rng.integers(0, 4))
        times = [c.name for c in contract.columns if c.kind == "time" and row.get(c.name)]
        amounts = [c.name for c in contract.columns if c.kind == "amount"]
        qtys = [c.name for c in contract.columns if c.kind == "qty"]
        if choice == 0 or not (times or amounts or qtys):
            required = [c for c in contract.required if c not in contract.key] or list(contract.required)
            row[required[int(rng.integers(0, len(required)))]] = ""
            return "missing_required"
        if choice == 1 and times:
            row[times[0]] = f"{(self.cfg.start + timedelta(day)).isoformat()} 25:61:00"
            return "bad_time"
        if choice == 2 and times:
            future = self.cfg.start + timedelta(day + 3)
            row[times[-1]] = f"{future.isoformat()} 10:00:00"
            return "future_time"
        if amounts:
            row[amounts[0]] = "12,30元"
            return "bad_amount"
        if qtys:
            row[qtys[0]] = "-1"
            return "negative_qty"
        row[times[0]] = "not a time"
        return "bad_time"


def _altered(value: str) -> str:
    """The same field with a different value, as a conflicting re-export would carry."""
    if value[-1:].isdigit():
        return value[:-1] + str((int(value[-1]) + 1) % 10)
    return value + "x"


def _local_time(day: date, seconds: np.ndarray | float) -> str | list[str]:
    if isinstance(seconds, np.ndarray):
        return [_local_time(day, float(s)) for s in seconds]
    s = int(seconds)
    return f"{day.isoformat()} {s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass
class _People:
    """The simulated population: array entry i is person i (the person_id of the truth files)."""

    cfg: GenerateConfig
    n: int
    acq_day: np.ndarray
    acq_name: np.ndarray
    engagement: np.ndarray
    churn_day: np.ndarray
    categories: list[str]
    interest: np.ndarray
    phones: np.ndarray
    unionids: np.ndarray
    wecom_day: np.ndarray
    mp_platform: np.ndarray
    mp_day: np.ndarray
    shares_unionid: np.ndarray
    live_platform: np.ndarray
    live_day: np.ndarray
    insurance_day: np.ndarray
    ecom_day: np.ndarray
    store_day: np.ndarray
    ecom_platform: np.ndarray
    ecom_names: list[str]
    first_order: np.ndarray
    repeater: np.ndarray
    ext_ids: np.ndarray
    mp_openids: np.ndarray
    live_openids: np.ndarray
    buyer_ids: np.ndarray
    card_nos: np.ndarray
    staff: np.ndarray
    home_store: np.ndarray
    clerk_phones: np.ndarray
    style: np.ndarray
    ecom_member: np.ndarray

    @property
    def prospect(self) -> np.ndarray:
        return _prospects(self.acq_name)

    def shown_phone(self, i: int) -> str:
        """The person's phone as this export writes it (formats vary with the dirt rate)."""
        return format_phone(self.phones[i], int(self.style[i]))

    def day_of(self, d: int) -> date:
        return self.cfg.start + timedelta(days=int(d))


def _prospects(acq_name: np.ndarray) -> np.ndarray:
    """Who met the brand before buying (not through an order or a store card)."""
    return ~np.isin(acq_name, ["ecommerce", "store"])


def _draw_people(cfg: GenerateConfig, rng_people, rng_orders, rng_ids) -> _People:
    """Who the brand meets, when and how, how engaged they are, when they churn and whether they buy."""
    n, days = cfg.members, cfg.days
    fmt_share = min(1.0, 15 * cfg.dirt_rate)
    # --- people -----------------------------------------------------------------------------------------
    imported = rng_people.random(n) < 0.15
    growth = np.sqrt(rng_people.random(n))  # density rising over the period
    acq_day = np.where(imported, rng_people.integers(0, min(7, days), n), (growth * days).astype(int))
    acq_day = np.minimum(acq_day, days - 1)
    channels = list(ACQUISITION)
    acq = rng_people.choice(len(channels), size=n, p=list(ACQUISITION.values()))
    acq_name = np.array(channels, dtype=object)[acq]
    engagement = rng_people.beta(2, 2, n)
    churn_day = acq_day + np.ceil(rng_people.exponential(40 + 260 * engagement)).astype(int) + 3
    categories = list(CATEGORIES)
    interest = rng_people.choice(len(categories), size=n, p=np.array([v[2] for v in CATEGORIES.values()]))
    phones = _phones(rng_ids, n)
    unionids = _hex_ids(rng_ids, n, "oU")

    def adopt(flag_p: np.ndarray | float, forced: np.ndarray, delay_mean: float) -> np.ndarray:
        """Adoption day of a channel per person (-1: never)."""
        has = forced | (rng_people.random(n) < flag_p)
        delay = np.where(forced, 0, rng_people.geometric(1 / delay_mean, n))
        return np.where(has, acq_day + delay, -1)

    wecom_day = adopt(np.where(acq_name == "livestream", 0.5, 0.30), acq_name == "wecom_qr", 12)
    mp_platform = rng_people.choice(3, size=n, p=[0.75, 0.15, 0.10])
    mp_day = adopt(0.30, acq_name == "miniprogram", 15)
    mp_platform = np.where(acq_name == "miniprogram", mp_platform, 0)  # later adopters use the WeChat app
    # The WeChat unionid reaches WeCom and WeChat Channels only through the open-platform account that the
    # WeChat mini-program shares: people who never use that app stay without one elsewhere.
    shares_unionid = (mp_day >= 0) & (mp_day < days) & (mp_platform == 0)
    live_platform = rng_people.choice(2, size=n, p=[0.65, 0.35])
    live_day = adopt(0.12, acq_name == "livestream", 20)
    insurance_day = adopt(0.02, acq_name == "insurance", 60)
    ecom_day = np.where(acq_name == "ecommerce", acq_day, -1)
    store_day = np.where(acq_name == "store", acq_day, -1)
    ecom_platform = rng_people.choice(len(ECOM_PLATFORMS), size=n, p=list(ECOM_PLATFORMS.values()))
    ecom_names = list(ECOM_PLATFORMS)

    # conversion of prospects, then repeat buying
    prospect = _prospects(acq_name)
    converts = prospect & (rng_orders.random(n) < 0.12 + 0.36 * engagement)
    first_order = np.where(prospect, np.where(converts, acq_day + rng_orders.integers(7, 16, n), -1), acq_day)
    first_order = np.where((first_order >= 0) & (first_order < churn_day), first_order, -1)
    repeater = rng_orders.random(n) < 0.15 + 0.5 * engagement
    buys_in_store = np.where(store_day >= 0, True, rng_orders.random(n) < 0.35)
    new_store = (first_order >= 0) & buys_in_store & (store_day < 0) & (ecom_day < 0)
    store_day = np.where(new_store, first_order, store_day)
    ecom_day = np.where((first_order >= 0) & (store_day < 0) & (ecom_day < 0), first_order, ecom_day)

    ext_ids = _hex_ids(rng_ids, n, "wm")
    mp_openids = _hex_ids(rng_ids, n, "o")
    live_openids = _hex_ids(rng_ids, n, "lv")
    buyer_ids = np.array(
        [
            f"{ecom_names[k]}_{int(x):011d}"
            for k, x in zip(ecom_platform.tolist(), rng_ids.integers(0, 10**11, n).tolist(), strict=True)
        ],
        dtype=object,
    )
    card_nos = (
        np.array([f"C{int(x):010d}" for x in rng_ids.permutation(10**7)[:n].tolist()], dtype=object)
        if n <= 10**7
        else _hex_ids(rng_ids, n, "C", 12)
    )
    staff = rng_people.integers(0, N_STAFF, n)
    home_store = rng_people.integers(0, N_STORES, n)
    clerk_phones = _phones(rng_ids, 2)
    style = np.where(rng_people.random(n) < fmt_share, rng_people.integers(1, 7, n), 0)
    ecom_member = rng_people.random(n) < 0.35  # authorized the brand's shop membership (phone)

    return _People(
        cfg,
        n,
        acq_day,
        acq_name,
        engagement,
        churn_day,
        categories,
        interest,
        phones,
        unionids,
        wecom_day,
        mp_platform,
        mp_day,
        shares_unionid,
        live_platform,
        live_day,
        insurance_day,
        ecom_day,
        store_day,
        ecom_platform,
        ecom_names,
        first_order,
        repeater,
        ext_ids,
        mp_openids,
        live_openids,
        buyer_ids,
        card_nos,
        staff,
        home_store,
        clerk_phones,
        style,
        ecom_member,
    )


def _write_accounts(
    cfg: GenerateConfig, p: _People, writer: _Writer, id_key: bytes, rng_people, rng_ids, rng_links
) -> list:
    """Each channel's account rows (contacts, users, cards, policies) and consent events; returns the truth
    of which person stands behind each identifier.

    A prospect who buys leaves their phone where they came from, on the day of the first order: the staff
    member notes it on the WeCom contact (90 %), and a mini-program user authorizes it for the new-customer
    coupon (90 %). That is how the seeds see a first order come from their own channels."""
    n, days = p.n, cfg.days
    buys = (p.first_order >= 0) & p.prospect
    noted_at_purchase = buys & (rng_links.random(n) < 0.9)
    authorized_at_purchase = buys & (rng_links.random(n) < 0.9)
    shown_phone, day_of = p.shown_phone, p.day_of
    truth_ids: list[tuple[int, str, str]] = []
    remark = rng_people.random(n) < 0.30
    mp_mobile = rng_people.random(n) < 0.55
    contact_removed = rng_people.random(n) < 0.45
    opt_out_at_churn = rng_people.random(n) < 0.15
    health_consent = rng_people.random(n) < 0.40
    test_number = rng_people.random(n) < cfg.dirt_rate / 4
    clerk_card = rng_people.random(n) < cfg.dirt_rate * 2
    for i in range(n):
        tok = phone_token(p.phones[i], id_key)
        truth_ids.append((i, "phone_token", tok))
        seconds = rng_people.integers(8 * 3600, 21 * 3600, size=4)
        if p.wecom_day[i] >= 0:
            d = day_of(p.wecom_day[i])
            t = _local_time(d, seconds[0])
            has_union = p.shares_unionid[i]
            row = {
                "external_userid": p.ext_ids[i],
                "unionid": p.unionids[i] if has_union else None,
                "staff_userid": f"staff{p.staff[i]:03d}",
                "add_time": t,
                "add_way": "qr_code" if p.acq_name[i] == "wecom_qr" else "group_invite",
                "state": f"store_{p.home_store[i]:03d}_qr"
                if p.acq_name[i] == "wecom_qr"
                else f"ch_{p.acq_name[i]}",
                "remark_mobile": shown_phone(i) if remark[i] else None,
                "deleted_time": None,
                "updated_at": t,
            }
            writer.add("wecom.contacts", int(p.wecom_day[i]), row)
            truth_ids.append((i, "external_userid", p.ext_ids[i]))
            if noted_at_purchase[i] and not remark[i] and p.wecom_day[i] < p.first_order[i]:
                t1 = _local_time(day_of(p.first_order[i]), seconds[2])
                row = {**row, "remark_mobile": shown_phone(i), "updated_at": t1}
                writer.add("wecom.contacts", int(p.first_order[i]), row)
            if p.churn_day[i] < days and contact_removed[i] and p.churn_day[i] > p.wecom_day[i]:
                t2 = _local_time(day_of(p.churn_day[i]), seconds[1])
                writer.add(
                    "wecom.contacts", int(p.churn_day[i]), {**row, "deleted_time": t2, "updated_at": t2}
                )
            writer.add(
                "consent.events",
                int(p.wecom_day[i]),
                {
                    "event_id": f"ce-wc-{p.ext_ids[i]}",
                    "id_type": "external_userid",
                    "id_value": p.ext_ids[i],
                    "scope": "marketing",
                    "granted": "true",
                    "event_time": t,
                    "source": "wecom_sidebar",
                },
            )
        if p.mp_day[i] >= 0:
            plat = list(MP_APPS)[p.mp_platform[i]]
            d = day_of(p.mp_day[i])
            t = _local_time(d, seconds[1])
            openid_full = f"{plat}:{MP_APPS[plat]}:{p.mp_openids[i]}"
            mobile = TEST_NUMBERS[i % 3] if test_number[i] else shown_phone(i)
            user = {
                "platform": plat,
                "app_id": MP_APPS[plat],
                "openid": p.mp_openids[i],
                "unionid": p.unionids[i] if plat == "wechat" else None,
                "mobile": mobile if mp_mobile[i] else None,
                "register_time": t,
                "updated_at": t,
            }
            writer.add("miniprogram.users", int(p.mp_day[i]), user)
            truth_ids.append((i, "openid", openid_full))
            if authorized_at_purchase[i] and not mp_mobile[i] and p.mp_day[i] < p.first_order[i]:
                t1 = _local_time(day_of(p.first_order[i]), seconds[3])
                authorized = {**user, "mobile": mobile, "updated_at": t1}
                writer.add("miniprogram.users", int(p.first_order[i]), authorized)
            if plat == "wechat":
                truth_ids.append((i, "unionid", p.unionids[i]))
            for scope, granted in (
                ("marketing", rng_people.random() < 0.85),
                ("health_data", bool(health_consent[i])),
            ):
                writer.add(
                    "consent.events",
                    int(p.mp_day[i]),
                    {
                        "event_id": f"ce-mp-{scope}-{p.mp_openids[i]}",
                        "id_type": "openid",
                        "id_value": openid_full,
                        "scope": scope,
                        "granted": "true" if granted else "false",
                        "event_time": t,
                        "source": "miniprogram_settings",
                    },
                )
        if p.store_day[i] >= 0:
            d = day_of(p.store_day[i])
            t = _local_time(d, seconds[2])
            if clerk_card[i]:
                mobile = p.clerk_phones[i % 2]
            elif test_number[i]:
                mobile = TEST_NUMBERS[i % 3]
            else:
                mobile = shown_phone(i)
            writer.add(
                "store_pos.members",
                int(p.store_day[i]),
                {
                    "card_no": p.card_nos[i],
                    "mobile": mobile,
                    "store_id": f"S{p.home_store[i]:03d}",
                    "join_time": t,
                    "birth_date": (
                        date(1950, 1, 1) + timedelta(days=int(rng_people.integers(0, 20000)))
                    ).isoformat()
                    if rng_people.random() < 0.7
                    else None,
                    "updated_at": t,
                },
            )
            truth_ids.append((i, "card_no", p.card_nos[i]))
        if p.live_day[i] >= 0:
            plat = ("wechat_channels", "douyin")[p.live_platform[i]]
            truth_ids.append((i, "openid", f"{plat}:live:{p.live_openids[i]}"))
        if p.ecom_day[i] >= 0:
            truth_ids.append((i, "buyer_id", f"{p.ecom_names[p.ecom_platform[i]]}:{p.buyer_ids[i]}"))
        if p.insurance_day[i] >= 0 and p.insurance_day[i] < days:
            d = day_of(p.insurance_day[i])
            partner = ("pingan_health", "taikang_online")[i % 2]
            policy_id = f"PL{int(rng_ids.integers(0, 10**12)):012d}"
            row = {
                "partner": partner,
                "policy_id": policy_id,
                "holder_mobile_hmac": tok,
                "product_code": ("CHRONIC_CARE", "MATERNITY", "SENIOR_HEALTH")[p.interest[i] % 3],
                "start_date": d.isoformat(),
                "end_date": (d + timedelta(days=365)).isoformat(),
                "status": "active",
                "updated_at": _local_time(d, seconds[3]),
            }
            writer.add("insurance.policies", int(p.insurance_day[i]), row)
            truth_ids.append((i, "policy_id", f"{partner}:{policy_id}"))
            if p.churn_day[i] < days and rng_people.random() < 0.3:
                writer.add(
                    "insurance.policies",
                    int(p.churn_day[i]),
                    {
                        **row,
                        "status": "lapsed",
                        "updated_at": _local_time(day_of(p.churn_day[i]), seconds[3]),
                    },
                )
        if p.churn_day[i] < days and opt_out_at_churn[i]:
            writer.add(
                "consent.events",
                int(p.churn_day[i]),
                {
                    "event_id": f"ce-sms-{i:08d}",
                    "id_type": "mobile",
                    "id_value": shown_phone(i),
                    "scope": "marketing",
                    "granted": "false",
                    "event_time": _local_time(day_of(p.churn_day[i]), seconds[0]),
                    "source": "sms_reply_TD",
                },
            )

    return truth_ids


def _write_orders(cfg: GenerateConfig, p: _People, writer: _Writer, rng_orders, rng_links) -> list[dict]:
    """First orders, then repeats on the category's replenishment cycle until churn; returns the truth. A
    prospect's first online order usually joins the brand's shop membership (the new-member coupon), which
    gives the shop their phone (90 %)."""
    n, days = p.n, cfg.days
    shown_phone, day_of = p.shown_phone, p.day_of
    shop_member = p.ecom_member | (p.prospect & (rng_links.random(n) < 0.9))
    truth_orders: list[dict] = []
    order_seq = 0
    for i in np.flatnonzero(p.first_order >= 0).tolist():
        category = p.categories[p.interest[i]]
        cycle, price, _ = CATEGORIES[category]
        d = int(p.first_order[i])
        first = True
        while d < min(int(p.churn_day[i]), days):
            order_seq += 1
            items = [
                (
                    category,
                    f"SKU-{category}-{int(rng_orders.integers(1, 4))}",
                    int(rng_orders.integers(1, 4)),
                    price,
                )
            ]
            if first and category in DEVICES and rng_orders.random() < 0.25:
                device, device_price = DEVICES[category]
                items.append((device, f"SKU-{device}-1", 1, device_price))
            if rng_orders.random() < 0.2:
                other = p.categories[int(rng_orders.integers(0, len(p.categories)))]
                if other != category:
                    items.append((other, f"SKU-{other}-1", 1, CATEGORIES[other][1]))
            amount = sum(qty * unit for _, _, qty, unit in items)
            when = int(rng_orders.integers(9 * 3600, 22 * 3600))
            t = _local_time(day_of(d), when)
            if p.store_day[i] >= 0 and p.store_day[i] <= d:
                store = f"S{p.home_store[i]:03d}"
                receipt = f"R{order_seq:09d}"
                writer.add(
                    "store_pos.orders",
                    d,
                    {
                        "store_id": store,
                        "receipt_no": receipt,
                        "card_no": p.card_nos[i],
                        "order_time": t,
                        "amount_cny": f"{amount:.2f}",
                        "pharmacist_consult": "true" if rng_orders.random() < 0.3 else "false",
                    },
                )
                writer.add_items(
                    "store_pos.order_items", d, {"store_id": store, "receipt_no": receipt}, items
                )
                truth_orders.append(
                    {
                        "person_id": i,
                        "source": "store_pos",
                        "order_key": f"{store}:{receipt}",
                        "order_date": day_of(d),
                        "status": "completed",
                        "amount_cny": amount,
                    }
                )
            else:
                plat = p.ecom_names[p.ecom_platform[i]]
                order_id = f"{plat[:2].upper()}{order_seq:012d}"
                base = {
                    "platform": plat,
                    "order_id": order_id,
                    "buyer_id": p.buyer_ids[i],
                    "mobile_masked": f"{p.phones[i][:3]}****{p.phones[i][-4:]}"
                    if rng_orders.random() < 0.7
                    else None,
                    "member_mobile": shown_phone(i) if shop_member[i] else None,
                    "order_time": t,
                    "amount_cny": f"{amount:.2f}",
                }
                fate = rng_orders.random()
                if fate < 0.03:
                    writer.add("ecommerce.orders", d, {**base, "status": "cancelled", "updated_at": t})
                    final = "cancelled"
                else:
                    writer.add("ecommerce.orders", d, {**base, "status": "paid", "updated_at": t})
                    done = d + int(rng_orders.integers(2, 7))
                    writer.add(
                        "ecommerce.orders",
                        done,
                        {**base, "status": "completed", "updated_at": _local_time(day_of(done), when)},
                    )
                    final = "completed"
                    if fate < 0.07:
                        back = done + 3
                        writer.add(
                            "ecommerce.orders",
                            back,
                            {**base, "status": "refunded", "updated_at": _local_time(day_of(back), when)},
                        )
                        final = "refunded"
                writer.add_items("ecommerce.order_items", d, {"platform": plat, "order_id": order_id}, items)
                truth_orders.append(
                    {
                        "person_id": i,
                        "source": "ecommerce",
                        "order_key": f"{plat}:{order_id}",
                        "order_date": day_of(d),
                        "status": final,
                        "amount_cny": amount,
                    }
                )
            if not p.repeater[i]:
                break
            first = False
            d += max(5, round(cycle * float(rng_orders.lognormal(0.0, 0.2))))
    _write_walk_in_orders(cfg, n, writer, rng_orders, order_seq)
    return truth_orders


def _write_walk_in_orders(cfg: GenerateConfig, n: int, writer: _Writer, rng_orders, order_seq: int) -> None:
    """Store traffic that no identifier can follow: receipts without a member card."""
    days, categories = cfg.days, list(CATEGORIES)
    for d in range(days):
        for k in range(int(rng_orders.poisson(max(1.0, n / 400)))):
            order_seq += 1
            cat = categories[int(rng_orders.integers(0, len(categories)))]
            store, receipt = f"S{int(rng_orders.integers(0, N_STORES)):03d}", f"R{order_seq:09d}"
            qty, price = int(rng_orders.integers(1, 3)), CATEGORIES[cat][1]
            writer.add(
                "store_pos.orders",
                d,
                {
                    "store_id": store,
                    "receipt_no": receipt,
                    "card_no": None,
                    "order_time": _local_time(cfg.start + timedelta(days=d), 9 * 3600 + 97 * k % 40000),
                    "amount_cny": f"{qty * price:.2f}",
                    "pharmacist_consult": "false",
                },
            )
            items = [(cat, f"SKU-{cat}-1", qty, price)]
            writer.add_items("store_pos.order_items", d, {"store_id": store, "receipt_no": receipt}, items)


def _write_costs(cfg: GenerateConfig, p: _People, writer: _Writer, rng_costs) -> None:
    """The marketing team's daily spend lines: per channel, and per store QR code for WeCom, priced from the
    people each channel brought in that day; a few lines are corrected the next day (a later version)."""
    for d in range(cfg.days):
        today = p.day_of(d)
        lines: list[tuple[str, str | None, float]] = []
        for name, (channel, unit) in ACQUISITION_COST.items():
            acquired = (p.acq_day == d) & (p.acq_name == name)
            if name == "wecom_qr":
                stores, counts = np.unique(p.home_store[acquired], return_counts=True)
                by_code = zip(stores.tolist(), counts.tolist(), strict=True)
                lines += [(channel, f"store_{s:03d}_qr", unit * c) for s, c in by_code]
                continue
            amount = unit * int(acquired.sum())
            if name == "livestream":
                sessions = sum(today.weekday() in weekdays for _, weekdays in LIVESTREAM_DAYS)
                amount += LIVESTREAM_SESSION_COST * sessions
            if amount:
                lines.append((channel, f"ch_{name}", amount))
        for channel, code, amount in lines:
            spent = round(amount * float(rng_costs.lognormal(0.0, 0.15)), 2)
            row = {
                "cost_id": f"MK-{today:%Y%m%d}-{code}",
                "spend_date": today.isoformat(),
                "channel": channel,
                "source_code": code,
                "campaign": f"{channel}-{today:%Y%m}",
                "amount_cny": f"{spent:.2f}",
                "updated_at": _local_time(today, 23 * 3600 + 1800),
            }
            writer.add("marketing.costs", d, row)
            if rng_costs.random() < 0.03:  # finance corrects the line the next day
                corrected = round(spent * float(rng_costs.uniform(0.8, 1.2)), 2)
                writer.add(
                    "marketing.costs",
                    d + 1,
                    {
                        **row,
                        "amount_cny": f"{corrected:.2f}",
                        "updated_at": _local_time(p.day_of(d + 1), 10 * 3600),
                    },
                )


# The staff directory: staff k works at store STAFF_STORES[k % 10]; the first eight are health managers
# (健康管理师), the others shop assistants (导购). On day 30 one of them moves to the next store.
STAFF_STORES = tuple(f"S{s:03d}" for s in range(10))
HEALTH_MANAGERS = 8
STAFF_MOVE = (21, 30)  # (staff k, day)


def _write_staff(cfg: GenerateConfig, writer: _Writer) -> None:
    """The staff directory on the first day, then one move; every other day's file is empty."""

    def row(k: int, day: int, store: str) -> dict:
        return {
            "userid": f"staff{k:03d}",
            "role": "health_manager" if k < HEALTH_MANAGERS else "shop_assistant",
            "store_id": store,
            "active": "true",
            "updated_at": _local_time(cfg.start + timedelta(day), 8 * 3600),
        }

    for k in range(N_STAFF):
        writer.add("wecom.staff", 0, row(k, 0, STAFF_STORES[k % len(STAFF_STORES)]))
    k, day = STAFF_MOVE
    writer.add("wecom.staff", day, row(k, day, STAFF_STORES[(k + 1) % len(STAFF_STORES)]))


def _simulate_days(
    cfg: GenerateConfig, p: _People, writer: _Writer, rng_people, rng_days, rng_camps, on_day
) -> None:
    """Day by day: check-in groups, mini-program visits and livestreams, then write the day's partitions."""
    n, days = p.n, cfg.days
    day_of = p.day_of
    # A check-in group is a camp its members chose to join: mostly the engaged ones, and most of the others
    # drop out within their first weeks (the camps' daily check-in rate stays at 60-90 %).
    engaged = p.engagement > 0.45
    in_group = (p.wecom_day >= 0) & (rng_people.random(n) < np.where(engaged, 0.85, 0.2))
    group_day = np.where(in_group, p.wecom_day + rng_people.geometric(0.3, n), -1)
    drop_day = np.where(
        in_group & ~engaged & (rng_camps.random(n) < 0.9),
        group_day + 2 + rng_camps.geometric(1 / 6, n),
        np.iinfo(np.int64).max,
    )
    checkin_rate = np.where(engaged, rng_people.uniform(0.6, 0.9, n), rng_people.uniform(0.05, 0.35, n))
    chat_ids = np.array(
        [f"wr{s:03d}_{c}" for s, c in zip(p.staff.tolist(), (p.acq_day // 30).tolist(), strict=True)],
        dtype=object,
    )
    topics = np.array(
        [CHECKIN_TOPICS.get(p.categories[k], "daily_walk") for k in p.interest.tolist()], dtype=object
    )
    mp_app = np.array([MP_APPS[list(MP_APPS)[k]] for k in p.mp_platform.tolist()], dtype=object)
    mp_plat = np.array(list(MP_APPS), dtype=object)[p.mp_platform]
    interest_names = np.array(p.categories, dtype=object)[p.interest]
    event_types = np.array(
        ["login", "article_view", "assessment", "coupon_claim", "add_cart", "share"], dtype=object
    )
    event_p = np.array([0.15, 0.45, 0.04, 0.12, 0.14, 0.10])
    ev_counter = 0
    for d in range(days):
        today = day_of(d)
        fade = np.clip((p.churn_day - d) / 21.0, 0.1, 1.0)
        alive = (p.acq_day <= d) & (d < p.churn_day)

        # check-in groups
        member = in_group & (group_day <= d) & alive & (d < drop_day)
        joins = np.flatnonzero(in_group & (group_day == d))
        checks = np.flatnonzero(member & (rng_days.random(n) < checkin_rate * fade))
        talks = np.flatnonzero(member & (rng_days.random(n) < 0.08 * fade))
        churn_leaves = (p.churn_day == d) & (group_day < d) & (d < drop_day) & (rng_days.random(n) < 0.5)
        leaves = np.flatnonzero(in_group & (churn_leaves | ((drop_day == d) & (d < p.churn_day))))
        parts = []
        for idx, etype in ((joins, "join"), (checks, "checkin"), (talks, "message"), (leaves, "leave")):
            if len(idx) == 0:
                continue
            secs = rng_days.integers(6 * 3600, 22 * 3600, len(idx))
            parts.append(
                pl.DataFrame(
                    {
                        "event_id": [f"ge{ev_counter + k:010d}" for k in range(len(idx))],
                        "external_userid": p.ext_ids[idx].tolist(),
                        "chat_id": chat_ids[idx].tolist(),
                        "event_type": [etype] * len(idx),
                        "checkin_topic": topics[idx].tolist() if etype == "checkin" else [None] * len(idx),
                        "event_time": _local_time(today, secs),
                    },
                    schema={c: pl.String for c in BY_NAME["wecom.group_events"].column_names},
                )
            )
            ev_counter += len(idx)
        for frame in parts:
            writer.add_frame("wecom.group_events", d, frame)

        # mini-program visits
        users = (p.mp_day >= 0) & (p.mp_day <= d) & alive
        visitors = np.flatnonzero(users & (rng_days.random(n) < (0.03 + 0.25 * p.engagement) * fade))
        if len(visitors):
            extra = rng_days.poisson(1.2, len(visitors))
            person = np.concatenate([visitors, np.repeat(visitors, extra)])
            etype = np.concatenate(
                [
                    np.full(len(visitors), "visit", dtype=object),
                    rng_days.choice(event_types, size=int(extra.sum()), p=event_p),
                ]
            )
            secs = rng_days.integers(7 * 3600, 23 * 3600, len(person))
            iso = rng_days.random(len(person)) < 0.5  # half the SDK events carry an explicit offset
            times = [
                f"{today.isoformat()}T{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}+08:00"
                if o
                else _local_time(today, float(s))
                for s, o in zip(secs.tolist(), iso.tolist(), strict=True)
            ]
            topic = np.where(np.isin(etype, ["article_view", "assessment"]), interest_names[person], None)
            writer.add_frame(
                "miniprogram.events",
                d,
                pl.DataFrame(
                    {
                        "event_id": [f"me{ev_counter + k:010d}" for k in range(len(person))],
                        "platform": mp_plat[person].tolist(),
                        "app_id": mp_app[person].tolist(),
                        "openid": p.mp_openids[person].tolist(),
                        "event_type": etype.tolist(),
                        "topic": topic.tolist(),
                        "event_time": times,
                    },
                    schema={c: pl.String for c in BY_NAME["miniprogram.events"].column_names},
                ),
            )
            ev_counter += len(person)

        # livestreams
        for plat_index, (plat, weekdays) in enumerate(LIVESTREAM_DAYS):
            if today.weekday() not in weekdays:
                continue
            viewers = np.flatnonzero(
                (p.live_day >= 0)
                & (p.live_day <= d)
                & alive
                & (p.live_platform == plat_index)
                & (rng_days.random(n) < (0.08 + 0.5 * p.engagement) * fade)
            )
            if len(viewers) == 0:
                continue
            join = 19 * 3600 + 1800 + rng_days.integers(0, 1800, len(viewers))
            watch = np.minimum(rng_days.exponential(25 * 60, len(viewers)).astype(int) + 60, 5400)
            has_union = p.shares_unionid[viewers] & (plat == "wechat_channels")
            writer.add_frame(
                "livestream.views",
                d,
                pl.DataFrame(
                    {
                        "session_id": [f"{plat[:2]}-{today.isoformat()}"] * len(viewers),
                        "platform": [plat] * len(viewers),
                        "viewer_openid": p.live_openids[viewers].tolist(),
                        "viewer_unionid": np.where(has_union, p.unionids[viewers], None).tolist(),
                        "join_time": _local_time(today, join.astype(float)),
                        "leave_time": _local_time(today, np.minimum(join + watch, 86399).astype(float)),
                        "comments": rng_days.poisson(p.engagement[viewers] * 2).astype(str).tolist(),
                        "product_clicks": rng_days.poisson(0.6, len(viewers)).astype(str).tolist(),
                    },
                    schema={c: pl.String for c in BY_NAME["livestream.views"].column_names},
                ),
            )
        writer.flush_day(d)
        if on_day is not None:
            on_day(d)


def generate(
    cfg: GenerateConfig, id_key: bytes, on_day: Callable[[int], None] | None = None
) -> GenerateSummary:
    """Write all fourteen landing tables for ``cfg.days`` days starting ``cfg.start`` under ``cfg.out``."""
    seq = np.random.SeedSequence(cfg.seed)
    rng_people, rng_orders, rng_days, rng_dirt, rng_ids = (np.random.default_rng(s) for s in seq.spawn(5))
    # streams added later are spawned after the first five, which keep their draws (and the older bytes)
    rng_costs, rng_cost_dirt, rng_camps, rng_links = (np.random.default_rng(s) for s in seq.spawn(4))
    (rng_staff_dirt,) = (np.random.default_rng(s) for s in seq.spawn(1))
    writer = _Writer(cfg, rng_dirt, {"marketing.costs": rng_cost_dirt, "wecom.staff": rng_staff_dirt})
    people = _draw_people(cfg, rng_people, rng_orders, rng_ids)
    truth_ids = _write_accounts(cfg, people, writer, id_key, rng_people, rng_ids, rng_links)
    truth_orders = _write_orders(cfg, people, writer, rng_orders, rng_links)
    _write_costs(cfg, people, writer, rng_costs)
    _write_staff(cfg, writer)
    _simulate_days(cfg, people, writer, rng_people, rng_days, rng_camps, on_day)
    _write_truth(cfg, people, truth_ids, truth_orders, writer.dirt)
    return GenerateSummary(
        cfg.out, dict(sorted(writer.counts.items())), dict(sorted(writer.dirt.items())), cfg.members
    )


def _write_truth(
    cfg: GenerateConfig, p: _People, truth_ids: list, truth_orders: list[dict], dirt: dict
) -> None:
    folder = cfg.out / "_truth"
    folder.mkdir(parents=True, exist_ok=True)

    def as_date(days: np.ndarray) -> list[date | None]:
        return [cfg.start + timedelta(days=int(x)) if 0 <= x < cfg.days else None for x in days.tolist()]

    pl.DataFrame(
        {
            "person_id": np.arange(p.n),
            "acquired_on": as_date(p.acq_day),
            "acquisition_channel": p.acq_name.tolist(),
            "engagement": p.engagement.round(4),
            "churned_on": as_date(p.churn_day),
            "first_order_on": as_date(p.first_order),
            "repeat_buyer": p.repeater & (p.first_order >= 0),
            "main_interest": np.array(p.categories)[p.interest].tolist(),
        }
    ).write_parquet(folder / "persons.parquet", statistics=False)
    pl.DataFrame(
        truth_ids, schema={"person_id": pl.Int64, "id_type": pl.String, "id_value": pl.String}, orient="row"
    ).unique(maintain_order=True).write_parquet(folder / "identifiers.parquet", statistics=False)
    pl.DataFrame(
        truth_orders,
        schema={
            "person_id": pl.Int64,
            "source": pl.String,
            "order_key": pl.String,
            "order_date": pl.Date,
            "status": pl.String,
            "amount_cny": pl.Float64,
        },
        orient="row",
    ).write_parquet(folder / "orders.parquet", statistics=False)
    config = {"members": cfg.members, "start": cfg.start.isoformat(), "days": cfg.days, "seed": cfg.seed}
    (folder / "config.json").write_text(json.dumps({**config, "dirt_rate": cfg.dirt_rate}, indent=2) + "\n")
    (folder / "dirt.json").write_text(json.dumps(dict(sorted(dirt.items())), indent=2) + "\n")
    (folder / "README.md").write_text(
        "Ground truth of the generated sample (never read by the pipeline):\n"
        "persons.parquet: one row per person, their acquisition, engagement, churn and first order;\n"
        "identifiers.parquet: the person behind every identifier (member_identifiers encoding);\n"
        "orders.parquet: each person's real orders; dirt.json: defects planted per table;\n"
        "config.json: how the sample was generated (devkit.world reads it to react to outreach);\n"
        "outreach.parquet (once devkit.world has reacted): each decision's hidden response.\n"
    )
