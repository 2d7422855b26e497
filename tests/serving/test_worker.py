"""The worker on real inputs: bad input ends failed at once with its reason; an internal failure (here an
unknown model) is retried a bounded number of times, then failed with its reason. Nothing is left running."""

from __future__ import annotations

import pytest

from serving.models import Job
from serving.worker import Worker
from tests.serving.conftest import auth, zip_bytes, zip_folder


@pytest.fixture(autouse=True)
def _pipeline_imports():
    pytest.importorskip("pipelines.analyze")
    for mod in ("pipelines.ingest", "pipelines.report", "pipelines.lungmask"):
        pytest.importorskip(mod)


def test_bad_study_fails_at_once_with_its_reason(service, small_dicom):
    app, client, tokens = service(max_attempts=3, retry_backoff_s=0.0)
    r = client.post("/studies", headers=auth(tokens["submitter"]),
                    files={"file": ("s.zip", zip_bytes({"one-slice.dcm": small_dicom}), "application/zip")},
                    data={"report": "CT chest: 5 mm nodule in the left lower lobe."})
    job_id = r.json()["id"]
    worker = Worker(app.state.settings, "w-test", db=app.state.db)
    assert worker.run_once()
    assert not worker.run_once()  # nothing left to retry: bad input is final
    d = client.get(f"/studies/{job_id}", headers=auth(tokens["reader"])).json()
    assert d["status"] == "failed" and d["attempts"] == 1
    assert d["error"]["code"] in ("ingest_error", "geometry_error", "input_too_large", "preprocess_error")
    assert len(d["error"]["detail"]) > 10
    row = client.get("/worklist", headers=auth(tokens["reader"]), params={"status": "failed"}).json()["items"][0]
    assert row["id"] == job_id and row["error"]["code"] == d["error"]["code"]


@pytest.mark.slow
def test_internal_failure_is_retried_then_failed(service, shared_data):
    app, client, tokens = service(max_attempts=2, retry_backoff_s=0.0, model="no-such-model")
    r = client.post("/studies", headers=auth(tokens["submitter"]),
                    files={"file": ("s.zip", zip_folder(shared_data / "ct" / "lidc-idri-0003"), "application/zip")},
                    data={"report": "CT chest: no pulmonary nodules."})
    job_id = r.json()["id"]
    worker = Worker(app.state.settings, "w-test", db=app.state.db)
    assert worker.run_once()
    with app.state.db.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.attempts, job.error_code) == ("queued", 1, "model_error")
    assert worker.run_once()
    assert not worker.run_once()
    d = client.get(f"/studies/{job_id}", headers=auth(tokens["reader"])).json()
    assert d["status"] == "failed" and d["attempts"] == 2
    assert d["error"]["code"] == "model_error" and "no-such-model" in d["error"]["detail"]
    audit = client.get("/audit", headers=auth(tokens["admin"]), params={"job_id": job_id}).json()["items"]
    assert [a["action"] for a in audit if a["action"].startswith("job.")].count("job.retry") == 1
