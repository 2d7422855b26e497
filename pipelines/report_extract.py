"""Mentions inside one sentence: target nouns, distractors, sizes, locations, image references.

Everything here works on the normalised text (same length as the original) with absolute offsets, and
every search is bounded (a sentence is at most ``max_sentence_chars`` long), so a pathological report
costs time linear in its length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipelines.report_lexicon import Lexicon

_I = re.IGNORECASE

# ------------------------------------------------------------------------------------------------ sizes
# a decimal point, or a decimal comma ("1,2 cm", European style) unless the comma starts a list of whole
# numbers ("5,6 and 7 mm" is three sizes; "4,5 and 6,5 mm" two)
_NUM = (r"(?:\d{1,3}(?:\.\d{1,2}|,\d{1,2}(?!\d)(?!\s*(?:,|and|or|&)\s*\d{1,3}(?![.,]\d)))?|\.\d{1,2})")
# number words ("a six millimetre nodule"), one to thirty-nine
_UNITS_W = "one|two|three|four|five|six|seven|eight|nine"
_WORD_NUMS = {w: i for i, w in enumerate(
    ("zero " + _UNITS_W.replace("|", " ") + " ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen "
     "nineteen").split())}
_WNUM = (rf"(?:(?:twenty|thirty)(?:[- ](?:{_UNITS_W}))?|{_UNITS_W}|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
         rf"seventeen|eighteen|nineteen)(?![\w])")
_NUM_ANY = rf"(?:{_WNUM}|{_NUM})"
_UNIT = r"(?:mm|millimet(?:er|re)s?|cm|centimet(?:er|re)s?)"
_U = rf"(?:\s?-?\s?{_UNIT})"
_X = r"\s*(?:x|\*|by)\s*"
_SIZE = re.compile(
    rf"(?<![\w.,/])(?:"
    rf"(?P<ax>{_NUM_ANY}{_U}?{_X}{_NUM_ANY}{_U}?(?:{_X}{_NUM_ANY})?{_U})"
    rf"|(?P<rng>{_NUM_ANY}{_U}?\s*(?:-+>|→|⇒|=>|-|to|and)\s*{_NUM_ANY}{_U})"
    rf"|(?P<lst>{_NUM}(?:\s*,\s*{_NUM}){{1,8}}\s*,?\s*(?:and|or|&)\s*{_NUM}{_U})"
    rf"|(?P<one>{_NUM_ANY}{_U})"
    rf")(?![\w²³/])",
    _I,
)
_ARROW = re.compile(r"-+>|→|⇒|=>")
_NUM_RE = re.compile(rf"(?<![\w-])(?P<w>{_WNUM})|{_NUM}", _I)


def _num_value(m: re.Match) -> float:
    """A number as written: digits (decimal point or comma) or an English number word."""
    if m.group("w"):
        words = re.split(r"[- ]+", m.group("w").lower())
        return float({"twenty": 20, "thirty": 30}.get(words[0], 0) + _WORD_NUMS.get(words[-1], 0))
    return float(m.group().replace(",", "."))
_UNIT_RE = re.compile(_UNIT, _I)
_VOLUME_AFTER = re.compile(r"^\s*(?:\^?[23]|[²³]|/s|hg)", _I)
_SOLID_AFTER = re.compile(r"^\s*(?:solid|soft[- ]tissue)\s+(?:component|portion|part)", _I)
_SOLID_BEFORE = re.compile(r"(?:solid|soft[- ]tissue)\s+(?:component|portion|part)\s*(?:of|measuring|measures|which\s+measures|is|:)?"
                           r"\s*(?:approximately\s+|about\s+|up\s+to\s+)?$", _I)
_MEAN_AFTER = re.compile(r"^\s*(?:in\s+)?(?:mean|average)(?:\s+(?:diameter|size))?", _I)
_MEAN_BEFORE = re.compile(r"(?:(?:mean|average)\s+(?:diameter|size)|\(\s*(?:mean|average|avg\.?))\s*(?:of|is|:|=)?\s*$", _I)
_RANGE_NOT_PRIOR = re.compile(r"(?:rang\w*\s+(?:in\s+size\s+)?from|between|measuring\s+from)\s*$", _I)


@dataclass
class SizeMention:
    start: int
    end: int
    axes_mm: list[float]
    bound: str | None = None
    range_mm: list[float] | None = None
    prior: bool = False
    solid_component: bool = False
    mean_statement: bool = False  # "6 mm in mean diameter": the writer's own mean, not an axis
    group: int = 0  # sizes written together ("4 and 6 mm", "from 5 to 7 mm") share a group
    owner: int | None = None  # index of the anchor it belongs to


def _to_mm(value: float, unit: str) -> float:
    return round(value * 10.0, 2) if unit.lower().startswith("c") else round(value, 2)


def find_sizes(norm: str, s: int, e: int, lex: Lexicon) -> list[SizeMention]:
    out: list[SizeMention] = []
    group = 0
    for m in _SIZE.finditer(norm, s, e):
        if _VOLUME_AFTER.match(norm, m.end(), min(e, m.end() + 4)):
            continue
        group += 1
        text = m.group()
        units = _UNIT_RE.findall(text)
        unit = units[-1] if units else "mm"
        nums = [(_num_value(n), n.start() + m.start(), n.end() + m.start()) for n in _NUM_RE.finditer(text)]
        if not nums:
            continue
        if len(units) > 1:  # "4 mm and 1.1 cm": each number in its own unit, a bare one in the next written
            own = []
            for v, a, b in nums:
                um = _UNIT_RE.search(norm, b, m.end())
                own.append((_to_mm(v, um.group()) if um else v, a, b))
            nums = own
            unit = "mm"
        before = norm[max(s, m.start() - 60):m.start()]
        if lex.volume_before.search(before):
            continue  # "volume 410 mm3" / "volume of 0.4 cm": not a diameter
        change = lex.size_change_before.search(before) is not None
        if change and not m.group("rng"):
            continue  # "has grown by 4 mm": a change in size, not a size
        if not m.group("rng") and lex.size_change_after.match(norm, m.end(), min(e, m.end() + 30)):
            continue  # "a 3 mm increase", "2 mm smaller than before"
        bound = _bound(before, lex)
        if m.group("ax"):
            axes = [_to_mm(v, unit) for v, _, _ in nums[:3]]
            out.append(SizeMention(m.start(), m.end(), axes, bound=bound, group=group))
        elif m.group("rng"):
            lo, hi = _to_mm(nums[0][0], unit), _to_mm(nums[-1][0], unit)
            if change:  # "increased by 3 mm to 9 mm": the change, then the size
                out.append(SizeMention(nums[-1][1], m.end(), [hi], group=group))
                continue
            # "4 and 6 mm": two sizes; "between 3 and 4 mm": one, a range
            conj = re.search(r"\band\b", text, _I) is not None and not re.search(r"between\s*$", before, _I)
            # "5 -> 8 mm", "5 → 8 mm": the prior size, then the current one
            arrow = _ARROW.search(text) is not None
            if conj or arrow or (lex.prior_before.search(before) and not _RANGE_NOT_PRIOR.search(before)):
                # "from 5 to 7 mm": a prior and a current size; "4 and 6 mm": two sizes
                first = SizeMention(nums[0][1], nums[0][2], [lo], bound=bound, prior=not conj, group=group)
                second = SizeMention(nums[-1][1], m.end(), [hi], group=group)
                out.extend([first, second])
            elif lo < hi:
                out.append(SizeMention(m.start(), m.end(), [hi], bound=bound or "range", range_mm=[lo, hi], group=group))
            else:
                out.append(SizeMention(m.start(), m.end(), [hi], bound=bound, group=group))
        elif m.group("lst"):
            for i, (v, a, b) in enumerate(nums):
                out.append(SizeMention(a, m.end() if i == len(nums) - 1 else b, [_to_mm(v, unit)],
                                       bound=bound if i == 0 else None, group=group))
        else:
            out.append(SizeMention(m.start(), m.end(), [_to_mm(nums[0][0], unit)], bound=bound, group=group))
    out = _join_axes(norm, out, lex)
    for sz in out:
        pre = norm[max(s, sz.start - 45):sz.start]
        post = norm[sz.end:min(e, sz.end + 40)]
        if _SOLID_AFTER.match(post) or _SOLID_BEFORE.search(pre):
            sz.solid_component = True
            continue
        if _MEAN_AFTER.match(post) or _MEAN_BEFORE.search(pre[-30:]):
            sz.mean_statement = True
        if not sz.prior:
            pre_clause = re.split(r"[;.]", pre)[-1]
            if lex.prior_before.search(pre_clause) and not _RANGE_NOT_PRIOR.search(pre_clause):
                sz.prior = True
            elif lex.prior_after.match(post):
                sz.prior = True
    _share_history(norm, out, e, lex)
    return [z for z in out if all(0 < a < 1000 for a in z.axes_mm)]


def _join_axes(norm: str, sizes: list[SizeMention], lex: Lexicon) -> list[SizeMention]:
    """"long axis 11 mm, short axis 8 mm" (either order) is one size of two axes, the long one first."""
    out: list[SizeMention] = []
    k = 0
    while k < len(sizes):
        z = sizes[k]
        nxt = sizes[k + 1] if k + 1 < len(sizes) else None
        if nxt is not None and len(z.axes_mm) == 1 and len(nxt.axes_mm) == 1 and nxt.start - z.end <= 40:
            pre = norm[max(0, z.start - 40):z.start]
            gap = norm[z.end:nxt.start]
            if (lex.long_axis.search(pre) and lex.short_axis.match(gap)) or (
                    lex.short_axis_before.search(pre) and lex.long_axis_gap.match(gap)) or (
                    lex.long_axis_after.match(gap) and lex.short_axis_after.match(norm, nxt.end, nxt.end + 40)):
                axes = sorted(z.axes_mm + nxt.axes_mm, reverse=True)
                out.append(SizeMention(z.start, nxt.end, axes, bound=z.bound, group=z.group))
                k += 2
                continue
        out.append(z)
        k += 1
    return out


_LIST_GAP = re.compile(rf"{_U}?\s*(?:,\s*(?:and\s+|or\s+)?|and\s+|or\s+|&\s*)", _I)
_NOW_AFTER = re.compile(r"\s*(?:now|currently|at\s+present|today|(?:on|in)\s+(?:the\s+)?(?:current|present|today'?s))\b", _I)


def _share_history(norm: str, sizes: list[SizeMention], e: int, lex: Lexicon) -> None:
    """A list of sizes shares its history: "previously 4 and 5 mm", "previously 4 mm and 5 mm" and
    "4 and 5 mm on the prior study" are prior sizes, every one of them, not only the first or the last."""
    chains: list[list[SizeMention]] = []
    for z in sorted((z for z in sizes if not z.solid_component), key=lambda z: z.start):
        if chains and chains[-1][-1].end <= z.start and _LIST_GAP.fullmatch(norm, chains[-1][-1].end, z.start):
            chains[-1].append(z)
        else:
            chains.append([z])
    for chain in chains:
        if len(chain) < 2:
            continue
        head, tail = chain[0], chain[-1]
        if head.prior and not any(_NOW_AFTER.match(norm, z.end, min(e, z.end + 30)) for z in chain):
            for z in chain:
                z.prior = True
        elif tail.prior and lex.prior_after.match(norm[tail.end:min(e, tail.end + 40)]):
            for z in chain:  # "6 and 7 mm on the prior study": the sizes written with one unit share it
                if z.group == tail.group:
                    z.prior = True


def _bound(before: str, lex: Lexicon) -> str | None:
    tail = before[-30:]
    for name, rx in lex.bounds:
        if rx.search(tail):
            return name
    return None


# --------------------------------------------------------------------------------------------- anchors

@dataclass
class Anchor:
    start: int
    end: int
    target: bool  # a pulmonary-finding noun (nodule, mass, ...) as opposed to a distractor
    kind: str | None = None
    composition: str | None = None
    plural: bool = False
    pulmonary: bool = False
    needs_focal: bool = False
    needs_lung: bool = False
    text: str = ""


def find_anchors(norm: str, s: int, e: int, lex: Lexicon) -> list[Anchor]:
    """Target and distractor nouns in [s, e), in order, never overlapping (one regex pass)."""
    anchors: list[Anchor] = []
    for m in lex.anchor_re.finditer(norm, s, e):
        word = m.group()
        if m.group("D") is not None:
            anchors.append(Anchor(m.start(), m.end(), False, text=word))
            continue
        i = int(m.lastgroup[1:])
        spec = lex.targets[i][1]
        anchors.append(Anchor(m.start(), m.end(), True, spec.kind, spec.composition, plural=_plural(word),
                              needs_focal=spec.needs_focal, needs_lung=spec.needs_lung_context, text=word))
    return anchors


def _plural(word: str) -> bool:
    w = word.lower().split()[-1]
    return (w.endswith("s") and not w.endswith(("ss", "sis", "us"))) or w.endswith(("ies", "ses", "foci")) \
        or w in ("metastases",)


# -------------------------------------------------------------------------------------------- locations

_LOBE_FULL = re.compile(
    r"(?<![\w-])(?P<side>right|rigth|left|rt\.?|lt\.?)\s+(?P<lvl>upper|uper|middle|lower|mid)(?:\s+(?:and|&|/)\s+(?P<lvl2>upper|middle|lower))?"
    r"[- ]+(?:lung\s+)?(?:lobes?|loves?)(?![\w])"
    r"|(?<![\w-])(?P<plist>(?:right|left|rt\.?|lt\.?)\s+(?:upper|middle|lower)(?:\s+lobe)?(?:\s*,\s*(?:(?:right|left)\s+)?"
    r"(?:upper|middle|lower)(?:\s+lobe)?)*\s*,?\s*(?:and|&|/)\s+(?:right|left)\s+(?:upper|middle|lower)[- ]+(?:lung\s+)?lobes"
    r"|(?:right|left)\s+(?:upper|middle|lower)(?:\s+lobe)?(?:\s*,\s*(?:(?:right|left)\s+)?(?:upper|middle|lower)(?:\s+lobe)?)+"
    r"\s*,?\s*(?:and|&)\s+(?:(?:right|left)\s+)?(?:upper|middle|lower)[- ]+(?:lung\s+)?lobes)(?![\w])"
    r"|(?<![\w-])(?P<lvl3>upper|middle|lower)\s+lobe\s+of\s+the\s+(?P<side3>right|left)\s+lung(?![\w])"
    r"|(?<![\w-])(?P<abbr>RUL|RML|RLL|LUL|LLL)(?![\w])"
    r"|(?<![\w-])(?P<ling>lingula|lingular|(?<=the\s)lingual)(?![\w])"
    r"|(?<![\w-])(?P<mid>(?:right\s+)?middle\s+lobe)(?![\w])"
    r"|(?<![\w-])(?P<both>both\s+(?:upper|lower)\s+lobes|(?:upper|lower)\s+lobes\s+bilaterally|bilateral(?:ly)?|both\s+lungs|"
    r"bibasilar|bibasal|biapical|both\s+(?:lung\s+)?(?:bases|apices)|each\s+lung|throughout\s+(?:both|the)\s+lungs)(?![\w])"
    r"|(?<![\w-])(?P<bare>upper|middle|lower)\s+lobe(?![\w])"
    r"|(?<![\w-])(?P<sideonly>right|left)(?:\s+(?:lung|apex|apical|base|basilar|basal|hemithorax|hil(?:um|ar)|perihilar|"
    r"upper\s+zone|lower\s+zone|mid\s+zone|major\s+fissure|minor\s+fissure|fissure|paramediastinal|subpleural|"
    r"paravertebral|costophrenic)|-sided)(?![\w])"
    r"|(?<![\w-])on\s+the\s+(?P<onthe>right|left)(?![\w])",
    _I,
)
_SEGMENT = re.compile(
    r"(?<![\w-])(?P<name>apicoposterior|apical|posterior|anterior|superior|lateral|medial|inferior|"
    r"(?:anterior|posterior|lateral|medial|anteromedial)[- ]?basal|superior\s+lingular|inferior\s+lingular)\s+"
    r"(?:sub)?segment(?![\w])"
    # compound segment names are unambiguous without the word "segment" ("Location: RLL, lateral basal")
    r"|(?<![\w-])(?P<name2>(?:anterior|posterior|lateral|medial|anteromedial)[- ]basal|apicoposterior)(?![\w-])"
    # a template's "Segment: apical" (its label kept as the word "segment")
    r"|(?<![\w-])segment\s+(?P<name3>(?:anterior|posterior|lateral|medial|anteromedial)[- ]?basal|apicoposterior|apical|"
    r"posterior|anterior|superior|lateral|medial|inferior)(?![\w-])"
    r"|(?<![\w-])segment\s+(?P<num>\d{1,2})(?![\w.])|(?<![\w-])S(?P<snum>\d{1,2})(?![\w.])",
    _I,
)
_LVL = {"upper": "U", "uper": "U", "middle": "M", "mid": "M", "lower": "L"}  # "uper", "rigth", "love": dictation typos


@dataclass
class LocMention:
    start: int
    end: int
    side: str | None = None
    lobe: str | None = None
    lobes: list[str] = field(default_factory=list)
    segment: str | None = None
    level: str | None = None  # "U"/"M"/"L" when the lobe is named without its side
    owner: int | None = None
    far: bool = False  # separated from its finding by a clause break
    size_start: int | None = None  # the size it directly follows ("5 mm in the right upper lobe")


_LOC_HINT = re.compile(r"right|left|lobe|RUL|RML|RLL|LUL|LLL|lingu|bilateral|both|bibas|biapical|segment|S\d|each\s+lung|"
                       r"throughout|rt\.|lt\.", _I)


def find_locations(norm: str, s: int, e: int) -> list[LocMention]:
    out: list[LocMention] = []
    if not _LOC_HINT.search(norm, s, e):
        return out
    for m in _LOBE_FULL.finditer(norm, s, e):
        g = m.groupdict()
        loc = LocMention(m.start(), m.end())
        if g["side"] or g["side3"]:
            side = (g["side"] or g["side3"]).lower()
            side = "right" if side.startswith("r") else "left"
            loc.side = side
            levels = [g["lvl"] or g["lvl3"]] + ([g["lvl2"]] if g["lvl2"] else [])
            for lv in levels:
                lobe = _lobe(side, _LVL[lv.lower()])
                if lobe:
                    loc.lobes.append(lobe)
            loc.lobe = loc.lobes[0] if loc.lobes else None
        elif g["plist"]:  # "the left upper and right lower lobes", "the right upper, middle and left lower lobes"
            side = None
            sides = set()
            for pm in re.finditer(r"(?:(right|left|rt|lt)\.?\s+)?(upper|middle|lower)", g["plist"], _I):
                if pm.group(1):
                    side = "right" if pm.group(1).lower().startswith("r") else "left"
                lobe = _lobe(side, _LVL[pm.group(2).lower()]) if side else None
                if lobe and lobe not in loc.lobes:
                    loc.lobes.append(lobe)
                    sides.add(side)
            loc.side = "bilateral" if len(sides) > 1 else side
            loc.lobe = loc.lobes[0] if loc.lobes and loc.side != "bilateral" else None  # over both lungs: no one lobe
        elif g["abbr"]:
            loc.lobe = g["abbr"].upper()
            loc.side = "right" if loc.lobe.startswith("R") else "left"
        elif g["ling"]:
            loc.side, loc.lobe, loc.segment = "left", "LUL", "lingula"
        elif g["mid"]:
            loc.side, loc.lobe = "right", "RML"
        elif g["both"]:
            loc.side = "bilateral"
        elif g["bare"]:
            loc.level = _LVL[g["bare"].lower()]
        elif g["sideonly"] or g["onthe"]:
            loc.side = (g["sideonly"] or g["onthe"]).lower()
        out.append(loc)
    for m in _SEGMENT.finditer(norm, s, e):
        if any(l.start <= m.start() < l.end for l in out):
            continue
        if m.group("name") or m.group("name2") or m.group("name3"):
            name = re.sub(r"\s+", " ", (m.group("name") or m.group("name2") or m.group("name3")).lower()).replace("-", " ")
            name = re.sub(r"(anterior|posterior|lateral|medial|anteromedial) ?basal", r"\1 basal", name)
            out.append(LocMention(m.start(), m.end(), segment=name))
        else:
            out.append(LocMention(m.start(), m.end(), segment=f"S{int(m.group('num') or m.group('snum'))}"))
    out.sort(key=lambda l: l.start)
    return out


def _lobe(side: str, level: str) -> str | None:
    if side == "left" and level == "M":
        return None
    return ("R" if side == "right" else "L") + level + "L"


# --------------------------------------------------------------------------------------- image references

_IMG_W = r"(?:images?|img\.?|im\.?|ima|slices?|i)"
_SER_W = r"(?:series|ser\.?|se\.?|s)"
_END = r"(?![\w]|\.\d)"
_IMAGE_REFS = [
    (re.compile(rf"(?<![\w]){_SER_W}\s*#?\s*(?P<s>\d{{1,4}})\s*[,/;:]?\s*(?:and\s+)?{_IMG_W}\s*#?\s*(?P<i>\d{{1,5}}){_END}", _I), "si"),
    (re.compile(rf"(?<![\w]){_IMG_W}\s*#?\s*(?P<i>\d{{1,5}})\s*(?:of|on|in|,|/)?\s*{_SER_W}\s*#?\s*(?P<s>\d{{1,4}}){_END}", _I), "is"),
    (re.compile(rf"(?<![\w])(?:images?|img\.?|im\.?|ima)\s*#?\s*(?P<s>\d{{1,4}})\s*[-:/]\s*(?P<i>\d{{1,5}}){_END}", _I), "si"),
    (re.compile(rf"(?<![\w])(?:images?|img\.?|im\.?|ima|slice)\s*(?:number|no\.?|nr\.?)?\s*#?\s*(?P<i>\d{{1,5}}){_END}", _I), "i"),
    (re.compile(r"\(\s*(?P<s>\d{1,3})\s*[-:/]\s*(?P<i>\d{1,4})\s*\)"), "si"),
]


@dataclass
class ImageRefMention:
    start: int
    end: int
    series: int | None
    image: int | None
    owner: int | None = None


_REF_HINT = re.compile(r"\b(?:im|ima|img|images?|slices?|se|ser|series|s\d{1,4}|i\d)|\(\s*\d", _I)


def find_image_refs(norm: str, s: int, e: int) -> list[ImageRefMention]:
    out: list[ImageRefMention] = []
    if not _REF_HINT.search(norm, s, e):
        return out
    for rx, kind in _IMAGE_REFS:
        for m in rx.finditer(norm, s, e):
            if any(r.start < m.end() and m.start() < r.end for r in out):
                continue
            series = int(m.group("s")) if "s" in kind else None
            image = int(m.group("i"))
            out.append(ImageRefMention(m.start(), m.end(), series, image))
            # "series 3 images 201 and 215 (respectively)": one reference per listed image, in the same series
            end = m.end()
            while (nx := _MORE_IMAGES.match(norm, end, e)) is not None:
                out.append(ImageRefMention(nx.start("i"), nx.end(), series, int(nx.group("i"))))
                end = nx.end()
    out.sort(key=lambda r: r.start)
    return out


_MORE_IMAGES = re.compile(r"\s*(?:,\s*(?:and\s+)?|and\s+|&\s*)(?P<i>\d{1,5})(?![\w]|[.,/:-]\d|\s*(?:mm|cm|x\b|millim|centim))", _I)
