"""Polling the PACS for new CT studies (QIDO-RS) and queueing those that carry a DICOM SR report.

With ``PREREAD_DICOMWEB_POLL_S`` > 0, ``preread serve`` runs :func:`poll_once` that often. A study already
known to the store (any job with its StudyInstanceUID) is skipped; a study without an SR report is skipped
and counted (its report can be sent with ``POST /studies`` instead).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy import select

from pipelines.errors import PrereadError
from serving.dicomweb import DicomWebClient, UID_RE
from serving.models import Job
from serving.queue import JobQueue
from serving.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class PollResult:
    seen: int = 0
    queued: list[str] = field(default_factory=list)
    known: int = 0
    without_report: int = 0
    errors: int = 0


def poll_once(settings: Settings, queue: JobQueue, client: DicomWebClient | None = None) -> PollResult:
    """One QIDO-RS search for CT studies; new ones with an SR report are queued as PACS jobs."""
    out = PollResult()
    own = client is None
    client = client or DicomWebClient(settings.dicomweb_url, timeout_s=settings.dicomweb_timeout_s,
                                      token=settings.dicomweb_token)
    try:
        studies = client.search_studies(ModalitiesInStudy="CT", limit=str(settings.dicomweb_poll_limit))
        for st in studies:
            uid = ((st.get("0020000D") or {}).get("Value") or [None])[0]
            if not uid or not UID_RE.match(str(uid)):
                continue
            out.seen += 1
            with queue.db.session() as s:
                if s.scalar(select(Job.id).where(Job.study_uid == uid).limit(1)) is not None:
                    out.known += 1
                    continue
            try:
                report = client.report_text(uid)
                if not report:
                    out.without_report += 1
                    continue
                res = queue.enqueue(study_uid=uid, report_text=report, source="pacs", submitted_by=None,
                                    actor="pacs-poller")
                if res.created:
                    out.queued.append(res.id)
            except PrereadError as err:
                out.errors += 1
                log.warning("PACS poll: a study was not queued: %s", err.one_line())
                if err.code == "queue_full":
                    break
    finally:
        if own:
            client.close()
    log.info("PACS poll: %d studies seen, %d queued, %d known, %d without an SR report", out.seen, len(out.queued),
             out.known, out.without_report)
    return out


class Poller(threading.Thread):
    def __init__(self, settings: Settings, queue: JobQueue):
        super().__init__(daemon=True, name="pacs-poller")
        self.settings, self.queue = settings, queue
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.settings.dicomweb_poll_s):
            try:
                poll_once(self.settings, self.queue)
            except PrereadError as err:
                log.warning("PACS poll failed: %s", err.one_line())
            except Exception:  # noqa: BLE001 - keep polling
                log.exception("PACS poll failed")
