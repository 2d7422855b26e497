"""Any bytes, any unicode, report-like word salad: findings or ReportParseError, never another exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.errors import ReportParseError
from pipelines.report import ParsedReport, parse_report, parse_report_bytes

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WORDS = [
    "FINDINGS:", "IMPRESSION:", "Lungs:", "History:", "\n", ".", ",", ";", ":", "(", ")", "?", "no", "not", "without",
    "nodule", "nodules", "mass", "lesion", "granuloma", "ground-glass", "part-solid", "calcified", "opacity", "lymph",
    "node", "cyst", "thyroid", "aorta", "right", "left", "upper", "middle", "lower", "lobe", "lingula", "RUL", "LLL",
    "segment", "6", "3-4", "1.2", "x", "mm", "cm", "millimeter", "series", "image", "se", "im", "4/120", "(7-123)",
    "previously", "from", "to", "increased", "stable", "new", "resolved", "possible", "cannot", "exclude", "may",
    "represent", "multiple", "two", "innumerable", "largest", "up", "less", "than", "Lung-RADS", "4A", "2S",
    "recommend", "LDCT", "in", "12", "months", "low-dose", "the", "a", "of", "and", "measuring", "solid", "component",
    "\u00d7", "\u2013", "\u00a0", "\ufffd", "\x00",
]


def _ok(parse, arg) -> None:
    try:
        parsed = parse(arg)
    except ReportParseError:
        return
    assert isinstance(parsed, ParsedReport)
    for f in parsed.findings:
        text = parsed.text
        assert 0 <= f.span[0] <= f.span[1] <= len(text) and text[f.span[0]:f.span[1]] == f.text
        assert all(0 < s < 1000 for s in f.size_mm)
        assert f.count >= 0 and (f.count == 0) == f.negated
        f.model_dump_json()
    parsed.context.model_dump_json()


@SETTINGS
@given(st.binary(max_size=3000))
def test_any_bytes(data):
    _ok(parse_report_bytes, data)


@SETTINGS
@given(st.text(max_size=3000))
def test_any_unicode(text):
    _ok(parse_report, text)


@SETTINGS
@given(st.lists(st.sampled_from(WORDS), max_size=400))
def test_report_like_word_salad(words):
    _ok(parse_report, " ".join(words))


@SETTINGS
@given(st.lists(st.sampled_from(WORDS), max_size=200), st.sampled_from(["utf-8", "utf-16", "cp1252", "latin-1"]))
def test_report_like_bytes_in_any_encoding(words, encoding):
    _ok(parse_report_bytes, " ".join(words).encode(encoding, errors="replace"))
