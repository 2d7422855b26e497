"""Crash recovery with real worker processes: a worker SIGKILLed mid-study loses nothing; after restart
every accepted study ends done exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from sqlalchemy import select

from serving.models import AuditEvent, Job
from tests.serving.conftest import auth, pipeline_ready, service_env, wait_for, zip_folder

REPORTS = ["CT chest: 6 mm solid nodule in the right lower lobe. Fleischner follow-up advised.",
           "CT chest: no pulmonary nodules. Lungs are clear."]


def _worker(env, wid):
    return subprocess.Popen([sys.executable, "-m", "serving.worker", "--id", wid], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.slow
def test_sigkill_mid_study_then_every_study_done_exactly_once(service, shared_data):
    reason = pipeline_ready()
    if reason:
        pytest.skip(f"end-to-end pipeline not available yet ({reason})")
    app, client, tokens = service(lease_s=5.0, heartbeat_s=1.0, max_attempts=3, retry_backoff_s=0.5)
    studies = [shared_data / "ct" / "lidc-idri-0003"] * 2  # one real study, two reports: two jobs
    ids = []
    for folder, report in zip(studies, REPORTS):
        r = client.post("/studies", headers=auth(tokens["submitter"]),
                        files={"file": ("s.zip", zip_folder(folder), "application/zip")}, data={"report": report})
        assert r.status_code == 202
        ids.append(r.json()["id"])
    db = app.state.db
    env = service_env(app.state.settings.data_dir, lease_s=5.0, heartbeat_s=1.0, max_attempts=3,
                      retry_backoff_s=0.5)

    def running_mid_study():
        with db.session() as s:
            job = s.scalar(select(Job).where(Job.status == "running", Job.lease_owner == "victim"))
            return job.id if job is not None and job.stage not in (None, "claimed") else None

    victim = _worker(env, "victim")
    try:
        killed_job = wait_for(running_mid_study, 300, "the first worker to be inside a study", interval=0.2)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        survivors = [_worker(env, "survivor-1"), _worker(env, "survivor-2")]

        def all_finished():
            with db.session() as s:
                return all(s.get(Job, i).status in ("done", "failed") for i in ids)
        wait_for(all_finished, 1200, "every study to finish", interval=1.0)
    finally:
        for p in [victim] + (survivors if "survivors" in locals() else []):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(60)
    with db.session() as s:
        jobs = {i: s.get(Job, i) for i in ids}
        done_events = s.scalars(select(AuditEvent).where(AuditEvent.action == "job.done")).all()
        claims = s.scalars(select(AuditEvent).where(AuditEvent.action == "job.claim",
                                                     AuditEvent.job_id == killed_job)).all()
    assert all(j.status == "done" for j in jobs.values()), {i: (j.status, j.error_detail) for i, j in jobs.items()}
    assert sorted(e.job_id for e in done_events) == sorted(ids)  # exactly once each
    assert jobs[killed_job].attempts == 2 and jobs[killed_job].completed_by.startswith("survivor")
    assert any(c.detail.get("retaken_after_lost_worker") for c in claims)
    for i in ids:
        assert jobs[i].result["verdict"] in ("discordant", "concordant", "indeterminate")
        assert jobs[i].artifacts_dir.endswith(f"attempt-{jobs[i].attempts}")
