"""A durable job queue in the worklist database, with leases.

* ``enqueue`` writes the job (and its audit event) in one transaction before the API answers 202; the
  same study UID with the same report (SHA-256 of the normalised text) is one job.
* ``claim`` takes the oldest ready job with a conditional UPDATE (so two workers never hold one job),
  counting a try and setting a lease; a job whose lease expired (its worker died) is claimable again.
* ``heartbeat`` renews the lease while the worker is alive; ``complete`` and ``fail`` succeed only while
  the caller still holds the lease, so a result is written exactly once, in one transaction.
* A job that has used ``max_attempts`` tries ends ``failed`` with the reason of its last try.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from pipelines.errors import QueueFullError
from serving.db import Database
from serving.models import AuditEvent, Job, utcnow

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
SEVERITY_RANK = {"major": 3, "minor": 2, "info": 1}


def normalise_report(text: str) -> str:
    return "\n".join(" ".join(line.split()) for line in text.strip().splitlines()).strip()


def report_sha256(text: str) -> str:
    return hashlib.sha256(normalise_report(text).encode("utf-8")).hexdigest()


def idempotency_key(study_uid: str, report_hash: str) -> str:
    return hashlib.sha256(f"{study_uid}\x00{report_hash}".encode()).hexdigest()


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were written in UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@dataclass
class Enqueued:
    id: str
    created: bool  # False: the same study and report was already known


@dataclass
class Claimed:
    """A job taken by a worker for one try."""

    id: str
    attempt: int
    study_uid: str
    source: str
    report_text: str
    submitted_at: datetime
    max_attempts: int


class JobQueue:
    def __init__(self, db: Database, *, max_queue: int = 200, max_attempts: int = 3, lease_s: float = 300.0,
                 retry_backoff_s: float = 5.0):
        self.db = db
        self.max_queue = max_queue
        self.max_attempts = max_attempts
        self.lease_s = lease_s
        self.retry_backoff_s = retry_backoff_s

    # -- intake -----------------------------------------------------------------------------------------
    def find(self, study_uid: str, report_text: str) -> str | None:
        key = idempotency_key(study_uid, report_sha256(report_text))
        with self.db.session() as s:
            return s.scalar(select(Job.id).where(Job.idempotency_key == key))

    def active_count(self) -> int:
        with self.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(Job).where(Job.status.in_(ACTIVE))) or 0)

    def check_capacity(self) -> None:
        n = self.active_count()
        if n >= self.max_queue:
            raise QueueFullError(f"the queue is full ({n} studies waiting or running, limit {self.max_queue})",
                                 hint="retry later (see the Retry-After header)")

    def enqueue(self, *, study_uid: str, report_text: str, source: str, submitted_by: int | None,
                actor: str = "system", job_id: str | None = None) -> Enqueued:
        """Store a new job, or return the existing one for the same study and report.

        A job that had failed is queued again with fresh tries when it is sent again.
        """
        rhash = report_sha256(report_text)
        key = idempotency_key(study_uid, rhash)
        job_id = job_id or str(uuid.uuid4())
        now = utcnow()
        try:
            with self.db.session(write=True) as s:
                existing = s.scalar(select(Job).where(Job.idempotency_key == key))
                if existing is not None:
                    if existing.status == "failed":
                        existing.status, existing.attempts, existing.not_before = "queued", 0, None
                        existing.error_code = existing.error_detail = None
                        existing.lease_owner = existing.lease_expires_at = None
                        s.add(AuditEvent(at=now, actor=actor, token_id=submitted_by, action="job.requeue",
                                         job_id=existing.id))
                    else:
                        s.add(AuditEvent(at=now, actor=actor, token_id=submitted_by, action="job.duplicate",
                                         job_id=existing.id))
                    return Enqueued(existing.id, False)
                active = s.scalar(select(func.count()).select_from(Job).where(Job.status.in_(ACTIVE))) or 0
                if active >= self.max_queue:
                    raise QueueFullError(f"the queue is full ({active} studies waiting or running, "
                                         f"limit {self.max_queue})", hint="retry later (see the Retry-After header)")
                s.add(Job(id=job_id, idempotency_key=key, study_uid=study_uid, report_sha256=rhash,
                          report_text=report_text, source=source, status="queued", attempts=0,
                          max_attempts=self.max_attempts, submitted_by=submitted_by, submitted_at=now,
                          severity_rank=0, priority=0.0))
                s.add(AuditEvent(at=now, actor=actor, token_id=submitted_by, action="job.submit", job_id=job_id,
                                 detail={"source": source}))
        except IntegrityError:  # the same study and report raced in from another request
            existing_id = self.find(study_uid, report_text)
            if existing_id is None:
                raise
            return Enqueued(existing_id, False)
        log.info("job %s queued (%s)", job_id, source)
        return Enqueued(job_id, True)

    # -- workers ----------------------------------------------------------------------------------------
    def _expire_exhausted(self, s, now: datetime) -> None:
        """Jobs whose worker died on their last allowed try end failed, with that reason."""
        rows = s.scalars(select(Job).where(Job.status == "running", Job.lease_expires_at < now,
                                           Job.attempts >= Job.max_attempts)).all()
        for job in rows:
            job.status, job.finished_at = "failed", now
            job.error_code = "worker_lost"
            job.error_detail = (f"the worker stopped responding during try {job.attempts} of {job.max_attempts} "
                                f"(lease expired); no more tries")
            job.lease_owner = job.lease_expires_at = None
            s.add(AuditEvent(at=now, actor="system", action="job.failed", job_id=job.id,
                             detail={"error": job.error_code, "attempts": job.attempts}))
            log.warning("job %s failed: worker lost on its last try", job.id)

    def claim(self, worker_id: str) -> Claimed | None:
        """Take the next ready job for one try, or None when there is nothing to do."""
        for _ in range(5):  # another worker may win the same row (PostgreSQL): look again
            got = self._claim_once(worker_id)
            if got is not False:
                return got
        return None

    def _claim_once(self, worker_id: str) -> "Claimed | None | bool":
        now = utcnow()
        ready = or_(
            and_(Job.status == "queued", or_(Job.not_before.is_(None), Job.not_before <= now)),
            and_(Job.status == "running", Job.lease_expires_at < now),
        )
        with self.db.session(write=True) as s:
            self._expire_exhausted(s, now)
            job = s.scalar(select(Job).where(ready, Job.attempts < Job.max_attempts)
                           .order_by(Job.submitted_at, Job.id).limit(1))
            if job is None:
                return None
            retaken = job.status == "running"
            res = s.execute(
                update(Job).where(Job.id == job.id, ready, Job.attempts == job.attempts)
                .values(status="running", attempts=Job.attempts + 1, lease_owner=worker_id,
                        lease_expires_at=now + timedelta(seconds=self.lease_s), started_at=now, stage="claimed")
                .execution_options(synchronize_session=False))
            if res.rowcount != 1:  # another worker won it (PostgreSQL; SQLite holds the write lock)
                return False
            attempt = job.attempts + 1
            s.add(AuditEvent(at=now, actor=f"worker:{worker_id}", action="job.claim", job_id=job.id,
                             detail={"attempt": attempt, "retaken_after_lost_worker": retaken}))
            claimed = Claimed(id=job.id, attempt=attempt, study_uid=job.study_uid, source=job.source,
                              report_text=job.report_text, submitted_at=as_utc(job.submitted_at),
                              max_attempts=job.max_attempts)
        if retaken:
            log.warning("job %s retaken after its worker's lease expired (try %d)", claimed.id, attempt)
        return claimed

    def heartbeat(self, job_id: str, worker_id: str, stage: str | None = None) -> bool:
        """Extend the lease; False when this worker no longer holds the job (it must stop)."""
        values = {"lease_expires_at": utcnow() + timedelta(seconds=self.lease_s)}
        if stage:
            values["stage"] = stage[:20]
        with self.db.session(write=True) as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == "running",
                                              Job.lease_owner == worker_id).values(**values))
            return res.rowcount == 1

    def complete(self, job_id: str, worker_id: str, result: dict, artifacts_dir: str | None,
                 pacs_store: dict | None = None) -> bool:
        """Write the result, its summary columns, status done and the audit event in one transaction."""
        now = utcnow()
        discordances = result.get("discordances") or []
        ranks = [SEVERITY_RANK.get(d.get("severity"), 0) for d in discordances]
        rank = max(ranks, default=0)
        max_sev = {v: k for k, v in SEVERITY_RANK.items()}.get(rank)
        with self.db.session(write=True) as s:
            res = s.execute(
                update(Job).where(Job.id == job_id, Job.status == "running", Job.lease_owner == worker_id)
                .values(status="done", finished_at=now, stage="done", result=result, artifacts_dir=artifacts_dir,
                        verdict=result.get("verdict"), priority=float(result.get("priority") or 0.0),
                        severity_rank=rank, max_severity=max_sev,
                        n_ai_findings=len(result.get("ai_findings") or []), n_discordances=len(discordances),
                        error_code=None, error_detail=None, lease_owner=None, lease_expires_at=None,
                        pacs_store=pacs_store, completed_by=worker_id))
            if res.rowcount != 1:
                log.warning("job %s: result of worker %s discarded, its lease was lost", job_id, worker_id)
                return False
            s.add(AuditEvent(at=now, actor=f"worker:{worker_id}", action="job.done", job_id=job_id,
                             detail={"verdict": result.get("verdict"), "priority": result.get("priority")}))
        return True

    def take(self, job_id: str, worker_id: str) -> bool:
        """Hold one queued job (by id) for ``worker_id``, as :meth:`claim` would; False if it is not queued.
        Used to record results computed elsewhere (``preread batch --to-worklist``)."""
        now = utcnow()
        with self.db.session(write=True) as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                            .values(status="running", attempts=Job.attempts + 1, started_at=now,
                                    lease_owner=worker_id, lease_expires_at=now + timedelta(seconds=self.lease_s)))
            return res.rowcount == 1

    def fail(self, job_id: str, worker_id: str, code: str, detail: str, *, retry: bool) -> str | None:
        """Record a failed try: queued again after a back-off when ``retry`` and tries remain, else failed.

        Returns the new status, or None when the worker no longer held the job.
        """
        now = utcnow()
        detail = " ".join(str(detail).split())[:2000]
        with self.db.session(write=True) as s:
            job = s.get(Job, job_id)
            if job is None or job.status != "running" or job.lease_owner != worker_id:
                return None
            final = not retry or job.attempts >= job.max_attempts
            job.error_code, job.error_detail = code[:50], detail
            job.lease_owner = job.lease_expires_at = None
            if final:
                job.status, job.finished_at, job.stage = "failed", now, "failed"
            else:
                job.status, job.stage = "queued", None
                job.not_before = now + timedelta(seconds=self.retry_backoff_s * job.attempts)
            s.add(AuditEvent(at=now, actor=f"worker:{worker_id}", action="job.failed" if final else "job.retry",
                             job_id=job_id, detail={"error": code, "attempt": job.attempts}))
            return job.status
