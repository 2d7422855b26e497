"""Where the AI and the report disagree in a way that would change management (DESIGN.md, "What makes a
discordance").

For each study: pick the guideline from the report's context (Lung-RADS v2022 for screening, else Fleischner
2017), match AI findings to report findings one-to-one (:mod:`pipelines.matching`), categorise both sides with
the same table, and raise:

* ``category_change`` (major): matched, the two sizes lead to different management (different rank), the
  difference exceeds ``k`` × the combined uncertainty (AI ``uncertainty_mm`` and the reader tolerance,
  ``configs/discordance.yaml``), and the AI's category holds when its size moves its own uncertainty towards
  the report's;
* ``borderline`` (minor): as above, but within the combined uncertainty or within the AI's uncertainty of the
  threshold; also a matched nodule the report gives no size for while the AI's category calls for follow-up;
* ``missed_finding``: an AI nodule no report finding matches; major when by itself it raises the study's
  management above the report's (robustly: also at its size minus its uncertainty), else minor;
* ``report_negative_ai_positive`` (major): the report says there are no nodules and the AI finds one the
  guideline does not dismiss (robustly); near the threshold it is a borderline, a dismissed one a minor
  missed_finding;
* ``unconfirmed_report_finding`` (minor): a report nodule no AI finding matches;
* ``hedged_report`` (info): the report hedges ("cannot exclude", "possibly"); it raises priority.

Verdict: ``indeterminate`` when no usable AI result was given, when no guideline applies, or when the only
flags are info; ``discordant`` when any major or minor flag is raised; ``concordant`` otherwise.

Priority (0..100): severity bands that do not overlap (major > minor > info/indeterminate > concordant), and
within a band how far the AI's size is past the guideline threshold (in combined uncertainties), the AI's
confidence and the study's waiting time, weighted as configured.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.errors import ConfigError, DiscordanceError, GuidelineError
from pipelines.guidelines import Category, Guideline, normalize_composition, select_guideline
from pipelines.matching import (
    MatchingConfig,
    MatchResult,
    ReportGuidedConfig,
    finding_lobe,
    finding_side,
    match_findings,
    report_guided_pairs,
    report_mean_diameter,
)
from pipelines.paths import config_path
from pipelines.types import AIFinding, Discordance, Match, ReportContext, ReportFinding

log = logging.getLogger(__name__)

Verdict = Literal["discordant", "concordant", "indeterminate"]
_SEVERITY_ORDER = {"major": 0, "minor": 1, "info": 2}


# -- configuration ---------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToleranceConfig(_Strict):
    reader_tolerance_mm: float = Field(ge=0)
    ai_uncertainty_floor_mm: float = Field(ge=0)
    combine: Literal["quadrature", "sum"]
    k: float = Field(gt=0)

    def combined(self, ai_uncertainty_mm: float | None) -> float:
        u = self.ai_uncertainty(ai_uncertainty_mm)
        if self.combine == "sum":
            return u + self.reader_tolerance_mm
        return math.hypot(u, self.reader_tolerance_mm)

    def ai_uncertainty(self, ai_uncertainty_mm: float | None) -> float:
        u = ai_uncertainty_mm if ai_uncertainty_mm is not None and math.isfinite(ai_uncertainty_mm) else 0.0
        return max(float(u), self.ai_uncertainty_floor_mm)


class PolicyConfig(_Strict):
    default_risk: Literal["low", "high"]
    min_ai_confidence: float = Field(ge=0, le=1)
    ignore_unmatched_calcified: bool
    flag_unmatched_dismissed: bool
    report_nodule_kinds: list[str]
    ai_nodule_kinds: list[str]


class PriorityWeights(_Strict):
    margin: float = Field(ge=0)
    confidence: float = Field(ge=0)
    waiting: float = Field(ge=0)


class PriorityConfig(_Strict):
    bands: dict[Literal["major", "minor", "info", "indeterminate", "concordant"], tuple[float, float]]
    weights: PriorityWeights
    margin_saturation: float = Field(gt=0)
    waiting_saturation_s: float = Field(gt=0)
    hedged_bonus: float = Field(ge=0, le=1)

    def band(self, name: str) -> tuple[float, float]:
        lo, hi = self.bands[name]  # type: ignore[index]
        return float(lo), float(hi)

    def waiting_share(self, waited_s: float) -> float:
        return min(1.0, max(0.0, float(waited_s)) / self.waiting_saturation_s)


class DiscordanceConfig(_Strict):
    """``configs/discordance.yaml`` as a typed model."""

    sources: list[str] = Field(min_length=1)
    tolerance: ToleranceConfig
    matching: MatchingConfig
    report_guided: ReportGuidedConfig = ReportGuidedConfig(enabled=False, image_mm=5.0)
    policy: PolicyConfig
    priority: PriorityConfig


@lru_cache(maxsize=8)
def _load_config(path: str) -> DiscordanceConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"discordance settings {p} not found", hint="restore configs/discordance.yaml")
    try:
        cfg = DiscordanceConfig.model_validate(yaml.safe_load(p.read_text(encoding="utf-8")))
    except yaml.YAMLError as err:
        raise ConfigError(f"discordance settings {p} are not valid YAML: {err}") from err
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"discordance settings {p} are invalid at {'.'.join(map(str, first['loc']))}: "
                          f"{first['msg']}") from err
    for name, (lo, hi) in cfg.priority.bands.items():
        if not 0 <= lo <= hi <= 100:
            raise ConfigError(f"priority band {name} in {p} must lie within 0..100 with low <= high")
    return cfg


def load_discordance_config(path: str | Path | None = None) -> DiscordanceConfig:
    """Load the discordance settings (default ``configs/discordance.yaml``)."""
    return _load_config(str(Path(path).resolve() if path else config_path("discordance.yaml")))


# -- result --------------------------------------------------------------------------------------------------
class Comparison(BaseModel):
    """What :func:`compare` found for one study."""

    guideline: str | None
    matches: list[Match] = Field(default_factory=list)
    discordances: list[Discordance] = Field(default_factory=list)  # most severe / most urgent first
    verdict: Verdict = "indeterminate"
    priority: float = 0.0
    report_category: Category | None = None  # the study's category by the report's own sizes
    ai_category: Category | None = None  # the study's category by the AI's sizes (matched and missed nodules)
    notes: list[str] = Field(default_factory=list)


@dataclass
class _Flag:
    discordance: Discordance
    margin_share: float  # 0..1, how far past the threshold
    confidence: float  # 0..1, the AI's confidence (0 when no AI finding is involved)
    raises: bool = False  # a category_change to a higher category than the report's


# -- wording ---------------------------------------------------------------------------------------------------
def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if abs(x - round(x)) < 0.05 else f"{x:.1f}"


def _where(location) -> str:
    lobe = finding_lobe(location)
    if lobe:
        return lobe
    side = finding_side(location)
    return f"{side} lung" if side else ""


def _report_words(rf: ReportFinding, composition: str | None) -> str:
    """'5 mm RUL nodule' / '12 x 8 mm part-solid LLL nodule' / 'RUL nodule (no size given)'."""
    sizes = [s for s in (rf.size_mm or []) if s]
    size = " x ".join(_num(float(s)) for s in sizes) + " mm" if sizes else ""
    if not sizes and rf.mean_diameter_mm:
        size = f"{_num(rf.mean_diameter_mm)} mm"
    parts = [size, _where(rf.location), composition if composition and composition != "solid" else "",
             "nodules" if (rf.count or 1) > 1 else "nodule"]
    text = " ".join(p for p in parts if p)
    if (rf.count or 1) > 1:
        text = f"{rf.count} {text}" if not size else text
    if rf.image_ref is not None and rf.image_ref.image is not None:
        text += f" (image {rf.image_ref.image})"
    return text if sizes or rf.mean_diameter_mm else text + " without a size"


def _ai_words(a: AIFinding, u: float, *, full: bool) -> str:
    """'7.4 mm (±0.6)' or, with full=True, '9.1 mm (±0.5) solid nodule in the RLL (image 123)'."""
    text = f"{a.mean_diameter_mm:.1f} mm (±{u:.1f})"
    if not full:
        return text
    text += f" {a.composition} nodule"
    where = _where(a.location)
    if where:
        text += f" in the {where}"
    if a.instance_number is not None:
        text += f" (image {a.instance_number})"
    return text


def _quote(text: str, limit: int = 90) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= limit else t[: limit - 1].rstrip() + "…"


# -- the comparison --------------------------------------------------------------------------------------------
class _Study:
    """Everything one comparison needs, so the helpers below stay small."""

    def __init__(self, g: Guideline, cfg: DiscordanceConfig, risk: str):
        self.g, self.cfg, self.risk = g, cfg, risk

    def categorize(self, composition: str, size: float, *, solid: float | None, count: int, new: bool,
                   growing: bool) -> Category:
        return self.g.categorize(composition, size, solid_component_mm=solid, count=count, new=new,
                                 growing=growing, risk=self.risk)

    def boundary(self, composition: str, *, start: float, end: float, start_rank: int, solid_at, count: int,
                 new: bool, growing: bool) -> float | None:
        """The size between ``start`` and ``end`` where the category's rank first differs from ``start_rank``.

        Bisection on the (monotone in size) table; ``solid_at(size)`` gives the solid component to use at a size.
        Returns None when the rank never differs along the way.
        """
        def rank(s: float) -> int:
            return self.categorize(composition, max(s, 0.05), solid=solid_at(s), count=count, new=new,
                                   growing=growing).rank

        if rank(end) == start_rank:
            return None
        lo, hi = start, end
        for _ in range(40):
            mid = (lo + hi) / 2.0
            if rank(mid) == start_rank:
                lo = mid
            else:
                hi = mid
        return hi


def _relevant_report(findings: list[ReportFinding], kinds: list[str]) -> list[ReportFinding]:
    allowed = {k.lower() for k in kinds}
    return [f for f in findings if str(f.kind or "").lower().replace(" ", "-") in allowed
            or str(f.kind or "").lower() in allowed]


def _composition_or(value: str | None, fallback: str) -> str:
    if value:
        try:
            return normalize_composition(value)
        except GuidelineError:
            log.info("report composition %r not recognised; using %s", value, fallback)
    return fallback


def compare(
    ai_findings: list[AIFinding],
    report_findings: list[ReportFinding],
    context: ReportContext,
    *,
    waited_s: float = 0.0,
    config: DiscordanceConfig | None = None,
    ai_available: bool = True,
    slice_spacing_mm: float | None = None,
    patient_age: float | None = None,
    known_cancer: bool = False,
    immunocompromised: bool = False,
    risk: str | None = None,
    guideline: Guideline | None = None,
    reserve: list[AIFinding] | None = None,
) -> Comparison:
    """Compare the AI's nodules with the report's under the applicable guideline.

    ``ai_available=False`` says the model gave no usable result (the verdict is then indeterminate, only
    report-side info is kept). ``slice_spacing_mm`` converts report image numbers to mm for matching.
    ``risk`` is the Fleischner patient risk ('low'/'high'; default from the context's extra ``risk`` field,
    else ``policy.default_risk``). ``guideline`` overrides the selection from the context.

    Report-guided (``report_guided`` in the settings): a report finding no confident AI finding matches may take
    an AI finding below ``policy.min_ai_confidence``, or one of ``reserve`` (candidates the model set apart),
    where the report points at it (:func:`pipelines.matching.report_guided_pairs`). Its match says
    ``report_guided``, and so does the sentence of any flag it raises.
    """
    cfg = config or load_discordance_config()
    if waited_s is None or not math.isfinite(float(waited_s)) or waited_s < 0:
        raise DiscordanceError(f"waited_s must be a non-negative number of seconds, got {waited_s!r}")
    risk = risk or getattr(context, "risk", None) or cfg.policy.default_risk
    if risk not in ("low", "high"):
        raise DiscordanceError(f"unknown patient risk {risk!r}", hint="use 'low' or 'high'")

    nodule_kinds = {k.lower() for k in cfg.policy.ai_nodule_kinds}
    sized_nodules = [a for a in ai_findings
                     if str(a.kind).lower() in nodule_kinds and a.mean_diameter_mm and a.mean_diameter_mm > 0]
    ai = [a for a in sized_nodules if a.confidence >= cfg.policy.min_ai_confidence]
    report_all = _relevant_report(report_findings, cfg.policy.report_nodule_kinds)
    positive = [r for r in report_all if not r.negated]
    # "... and 2 additional nodules as described": no size, no place, no image - a restatement of findings
    # already listed, which would otherwise take an AI finding from the finding it restates
    informative = [r for r in positive if not _uninformative(r)]
    if informative:
        positive = informative
    restated = [r for r in positive if _restates(r, positive)]
    positive = [r for r in positive if r not in restated]
    # "no pulmonary nodules" (negation scope all); "no new nodules" (scope new) says nothing about older ones,
    # and "no other nodules" (scope other) implies nodules described elsewhere: neither is a negative report
    negative_report = not positive and any(r.negated and getattr(r, "negation_scope", "all") == "all"
                                           for r in report_all)
    notes: list[str] = [f"report finding {r.id} read as a restatement of a sized finding in the same place"
                        for r in restated]
    flags: list[_Flag] = []

    # hedged report findings: info, independent of the AI
    hedged_texts: set[str] = set()
    for rf in report_all:
        if rf.hedged and " ".join(rf.text.split()) not in hedged_texts:
            hedged_texts.add(" ".join(rf.text.split()))
            flags.append(_Flag(Discordance(
                type="hedged_report", severity="info", guideline="", report=rf.id,
                explanation=f"Report hedges: “{_quote(rf.text)}”; worth a closer look at the images.",
            ), 0.0, 0.0))

    match = match_findings(ai, positive, cfg.matching, slice_spacing_mm=slice_spacing_mm) if ai_available \
        else MatchResult(pairs=[], unmatched_ai=[], unmatched_report=[r.id for r in positive])
    guided_ids: set[str] = set()
    if ai_available and match.unmatched_report and cfg.report_guided.enabled:
        confident = {a.id for a in ai}
        pool = [a for a in sized_nodules if a.id not in confident] + [
            a for a in reserve or [] if str(a.kind).lower() in nodule_kinds and a.mean_diameter_mm
            and a.mean_diameter_mm > 0]
        open_report = [r for r in positive if r.id in set(match.unmatched_report)]
        guided = report_guided_pairs(pool, open_report, cfg.matching, cfg.report_guided,
                                     slice_spacing_mm=slice_spacing_mm)
        if guided:
            guided_ids = {p.ai for p in guided}
            widen = cfg.report_guided.uncertainty_factor
            ai = ai + [a.model_copy(update={"uncertainty_mm": cfg.tolerance.ai_uncertainty(a.uncertainty_mm) * widen})
                       for a in pool if a.id in guided_ids]
            taken = {p.report for p in guided}
            match = MatchResult(pairs=sorted(match.pairs + guided, key=lambda p: (p.report, p.ai)),
                                unmatched_ai=match.unmatched_ai,
                                unmatched_report=[r for r in match.unmatched_report if r not in taken])
            notes.extend(f"report finding {p.report} took AI finding {p.ai}, below the AI's own threshold, where the "
                         f"report points (report-guided)" for p in guided)
    matches = [Match(ai=p.ai, report=p.report, distance_mm=p.distance_mm, report_guided=p.ai in guided_ids)
               for p in match.pairs]
    matches += [Match(ai=a, report=None, distance_mm=None) for a in match.unmatched_ai]
    matches += [Match(ai=None, report=r, distance_mm=None) for r in match.unmatched_report]

    try:
        g = guideline or select_guideline(context, patient_age=patient_age, known_cancer=known_cancer,
                                          immunocompromised=immunocompromised)
    except GuidelineError as err:
        notes.append(f"no guideline applies: {err}")
        for f in flags:
            f.discordance.guideline = "none"
        return _finish(cfg, flags, matches, None, None, None, notes, waited_s, ai_available=False)

    for f in flags:
        f.discordance.guideline = g.name
    if not ai_available:
        notes.append("no usable AI result: only the report was read")
        return _finish(cfg, flags, matches, g, None, None, notes, waited_s, ai_available=False)

    study = _Study(g, cfg, risk)
    by_ai = {a.id: a for a in ai}
    by_report = {r.id: r for r in positive}
    n_report = sum(max(1, int(r.count or 1)) for r in positive
                   if _composition_or(r.composition, "solid") != "calcified")
    n_ai = sum(1 for a in ai if a.composition != "calcified")
    pair_count = max(1, n_report, n_ai)

    # the report's own categories (its sizes, its count), for the study's management by the report
    report_cats: dict[str, Category] = {}
    for rf in positive:
        size = report_mean_diameter(rf)
        if size is None:
            continue
        partner = next((by_ai[p.ai] for p in match.pairs if p.report == rf.id), None)
        comp = _composition_or(rf.composition, partner.composition if partner else "solid")
        solid = _report_solid(rf, size, partner, cfg.tolerance) if comp == "part-solid" else None
        report_cats[rf.id] = study.categorize(comp, size, solid=solid, count=max(1, n_report),
                                              new=_is_new(rf), growing=_growing(g, size, rf))
    report_study = max(report_cats.values(), key=lambda c: c.rank, default=g.no_nodule_category())
    ai_cats: list[Category] = []

    # matched pairs: category_change / borderline
    for p in match.pairs:
        a, rf = by_ai[p.ai], by_report[p.report]
        flag, cat_a = _compare_pair(study, a, rf, report_cats.get(rf.id), pair_count)
        ai_cats.append(cat_a)
        if flag:
            if a.id in guided_ids:
                d = flag.discordance
                if d.severity == "major" and cfg.report_guided.no_major_upgrade and flag.raises:
                    d.type, d.severity, flag.margin_share = "borderline", "minor", 0.0
                    d.explanation += " Not major: the AI would raise the report's category only by a candidate below its own threshold."
                flag.discordance.explanation += (
                    f" The AI found this nodule only where the report points (its confidence {a.confidence:.2f} is "
                    f"below its own threshold of {cfg.policy.min_ai_confidence:g}).")
            flags.append(flag)

    # unmatched AI nodules: missed_finding / report_negative_ai_positive
    n_missed = sum(1 for aid in match.unmatched_ai if by_ai[aid].composition != "calcified")
    for aid in match.unmatched_ai:
        a = by_ai[aid]
        if a.composition == "calcified" and cfg.policy.ignore_unmatched_calcified:
            continue
        flag, cat_a = _compare_unmatched_ai(study, a, report_study, max(1, n_report + n_missed), negative_report,
                                            silent=not report_all)
        ai_cats.append(cat_a)
        if flag:
            flags.append(flag)

    # report nodules no AI finding matched
    for rid in match.unmatched_report:
        rf = by_report[rid]
        cat = report_cats.get(rid)
        comp = _composition_or(rf.composition, "solid")
        said = f", {cat.summary()}" if cat else ""
        flags.append(_Flag(Discordance(
            type="unconfirmed_report_finding", severity="minor", guideline=g.name,
            report_category=cat.code if cat else None, report=rid,
            explanation=f"Report: {_report_words(rf, comp)}{said}. AI: no matching nodule found.",
        ), 0.0, 0.0))

    ai_study = max(ai_cats, key=lambda c: c.rank, default=g.no_nodule_category())
    return _finish(cfg, flags, matches, g, report_study, ai_study, notes, waited_s, ai_available=True)


def _uninformative(rf: ReportFinding) -> bool:
    """A report nodule with no size, no side or lobe and no image reference."""
    return (report_mean_diameter(rf) is None and finding_side(rf.location) is None
            and (rf.image_ref is None or rf.image_ref.image is None))


def _restates(rf: ReportFinding, others: list[ReportFinding]) -> bool:
    """A size-less, image-less mention ("the right middle lobe nodule") of a place where another finding of the
    report gives a size: a back-reference (typically in the impression), not another nodule."""
    if report_mean_diameter(rf) is not None or (rf.image_ref is not None and rf.image_ref.image is not None):
        return False
    lobe, side = finding_lobe(rf.location), finding_side(rf.location)
    for o in others:
        if o is rf or report_mean_diameter(o) is None:
            continue
        if (lobe and finding_lobe(o.location) == lobe) or (not lobe and side and finding_side(o.location) == side):
            return True
    return False


def _report_solid(rf: ReportFinding, report_mean: float, partner: AIFinding | None,
                  tol: ToleranceConfig) -> float | None:
    """The report's solid component (mm) of a part-solid nodule.

    When the report gives none, the matched AI finding's solid component stands in: as is when the two total
    sizes agree within the combined uncertainty (no difference is invented), else scaled by the ratio of the
    totals (the reader is taken to have measured the same nodule at the scale of their total size), so that a
    Lung-RADS category that hinges on the solid component is compared like for like.
    """
    stated = getattr(rf, "solid_component_mm", None)
    if stated is not None:
        return float(stated)
    if partner is None or partner.solid_component_mm is None or not partner.mean_diameter_mm:
        return None
    if abs(report_mean - partner.mean_diameter_mm) <= tol.k * tol.combined(partner.uncertainty_mm):
        return float(partner.solid_component_mm)
    return float(partner.solid_component_mm) * report_mean / float(partner.mean_diameter_mm)


def _is_new(rf: ReportFinding) -> bool:
    """The report calls the nodule new (parser's ``stability="new"``, or an explicit ``new`` flag)."""
    return bool(getattr(rf, "new", False)) or getattr(rf, "stability", None) == "new"


def _growing(g: Guideline, size: float, rf: ReportFinding) -> bool:
    """Growth as the guideline counts it: ``size`` against the report's stated prior size; without a prior
    size, the report's own word for it (parser's ``stability="enlarging"``)."""
    prior = [float(s) for s in (rf.prior_size_mm or []) if s]
    if not prior:
        return bool(getattr(rf, "growing", False)) or getattr(rf, "stability", None) == "enlarging"
    prior_mean = prior[0] if len(prior) == 1 else (prior[0] + prior[1]) / 2.0
    return g.is_growth(size, prior_mean)


def _compare_pair(study: _Study, a: AIFinding, rf: ReportFinding, cat_r: Category | None,
                  count: int) -> tuple[_Flag | None, Category]:
    g, tol, pcfg = study.g, study.cfg.tolerance, study.cfg.priority
    u_a = tol.ai_uncertainty(a.uncertainty_mm)
    sigma = tol.combined(a.uncertainty_mm)
    new = _is_new(rf)
    cat_a = study.categorize(a.composition, a.mean_diameter_mm, solid=a.solid_component_mm, count=count,
                             new=new, growing=_growing(g, a.mean_diameter_mm, rf))
    comp_r = _composition_or(rf.composition, a.composition)
    r = report_mean_diameter(rf)
    if r is None or cat_r is None:
        if cat_a.rank <= g.no_nodule_category().rank:
            return None, cat_a
        return _Flag(Discordance(
            type="borderline", severity="minor", guideline=g.name, report_category=None, ai_category=cat_a.code,
            ai=a.id, report=rf.id,
            explanation=(f"Report: {_report_words(rf, comp_r)}, so its category cannot be checked. "
                         f"AI: {_ai_words(a, u_a, full=False)}, {cat_a.summary()}."),
        ), 0.0, float(a.confidence)), cat_a
    # the report side, categorised with the same count as the AI side so that only size/composition differ
    solid_r = _report_solid(rf, r, a, tol) if comp_r == "part-solid" else None
    cat_r = study.categorize(comp_r, r, solid=solid_r, count=count, new=new, growing=_growing(g, r, rf))
    if cat_a.rank == cat_r.rank:
        return None, cat_a

    diff = abs(a.mean_diameter_mm - r)
    solid_diff = abs((a.solid_component_mm or 0.0) - solid_r) if (solid_r is not None and comp_r == "part-solid"
                                                                 and a.composition == "part-solid") else 0.0
    within = max(diff, solid_diff) <= tol.k * sigma
    # the AI's category, its size moved by its own uncertainty towards the report's
    step = math.copysign(u_a, r - a.mean_diameter_mm) if r != a.mean_diameter_mm else 0.0
    solid_shift = None
    if a.solid_component_mm is not None:
        target = solid_r if solid_r is not None else a.solid_component_mm
        solid_shift = max(0.0, a.solid_component_mm + math.copysign(min(u_a, abs(target - a.solid_component_mm)),
                                                                     target - a.solid_component_mm))
    shifted = study.categorize(a.composition, max(0.05, a.mean_diameter_mm + step), solid=solid_shift, count=count,
                               new=new, growing=_growing(g, a.mean_diameter_mm + step, rf))
    near_threshold = shifted.rank == cat_r.rank
    rank_up = cat_a.rank > cat_r.rank
    # how far the AI's size lies past the threshold that separates it from the report's size (AI composition)
    solid_at = (lambda s: None) if a.solid_component_mm is None else (
        lambda s: a.solid_component_mm * s / a.mean_diameter_mm)
    start_rank = study.categorize(a.composition, r, solid=solid_at(r), count=count, new=new,
                                  growing=_growing(g, r, rf)).rank
    t = study.boundary(a.composition, start=r, end=a.mean_diameter_mm, start_rank=start_rank, solid_at=solid_at,
                       count=count, new=new, growing=_growing(g, a.mean_diameter_mm, rf))
    margin_mm = abs(a.mean_diameter_mm - t) if t is not None else diff
    margin_share = min(1.0, margin_mm / sigma / pcfg.margin_saturation)
    report_part = f"Report: {_report_words(rf, comp_r)}, {cat_r.summary()}."
    ai_part = f"AI: {_ai_words(a, u_a, full=False)}, {cat_a.summary()}"
    if within or near_threshold:
        why = ("within the combined measurement uncertainty (±" + f"{sigma:.1f} mm)" if within
               else "within the AI's uncertainty of the size threshold")
        return _Flag(Discordance(
            type="borderline", severity="minor", guideline=g.name, report_category=cat_r.code,
            ai_category=cat_a.code, ai=a.id, report=rf.id, explanation=f"{report_part} {ai_part}, {why}.",
        ), 0.0, float(a.confidence)), cat_a
    direction = "" if rank_up else " (less follow-up than the report implies)"
    return _Flag(Discordance(
        type="category_change", severity="major", guideline=g.name, report_category=cat_r.code,
        ai_category=cat_a.code, ai=a.id, report=rf.id, explanation=f"{report_part} {ai_part}{direction}.",
    ), margin_share, float(a.confidence), raises=rank_up), cat_a


def _compare_unmatched_ai(study: _Study, a: AIFinding, report_study: Category, count: int,
                          negative_report: bool, *, silent: bool) -> tuple[_Flag | None, Category]:
    g, tol, pol, pcfg = study.g, study.cfg.tolerance, study.cfg.policy, study.cfg.priority
    u_a = tol.ai_uncertainty(a.uncertainty_mm)
    sigma = tol.combined(a.uncertainty_mm)
    cat_a = study.categorize(a.composition, a.mean_diameter_mm, solid=a.solid_component_mm, count=count,
                             new=False, growing=False)
    low_solid = None if a.solid_component_mm is None else max(0.0, a.solid_component_mm - u_a)
    cat_low = study.categorize(a.composition, max(0.05, a.mean_diameter_mm - u_a), solid=low_solid, count=count,
                               new=False, growing=False)
    changes = cat_a.rank > report_study.rank
    robust = cat_low.rank > report_study.rank
    if changes:
        solid_at = (lambda s: None) if a.solid_component_mm is None else (
            lambda s: a.solid_component_mm * s / a.mean_diameter_mm)
        t = study.boundary(a.composition, start=0.05, end=a.mean_diameter_mm, start_rank=report_study.rank,
                           solid_at=solid_at, count=count, new=False, growing=False)
        margin_mm = a.mean_diameter_mm - t if t is not None else a.mean_diameter_mm
        margin_share = min(1.0, max(0.0, margin_mm) / sigma / pcfg.margin_saturation)
    else:
        margin_share = 0.0
    conf = float(a.confidence)
    said = "no pulmonary nodules" if negative_report else ("no nodule mentioned" if silent else "no matching nodule")
    if negative_report and robust:
        d = Discordance(type="report_negative_ai_positive", severity="major", guideline=g.name,
                        report_category=report_study.code, ai_category=cat_a.code, ai=a.id,
                        explanation=f"Report: {said}. AI: {_ai_words(a, u_a, full=True)}, {cat_a.summary()}.")
        return _Flag(d, margin_share, conf), cat_a
    if robust:
        d = Discordance(type="missed_finding", severity="major", guideline=g.name,
                        report_category=report_study.code, ai_category=cat_a.code, ai=a.id,
                        explanation=f"Report: {said}. AI: {_ai_words(a, u_a, full=True)}, {cat_a.summary()}.")
        return _Flag(d, margin_share, conf), cat_a
    if changes:
        kind = "borderline" if negative_report else "missed_finding"
        d = Discordance(type=kind, severity="minor", guideline=g.name, report_category=report_study.code,
                        ai_category=cat_a.code, ai=a.id,
                        explanation=(f"Report: {said}. AI: {_ai_words(a, u_a, full=True)}, {cat_a.summary()}, "
                                     f"within its uncertainty of the size threshold."))
        return _Flag(d, margin_share, conf), cat_a
    if not pol.flag_unmatched_dismissed:
        return None, cat_a
    d = Discordance(type="missed_finding", severity="minor", guideline=g.name, report_category=report_study.code,
                    ai_category=cat_a.code, ai=a.id,
                    explanation=(f"Report: {said}. AI: {_ai_words(a, u_a, full=True)}, {cat_a.summary()}, "
                                 f"which does not change management."))
    return _Flag(d, 0.0, conf), cat_a


def _finish(cfg: DiscordanceConfig, flags: list[_Flag], matches: list[Match], g: Guideline | None,
            report_study: Category | None, ai_study: Category | None, notes: list[str], waited_s: float, *,
            ai_available: bool) -> Comparison:
    pcfg = cfg.priority
    w = pcfg.weights
    wait = pcfg.waiting_share(waited_s)
    scored: list[tuple[float, _Flag]] = []
    for f in flags:
        lo, hi = pcfg.band(f.discordance.severity)
        share = w.margin * f.margin_share + w.confidence * f.confidence + w.waiting * wait
        share = min(1.0, share / max(w.margin + w.confidence + w.waiting, 1e-9))
        scored.append((lo + (hi - lo) * share, f))
    scored.sort(key=lambda sf: (_SEVERITY_ORDER[sf[1].discordance.severity], -sf[0]))
    severities = {f.discordance.severity for _, f in scored}

    if not ai_available or g is None:
        verdict: Verdict = "indeterminate"
    elif severities & {"major", "minor"}:
        verdict = "discordant"
    elif "info" in severities:
        verdict = "indeterminate"
    else:
        verdict = "concordant"

    if scored and verdict == "discordant" or (scored and verdict == "indeterminate" and severities == {"info"}):
        top = max(s for s, _ in scored)
        band = pcfg.band(scored[0][1].discordance.severity)
        if any(f.discordance.type == "hedged_report" for _, f in scored):
            top = min(band[1], top + pcfg.hedged_bonus * (band[1] - band[0]))
        priority = top
    else:
        lo, hi = pcfg.band("indeterminate" if verdict == "indeterminate" else "concordant")
        priority = lo + (hi - lo) * wait
        if any(f.discordance.type == "hedged_report" for _, f in scored):
            priority = min(hi, priority + pcfg.hedged_bonus * (hi - lo))
    return Comparison(
        guideline=g.name if g else None, matches=matches, discordances=[f.discordance for _, f in scored],
        verdict=verdict, priority=round(float(priority), 2), report_category=report_study, ai_category=ai_study,
        notes=notes,
    )
