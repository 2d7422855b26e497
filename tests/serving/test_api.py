"""The HTTP API without workers: tokens and roles, intake checks, zip safety, size limits, back-pressure,
idempotency, error bodies, audit. Every refused request changes nothing."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from tests.serving.conftest import auth, zip_bytes

REPORT = "CT chest. A 7 mm solid nodule in the right upper lobe. Impression: Fleischner follow-up."


def _state(app):
    """What a refused request must not change: jobs, and files under jobs/ and incoming/."""
    s = app.state.settings
    files = sorted(str(p.relative_to(s.data_dir)) for d in (s.jobs_dir, s.incoming_dir) for p in d.rglob("*"))
    return app.state.queue.active_count(), files


def _submit(client, token, data: bytes, report=REPORT):
    return client.post("/studies", headers=auth(token), files={"file": ("study.zip", data, "application/zip")},
                       data={"report": report})


def test_health_needs_no_token_and_everything_else_does(service):
    app, client, tokens = service()
    assert client.get("/health").json()["status"] == "ok"
    for method, path in (("get", "/worklist"), ("get", "/me"), ("post", "/studies"), ("get", "/audit"),
                         ("get", "/studies/00000000-0000-0000-0000-000000000000")):
        r = getattr(client, method)(path)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", path
    r = client.get("/worklist", headers={"Authorization": "Bearer prt_not-a-real-token"})
    assert r.status_code == 401 and r.json() == {"error": "unauthorized", "detail": "invalid or revoked token"}
    assert client.get("/worklist", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.get("/me", headers=auth(tokens["reader"])).json()["role"] == "reader"


def test_tokens_are_stored_hashed_and_can_be_revoked(service):
    from sqlalchemy import select

    from serving.models import ApiToken

    app, client, tokens = service()
    with app.state.db.session() as s:
        stored = [r.token_hash for r in s.scalars(select(ApiToken))]
    assert all(t not in stored for t in tokens.values()) and all(len(h) == 64 for h in stored)
    r = client.post("/tokens", headers=auth(tokens["admin"]), json={"role": "reader", "name": "dr who"})
    assert r.status_code == 201
    new = r.json()
    assert client.get("/me", headers=auth(new["token"])).json()["name"] == "dr who"
    assert client.delete(f"/tokens/{new['id']}", headers=auth(tokens["admin"])).status_code == 200
    assert client.get("/me", headers=auth(new["token"])).status_code == 401
    # only admins manage tokens or read the audit log
    assert client.post("/tokens", headers=auth(tokens["reader"]), json={"role": "admin"}).status_code == 403
    assert client.get("/audit", headers=auth(tokens["submitter"])).status_code == 403


def test_wrong_role_is_refused_and_changes_nothing(service, small_dicom):
    app, client, tokens = service()
    before = _state(app)
    r = _submit(client, tokens["reader"], zip_bytes({"ct.dcm": small_dicom}))
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert client.get("/worklist", headers=auth(tokens["submitter"])).status_code == 403
    assert _state(app) == before


def test_upload_is_stored_before_202_and_idempotent(service, small_dicom):
    app, client, tokens = service()
    data = zip_bytes({"a/ct.dcm": small_dicom})
    r = _submit(client, tokens["submitter"], data)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.json()["duplicate"] is False and r.headers["location"] == f"/studies/{job_id}"
    study_dir = app.state.settings.jobs_dir / job_id / "study"
    assert (study_dir / "a" / "ct.dcm").read_bytes() == small_dicom
    again = _submit(client, tokens["submitter"], data, report=REPORT + "\n")
    assert again.status_code == 202 and again.json() == {"id": job_id, "status": "accepted", "duplicate": True}
    other = _submit(client, tokens["submitter"], data, report=REPORT.replace("7 mm", "9 mm"))
    assert other.json()["id"] != job_id
    page = client.get("/worklist", headers=auth(tokens["reader"])).json()
    assert page["total"] == 2 and {it["status"] for it in page["items"]} == {"queued"}
    detail = client.get(f"/studies/{job_id}", headers=auth(tokens["reader"])).json()
    assert detail["status"] == "queued" and detail["result"] is None and detail["report_text"] == REPORT
    # the sender can follow its job but does not get the report back
    assert "report_text" not in client.get(f"/studies/{job_id}", headers=auth(tokens["submitter"])).json()
    audit = client.get("/audit", headers=auth(tokens["admin"]), params={"job_id": job_id}).json()["items"]
    actions = [(a["action"], a["actor"]) for a in audit]
    assert ("study.view", "test-reader") in actions and ("job.submit", "test-submitter") in actions
    assert ("job.duplicate", "test-submitter") in actions
    assert not any(REPORT in str(a["detail"]) for a in audit)  # no report text in the audit log


def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link.dcm")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize("case", ["traversal", "absolute", "symlink", "bomb", "not_zip", "no_dicom", "two_studies",
                                  "empty_report", "no_file", "empty_file"])
def test_bad_uploads_get_4xx_json_and_change_nothing(service, small_dicom, case, tmp_path):
    import pydicom

    app, client, tokens = service()
    before = _state(app)
    report = REPORT
    if case == "traversal":
        data = zip_bytes({"ok.dcm": small_dicom, "../../escaped.dcm": small_dicom})
    elif case == "absolute":
        data = zip_bytes({"/tmp/abs.dcm": small_dicom})
    elif case == "symlink":
        data = _symlink_zip()
    elif case == "bomb":
        data = zip_bytes({"bomb.dcm": b"\0" * (64 << 20)})
    elif case == "not_zip":
        data = small_dicom
    elif case == "no_dicom":
        data = zip_bytes({"readme.txt": b"hello"})
    elif case == "two_studies":
        ds = pydicom.dcmread(io.BytesIO(small_dicom))
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        other = io.BytesIO()
        ds.save_as(other)
        data = zip_bytes({"a.dcm": small_dicom, "b.dcm": other.getvalue()})
    elif case == "empty_report":
        data, report = zip_bytes({"a.dcm": small_dicom}), "   "
    elif case == "no_file":
        r = client.post("/studies", headers=auth(tokens["submitter"]), data={"report": REPORT})
        assert r.status_code == 400 and set(r.json()) == {"error", "detail"}
        assert _state(app) == before
        return
    else:
        data = b""
    r = _submit(client, tokens["submitter"], data, report)
    expected = {"traversal": 422, "absolute": 422, "symlink": 422, "bomb": 422, "not_zip": 422, "no_dicom": 422,
                "two_studies": 422, "empty_report": 400, "empty_file": 400}[case]
    assert r.status_code == expected, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    if case in ("traversal", "absolute", "symlink", "bomb"):
        assert body["error"] == "unsafe_archive"
    assert _state(app) == before
    assert not (tmp_path / "escaped.dcm").exists() and not (tmp_path.parent / "escaped.dcm").exists()


def test_oversized_upload_is_413_before_anything_is_written(service, small_dicom):
    app, client, tokens = service(max_upload_mb=0.05)
    before = _state(app)
    big = zip_bytes({"a.dcm": small_dicom, "b.bin": __import__("random").Random(0).randbytes(100_000)})
    assert len(big) > 0.05 * 1024 * 1024
    r = _submit(client, tokens["submitter"], big)
    assert r.status_code == 413 and r.json()["error"] == "input_too_large"
    assert _state(app) == before


def test_back_pressure_429_with_retry_after(service, small_dicom):
    app, client, tokens = service(max_queue=2)
    data = zip_bytes({"a.dcm": small_dicom})
    for n in range(2):
        assert _submit(client, tokens["submitter"], data, report=f"{REPORT} ({n})").status_code == 202
    before = _state(app)
    r = _submit(client, tokens["submitter"], data, report=REPORT + " (3)")
    assert r.status_code == 429 and r.json()["error"] == "queue_full" and int(r.headers["retry-after"]) > 0
    assert _state(app) == before


def test_malformed_requests(service):
    app, client, tokens = service()
    before = _state(app)
    sub, rd = auth(tokens["submitter"]), auth(tokens["reader"])
    # PACS pull: bad UID, missing report, not JSON, no PACS configured
    r = client.post("/studies", headers=sub, json={"study_uid": "1.2.*", "report": "x"})
    assert r.status_code == 400 and r.json()["error"] == "serving_error"
    assert client.post("/studies", headers=sub, json={"study_uid": "1.2.3"}).status_code == 400
    r = client.post("/studies", headers={**sub, "Content-Type": "application/json"}, content=b"{not json")
    assert r.status_code == 400
    r = client.post("/studies", headers=sub, json={"study_uid": "1.2.3", "report": "x"})
    assert r.status_code == 400 and r.json()["error"] == "config_error"
    r = client.post("/studies", headers={**sub, "Content-Type": "text/plain"}, content=b"hello")
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    # worklist parameters, unknown ids, path tricks
    r = client.get("/worklist", headers=rd, params={"limit": 0})
    assert r.status_code == 422 and r.json()["error"] == "validation_error"
    assert client.get("/worklist", headers=rd, params={"status": "bogus"}).status_code == 422
    assert client.get("/worklist", headers=rd, params={"submitted_from": "yesterday"}).status_code == 422
    r = client.get("/studies/00000000-0000-0000-0000-000000000000", headers=rd)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert client.get("/studies/..%2F..%2Fetc%2Fpasswd", headers=rd).status_code in (404, 422)
    r = client.get("/studies/00000000-0000-0000-0000-000000000000/overlays/..%2Fsecret.png", headers=rd)
    assert r.status_code in (400, 404)
    r = client.post("/studies/00000000-0000-0000-0000-000000000000/reviews", headers=rd, json={"action": "maybe"})
    assert r.status_code == 422
    assert _state(app) == before


def test_worklist_filters_sort_and_pagination(service, small_dicom):
    from serving.models import Job

    app, client, tokens = service()
    data = zip_bytes({"a.dcm": small_dicom})
    ids = [_submit(client, tokens["submitter"], data, report=f"{REPORT} #{n}").json()["id"] for n in range(4)]
    q = app.state.queue
    # finish three of them with results as the worker would store them
    results = {ids[0]: ("concordant", 10.0, []), ids[1]: ("discordant", 90.0, [{"severity": "major"}]),
               ids[2]: ("discordant", 40.0, [{"severity": "minor"}])}
    for n in range(3):
        job = q.claim("w")
        verdict, prio, disc = results[job.id]
        assert q.complete(job.id, "w", {"verdict": verdict, "priority": prio, "discordances": disc}, None)
    rd = auth(tokens["reader"])
    page = client.get("/worklist", headers=rd).json()
    order = [it["id"] for it in page["items"]]
    assert order == [ids[1], ids[2], ids[0], ids[3]]  # major, minor, then by priority; queued last
    assert page["counts"] == {"done": 3, "queued": 1}
    disc = client.get("/worklist", headers=rd, params={"verdict": "discordant"}).json()
    assert [it["id"] for it in disc["items"]] == [ids[1], ids[2]]
    assert [it["id"] for it in client.get("/worklist", headers=rd, params={"severity": "major"}).json()["items"]] == [ids[1]]
    p2 = client.get("/worklist", headers=rd, params={"limit": 2, "offset": 2}).json()
    assert p2["total"] == 4 and [it["id"] for it in p2["items"]] == [ids[0], ids[3]]
    waiting = client.get("/worklist", headers=rd, params={"sort": "waiting"}).json()["items"]
    assert [it["id"] for it in waiting] == ids
    future = client.get("/worklist", headers=rd, params={"submitted_from": "2999-01-01T00:00:00Z"}).json()
    assert future["total"] == 0
    with app.state.db.session() as s:
        assert s.get(Job, ids[3]).status == "queued"
    # a review needs a done study; recorded with who and when
    r = client.post(f"/studies/{ids[3]}/reviews", headers=rd, json={"action": "agree"})
    assert r.status_code == 400
    r = client.post(f"/studies/{ids[1]}/reviews", headers=rd, json={"action": "disagree", "comment": "not a nodule"})
    assert r.status_code == 201 and r.json()["reviewer"] == "test-reader" and r.json()["at"]
    assert client.post(f"/studies/{ids[1]}/reviews", headers=auth(tokens["submitter"]),
                       json={"action": "agree"}).status_code == 403
    row = client.get("/worklist", headers=rd, params={"severity": "major"}).json()["items"][0]
    assert row["review"]["action"] == "disagree" and row["review"]["reviewer"] == "test-reader"


def test_report_as_dicom_sr_part_or_inside_the_zip(service, small_dicom):
    import pydicom

    from pipelines.paths import SHARED_DATA_DIR
    from pipelines.report_text import sr_text

    sr_path = SHARED_DATA_DIR / "dicom" / "pydicom-testfiles" / "test-SR.dcm"
    ct = pydicom.dcmread(io.BytesIO(small_dicom), stop_before_pixels=True)
    sr = pydicom.dcmread(sr_path)
    sr.StudyInstanceUID = ct.StudyInstanceUID  # the report SR belongs to the CT's study
    buf = io.BytesIO()
    sr.save_as(buf)
    sr_bytes = buf.getvalue()
    expected = sr_text(sr_bytes)
    app, client, tokens = service()
    sub, rd = auth(tokens["submitter"]), auth(tokens["reader"])
    # 1. the report part is a DICOM SR file
    r = client.post("/studies", headers=sub, files={"file": ("s.zip", zip_bytes({"ct.dcm": small_dicom}), "application/zip"),
                                                     "report": ("report.dcm", sr_bytes, "application/dicom")})
    assert r.status_code == 202, r.text
    assert client.get(f"/studies/{r.json()['id']}", headers=rd).json()["report_text"] == expected
    # 2. no report part: the SR inside the study's zip is the report (same study and report: the same job)
    r2 = client.post("/studies", headers=sub,
                     files={"file": ("s.zip", zip_bytes({"ct.dcm": small_dicom, "sr.dcm": sr_bytes}), "application/zip")})
    assert r2.status_code == 202 and r2.json()["id"] == r.json()["id"] and r2.json()["duplicate"]


def test_streamed_body_without_length_is_cut_at_the_limit(service, small_dicom):
    app, client, tokens = service(max_upload_mb=0.05)
    before = _state(app)

    def chunks():
        for _ in range(20):
            yield b"x" * 8192

    r = client.post("/studies", headers={**auth(tokens["submitter"]),
                                         "Content-Type": "multipart/form-data; boundary=zzz"}, content=chunks())
    assert r.status_code == 413 and r.json()["error"] == "input_too_large"
    assert _state(app) == before


def test_json_bodies_elsewhere_are_capped_at_1_mib(service):
    app, client, tokens = service()
    r = client.post("/tokens", headers={**auth(tokens["admin"]), "Content-Type": "application/json"},
                    content=b'{"role": "reader", "name": "' + b"a" * (2 << 20) + b'"}')
    assert r.status_code == 413 and r.json()["error"] == "input_too_large"
