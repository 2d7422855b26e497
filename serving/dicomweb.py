"""A small DICOMweb client over httpx: QIDO-RS (search), WADO-RS (retrieve) and STOW-RS (store).

PS3.18: studies are searched with ``GET {root}/studies`` (application/dicom+json), retrieved whole with
``GET {root}/studies/{uid}`` as ``multipart/related; type="application/dicom"``, and stored with
``POST {root}/studies`` in the same multipart form. UIDs are sent exactly as given (some servers do not
percent-decode, so a UID is checked to be digits and dots and never escaped).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from pathlib import Path

import httpx

from pipelines.errors import IngestError, ReportParseError, ServingError

log = logging.getLogger(__name__)

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
DICOM_PART = 'multipart/related; type="application/dicom"'


class DicomWebError(ServingError):
    """The PACS refused or failed a DICOMweb request."""

    code = "dicomweb_error"
    http_status = 502


def check_uid(uid: str) -> str:
    uid = (uid or "").strip()
    if not uid or len(uid) > 64 or not UID_RE.match(uid):
        raise ServingError(f"{uid[:80]!r} is not a DICOM UID", hint="a UID is up to 64 digits and dots, e.g. 1.2.840.1")
    return uid


def _boundary(content_type: str) -> bytes:
    m = re.search(r'boundary="?([^";]+)"?', content_type, flags=re.I)
    if not m:
        raise DicomWebError(f"multipart answer without a boundary (Content-Type {content_type!r})")
    return m.group(1).encode()


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The payloads of a multipart/related body (headers dropped)."""
    delim = b"--" + _boundary(content_type)
    parts = []
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        parts.append(payload)
    return parts


class DicomWebClient:
    def __init__(self, root: str, *, timeout_s: float = 120.0, token: str | None = None,
                 client: httpx.Client | None = None):
        self.root = root.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = client or httpx.Client(timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _get(self, url: str, **kw) -> httpx.Response:
        try:
            resp = self._client.get(url, **kw)
        except httpx.HTTPError as err:
            raise DicomWebError(f"PACS unreachable at {self.root}: {type(err).__name__}: {err}") from err
        return resp

    # -- QIDO-RS ----------------------------------------------------------------------------------------
    def search_studies(self, **params: str) -> list[dict]:
        """QIDO-RS study search; returns the DICOM JSON objects (tag → {vr, Value})."""
        resp = self._get(f"{self.root}/studies", params=params, headers={"Accept": "application/dicom+json"})
        if resp.status_code == 204:
            return []
        if resp.status_code != 200:
            raise DicomWebError(f"QIDO-RS search failed: HTTP {resp.status_code}")
        return resp.json() or []

    def search_instances(self, study_uid: str, **params: str) -> list[dict]:
        study_uid = check_uid(study_uid)
        resp = self._get(f"{self.root}/studies/{study_uid}/instances", params=params,
                         headers={"Accept": "application/dicom+json"})
        if resp.status_code == 204:
            return []
        if resp.status_code != 200:
            raise DicomWebError(f"QIDO-RS instance search failed: HTTP {resp.status_code}")
        return resp.json() or []

    # -- WADO-RS ----------------------------------------------------------------------------------------
    def retrieve_study(self, study_uid: str, dest: Path, *, max_bytes: int | None = None) -> list[Path]:
        """Every instance of the study, written as ``dest/NNNNN.dcm``; :class:`IngestError` when there is none."""
        study_uid = check_uid(study_uid)
        url = f"{self.root}/studies/{study_uid}"
        resp = None
        for accept in (DICOM_PART + "; transfer-syntax=*", DICOM_PART):
            resp = self._get(url, headers={"Accept": accept})
            if resp.status_code not in (406, 400):
                break
        assert resp is not None
        if resp.status_code == 404:
            raise IngestError(f"study {study_uid} is not on the PACS", hint="check the StudyInstanceUID")
        if resp.status_code != 200:
            raise DicomWebError(f"WADO-RS retrieve of study {study_uid} failed: HTTP {resp.status_code}")
        if max_bytes is not None and len(resp.content) > max_bytes:
            raise IngestError(f"study {study_uid} is {len(resp.content)} bytes, above the limit of {max_bytes}")
        parts = split_multipart(resp.content, resp.headers.get("content-type", ""))
        if not parts:
            raise IngestError(f"the PACS returned no instances for study {study_uid}")
        dest.mkdir(parents=True, exist_ok=True)
        paths = []
        for n, payload in enumerate(parts, start=1):
            p = dest / f"{n:05d}.dcm"
            p.write_bytes(payload)
            paths.append(p)
        log.info("retrieved %d instances over WADO-RS", len(paths))
        return paths

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """One instance's DICOM bytes (WADO-RS)."""
        url = (f"{self.root}/studies/{check_uid(study_uid)}/series/{check_uid(series_uid)}"
               f"/instances/{check_uid(sop_uid)}")
        resp = self._get(url, headers={"Accept": DICOM_PART + "; transfer-syntax=*"})
        if resp.status_code in (400, 406):
            resp = self._get(url, headers={"Accept": DICOM_PART})
        if resp.status_code != 200:
            raise DicomWebError(f"WADO-RS retrieve of one instance failed: HTTP {resp.status_code}")
        parts = split_multipart(resp.content, resp.headers.get("content-type", ""))
        if len(parts) != 1:
            raise DicomWebError(f"WADO-RS answered {len(parts)} parts for one instance")
        return parts[0]

    def report_text(self, study_uid: str) -> str | None:
        """The text of the study's first DICOM SR with text content (the radiology report), or None."""
        from pipelines.report_text import sr_text

        for inst in self.search_instances(study_uid, Modality="SR"):
            series = ((inst.get("0020000E") or {}).get("Value") or [None])[0]
            sop = ((inst.get("00080018") or {}).get("Value") or [None])[0]
            if not series or not sop:
                continue
            try:
                text = sr_text(self.retrieve_instance(study_uid, series, sop))
            except ReportParseError:  # an SR without text items
                continue
            if text.strip():
                return text
        return None

    # -- STOW-RS ----------------------------------------------------------------------------------------
    def store(self, files: Iterable[Path], study_uid: str | None = None) -> dict:
        """STOW-RS the given DICOM files; returns {"stored": [SOPInstanceUID...], "failed": [...]}."""
        boundary = uuid.uuid4().hex
        body = bytearray()
        n = 0
        for f in files:
            body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            body += Path(f).read_bytes() + b"\r\n"
            n += 1
        body += f"--{boundary}--\r\n".encode()
        url = f"{self.root}/studies" + (f"/{check_uid(study_uid)}" if study_uid else "")
        headers = {"Content-Type": f'{DICOM_PART}; boundary={boundary}', "Accept": "application/dicom+json"}
        try:
            resp = self._client.post(url, content=bytes(body), headers=headers)
        except httpx.HTTPError as err:
            raise DicomWebError(f"PACS unreachable at {self.root}: {type(err).__name__}: {err}") from err
        if resp.status_code not in (200, 202):
            raise DicomWebError(f"STOW-RS of {n} instances failed: HTTP {resp.status_code}")
        data = resp.json() if resp.content else {}

        def uids(tag: str) -> list[str]:
            seq = (data.get(tag) or {}).get("Value") or []
            return [((item.get("00081155") or {}).get("Value") or [None])[0] for item in seq]

        out = {"stored": uids("00081199"), "failed": uids("00081198")}
        if out["failed"]:
            raise DicomWebError(f"the PACS refused {len(out['failed'])} of {n} instances (STOW-RS)")
        log.info("stored %d instances over STOW-RS", len(out["stored"]))
        return out
