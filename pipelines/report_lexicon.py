"""The report lexicon (``configs/report/lexicon.yaml``) as a typed, compiled object.

Every word list the report parser uses lives in that YAML file; this module validates it and compiles
its patterns once (case-insensitive, whole words).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.errors import ConfigError
from pipelines.paths import config_path

_FLAGS = re.IGNORECASE


def _words(pattern: str) -> re.Pattern:
    """Compile a YAML alternation as whole words; folded YAML may add spaces after ``|``."""
    alts = [a.strip() for a in _split_top(pattern)]
    body = "|".join(a for a in alts if a)
    return re.compile(rf"(?<![\w-])(?:{body})(?![\w])", _FLAGS)


def _split_top(pattern: str) -> list[str]:
    """Split on top-level ``|`` only (not inside groups)."""
    pattern = re.sub(r"\|\s+", "|", pattern.strip())  # folded YAML adds a space after a line-ending "|"
    out, depth, cur, esc = [], 0, [], False
    for ch in pattern:
        if esc:
            cur.append(ch)
            esc = False
            continue
        if ch == "\\":
            cur.append(ch)
            esc = True
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "|" and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [a.strip() for a in out]


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pattern: str
    kind: str
    composition: str | None = None
    needs_lung_context: bool = False
    needs_focal: bool = False


class NegationSpec(BaseModel):
    pre: str
    post: str
    terminators: str


class HedgingSpec(BaseModel):
    cues: str
    terminators: str


class LexiconFile(BaseModel):
    """The YAML file's shape."""

    model_config = ConfigDict(extra="forbid")
    version: int
    targets: list[TargetSpec]
    focal_words: str
    distractors: str
    organ_subjects: str
    organ_modifiers: str
    lung_words: str
    sections: dict[str, str]
    lung_headers: str
    other_headers: str
    negation: NegationSpec
    hedging: HedgingSpec
    count_words: dict[str, int]
    plural_default_count: int = Field(ge=1)
    composition: dict[str, str]
    composition_excluded: str
    stability: dict[str, str]
    size_qualifiers: str
    bounds: dict[str, str]
    prior_before: str
    size_change_before: str = "(?:grow\\w*|grew|increas\\w*|decreas\\w*)\\s+by\\s+"
    size_change_after: str = "increase|decrease|growth"
    long_axis: str = "long\\s+axis"
    short_axis: str = "short\\s+axis"
    volume_before: str = "volumes?"
    prior_after: str
    screening: str
    screening_negated: str
    screening_dose_only: str = "low[- ]dose|LDCT"
    earlier_exam_before: str = "compared\\s+(?:with|to)|prior|previous|earlier|last"
    lung_rads: str
    recommendation: str
    no_follow_up: str
    max_bytes: int = Field(gt=0)
    max_sentence_chars: int = Field(gt=100)
    max_findings: int = Field(gt=0)
    max_mentions: int = Field(default=2000, gt=0)


class Lexicon:
    """Compiled patterns of a :class:`LexiconFile`."""

    def __init__(self, spec: LexiconFile):
        self.spec = spec
        self.targets = [(_words(t.pattern), t) for t in spec.targets]
        # one pass finds every target and distractor noun: targets first, so they win at the same position
        groups = [f"(?P<t{i}>{_alt(t.pattern)})" for i, t in enumerate(spec.targets)]
        groups.append(f"(?P<D>{_alt(spec.distractors)})")
        self.anchor_re = re.compile(rf"(?<![\w-])(?:{'|'.join(groups)})(?![\w])", _FLAGS)
        self.focal = _words(spec.focal_words)
        self.distractors = _words(spec.distractors)
        self.organ_modifiers = _words(spec.organ_modifiers)
        self.organ_subjects = _words(spec.organ_subjects)
        self.lung_words = _words(spec.lung_words)
        self.sections = {k: re.compile(rf"(?:{v})", _FLAGS) for k, v in spec.sections.items()}
        self.lung_headers = re.compile(rf"(?:{_alt(spec.lung_headers)})", _FLAGS)
        self.other_headers = re.compile(rf"(?:{_alt(spec.other_headers)})", _FLAGS)
        self.neg_pre = _words(spec.negation.pre)
        self.neg_post = _words(spec.negation.post)
        self.neg_term = _words(spec.negation.terminators.replace(";", "").strip("|"))
        self.hedge = _words(spec.hedging.cues)
        self.hedge_term = _words(spec.hedging.terminators.replace(";", "").strip("|"))
        words = sorted(spec.count_words, key=len, reverse=True)
        self.count_words = {w.lower(): n for w, n in spec.count_words.items()}
        self.count_re = re.compile(
            r"(?<![\w-])(?:(?P<num>\d{1,3})|(?P<word>" + "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in words)
            + r"))(?![\w])", _FLAGS)
        self.plural_default_count = spec.plural_default_count
        self.composition = [(k, _words(v)) for k, v in spec.composition.items()]
        self.composition_names = list(spec.composition)
        self.composition_re = re.compile(
            r"(?<![\w-])(?:" + "|".join(f"(?P<c{i}>{_alt(v)})" for i, v in enumerate(spec.composition.values()))
            + r")(?![\w])", _FLAGS)
        self.composition_excluded = _words(spec.composition_excluded)
        self.stability = [(k, _words(v)) for k, v in spec.stability.items()]
        self.stability_names = list(spec.stability)
        self.stability_re = re.compile(
            r"(?<![\w-])(?:" + "|".join(f"(?P<s{i}>{_alt(v)})" for i, v in enumerate(spec.stability.values()))
            + r")(?![\w])", _FLAGS)
        self.size_qualifiers = _words(spec.size_qualifiers)
        self.bounds = [(k, re.compile(rf"(?:{_alt(v)})\s*$", _FLAGS)) for k, v in spec.bounds.items()]
        self.prior_before = re.compile(rf"(?<![\w-])(?:{_alt(spec.prior_before)})\s*[:(]?\s*(?:measur\w*\s+|at\s+|of\s+|as\s+)?"
                                       rf"(?:approximately\s+|about\s+|~\s*)?$", _FLAGS)
        self.size_change_before = re.compile(rf"(?<![\w-])(?:{_alt(spec.size_change_before)})$", _FLAGS)
        self.size_change_after = re.compile(rf"\s*(?:{_alt(spec.size_change_after)})(?![\w])", _FLAGS)
        self.long_axis = re.compile(rf"(?<![\w-])(?:{_alt(spec.long_axis)})\s*(?:of|:|=|is|measur\w*)?\s*$", _FLAGS)
        self.short_axis = re.compile(rf"^\s*[,;]?\s*(?:and\s+)?(?:a\s+|the\s+)?(?:{_alt(spec.short_axis)})"
                                     rf"\s*(?:of|:|=|is|measur\w*)?\s*$", _FLAGS)
        self.long_axis_gap = re.compile(rf"^\s*[,;]?\s*(?:and\s+)?(?:a\s+|the\s+)?(?:{_alt(spec.long_axis)})"
                                        rf"\s*(?:of|:|=|is|measur\w*)?\s*$", _FLAGS)
        # labels after the numbers: "11 mm (long axis) and 8 mm (short axis)"
        self.long_axis_after = re.compile(rf"\s*\(?\s*(?:{_alt(spec.long_axis)})\s*\)?\s*(?:,|;|and|&)?\s*(?:,|;|and|&)?\s*$", _FLAGS)
        self.short_axis_after = re.compile(rf"\s*\(?\s*(?:{_alt(spec.short_axis)})(?![\w])", _FLAGS)
        self.short_axis_before = re.compile(rf"(?<![\w-])(?:{_alt(spec.short_axis)})\s*(?:of|:|=|is|measur\w*)?\s*$", _FLAGS)
        self.volume_before = re.compile(rf"(?<![\w-])(?:{_alt(spec.volume_before)})\s*(?:of|:|=|is|measur\w*)?\s*"
                                        rf"(?:approximately\s+|about\s+|~\s*)?$", _FLAGS)
        self.prior_after = re.compile(rf"^\s*(?:{_alt(spec.prior_after)})(?![\w])", _FLAGS)
        self.screening = _words(spec.screening)
        self.screening_negated = _words(spec.screening_negated)
        self.screening_dose_only = re.compile(rf"(?:{_alt(spec.screening_dose_only)})", _FLAGS)
        self.earlier_exam_before = re.compile(
            rf"(?<![\w-])(?:{_alt(spec.earlier_exam_before)})\s+(?:the\s+|a\s+|an\s+)?(?:[\w/.-]+\s+){{0,3}}$", _FLAGS)
        self.lung_rads = _re(spec.lung_rads)
        self.recommendation = _words(spec.recommendation)
        self.no_follow_up = _words(spec.no_follow_up)
        self.max_bytes = spec.max_bytes
        self.max_sentence_chars = spec.max_sentence_chars
        self.max_findings = spec.max_findings
        self.max_mentions = spec.max_mentions


def _alt(pattern: str) -> str:
    return "|".join(a for a in _split_top(pattern) if a)


def _re(pattern: str) -> re.Pattern:
    return re.compile(_alt(pattern), _FLAGS)


def load_lexicon(path: Path | str | None = None) -> Lexicon:
    """Read and compile the lexicon (default ``configs/report/lexicon.yaml``); :class:`ConfigError` if invalid."""
    return _load(str(path or config_path("report", "lexicon.yaml")))


@functools.lru_cache(maxsize=4)
def _load(path: str) -> Lexicon:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return Lexicon(LexiconFile.model_validate(raw))
    except FileNotFoundError as ex:
        raise ConfigError(f"report lexicon not found: {path}", hint="restore configs/report/lexicon.yaml") from ex
    except (yaml.YAMLError, ValidationError, re.error) as ex:
        raise ConfigError(f"report lexicon {path} is invalid: {ex}") from ex
