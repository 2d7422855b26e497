"""The worklist store: reading jobs as worklist rows and study details, reviews, and the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Select, func, select
from sqlalchemy.orm import defer

from pipelines.errors import NotFoundError, ServingError
from serving.auth import Principal
from serving.db import Database
from serving.models import REVIEW_ACTIONS, AuditEvent, Job, Review, utcnow
from serving.queue import SEVERITY_RANK, as_utc

SortKey = Literal["priority", "waiting", "submitted", "finished"]


@dataclass
class WorklistQuery:
    status: list[str] | None = None
    verdict: list[str] | None = None
    severity: list[str] | None = None  # the study's most severe discordance
    submitted_from: datetime | None = None
    submitted_to: datetime | None = None
    sort: SortKey = "priority"
    limit: int = 50
    offset: int = 0


def _iso(dt: datetime | None) -> str | None:
    dt = as_utc(dt)
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def job_summary(job: Job, last_review: Review | None = None) -> dict:
    """A worklist row: no report text, no result body."""
    now = utcnow()
    submitted = as_utc(job.submitted_at)
    end = as_utc(job.finished_at) if job.status in ("done", "failed") and job.finished_at else now
    return {
        "id": job.id, "study_uid": job.study_uid, "source": job.source, "status": job.status,
        "stage": job.stage, "attempts": job.attempts, "verdict": job.verdict, "max_severity": job.max_severity,
        "priority": round(job.priority or 0.0, 3), "n_ai_findings": job.n_ai_findings,
        "n_discordances": job.n_discordances, "submitted_at": _iso(submitted), "finished_at": _iso(job.finished_at),
        "waiting_s": round((now - submitted).total_seconds(), 1) if job.status in ("queued", "running")
        else round((end - submitted).total_seconds(), 1),
        "error": {"code": job.error_code, "detail": job.error_detail} if job.error_code else None,
        "review": {"action": last_review.action, "reviewer": last_review.reviewer,
                   "at": _iso(last_review.created_at)} if last_review else None,
    }


class Store:
    def __init__(self, db: Database):
        self.db = db

    # -- worklist ---------------------------------------------------------------------------------------
    def _filtered(self, q: WorklistQuery, stmt: Select) -> Select:
        if q.status:
            stmt = stmt.where(Job.status.in_(q.status))
        if q.verdict:
            stmt = stmt.where(Job.verdict.in_(q.verdict))
        if q.severity:
            ranks = [SEVERITY_RANK[s] if s in SEVERITY_RANK else 0 for s in q.severity]
            stmt = stmt.where(Job.severity_rank.in_(ranks))
        if q.submitted_from:
            stmt = stmt.where(Job.submitted_at >= q.submitted_from)
        if q.submitted_to:
            stmt = stmt.where(Job.submitted_at < q.submitted_to)
        return stmt

    def worklist(self, q: WorklistQuery) -> dict:
        """Filtered, sorted, paginated rows. ``priority``: most severe discordance first, then the
        pipeline's priority (which grows with waiting), then the longest waiting."""
        order = {
            "priority": (Job.severity_rank.desc(), Job.priority.desc(), Job.submitted_at.asc(), Job.id),
            "waiting": (Job.submitted_at.asc(), Job.id),
            "submitted": (Job.submitted_at.desc(), Job.id),
            "finished": (Job.finished_at.desc(), Job.id),
        }[q.sort]
        with self.db.session() as s:
            total = s.scalar(self._filtered(q, select(func.count()).select_from(Job))) or 0
            rows = self._filtered(q, select(Job).options(defer(Job.result), defer(Job.report_text),
                                                         defer(Job.pacs_store)))
            jobs = s.scalars(rows.order_by(*order).limit(q.limit).offset(q.offset)).all()
            last = self._last_reviews(s, [j.id for j in jobs])
            counts = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        return {"items": [job_summary(j, last.get(j.id)) for j in jobs], "total": int(total),
                "limit": q.limit, "offset": q.offset, "counts": {k: int(v) for k, v in counts.items()}}

    @staticmethod
    def _last_reviews(s, job_ids: list[str]) -> dict[str, Review]:
        if not job_ids:
            return {}
        latest = (select(Review.job_id, func.max(Review.id).label("rid")).where(Review.job_id.in_(job_ids))
                  .group_by(Review.job_id).subquery())
        rows = s.scalars(select(Review).join(latest, Review.id == latest.c.rid)).all()
        return {r.job_id: r for r in rows}

    # -- one study --------------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job:
        with self.db.session() as s:
            job = s.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no study with id {job_id!r}")
        return job

    def study_detail(self, job_id: str) -> dict:
        job = self.get_job(job_id)
        with self.db.session() as s:
            reviews = s.scalars(select(Review).where(Review.job_id == job_id).order_by(Review.id)).all()
        out = job_summary(job, reviews[-1] if reviews else None)
        out["report_text"] = job.report_text
        out["result"] = job.result if job.status == "done" else None
        out["reviews"] = [review_dict(r) for r in reviews]
        out["pacs_store"] = job.pacs_store
        return out

    # -- reviews and audit ------------------------------------------------------------------------------
    def add_review(self, job_id: str, who: Principal, action: str, comment: str | None,
                   finding_id: str | None) -> dict:
        if action not in REVIEW_ACTIONS:
            raise ServingError(f"unknown review action {action!r}", hint=f"use one of {', '.join(REVIEW_ACTIONS)}")
        if action == "comment" and not (comment or "").strip():
            raise ServingError("a comment review needs a non-empty comment")
        now = utcnow()
        with self.db.session(write=True) as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFoundError(f"no study with id {job_id!r}")
            if job.status != "done":
                raise ServingError(f"study {job_id} is {job.status}; only analysed studies can be reviewed")
            if finding_id is not None:
                ids = {f.get("id") for f in (job.result or {}).get("ai_findings", [])}
                ids |= {f.get("id") for f in (job.result or {}).get("report_findings", [])}
                if finding_id not in ids:
                    raise ServingError(f"study {job_id} has no finding {finding_id!r}")
            row = Review(job_id=job_id, action=action, finding_id=finding_id,
                         comment=(comment or "").strip() or None, token_id=who.token_id, reviewer=who.name,
                         created_at=now)
            s.add(row)
            s.flush()
            s.add(AuditEvent(at=now, actor=who.name, token_id=who.token_id, role=who.role, action="review." + action,
                             job_id=job_id, detail={"review_id": row.id, "finding": finding_id}))
            return review_dict(row)

    def reviews(self, job_id: str) -> list[dict]:
        self.get_job(job_id)
        with self.db.session() as s:
            return [review_dict(r) for r in s.scalars(select(Review).where(Review.job_id == job_id).order_by(Review.id))]

    def audit(self, who: Principal, action: str, job_id: str | None = None, detail: dict | None = None) -> None:
        with self.db.session(write=True) as s:
            s.add(AuditEvent(at=utcnow(), actor=who.name, token_id=who.token_id, role=who.role, action=action,
                             job_id=job_id, detail=detail))

    def audit_log(self, *, job_id: str | None = None, actor: str | None = None, action: str | None = None,
                  limit: int = 100, offset: int = 0) -> dict:
        stmt = select(AuditEvent)
        count = select(func.count()).select_from(AuditEvent)
        for col, val in ((AuditEvent.job_id, job_id), (AuditEvent.actor, actor), (AuditEvent.action, action)):
            if val is not None:
                stmt, count = stmt.where(col == val), count.where(col == val)
        with self.db.session() as s:
            total = s.scalar(count) or 0
            rows = s.scalars(stmt.order_by(AuditEvent.id.desc()).limit(limit).offset(offset)).all()
        return {"items": [{"id": r.id, "at": _iso(r.at), "actor": r.actor, "role": r.role, "action": r.action,
                           "job_id": r.job_id, "detail": r.detail} for r in rows],
                "total": int(total), "limit": limit, "offset": offset}


def review_dict(r: Review) -> dict:
    return {"id": r.id, "job_id": r.job_id, "action": r.action, "finding_id": r.finding_id, "comment": r.comment,
            "reviewer": r.reviewer, "at": _iso(r.created_at)}
