"""Report understanding: every pulmonary nodule the radiologist wrote, with size, place, certainty, history.

``parse_report(text)`` and ``parse_report_file(path)`` return a :class:`ParsedReport` whose ``findings``
are :class:`~pipelines.types.ReportFinding` (field names fixed by DESIGN.md) and whose ``context`` is a
:class:`~pipelines.types.ReportContext`. Rules and word lists are data (``configs/report/lexicon.yaml``);
the negation and uncertainty handling follows NegEx/ConText (trigger, scope to the clause, terminators,
pseudo-triggers) and was measured against medspaCy's ConText on the labelled set in
``tests/data/reports`` (see ``benchmarks/report_parsing.py``).

Conventions (see ``tests/data/reports/README.md``): sizes in mm (cm converted), ``size_mm`` the axes as
written, ``mean_diameter_mm`` the mean of the first two axes (Fleischner 2017 / Lung-RADS v2022 mean
diameter), a range gives its upper end (``bound="range"``, ``size_range_mm``), a bound keeps its number
(``bound`` "<", "≤", ">", "~"). A report that says there are no nodules gives one finding with
``negated=True`` and ``count=0``; "no new nodules" carries ``stability="new"`` and
``negation_scope="new"`` (older nodules may exist), "no other / further nodules" has ``negation_scope="other"``
(none beyond those described), while a global negative has ``negation_scope="all"``. A change in size ("grown by
4 mm") is no size; "long axis 11 mm, short axis 8 mm" is one size of two axes; "likely an intrapulmonary lymph
node" or "versus vessel" after a nodule hedges it (it may be no nodule at all).
"""

from __future__ import annotations

import bisect
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import PrereadError, ReportParseError
from pipelines.report_extract import (
    Anchor, ImageRefMention, LocMention, SizeMention, find_anchors, find_image_refs, find_locations, find_sizes,
)
from pipelines.report_lexicon import Lexicon, load_lexicon
from pipelines.report_text import Sentence, check_text, decode_bytes, find_sentences, normalise, read_report_file
from pipelines.types import ImageRef, Location, ReportContext, ReportFinding

log = logging.getLogger(__name__)

__all__ = ["ParsedReport", "parse_report", "parse_report_file", "parse_report_bytes"]

_FINDING_SECTIONS = ("findings", "impression", "other")
_STOP = {"and", "or", "with", "in", "of", "on", "at", "is", "are", "was", "were", "the", "to", "from", "previously",
         "measuring", "measures", "measured", "which", "that", "but", "also", "as", "compared", "for", "by", "seen",
         "noted", "now", "then", "prior", "has", "have", "had", "there", "a", "an", "since", "image", "series", "se",
         "im", "within", "along", "near", "than", "not", "no", "when", "while", "after", "before", "again"}
_CHARACTERISATION = re.compile(
    r"(?:(?:consistent|compatible)\s+with|suggestive\s+of|suggesting|in\s+keeping\s+with|represent\w*|reflect\w*|"
    r"likely|probably|most\s+likely|favou?r\w*|due\s+to|characteristic\s+of|typical\s+of|such\s+as|"
    r"suspicious\s+for|concerning\s+for|worrisome\s+for|c/w|like|than|thought\s+to\s+be|appearance\s+of|"
    r"features\s+of|consistent\s+with\s+(?:a\s+)?(?:benign|old|healed)|may\s+be|could\s+be|either)"
    r"\s+(?:[\w-]+\s+){0,3}(?:(?:or|versus|vs\.?|and/or)\s+(?:[\w-]+\s+){0,3})?$", re.I)
_DOUBT = re.compile(r"\b(?:likely|probabl[ey]|presumabl[ey]|possibl[ey]|may|might|could|suspected|favou?r\w*|either|"
                    r"versus|vs\.?|or)\b", re.I)
_VERSUS_BEFORE = re.compile(r"(?<![\w-])(?:versus|vs\.?|or\s+(?:possibly|perhaps|maybe))\s+(?:(?:a|an|the)\s+)?(?:[\w-]+\s+)?$", re.I)
# a differential diagnosis: "may represent atelectasis or a mass", "nodule, granuloma versus metastasis"
_ALTERNATIVE_BEFORE = re.compile(r"(?<![\w-])(?:or|versus|vs\.?|and/or)\s+(?:(?:a|an|the)\s+)?$", re.I)
_ALTERNATIVE_AFTER = re.compile(r"\s+(?:or|versus|vs\.?|and/or)\s", re.I)
_APPOSITION = re.compile(r"(?:\s+(?:in|within|at|of)\s+(?:the\s+)?[A-Za-z -]{1,40}?)?\s*,\s*"
                         r"(?:(?:likely|probably|possibly|either|presumably)\s+)?(?:(?:a|an)\s+)?", re.I)
_ALTERNATIVE_GAP = re.compile(r"\s+(?:or|versus|vs\.?|and/or)\s+(?:(?:a|an)\s+)?", re.I)
_CLAUSE_END = re.compile(r"\s*(?:[.;:?]|$)")
_DEFINITE = re.compile(r"(?:\b(?:the|this|that|these|those|said|it|its|above|aforementioned)\s+(?:[\w-]+\s+){0,5})$", re.I)
_PSEUDO_NEG = re.compile(
    r"(?<![\w-])(?:no\s+(?:significant\s+|appreciable\s+|definite\s+|interval\s+|measurable\s+|substantial\s+)?"
    r"(?:interval\s+)?(?:change|changes|growth|increase|enlargement|progression|difference)|not\s+(?:significantly\s+)?"
    r"(?:changed|enlarged|increased|grown|calcified)|without\s+(?:significant\s+|interval\s+)?(?:change|growth|enlargement)|"
    r"no\s+(?:further|additional|routine)\s+(?:follow[- ]?up|imaging|evaluation|workup)|not\s+(?:excluded|be\s+excluded)|"
    r"no\s+calcification|without\s+calcification|no\s+doubt|not\s+only|no\s+longer\s+(?:requires?|needed)|"
    r"not\s+(?:seen|present|visible|identified|evident)\s+(?:previously|before|earlier|on\s+(?:the\s+)?(?:prior|previous|"
    r"earlier|last|preceding)))(?![\w])", re.I)
_PRONOUN_START = re.compile(r"^\s*(?:it|this|which|measur\w*|size|they|these|the\s+(?:lesion|nodule|mass|latter))\b", re.I)
_LARGEST = re.compile(r"(?:largest|biggest|dominant|up\s+to|ranging|range|the\s+larger)", re.I)
_CLAUSE_BREAK = re.compile(r";|(?<![\w-])(?:but|however|although|though|whereas|aside\s+from|apart\s+from|except|"
                           r"other\s+than|besides)(?![\w])", re.I)
_INTERVAL = re.compile(
    r"(?<![\w.])(?P<a>\d{1,2})(?:\s*(?:-|to|or)\s*(?P<b>\d{1,2}))?[\s-]*(?P<u>months?|mos?\.?|years?|yrs?|weeks?|wks?)(?![\w])"
    r"|(?<![\w-])(?P<w>one|two|three|four|six|nine|twelve|eighteen|twenty[- ]four)[\s-]+(?P<wu>months?|years?)(?![\w])"
    r"|(?<![\w-])(?P<ann>annual|annually|yearly|one[- ]year|1[- ]year|a\s+year|a\s+year's\s+time)(?![\w])", re.I)
_WEAK_PRIOR = re.compile(r"previously\s+(?:described|seen|noted|reported|identified|demonstrated)\s+(?:[\w-]+\s+)?$", re.I)
_WORD_NUM = {"one": 1, "two": 2, "three": 3, "four": 4, "six": 6, "nine": 9, "twelve": 12, "eighteen": 18,
             "twenty four": 24, "twenty-four": 24}


@dataclass
class ParsedReport:
    """The findings and context of one report, plus the text they index into."""

    findings: list[ReportFinding]
    context: ReportContext
    text: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def report_negative(self) -> bool:
        """True when the report says there are no nodules (a global negative) and describes none."""
        pos = [f for f in self.findings if not f.negated]
        neg = [f for f in self.findings if f.negated and getattr(f, "negation_scope", "all") == "all"]
        return bool(neg) and not pos

    def to_json(self) -> dict:
        return {
            "report_findings": [f.model_dump(mode="json") for f in self.findings],
            "report_context": self.context.model_dump(mode="json"),
            "warnings": list(self.warnings),
        }


# ------------------------------------------------------------------------------------------ entry points

def parse_report_file(path: Path | str, *, lexicon: Lexicon | None = None) -> ParsedReport:
    """Parse a report file: plain text in any encoding, or a DICOM SR (its TEXT content items)."""
    lex = lexicon or load_lexicon()
    text = read_report_file(path, max_bytes=lex.max_bytes)
    return parse_report(text, lexicon=lex)


def parse_report_bytes(data: bytes, *, lexicon: Lexicon | None = None) -> ParsedReport:
    """Parse raw bytes (text in any encoding, or a DICOM SR)."""
    from pipelines.report_text import is_dicom, sr_text

    lex = lexicon or load_lexicon()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ReportParseError(f"report bytes expected, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > lex.max_bytes:
        raise ReportParseError(f"report is {len(data)} bytes, more than the limit of {lex.max_bytes}")
    text = sr_text(data) if is_dicom(data) else decode_bytes(data)
    return parse_report(text, lexicon=lex)


def parse_report(text: str, *, lexicon: Lexicon | None = None) -> ParsedReport:
    """Parse report text into findings and context; :class:`ReportParseError` for input that is not a report."""
    if isinstance(text, (bytes, bytearray)):
        return parse_report_bytes(bytes(text), lexicon=lexicon)
    if not isinstance(text, str):
        raise ReportParseError(f"report text expected, got {type(text).__name__}")
    lex = lexicon or load_lexicon()
    check_text(text, max_chars=lex.max_bytes)
    try:
        return _parse(text, lex)
    except PrereadError:
        raise
    except RecursionError as ex:  # pragma: no cover - defensive: nothing here recurses on input
        raise ReportParseError("report too deeply nested to parse") from ex


# ---------------------------------------------------------------------------------------------- parsing

@dataclass
class _Draft:
    """A finding while it is being built (ints are absolute offsets into the text)."""

    anchor: Anchor | None
    start: int
    end: int
    sent: Sentence
    kind: str = "nodule"
    sizes: list[SizeMention] = field(default_factory=list)
    priors: list[SizeMention] = field(default_factory=list)
    solid: list[SizeMention] = field(default_factory=list)
    locs: list[LocMention] = field(default_factory=list)
    refs: list[ImageRefMention] = field(default_factory=list)
    composition: str | None = None
    stability: str | None = None
    negated: bool = False
    hedged: bool = False
    count: int = 1
    count_qualifier: str | None = None
    size_qualifier: str | None = None
    largest: bool = False
    summary: bool = False  # a mention that only sums up ("multiple nodules", "the nodule") or recommends
    extra_spans: list[list[int]] = field(default_factory=list)
    neg_scope: str = "all"
    stab_marks: list[tuple[int, str]] = field(default_factory=list)  # stability words given to it, by position


def _parse(text: str, lex: Lexicon) -> ParsedReport:
    norm = normalise(text)
    sentences = find_sentences(norm, lex)
    drafts: list[_Draft] = []
    prev_sentence_drafts: list[_Draft] = []
    block, last_section = 0, None
    warnings: list[str] = []
    mentions = [0]  # target nouns read so far (bounds the work on text whose mentions fold into few findings)
    for n_sent, sent in enumerate(sentences):
        if len(drafts) >= lex.max_findings:
            warnings.append(f"stopped after {len(drafts)} finding mentions (max_findings); sentences from character "
                            f"{sent.start} on ({len(sentences) - n_sent} of {len(sentences)}) were not read")
            log.warning("report parsing stopped at max_findings=%d", lex.max_findings)
            break
        if mentions[0] >= lex.max_mentions:
            warnings.append(f"stopped after reading {mentions[0]} nodule nouns (max_mentions); sentences from "
                            f"character {sent.start} on ({len(sentences) - n_sent} of {len(sentences)}) were not read")
            log.warning("report parsing stopped at max_mentions=%d", lex.max_mentions)
            break
        # a new findings section after an impression starts a new report (concatenated reports stay apart)
        if sent.section == "findings" and last_section == "impression":
            block += 1
        if sent.section in ("findings", "impression"):
            last_section = sent.section
        sent.block = block
        if sent.section not in _FINDING_SECTIONS and sent.section != "recommendation":
            prev_sentence_drafts = []
            continue
        got = _sentence_drafts(norm, sent, lex, prev_sentence_drafts, mentions)
        if sent.section == "recommendation":
            for d in got:
                d.summary = True
        drafts.extend(got)
        if got:
            prev_sentence_drafts = got
    by_block: dict[int, list[_Draft]] = {}
    for d in drafts:
        by_block.setdefault(d.sent.block, []).append(d)
    drafts = [d for blk in sorted(by_block) for d in _dedupe(by_block[blk])]
    findings = [_to_finding(i, d, text) for i, d in enumerate(drafts, 1)]
    context = _context(norm, sentences, lex)
    return ParsedReport(findings=findings, context=context, text=text, warnings=warnings)


_LUNG_PREFIX = re.compile(r"^(?:(?:pulmonary|lung|parenchymal|intrapulmonary)\s+)+", re.I)
_NONE = re.compile(r"\s*(?:none(?:\s+(?:identified|seen|detected|noted|demonstrated|present|visible))?|absent|negative|nil|"
                   r"not\s+seen|not\s+present|no)\s*\.?\s*", re.I)
_TARGET_STEMS = ("nodu", "nodl", "psn", "mass", "lesion", "granulom", "metasta", "opacit", "densit", "ggo", "ggn", "spn")
_PRONOUN_STEMS = ("it ", "this", "which", "measur", "size", "they", "these", "the lesion", "the nodule", "the mass", "the latter")


_LARGEST_START = re.compile(r"\s*(?:the\s+)?(?:largest|biggest|dominant|most\s+(?:conspicuous|prominent))(?![\w-])", re.I)


def _largest_of_group(norm: str, sent: Sentence, lex: Lexicon, host: _Draft) -> bool:
    """"Multiple new bilateral nodules. The largest is in the left lower lobe measuring 14 x 12 mm." is one group
    finding with the largest's size and place (as "multiple nodules, the largest ... 14 mm" in one sentence)."""
    s, e = sent.start, sent.end
    refs = find_image_refs(norm, s, e)
    sizes = [z for z in find_sizes(norm, s, e, lex) if not z.solid_component
             and not any(r.start <= z.start < r.end for r in refs)]
    current = [z for z in sizes if not z.prior]
    if not current:
        return False
    host.sizes = [max(current, key=lambda z: max(z.axes_mm))]
    host.priors = [z for z in sizes if z.prior][:1]
    host.largest = True
    host.locs = find_locations(norm, s, e) + host.locs
    host.refs = refs + host.refs
    masked = lex.composition_excluded.sub(lambda m: " " * len(m.group()), norm[s:e])
    for name, rx in lex.composition:
        if host.composition is None and rx.search(masked):
            host.composition = name
    host.extra_spans.append([s, e])
    return True


_ALL_OF_THEM = re.compile(r"(?<![\w-])(?:both|all|each)(?:\s+of\s+them)?(?:\s+(?:are|were|remain|remained|appear|is))?\s+$", re.I)


_OF_THE = re.compile(r"\s+(?:of|in)\s+(?:the|both|either)\s", re.I)


def _premodified(norm: str, p: int, e: int, anchors: list, drafts: dict) -> int | None:
    """The finding whose noun phrase a stability word opens ("..., new 5 mm LLL nodule", "and enlarging 7 mm
    LLL nodule"): the next nodule noun, with only sizes, places and descriptors between."""
    for i, a in enumerate(anchors):
        if a.start < p:
            continue
        if a.start - p > 45 or i not in drafts:
            return None
        between = norm[p:a.start]
        if re.search(r"[,;:.()]|\b(?:and|or|but|while|with|to|of|is|are|was|were|in|since|from|than|the)\b", between, re.I):
            return None
        return i
    return None


def _modifies_distractor(norm: str, p: int, e: int, anchors: list, lex: Lexicon) -> bool:
    """A stability word that starts the noun phrase of a distractor ("an enlarged 16 mm lymph node")."""
    stop = min([a.start for a in anchors if a.target and a.start >= p] + [e, p + 50])
    m = re.match(r"[^,;.()]*", norm[p:stop])
    return m is not None and lex.distractors.search(m.group()) is not None and not re.search(
        r"\b(?:and|with|of|from|since|in|at)\b", m.group(), re.I)


def _worth_reading(low: str, topic: str | None, has_prev: bool) -> bool:
    """Cheap test (substring search, no regex) that a sentence can hold a finding; most sentences cannot."""
    if any(stem in low for stem in _TARGET_STEMS):
        return True
    if topic == "lung" and ("mm" in low or "cm" in low or "millim" in low or "centim" in low):
        return True
    return has_prev and low.lstrip().startswith(_PRONOUN_STEMS)


def _sentence_drafts(norm: str, sent: Sentence, lex: Lexicon, prev: list[_Draft],
                     mentions: list[int] | None = None) -> list[_Draft]:
    s, e = sent.start, sent.end
    header = _LUNG_PREFIX.sub("", sent.header.strip()) if sent.header else None
    if header and _NONE.fullmatch(norm[s:e]) and lex.anchor_re.fullmatch(header):
        m = lex.anchor_re.fullmatch(header)
        if m.group("D") is None:  # "Nodules: none." is a negative statement about nodules
            d = _Draft(anchor=None, start=s, end=e, sent=sent, negated=True, count=0)
            return [d]
    if prev and _LARGEST_START.match(norm, s, e):
        host = next((d for d in reversed(prev) if not d.negated and d.count >= 2 and not d.sizes), None)
        if host is not None and _largest_of_group(norm, sent, lex, host):
            return []
    low = norm[s:e].lower()
    if prev and e - s <= 60 and not any(stem in low for stem in _TARGET_STEMS) and not re.search(r"\d\s*(?:mm|cm)", low):
        m = lex.stability_re.match(norm, s, e)
        if m is not None and not prev[-1].negated:
            # "- Nodule 1: LUL, solid, 5 mm, series 2 image 58. New.": a stability word alone is the last finding's
            name = lex.stability_names[int(m.lastgroup[1:])]
            if prev[-1].stability is None and name != "resolved":
                prev[-1].stability = name
            return []
    if not _worth_reading(low, sent.topic, bool(prev)):
        return []
    anchors = find_anchors(norm, s, e, lex)
    if mentions is not None:
        mentions[0] += sum(1 for a in anchors if a.target)
    sizes = find_sizes(norm, s, e, lex)
    if not anchors and not sizes:
        if prev and _PRONOUN_START.match(norm[s:e]):
            host = prev[-1]
            masked = lex.composition_excluded.sub(lambda m: " " * len(m.group()), norm[s:e])
            for name, rx in lex.composition:
                if rx.search(masked):
                    host.composition = _merge_composition(host.composition, name)
            for name, rx in lex.stability:
                if host.stability is None and name != "resolved" and rx.search(norm, s, e):
                    host.stability = name
            host.hedged = host.hedged or bool(lex.hedge.search(norm, s, e))
        return []
    # sizes inside an anchor or image-ref word are not sizes
    locs = find_locations(norm, s, e)
    refs = find_image_refs(norm, s, e)
    sizes = [z for z in sizes if not any(r.start <= z.start < r.end for r in refs)]
    sent_text = norm[s:e]
    breaks = [m.start() + s for m in _CLAUSE_BREAK.finditer(sent_text)]

    # a distractor that only characterises ("likely an intrapulmonary lymph node") or offers another reading of a
    # finding ("4 mm nodule versus vessel") owns nothing; said with doubt, it hedges that finding (ConText: the
    # finding may not be a nodule at all)
    kept, doubt_at = [], []
    for a in anchors:
        if a.target:
            kept.append(a)
            continue
        pre = norm[max(s, a.start - 60):a.start]
        if _CHARACTERISATION.search(pre):
            cue = _CHARACTERISATION.search(pre)
            if _DOUBT.search(cue.group()):
                doubt_at.append(a.start)
            continue
        if kept and kept[-1].target and _VERSUS_BEFORE.search(norm, max(s, a.start - 30), a.start):
            doubt_at.append(a.start)
            continue
        kept.append(a)
    anchors = kept
    if not anchors and not sizes:
        return []
    lung_in_sentence = bool(lex.lung_words.search(norm, s, e))
    first_organ = None if lung_in_sentence else lex.organ_subjects.search(norm, s, e)
    for a in anchors:
        if a.target:
            a.pulmonary = _is_pulmonary(norm, a, s, e, sent, lex, lung_in_sentence)
            if first_organ is not None and first_organ.start() < a.start:
                a.pulmonary = False
    recommends = bool(lex.recommendation.search(norm, s, e))

    starts = [a.start for a in anchors]
    ends = [a.end for a in anchors]

    # --- sizes → anchors
    for z in sizes:
        z.owner = _size_owner(norm, z, anchors, starts, ends, s, e, breaks)
        if z.solid_component:  # "14 mm with a 5 mm solid component": the component belongs to the nodule before it
            before = [i for i, a in enumerate(anchors) if a.target and a.end <= z.start]
            z.owner = before[-1] if before else z.owner

    # --- drafts from pulmonary target anchors
    drafts: dict[int, _Draft] = {}
    for i, a in enumerate(anchors):
        if not (a.target and a.pulmonary):
            continue
        d = _Draft(anchor=a, start=a.start, end=a.end, sent=sent, kind=a.kind or "nodule", composition=a.composition)
        drafts[i] = d
    # sizes without an owner: an implicit nodule when the sentence is about the lung
    orphan = [z for z in sizes if z.owner is None and not z.solid_component]
    if orphan:
        if prev and _PRONOUN_START.match(sent_text) and not any(d.sizes for d in prev[-1:]):
            host = prev[-1]
            for z in orphan:
                (host.priors if z.prior else host.sizes).append(z)
            host.extra_spans.append([s, e])
        elif sent.topic == "lung" and not anchors:
            d = _Draft(anchor=None, start=s, end=e, sent=sent)
            drafts[-1] = d
            for z in orphan:
                z.owner = -1
    for z in sizes:
        if z.owner is None or z.owner not in drafts:
            continue
        d = drafts[z.owner]
        if z.solid_component:
            d.solid.append(z)
        elif z.prior:
            d.priors.append(z)
        else:
            d.sizes.append(z)

    if not drafts:
        return []

    # --- locations, image refs, composition, stability → nearest anchor ("left lower lobe 6 mm nodule":
    # a size written before its noun belongs to the noun's span)
    ext_starts = list(starts)
    commas = [m.start() + s for m in re.finditer(r"[,:]", sent_text)]
    for z in sizes:
        if z.owner is not None and z.owner >= 0 and z.end <= anchors[z.owner].start:
            ext_starts[z.owner] = min(ext_starts[z.owner], z.start)
    size_ends = sorted((z.end, k) for k, z in enumerate(sizes) if z.owner is not None and z.owner >= 0)
    for loc in locs:
        loc.owner = _nearest_anchor(loc.start, loc.end, anchors, ext_starts, ends, breaks, commas=commas)
        # "8 mm in the left lower lobe and 5 mm in the right upper lobe": a place right after a size is that size's
        k = bisect.bisect_right(size_ends, (loc.start, len(sizes))) - 1
        if k >= 0 and _PLACE_AFTER_SIZE.fullmatch(norm, size_ends[k][0], loc.start):
            z = sizes[size_ends[k][1]]
            loc.owner, loc.size_start = z.owner, z.start
        if loc.owner is not None and loc.owner >= 0:
            a = anchors[loc.owner]
            lo, hi = (a.end, loc.start) if a.end <= loc.start else (loc.end, ext_starts[loc.owner])
            loc.far = _any_between(breaks, lo, hi)
        if loc.owner == -2 and -1 in drafts:
            loc.owner = -1
        if loc.owner is None and -1 in drafts:
            loc.owner = -1
        if loc.owner in drafts:
            drafts[loc.owner].locs.append(loc)
    for ref in refs:
        owner = _ref_owner(ref, sizes, anchors, starts, ends, breaks)
        if owner is None and -1 in drafts:
            owner = -1
        ref.owner = owner
        if owner in drafts:
            drafts[owner].refs.append(ref)
    masked = lex.composition_excluded.sub(lambda m: " " * len(m.group()), norm[s:e])
    for m in lex.composition_re.finditer(masked):
        name = lex.composition_names[int(m.lastgroup[1:])]
        if True:
            a0, a1 = m.start() + s, m.end() + s
            if any(a.start <= a0 < a.end and a.target for a in anchors) and name != "calcified":
                own = [i for i, a in enumerate(anchors) if a.start <= a0 < a.end]
                owner = own[0] if own else None
            else:
                owner = _nearest_anchor(a0, a1, anchors, starts, ends, breaks, inside_ok=True)
            if owner is not None and owner >= 0 and _coordinated_modifier(norm, a0, a1, anchors[owner], s):
                continue  # "ground-glass and perifissural nodules": the word is some of them, not all
            if owner is None and -1 in drafts:
                owner = -1
            if owner in drafts:
                d = drafts[owner]
                # part-solid beats solid; ground-glass beats solid; calcified beats everything
                d.composition = _merge_composition(d.composition, name)
    for m in lex.stability_re.finditer(norm, s, e):
        name = lex.stability_names[int(m.lastgroup[1:])]
        comp = _COMPARATIVE.search(norm, max(s, m.start() - 12), m.end())
        if comp is not None and comp.end() == m.end():
            continue  # "the larger of the two": one nodule against another, not against the past
        if _modifies_distractor(norm, m.end(), e, anchors, lex):
            continue  # "next to an enlarged 16 mm subcarinal lymph node": the node's, not the nodule's
        if _ALL_OF_THEM.search(norm, max(s, m.start() - 30), m.start()) and name != "resolved":
            for d in drafts.values():  # "9 mm RUL and 5 mm LLL nodules, both new": every one of them
                d.stability = d.stability or name
            continue
        if name != "resolved" and _OF_THE.match(norm, m.end(), e):
            # "No interval growth of the 5 mm RML nodule or the 3 mm LLL nodule": said of each one it names
            named = [d for d in drafts.values() if d.anchor is not None and d.anchor.start > m.end()
                     and not re.search(r"[;]|\b(?:but|while|whereas|however)\b", norm[m.end():d.anchor.start], re.I)]
            if len(named) >= 2 and all(re.search(r"\b(?:and|or|nor)\b", norm[a.anchor.end:b.anchor.start], re.I)
                                       for a, b in zip(named, named[1:])):
                for d in named:
                    d.stability = d.stability or name
                continue
        if True:
            owner = _premodified(norm, m.end(), e, anchors, drafts)
            if owner is None:
                owner = _nearest_anchor(m.start(), m.end(), anchors, starts, ends, breaks, inside_ok=True)
            if owner is None and -1 in drafts:
                owner = -1
            if owner in drafts and name != "resolved":
                drafts[owner].stab_marks.append((m.start(), name))
            if owner in drafts and drafts[owner].stability is None:
                if name == "resolved":
                    continue  # handled as negation below
                drafts[owner].stability = name

    # --- per draft: negation, hedging, count, qualifiers
    neg_masked = _PSEUDO_NEG.sub(lambda m: "#" * len(m.group()), norm[s:e])
    size_masked = list(norm[s:e])
    for z in sizes:
        size_masked[z.start - s:z.end - s] = "#" * (z.end - z.start)
    size_masked = "".join(size_masked)
    for i, d in drafts.items():
        a = d.anchor
        if a is None:
            d.hedged = _hedged(norm, d.start, d.end, s, e, lex)
            continue
        clause_s, clause_e = _clause(a.start, a.end, s, e, breaks)
        neg_at = _negated(neg_masked, a, s, clause_s, clause_e, lex, sizes)
        d.negated = neg_at is not None
        if d.negated:
            # "Atelectasis versus scarring in the lingula, no nodule": what comes before the negation is not
            # about the negated nodule (neither its place nor a hedge)
            d.locs = [l for l in d.locs if l.start >= neg_at]
            d.hedged = _hedged(norm, max(neg_at, a.start - 90), a.end, neg_at, clause_e, lex)
        else:
            later = [x.anchor.start for x in drafts.values() if x.anchor is not None and x.anchor.start > a.end]
            earlier = [x.anchor.end for x in drafts.values() if x.anchor is not None and x.anchor.end < a.start]
            d.hedged = _hedged(norm, a.start, a.end, clause_s, clause_e, lex, later=later, earlier=earlier)
        if d.negated and re.search(r"\b(?:remaining|residual)\b", norm[max(clause_s, a.start - 30):a.start], re.I) \
                and (any(p.negated or p.stability == "resolved" for p in prev)
                     or re.search(r"resol|disappear|no\s+longer", norm[s:a.start], re.I)):
            d.kind = "drop"  # "resolved; no residual nodule": restates the resolution, says nothing of its own
        elif d.negated and re.search(r"\b(?:other|additional|further|more)\b", norm[max(clause_s, a.start - 30):a.start], re.I):
            d.neg_scope = "other"  # "no other nodules": none beyond those described (count 0, like "no new")
        if d.negated and re.search(r"\bnew\b", norm[max(clause_s, a.start - 80):a.start], re.I):
            d.stability = d.stability or "new"
        if d.negated and d.stability == "new" and d.neg_scope == "all":
            d.neg_scope = "new"
        before = size_masked[max(clause_s, a.start - 60) - s:a.start - s]
        np_before = re.split(r"[,;:().]|\b(?:and|or|with|in|of|is|are)\b", before)[-1]
        d.count, d.count_qualifier = _count(np_before, a, lex, sizes)
        q = lex.size_qualifiers.search(np_before)
        if q:
            d.size_qualifier = q.group().lower().replace(" ", "-")
        if _LARGEST.search(norm[a.start:min(clause_e, a.end + 60)]) or (
                d.sizes and _LARGEST.search(norm[max(s, d.sizes[0].start - 25):d.sizes[0].start])):
            d.largest = True
        if a.needs_focal and not d.sizes and not lex.focal.search(np_before) and not d.negated:
            d.summary = True
            d.kind = "drop"
        if a.needs_focal and d.negated and not d.locs:
            d.kind = "drop"  # "no focal opacity" is not about nodules; "the left lower lobe opacity has resolved" is
        pre = norm[max(s, a.start - 60):a.start]
        alternative = not d.negated and not d.sizes and (
            _ALTERNATIVE_AFTER.match(norm, a.end, clause_e) is not None
            or _ALTERNATIVE_BEFORE.search(norm, max(clause_s, a.start - 40), a.start) is not None)
        j_prev = next((j for j in range(i - 1, -1, -1) if anchors[j].target and anchors[j].pulmonary), None)
        prev_target = anchors[j_prev] if j_prev is not None else None
        # "nodule, granuloma" / "nodule in the RLL, granuloma versus metastasis": the second noun names the first
        apposition = prev_target is not None and not d.sizes and not d.negated and (
            alternative or _CLAUSE_END.match(norm, a.end, clause_e) is not None) and \
            _APPOSITION.fullmatch(norm, prev_target.end, a.start) is not None
        if not apposition and alternative and prev_target is not None and j_prev in drafts and \
                getattr(drafts[j_prev], "_characterisation", False) and \
                _ALTERNATIVE_GAP.fullmatch(norm, prev_target.end, a.start) is not None:
            apposition = True  # the second term of a differential ("granuloma versus metastasis")
        if _CHARACTERISATION.search(pre) and d.sizes and d.largest and a.plural and j_prev in drafts:
            host = drafts[j_prev]
            if prev_target.plural and not host.sizes and not host.negated and not d.negated:
                # "Multiple nodules, consistent with metastases, the largest 14 mm in the RUL": the largest of the
                # nodules, which the second noun only names
                host.sizes, host.priors, host.largest = d.sizes, d.priors or host.priors, True
                host.locs = [l for l in host.locs if not (l.side == "bilateral")] + d.locs if d.locs else host.locs
                host.refs = host.refs + d.refs
                host.stability = host.stability or d.stability
                setattr(host, "_aliases", getattr(host, "_aliases", set()) | {d.kind})
                d.sizes, d.priors, d.locs, d.refs = [], [], [], []
        if (_CHARACTERISATION.search(pre) or apposition) and not d.sizes:
            d.summary = True
            if j_prev in drafts and d.kind != drafts[j_prev].kind:
                # "nodules ..., consistent with metastases": the impression may call them either
                setattr(drafts[j_prev], "_aliases", getattr(drafts[j_prev], "_aliases", set()) | {d.kind})
            setattr(d, "_characterisation", True)
            if lex.hedge.search(pre) or re.search(r"\b(?:may|might|could)\b", pre, re.I) or alternative:
                setattr(d, "_hedged_characterisation", True)
        elif _DEFINITE.search(norm[max(s, a.start - 50):a.start]) and not d.sizes and not d.negated:
            setattr(d, "_definite", True)
        if recommends and not d.sizes and not d.negated:
            d.summary = True
        if d.negated:
            d.count = 0

    for pos in doubt_at:
        before = [d for d in drafts.values() if d.anchor is not None and d.anchor.end <= pos and not d.negated]
        if before:
            max(before, key=lambda d: d.anchor.end).hedged = True
    for d in drafts.values():
        # "6 mm in mean diameter (8 x 4 mm)": the axes are the size, the stated mean is kept beside them
        means = [z for z in d.sizes if z.mean_statement]
        if means and len(means) < len(d.sizes):
            d.sizes = [z for z in d.sizes if not z.mean_statement]
            setattr(d, "_stated_mean", means[0].axes_mm[0])
        # a finding with no place of its own, in a sentence that names one lobe, lies there
        # ("a 4.2 cm mass in the right lower lobe with an adjacent 8 mm satellite nodule")
        if not d.negated and not any(l.lobe or l.side for l in d.locs):
            lobes = {l.lobe for l in locs if l.lobe}
            if len(lobes) == 1:
                d.locs = [l for l in locs if l.lobe][:1]
    for d in drafts.values():
        # "the previously described 6 mm nodule ... has resolved / is again seen": that size is the finding's own
        if not d.sizes and d.priors and all(_WEAK_PRIOR.search(norm[max(s, z.start - 40):z.start]) for z in d.priors):
            d.sizes, d.priors = d.priors, []
    out = [d for i, d in sorted(drafts.items(), key=lambda kv: kv[1].start) if d.kind != "drop"]
    out = _merge_in_sentence(out, prev)
    out = _split_multi(out)
    out = _fold_enumerated(norm, out)
    for d in out:
        _infer_stability(d)
    return out


_PLACE_AFTER_SIZE = re.compile(r"\s*,?\s*(?:(?:located|situated|seen|lying|each)\s+)?(?:in|within|at)\s+(?:the\s+)?", re.I)
_COMPARATIVE = re.compile(r"(?<![\w-])the\s+(?:larger|smaller|bigger)", re.I)
_EXACT_COUNTS = {"two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "both",
                 "pair"}


_COORD_AFTER = re.compile(r"\s*(?:,\s*(?:and\s+|or\s+)?|and\s+|or\s+|&\s*|/\s*)(?:[\w-]+\s+){0,2}$", re.I)
_COORD_BEFORE = re.compile(r"(?<![\w-])[a-z][\w-]*\s*(?:,\s*(?:and\s+|or\s+)?|\s+and\s+|\s+or\s+|\s*&\s*|\s*/\s*)$", re.I)


def _coordinated_modifier(norm: str, a0: int, a1: int, anchor: Anchor, s: int) -> bool:
    """A composition word joined to another modifier of a plural noun ("stable ground-glass and perifissural nodules",
    "perifissural and ground-glass nodules"): it describes some of the nodules, not each of them."""
    if not anchor.plural or a1 > anchor.start or anchor.start - a1 > 40:
        return False
    if _COORD_AFTER.match(norm, a1, anchor.start) and re.search(r"[,&/]|\b(?:and|or)\b", norm[a1:anchor.start], re.I):
        return True
    head = _COORD_BEFORE.search(norm, max(s, a0 - 30), a0)
    return head is not None and not re.match(r"(?:and|or|with|of|in|the|a|an|no|not)\b", head.group(), re.I)


_NUMBERED_HEAD = re.compile(r"[ \t]*(?:#|no\.?|number)?[ \t]*\d{1,2}[ \t]*[:.)-](?![\d.])", re.I)


def _fold_enumerated(norm: str, drafts: list[_Draft]) -> list[_Draft]:
    """"There are two nodules: a 6 mm nodule in the RUL and an 8 mm nodule in the LLL" is two findings, not three:
    a sizeless, placeless count that the same sentence then enumerates (as many as it says, or after a colon)
    only announces them; what it says of them all ("two new nodules") goes to each."""
    out: list[_Draft] = []
    for k, d in enumerate(drafts):
        if not d.negated and not d.sizes and d.anchor is not None and _NUMBERED_HEAD.match(norm, d.anchor.end):
            # "Nodule 1: 4 mm solid nodule in the RUL": the numbered head names the nodule the line describes
            nxt = next((m for m in drafts[k + 1:] if m.anchor is not None and not m.negated), None)
            if nxt is not None:
                nxt.extra_spans.append([d.start, d.end])
                continue
        if d.negated or d.sizes or d.anchor is None or d.count < 2 or any(l.lobe or l.side for l in d.locs):
            out.append(d)
            continue
        members = [m for m in drafts[k + 1:] if not m.negated and m.anchor is not None and m.anchor.start > d.end
                   and (m.sizes or any(l.lobe or l.side for l in m.locs))]
        exact = d.count_qualifier is None or d.count_qualifier in _EXACT_COUNTS
        colon = bool(members) and ":" in norm[d.end:members[0].start]
        distinct = len({id(m.anchor) for m in members}) > 1 or len(members) > 1
        if members and distinct and ((exact and len(members) == d.count) or (colon and len(members) >= 2)):
            for m in members:
                m.stability = m.stability or d.stability
                m.composition = m.composition or d.composition
                m.hedged = m.hedged or d.hedged
            members[0].extra_spans.append([d.start, d.end])
            continue
        out.append(d)
    return out


def _is_pulmonary(norm: str, a: Anchor, s: int, e: int, sent: Sentence, lex: Lexicon, lung_here: bool) -> bool:
    before = norm[max(s, a.start - 40):a.start]
    np_before = re.split(r"[,;:().]|\b(?:and|or|with|in|of|is|are|was|were|the)\b", before)[-1]
    for m in lex.organ_modifiers.finditer(np_before):
        word = m.group().lower()
        tail = np_before[m.end():m.end() + 6]
        if word == "pleural" and (tail.startswith("-based") or tail.startswith(" based")):
            continue
        if word.replace("-", " ") == "soft tissue" and lung_here:
            continue  # "soft tissue density at the right lung apex" is a lung finding
        return False
    after = re.split(r"[,;:.()]", norm[a.end:min(e, a.end + 50)])[0]
    for m in re.finditer(r"\b(?:in|of|within|involving|at|along|from)\s+(?:the\s+)?"
                         r"(?:(?:left|right|upper|lower|ventral|dorsal|posterior|anterior|inferior|superior)\s+)?"
                         r"(?:[\w-]+\s+)?", after, re.I):
        if re.search(r"\b(?:measur\w*|is|are|was|were)\b", after[:m.start()], re.I):
            break
        rest = after[m.end() - len(m.group()) + len(re.match(r"\w+\s+(?:the\s+)?", m.group()).group()):]
        for rx in (lex.organ_modifiers, lex.organ_subjects):
            mo = rx.match(rest) or rx.match(after[m.end():]) or rx.match(_SIDE_WORD.sub("", rest, count=1))
            if mo and not lex.lung_words.match(rest):
                word = mo.group().lower()
                if not (word == "pleural" and after[m.end():].find("based") != -1):
                    return False
    if sent.topic == "other" and not lung_here:
        return False
    if a.needs_lung:
        return lung_here or sent.topic == "lung"
    return True


_SIDE_WORD = re.compile(r"^(?:left|right|bilateral|upper|lower|outer|inner|ventral|dorsal|posterior|anterior|"
                        r"inferior|superior)\s+", re.I)


def _clause(a0: int, a1: int, s: int, e: int, breaks: list[int]) -> tuple[int, int]:
    i = bisect.bisect_right(breaks, a0)
    cs = breaks[i - 1] if i > 0 else s
    j = bisect.bisect_left(breaks, a1)
    ce = breaks[j] if j < len(breaks) else e
    return cs, ce


def _size_owner(norm: str, z: SizeMention, anchors: list[Anchor], starts: list[int], ends: list[int],
                s: int, e: int, breaks: list[int]) -> int | None:
    # 1. before a noun: "a 7 mm solid nodule", "38 mm cyst"
    i = bisect.bisect_left(starts, z.end)
    while i < len(anchors) and anchors[i].start - z.end <= 45:
        gap = norm[z.end:anchors[i].start]
        words = re.findall(r"[\w/-]+", gap)
        if re.search(r"[,;:.()\[\]]", gap) or len(words) > 5 or any(w.lower() in _STOP for w in words) \
                or re.search(r"\d", gap):
            break
        return i
    # 2. the nearest noun before it in the clause: "nodule ... measuring 6 mm" (anchors never overlap: ends sorted)
    cs, ce = _clause(z.start, z.end, s, e, breaks)
    j = bisect.bisect_right(ends, z.start) - 1
    if j >= 0 and anchors[j].start >= cs:
        return j
    # 3. the nearest noun after it in the clause: "Measuring 6 mm, a nodule ..."
    k = bisect.bisect_left(starts, z.end)
    if k < len(anchors) and anchors[k].start < ce and anchors[k].start - z.end <= 80:
        return k
    # 4. any noun before it in the sentence
    return j if j >= 0 else None


def _any_between(sorted_positions: list[int], lo: int, hi: int) -> bool:
    """Whether a position in the sorted list lies in [lo, hi) (bisect: a run-on sentence has many commas)."""
    i = bisect.bisect_left(sorted_positions, lo)
    return i < len(sorted_positions) and sorted_positions[i] < hi


def _nearest_anchor(p0: int, p1: int, anchors: list[Anchor], starts: list[int], ends: list[int],
                    breaks: list[int], *, inside_ok: bool = False, commas: list[int] | None = None) -> int | None:
    """Index of the anchor nearest to [p0, p1): after-anchors count double, clause breaks add a penalty, and
    so does a comma between a place and a noun after it ("nodule in the RUL, mass in the LLL")."""
    if not anchors:
        return None
    k = bisect.bisect_left(starts, p0)
    best, best_d = None, None
    for idx in range(max(0, k - 5), min(len(anchors), k + 5)):
        a = anchors[idx]
        a_start = starts[idx]
        if a_start <= p0 < a.end or (a_start < p1 <= a.end):
            if inside_ok:
                return idx
            d = 0.0
        elif a.end <= p0:
            d = p0 - a.end
        else:
            d = (a_start - p1) * 2.0
            if commas and _any_between(commas, p1, a_start):
                d += 100
        lo, hi = (a.end, p0) if a.end <= p0 else (p1, a.start)
        if _any_between(breaks, lo, hi):
            d += 200
        if best_d is None or d < best_d:
            best, best_d = idx, d
    return best


def _ref_owner(ref: ImageRefMention, sizes: list[SizeMention], anchors: list[Anchor], starts: list[int],
               ends: list[int], breaks: list[int]) -> int | None:
    # the nearest size or anchor before the reference, whichever is closer
    cand: list[tuple[int, int | None]] = []
    for z in sizes:
        if z.end <= ref.start and z.owner is not None:
            cand.append((ref.start - z.end, z.owner))
    for i, a in enumerate(anchors):
        if a.end <= ref.start and not (not a.target and a.text[:4].lower() in ("soli", "soft")):
            cand.append((ref.start - a.end, i))  # a solid component's image is its nodule's
    if cand:
        return min(cand, key=lambda c: c[0])[1]
    return _nearest_anchor(ref.start, ref.end, anchors, starts, ends, breaks)


_COMP_RANK = {"solid": 0, "subsolid": 1, "ground-glass": 2, "part-solid": 3, "calcified": 4}


def _merge_composition(old: str | None, new: str) -> str:
    if old is None:
        return new
    return old if _COMP_RANK.get(old, 0) >= _COMP_RANK.get(new, 0) else new


def _negated(masked: str, a: Anchor, s: int, cs: int, ce: int, lex: Lexicon, sizes: list[SizeMention]) -> int | None:
    """Where the negation of this mention starts (absolute offset), or None when it is not negated."""
    lo = max(cs, a.start - 90)
    pre = masked[lo - s:a.start - s]
    cues = list(lex.neg_pre.finditer(pre))
    if cues:
        gap = pre[cues[-1].end():]
        # a new noun phrase ("..., a 5 mm nodule") or a sized mention after a comma is outside the cue's reach
        if not re.search(r",\s*(?:a|an|there\s+is|there\s+are|\d)\b", gap, re.I) and not lex.neg_term.search(gap) \
                and not re.search(r"\b(?:is|are|was|were)\b", gap, re.I):
            return lo + cues[-1].start()
    post = masked[a.end - s:min(ce, a.end + 90) - s]
    m = lex.neg_post.search(post)
    if m and not re.search(r"[,:]\s*(?:a|an|and)\s", post[:m.start()]):
        between = post[:m.start()]
        if not lex.neg_term.search(between) and not any(
                t for t in re.finditer(r"\b(?:nodules?|mass(?:es)?|lesions?)\b", between, re.I)):
            # "The left lower lobe nodule has resolved": the negated phrase starts with the noun phrase
            np = re.split(r"[,;:()]|\b(?:and|with|but)\b", masked[max(cs, a.start - 60) - s:a.start - s])[-1]
            return a.start - len(np)
    return None


# "versus" / "vs" before a size or a prior exam compares with the past ("7 mm versus 5 mm on the prior"),
# it does not offer a differential diagnosis
_PSEUDO_HEDGE = re.compile(r"(?<![\w-])(?:versus|vs\.?)(?=\s*(?:\d|\.\d|(?:the\s+|a\s+)?(?:prior|previous|preceding|earlier|"
                           r"last|baseline|comparison|(?:19|20)\d\d)\b))", re.I)


_PLURAL_AFTER = re.compile(r"[^,;.]*?\b(?:both|all|nodes|nodules|granulomas|granulomata|scars|lesions|they|these)\b", re.I)


def _hedged(norm: str, a0: int, a1: int, cs: int, ce: int, lex: Lexicon, later: list[int] = (),
            earlier: list[int] = ()) -> bool:
    """A hedge cue near the finding's noun, in its clause. A cue written after another nodule noun ("6 mm RML
    nodule and 4 mm LUL nodule, possibly an intrapulmonary lymph node"; "a 4 mm nodule, possibly a granuloma,
    and a 6 mm nodule") is that nodule's, not this one's."""
    w0 = max(cs, a0 - 90)
    window = _PSEUDO_HEDGE.sub(lambda m: " " * len(m.group()), norm[w0:min(ce, a1 + 110)])
    for m in lex.hedge.finditer(window):
        c0, c1 = w0 + m.start(), w0 + m.end()
        if c0 > a1 and _PLURAL_AFTER.match(norm, c1, min(ce, c1 + 60)) and any(a1 < p < c0 for p in later):
            return True  # "A and B, possibly intrapulmonary lymph nodes / granulomas": a plural is about them all
        if any(a1 < p < c0 for p in later):
            continue
        if c1 <= a0 and any(p <= c0 for p in earlier) and re.search(r"[,;]", norm[c1:a0]):
            continue
        if c0 >= a1 and re.search(r"\band\b", norm[a1:c0]) and any(
                c1 <= p and not re.search(r"[,;]", norm[c1:p]) for p in later):
            continue  # "a 4 mm nodule and a possible 6 mm nodule": the second one's
        return True
    tail = norm[a1:ce].rstrip()
    return tail.endswith("?")


def _count(np_before: str, a: Anchor, lex: Lexicon, sizes: list[SizeMention]) -> tuple[int, str | None]:
    found = None
    for m in lex.count_re.finditer(np_before):
        if m.group("num"):
            rest = np_before[m.end():]
            if re.match(r"\s*(?:-|\.)?\s*(?:mm|cm|milli|centi|x\b)", rest, re.I):
                continue
            found = (int(m.group("num")), None)
            break
        word = re.sub(r"\s+", " ", m.group("word").lower())
        n = lex.count_words.get(word)
        if n is None:
            continue
        if n == 1 and a.plural:
            continue
        found = (n, word)
        break
    if found:
        n, word = found
        if a.plural and n < 2:
            n = lex.plural_default_count
        if re.search(r"(?:greater|more)\s+than\s+\S+\s*$", np_before[:np_before.lower().find(word) + len(word)] if word
                     else np_before, re.I):
            n += 1
        return n, word
    return (lex.plural_default_count if a.plural else 1), None


def _merge_in_sentence(drafts: list[_Draft], prev: list[_Draft]) -> list[_Draft]:
    """Fold characterising ("consistent with a granuloma") and anaphoric mentions into their finding."""
    out: list[_Draft] = []
    for d in drafts:
        char = getattr(d, "_characterisation", False)
        definite = getattr(d, "_definite", False)
        host = None
        pool = [x for x in out if not x.negated] or ([x for x in prev if not x.negated] if (char or definite) else [])
        if (char or definite) and pool:
            cand = pool[-1]
            # "Two nodules as described. The ground-glass nodule in the RUL may represent ...": one of them,
            # named by its own place, is not the placeless pair
            one_of_many = definite and not char and cand.count >= 2 and not d.anchor.plural and _lobe_of(d) \
                and not _lobe_of(cand) and cand not in out
            if _loc_compatible(cand, d) and not one_of_many:
                host = cand
        if host is not None:
            if d.composition and not getattr(d, "_hedged_characterisation", False):
                host.composition = _merge_composition(host.composition, d.composition)
            host.hedged = host.hedged or (d.hedged and char)
            host.locs.extend(d.locs)
            host.refs.extend(d.refs)
            host.stability = host.stability or d.stability
            host.extra_spans.append([d.start, d.end])
            continue
        if char and not pool:
            d.summary = False  # nothing to characterise: the mention stands for itself
        out.append(d)
    # several negated mentions in one sentence ("no nodules or masses") are one negative statement
    merged: list[_Draft] = []
    for d in out:
        if d.negated and not d.sizes and not _lobe_of(d):
            same = [m for m in merged if m.negated and not m.sizes and not _lobe_of(m) and m.neg_scope == d.neg_scope]
            if same:
                same[0].extra_spans.append([d.start, d.end])
                if d.kind == "nodule":  # "no mass or nodule" denies nodules first of all
                    same[0].kind = "nodule"
                continue
        if d.hedged and not d.negated and not d.sizes and d.count == 1 and d.anchor is not None and not d.anchor.plural:
            # "Opacity in the LLL may represent atelectasis; a small nodule cannot be excluded": the doubt is
            # about what that one opacity is, not a second finding
            same = [m for m in merged if m.hedged and not m.negated and m.count == 1 and m.anchor is not None
                    and not m.anchor.plural and _loc_compatible(m, d)
                    and (_side_of(m) is None or _side_of(d) is None or _side_of(m) == _side_of(d))]
            if same:
                host = same[-1]
                if not _lobe_of(host) and not _side_of(host):
                    host.locs.extend(d.locs)
                host.size_qualifier = host.size_qualifier or d.size_qualifier
                host.extra_spans.append([d.start, d.end])
                continue
        merged.append(d)
    return merged


def _loc_compatible(a: _Draft, b: _Draft) -> bool:
    la, lb = _lobe_of(a), _lobe_of(b)
    return la is None or lb is None or la == lb


def _lobe_of(d: _Draft) -> str | None:
    for loc in d.locs:
        if loc.lobe:
            return loc.lobe
    return None


def _split_multi(drafts: list[_Draft]) -> list[_Draft]:
    """"Two nodules measuring 4 and 6 mm" → two findings, each with its own size, location and image."""
    out: list[_Draft] = []
    for d in drafts:
        n_lobes_after = len([l for l in d.locs if l.start > d.end and l.lobe])
        if d.largest and len(d.sizes) >= 2 and n_lobes_after == len(d.sizes):
            d.largest = False
        if len(d.sizes) < 2 or d.largest:
            if len(d.sizes) > 1:
                d.sizes = [max(d.sizes, key=lambda z: max(z.axes_mm))]
            out.append(d)
            continue
        sizes = sorted(d.sizes, key=lambda z: z.start)
        size_starts = [z.start for z in sizes]
        priors = sorted(d.priors, key=lambda z: z.start)
        locs = sorted(d.locs, key=lambda l: l.start)
        after_anchor = [l for l in locs if l.start > d.end and l.lobe]
        if len(after_anchor) != len(sizes):
            after_anchor = [l for l in locs if l.start >= sizes[0].start - 40 and (l.lobe or l.side) and l.start > d.end]
        # "6 and 8 mm, previously 4 and 5 mm": a list of priors written apart from the list of sizes pairs
        # with it in order
        paired_priors = priors if len(priors) == len(sizes) and (
            priors[0].start > sizes[-1].end or priors[-1].end < sizes[0].start) else None
        paired: dict[int, list[LocMention]] = {i: [] for i in range(len(sizes))}
        shared = [l for l in locs if l not in after_anchor]
        by_size = [[l for l in locs if l.size_start == z.start and (l.lobe or l.side)] for z in sizes]
        if all(len(b) == 1 for b in by_size):
            for i, b in enumerate(by_size):
                paired[i] = b
            shared = [l for l in locs if all(l is not b[0] for b in by_size)]
        elif after_anchor and len(after_anchor) == len(sizes):
            for i, l in enumerate(after_anchor):
                paired[i].append(l)
        elif len(places := _lobe_places(locs)) == len(sizes):
            # "nodules in the right upper and left lower lobes measure 9 and 4 mm (respectively)", "RML 4 mm;
            # LUL 3 mm", "right middle lobe and lingular nodules measuring 4 and 6 mm": places and sizes in order
            for i, l in enumerate(places):
                paired[i].append(l)
            shared = [l for l in locs if not l.lobe and not l.lobes and l.side is None]
        else:
            shared = locs
        for i, z in enumerate(sizes):
            nd = _Draft(anchor=d.anchor, start=d.start, end=d.end, sent=d.sent, kind=d.kind, sizes=[z],
                        composition=d.composition, stability=d.stability, negated=d.negated, hedged=d.hedged,
                        count=1, size_qualifier=d.size_qualifier, neg_scope=d.neg_scope)
            nd.locs = shared + paired[i]
            nxt = sizes[i + 1].start if i + 1 < len(sizes) else 10 ** 12
            # "Nodules: RUL 4 mm (stable), LLL 3 mm (stable), RML 2 mm (new)": each size's own stability word
            # (one word after the last size, "4 mm on the right and 6 mm on the left, unchanged", is all of theirs)
            if len({bisect.bisect_right(size_starts, p) for p, _ in d.stab_marks if p >= size_starts[0]}) >= 2:
                own = [name for p, name in d.stab_marks if z.start <= p < nxt]
                nd.stability = own[0] if own else next((n for p, n in d.stab_marks if p < size_starts[0]), None)
            refs = sorted(d.refs, key=lambda r: r.start)
            if len(refs) == len(sizes) > 1 and refs[0].start > sizes[-1].end:
                nd.refs = [refs[i]]  # "4 and 11 mm, images 201 and 215 (respectively)": in order
            else:
                nd.refs = [r for r in d.refs if z.start <= r.start < nxt] or ([] if len(sizes) > 1 else d.refs)
            if paired_priors:
                nd.priors = [paired_priors[i]]
            else:
                nd.priors = [p for p in priors if z.end <= p.start < nxt] if priors else []
            nd.solid = [p for p in d.solid if z.end <= p.start < nxt]
            out.append(nd)
    return out


def _lobe_places(locs: list[LocMention]) -> list[LocMention]:
    """The lobes named in a sentence, in order, one place each ("the right upper and left lower lobes" is two);
    empty unless they are all different."""
    out: list[LocMention] = []
    for l in locs:
        for lobe in (l.lobes if len(l.lobes) > 1 else [l.lobe] if l.lobe else []):
            side = "right" if lobe.startswith("R") else "left"
            out.append(LocMention(l.start, l.end, side=side, lobe=lobe, segment=l.segment if len(l.lobes) <= 1 else None))
    if len({p.lobe for p in out}) != len(out):
        return []
    return out


def _infer_stability(d: _Draft) -> None:
    if d.stability or not d.sizes or not d.priors:
        return
    cur, old = _mean(d.sizes[0].axes_mm), _mean(d.priors[0].axes_mm)
    d.stability = "enlarging" if cur > old else ("decreasing" if cur < old else "stable")


def _mean(axes: list[float]) -> float:
    return (axes[0] + axes[1]) / 2.0 if len(axes) >= 2 else axes[0]


# --------------------------------------------------------------------------------------------- de-dup

def _sizes_equal(a: _Draft, b: _Draft) -> bool:
    x, y = a.sizes[0].axes_mm, b.sizes[0].axes_mm
    if (len(x) == 1) != (len(y) == 1):  # "9 x 7 mm" in the findings, "9 mm" in the impression
        single, axes = (x[0], y) if len(x) == 1 else (y[0], x)
        return abs(single - max(axes)) <= 0.5 or abs(single - _mean(axes)) <= 0.5
    return abs(max(x) - max(y)) <= 0.5 and abs(_mean(x) - _mean(y)) <= 0.75


def _dedupe(drafts: list[_Draft]) -> list[_Draft]:
    """The same nodule in findings and impression (or a summary mention) is one finding."""
    primary = [d for d in drafts if d.sent.section != "impression" and not d.summary]
    later = [d for d in drafts if d.sent.section == "impression" or d.summary]
    if not primary:
        # no findings section: impression findings stand, summaries too unless another finding covers them
        primary = [d for d in drafts if not d.summary]
        later = [d for d in drafts if d.summary]
        if not primary:
            primary, later = later[:1], later[1:]
    used: set[int] = set()
    result = list(primary)
    for d in later:
        best, best_score = None, 0
        for i in range(max(0, len(result) - 200), len(result)):  # bounded: a report has no more findings than this
            p = result[i]
            sc = _dup_score(p, d)
            if sc > best_score and (i not in used or d.summary):
                best, best_score = i, sc
        group = _restated_group(result, d)
        if group:
            for i in group:  # "Two left lower lobe nodules, indeterminate": what it says holds for each
                _absorb(result[i], d)
        elif best is not None:
            used.add(best)
            _absorb(result[best], d)
        elif d.summary and any(not p.negated for p in result) and not d.negated:
            continue  # a summary ("multiple nodules", "recommend follow-up of the nodule") adds nothing
        else:
            result.append(d)
    result.sort(key=lambda d: d.start)
    return result


def _restated_group(result: list[_Draft], d: _Draft) -> list[int]:
    """The findings a sizeless plural restatement sums up ("Two left lower lobe nodules, indeterminate"): as many
    findings of its kind and place as it counts (all of them for a vague count), or none when that is unclear."""
    if d.negated or d.sizes or d.count < 2 or d.anchor is None or not d.anchor.plural:
        return []
    lobe, side = _lobe_of(d), _side_of(d)
    cands = [i for i, p in enumerate(result) if not p.negated and _same_kind(p, d) and p.sent.section != "impression"
             and (lobe is None or _lobe_of(p) == lobe) and (side in (None, "bilateral") or _side_of(p) == side)]
    exact = d.count_qualifier is None or d.count_qualifier in _EXACT_COUNTS
    if len(cands) >= 2 and (len(cands) == d.count or not exact):
        return cands
    return []


def _dup_score(p: _Draft, d: _Draft) -> int:
    if p.negated != d.negated:
        return 0
    if p.negated:
        if p.neg_scope != d.neg_scope or _lobe_of(p) != _lobe_of(d):
            return 0
        if not p.sizes and not d.sizes:
            return 2
        # "the previously noted 5 mm LUL nodule has resolved" / "Resolution of the LUL nodule": one nodule, in one
        # lobe, its size (then) not contradicted; a bound ("no nodules > 6 mm") is no nodule of its own
        if _lobe_of(p) and not any(z.bound for z in p.sizes + d.sizes) and (
                not p.sizes or not d.sizes or _sizes_equal(p, d)):
            return 3
        return 0
    sc = 0
    if p.sizes and d.sizes:
        if not _sizes_equal(p, d):
            return 0
        sc += 3
    lp, ld = _lobe_of(p), _lobe_of(d)
    if lp and ld:
        if lp != ld:
            return 0
        sc += 2
    sp, sd = _side_of(p), _side_of(d)
    if sp and sd and sp != sd and "bilateral" not in (sp, sd):
        return 0
    if sp and sd and sp == sd:
        sc += 1
    if p.composition and d.composition and p.composition != d.composition and "calcified" not in (p.composition, d.composition):
        return 0
    if sc == 0 and d.summary and not d.sizes and not ld:
        sc = 1
    if sc == 0 and not d.sizes and not ld and not p.sizes and not lp and _same_kind(p, d):
        sc = 1
    if p.sizes and not d.sizes and not ld and not d.summary:
        # a bare impression line ("Calcified granuloma, benign.") restates a finding of the same kind
        if d.sent.section == "impression" and _same_kind(p, d) and sc == 0:
            return 2 if d.composition and d.composition == p.composition else (1 if not d.composition else 0)
        return sc if sc and not ld else 0
    return sc


def _same_kind(p: _Draft, d: _Draft) -> bool:
    """Same kind, or a name the finding was also given ("nodules, consistent with metastases"), or two groups of
    nodules and metastases ("Multiple nodules ..." / "Decreasing pulmonary metastases")."""
    if p.kind == d.kind or d.kind in getattr(p, "_aliases", ()):
        return True
    return p.count >= 2 and d.count >= 2 and {p.kind, d.kind} <= {"nodule", "metastasis"}


def _side_of(d: _Draft) -> str | None:
    for loc in d.locs:
        if loc.side:
            return loc.side
    return None


def _absorb(p: _Draft, d: _Draft) -> None:
    if not p.sizes and d.sizes:
        p.sizes = d.sizes
    if not p.priors and d.priors:
        p.priors = d.priors
    if not _lobe_of(p) and _lobe_of(d):
        p.locs = d.locs + p.locs
    p.composition = p.composition or d.composition
    p.stability = p.stability or d.stability
    p.refs = p.refs or d.refs
    p.hedged = p.hedged or d.hedged
    p.extra_spans.append([d.start, d.end])


# ------------------------------------------------------------------------------------------- to model

def _to_finding(n: int, d: _Draft, text: str) -> ReportFinding:
    s = d.sent
    size = d.sizes[0] if d.sizes else None
    axes = list(size.axes_mm) if size else []
    mean = round(_mean(axes), 1) if axes else None
    prior = list(d.priors[0].axes_mm) if d.priors else None
    if d.negated and size is not None and not size.bound and prior is None:
        # "the previously noted 5 mm nodule has resolved": 5 mm was its size then; it has none now
        # ("no nodules > 6 mm" keeps its bound as the size)
        prior, axes, mean, size = axes, [], None, None
    side, lobe, segment, lobes, level = None, None, None, [], None
    for loc in sorted(d.locs, key=lambda l: (l.far, 0 if l.lobe else (1 if l.side and l.side != "bilateral" else 2))):
        if loc.lobe and not lobe:
            lobe, side = loc.lobe, loc.side
            lobes = loc.lobes
        if loc.side and not side:
            side = loc.side
        if loc.segment and not segment and (loc.lobe is None or lobe is None or loc.lobe == lobe):
            segment = loc.segment  # the lingula is no segment of the right middle lobe
        if loc.level and not level:
            level = loc.level
        for lb in loc.lobes:
            if lb not in lobes:
                lobes = lobes + [lb]
    if lobe is None and level and side in ("left", "right"):
        lobe = ("R" if side == "right" else "L") + level + "L" if not (side == "left" and level == "M") else None
    if segment == "lingula" and lobe is None:
        lobe, side = "LUL", "left"
    loc_kw: dict = {"side": side, "lobe": lobe}
    if segment:
        loc_kw["segment"] = segment
    if len(lobes) > 1:
        loc_kw["lobes"] = lobes
    ref = d.refs[0] if d.refs else None
    extra: dict = {"section": s.section, "stability": d.stability}
    if size and size.bound:
        extra["bound"] = size.bound
    if size and size.range_mm:
        extra["size_range_mm"] = size.range_mm
    if d.size_qualifier:
        extra["size_qualifier"] = d.size_qualifier
    if d.count_qualifier and (d.count != 1 or d.count_qualifier in ("single", "solitary", "isolated")):
        extra["count_qualifier"] = d.count_qualifier
    if d.solid:
        extra["solid_component_mm"] = max(d.solid[0].axes_mm)
    if d.largest:
        extra["size_of"] = "largest"
    if d.negated:
        extra["negation_scope"] = d.neg_scope
    if getattr(d, "_stated_mean", None) is not None:
        extra["stated_mean_mm"] = d._stated_mean
    if d.anchor is not None:
        extra["mention_span"] = [d.anchor.start, d.anchor.end]
    if d.extra_spans:
        extra["other_spans"] = d.extra_spans
    return ReportFinding(
        id=f"r{n}", kind=d.kind, text=text[s.start:s.end], span=[s.start, s.end],
        size_mm=axes, mean_diameter_mm=mean, count=0 if d.negated else max(1, d.count), negated=d.negated,
        hedged=d.hedged, location=Location(**loc_kw), composition=d.composition, prior_size_mm=prior,
        image_ref=ImageRef(series=ref.series if ref else None, image=ref.image if ref else None), **extra,
    )


# -------------------------------------------------------------------------------------------- context

def _screening(norm: str, sentences: list[Sentence], lex: Lexicon) -> bool:
    """A screening exam: a screening cue that speaks of this exam. A comparison line speaks of an earlier exam;
    "low-dose" in a technique line, or naming an earlier exam ("compared with the LDCT of 2023"), only
    describes a dose (Lung-RADS v2022 applies to screening exams, not to every low-dose CT)."""
    if lex.screening_negated.search(norm):
        return False
    bounds = [st.start for st in sentences]
    for m in lex.screening.finditer(norm):
        i = bisect.bisect_right(bounds, m.start()) - 1
        st = sentences[i] if i >= 0 and m.start() < sentences[i].end else None
        if st is not None and st.section == "comparison":
            continue
        if lex.screening_dose_only.fullmatch(m.group()):
            if st is not None and st.section == "technique":
                continue
            lo = st.start if st is not None else max(0, m.start() - 60)
            if lex.earlier_exam_before.search(norm, max(lo, m.start() - 60), m.start()):
                continue
        return True
    return False


def _context(norm: str, sentences: list[Sentence], lex: Lexicon) -> ReportContext:
    screening = _screening(norm, sentences, lex)
    cat, mods = None, []
    m = lex.lung_rads.search(norm)
    if m:
        cat = m.group("cat").upper()
        if m.group("mod"):
            mods.append("S")
    rec_sents = []
    for st in sentences:
        if st.section in ("history", "technique", "comparison", "exam"):
            continue
        t = norm[st.start:st.end]
        if st.section == "recommendation" or lex.recommendation.search(t):
            rec_sents.append(st)  # a "Management:" / "Follow-up:" line is a recommendation whatever its words
    recommendation = " ".join(norm[st.start:st.end].strip() for st in rec_sents) or None
    interval, interval_range = None, None
    for st in rec_sents:
        t = norm[st.start:st.end]
        for im in _INTERVAL.finditer(t):
            if im.group("a"):
                a = int(im.group("a"))
                b = int(im.group("b")) if im.group("b") else None
                unit = im.group("u").lower()
                f = 12 if unit.startswith("y") else (0.25 if unit.startswith("w") else 1)
                interval = a * f
                interval_range = [a * f, b * f] if b else None
            elif im.group("w"):
                f = 12 if im.group("wu").lower().startswith("y") else 1
                interval = _WORD_NUM[re.sub(r"\s+", " ", im.group("w").lower())] * f
            else:
                interval = 12
            break
        if interval is not None:
            break
    extra: dict = {"interval_months": interval}
    if interval_range:
        extra["interval_range_months"] = interval_range
    if mods:
        extra["category_modifiers"] = mods
    if rec_sents and any(lex.no_follow_up.search(norm[st.start:st.end]) for st in rec_sents):
        extra["follow_up"] = False
    return ReportContext(screening=screening, stated_category=cat, recommendation=recommendation, **extra)
