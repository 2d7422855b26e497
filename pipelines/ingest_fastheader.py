"""A fast header walk for the common case: a Part 10 file in a little-endian transfer syntax.

It reads the top-level data elements that ingest uses, up to the pixel data (PS3.5 section 7.1: tag, VR, length, value;
sequences of undefined length are skipped item by item, section 7.5), and returns them as pydicom
``RawDataElement``\\ s in a ``Dataset``, so the same code reads the values either way. Anything unusual
(no preamble, big endian, deflate, functional-group sequences of an Enhanced object, a header longer than
the first read, a malformed length) returns ``None`` and pydicom's full reader is used instead. The result
is checked against pydicom's on every file of the corpus (tests/pipelines/test_ingest_corpus.py).
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.datadict import tag_for_keyword
from pydicom.tag import BaseTag, Tag

# the top-level elements ingest reads (pipelines/ingest_dicom.py); the others are skipped unparsed
WANTED_KEYWORDS = (
    "SpecificCharacterSet", "ImageType", "SOPClassUID", "SOPInstanceUID", "StudyDate", "StudyTime",
    "AccessionNumber", "Modality", "SeriesDescription", "ConvolutionKernel", "SliceThickness",
    "GantryDetectorTilt", "StudyInstanceUID", "SeriesInstanceUID", "StudyID", "SeriesNumber",
    "AcquisitionNumber", "InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient",
    "FrameOfReferenceUID", "SamplesPerPixel", "PhotometricInterpretation", "NumberOfFrames", "Rows", "Columns",
    "PixelSpacing", "BitsAllocated", "BitsStored", "PixelRepresentation", "PixelPaddingValue",
    "PixelPaddingRangeLimit", "RescaleIntercept", "RescaleSlope", "LossyImageCompression",
)
_WANTED = {int(tag_for_keyword(k)) for k in WANTED_KEYWORDS}
_LONG_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"OV", b"UC", b"UR", b"SV", b"UV"}
_VRS = {v.encode() for v in ("AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC "
                              "UI UL UN UR US UT UV").split()}
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_FALLBACK_TAGS = {0x52009229, 0x52009230}  # Shared / Per-frame Functional Groups: pydicom parses those
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_CHUNK = 1 << 16
_UNPACK_HH = struct.Struct("<HH").unpack_from
_UNPACK_H = struct.Struct("<H").unpack_from
_UNPACK_I = struct.Struct("<I").unpack_from
_BIG_ENDIAN, _DEFLATED = "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"
_IMPLICIT = "1.2.840.10008.1.2"


class _Fallback(Exception):
    pass


def _element_header(buf: bytes, pos: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value length, value start) of the element at ``pos``."""
    if pos + 8 > len(buf):
        raise _Fallback
    g, e = _UNPACK_HH(buf, pos)
    tag = (g << 16) | e
    if implicit or g == 0xFFFE:
        return tag, None, _UNPACK_I(buf, pos + 4)[0], pos + 8
    vr = buf[pos + 4:pos + 6]
    if vr not in _VRS:
        raise _Fallback  # e.g. an implicit-VR body in a file that says explicit: pydicom copes with that
    if vr in _LONG_VRS:
        if pos + 12 > len(buf):
            raise _Fallback
        return tag, vr, _UNPACK_I(buf, pos + 8)[0], pos + 12
    return tag, vr, _UNPACK_H(buf, pos + 6)[0], pos + 8


def _skip_undefined(buf: bytes, pos: int, implicit: bool, depth: int = 0) -> int:
    """Position after an undefined-length sequence whose items start at ``pos``."""
    if depth > 16:
        raise _Fallback
    while True:
        tag, _vr, length, start = _element_header(buf, pos, True)
        if tag == _SEQ_END:
            return start
        if tag != _ITEM:
            raise _Fallback
        if length != _UNDEFINED:
            pos = start + length
            continue
        pos = start
        while True:  # elements of an undefined-length item, up to its delimiter
            tag, _vr, length, start = _element_header(buf, pos, implicit)
            if tag == _ITEM_END:
                pos = start
                break
            pos = _skip_undefined(buf, start, implicit, depth + 1) if length == _UNDEFINED else start + length


def fast_header(f: BinaryIO, size: int) -> tuple[Dataset, str, int] | None:
    """(dataset of raw top-level elements, transfer syntax UID, offset of the pixel data tag) or None.

    The offset is the file size when the file has no pixel data.
    """
    f.seek(0)
    buf = f.read(_CHUNK)
    if len(buf) < 144 or buf[128:132] != b"DICM":
        return None
    try:
        pos = 132
        meta = FileMetaDataset()
        while pos < len(buf):
            tag, vr, length, start = _element_header(buf, pos, False)
            if tag >> 16 != 0x0002:
                break
            if length == _UNDEFINED:
                return None
            meta._dict[Tag(tag)] = RawDataElement(Tag(tag), vr.decode("ascii", "replace") if vr else None, length,
                                                  buf[start:start + length], start, False, True)
            pos = start + length
        ts_elem = meta._dict.get(Tag(0x00020010))
        if ts_elem is None:
            return None
        ts = ts_elem.value.decode("ascii", "replace").strip(" \x00")
        if ts in (_BIG_ENDIAN, _DEFLATED):
            return None
        implicit = ts == _IMPLICIT
        ds = Dataset()
        elems = ds._dict
        while True:
            if pos >= len(buf):
                if pos == size:  # no pixel data at all
                    break
                return None  # header longer than the first read: let pydicom do it
            tag, vr, length, start = _element_header(buf, pos, implicit)
            if tag in _PIXEL_TAGS:
                break
            if tag in _FALLBACK_TAGS:
                return None
            if length == _UNDEFINED:
                pos = _skip_undefined(buf, start, implicit)
                continue
            end = start + length
            if end > len(buf):
                return None
            if tag in _WANTED and vr != b"SQ":
                t = BaseTag(tag)
                elems[t] = RawDataElement(t, vr.decode("ascii", "replace") if vr else None, length,
                                          buf[start:end], start, implicit, True)
            pos = end
    except (_Fallback, struct.error, UnicodeDecodeError):
        return None
    ds.file_meta = meta
    ds.set_original_encoding(implicit, True, None)
    return ds, ts, min(pos, size)
