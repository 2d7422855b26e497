"""DICOM scanning and pixel decoding for ingest.

Two passes. :func:`scan_file` reads a file's header only (``stop_before_pixels``) and returns one
:class:`SliceRecord` per image frame, with the byte offset of native pixel data when it can be read
directly. :func:`decode_records` then reads the pixels of the chosen slices only, in threads, straight
from the file for native (uncompressed) data and through pydicom's decoders otherwise, and applies each
slice's own Rescale Slope/Intercept and Pixel Padding Value (DICOM PS3.3 C.7.5.1.1.2, C.11.1.1.2).
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, generate_uid

from pipelines.errors import GeometryError, IngestError, InputTooLargeError
from pipelines.ingest_config import IngestConfig
from pipelines.ingest_fastheader import fast_header

log = logging.getLogger(__name__)

CT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
}
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
NATIVE_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
PIXEL_DATA_TAGS = {(0x7FE0, 0x0010): "PixelData", (0x7FE0, 0x0008): "FloatPixelData",
                   (0x7FE0, 0x0009): "DoubleFloatPixelData"}


@dataclass(slots=True)
class SliceRecord:
    """One image frame as found in a file's header (no pixels yet)."""

    path: Path
    rel: str  # path relative to the input root, for messages
    frame: int | None  # 0-based frame index in a multi-frame object, None for single-frame
    n_frames: int
    sop_instance_uid: str
    sop_class_uid: str | None
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str | None
    series_number: int | None
    modality: str | None
    image_type: tuple[str, ...]
    description: str | None
    kernel: str | None
    instance_number: int | None
    acquisition_number: int | None
    rows: int
    cols: int
    pixel_spacing: tuple[float, float] | None  # (row spacing = between rows, column spacing), mm
    ipp: np.ndarray | None
    iop: np.ndarray | None
    slice_thickness: float | None
    slope: float
    intercept: float
    transfer_syntax: str
    lossy_flag: bool
    padding: tuple[int, int] | None  # inclusive raw range of padding values
    pixel_representation: int
    bits_allocated: int
    bits_stored: int
    samples_per_pixel: int
    photometric: str | None
    gantry_tilt_deg: float | None
    pixel_offset: int | None = None  # byte offset of native pixel data of this file (frame 0)
    derived_uids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def is_localizer(self) -> bool:
        return any(t in ("LOCALIZER", "SCOUT", "TOPOGRAM") for t in self.image_type)

    @property
    def is_secondary_capture(self) -> bool:
        return bool(self.sop_class_uid and self.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX))

    @property
    def is_ct(self) -> bool:
        if self.modality:
            return self.modality.upper() == "CT"
        return self.sop_class_uid in CT_SOP_CLASSES or not self.sop_class_uid


@dataclass
class SkippedFile:
    rel: str
    reason: str


# --------------------------------------------------------------------------------------------- files

def iter_files(root: Path, max_files: int) -> tuple[list[Path], list[SkippedFile]]:
    """Regular files under ``root`` (not following links), sorted; raises past ``max_files``."""
    if root.is_file():
        return [root], []
    files: list[Path] = []
    skipped: list[SkippedFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            try:
                st = p.lstat()
            except OSError as ex:
                skipped.append(SkippedFile(_rel(p, root), f"cannot stat: {ex.strerror}"))
                continue
            if not stat.S_ISREG(st.st_mode):
                skipped.append(SkippedFile(_rel(p, root), "not a regular file (link or device); not followed"))
                continue
            files.append(p)
            if len(files) > max_files:
                raise InputTooLargeError(
                    f"input holds more than {max_files} files",
                    hint="send one study at a time or raise limits.max_files in configs/ingest.yaml")
    return files, skipped


def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.relative_to(root)) if root.is_dir() else p.name
    except ValueError:
        return p.name


def _looks_like_dicom(head: bytes) -> tuple[bool, bool]:
    """(is DICOM, needs force): a Part 10 preamble, or a raw dataset starting with a group 0002/0008 tag."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True, False
    if len(head) >= 8:
        g_le = struct.unpack("<H", head[:2])[0]
        g_be = struct.unpack(">H", head[:2])[0]
        if g_le in (0x0002, 0x0008) or g_be in (0x0002, 0x0008):
            return True, True
    return False, False


# ----------------------------------------------------------------------------------------- headers

_TEXT_VRS = {"DS", "IS", "CS", "UI", "LO", "SH", "DA", "TM", "DT", "AS", "ST", "LT", "PN"}
_BIN_VRS = {"US": ("H", 2), "SS": ("h", 2), "UL": ("I", 4), "SL": ("i", 4), "FD": ("d", 8), "FL": ("f", 4)}
_NOFAST = object()


@lru_cache(maxsize=None)
def _tag_vr(kw: str) -> tuple[BaseTag, str]:
    tag = Tag(tag_for_keyword(kw))
    return tag, dictionary_VR(tag)


def _raw_values(ds: Dataset | None, kw: str):
    """Values of a still-raw element decoded directly from its bytes (much faster than pydicom's
    conversion for the ~30 header values read per file); ``_NOFAST`` when pydicom must convert it."""
    if ds is None:
        return None
    tag, dvr = _tag_vr(kw)
    elem = ds._dict.get(tag)
    if elem is None:
        return None
    if not isinstance(elem, RawDataElement):
        return _NOFAST
    vr = elem.VR or dvr
    b = elem.value
    if not b:
        return []
    if vr in _TEXT_VRS:
        txt = b.decode("latin-1").strip(" \x00")
        return [x.strip(" \x00") for x in txt.split("\\")] if txt else []
    if vr in _BIN_VRS:
        code, size = _BIN_VRS[vr]
        n = len(b) // size
        return list(struct.unpack(f"{'<' if elem.is_little_endian else '>'}{n}{code}", b[: n * size]))
    return _NOFAST


def _text(ds: Dataset, kw: str) -> str | None:
    vals = _raw_values(ds, kw)
    if vals is not _NOFAST:
        return next((str(v) for v in vals if str(v)), None) if vals else None
    v = ds.get(kw)
    if v is None:
        return None
    if isinstance(v, pydicom.multival.MultiValue):
        v = v[0] if len(v) else None
        if v is None:
            return None
    s = str(v).strip()
    return s or None


def _strings(ds: Dataset, kw: str) -> tuple[str, ...]:
    vals = _raw_values(ds, kw)
    if vals is _NOFAST:
        v = ds.get(kw)
        vals = [] if v is None else (list(v) if isinstance(v, (list, pydicom.multival.MultiValue)) else [v])
    return tuple(str(x).strip() for x in (vals or []))


def _int(ds: Dataset, kw: str) -> int | None:
    vals = _raw_values(ds, kw)
    if vals is not _NOFAST:
        try:
            return int(float(vals[0])) if vals and vals[0] != "" else None
        except (TypeError, ValueError, OverflowError):
            return None
    v = ds.get(kw)
    if v is None or v == "":
        return None
    try:
        if isinstance(v, pydicom.multival.MultiValue):
            v = v[0]
        return int(float(v))
    except (TypeError, ValueError, OverflowError):
        return None


def _floats(ds: Dataset | None, kw: str, n: int) -> np.ndarray | None:
    if ds is None:
        return None
    vals = _raw_values(ds, kw)
    if vals is _NOFAST:
        v = ds.get(kw)
        if v is None:
            return None
        vals = v if isinstance(v, (list, tuple, pydicom.multival.MultiValue)) else [v]
    elif vals is None:
        return None
    try:
        out = [float(x) for x in vals]
    except (TypeError, ValueError):
        return None
    if len(out) != n or not all(np.isfinite(out)):
        return None
    return np.asarray(out, dtype=np.float64)


def _float(ds: Dataset | None, kw: str) -> float | None:
    a = _floats(ds, kw, 1)
    return None if a is None else float(a[0])


def _first_item(ds: Dataset | None, kw: str) -> Dataset | None:
    if ds is None:
        return None
    seq = ds.get(kw)
    try:
        return seq[0] if seq is not None and len(seq) else None
    except (TypeError, IndexError):
        return None


def _padding_range(ds: Dataset, pixel_representation: int, bits_allocated: int,
                   notes: list[str]) -> tuple[int, int] | None:
    """Pixel Padding Value (and Range Limit) as raw stored values, corrected for signedness mismatches."""
    vals = []
    for kw in ("PixelPaddingValue", "PixelPaddingRangeLimit"):
        v = ds.get(kw)
        if v is None:
            continue
        try:
            v = int(v[0] if isinstance(v, (list, pydicom.multival.MultiValue)) else v)
        except (TypeError, ValueError):
            continue
        if isinstance(ds[kw].value, bytes):
            continue
        half = 1 << (bits_allocated - 1)
        if pixel_representation == 1 and v >= half:
            notes.append(f"{kw} {v} read as signed {v - 2 * half} (pixels are signed)")
            v -= 2 * half
        elif pixel_representation == 0 and v < 0:
            notes.append(f"{kw} {v} read as unsigned {v + 2 * half} (pixels are unsigned)")
            v += 2 * half
        vals.append(v)
    if not vals:
        return None
    return (min(vals), max(vals))


def scan_file(path: Path, root: Path, cfg: IngestConfig, *, fast: bool = True) -> list[SliceRecord] | SkippedFile:
    """Read one file's header; one record per image frame, or why the file was skipped.

    ``fast`` tries :func:`pipelines.ingest_fastheader.fast_header` first and falls back to pydicom.
    """
    rel = _rel(path, root)
    try:
        size = path.stat().st_size
        if size > cfg.limits.max_file_bytes:
            return SkippedFile(rel, f"larger than limits.max_file_bytes ({size} bytes); not read")
        with open(path, "rb") as f:
            head = f.read(132)
            is_dcm, force = _looks_like_dicom(head)
            if not is_dcm:
                return SkippedFile(rel, "not DICOM")
            parsed = fast_header(f, size) if fast and not force else None
            if parsed is not None:
                ds, ts, pos = parsed
            else:
                f.seek(0)
                ds = pydicom.dcmread(f, stop_before_pixels=True, force=force)
                pos = f.tell()
                ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
            if not ts:
                implicit, little = getattr(ds, "original_encoding", (None, None))
                ts = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
                if little is False:
                    ts = NATIVE_BE
            pixel_tag, pixel_offset = None, None
            if ts == DEFLATED:
                cap = int(min(cfg.limits.max_file_bytes, cfg.limits.archive.max_ratio * max(size, 1)))
                if not _inflates_within(path, cap):
                    return SkippedFile(rel, f"deflated dataset expands beyond {cap} bytes; not read (bomb guard)")
                full = pydicom.dcmread(path, force=force)
                pixel_tag = next((t for t, kw in PIXEL_DATA_TAGS.items() if kw in full), None)
            else:
                f.seek(pos)
                tag_bytes = f.read(12)
                if len(tag_bytes) >= 8:
                    fmt = ">HH" if ts == NATIVE_BE else "<HH"
                    g, e = struct.unpack(fmt, tag_bytes[:4])
                    pixel_tag = (g, e) if (g, e) in PIXEL_DATA_TAGS else None
                    if pixel_tag == (0x7FE0, 0x0010) and ts in NATIVE_LE | {NATIVE_BE}:
                        if ts == "1.2.840.10008.1.2":
                            length = struct.unpack("<I", tag_bytes[4:8])[0]
                            start = pos + 8
                        else:
                            vr = tag_bytes[4:6]
                            if vr in (b"OB", b"OW", b"UN", b"OV", b"OF", b"OD", b"OL"):
                                length = struct.unpack(">I" if ts == NATIVE_BE else "<I", tag_bytes[8:12])[0]
                                start = pos + 12
                            else:
                                length, start = 0xFFFFFFFF, None
                        if start is not None and length != 0xFFFFFFFF and start + length <= size:
                            pixel_offset = start
    except (OSError, MemoryError) as ex:
        return SkippedFile(rel, f"cannot read: {getattr(ex, 'strerror', None) or type(ex).__name__}")
    except Exception as ex:  # noqa: BLE001 - pydicom raises many types on hostile bytes; the file is skipped
        msg = " ".join(str(ex).split())[:160]
        return SkippedFile(rel, f"unreadable DICOM ({type(ex).__name__}: {msg})")
    if pixel_tag is None:
        sop = _text(ds, "SOPClassUID")
        what = UID(sop).name if sop else "no SOP class"
        return SkippedFile(rel, f"DICOM without pixel data ({what})")
    if pixel_tag != (0x7FE0, 0x0010):
        return SkippedFile(rel, f"DICOM with {PIXEL_DATA_TAGS[pixel_tag]} (parametric map), not a CT image")
    try:
        return _records_from_header(ds, path, rel, root, ts, pixel_offset, cfg)
    except (GeometryError, InputTooLargeError):
        raise
    except IngestError as ex:
        return SkippedFile(rel, str(ex))
    except Exception as ex:  # noqa: BLE001 - malformed values in a header skip the file, never crash the scan
        msg = " ".join(str(ex).split())[:160]
        return SkippedFile(rel, f"malformed DICOM header ({type(ex).__name__}: {msg})")


def _inflates_within(path: Path, cap: int) -> bool:
    """False when a Deflated Explicit VR file's dataset inflates beyond ``cap`` bytes (PS3.5 A.5)."""
    data = path.read_bytes()
    if data[128:132] != b"DICM":
        return True
    pos = 132
    while pos + 8 <= len(data):
        group = struct.unpack("<H", data[pos:pos + 2])[0]
        if group != 0x0002:
            break
        vr = data[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR"):
            pos += 12 + struct.unpack("<I", data[pos + 8:pos + 12])[0]
        else:
            pos += 8 + struct.unpack("<H", data[pos + 6:pos + 8])[0]
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        d.decompress(data[pos:], cap)
    except zlib.error:
        return True  # not our concern here: pydicom reports the corrupt stream
    return not d.unconsumed_tail


def _derive_uid(*parts) -> str:
    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def _records_from_header(ds: Dataset, path: Path, rel: str, root: Path, ts: str, pixel_offset: int | None,
                         cfg: IngestConfig) -> list[SliceRecord] | SkippedFile:
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not cols:
        return SkippedFile(rel, "DICOM pixel data without Rows/Columns")
    bits_allocated = _int(ds, "BitsAllocated") or 16
    bits_stored = _int(ds, "BitsStored") or bits_allocated
    pr = _int(ds, "PixelRepresentation") or 0
    spp = _int(ds, "SamplesPerPixel") or 1
    n_frames = _int(ds, "NumberOfFrames") or 1
    if n_frames < 1:
        n_frames = 1
    notes: list[str] = []
    derived: list[str] = []

    sop_class = _text(ds, "SOPClassUID") or (
        str(ds.file_meta.get("MediaStorageSOPClassUID", "")) if hasattr(ds, "file_meta") else "") or None
    sop_uid = _text(ds, "SOPInstanceUID")
    if not sop_uid and hasattr(ds, "file_meta") and ds.file_meta.get("MediaStorageSOPInstanceUID"):
        sop_uid = str(ds.file_meta.MediaStorageSOPInstanceUID)
        notes.append("SOPInstanceUID missing; taken from the file meta MediaStorageSOPInstanceUID")
    ipp0 = _floats(ds, "ImagePositionPatient", 3)
    iop0 = _floats(ds, "ImageOrientationPatient", 6)
    for_uid = _text(ds, "FrameOfReferenceUID")
    parent = str(Path(rel).parent)
    study_uid = _text(ds, "StudyInstanceUID")
    if not study_uid:
        study_uid = _derive_uid("study", for_uid, _text(ds, "StudyDate"), _text(ds, "StudyTime"),
                                _text(ds, "AccessionNumber"), _text(ds, "StudyID"))
        derived.append("StudyInstanceUID")
    kernel = next((k for k in _strings(ds, "ConvolutionKernel") if k), None)
    series_uid = _text(ds, "SeriesInstanceUID")
    if not series_uid:
        series_uid = _derive_uid("series", study_uid, for_uid, _text(ds, "SeriesNumber"),
                                 _text(ds, "SeriesDescription"),
                                 kernel, None if iop0 is None else np.round(iop0, 3).tolist(), rows, cols, parent)
        derived.append("SeriesInstanceUID")
    if not sop_uid:
        sop_uid = _derive_uid("sop", series_uid, None if ipp0 is None else np.round(ipp0, 3).tolist(),
                              _text(ds, "InstanceNumber"), rel)
        derived.append("SOPInstanceUID")
    image_type = tuple(x.upper() for x in _strings(ds, "ImageType"))
    lossy = _text(ds, "LossyImageCompression") == "01"

    tilt = _float(ds, "GantryDetectorTilt")
    base = dict(
        path=path, rel=rel, n_frames=n_frames, sop_instance_uid=sop_uid, sop_class_uid=sop_class,
        series_uid=series_uid, study_uid=study_uid, frame_of_reference_uid=for_uid,
        series_number=_int(ds, "SeriesNumber"), modality=_text(ds, "Modality"), image_type=image_type,
        description=(str(ds.get("SeriesDescription") or "").strip() or None), kernel=kernel,
        instance_number=_int(ds, "InstanceNumber"),
        acquisition_number=_int(ds, "AcquisitionNumber"), rows=rows, cols=cols, transfer_syntax=ts,
        lossy_flag=lossy, pixel_representation=pr, bits_allocated=bits_allocated, bits_stored=bits_stored,
        samples_per_pixel=spp, photometric=_text(ds, "PhotometricInterpretation"), gantry_tilt_deg=tilt,
        pixel_offset=pixel_offset, derived_uids=derived, notes=notes,
    )
    padding = _padding_range(ds, pr, bits_allocated, notes)
    slope = _float(ds, "RescaleSlope")
    intercept = _float(ds, "RescaleIntercept")
    ps = _floats(ds, "PixelSpacing", 2)
    thick = _float(ds, "SliceThickness")

    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if n_frames > 1 or per_frame is not None:
        if n_frames > cfg.limits.max_frames:
            raise InputTooLargeError(
                f"{rel} has {n_frames} frames, more than limits.max_frames ({cfg.limits.max_frames})")
        shared = _first_item(ds, "SharedFunctionalGroupsSequence")
        if per_frame is None or len(per_frame) != n_frames:
            if n_frames == 1:
                per_frame = None
            elif base["modality"] and str(base["modality"]).upper() != "CT":
                return SkippedFile(rel, f"{base['modality']} image, not CT")
            else:
                return SkippedFile(rel, f"multi-frame image ({n_frames} frames) without per-frame positions "
                                        "(Per-frame Functional Groups); cannot place its frames in space")
        records = []
        for fi in range(n_frames):
            item = per_frame[fi] if per_frame is not None else None

            def grp(kw: str, _item=item) -> Dataset | None:
                return _first_item(_item, kw) or _first_item(shared, kw)

            pos = grp("PlanePositionSequence")
            ori = grp("PlaneOrientationSequence")
            meas = grp("PixelMeasuresSequence")
            pvt = grp("PixelValueTransformationSequence")
            ipp = _floats(pos, "ImagePositionPatient", 3) if pos is not None else ipp0
            iop = _floats(ori, "ImageOrientationPatient", 6) if ori is not None else iop0
            fps = _floats(meas, "PixelSpacing", 2) if meas is not None else ps
            fth = _float(meas, "SliceThickness") if meas is not None else thick
            fs = _float(pvt, "RescaleSlope") if pvt is not None else slope
            fic = _float(pvt, "RescaleIntercept") if pvt is not None else intercept
            records.append(SliceRecord(
                frame=fi, pixel_spacing=None if fps is None else (float(fps[0]), float(fps[1])), ipp=ipp, iop=iop,
                slice_thickness=fth, slope=1.0 if fs is None else fs, intercept=0.0 if fic is None else fic,
                padding=padding, **base))
        return records
    return [SliceRecord(
        frame=None, pixel_spacing=None if ps is None else (float(ps[0]), float(ps[1])), ipp=ipp0, iop=iop0,
        slice_thickness=thick, slope=1.0 if slope is None else slope, intercept=0.0 if intercept is None else intercept,
        padding=padding, **base)]


# ------------------------------------------------------------------------------------------ pixels

def check_decodable(ts: str) -> None:
    """Raise a clear :class:`IngestError` when no installed decoder handles transfer syntax ``ts``."""
    if ts in NATIVE_LE or ts in (NATIVE_BE, DEFLATED):
        return
    from pydicom.pixels import get_decoder

    name = UID(ts).name
    try:
        dec = get_decoder(ts)
    except NotImplementedError:
        raise IngestError(
            f"transfer syntax {ts} ({name}) cannot be decoded: no open-source decoder supports it",
            hint="convert the series to an uncompressed or lossless transfer syntax "
                 "(e.g. `gdcmconv --raw` or `dcmdjpeg`) and try again") from None
    if not dec.is_available:
        raise IngestError(
            f"transfer syntax {ts} ({name}) needs a pixel decoder plugin that is not installed",
            hint="install pylibjpeg with its libjpeg/openjpeg/rle plugins and pyjpegls")


def output_dtype(records: list[SliceRecord]) -> np.dtype:
    """int16 when every slice's rescale is integral and at most 16 bits are stored; float32 otherwise.

    int16 is optimistic: :func:`decode_records` falls back to float32 if a decoded slice's HU overflow it.
    """
    for r in records:
        if r.slope != round(r.slope) or r.intercept != round(r.intercept) or min(r.bits_stored, r.bits_allocated) > 16:
            return np.dtype(np.float32)
    return np.dtype(np.int16)


class _NeedFloat(Exception):
    """HU values of a slice do not fit int16: decode again as float32."""


def _native_frame(r: SliceRecord) -> np.ndarray | None:
    """Read native pixel data straight from the file (no pydicom pixel handler), or None if not possible."""
    if r.pixel_offset is None or r.samples_per_pixel != 1 or r.bits_allocated not in (8, 16, 32):
        return None
    nbytes_per = r.bits_allocated // 8
    kind = "i" if r.pixel_representation == 1 else "u"
    order = ">" if r.transfer_syntax == NATIVE_BE else "<"
    dt = np.dtype(f"{order}{kind}{nbytes_per}")
    n = r.rows * r.cols
    offset = r.pixel_offset + (r.frame or 0) * n * nbytes_per
    arr = np.fromfile(r.path, dtype=dt, count=n, offset=offset)
    if arr.size != n:
        return None
    arr = arr.reshape(r.rows, r.cols)
    if order == ">":
        arr = arr.astype(dt.newbyteorder("="))
    bs = r.bits_stored
    if bs < r.bits_allocated:
        shift = r.bits_allocated - bs
        if kind == "i":
            arr = (arr << shift) >> shift
        else:
            arr = arr & np.array((1 << bs) - 1, dtype=arr.dtype)
    return arr


J2K_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
                "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}


def _j2k_signed(ds: Dataset) -> bool | None:
    """Signedness of the first JPEG 2000 component from the codestream's SIZ marker (ISO 15444-1 A.5.1)."""
    try:
        from pydicom.encaps import generate_frames

        nf = _int(ds, "NumberOfFrames") or 1
        frame = next(generate_frames(ds.PixelData, number_of_frames=nf))
    except Exception:  # noqa: BLE001 - an unreadable fragment is reported by the decoder itself
        return None
    i = frame.find(b"\xff\x51", 0, 512)
    if i < 0 or i + 41 > len(frame):
        return None
    return bool(frame[i + 40] & 0x80)


def _decode_file(path: Path, rel: str, warnings: list[str] | None = None) -> np.ndarray:
    try:
        ds = pydicom.dcmread(path, force=True)
        arr = ds.pixel_array
        ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
        if (ts in J2K_SYNTAXES and (_int(ds, "PixelRepresentation") or 0) == 0
                and arr.dtype.kind == "u" and _j2k_signed(ds)):
            bits = _int(ds, "BitsStored") or arr.dtype.itemsize * 8
            signed = arr.astype(np.int32)
            signed[signed >= (1 << (bits - 1))] -= 1 << bits
            arr = signed
            if warnings is not None:
                warnings.append("JPEG 2000 codestream is signed but PixelRepresentation says unsigned; "
                                "the codestream's signedness was used")
    except NotImplementedError as ex:
        raise IngestError(f"{rel}: pixel data cannot be decoded: {' '.join(str(ex).split())[:200]}",
                          hint="convert the series to an uncompressed or lossless transfer syntax") from ex
    except MemoryError as ex:
        raise InputTooLargeError(f"{rel}: not enough memory to decode its pixel data") from ex
    except Exception as ex:  # noqa: BLE001 - any decoder failure on bad bytes becomes a typed error
        raise IngestError(f"{rel}: pixel data is corrupt or truncated ({type(ex).__name__}: "
                          f"{' '.join(str(ex).split())[:200]})") from ex
    return arr


def _to_hu(raw: np.ndarray, r: SliceRecord, out: np.ndarray, padding_fill: float) -> None:
    """HU = stored * RescaleSlope + RescaleIntercept (this slice's own), padding set to ``padding_fill``."""
    if raw.shape != out.shape:
        raise IngestError(f"{r.rel}: decoded pixels have shape {raw.shape}, header says {out.shape}")
    pad_mask = None
    if r.padding is not None:
        lo, hi = r.padding
        pad_mask = (raw >= lo) & (raw <= hi) if lo != hi else (raw == lo)
        if not pad_mask.any():
            pad_mask = None
    if out.dtype == np.int16:
        slope, icpt = int(r.slope), int(r.intercept)
        if raw.size:
            lo, hi = int(raw.min()), int(raw.max())
            ends = (lo * slope + icpt, hi * slope + icpt)
            if min(ends) < -32768 or max(ends) > 32767:
                if pad_mask is None:
                    raise _NeedFloat
                valid = raw[~pad_mask]
                if valid.size:
                    ends = (int(valid.min()) * slope + icpt, int(valid.max()) * slope + icpt)
                    if min(ends) < -32768 or max(ends) > 32767:
                        raise _NeedFloat
        if slope == 1:
            np.add(raw, np.int32(icpt), out=out, casting="unsafe")  # fits: checked above
        else:
            np.add(raw.astype(np.int32) * slope, icpt, out=out, casting="unsafe")
        if pad_mask is not None:
            out[pad_mask] = int(padding_fill)
    else:
        np.multiply(raw, np.float32(r.slope), out=out, casting="unsafe")
        out += np.float32(r.intercept)
        if pad_mask is not None:
            out[pad_mask] = padding_fill


def decode_records(records: list[SliceRecord], cfg: IngestConfig) -> tuple[np.ndarray, list[str]]:
    """Decode ``records`` (already sorted) into an HU array [k, rows, cols]; returns it with warnings."""
    if not records:
        raise IngestError("no slices to decode")
    for ts in sorted({r.transfer_syntax for r in records}):
        check_decodable(ts)
    for r in records:
        if r.samples_per_pixel != 1:
            raise IngestError(f"{r.rel}: {r.samples_per_pixel} samples per pixel ({r.photometric}); "
                              "a CT image has one (MONOCHROME2)")
    dtype = output_dtype(records)
    try:
        return _decode_into(records, cfg, dtype)
    except _NeedFloat:
        log.info("HU values exceed int16; decoding as float32")
        return _decode_into(records, cfg, np.dtype(np.float32))


def _decode_into(records: list[SliceRecord], cfg: IngestConfig, dtype: np.dtype) -> tuple[np.ndarray, list[str]]:
    rows, cols = records[0].rows, records[0].cols
    out = np.empty((len(records), rows, cols), dtype=dtype)
    fill = cfg.pixels.padding_fill_hu
    warnings: list[str] = []
    # multi-frame files: decode each file once
    need_generic = [r for r in records if r.pixel_offset is None]
    by_file: dict[Path, list[int]] = {}
    for idx, r in enumerate(records):
        by_file.setdefault(r.path, []).append(idx)

    def work_native(idx: int) -> bool:
        r = records[idx]
        raw = _native_frame(r)
        if raw is None:
            return False
        _to_hu(raw, r, out[idx], fill)
        return True

    def work_file(path: Path) -> None:
        idxs = by_file[path]
        r0 = records[idxs[0]]
        arr = _decode_file(path, r0.rel, warnings)
        if arr.ndim == 2:
            arr = arr[None]
        for idx in idxs:
            r = records[idx]
            fi = r.frame or 0
            if fi >= arr.shape[0]:
                raise IngestError(f"{r.rel}: frame {fi + 1} missing from the pixel data")
            _to_hu(arr[fi], r, out[idx], fill)

    threads = cfg.pixels.decode_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        native_idx = [i for i, r in enumerate(records) if r.pixel_offset is not None]
        ok = list(pool.map(work_native, native_idx))
        fallback_files = {records[i].path for i, good in zip(native_idx, ok) if not good}
        fallback_files |= {r.path for r in need_generic}
        for _ in pool.map(work_file, sorted(fallback_files)):
            pass
    return out, sorted(set(warnings))
