"""What the ops API reads: segments, members, profiles and exports, from the warehouse and the workspace.

Every query is parameterized; path and query values never become SQL text. Each request opens its own
read-only DuckDB connection under the warehouse lock in *shared* mode, so requests run side by side, and
waits at most a few seconds for a writer (a build or a scoring run) before answering "busy" (HTTP 503).
Exports spool their rows to a temporary Parquet file first, release the lock, then stream from the file
in batches: a slow download never holds up the pipeline, and memory stays bounded whatever the size.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from memberflow.core.phones import normalize_phone, normalize_token, phone_token
from memberflow.core.settings import Settings
from memberflow.core.vault import partition_files
from memberflow.core.vocab import MODELS
from memberflow.warehouse import WarehouseBusy, table_names, warehouse_lock

TREND_DAYS = 30
BUSY_WAIT_SECONDS = 5.0
EXPORT_BATCH_ROWS = 5_000
STATUS_ORDER = ("send", "already_sent", "holdout", "suppressed")
RUN_ID = re.compile(r"[A-Za-z0-9_.:-]{1,80}")


class NotFound(LookupError):
    """The thing asked for does not exist (HTTP 404); the message says what."""


class NoWarehouse(RuntimeError):
    """Nothing has been built in this workspace yet (HTTP 503)."""


def mask_identifier(id_type: str, value: str | None) -> str | None:
    """What ops may see of an identifier: its shape, not its value (phones come masked from dim_member)."""
    if value is None:
        return None
    if id_type == "phone_token":
        return f"token …{value[-6:]}"
    head, sep, tail = value.rpartition(":")
    core = tail if sep else value
    prefix = f"{head}:" if sep else ""
    if len(core) <= 4:
        return prefix + "*" * len(core)
    keep = 2 if len(core) < 10 else 4
    return f"{prefix}{core[:keep]}{'*' * (len(core) - 2 * keep)}{core[-keep:]}"


def _rows(cursor) -> list[dict]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@dataclass
class Reader:
    settings: Settings
    busy_wait: float = BUSY_WAIT_SECONDS
    memory_limit: str = "256MB"

    def __post_init__(self) -> None:
        self.spill_dir = self.settings.home / "api" / "duckdb_tmp"  # where capped queries spill
        self.spill_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def connect(self) -> Iterator:
        if not self.settings.warehouse_path.exists():
            raise NoWarehouse("nothing is built in this workspace yet: run the pipeline first")
        with (
            warehouse_lock(self.settings, shared=True, timeout=self.busy_wait),
            self._open(duckdb) as con,
        ):
            # Bounded: one thread (the pipeline owns the other core) and a memory cap past which DuckDB
            # spills joins and aggregates to disk instead of growing with the warehouse.
            con.execute(f"set memory_limit = '{self.memory_limit}'")
            con.execute("set threads = 1")
            con.execute(f"set temp_directory = '{self.spill_dir.as_posix()}'")
            yield con

    def _open(self, duckdb):
        """A read-only connection. A writer outside memberflow (dbt run by hand) takes no lock file, so
        DuckDB's own file lock can still refuse us: retry until ``busy_wait`` runs out, then report busy."""
        deadline = time.monotonic() + self.busy_wait
        while True:
            try:
                return duckdb.connect(str(self.settings.warehouse_path), read_only=True)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() >= deadline:
                    raise WarehouseBusy("the warehouse is being written; try again shortly") from None
                time.sleep(0.1)

    # --- helpers -----------------------------------------------------------------------------------------
    @staticmethod
    def _tables(con) -> set[str]:
        return table_names(con)

    def dates(self, con) -> list[date]:
        """Dates that have segment memberships, newest first."""
        if "segment_memberships" not in self._tables(con):
            return []
        rows = con.execute("select distinct as_of from segment_memberships order by as_of desc").fetchall()
        return [r[0] for r in rows]

    def resolve_date(self, con, as_of: date | None) -> date | None:
        """``as_of``, or when it is None the newest day with memberships; None while no delivery has
        written memberships yet (the routes answer 404 then, instead of querying a missing table)."""
        if "segment_memberships" not in self._tables(con):
            return None
        if as_of is not None:
            return as_of
        found = self.dates(con)
        return found[0] if found else None

    # --- segments ----------------------------------------------------------------------------------------
    def segment_counts(self, con, as_of: date) -> dict[str, dict]:
        """Per segment: members assigned on the date, by status, suppressed by reason, sent per the ledger."""
        tables = self._tables(con)
        out: dict[str, dict] = {}
        if "segment_memberships" not in tables:
            return out
        for segment, status, reason, n in con.execute(
            "select segment, status, reason, count(*) from segment_memberships where as_of = $as_of "
            "group by all order by all",
            {"as_of": as_of},
        ).fetchall():
            entry = out.setdefault(segment, _empty_counts())
            entry["size"] += n
            if status == "suppressed":
                entry["suppressed"][reason or "unknown"] = entry["suppressed"].get(reason or "unknown", 0) + n
                entry["suppressed_total"] += n
            elif status in entry:
                entry[status] += n
        if "delivery_ledger" in tables:
            for segment, status, n in con.execute(
                "select segment, status, count(*) from delivery_ledger where as_of = $as_of group by all",
                {"as_of": as_of.isoformat()},
            ).fetchall():
                entry = out.setdefault(segment, _empty_counts())
                entry["delivery"][status] = n
        return out

    def score_ranges(self, con, as_of: date, segment: str, models: list[str]) -> list[dict]:
        """Per model: the probability and decile range of the segment's members on the date, and the mean
        probability of everyone the model scored that day."""
        if not {"segment_memberships", "member_scores"} <= self._tables(con):
            return []
        out = []
        for model in models:
            row = con.execute(
                """
                with scores as (select member_id, probability, decile from member_scores
                                where model = $model and as_of = $as_of)
                select count(*), min(probability), median(probability), max(probability),
                    min(decile), max(decile), (select avg(probability) from scores)
                from segment_memberships inner join scores using (member_id)
                where segment_memberships.as_of = $as_of and segment = $segment
                """,
                {"model": model, "as_of": as_of, "segment": segment},
            ).fetchall()[0]
            if row[0]:
                keys = ("members", "min_probability", "median_probability", "max_probability", "min_decile",
                        "max_decile", "population_mean")  # fmt: skip
                out.append({"model": model, **dict(zip(keys, row, strict=True))})
        return out

    def trend(self, con, as_of: date, segment: str | None = None) -> dict[str, list[dict]]:
        """Per segment, one point per day of the 30 days up to ``as_of``: members assigned and sent."""
        tables = self._tables(con)
        if "segment_memberships" not in tables:
            return {}
        since = as_of - timedelta(days=TREND_DAYS - 1)
        params: dict = {"since": since, "as_of": as_of}
        where = "as_of between $since and $as_of"
        if segment is not None:
            where += " and segment = $segment"
            params["segment"] = segment
        sizes = con.execute(
            f"select segment, as_of, count(*) as size, count(*) filter (where status = 'holdout') as holdout "
            f"from segment_memberships where {where} group by all",
            params,
        ).fetchall()
        sent: dict[tuple[str, str], int] = {}
        if "delivery_ledger" in tables:
            lp = {"since": since.isoformat(), "as_of": as_of.isoformat()} | (
                {"segment": segment} if segment is not None else {}
            )
            for seg, day, n in con.execute(
                "select segment, as_of, count(*) from delivery_ledger where status = 'sent' and "
                f"{where} group by all",
                lp,
            ).fetchall():
                sent[(seg, str(day))] = n
        by_seg: dict[str, dict[date, dict]] = {}
        for seg, day, size, holdout in sizes:
            by_seg.setdefault(seg, {})[day] = {"size": size, "holdout": holdout}
        out: dict[str, list[dict]] = {}
        for seg, days in by_seg.items():
            points = []
            for i in range(TREND_DAYS):
                day = since + timedelta(days=i)
                point = days.get(day, {"size": 0, "holdout": 0})
                points.append({"as_of": day, **point, "sent": sent.get((seg, day.isoformat()), 0)})
            out[seg] = points
        return out

    # --- members of a segment ----------------------------------------------------------------------------
    def _member_query(self, con, status: str | None, score_model: str | None, health: bool = False) -> str:
        """``health``: the reader's role may see health data; without it, health tags stay out."""
        tables = self._tables(con)
        ledger = "delivery_ledger" in tables
        scores = "member_scores" in tables
        status_filter = "and status = $status" if status else ""
        order_model = score_model if (score_model in MODELS and scores) else None
        rank = (
            f"(select max(probability) from member_scores as s where s.member_id = m.member_id "
            f"and s.as_of = m.as_of and s.model = '{order_model}')"
            if order_model
            else "null"
        )
        return f"""
            with m as (
                select * from segment_memberships
                where as_of = $as_of and segment = $segment {status_filter}
            )
            select m.member_id, m.as_of, m.segment, m.channel, m.status, m.reason, m.holdout, m.health_based,
                d.phone_masked, d.staff_owner, d.acquisition_channel,
                f.lifecycle_stage, f.funnel_stage, f.value_tier,
                (select list(t.tag_group || ':' || t.tag_value order by t.tag_group, t.tag_value)
                 from member_tags as t where t.member_id = m.member_id and t.valid_from <= m.as_of
                   and (t.valid_to is null or t.valid_to > m.as_of)
                   {"" if health else "and not t.health_related"}) as tags,
                {
            "(select l.status from delivery_ledger as l where l.idempotency_key = m.idempotency_key)"
            if ledger
            else "null"
        } as delivery_status,
                {rank} as rank_value
            from m
            left join dim_member as d using (member_id)
            left join member_features as f on f.member_id = m.member_id and f.as_of_date = m.as_of
            order by case m.status when 'send' then 0 when 'already_sent' then 1 when 'holdout' then 2
                     else 3 end, rank_value desc nulls last, m.member_id
        """

    def scores_for(self, con, as_of: date, member_ids: list[str]) -> dict[str, dict]:
        if not member_ids or "member_scores" not in self._tables(con):
            return {}
        out: dict[str, dict] = {}
        for member_id, model, probability, decile, reasons, reasons_zh in con.execute(
            f"select member_id, model, probability, decile, reasons, {self._reasons_zh(con)} "
            "from member_scores where as_of = $as_of and list_contains($ids, member_id)",
            {"as_of": as_of, "ids": member_ids},
        ).fetchall():
            out.setdefault(member_id, {})[model] = {
                "probability": probability,
                "decile": decile,
                "reasons": list(reasons or []),
                "reasons_zh": list(reasons_zh or reasons or []),
            }
        return out

    @staticmethod
    def _reasons_zh(con) -> str:
        """The Chinese reasons column of member_scores; the English one on a warehouse scored before it."""
        columns = {r[0] for r in con.execute("describe member_scores").fetchall()}
        return "reasons_zh" if "reasons_zh" in columns else "reasons as reasons_zh"

    def members(
        self,
        con,
        segment: str,
        as_of: date,
        status: str | None,
        score_model: str | None,
        offset: int,
        limit: int,
        health: bool = False,
    ) -> tuple[int, list[dict]]:
        params: dict = {"as_of": as_of, "segment": segment}
        if status:
            params["status"] = status
        total = con.execute(
            "select count(*) from segment_memberships where as_of = $as_of and segment = $segment"
            + (" and status = $status" if status else ""),
            params,
        ).fetchone()[0]
        sql = self._member_query(con, status, score_model, health) + " limit $limit offset $offset"
        rows = _rows(con.execute(sql, params | {"limit": limit, "offset": offset}))
        scores = self.scores_for(con, as_of, [r["member_id"] for r in rows])
        for r in rows:
            r["scores"] = scores.get(r["member_id"], {})
            r["tags"] = list(r["tags"] or [])
            r.pop("rank_value", None)
        return total, rows

    def spool_export(
        self,
        segment: str,
        as_of: date | None,
        status: str | None,
        score_model: str | None,
        unmasked: bool,
        folder: Path,
        health: bool = False,
    ) -> tuple[Path, int, date]:
        """Write the segment's members (with scores, reasons and, when ``unmasked``, the sealed phone and
        raw ids) to a Parquet file in batches; returns the file, its row count and the day (``as_of``, or
        the newest day with memberships)."""
        path = Path(tempfile.mkstemp(suffix=".parquet", dir=folder)[1])
        try:
            return path, *self._spool(path, segment, as_of, status, score_model, unmasked, health)
        except BaseException:
            path.unlink(missing_ok=True)  # nothing half-written stays behind
            raise

    def _spool(
        self,
        path: Path,
        segment: str,
        as_of: date | None,
        status: str | None,
        score_model: str | None,
        unmasked: bool,
        health: bool,
    ) -> tuple[int, date]:
        with self.connect() as con:
            as_of = self.resolve_date(con, as_of)
            if as_of is None:
                raise NotFound("no segment memberships yet: run a delivery first")
            base = self._member_query(con, status, score_model, health)
            score_cols = ""
            if "member_scores" in self._tables(con):
                score_cols = ", " + ", ".join(
                    f"(select to_json(struct_pack(p := s.probability, d := s.decile, r := s.reasons)) "
                    f"from member_scores as s where s.member_id = b.member_id and s.as_of = b.as_of "
                    f"and s.model = '{m}') as score_{m}"
                    for m in MODELS
                )
            extra = ""
            joins = ""
            if unmasked:
                vault_files = [str(p) for p in partition_files(self.settings.vault_dir)]
                extra = ", ids.phone_token, ids.unionid, ids.external_userid"
                joins = """
                    left join (
                        select member_id,
                            min(id_value) filter (where id_type = 'phone_token') as phone_token,
                            min(id_value) filter (where id_type = 'unionid') as unionid,
                            min(id_value) filter (where id_type = 'external_userid') as external_userid
                        from member_identifiers group by member_id
                    ) as ids using (member_id)
                """
                if vault_files:
                    extra += ", vault.phone_sealed"
                    joins += """
                        left join (
                            select phone_token, last(phone_sealed order by filename) as phone_sealed
                            from read_parquet($vault, filename = true) group by phone_token
                        ) as vault on vault.phone_token = ids.phone_token
                    """
            params: dict = {"as_of": as_of, "segment": segment}
            if status:
                params["status"] = status
            if unmasked and "vault.phone_sealed" in extra:
                params["vault"] = vault_files
            sql = f"select b.* exclude (rank_value){score_cols}{extra} from ({base}) as b {joins}"
            reader = con.sql(sql, params=params).to_arrow_reader(EXPORT_BATCH_ROWS)
            rows = 0
            writer = None
            try:
                for batch in reader:
                    if writer is None:
                        writer = pq.ParquetWriter(path, batch.schema)
                    writer.write_table(pa.Table.from_batches([batch]))
                    rows += batch.num_rows
                if writer is None:
                    pq.write_table(reader.schema.empty_table(), path)
            finally:
                if writer is not None:
                    writer.close()
        return rows, as_of

    # --- members -----------------------------------------------------------------------------------------
    def lookup(self, con, value: str, id_type: str | None, key: bytes) -> tuple[str, str] | None:
        """(member_id, how it matched) for any identifier, a phone (tokenized first) or a member id."""
        value = value.strip()
        if not value:
            return None
        if id_type in (None, "member_id"):
            row = con.execute(
                "select member_id from dim_member where member_id = $v", {"v": value}
            ).fetchone()
            if row:
                return row[0], "member_id"
            row = con.execute(
                "select member_id from member_id_history where retired_member_id = $v "
                "order by changed_on desc limit 1",
                {"v": value},
            ).fetchone()
            if row:
                return row[0], "retired_member_id"
        if id_type in (None, "phone", "phone_token"):
            phone = normalize_phone(value)
            token = phone_token(phone, key) if phone else normalize_token(value)
            if token:
                row = con.execute(
                    "select member_id from member_identifiers "
                    "where id_type = 'phone_token' and id_value = $t",
                    {"t": token},
                ).fetchone()
                if row:
                    return row[0], "phone" if phone else "phone_token"
                if phone:
                    return None
        type_filter = (
            "and id_type = $type" if id_type not in (None, "phone", "phone_token", "member_id") else ""
        )
        params = {"v": value} | ({"type": id_type} if type_filter else {})
        row = con.execute(
            "select member_id, id_type from member_identifiers "
            "where (id_value = $v or ends_with(id_value, ':' || $v)) and id_type <> 'phone_token' "
            f"{type_filter} "
            "order by id_value = $v desc limit 1",
            params,
        ).fetchone()
        return (row[0], row[1]) if row else None

    def profile(self, con, member_id: str, today: date | None, health: str = "all") -> dict:
        """``today``: the last landed day. Tags are validity ranges, some projected past it (an active
        member turns dormant 15 days after the last activity unless they come back): the current tags are
        those that hold on ``today``. ``health``: which health tags the reader sees: ``all`` (admin),
        ``consented`` (a health manager: only of a member who gave health-data consent) or ``none``; the
        profile says how many it withheld (``health_tags_withheld``)."""
        tables = self._tables(con)

        def member_rows(sql: str, table: str | None = None) -> list[dict]:
            """Rows of a member-keyed query; none when its (optional, Python-written) table is missing."""
            if table is not None and table not in tables:
                return []
            return _rows(con.execute(sql, {"m": member_id}))

        found = member_rows("select * from dim_member where member_id = $m")
        if not found:
            raise NotFound(f"no member {member_id}")
        member = found[0]
        identifiers = [
            {
                "id_type": "phone" if r["id_type"] == "phone_token" else r["id_type"],
                "value": mask_identifier(r["id_type"], r["id_value"]),
                "first_seen_on": r["first_seen_on"],
            }
            for r in member_rows(
                "select id_type, id_value, first_seen_on from member_identifiers where member_id = $m "
                "order by id_type, first_seen_on"
            )
        ]
        retired = [
            r["retired_member_id"]
            for r in member_rows(
                "select retired_member_id from member_id_history "
                "where member_id = $m and retired_member_id <> $m"
            )
        ]
        tags = member_rows(
            "select tag_group, tag_value, valid_from, valid_to, health_related from member_tags "
            "where member_id = $m order by valid_from, tag_group, tag_value"
        )
        scores = member_rows(
            "select as_of, model, probability, decile, reasons, model_version, "
            f"{self._reasons_zh(con) if 'member_scores' in self._tables(con) else 'null as reasons_zh'} "
            "from member_scores where member_id = $m order by as_of, model",
            "member_scores",
        )
        features = member_rows(
            "select * from member_features where member_id = $m order by as_of_date desc limit 1"
        )
        segments = member_rows(
            "select as_of, segment, channel, status, reason from segment_memberships "
            "where member_id = $m order by as_of desc limit 90",
            "segment_memberships",
        )
        deliveries = member_rows(
            "select as_of, segment, channel, status, attempts, error_class, sent_at from delivery_ledger "
            "where member_id = $m order by as_of desc, segment",
            "delivery_ledger",
        )
        for s in scores:
            s["reasons"] = list(s["reasons"] or [])
            s["reasons_zh"] = list(s["reasons_zh"] or s["reasons"])
        member["channels_used"] = list(member.get("channels_used") or [])
        shown = health == "all" or (health == "consented" and bool(member.get("health_data_consent")))
        withheld = 0 if shown else sum(1 for t in tags if t["health_related"])
        tags = tags if shown else [t for t in tags if not t["health_related"]]
        return {
            "member": member,
            "identifiers": identifiers,
            "retired_member_ids": retired,
            "tags": tags,
            "health_tags_withheld": withheld,
            "tags_as_of": today,
            "current_tags": [t for t in tags if _holds_on(t, today)],
            "scores": scores,
            "features": features[0] if features else {},
            "segments": segments,
            "deliveries": deliveries,
        }

    # --- the organisation: stores and their staff ---------------------------------------------------------
    def store_staff(self, con, store_id: str) -> set[str]:
        """The active staff of a store in the staff directory (``dim_staff``); none before it is built."""
        if "dim_staff" not in self._tables(con):
            return set()
        rows = con.execute(
            "select staff_id from dim_staff where store_id = ? and is_active", [store_id]
        ).fetchall()
        return {r[0] for r in rows}

    def staff_directory(self, con) -> dict[str, dict[str, str | None]]:
        """staff id -> their role and store (``dim_staff``); empty before the directory is built."""
        if "dim_staff" not in self._tables(con):
            return {}
        rows = con.execute("select staff_id, staff_role, store_id from dim_staff").fetchall()
        return {r[0]: {"staff_role": r[1], "store_id": r[2]} for r in rows}

    def owner_of(self, con, member_id: str) -> str | None:
        """The staff member who owns a member's WeCom relationship (``dim_member.staff_owner``)."""
        found = con.execute("select staff_owner from dim_member where member_id = ?", [member_id]).fetchall()
        return found[0][0] if found else None

    # --- delivery reports --------------------------------------------------------------------------------
    def delivery_reports(self, limit: int = 60) -> list[dict]:
        folder = self.settings.reports_dir / "delivery"
        files = sorted(folder.glob("*/*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
        out = []
        for path in files:
            try:
                report = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            out.append(
                {
                    "as_of": report.get("as_of"),
                    "run_id": report.get("run_id"),
                    "dry_run": report.get("dry_run", False),
                    "started_at": report.get("started_at"),
                    "finished_at": report.get("finished_at"),
                    "sent": report.get("sent", 0),
                    "failed": sum((report.get("failed") or {}).values()),
                    "suppressed": sum((report.get("suppressed") or {}).values()),
                    "holdout": report.get("holdout", 0),
                }
            )
        return out

    def why_empty(self, con, as_of: date | None, segments: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        """Why each of ``segments`` (name -> the models it uses) has nobody on a day, as a code the page
        words: ``paused`` (a model it uses was paused by live monitoring), ``no_scores`` (a model it uses
        has no scores that day: no champion, or not scored yet), ``not_planned`` (no delivery run planned
        that day), ``taken`` (the members it matched went to segments of higher priority) or ``no_match``
        (its rules matched nobody). The day's plan and its scored models are read once for all of them."""
        if as_of is None:
            return {name: {"code": "not_planned"} for name in segments}
        plan = self._planned(as_of)
        scored = (
            {
                r[0]
                for r in con.execute(
                    "select distinct model from member_scores where as_of = ?", [as_of]
                ).fetchall()
            }
            if "member_scores" in self._tables(con)
            else set()
        )
        out: dict[str, dict[str, Any]] = {}
        for name, models in segments.items():
            planned = plan.get(name)
            unscored = [m for m in models if m not in scored]
            if planned and planned.get("paused"):
                paused = [m for m in models if m in planned["paused"]] or models
                out[name] = {
                    "code": "paused",
                    "model": paused[0] if paused else None,
                    "detail": planned["paused"],
                }
            elif unscored:
                out[name] = {"code": "no_scores", "model": unscored[0]}
            elif planned is None:
                out[name] = {"code": "not_planned"}
            elif planned.get("matched", 0) > 0:
                out[name] = {"code": "taken", "matched": planned["matched"]}
            else:
                out[name] = {"code": "no_match"}
        return out

    def _planned(self, as_of: date) -> dict[str, dict]:
        """The segments' plan of the day's newest delivery run (its report's ``segments``)."""
        runs = sorted(
            (self.settings.reports_dir / "delivery" / as_of.isoformat()).glob("*.json"),
            key=lambda p: p.stat().st_mtime,
        )
        for path in reversed(runs):
            try:
                return json.loads(path.read_text(encoding="utf-8")).get("segments") or {}
            except (OSError, ValueError):
                continue
        return {}

    def delivery_report(self, as_of: date, run_id: str) -> dict:
        if not RUN_ID.fullmatch(run_id):
            raise NotFound("no such delivery run")
        path = self.settings.reports_dir / "delivery" / as_of.isoformat() / f"{run_id}.json"
        if not path.is_file():
            raise NotFound(f"no delivery report {as_of.isoformat()}/{run_id}")
        report = json.loads(path.read_text(encoding="utf-8"))
        report.pop("report_path", None)
        return report


def _holds_on(tag: dict, day: date | None) -> bool:
    """A tag's range [valid_from, valid_to) covers ``day`` (no day: the ranges still open)."""
    if day is None:
        return tag["valid_to"] is None
    return tag["valid_from"] <= day and (tag["valid_to"] is None or tag["valid_to"] > day)


def _empty_counts() -> dict:
    return {
        "size": 0,
        "send": 0,
        "already_sent": 0,
        "holdout": 0,
        "suppressed_total": 0,
        "suppressed": {},
        "delivery": {},
    }
