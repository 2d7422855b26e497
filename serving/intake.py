"""Taking a study in: an uploaded zip is extracted safely (``pipelines.ingest_archive``) and its single
StudyInstanceUID read from the DICOM headers, before the job is queued."""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from pipelines.errors import IngestError, InputTooLargeError, ReportParseError, ServingError
from pipelines.ingest_archive import extract_zip, is_zip
from pipelines.ingest_config import default_ingest_config
from serving.dicomweb import UID_RE

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


async def save_upload(upload, dest: Path, max_bytes: int) -> int:
    """Stream an UploadFile to ``dest``, refusing more than ``max_bytes``; returns the size."""
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(dest, "xb") as out:
            while True:
                chunk = await upload.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise InputTooLargeError(f"the upload is larger than the limit of {max_bytes} bytes",
                                             hint="raise PREREAD_MAX_UPLOAD_MB or send the study from the PACS")
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if size == 0:
        dest.unlink(missing_ok=True)
        raise ServingError("the uploaded file is empty", hint="send a zip of the study's DICOM files as 'file'")
    return size


def unpack_study(archive: Path, target: Path) -> Path:
    """Extract an uploaded zip into ``target`` (refusing traversal, links and bombs); returns ``target``."""
    if not is_zip(archive):
        raise IngestError("the uploaded file is not a zip archive", hint="send a zip of the study's DICOM files")
    n = extract_zip(archive, target, default_ingest_config().limits)
    if n == 0:
        shutil.rmtree(target, ignore_errors=True)
        raise IngestError("the zip archive holds no files", hint="send a zip of the study's DICOM files")
    return target


def _headers(folder: Path, max_files: int, tag: str):
    """(path, header with ``tag`` only) for each readable DICOM file under ``folder``, at most ``max_files``."""
    for n, p in enumerate(p for p in sorted(folder.rglob("*")) if p.is_file()):
        if n >= max_files:
            return
        try:
            yield p, pydicom.dcmread(p, stop_before_pixels=True, specific_tags=[tag])
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError):
            continue


def study_uids(folder: Path, max_files: int = 20000) -> set[str]:
    """The StudyInstanceUIDs of the DICOM files under ``folder`` (headers only)."""
    uids = (str(getattr(ds, "StudyInstanceUID", "") or "").strip()
            for _, ds in _headers(folder, max_files, "StudyInstanceUID"))
    return {u for u in uids if u}


def single_study_uid(folder: Path) -> str:
    uids = study_uids(folder)
    if not uids:
        raise IngestError("the upload holds no DICOM file with a StudyInstanceUID",
                          hint="send a zip of one CT study's DICOM files")
    if len(uids) > 1:
        raise IngestError(f"the upload holds {len(uids)} different studies; send one study per request")
    uid = uids.pop()
    if len(uid) > 64 or not UID_RE.match(uid):
        raise IngestError("the upload's StudyInstanceUID is not a valid DICOM UID")
    return uid


def staging_dir(incoming: Path) -> Path:
    return incoming / uuid.uuid4().hex


def report_from_bytes(data: bytes) -> str:
    """Report text from an uploaded part: a DICOM SR's text items, or text in any encoding."""
    from pipelines.report_text import decode_bytes, is_dicom, sr_text

    return sr_text(data) if is_dicom(data) else decode_bytes(data)


def report_from_study(folder: Path, max_files: int = 20000) -> str | None:
    """The text of the first DICOM SR (Modality SR) with text among the study's files, or None."""
    from pipelines.report_text import sr_text

    for p, ds in _headers(folder, max_files, "Modality"):
        if str(getattr(ds, "Modality", "")) == "SR":
            try:
                text = sr_text(p.read_bytes())
            except ReportParseError:  # an SR without text items (e.g. measurements only)
                continue
            if text.strip():
                return text
    return None
