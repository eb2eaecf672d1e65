"""The ops API (FastAPI; OpenAPI at /openapi.json) and the web page it serves at /.

Every /api route but /api/health needs ``Authorization: Bearer <token>`` (401 without a valid one; 403 when
the role does not allow the route). Responses carry ``Cache-Control: no-store``: they hold personal data.
The log has one line per request with the route *template*, status and token name — never the path's
values, a query string or a body, so no identifier reaches the log. CORS is closed unless
``MEMBERFLOW_API_CORS_ORIGINS`` lists origins.
"""

import logging
import math
import pathlib
import threading
import time
from collections import defaultdict, deque
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from memberflow.api.access import AccessStore, Principal
from memberflow.api.export import stream_csv
from memberflow.api.models import ModelCatalog
from memberflow.api.reader import BUSY_WAIT_SECONDS, STATUS_ORDER, NotFound, NoWarehouse, Reader
from memberflow.api.staff import staff_router
from memberflow.core.settings import ConfigError, Settings
from memberflow.core.vocab import MODELS, all_labels
from memberflow.outreach.outcomes import NoOutcomesError, UpliftRow, report
from memberflow.outreach.queue import QueueLog
from memberflow.outreach.run import pick_reasons, reasons_model
from memberflow.reports import REPORTS, ReportError, observed_through, read_report
from memberflow.segments import load_segments
from memberflow.transform import latest_landed_day
from memberflow.warehouse import WarehouseBusy

log = logging.getLogger("memberflow.api")
WEB_DIR = pathlib.Path(__file__).parent / "web"
MODEL_NAMES = Literal["churn", "repurchase", "conversion"]
STATUS = Literal["send", "already_sent", "holdout", "suppressed"]
ID_TYPES = Literal[
    "member_id",
    "phone",
    "phone_token",
    "unionid",
    "openid",
    "external_userid",
    "card_no",
    "buyer_id",
    "policy_id",
]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid token"},
    403: {"description": "the token's role may not do this"},
    503: {"description": "the warehouse is being written or not built yet; retry"},
}


class TooManyRequests(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many lookups for this token; retry in {math.ceil(retry_after)} s")
        self.retry_after = retry_after


class Throttle:
    """At most ``per_minute`` calls per key in any sliding minute (per token, in this server process)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.calls: dict[str, deque[float]] = defaultdict(deque)
        self.lock = threading.Lock()

    def check(self, key: str) -> None:
        now = time.monotonic()
        with self.lock:
            calls = self.calls[key]
            while calls and calls[0] <= now - 60:
                calls.popleft()
            if len(calls) >= self.per_minute:
                raise TooManyRequests(calls[0] + 60 - now)
            calls.append(now)


DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


def _day(value: str | None, where: str = "query") -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        # the standard 422 shape, as for any other invalid parameter
        raise RequestValidationError(
            [
                {
                    "loc": (where, "as_of"),
                    "msg": "not a calendar date (YYYY-MM-DD)",
                    "type": "date_from_datetime_parsing",
                }
            ]
        ) from None


DATE_SCHEMA = {"format": "date"}


def day_query(
    as_of: Annotated[
        str,  # noqa: RUF013 - absent is None; plain `str` keeps the date format on the string schema
        Query(
            pattern=DATE_PATTERN,
            json_schema_extra=DATE_SCHEMA,
            description="Day, YYYY-MM-DD; default: the newest day with memberships",
        ),
    ] = None,
) -> date | None:
    """Dates as YYYY-MM-DD only (a lax parser would read ``0`` as 1970-01-01)."""
    return _day(as_of)


def _query_names(dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def strict_query(request: Request) -> None:
    """Reject query parameters a route does not take: a typo (``?stauts=send``) must not silently widen a
    list or an export to every member."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    unknown = sorted(set(request.query_params) - _query_names(dependant))
    if unknown:
        raise RequestValidationError(
            [
                {"loc": ("query", n), "msg": "unknown query parameter", "type": "extra_forbidden"}
                for n in unknown
            ]
        )


Day = Annotated[date | None, Depends(day_query)]


# --- response models ---------------------------------------------------------------------------------------
class Me(BaseModel):
    name: str
    role: str
    staff_id: str | None = None  # staff and health_manager tokens: whose queue they read
    store_id: str | None = None  # store_manager tokens: the store whose staff's queues they read


class TrendPoint(BaseModel):
    as_of: date
    size: int
    holdout: int
    sent: int


class ScoreRange(BaseModel):
    """A model's scores among the segment's members on the day, beside everyone the model scored.
    Deciles: 10 = the top tenth of the model's scored population that day, 1 = the bottom tenth."""

    model: str
    members: int
    min_probability: float
    median_probability: float
    max_probability: float
    min_decile: int
    max_decile: int
    population_mean: float


class SegmentSummary(BaseModel):
    name: str
    description: str = ""  # in English (the library's text when it has one language)
    # the segment's name and description for the page, per language (zh, en): segments.yml's labels
    labels: dict[str, str] = Field(default_factory=dict)
    descriptions: dict[str, str] = Field(default_factory=dict)
    channel: str
    priority: int | None = None
    daily_cap: int | None = None
    holdout_share: float | None = None
    health_based: bool = False
    rank_by: str | None = None
    rank_by_uplift: bool = False  # the cap ranks by the segment's uplift model once one is promoted
    rules: dict[str, Any] = Field(default_factory=dict)
    size: int = 0
    send: int = 0
    already_sent: int = 0
    holdout: int = 0
    suppressed_total: int = 0
    suppressed: dict[str, int] = Field(default_factory=dict)
    delivery: dict[str, int] = Field(default_factory=dict)
    trend: list[TrendPoint] = Field(default_factory=list)
    direction: str = "high"
    # the score ranges of the models the segment's rules or ranking use (segment page only)
    scores: list[ScoreRange] = Field(default_factory=list)
    # why nobody is in it that day (a segment with members: none); the code's meaning: Reader.why_empty
    empty_reason: dict[str, Any] | None = None


class SegmentList(BaseModel):
    as_of: date | None
    dates: list[date]
    segments: list[SegmentSummary]


class MemberRow(BaseModel):
    member_id: str
    status: str
    reason: str | None
    channel: str
    holdout: bool
    health_based: bool
    phone_masked: str | None
    staff_owner: str | None
    acquisition_channel: str | None
    lifecycle_stage: str | None
    funnel_stage: str | None
    value_tier: str | None
    tags: list[str]
    delivery_status: str | None
    scores: dict[str, dict[str, Any]]
    reasons: list[str]


class MemberPage(BaseModel):
    segment: str
    as_of: date
    status: str | None
    total: int
    page: int
    page_size: int
    items: list[MemberRow]


class LookupRequest(BaseModel):
    value: str = Field(min_length=1, max_length=200, description="any identifier, a phone or a member id")
    id_type: ID_TYPES | None = None


class LookupResult(BaseModel):
    member_id: str
    matched_by: str


class AuditRow(BaseModel):
    audit_id: int
    at: str
    token_id: str
    token_name: str
    role: str
    action: str
    segment: str | None
    as_of: str | None
    detail: str | None
    unmasked: bool
    rows: int | None
    state: str
    finished_at: str | None


def clean(value: Any) -> Any:
    """JSON-safe values: NaN/inf become null, decimals floats, containers recursively."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


# --- the app -----------------------------------------------------------------------------------------------
def create_app(settings: Settings, busy_wait: float = BUSY_WAIT_SECONDS) -> FastAPI:
    """The app over one workspace. ``busy_wait``: seconds a request waits for a warehouse writer."""
    store = AccessStore.open(settings)
    reader = Reader(settings, busy_wait)
    lookups = Throttle(settings.api_lookups_per_minute)
    catalog = ModelCatalog(settings)
    bearer = HTTPBearer(auto_error=False)
    export_dir = settings.home / "api" / "spool"
    export_dir.mkdir(parents=True, exist_ok=True)
    for stale in export_dir.glob("*.parquet"):  # left by a server killed mid-export (none is an hour long)
        if time.time() - stale.stat().st_mtime > 3600:
            stale.unlink(missing_ok=True)

    app = FastAPI(
        title="memberflow ops API",
        version="1",
        description="Segments, members and their reasons, exports, models and deliveries for ops staff.",
        docs_url=None,  # Swagger UI loads scripts from a CDN: a page with health data calls nothing out
        redoc_url=None,
    )

    def principal(
        request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Principal:
        who = store.verify(creds.credentials) if creds and creds.scheme.lower() == "bearer" else None
        if who is None:
            raise HTTPException(401, "a valid API token is required", headers={"WWW-Authenticate": "Bearer"})
        request.state.principal = who
        strict_query(request)  # after authentication: a caller without a token learns nothing more than 401
        return who

    def admin(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.is_admin:
            raise HTTPException(403, "this needs the admin role")
        return who

    def office(who: Annotated[Principal, Depends(principal)]) -> Principal:
        """Ops and admin: staff tokens see their own queue and members, store managers their store's."""
        if who.is_staff:
            raise HTTPException(403, "a staff token reads its own queue only (/api/staff/{staff_id}/queue)")
        if who.is_store_manager:
            raise HTTPException(403, "a store manager reads the queues of their store's staff (/api/queues)")
        return who

    Who = Annotated[Principal, Depends(principal)]
    Ops = Annotated[Principal, Depends(office)]
    Admin = Annotated[Principal, Depends(admin)]

    def definitions() -> dict:
        try:
            return {s.name: s for s in load_segments()}
        except ConfigError as exc:
            raise HTTPException(500, f"segment definitions do not load: {exc}") from exc

    # --- middleware and errors ----------------------------------------------------------------------------
    @app.middleware("http")
    async def privacy_headers_and_log(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "(unmatched)")
        who = getattr(request.state, "principal", None)
        log.info(
            "%s %s %s %.0fms %s",
            request.method, template, response.status_code, (time.perf_counter() - started) * 1000,
            who.name if who else "-",
        )  # fmt: skip
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        else:
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
            )
        return response

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(WarehouseBusy)
    async def busy(request: Request, exc: WarehouseBusy):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "30"})

    @app.exception_handler(TooManyRequests)
    async def too_many(request: Request, exc: TooManyRequests):
        return JSONResponse(
            {"detail": str(exc)}, status_code=429, headers={"Retry-After": str(math.ceil(exc.retry_after))}
        )

    @app.exception_handler(NoWarehouse)
    async def no_warehouse(request: Request, exc: NoWarehouse):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "300"})

    origins = list(settings.api_cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )

    # --- routes -------------------------------------------------------------------------------------------
    @app.get("/api/health", tags=["meta"])
    def health(request: Request) -> dict[str, str]:
        """Liveness for load balancers and compose healthchecks; no data, no token."""
        strict_query(request)
        return {"status": "ok"}

    @app.get("/api/me", tags=["meta"], responses=ERRORS)
    def me(who: Who) -> Me:
        return Me(name=who.name, role=who.role, staff_id=who.staff_id, store_id=who.store_id)

    @app.get("/api/segments", tags=["segments"], responses=ERRORS)
    def segments(who: Ops, as_of: Day) -> SegmentList:
        """Every segment with the day's size, suppressed members by reason, sends and a 30-day trend.
        ``as_of`` defaults to the newest day with memberships."""
        defs = definitions()
        with reader.connect() as con:
            dates = reader.dates(con)
            day = as_of or (dates[0] if dates else None)
            counts = reader.segment_counts(con, day) if day else {}
            trends = reader.trend(con, day) if day else {}
            names = list(defs) + sorted(set(counts) - set(defs))
            summaries = [_summary(n, defs.get(n), counts.get(n), trends.get(n, [])) for n in names]
            empty = {s.name: defs[s.name].models for s in summaries if s.size == 0 and s.name in defs}
            reasons = reader.why_empty(con, day, empty)
            for summary in summaries:
                summary.empty_reason = reasons.get(summary.name)
        return SegmentList(as_of=day, dates=dates, segments=summaries)

    @app.get(
        "/api/segments/{segment}", tags=["segments"], responses={**ERRORS, 404: {"description": "unknown"}}
    )
    def segment(who: Ops, segment: str, as_of: Day) -> SegmentSummary:
        defs = definitions()
        with reader.connect() as con:
            day = reader.resolve_date(con, as_of)
            counts = reader.segment_counts(con, day) if day else {}
            trends = reader.trend(con, day, segment) if day else {}
            ranges = reader.score_ranges(con, day, segment, score_models(defs.get(segment))) if day else []
            if segment not in defs and segment not in counts:
                raise NotFound(f"no segment {segment}")
            summary = _summary(segment, defs.get(segment), counts.get(segment), trends.get(segment, []))
            if summary.size == 0 and segment in defs:
                summary.empty_reason = reader.why_empty(con, day, {segment: defs[segment].models})[segment]
        summary.scores = [ScoreRange(**r) for r in ranges]
        return summary

    @app.get(
        "/api/segments/{segment}/members",
        tags=["segments"],
        responses={**ERRORS, 404: {"description": "unknown"}},
    )
    def members(
        who: Ops,
        segment: str,
        as_of: Day,
        status: STATUS | None = None,
        page: Annotated[int, Query(ge=1, le=100_000)] = 1,
        page_size: Annotated[int, Query(ge=1, le=500)] = 50,
        lang: Annotated[Literal["zh", "en"], Query(description="language of the reasons")] = "en",
    ) -> MemberPage:
        """A page of the segment's members for the day: tags, scores, reason sentences, delivery status.
        Order: members to send first, then by the segment's model score."""
        defs = definitions()
        model = reasons_model(defs[segment]) if segment in defs else None
        with reader.connect() as con:
            day = reader.resolve_date(con, as_of)
            if day is None:
                raise NotFound("no segment memberships yet: run a delivery first")
            total, rows = reader.members(
                con, segment, day, status, model, (page - 1) * page_size, page_size, who.sees_health
            )
        if total == 0 and segment not in defs:
            raise NotFound(f"no segment {segment}")
        # a read of member data: one audit row per request (who, which segment and day, how many members)
        store.audit(who, "members_page", len(rows), segment, str(day))
        items = []
        for r in rows:
            key = "reasons_zh" if lang == "zh" else "reasons"
            reasons = pick_reasons({m: s[key] for m, s in r["scores"].items()}, model)
            items.append(
                MemberRow(**{k: v for k, v in r.items() if k in MemberRow.model_fields}, reasons=reasons)
            )
        return MemberPage(
            segment=segment, as_of=day, status=status, total=total, page=page, page_size=page_size,
            items=clean([i.model_dump() for i in items]),
        )  # fmt: skip

    @app.get(
        "/api/segments/{segment}/export.csv",
        tags=["segments"],
        response_class=StreamingResponse,
        responses={
            **ERRORS,
            200: {"content": {"text/csv": {}}, "description": "the members as CSV (UTF-8 with BOM)"},
            404: {"description": "unknown segment or day"},
        },
    )
    def export(
        who: Ops,
        segment: str,
        as_of: Day,
        status: STATUS | None = None,
        unmasked: bool = False,
    ):
        """The segment's members as CSV, streamed. ``unmasked=true`` (admin only) carries plain phones and
        raw ids; every export leaves an audit row, an unmasked one before its first byte."""
        if unmasked and not who.is_admin:
            raise HTTPException(403, "an unmasked export needs the admin role")
        defs = definitions()
        model = reasons_model(defs[segment]) if segment in defs else None
        spool, planned, day = reader.spool_export(
            segment, as_of, status, model, unmasked, export_dir, who.sees_health
        )
        if planned == 0 and segment not in defs:
            spool.unlink(missing_ok=True)
            raise NotFound(f"no segment {segment}")
        audit_id = store.audit_start(
            who, "export", segment, day.isoformat(), f"status={status or 'all'}; planned={planned}", unmasked
        )

        def done(rows: int, completed: bool) -> None:
            store.audit_finish(audit_id, rows, "completed" if completed else "aborted")

        filename = f"{segment}-{day.isoformat()}{'-unmasked' if unmasked else ''}.csv"
        return StreamingResponse(
            stream_csv(settings, spool, unmasked, model, done),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{filename}"',
                "X-Row-Count": str(planned),
            },
        )

    @app.post(
        "/api/members/lookup",
        tags=["members"],
        responses={
            **ERRORS,
            400: {"description": "the body is not JSON"},
            404: {"description": "no match"},
            429: {"description": "too many lookups by this token in the last minute; see Retry-After"},
        },
    )
    def lookup(who: Ops, body: LookupRequest) -> LookupResult:
        """Find a member by any identifier. A phone is normalized and tokenized before the lookup; the
        value is never stored or logged (the audit row records the kind of match only). Each token may
        look up ``MEMBERFLOW_API_LOOKUPS_PER_MINUTE`` (30) members a minute."""
        lookups.check(who.token_id)
        with reader.connect() as con:
            found = reader.lookup(con, body.value, body.id_type, settings.id_key())
        store.audit(who, "lookup", 1 if found else 0, detail=f"id_type={body.id_type or 'any'}")
        if found is None:
            raise NotFound("no member has this identifier")
        return LookupResult(member_id=found[0], matched_by=found[1])

    @app.get(
        "/api/members/{member_id}", tags=["members"], responses={**ERRORS, 404: {"description": "unknown"}}
    )
    def member(who: Who, member_id: str) -> dict[str, Any]:
        """A member's profile: masked identifiers, tag timeline (and the tags holding on the last landed
        day, `tags_as_of`), score history, segments and deliveries. Staff open their own members, store
        managers those of their store's staff. Health tags only for roles that may see health data (a health
        manager: of members who consented). Every request leaves an audit row naming the member."""
        with reader.connect() as con:
            if who.is_staff or who.is_store_manager:
                owner = reader.owner_of(con, member_id)
                mine = {who.staff_id} if who.is_staff else reader.store_staff(con, who.store_id or "")
                if owner is None or owner not in mine:
                    raise HTTPException(403, "not a member of yours: staff open the members they serve")
            health = "all" if who.is_admin else "consented" if who.sees_health else "none"
            profile = clean(reader.profile(con, member_id, latest_landed_day(settings), health))
        store.audit(who, "profile", 1, detail=f"member_id={member_id}")
        return profile

    @app.get("/api/models", tags=["models"], responses=ERRORS)
    def models(who: Ops) -> list[dict[str, Any]]:
        """Champion and challenger of each model: version, promotion decision, metrics, plot names."""
        return clean(catalog.summaries())

    @app.get(
        "/api/models/{model}/versions/{version}/plots/{name}",
        tags=["models"],
        response_class=FileResponse,
        responses={**ERRORS, 200: {"content": {"image/png": {}}}, 404: {"description": "no such plot"}},
    )
    def plot(who: Ops, model: MODEL_NAMES, version: str, name: str):
        path = catalog.plot(model, version, name)
        if path is None:
            raise NotFound("no such plot")
        return FileResponse(path, media_type="image/png")

    @app.get("/api/deliveries", tags=["deliveries"], responses=ERRORS)
    def deliveries(who: Ops, limit: Annotated[int, Query(ge=1, le=500)] = 60) -> list[dict[str, Any]]:
        """The newest delivery runs with their totals."""
        return reader.delivery_reports(limit)

    @app.get(
        "/api/deliveries/{as_of}/{run_id}",
        tags=["deliveries"],
        responses={**ERRORS, 404: {"description": "none"}},
    )
    def delivery(
        who: Ops,
        as_of: Annotated[str, Path(pattern=DATE_PATTERN, json_schema_extra=DATE_SCHEMA)],
        run_id: str,
    ) -> dict[str, Any]:
        """One delivery run's report: sent per channel, suppressed by reason, failures, retries."""
        return clean(reader.delivery_report(_day(as_of, "path"), run_id))

    @app.get("/api/outcomes", tags=["outcomes"], responses={**ERRORS, 404: {"description": "not built"}})
    def outcomes(who: Ops, as_of: Day) -> list[UpliftRow]:
        """Uplift against the holdout per segment, channel and week: each arm's response rate, the uplift
        with its 95 % interval, incremental orders and revenue per 1,000 sends, the smallest uplift the arms
        detect. Counts outcome windows landed by ``as_of`` (default: the last landed day)."""
        day = as_of or latest_landed_day(settings)
        if day is None:
            raise NotFound("nothing is landed yet")
        with reader.connect() as con:
            try:
                return report(con, day)
            except NoOutcomesError as exc:
                raise NotFound(str(exc)) from None

    Lang = Annotated[Literal["zh", "en"], Query(description="language of the labels")]

    @app.get("/api/labels", tags=["meta"], responses=ERRORS)
    def labels(who: Who) -> dict[str, Any]:
        """What ops read for each code the API serves (channels, stages, tiers, interests, categories,
        models, suppression reasons, delivery statuses, WeCom send results, identifier types...), in zh and
        en, and each segment's name: {group: {code: {zh, en}}}. Any signed-in role: labels hold no member
        data, and a staff member's queue is worded with them."""
        out: dict[str, Any] = all_labels()
        segments = definitions().values()
        out["segment"] = {s.name: {lang: s.label_in(lang) for lang in ("zh", "en")} for s in segments}
        return out

    @app.get("/api/reports", tags=["reports"], responses=ERRORS)
    def reports(who: Ops, lang: Lang = "zh") -> dict[str, Any]:
        """The dashboards: each report's name and label, and the last day the built reports count."""
        with reader.connect() as con:
            through = observed_through(con)
        return {
            "observed_through": through,
            "reports": [{"name": r.key, "label": r.label[lang]} for r in REPORTS.values()],
        }

    @app.get(
        "/api/reports/{name}",
        tags=["reports"],
        responses={**ERRORS, 404: {"description": "no such report, or not built yet"}},
    )
    def report_rows(who: Ops, name: str, lang: Lang = "zh") -> dict[str, Any]:
        """One report's rows (the dbt model report_<name>), its columns' labels and units, and the label of
        each code in it (channels, stages, categories...) in ``lang``. The models' documentation says what
        each number counts (docs/reports.md)."""
        with reader.connect() as con:
            try:
                return clean(read_report(con, name, lang))
            except ReportError as exc:
                raise NotFound(str(exc)) from None

    @app.get("/api/audit", tags=["admin"], responses=ERRORS)
    def audit(who: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[AuditRow]:
        """Exports and lookups, newest first (admin only)."""
        return [AuditRow(**r) for r in store.audit_rows(limit)]

    app.include_router(staff_router(reader, store, QueueLog.open(settings), principal, day_query))

    # --- the web page -------------------------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    return app


def score_models(definition) -> list[str]:
    """The models whose scores a segment's rules or ranking use (every model for one that uses none)."""
    if definition is None:
        return list(MODELS)
    return [m for m in MODELS if m in definition.models] or list(MODELS)


def _summary(name: str, definition, counts: dict | None, trend: list[dict]) -> SegmentSummary:
    fields: dict[str, Any] = {"name": name, "channel": (counts or {}).get("channel", "")}
    if definition is not None:
        fields |= {
            "description": definition.description_in("en"),
            "labels": {lang: definition.label_in(lang) for lang in ("zh", "en")},
            "descriptions": {lang: definition.description_in(lang) for lang in ("zh", "en")},
            "channel": definition.channel,
            "priority": definition.priority,
            "daily_cap": definition.daily_cap,
            "holdout_share": definition.holdout,
            "health_based": definition.uses_health_data,
            "rank_by": definition.rank_by,
            "rank_by_uplift": definition.rank_by_uplift,
            "direction": definition.direction,
            "rules": {
                k: v.model_dump(exclude_none=True, by_alias=True) if hasattr(v, "model_dump") else v
                for k, v in definition.when.items()
            },
        }
    if counts:
        fields |= {k: v for k, v in counts.items() if k in SegmentSummary.model_fields}
    return SegmentSummary(**fields, trend=[TrendPoint(**p) for p in trend])


__all__ = ["STATUS_ORDER", "create_app"]
