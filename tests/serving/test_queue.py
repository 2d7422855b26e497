"""The durable queue: idempotency, leases, retaking after a lost worker, bounded tries, exactly-once results."""

from __future__ import annotations

import time

import pytest

from pipelines.errors import QueueFullError
from serving.db import Database
from serving.migrate import upgrade
from serving.models import AuditEvent, Job
from serving.queue import JobQueue, report_sha256


@pytest.fixture()
def queue(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'q.db'}")
    upgrade(db)
    yield JobQueue(db, max_queue=3, max_attempts=2, lease_s=0.5, retry_backoff_s=0.0)
    db.dispose()


def _audit(q, action):
    from sqlalchemy import select

    with q.db.session() as s:
        return s.scalars(select(AuditEvent).where(AuditEvent.action == action)).all()


def test_same_study_same_report_is_one_job(queue):
    a = queue.enqueue(study_uid="1.2.3", report_text="Nodule 6 mm in the RUL.", source="upload", submitted_by=None)
    b = queue.enqueue(study_uid="1.2.3", report_text="  Nodule 6 mm   in the RUL.\n", source="upload", submitted_by=None)
    c = queue.enqueue(study_uid="1.2.3", report_text="Nodule 8 mm in the RUL.", source="upload", submitted_by=None)
    assert a.created and not b.created and b.id == a.id  # whitespace does not make a new report
    assert c.created and c.id != a.id
    assert report_sha256("a  b") == report_sha256("a b") != report_sha256("a c")


def test_back_pressure_when_full(queue):
    for n in range(3):
        queue.enqueue(study_uid=f"1.2.{n}", report_text="r", source="upload", submitted_by=None)
    with pytest.raises(QueueFullError) as ei:
        queue.enqueue(study_uid="1.2.9", report_text="r", source="upload", submitted_by=None)
    assert ei.value.http_status == 429
    assert queue.active_count() == 3
    # a duplicate of a known study is still answered (it adds nothing)
    assert not queue.enqueue(study_uid="1.2.0", report_text="r", source="upload", submitted_by=None).created


def test_lost_worker_lease_is_retaken_and_stale_result_refused(queue):
    job = queue.enqueue(study_uid="1.2.3", report_text="r", source="upload", submitted_by=None)
    first = queue.claim("w1")
    assert first.id == job.id and first.attempt == 1
    assert queue.claim("w2") is None  # leased
    time.sleep(0.7)  # w1 went silent: its lease lapses
    second = queue.claim("w2")
    assert second.id == job.id and second.attempt == 2
    assert not queue.heartbeat(job.id, "w1")  # w1 learns it lost the job
    assert not queue.complete(job.id, "w1", {"verdict": "concordant"}, None)  # its result is refused
    assert queue.complete(job.id, "w2", {"verdict": "discordant", "priority": 80.0,
                                         "discordances": [{"severity": "major"}]}, None)
    assert not queue.complete(job.id, "w2", {"verdict": "concordant"}, None)  # exactly once
    with queue.db.session() as s:
        row = s.get(Job, job.id)
        assert (row.status, row.verdict, row.max_severity, row.completed_by) == ("done", "discordant", "major", "w2")
    assert len(_audit(queue, "job.done")) == 1


def test_always_lost_job_ends_failed_with_reason_after_bounded_tries(queue):
    job = queue.enqueue(study_uid="1.2.3", report_text="r", source="upload", submitted_by=None)
    for n in (1, 2):
        got = queue.claim(f"w{n}")
        assert got.attempt == n
        time.sleep(0.7)
    assert queue.claim("w3") is None
    with queue.db.session() as s:
        row = s.get(Job, job.id)
        assert row.status == "failed" and row.error_code == "worker_lost"
        assert "try 2 of 2" in row.error_detail
    assert queue.active_count() == 0


def test_failed_try_is_retried_then_fails_for_good(queue):
    job = queue.enqueue(study_uid="1.2.3", report_text="r", source="upload", submitted_by=None)
    assert queue.fail(queue.claim("w").id, "w", "internal_error", "boom", retry=True) == "queued"
    assert queue.fail(queue.claim("w").id, "w", "internal_error", "boom again", retry=True) == "failed"
    with queue.db.session() as s:
        row = s.get(Job, job.id)
        assert row.error_detail == "boom again" and row.attempts == 2
    # a bad-input failure is final at once; resubmitting the same study and report queues it again
    again = queue.enqueue(study_uid="1.2.3", report_text="r", source="upload", submitted_by=None)
    assert again.id == job.id and not again.created
    assert queue.fail(queue.claim("w").id, "w", "ingest_error", "not a CT", retry=False) == "failed"
