"""The staff routes of the ops API: a staff member's daily queue, marking its items, completion per staff.

A staff or health_manager token reads and marks its own queue only; ops and admin read every queue (health
details: health_manager and admin only, and only for members who consented) and the completion figures.
"""

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from memberflow.api.access import AccessStore, Principal
from memberflow.api.reader import NotFound, Reader
from memberflow.outreach.queue import (
    SKIP_REASONS,
    NoQueue,
    QueueActionError,
    QueueLog,
    completion,
    queue_days,
    queue_item,
    read_queue,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid token"},
    403: {"description": "the token's role may not do this"},
    503: {"description": "the warehouse is being written or not built yet; retry"},
}


class Touch(BaseModel):
    as_of: date | str
    segment: str
    channel: str
    status: str


class Due(BaseModel):
    product: str | None = None
    category: str | None = None
    in_days: int | None = None
    withheld: str | None = None  # why the product is not shown (health data)


class QueueItem(BaseModel):
    position: int
    item_id: str
    member_id: str
    phone_masked: str | None
    segment: str
    segment_label: str  # in the language asked for (segments.yml's label)
    segment_description: str | None
    message: str
    expected_value: float | None
    propensity: float | None
    propensity_basis: str | None
    order_value: float | None
    reasons: list[str]
    due: Due | None
    programme: str | None
    lifecycle_stage: str | None
    value_tier: str | None
    script: str | None
    health_details: bool
    wecom_status: str | None = Field(description="the WeCom task: pending, sent (created), failed")
    wecom_error: str | None
    wecom_result: Literal["waiting", "sent", "not_a_contact", "wecom_daily_limit"] | None = Field(
        default=None, description="what WeCom last said became of the message (memberflow queue read-back)"
    )
    wecom_sent_at: str | None = Field(default=None, description="when the staff member sent it in WeCom")
    last_touches: list[Touch]
    state: Literal["open", "done", "skipped"]
    skip_reason: str | None
    note: str | None
    marked_at: str | None
    marked_by: str | None


class StaffQueue(BaseModel):
    staff_id: str
    as_of: date
    dates: list[date]
    total: int
    open: int
    done: int
    skipped: int
    items: list[QueueItem]


class MarkRequest(BaseModel):
    item_id: str = Field(min_length=1, max_length=300, description="the item's item_id from the queue")
    action: Literal["done", "skipped"]
    reason: Literal[SKIP_REASONS] | None = Field(  # type: ignore[valid-type]
        default=None, description="why it was skipped (required for a skip)"
    )
    note: str | None = Field(default=None, max_length=500)


class MarkResult(BaseModel):
    item_id: str
    state: str
    skip_reason: str | None
    note: str | None
    marked_at: str
    marked_by: str


class Completion(BaseModel):
    key: str
    staff_role: str | None = Field(default=None, description="per staff: their role in the staff directory")
    store_id: str | None = Field(default=None, description="per staff: their store in the staff directory")
    queued: int
    done: int
    skipped: int
    open: int
    completion: float


class CompletionReport(BaseModel):
    as_of: date | None
    by_staff: list[Completion]
    by_segment: list[Completion]


def staff_router(reader: Reader, store: AccessStore, log: QueueLog, who_dep, day_dep) -> APIRouter:
    router = APIRouter(tags=["staff"])
    Who = Annotated[Principal, Depends(who_dep)]
    Day = Annotated[date | None, Depends(day_dep)]

    def own(who: Principal, staff_id: str, con) -> None:
        if who.is_staff and who.staff_id != staff_id:
            raise HTTPException(403, "a staff token reads and marks its own queue only")
        if who.is_store_manager and staff_id not in reader.store_staff(con, who.store_id or ""):
            raise HTTPException(403, "a store manager reads the queues of their own store's staff only")

    def manager(who: Annotated[Principal, Depends(who_dep)]) -> Principal:
        if who.is_staff:
            raise HTTPException(403, "a staff token reads its own queue only (/api/staff/{staff_id}/queue)")
        return who

    Manager = Annotated[Principal, Depends(manager)]

    @router.get(
        "/api/staff/{staff_id}/queue",
        responses={**ERRORS, 404: {"description": "no queue for them that day"}},
    )
    def queue(
        who: Who,
        staff_id: str,
        as_of: Day,
        lang: Annotated[Literal["zh", "en"], Query(description="language of the scripts")] = "zh",
    ) -> StaffQueue:
        """A staff member's 1-on-1 queue of the day (default: the newest day with queues), best expected
        value first: each member with the reason, the product or programme due, the last touches, a
        suggested script and the WeCom task's status. Health details only for roles that may see them and
        members who consented. Staff read their own queue, store managers those of their store's staff.
        Every read leaves an audit row."""
        with reader.connect() as con:
            own(who, staff_id, con)
            try:
                body = read_queue(con, log, staff_id, as_of, lang, who.sees_health)
            except NoQueue as exc:
                raise NotFound(str(exc)) from None
        store.audit(who, "queue", body["total"], as_of=str(body["as_of"]), detail=f"staff_id={staff_id}")
        return StaffQueue(**body)

    @router.post(
        "/api/staff/{staff_id}/queue/marks",
        responses={
            **ERRORS,
            400: {"description": "the body is not JSON"},
            404: {"description": "not an item of their queue"},
            422: {"description": "bad mark"},
        },
    )
    def mark(who: Who, staff_id: str, body: MarkRequest) -> MarkResult:
        """Mark an item of one's own queue done, or skipped with a reason (``other`` needs a note). Every mark
        is kept; the latest is the item's state."""
        if not who.is_staff:
            raise HTTPException(403, "only the staff member the queue belongs to marks its items")
        with reader.connect() as con:
            own(who, staff_id, con)
            item = queue_item(con, staff_id, body.item_id)
        if item is None:
            raise NotFound("no such item in this staff member's queue")
        try:
            done = log.mark(item, body.action, who.name, who.role, body.reason, body.note)
        except QueueActionError as exc:
            raise HTTPException(422, str(exc)) from None
        return MarkResult(
            item_id=body.item_id, state=done.action, skip_reason=done.reason, note=done.note,
            marked_at=done.at, marked_by=done.actor,
        )  # fmt: skip

    @router.get("/api/queues", responses=ERRORS)
    def queues(who: Manager, as_of: Day) -> CompletionReport:
        """Completion of the day's queues (default: the newest day) per staff member and per segment:
        queued, done, skipped, still open. A store manager sees their store's staff only."""
        with reader.connect() as con:
            days = queue_days(con)
            day = as_of or (days[0] if days else None)
            staff = reader.store_staff(con, who.store_id or "") if who.is_store_manager else None
            found = completion(con, log, day, staff) if day else {"by_staff": [], "by_segment": []}
            directory = reader.staff_directory(con)
        return CompletionReport(
            as_of=day,
            by_staff=[
                Completion(key=(k := r.pop("staff_owner")), **directory.get(k, {}), **r)
                for r in found["by_staff"]
            ],
            by_segment=[Completion(key=r.pop("segment"), **r) for r in found["by_segment"]],
        )

    return router
