"""`preread serve` end to end on one real study (shared with the browser test): result, overlays, slices and
outlines, SEG and SR downloads, the audit trail of who saw what, and `preread worklist`."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import httpx
import pydicom
from PIL import Image

from tests.serving.conftest import auth, service_env


def test_done_study_result_artifacts_and_audit(live_service):
    base, tokens, job_id, data_dir = live_service
    rd = auth(tokens["reader"])
    d = httpx.get(f"{base}/studies/{job_id}", headers=rd).json()
    res = d["result"]
    assert d["status"] == "done" and d["verdict"] == res["verdict"]
    for key in ("study_uid", "series_uid", "series", "ai_findings", "report_findings", "report_context", "matches",
                "discordances", "verdict", "priority", "model", "timings_s"):
        assert key in res
    assert res["series"]["slices"] == 16 and res["report_findings"], res["report_findings"]
    index = httpx.get(f"{base}/studies/{job_id}/viewer", headers=rd).json()
    assert index["slices"] == 16 and len(index["instance_numbers"]) == 16
    for kind, mode in (("slices", "L"), ("outlines", "RGBA")):
        r = httpx.get(f"{base}/studies/{job_id}/{kind}/0", headers=rd)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        img = Image.open(io.BytesIO(r.content))
        assert img.mode == mode and img.size == (index["cols"], index["rows"])
    assert httpx.get(f"{base}/studies/{job_id}/slices/16", headers=rd).status_code == 404
    assert httpx.get(f"{base}/studies/{job_id}/slices/0", headers=auth(tokens["submitter"])).status_code == 403
    names = httpx.get(f"{base}/studies/{job_id}/overlays", headers=rd).json()["overlays"]
    assert len(names) == len(res["ai_findings"])
    if res["ai_findings"]:
        png = httpx.get(f"{base}/studies/{job_id}/overlays/{names[0]}", headers=rd)
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        outlined = set(index["outlined_slices"])
        assert outlined, "an AI finding but no outline on any slice"
        for kind, sop_class in (("seg", "1.2.840.10008.5.1.4.1.1.66.4"), ("sr", None)):
            r = httpx.get(f"{base}/studies/{job_id}/{kind}", headers=rd)
            assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
            ds = pydicom.dcmread(io.BytesIO(r.content), stop_before_pixels=True)
            assert ds.StudyInstanceUID == res["study_uid"]
            if sop_class:
                assert ds.SOPClassUID == sop_class
            else:
                assert ds.Modality == "SR"
    audit = httpx.get(f"{base}/audit", headers=auth(tokens["admin"]), params={"job_id": job_id}).json()["items"]
    actions = {(a["action"], a["actor"]) for a in audit}
    assert ("study.view", "live-reader") in actions and ("job.submit", "live-submitter") in actions
    assert any(a == "job.done" for a, _ in actions)
    if res["ai_findings"]:
        assert ("study.download_seg", "live-reader") in actions and ("study.download_sr", "live-reader") in actions
    # the CLI reads the same store
    out = subprocess.run([sys.executable, "-c", "from serving.cli import run; run()", "worklist", "--json", "-"],
                         env=service_env(data_dir), capture_output=True, text=True, check=True)
    page = json.loads(out.stdout)
    assert [it["id"] for it in page["items"]] == [job_id] and page["items"][0]["status"] == "done"
    # the service log holds no report text (no patient information in logs)
    log = (data_dir / "serve.log").read_text()
    assert "spiculated" not in log
