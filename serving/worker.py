"""Queue workers: take a job, run the pre-read on it, write the result in one transaction.

``run_analysis`` is the single call into the pipeline. A worker renews its lease while it works; if it
dies (even by SIGKILL) the lease runs out and another worker takes the job again; a job that fails on bad
input (a :class:`PrereadError` with a 4xx status) ends failed at once with its reason, other failures are
retried after a back-off until the job's tries are used up.

Run one with ``python -m serving.worker`` (settings from ``PREREAD_*``); ``preread serve`` starts
``PREREAD_WORKERS`` of them and restarts any that exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import PrereadError
from pipelines.types import StudyResult
from serving.db import Database
from serving.migrate import upgrade
from serving.queue import Claimed, JobQueue, as_utc
from serving.models import utcnow
from serving.settings import Settings, load_settings

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """What one try of a job needs: the study on disk, its report, where to write, the pipeline options."""

    job: Claimed
    study_path: Path
    report_text: str
    out_dir: Path
    settings: Settings
    progress: object = None


def run_analysis(ctx: JobContext) -> StudyResult:
    """The one call into the pipeline: ``pipelines.analyze.analyze_study`` on the job's study and report."""
    from pipelines.analyze import AnalyzeOptions, analyze_study

    waited = (utcnow() - as_utc(ctx.job.submitted_at)).total_seconds()
    if ctx.settings.ray_address:
        from serving.ray_serve import analyze_remote

        address = None if ctx.settings.ray_address == "local" else ctx.settings.ray_address
        data = analyze_remote(address, ctx.study_path, ctx.report_text, ctx.out_dir,
                              {"device": ctx.settings.device, "model": ctx.settings.model,
                               "backend": ctx.settings.backend, "waited_s": max(0.0, waited)})
        return StudyResult.model_validate(data)
    opts = AnalyzeOptions(device=ctx.settings.device, model=ctx.settings.model, backend=ctx.settings.backend,
                          waited_s=max(0.0, waited), progress=ctx.progress)
    return analyze_study(ctx.study_path, ctx.report_text, out_dir=ctx.out_dir, options=opts)


def job_dir(settings: Settings, job_id: str) -> Path:
    return settings.jobs_dir / job_id


class _Heartbeat(threading.Thread):
    """Renews the lease every ``period`` seconds; notes when the lease was lost."""

    def __init__(self, queue: JobQueue, job_id: str, worker_id: str, period: float, timeout_s: float):
        super().__init__(daemon=True, name=f"heartbeat-{job_id[:8]}")
        self.queue, self.job_id, self.worker_id, self.period = queue, job_id, worker_id, period
        self.deadline = time.monotonic() + timeout_s
        self.stage: str | None = None
        self.lost = False
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.period):
            if time.monotonic() > self.deadline:  # a hung try: let the lease lapse so another worker retakes it
                self.lost = True
                log.warning("job %s: try exceeded PREREAD_JOB_TIMEOUT_S; lease left to lapse", self.job_id)
                return
            try:
                if not self.queue.heartbeat(self.job_id, self.worker_id, self.stage):
                    self.lost = True
                    log.warning("job %s: lease lost", self.job_id)
                    return
            except Exception as err:  # noqa: BLE001 - a DB hiccup must not kill the worker; the lease may lapse
                log.warning("job %s: heartbeat failed: %s", self.job_id, type(err).__name__)

    def stop(self) -> None:
        self._stop.set()


class Worker:
    def __init__(self, settings: Settings, worker_id: str | None = None, db: Database | None = None,
                 analysis=None):
        self.settings = settings
        self.analysis = analysis or run_analysis  # the Ray Serve ingress passes one that calls its predictor
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.db = db or Database(settings.db_url)
        self.queue = JobQueue(self.db, max_queue=settings.max_queue, max_attempts=settings.max_attempts,
                              lease_s=settings.lease_s, retry_backoff_s=settings.retry_backoff_s)
        self.stop_event = threading.Event()

    def run(self) -> None:
        """Work until :attr:`stop_event` is set."""
        log.info("worker %s started", self.worker_id)
        while not self.stop_event.is_set():
            try:
                worked = self.run_once()
            except Exception:  # noqa: BLE001 - keep serving; the job's lease protects it
                log.exception("worker %s: unexpected error outside a job", self.worker_id)
                worked = False
            if not worked:
                self.stop_event.wait(self.settings.poll_s)
        log.info("worker %s stopped", self.worker_id)

    def run_once(self) -> bool:
        """Take and process one job; False when the queue had none ready."""
        job = self.queue.claim(self.worker_id)
        if job is None:
            return False
        self.process(job)
        return True

    def process(self, job: Claimed) -> None:
        jdir = job_dir(self.settings, job.id)
        out = jdir / f"attempt-{job.attempt}"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        hb = _Heartbeat(self.queue, job.id, self.worker_id, self.settings.heartbeat_period_s,
                        self.settings.job_timeout_s)
        hb.start()
        log.info("job %s: try %d of %d", job.id, job.attempt, job.max_attempts)
        try:
            if job.source == "pacs":
                hb.stage = "retrieve"
                study_path = self._retrieve(job, out / "study")
            else:
                study_path = jdir / "study"

            def progress(stage: str, _fraction: float) -> None:
                hb.stage = stage

            ctx = JobContext(job=job, study_path=study_path, report_text=job.report_text, out_dir=out,
                             settings=self.settings, progress=progress)
            result = self.analysis(ctx)
            data = result.model_dump(mode="json")
            if self.settings.viewer_slices:
                hb.stage = "viewer"
                self._viewer_assets(study_path, data, out)
            pacs = None
            if job.source == "pacs" and self.settings.stow_results and self.settings.dicomweb_url:
                hb.stage = "stow"
                pacs = self._stow(job, data)
            hb.stop()
            if hb.lost:
                log.warning("job %s: lease lost during the try; result discarded", job.id)
                return
            if self.queue.complete(job.id, self.worker_id, data, str(out.resolve()), pacs):
                log.info("job %s done: verdict %s", job.id, data.get("verdict"))
        except PrereadError as err:
            hb.stop()
            retry = err.http_status >= 500
            status = self.queue.fail(job.id, self.worker_id, err.code, str(err), retry=retry)
            log.warning("job %s: %s (%s) → %s", job.id, err.code, "will retry" if retry else "bad input", status)
        except Exception as err:  # noqa: BLE001 - an internal failure: retried, then failed with its reason
            hb.stop()
            status = self.queue.fail(job.id, self.worker_id, "internal_error",
                                     f"{type(err).__name__}: {err}", retry=True)
            log.exception("job %s: internal failure → %s", job.id, status)

    def _retrieve(self, job: Claimed, dest: Path) -> Path:
        from pipelines.errors import ConfigError
        from serving.dicomweb import DicomWebClient

        if not self.settings.dicomweb_url:
            raise ConfigError("this job is to be pulled from the PACS but PREREAD_DICOMWEB_URL is not set")
        with DicomWebClient(self.settings.dicomweb_url, timeout_s=self.settings.dicomweb_timeout_s,
                            token=self.settings.dicomweb_token) as client:
            client.retrieve_study(job.study_uid, dest, max_bytes=self.settings.max_upload_bytes)
        return dest

    def _stow(self, job: Claimed, data: dict) -> dict:
        from serving.dicomweb import DicomWebClient

        art = data.get("artifacts") or {}
        files = [Path(art[k]) for k in ("seg", "sr") if art.get(k)]
        if not files:
            return {"stored": [], "note": "no SEG/SR was produced (no AI finding)"}
        with DicomWebClient(self.settings.dicomweb_url, timeout_s=self.settings.dicomweb_timeout_s,
                            token=self.settings.dicomweb_token) as client:
            return client.store(files)

    def _viewer_assets(self, study_path: Path, data: dict, out: Path) -> None:
        from serving.viewer import render_viewer_assets

        try:
            render_viewer_assets(study_path, data, out)
        except PrereadError as err:  # the result stands without slice images; the viewer says so
            log.warning("viewer images not rendered: %s", err.one_line())
        except Exception as err:  # noqa: BLE001 - e.g. a SEG the reader does not understand: same as above
            log.warning("viewer images not rendered: %s: %s", type(err).__name__, err)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--id", default=None, help="worker id (default host-pid)")
    ap.add_argument("--once", action="store_true", help="process at most one job, then exit")
    ap.add_argument("--log-level", default=os.environ.get("PREREAD_LOG_LEVEL", "INFO"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        settings.ensure_dirs()
        worker = Worker(settings, args.id)
        upgrade(worker.db, settings.data_dir / "migrate.lock")
    except PrereadError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        return 2

    def _stop(signum, _frame):
        log.info("worker %s: signal %d, stopping after the current job", worker.worker_id, signum)
        worker.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.once:
        worker.run_once()
    else:
        worker.run()
    worker.db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
