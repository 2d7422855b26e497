"""Report text in: bytes decoded robustly, DICOM SR text extracted, sections and sentences found.

Spans always index the text as given: the working copy used for matching (:func:`normalise`) has the same
length, character for character.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import ReportParseError
from pipelines.report_lexicon import Lexicon

log = logging.getLogger(__name__)

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def decode_bytes(data: bytes) -> str:
    """Bytes → text: BOM, then UTF-8, then UTF-16 without BOM, then the detected legacy encoding.

    Never fails on content: undecodable bytes become U+FFFD. Binary data is refused by the caller
    (:func:`check_text`), not here.
    """
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(enc, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    sample = data[:65536]
    if len(sample) >= 4 and sample.count(0) > len(sample) // 4:
        even_nuls = sample[0::2].count(0)
        odd_nuls = sample[1::2].count(0)
        return data.decode("utf-16-be" if even_nuls > odd_nuls else "utf-16-le", errors="replace")
    enc = None
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(sample).best()
        enc = best.encoding if best is not None else None
    except Exception:  # noqa: BLE001 - detection is a guess; fall back below
        enc = None
    try:
        return data.decode(enc or "cp1252", errors="replace")
    except LookupError:
        return data.decode("latin-1")


def check_text(text: str, *, max_chars: int) -> None:
    """Refuse input that is empty, binary or absurdly long, with a message that says so."""
    if len(text) > max_chars:
        raise ReportParseError(f"report is {len(text)} characters, more than the limit of {max_chars}",
                               hint="split the document or raise max_bytes in configs/report/lexicon.yaml")
    if not text.strip():
        raise ReportParseError("report is empty", hint="pass the report text or a DICOM SR with text content")
    sample = text[:20000]
    control = sum(1 for ch in sample if (ord(ch) < 32 and ch not in "\t\n\r\f\v") or ch == "\ufffd")
    if control > max(8, len(sample) // 10):
        raise ReportParseError("report does not look like text (many control or undecodable characters)",
                               hint="pass a plain-text report or a DICOM Structured Report")
    if not any(ch.isalpha() for ch in sample) and not any(ch.isalpha() for ch in text[20000:200000]):
        raise ReportParseError("report contains no words", hint="pass the report text")


_TRANSLATE = {
    0x00A0: " ", 0x2007: " ", 0x202F: " ", 0x2009: " ", 0x200A: " ", 0x2002: " ", 0x2003: " ", 0x3000: " ",
    0x2010: "-", 0x2011: "-", 0x2012: "-", 0x2013: "-", 0x2014: "-", 0x2015: "-", 0x2212: "-", 0xFE63: "-",
    0xFF0D: "-", 0x00D7: "x", 0x2715: "x", 0x2716: "x", 0xFF58: "x", 0x2217: "x",
    0x2018: "'", 0x2019: "'", 0x201C: '"', 0x201D: '"', 0x2264: "≤", 0x2265: "≥",
    0x0D: "\n", 0x0B: "\n", 0x0C: "\n", 0x2028: "\n", 0x2029: "\n", 0x85: "\n", 0x09: " ",
    0x00B5: "u",
}
_CONTROL = {i: " " for i in range(32) if i not in (9, 10, 11, 12, 13)}
_TABLE = {**_CONTROL, **_TRANSLATE}


def normalise(text: str) -> str:
    """Same-length working copy: unicode spaces, dashes, multiplication signs and line breaks made plain."""
    out = unfold_templates(text.translate(_TABLE))
    if len(out) != len(text):  # cannot happen with a 1:1 table; guard the span contract anyway
        raise ReportParseError("internal: normalisation changed the text length")
    return out


# Structured templates with one field per line under a numbered head ("Nodule 1:" / "Location: left upper lobe" /
# "Size: 6 mm" / "Type: solid" / "Series/Image: 3/44" / "Change: stable"): every field is that nodule's.
_TEMPLATE_HEAD = re.compile(r"^[ \t]*(?:[-*][ \t]*)?(?:nodules?|lesions?|findings?|masse?s?)[ \t]*(?:#|no\.?|number)?[ \t]*"
                            r"\d{1,2}[ \t]*[:.)-]?[ \t]*$", re.I | re.M)
_TEMPLATE_FIELD = re.compile(
    r"[ \t]*(?:[-*][ \t]*)?(?P<label>(?P<img>series[ \t]*/[ \t]*image|se[ \t]*/[ \t]*im|image(?:[ \t]+(?:number|no\.?))?|"
    r"slice)|(?P<ser>series)|location|lobe|segment|site|size|diameter|dimensions?|measurements?|type|composition|attenuation|"
    r"density|character|consistency|change|interval[ \t]+change|stability|status|trend|margins?|morphology|shape|"
    r"comments?|description)[ \t]*:[ \t]*(?=\S)[^\n]*", re.I)


# The same on one line ("Nodule 1: RLL lateral basal. 6 mm. Type: solid. Series/Image: 2/88."): the line is one nodule.
_TEMPLATE_LINE = re.compile(r"^[ \t]*(?:[-*][ \t]*)?(?:nodules?|lesions?|masse?s?)[ \t]*(?:#|no\.?|number)?[ \t]*"
                            r"\d{1,2}[ \t]*[:.)-][ \t]*(?P<body>\S[^\n]*)$", re.I | re.M)
_INLINE_LABEL = re.compile(r"(?<![\w/])(?P<label>(?P<img>series[ \t]*/[ \t]*image|se[ \t]*/[ \t]*im)|location|lobe|segment|site|size|"
                           r"diameter|type|composition|attenuation|density|change|interval[ \t]+change|stability|status)"
                           r"[ \t]*:", re.I)


def _unfold_lines(norm: str, chars: list[str]) -> None:
    for line in _TEMPLATE_LINE.finditer(norm):
        a, b = line.start("body"), line.end("body")
        if not _INLINE_LABEL.search(norm, a, b):
            continue
        for m in _INLINE_LABEL.finditer(norm, a, b):
            word = "image" if m.group("img") else ("segment" if m.group("label").lower() == "segment" else "")
            chars[m.start():m.end()] = list(word.ljust(m.end() - m.start()))
        for m in re.finditer(r"[.;](?=[ \t]+\S)", norm[a:b]):
            chars[a + m.start()] = ","  # its fields, one clause list


def unfold_templates(norm: str) -> str:
    """Join a template block into one line, same length: the head, then its fields as a comma-separated list, the
    field names blanked ("Series/Image:" becomes "image", "Series:" "series")."""
    if ":" not in norm:
        return norm
    chars = list(norm)
    _unfold_lines(norm, chars)
    if not _TEMPLATE_HEAD.search(norm):
        return "".join(chars)
    for head in _TEMPLATE_HEAD.finditer(norm):
        pos, n = head.end(), 0
        while pos < len(norm) and norm[pos] == "\n":
            f = _TEMPLATE_FIELD.match(norm, pos + 1)
            if f is None or norm.find("\n", pos + 1) not in (-1, f.end()) and f.end() != len(norm):
                break
            chars[pos] = " " if n == 0 else ","
            a, b = f.start("label"), f.end("label")
            word = "image" if f.group("img") else ("series" if f.group("ser") else (
                "segment" if f.group("label").lower() == "segment" else ""))
            colon = norm.index(":", b)
            chars[a:colon + 1] = list(word.ljust(colon + 1 - a))
            pos, n = f.end(), n + 1
    return "".join(chars)


@dataclass
class Sentence:
    start: int
    end: int
    section: str  # findings | impression | history | technique | comparison | recommendation | exam | other
    topic: str | None  # "lung" | "other" | None: from an organ header such as "Lungs:" or "Upper abdomen:"
    block: int = 0  # which report, when several are concatenated (a findings section after an impression)
    header: str | None = None  # the header right before this sentence, if any ("Nodules" in "Nodules: none.")


_COLON = re.compile(r":(?!\d)")
# the header before a colon: after a line break, a ", " / ". " / "; ", or two spaces (MTSamples style)
_HEADER_BEFORE = re.compile(r"(?:\n|[,.;]\s?|\s\s)[ \t]*(?P<name>[A-Za-z][A-Za-z0-9 /&()'-]{0,48}?)[ \t]*$")


class _HeaderMatch:
    __slots__ = ("_start", "_end", "_name")

    def __init__(self, start: int, end: int, name: str):
        self._start, self._end, self._name = start, end, name

    def start(self) -> int:
        return self._start

    def end(self) -> int:
        return self._end

    def group(self, _name: str) -> str:
        return self._name


def _header_candidates(norm: str):
    """Colons, and the header words before each (a colon search is much cheaper than a header regex)."""
    for c in _COLON.finditer(norm):
        i = c.start()
        lo = max(0, i - 52)
        window = ("\n" if lo == 0 else "") + norm[lo:i]
        m = _HEADER_BEFORE.search(window)
        if m is None:
            continue
        off = lo - (1 if lo == 0 else 0)
        name_start = m.start("name") + off
        # the header's own start: back over spaces/tabs to the separator
        start = name_start
        while start > 0 and norm[start - 1] in " \t":
            start -= 1
        yield _HeaderMatch(start, i + 1, m.group("name"))
_UPPER_HEADER_MIN = 3


def find_sentences(norm: str, lex: Lexicon) -> list[Sentence]:
    """Split the (normalised) text into sentences, each with its section and organ topic."""
    headers = _find_headers(norm, lex)
    sentences: list[Sentence] = []
    section, topic = "findings", None
    title = _title_line(norm, headers, lex)
    if title is not None:
        sentences.append(Sentence(title[0], title[1], "exam", None))
        headers = [h for h in headers if h[0] >= title[1]]
        headers.insert(0, (title[0], title[1], None, None))
    bounds = headers + [(len(norm), len(norm), None, None)]
    pos = 0
    last_header: str | None = None
    for h_start, h_end, h_section, h_topic in bounds:
        if h_start > pos:
            if section in _NON_FINDING_SECTIONS:
                # "Comparison: LDCT 2025." then "- Nodule 1: LUL, solid, 5 mm": a listed nodule starts the findings
                li = _LISTED_NODULE.search(norm, pos, h_start)
                if li is not None:
                    got = _split(norm, pos, li.start(), section, topic, lex.max_sentence_chars)
                    if got and last_header:
                        got[0].header = last_header
                    sentences.extend(got)
                    pos, section, last_header = li.start(), "findings", None
            got = _split(norm, pos, h_start, section, topic, lex.max_sentence_chars)
            if got and last_header:
                got[0].header = last_header
            sentences.extend(got)
        last_header = norm[h_start:h_end].rstrip(": \t\n") if h_end > h_start else None
        if h_section is not None:
            section = h_section
            topic = None
        elif h_topic == "lung" and section in _NON_FINDING_SECTIONS:
            # "Comparison: LDCT 2025." then "Nodules:" / "LUNG NODULES (largest first):": a lung header after a
            # history, technique, comparison or exam line starts the findings again
            section = "findings"
        if h_topic is not None or h_section is not None:
            topic = h_topic
        pos = max(pos, h_end)
    return sentences


_NON_FINDING_SECTIONS = ("history", "technique", "comparison", "exam")
_LISTED_NODULE = re.compile(r"\n[ \t]*(?:[-*\u2022][ \t]*|\(?\d{1,2}[.)][ \t]*)?(?:nodule|lesion|mass)[ \t]*(?:#|no\.?)?[ \t]*\d{1,2}"
                            r"[ \t]*[:.)-]", re.I)
_BARE_HEADER = re.compile(r"(?m)^[ \t]*(?P<name>[A-Za-z][A-Za-z /&-]{1,40}?)[ \t]*$")
_TITLE_WORDS = re.compile(r"(?<![\w])(?:CT|LDCT|computed\s+tomography|exam|examination|thorax|chest|screening)(?![\w])", re.I)
_SIZE_HINT = re.compile(r"\d\s*(?:mm|cm)\b|nodul|mass|lesion", re.I)


def _title_line(norm: str, headers: list, lex: Lexicon) -> tuple[int, int] | None:
    """The exam title: a short first line before any header that names the exam and no finding."""
    s = len(norm) - len(norm.lstrip())
    e = norm.find("\n", s)
    e = len(norm) if e < 0 else e
    if e - s > 100 or e >= len(norm.rstrip()) or (headers and headers[0][0] < e):
        return None
    line = norm[s:e]
    if _TITLE_WORDS.search(line) and not _SIZE_HINT.search(line):
        return (s, e)
    return None


def _find_headers(norm: str, lex: Lexicon) -> list[tuple[int, int, str | None, str | None]]:
    out = []
    for m in _header_candidates(norm):
        name = m.group("name").strip()
        at_line_start = m.start() == 0 or norm[m.start() - 1] == "\n" or _line_prefix_blank(norm, m.start())
        if not at_line_start and not (name.isupper() and len(name) >= _UPPER_HEADER_MIN):
            continue
        sec = None
        for key, rx in lex.sections.items():
            if rx.fullmatch(name):
                sec = key
                break
        topic = None
        if lex.lung_headers.fullmatch(name):
            topic = "lung"
        elif lex.other_headers.fullmatch(name):
            topic = "other"
        if sec is None and topic is None:
            # a line ending in ':' that speaks of the lung ("Pulmonary lesions, mostly right:") sets the topic
            rest = norm[m.end():m.end() + 2]
            if at_line_start and (rest.strip() == "" or rest.startswith("\n")) and len(name) > 3:
                line = norm[m.start():m.end()]
                topic = "lung" if lex.lung_words.search(line) or _NODULE_WORD.search(line) else None
            if topic is None:
                continue
        if sec in ("findings",) and topic is None and lex.lung_headers.fullmatch(name):
            topic = "lung"
        out.append((m.start(), m.end(), sec, topic))
    # a known header alone on its line, without a colon ("FINDINGS", "Impression", "LUNG NODULES")
    taken = {h[0] for h in out}
    for m in _BARE_HEADER.finditer(norm):
        name = m.group("name").strip()
        if m.start() in taken or len(name) < 3 or (m.start() > 0 and norm[m.start() - 1] != "\n"):
            continue
        sec = next((key for key, rx in lex.sections.items() if rx.fullmatch(name)), None)
        topic = "lung" if lex.lung_headers.fullmatch(name) or (
            lex.lung_words.fullmatch(name) or _LUNG_NODULES.fullmatch(name)) else (
            "other" if lex.other_headers.fullmatch(name) else None)
        if sec is None and topic is None:
            continue
        if sec == "findings" and topic is None and lex.lung_headers.fullmatch(name):
            topic = "lung"
        out.append((m.start(), m.end(), sec, topic))
    out.sort(key=lambda h: h[0])
    return out


_LUNG_NODULES = re.compile(r"(?:lung|pulmonary)\s+nodules?(?:\s+\w+)?|nodules?", re.I)
_NODULE_WORD = re.compile(r"(?<![\w-])(?:micro)?nodul\w*", re.I)


def _line_prefix_blank(norm: str, i: int) -> bool:
    j = norm.rfind("\n", max(0, i - 200), i)
    if j < 0 and i > 200:
        return False
    return norm[j + 1:i].strip() == ""


_ABBREV = re.compile(r"(?:\b(?:approx|appr|vs|e\.g|i\.e|dr|no|nr|fig|cf|ca|max|min|resp|mr|mrs|st|im|se|ser|img|incl)|\b[A-Za-z]|^\s*\d{1,2}|\n\s*\d{1,2})\.$",
                     re.IGNORECASE)
_SPLIT = re.compile(r"\n+|(?<=[.!?])\s+")


def _split(norm: str, start: int, end: int, section: str, topic: str | None, max_chars: int) -> list[Sentence]:
    out: list[Sentence] = []
    cur = start
    for m in _SPLIT.finditer(norm, start, end):
        if m.group().startswith("\n") or "\n" in m.group():
            _emit(norm, cur, m.start(), section, topic, max_chars, out)
            cur = m.end()
            continue
        before = norm[max(cur, m.start() - 8):m.start()]
        if _ABBREV.search(before) and not before.rstrip().endswith("?"):
            nxt = norm[m.end():m.end() + 1]
            if not (before.endswith(".") and nxt.isupper() and not re.search(r"(?:\d|\b(?:vs|approx|no|nr|dr))\.$",
                                                                                  before, re.IGNORECASE)):
                continue
        _emit(norm, cur, m.start(), section, topic, max_chars, out)
        cur = m.end()
    _emit(norm, cur, end, section, topic, max_chars, out)
    return out


_ALNUM = re.compile(r"[^\W_]")
_LIST_NUMBER = re.compile(r"\(?\d{1,2}[.)]")


def _emit(norm: str, s: int, e: int, section: str, topic: str | None, max_chars: int, out: list[Sentence]) -> None:
    while s < e and norm[s] in " \t\n,;-*•":
        s += 1
    while e > s and norm[e - 1] in " \t\n":
        e -= 1
    if e <= s or not _ALNUM.search(norm, s, e):
        return
    # a list number ("1.") alone is no sentence
    if e - s <= 4 and _LIST_NUMBER.fullmatch(norm, s, e):
        return
    while e - s > max_chars:  # pathological run-on text: cut at a space so every piece stays bounded
        cut = norm.rfind(" ", s + max_chars // 2, s + max_chars)
        cut = cut if cut > s else s + max_chars
        out.append(Sentence(s, cut, section, topic))
        s = cut
        while s < e and norm[s] == " ":
            s += 1
    if e > s:
        out.append(Sentence(s, e, section, topic))


# ---------------------------------------------------------------------------------------------- DICOM SR

def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def sr_text(data: bytes) -> str:
    """The text of a DICOM Structured Report: its TEXT content items, each under its concept name.

    Container and text items keep their order (DICOM PS3.3 C.17.3, SR Document Content Module), so
    "Findings" and "Impression" headings survive into the text the parser sees.
    """
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError as ex:  # pragma: no cover - pydicom is a dependency
        raise ReportParseError("pydicom is needed to read DICOM SR reports") from ex
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
    except (InvalidDicomError, Exception) as ex:  # noqa: BLE001 - any decoder failure is bad input here
        raise ReportParseError(f"DICOM file could not be read: {type(ex).__name__}: {ex}",
                               hint="pass a DICOM Structured Report or a plain-text report") from ex
    lines: list[str] = []
    try:
        _walk(ds, lines, depth=0)
    except Exception as ex:  # noqa: BLE001 - malformed nested sequences
        raise ReportParseError(f"DICOM SR content tree is malformed: {type(ex).__name__}: {ex}") from ex
    text = "\n".join(lines).strip()
    if not text:
        modality = getattr(ds, "Modality", None)
        raise ReportParseError(f"DICOM file has no SR text content (Modality {modality!r})",
                               hint="pass a DICOM Structured Report with TEXT content items, or the report text")
    return text


def _concept(item) -> str | None:
    seq = getattr(item, "ConceptNameCodeSequence", None)
    if seq:
        return str(getattr(seq[0], "CodeMeaning", "") or "").strip() or None
    return None


def _walk(item, lines: list[str], depth: int) -> None:
    if depth > 64:
        return
    vtype = str(getattr(item, "ValueType", "") or "").upper()
    name = _concept(item)
    if vtype == "TEXT":
        value = str(getattr(item, "TextValue", "") or "").strip()
        if value:
            lines.append(f"{name}: {value}" if name and depth > 0 and "\n" not in value and len(value) < 200
                         and not value.lower().startswith(name.lower()) else (f"{name}:\n{value}" if name and depth > 0
                                                                              else value))
    elif vtype == "CONTAINER" and name and depth > 0:
        lines.append(f"{name}:")
    elif vtype == "CODE" and name:
        cs = getattr(item, "ConceptCodeSequence", None)
        if cs:
            lines.append(f"{name}: {getattr(cs[0], 'CodeMeaning', '')}")
    elif vtype == "NUM" and name:
        mv = getattr(item, "MeasuredValueSequence", None)
        if mv:
            unit = ""
            ucs = getattr(mv[0], "MeasurementUnitsCodeSequence", None)
            if ucs:
                unit = str(getattr(ucs[0], "CodeValue", "") or "")
            lines.append(f"{name}: {getattr(mv[0], 'NumericValue', '')} {unit}".rstrip())
    for child in getattr(item, "ContentSequence", None) or []:
        _walk(child, lines, depth + 1)


def read_report_file(path: Path | str, *, max_bytes: int) -> str:
    """The text of a report file: a DICOM SR's text items, or a text file in any encoding."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as ex:
        raise ReportParseError(f"report file {p} cannot be read: {ex.strerror or ex}",
                               hint="check the path") from ex
    if not p.is_file():
        raise ReportParseError(f"report path {p} is not a file", hint="pass a text file or a DICOM SR")
    if size > max_bytes:
        raise ReportParseError(f"report file {p.name} is {size} bytes, more than the limit of {max_bytes}",
                               hint="raise max_bytes in configs/report/lexicon.yaml if this is really a report")
    try:
        data = p.read_bytes()
    except OSError as ex:
        raise ReportParseError(f"report file {p} cannot be read: {ex.strerror or ex}") from ex
    if is_dicom(data):
        return sr_text(data)
    return decode_bytes(data)
