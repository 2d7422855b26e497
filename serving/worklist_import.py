"""``preread batch --to-worklist``: store batch results in the worklist as finished (or failed) studies.

Each row becomes a job keyed like an upload (StudyInstanceUID + report), so a study already in the worklist
with the same report is not added twice, and its result is written in one transaction with its audit event.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

WORKER_ID = "batch"


def import_rows(rows: list[dict], settings=None) -> dict:
    """Record each batch row in the worklist store; returns counts of added, duplicate and failed rows."""
    from serving.db import Database
    from serving.migrate import upgrade
    from serving.queue import JobQueue
    from serving.settings import load_settings

    settings = settings or load_settings()
    settings.ensure_dirs()
    db = Database(settings.db_url)
    upgrade(db, settings.data_dir / "migrate.lock")
    queue = JobQueue(db, max_queue=max(settings.max_queue, len(rows) + 1), max_attempts=1,
                     lease_s=settings.lease_s)
    counts = {"added": 0, "duplicate": 0, "failed": 0, "skipped": 0}
    try:
        for row in rows:
            result = json.loads(row["result_json"]) if row.get("result_json") else None
            study_uid = (result or {}).get("study_uid") or row.get("study_uid")
            if not study_uid:
                counts["skipped"] += 1  # nothing identifies the study (it failed before ingest)
                log.warning("batch row %s not stored: no StudyInstanceUID (%s)", row.get("name"), row.get("error"))
                continue
            report_text = _report_text(row)
            got = queue.enqueue(study_uid=study_uid, report_text=report_text, source="batch", submitted_by=None,
                                actor="batch")
            if not got.created or not queue.take(got.id, WORKER_ID):
                counts["duplicate"] += 1
                continue
            if result is not None:
                queue.complete(got.id, WORKER_ID, result, None)
                counts["added"] += 1
            else:
                queue.fail(got.id, WORKER_ID, "batch_error", row.get("error") or "failed in batch", retry=False)
                counts["failed"] += 1
    finally:
        db.dispose()
    log.info("batch results stored in the worklist: %s", counts)
    return counts


def _report_text(row: dict) -> str:
    from pipelines.report import parse_report_file

    path = row.get("report_path")
    if not path:
        return ""
    p = Path(path)
    if p.suffix.lower() == ".txt":
        return p.read_text(errors="replace")
    return parse_report_file(p).text
