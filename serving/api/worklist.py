"""``GET /worklist``: studies filtered by status, verdict, severity and date, sorted, paginated."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from serving.api.deps import Reader, StoreDep
from serving.store import WorklistQuery

router = APIRouter(tags=["worklist"])

Status = Literal["queued", "running", "done", "failed"]
Verdict = Literal["discordant", "concordant", "indeterminate"]
Severity = Literal["major", "minor", "info", "none"]


@router.get("/worklist", summary="Studies by priority (most severe discordance, then priority, then waiting)")
def worklist(
    who: Reader,
    store: StoreDep,
    status: Annotated[list[Status] | None, Query(description="repeat to allow several")] = None,
    verdict: Annotated[list[Verdict] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query(description="the study's most severe discordance")] = None,
    submitted_from: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    submitted_to: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    sort: Annotated[Literal["priority", "waiting", "submitted", "finished"], Query()] = "priority",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict:
    q = WorklistQuery(status=status, verdict=verdict, severity=severity, submitted_from=submitted_from,
                      submitted_to=submitted_to, sort=sort, limit=limit, offset=offset)
    page = store.worklist(q)
    store.audit(who, "worklist.view", None, {"n": len(page["items"]), "offset": offset})
    return page
