"""Studies: intake (upload or PACS pull), status and result, artifacts (overlays, slices, SEG, SR), reviews."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Path as PathParam, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from pipelines.errors import ConfigError, NotFoundError, PrereadError, ServingError
from serving.api.deps import QueueDep, Reader, ReaderOrSubmitter, SettingsDep, StoreDep, Submitter
from serving.dicomweb import check_uid
from serving.intake import (report_from_bytes, report_from_study, save_upload, single_study_uid, staging_dir,
                            unpack_study)
from serving.worker import job_dir

log = logging.getLogger(__name__)
router = APIRouter(tags=["studies"])

JobId = Annotated[str, PathParam(pattern=r"^[0-9a-f-]{36}$", description="the id answered by POST /studies")]
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class PullRequest(BaseModel):
    """Pull a study from the PACS (PREREAD_DICOMWEB_URL) by its StudyInstanceUID."""

    study_uid: str = Field(min_length=1, max_length=64, pattern=r"^[0-9]+(\.[0-9]+)*$")
    report: str | None = Field(default=None, description="report text; when absent, the study's DICOM SR report "
                                                          "on the PACS is used")


class Accepted(BaseModel):
    id: str
    status: str
    duplicate: bool


class ReviewIn(BaseModel):
    action: Literal["agree", "disagree", "comment"]
    comment: str | None = Field(default=None, max_length=5000)
    finding_id: str | None = Field(default=None, max_length=50)


_INTAKE_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary", "description": "zip of the study's DICOM"},
                               "report": {"type": "string",
                                          "description": "the report: text, or a DICOM SR file; when absent, "
                                                         "a DICOM SR report inside the zip is used"}}}},
            "application/json": {"schema": PullRequest.model_json_schema()},
        },
    }
}


def _pacs_report(settings, study_uid: str) -> str | None:
    from serving.dicomweb import DicomWebClient

    with DicomWebClient(settings.dicomweb_url, timeout_s=settings.dicomweb_timeout_s,
                        token=settings.dicomweb_token) as client:
        return client.report_text(study_uid)


def _check_report(text: str | None, settings) -> str:
    if text is None or not text.strip():
        raise ServingError("the report is missing or empty",
                           hint="send the report text (or a DICOM SR) as 'report', or include the SR in the study")
    if len(text) > settings.max_report_chars:
        raise ServingError(f"the report has {len(text)} characters, above the limit of {settings.max_report_chars}")
    if "\x00" in text:
        raise ServingError("the report contains NUL characters; send plain text")
    return text


@router.post("/studies", status_code=202, response_model=Accepted, openapi_extra=_INTAKE_SCHEMA,
             summary="Submit a study (zip upload + report, or a StudyInstanceUID to pull from the PACS)",
             responses={400: {}, 401: {}, 403: {}, 413: {}, 415: {}, 422: {}, 429: {}})
async def submit_study(request: Request, who: Submitter, settings: SettingsDep, queue: QueueDep) -> JSONResponse:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    await run_in_threadpool(queue.check_capacity)
    if ctype == "application/json":
        try:
            body = PullRequest.model_validate(json.loads(await request.body() or b"null"))
        except (ValueError, ValidationError) as err:
            raise ServingError(f"invalid JSON body: {' '.join(str(err).split())[:300]}",
                               hint='send {"study_uid": "1.2.3", "report": "..."}') from err
        if not settings.dicomweb_url:
            raise ConfigError("this service has no PACS configured (PREREAD_DICOMWEB_URL)",
                              hint="upload the study as a zip instead")
        study_uid = check_uid(body.study_uid)
        report = body.report
        if report is None:
            report = await run_in_threadpool(_pacs_report, settings, study_uid)
        report = _check_report(report, settings)
        res = await run_in_threadpool(queue.enqueue, study_uid=study_uid, report_text=report,
                                      source="pacs", submitted_by=who.token_id, actor=who.name)
    elif ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        res = await _submit_upload(request, who, settings, queue)
    else:
        err = ServingError(f"unsupported Content-Type {ctype or '(none)'!r}",
                           hint="send multipart/form-data (file, report) or application/json (study_uid, report)")
        return JSONResponse({"error": "unsupported_media_type", "detail": str(err)}, status_code=415)
    return JSONResponse({"id": res.id, "status": "accepted", "duplicate": not res.created}, status_code=202,
                        headers={"Location": f"/studies/{res.id}"})


async def _submit_upload(request: Request, who, settings, queue):
    try:
        form = await request.form(max_files=2, max_fields=4)
    except PrereadError:
        raise
    except Exception as err:  # noqa: BLE001 - starlette raises its own errors for malformed multipart
        raise ServingError(f"malformed multipart body: {type(err).__name__}") from err
    upload = form.get("file")
    report = form.get("report")
    if not isinstance(upload, UploadFile):
        raise ServingError("the multipart body has no 'file' part", hint="send the study as a zip in 'file'")
    if isinstance(report, UploadFile):  # a report file: text in any encoding, or a DICOM SR
        report = report_from_bytes(await report.read(settings.max_report_chars * 4 + 1))
    if report is not None and not report.strip():
        report = None
    if report is not None:
        report = _check_report(report, settings)
    stage = staging_dir(settings.incoming_dir)
    try:
        archive = stage / "upload.zip"
        await save_upload(upload, archive, settings.max_upload_bytes)
        study = await run_in_threadpool(unpack_study, archive, stage / "study")
        study_uid = await run_in_threadpool(single_study_uid, study)
        if report is None:
            report = _check_report(await run_in_threadpool(report_from_study, study), settings)
        existing = await run_in_threadpool(queue.find, study_uid, report)
        if existing is not None:  # same study, same report: the same job (a failed one is queued again)
            return await run_in_threadpool(queue.enqueue, study_uid=study_uid, report_text=report,
                                           source="upload", submitted_by=who.token_id, actor=who.name)
        import uuid

        job_id = str(uuid.uuid4())
        jdir = job_dir(settings, job_id)
        jdir.mkdir(parents=True)
        shutil.move(str(study), str(jdir / "study"))
        try:
            res = await run_in_threadpool(queue.enqueue, study_uid=study_uid, report_text=report, source="upload",
                                          submitted_by=who.token_id, actor=who.name, job_id=job_id)
        except BaseException:
            shutil.rmtree(jdir, ignore_errors=True)
            raise
        if not res.created:
            shutil.rmtree(jdir, ignore_errors=True)
        return res
    finally:
        await form.close()
        shutil.rmtree(stage, ignore_errors=True)


@router.get("/studies/{job_id}", summary="A study's status and, when done, its StudyResult")
def get_study(job_id: JobId, who: ReaderOrSubmitter, store: StoreDep) -> dict:
    detail = store.study_detail(job_id)
    store.audit(who, "study.view", job_id)
    if who.role == "submitter":  # the sender follows its job; reading results is for readers
        detail.pop("report_text", None)
        detail["reviews"] = []
    return detail


def _done_artifacts(store, job_id: str) -> Path:
    job = store.get_job(job_id)
    if job.status != "done" or not job.artifacts_dir:
        raise NotFoundError(f"study {job_id} is {job.status}; its images exist once it is done")
    return Path(job.artifacts_dir)


def _artifact(store, job_id: str, key: str) -> Path:
    job = store.get_job(job_id)
    if job.status != "done":
        raise NotFoundError(f"study {job_id} is {job.status}; its {key.upper()} exists once it is done")
    path = ((job.result or {}).get("artifacts") or {}).get(key)
    if not path or not Path(path).is_file():
        raise NotFoundError(f"study {job_id} has no DICOM {key.upper()} (no AI finding to encode)")
    return Path(path)


@router.get("/studies/{job_id}/overlays", summary="Names of the study's overlay images")
def list_overlays(job_id: JobId, who: Reader, store: StoreDep) -> dict:
    job = store.get_job(job_id)
    paths = ((job.result or {}).get("artifacts") or {}).get("overlays") or [] if job.status == "done" else []
    return {"overlays": [Path(p).name for p in paths]}


@router.get("/studies/{job_id}/overlays/{name}", response_class=FileResponse, summary="One overlay image (PNG)")
def get_overlay(job_id: JobId, name: str, who: Reader, store: StoreDep):
    if not NAME_RE.match(name):
        raise ServingError("invalid overlay name")
    job = store.get_job(job_id)
    paths = ((job.result or {}).get("artifacts") or {}).get("overlays") or [] if job.status == "done" else []
    by_name = {Path(p).name: Path(p) for p in paths}
    if name not in by_name or not by_name[name].is_file():
        raise NotFoundError(f"study {job_id} has no overlay {name!r}")
    store.audit(who, "study.overlay", job_id, {"name": name})
    return FileResponse(by_name[name], media_type="image/png")


@router.get("/studies/{job_id}/viewer", summary="Slice count, instance numbers and finding slices for the viewer")
def viewer_index(job_id: JobId, who: Reader, store: StoreDep) -> dict:
    base = _done_artifacts(store, job_id)
    index = base / "viewer" / "viewer.json"
    if not index.is_file():
        raise NotFoundError(f"study {job_id} has no slice images (they could not be rendered)")
    return json.loads(index.read_text())


def _slice_file(store, job_id: str, kind: str, k: int) -> Path:
    base = _done_artifacts(store, job_id) / "viewer" / kind
    path = base / f"{k:04d}.png"
    if k < 0 or not path.is_file():
        raise NotFoundError(f"study {job_id} has no slice {k}")
    return path


@router.get("/studies/{job_id}/slices/{k}", response_class=FileResponse,
            summary="Slice k (0 = first in the volume's order) in a lung window, PNG")
def get_slice(job_id: JobId, k: int, who: Reader, store: StoreDep):
    return FileResponse(_slice_file(store, job_id, "slices", k), media_type="image/png")


@router.get("/studies/{job_id}/outlines/{k}", response_class=FileResponse,
            summary="The AI outlines on slice k, transparent PNG")
def get_outline(job_id: JobId, k: int, who: Reader, store: StoreDep):
    return FileResponse(_slice_file(store, job_id, "outlines", k), media_type="image/png")


@router.get("/studies/{job_id}/seg", response_class=FileResponse, summary="The AI findings as DICOM SEG")
def get_seg(job_id: JobId, who: Reader, store: StoreDep):
    path = _artifact(store, job_id, "seg")
    store.audit(who, "study.download_seg", job_id)
    return FileResponse(path, media_type="application/dicom", filename=f"{job_id}-seg.dcm")


@router.get("/studies/{job_id}/sr", response_class=FileResponse, summary="The AI measurements as DICOM SR")
def get_sr(job_id: JobId, who: Reader, store: StoreDep):
    path = _artifact(store, job_id, "sr")
    store.audit(who, "study.download_sr", job_id)
    return FileResponse(path, media_type="application/dicom", filename=f"{job_id}-sr.dcm")


@router.post("/studies/{job_id}/reviews", status_code=201, summary="Record agree / disagree / comment")
def add_review(job_id: JobId, body: ReviewIn, who: Reader, store: StoreDep) -> dict:
    return store.add_review(job_id, who, body.action, body.comment, body.finding_id)


@router.get("/studies/{job_id}/reviews", summary="The study's reviews, oldest first")
def list_reviews(job_id: JobId, who: Reader, store: StoreDep) -> dict:
    return {"reviews": store.reviews(job_id)}
