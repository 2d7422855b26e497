"""Against a real Orthanc with its DICOMweb plugin (Debian packages), started here on loopback with its own
config: a study stored in Orthanc is found (QIDO-RS), pulled (WADO-RS), analysed by the service, and its SEG
and SR are stored back (STOW-RS) and appear in Orthanc."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.serving.conftest import auth, free_port, pipeline_ready, stop_process, wait_for

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
pytestmark = pytest.mark.skipif(not (Path(ORTHANC).exists() and PLUGIN.exists()),
                                reason="orthanc / orthanc-dicomweb not installed (make system-deps)")


@pytest.fixture()  # a clean PACS per test: the tests must not see each other's studies
def orthanc(tmp_path_factory):
    """Orthanc on 127.0.0.1 (remote access off, DICOM port off, DICOMweb on); yields its HTTP root."""
    d = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    cfg = {
        "Name": "preread-test", "StorageDirectory": str(d / "storage"), "IndexDirectory": str(d / "index"),
        "HttpPort": port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomServerEnabled": False, "DicomPort": 0, "HttpsCACertificates": "",
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": False},
    }
    (d / "orthanc.json").write_text(json.dumps(cfg))
    log = open(d / "orthanc.log", "w")
    proc = subprocess.Popen([ORTHANC, str(d / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, cwd=d)
    root = f"http://127.0.0.1:{port}"
    try:
        def up():
            if proc.poll() is not None:
                pytest.fail("Orthanc exited: " + (d / "orthanc.log").read_text()[-2000:])
            try:
                return httpx.get(root + "/system", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(up, 60, "Orthanc to start")
        yield root
    finally:
        stop_process(proc, 20)
        log.close()


def _upload_to_orthanc(root: str, folder: Path) -> str:
    uids = set()
    for p in sorted(folder.glob("*.dcm")):
        r = httpx.post(root + "/instances", content=p.read_bytes(), timeout=30)
        assert r.status_code == 200, r.text
        uids.add(str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID))
    assert len(uids) == 1
    return uids.pop()


def test_dicomweb_client_search_retrieve_store(orthanc, shared_data, tmp_path):
    from serving.dicomweb import DicomWebClient

    folder = shared_data / "ct" / "lidc-idri-0003"
    study_uid = _upload_to_orthanc(orthanc, folder)
    with DicomWebClient(orthanc + "/dicom-web") as client:
        found = client.search_studies(StudyInstanceUID=study_uid)
        assert [s["0020000D"]["Value"][0] for s in found] == [study_uid]
        paths = client.retrieve_study(study_uid, tmp_path / "pulled")
        sent = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in folder.glob("*.dcm")}
        got = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths}
        assert got == sent and len(paths) == len(sent)
        other = shared_data / "dicom" / "pydicom-testfiles" / "CT_small.dcm"
        out = client.store([other])
        assert out["stored"] == [str(pydicom.dcmread(other).SOPInstanceUID)] and not out["failed"]
        ds = pydicom.dcmread(other, stop_before_pixels=True)
        assert client.search_studies(StudyInstanceUID=str(ds.StudyInstanceUID))
        from pipelines.errors import IngestError

        with pytest.raises(IngestError):
            client.retrieve_study("1.2.3.4.5.6.7.8.9", tmp_path / "none")


@pytest.mark.slow
def test_service_pulls_analyses_and_stores_seg_and_sr_back(orthanc, shared_data, service):
    reason = pipeline_ready()
    if reason:
        pytest.skip(f"end-to-end pipeline not available yet ({reason})")
    from serving.worker import Worker

    study_uid = _upload_to_orthanc(orthanc, shared_data / "ct" / "lidc-idri-0001")
    app, client, tokens = service(dicomweb_url=orthanc + "/dicom-web")
    report = "CT chest: a 2.5 cm spiculated mass in the right upper lobe. No other nodules."
    r = client.post("/studies", headers=auth(tokens["submitter"]), json={"study_uid": study_uid, "report": report})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert client.post("/studies", headers=auth(tokens["submitter"]),
                       json={"study_uid": study_uid, "report": report}).json()["id"] == job_id
    worker = Worker(app.state.settings, "orthanc-test", db=app.state.db)
    assert worker.run_once()
    detail = client.get(f"/studies/{job_id}", headers=auth(tokens["reader"])).json()
    assert detail["status"] == "done", detail
    result = detail["result"]
    assert result["study_uid"] == study_uid
    if not result["ai_findings"]:
        pytest.fail("the AI found nothing on the LIDC nodule slab; no SEG/SR to store")
    stored = set(detail["pacs_store"]["stored"])
    seg = pydicom.dcmread(result["artifacts"]["seg"], stop_before_pixels=True)
    sr = pydicom.dcmread(result["artifacts"]["sr"], stop_before_pixels=True)
    assert {str(seg.SOPInstanceUID), str(sr.SOPInstanceUID)} == stored
    instances = httpx.get(f"{orthanc}/dicom-web/studies/{study_uid}/instances",
                          headers={"Accept": "application/dicom+json"}, timeout=30).json()
    by_modality = {}
    for inst in instances:
        by_modality.setdefault(inst["00080060"]["Value"][0], set()).add(inst["00080018"]["Value"][0])
    assert str(seg.SOPInstanceUID) in by_modality.get("SEG", set())
    assert str(sr.SOPInstanceUID) in by_modality.get("SR", set())
    assert len(by_modality["CT"]) == 16


def test_poller_queues_new_ct_studies_with_an_sr_report(orthanc, shared_data, service):
    import io

    from pipelines.report_text import sr_text
    from serving.poller import poll_once

    folder = shared_data / "ct" / "lidc-idri-0002"
    study_uid = _upload_to_orthanc(orthanc, folder)
    app, client, tokens = service(dicomweb_url=orthanc + "/dicom-web")
    first = poll_once(app.state.settings, app.state.queue)
    assert first.without_report >= 1 and not first.queued  # no report on the PACS yet: nothing to compare
    sr = pydicom.dcmread(shared_data / "dicom" / "pydicom-testfiles" / "test-SR.dcm")
    sr.StudyInstanceUID = study_uid
    buf = io.BytesIO()
    sr.save_as(buf)
    assert httpx.post(orthanc + "/instances", content=buf.getvalue(), timeout=30).status_code == 200
    second = poll_once(app.state.settings, app.state.queue)
    assert len(second.queued) == 1
    d = client.get(f"/studies/{second.queued[0]}", headers=auth(tokens["reader"])).json()
    assert d["study_uid"] == study_uid and d["source"] == "pacs" and d["status"] == "queued"
    assert d["report_text"] == sr_text(buf.getvalue())
    assert poll_once(app.state.settings, app.state.queue).queued == []  # known now
