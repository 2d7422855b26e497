"""The same store and queue on PostgreSQL (``PREREAD_DATABASE_URL``): a private server started by the test on a
Unix socket (no TCP), skipped when PostgreSQL's binaries or the psycopg driver are absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from tests.serving.conftest import auth, free_port, zip_bytes

PG_BIN = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
               if (p / "initdb").exists()), None) if Path("/usr/lib/postgresql").is_dir() else None


@pytest.fixture(scope="module")
def pg_url():
    pytest.importorskip("psycopg")
    if PG_BIN is None:
        pytest.skip("PostgreSQL server binaries not installed")
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser")
        run_as = ["runuser", "-u", "postgres", "--"]
    d = Path(tempfile.mkdtemp(prefix="preread-pg-"))
    os.chmod(d, 0o777)
    data, sock, port = d / "data", d / "sock", free_port()
    sock.mkdir()
    os.chmod(sock, 0o777)
    if run_as:
        shutil.chown(d, "postgres")
        shutil.chown(sock, "postgres")
    subprocess.run(run_as + [str(PG_BIN / "initdb"), "-D", str(data), "-U", "preread", "-A", "trust"],
                   check=True, capture_output=True)
    subprocess.run(run_as + [str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(d / "log"), "-o",
                             f"-k {sock} -c listen_addresses='' -p {port}", "start"], check=True, capture_output=True)
    try:
        subprocess.run(run_as + [str(PG_BIN / "createdb"), "-h", str(sock), "-p", str(port), "-U", "preread",
                                 "preread"], check=True, capture_output=True)
        yield f"postgresql+psycopg://preread@/preread?host={sock}&port={port}"
    finally:
        subprocess.run(run_as + [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def test_queue_on_postgres_two_workers_never_share_a_job(pg_url):
    from serving.db import Database
    from serving.migrate import head_revision, upgrade
    from serving.queue import JobQueue

    db = Database(pg_url)
    assert upgrade(db) == head_revision()
    q = JobQueue(db, max_queue=100, max_attempts=2, lease_s=60)
    ids = {q.enqueue(study_uid=f"1.2.{n}", report_text="r", source="upload", submitted_by=None).id
           for n in range(20)}
    assert not q.enqueue(study_uid="1.2.0", report_text="r", source="upload", submitted_by=None).created
    claimed: dict[str, list[str]] = {"a": [], "b": [], "c": []}

    def drain(w):
        while (job := q.claim(w)) is not None:
            claimed[w].append(job.id)
            assert q.complete(job.id, w, {"verdict": "concordant", "priority": 1.0}, None)

    threads = [threading.Thread(target=drain, args=(w,)) for w in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = [i for v in claimed.values() for i in v]
    assert sorted(taken) == sorted(ids)  # every job once, none twice
    db.dispose()


def test_api_on_postgres(pg_url, make_settings, small_dicom):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.auth import create_token

    app = create_app(make_settings(database_url=pg_url))
    sub = create_token(app.state.db, app.state.settings.secret_key, "submitter")[0]
    rd = create_token(app.state.db, app.state.settings.secret_key, "reader")[0]
    c = TestClient(app)
    r = c.post("/studies", headers=auth(sub), files={"file": ("s.zip", zip_bytes({"a.dcm": small_dicom}))},
               data={"report": "CT chest: 6 mm nodule, right lower lobe."})
    assert r.status_code == 202
    page = c.get("/worklist", headers=auth(rd), params={"status": "queued"}).json()
    assert r.json()["id"] in [it["id"] for it in page["items"]]
    app.state.db.dispose()
