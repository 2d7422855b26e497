"""Safe extraction of zip archives of DICOM files.

Refused with :class:`UnsafeArchiveError` before anything is written: entries whose name is absolute or
climbs out of the target folder (``..``, drive letters), symbolic links and other non-regular entries,
encrypted entries, more entries than ``limits.archive.max_entries``, and declared sizes or compression
ratios beyond the limits. Declared sizes can lie, so the bytes actually written are counted as well and
extraction stops (and the partial output is removed) the moment a limit is passed.
"""

from __future__ import annotations

import logging
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from pipelines.errors import IngestError, UnsafeArchiveError
from pipelines.ingest_config import IngestLimits

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def is_zip(path: Path) -> bool:
    """True for a regular file that starts with a zip local-file or end-of-central-directory signature."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head in (b"PK\x03\x04", b"PK\x05\x06") and zipfile.is_zipfile(path)


def _safe_member_path(name: str) -> PurePosixPath:
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"archive entry has an empty or invalid name: {name!r}")
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if p.is_absolute() or norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeArchiveError(f"archive entry {name!r} has an absolute path; refusing to extract")
    if any(part == ".." for part in p.parts):
        raise UnsafeArchiveError(f"archive entry {name!r} climbs out of the extraction folder; refusing to extract")
    return p


def _check_members(zf: zipfile.ZipFile, limits: IngestLimits) -> list[zipfile.ZipInfo]:
    lim = limits.archive
    infos = zf.infolist()
    if len(infos) > lim.max_entries:
        raise UnsafeArchiveError(
            f"archive has {len(infos)} entries, more than the limit of {lim.max_entries}",
            hint="split the study or raise limits.archive.max_entries in configs/ingest.yaml")
    total = 0
    total_compressed = 0
    files = []
    for info in infos:
        _safe_member_path(info.filename)
        mode = (info.external_attr >> 16) & 0xFFFF
        if info.create_system == 3 and mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            kind = "symbolic link" if stat.S_ISLNK(mode) else "special file"
            raise UnsafeArchiveError(f"archive entry {info.filename!r} is a {kind}; refusing to extract")
        if info.flag_bits & 0x1:
            raise UnsafeArchiveError(f"archive entry {info.filename!r} is encrypted; send an unencrypted zip")
        if info.is_dir():
            continue
        if info.file_size > lim.max_entry_bytes:
            raise UnsafeArchiveError(
                f"archive entry {info.filename!r} expands to {info.file_size} bytes, "
                f"more than the limit of {lim.max_entry_bytes}")
        if info.file_size > 1 << 20 and info.file_size > lim.max_ratio * max(info.compress_size, 1):
            raise UnsafeArchiveError(
                f"archive entry {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}x "
                f"(limit {lim.max_ratio:.0f}x): looks like a zip bomb")
        total += info.file_size
        total_compressed += info.compress_size
        files.append(info)
    if total > lim.max_total_bytes:
        raise UnsafeArchiveError(
            f"archive expands to {total} bytes, more than the limit of {lim.max_total_bytes}")
    if total > 1 << 20 and total > lim.max_ratio * max(total_compressed, 1):
        raise UnsafeArchiveError(
            f"archive expands {total / max(total_compressed, 1):.0f}x overall (limit {lim.max_ratio:.0f}x): "
            "looks like a zip bomb")
    return files


def extract_zip(archive: Path, target: Path, limits: IngestLimits) -> int:
    """Extract ``archive`` into the empty folder ``target``; returns the number of files written.

    Raises :class:`UnsafeArchiveError` (nothing left behind) for any unsafe entry or exceeded limit, and
    :class:`IngestError` for a corrupt archive.
    """
    lim = limits.archive
    target = target.resolve()
    target.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as ex:
        raise IngestError(f"{archive.name} is not a readable zip archive: {ex}") from ex
    written_total = 0
    n = 0
    try:
        with zf:
            members = _check_members(zf, limits)
            for info in members:
                rel = _safe_member_path(info.filename)
                dest = (target / Path(*rel.parts)).resolve()
                if dest != target and target not in dest.parents:
                    raise UnsafeArchiveError(f"archive entry {info.filename!r} escapes the extraction folder")
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.exists():
                    raise UnsafeArchiveError(f"archive entry {info.filename!r} is duplicated or collides with a folder")
                written = 0
                with zf.open(info) as src, open(dest, "xb") as out:
                    while True:
                        chunk = src.read(_CHUNK)
                        if not chunk:
                            break
                        written += len(chunk)
                        written_total += len(chunk)
                        if written > max(info.file_size, 0) + _CHUNK or written > lim.max_entry_bytes:
                            raise UnsafeArchiveError(
                                f"archive entry {info.filename!r} expands beyond its declared size or the limit")
                        if written_total > lim.max_total_bytes:
                            raise UnsafeArchiveError(
                                f"archive expands beyond the limit of {lim.max_total_bytes} bytes")
                        out.write(chunk)
                n += 1
    except UnsafeArchiveError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as ex:
        shutil.rmtree(target, ignore_errors=True)
        raise IngestError(f"{archive.name}: the zip archive is corrupt or uses an unsupported feature: {ex}") from ex
    log.info("extracted %d files (%d bytes) from archive", n, written_total)
    return n
