"""One-to-one matching of AI findings to report findings (Hungarian assignment, scipy).

The cost of pairing AI finding *a* with report finding *r* is, in mm-equivalents (weights and gates in
``configs/discordance.yaml``, section ``matching``):

* side: right vs left, both known → the pair is forbidden (gate);
* lobe: same side, different lobe, both known → ``lobe_mismatch_cost_mm``;
* size: ``size_cost_per_mm`` × |mean diameter difference| (``missing_size_cost_mm`` when the report gives
  none); sizes more than ``max_size_ratio`` times and
  ``min_size_gap_mm`` apart are forbidden, unless the report's image lies within ``image_agree_mm`` of the
  AI finding's slice or both name the same lobe (a grossly undersized report still names the right place);
* image: ``image_cost_per_mm`` × the through-plane offset between the report's referenced image and the
  AI finding's InstanceNumber (image difference × slice spacing);
* composition: ``composition_mismatch_cost_mm`` (``calcified_mismatch_cost_mm`` when one side is calcified).

A report finding with ``count`` > 1 ("three nodules in the right lung") offers ``count`` slots, so it can take
several AI findings. Pairs costing more than ``max_cost_mm`` are left unmatched.

``distance_mm`` (kept on each match) is NOT a spatial distance unless the report finding carries coordinates
(an extra ``center_mm`` field, e.g. from a structured SR): reports give sizes and image numbers, not positions.
It is ``sqrt(Δd² + Δz²)`` where Δd is the mean-diameter difference (mm) and Δz the through-plane offset
between the referenced image and the AI's slice (mm); either term is dropped when unknown, and the distance is
None when both are.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import linear_sum_assignment

from pipelines.guidelines import normalize_composition
from pipelines.errors import GuidelineError
from pipelines.types import AIFinding, ReportFinding

log = logging.getLogger(__name__)

LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")
_LOBE_SIDE = {"RUL": "right", "RML": "right", "RLL": "right", "LUL": "left", "LLL": "left"}
_LOBE_WORDS = {
    "rul": "RUL", "rml": "RML", "rll": "RLL", "lul": "LUL", "lll": "LLL",
    "right upper": "RUL", "right middle": "RML", "right lower": "RLL", "left upper": "LUL", "left lower": "LLL",
    "middle": "RML", "lingula": "LUL", "lingular": "LUL",  # the lingula belongs to the left upper lobe
}


class ReportGuidedConfig(BaseModel):
    """When a report may take an AI finding the AI itself would not raise (``configs/discordance.yaml``,
    ``report_guided``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # the report's image within this distance (mm, through-plane) of the finding's slice
    image_mm: float = Field(gt=0)
    # when both name a lobe, they must be the same (false: a different lobe on the same side costs
    # ``lobe_mismatch_cost_mm`` as in the main matching; lobes from the lung mask are approximate)
    same_lobe: bool = True
    # when both state a composition, solid vs ground-glass and calcified vs not calcified never pair
    composition_must_agree: bool = True
    # the finding's size uncertainty is multiplied by this in the comparison (a candidate below the detector's
    # threshold is often a fragment of the nodule, its mask less sure than a confident one's)
    uncertainty_factor: float = Field(default=1.0, ge=1.0)
    # a pair whose AI size would raise the report's category gives at most a minor (borderline) flag: the AI does
    # not raise management on a candidate it does not believe itself (false: such pairs may give a major)
    no_major_upgrade: bool = True


class MatchingConfig(BaseModel):
    """Weights and gates of the matching cost (``configs/discordance.yaml``, ``matching``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_cost_mm: float = Field(gt=0)
    side_mismatch: Literal["gate"] = "gate"  # right vs left is never the same nodule
    lobe_mismatch_cost_mm: float = Field(ge=0)
    composition_mismatch_cost_mm: float = Field(ge=0)
    calcified_mismatch_cost_mm: float = Field(ge=0)
    image_cost_per_mm: float = Field(ge=0)
    size_cost_per_mm: float = Field(ge=0)
    missing_size_cost_mm: float = Field(ge=0)
    max_size_ratio: float = Field(gt=1)
    min_size_gap_mm: float = Field(ge=0)
    image_agree_mm: float = Field(ge=0)
    default_mm_per_image: float = Field(gt=0)


def normalize_side(side: str | None) -> str | None:
    if not side:
        return None
    s = str(side).strip().lower()
    if s in ("right", "r", "rt"):
        return "right"
    if s in ("left", "l", "lt"):
        return "left"
    return None


def normalize_lobe(lobe: str | None, side: str | None = None) -> str | None:
    """'right upper lobe', 'RUL', 'upper' (with side 'right'), 'lingula' → one of LOBES, or None."""
    if not lobe:
        return None
    text = " ".join(str(lobe).strip().lower().replace("_", " ").replace("-", " ").split())
    text = text.replace(" lobe", "").replace("lobe", "").strip()
    if text in _LOBE_WORDS:
        return _LOBE_WORDS[text]
    s = normalize_side(side)
    if s and text in ("upper", "lower"):
        return _LOBE_WORDS[f"{s} {text}"]
    return None


def finding_side(location) -> str | None:
    """The side of a Location, from its side or, failing that, from its lobe."""
    side = normalize_side(getattr(location, "side", None))
    if side:
        return side
    lobe = normalize_lobe(getattr(location, "lobe", None))
    return _LOBE_SIDE.get(lobe) if lobe else None


def finding_lobe(location) -> str | None:
    return normalize_lobe(getattr(location, "lobe", None), getattr(location, "side", None))


def report_mean_diameter(rf: ReportFinding) -> float | None:
    """The report's mean diameter (mm): the parser's value, else the mean of the first two stated axes.

    Fleischner and Lung-RADS both define size as the mean of long and short axis; with three stated
    dimensions the first two (the axial ones, as reports list them) are used; one stated size is taken as is.
    """
    if rf.mean_diameter_mm is not None and rf.mean_diameter_mm > 0:
        return float(rf.mean_diameter_mm)
    sizes = [float(s) for s in (rf.size_mm or []) if s is not None and s > 0]
    if not sizes:
        return None
    return sizes[0] if len(sizes) == 1 else (sizes[0] + sizes[1]) / 2.0


def _composition(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return normalize_composition(value)
    except GuidelineError:
        return None


@dataclass(frozen=True)
class Pair:
    ai: str
    report: str
    cost: float
    distance_mm: float | None


@dataclass
class MatchResult:
    pairs: list[Pair]
    unmatched_ai: list[str]
    unmatched_report: list[str]

    def report_for(self, ai_id: str) -> str | None:
        return next((p.report for p in self.pairs if p.ai == ai_id), None)

    def ais_for(self, report_id: str) -> list[str]:
        return [p.ai for p in self.pairs if p.report == report_id]


def _sizes_far_apart(d_a: float, d_r: float, cfg: MatchingConfig) -> bool:
    """More than ``max_size_ratio`` times and more than ``min_size_gap_mm`` apart: not the same nodule by size."""
    ratio = max(d_a, d_r) / max(min(d_a, d_r), 1e-6)
    return ratio > cfg.max_size_ratio and abs(d_a - d_r) > cfg.min_size_gap_mm


def _assign(cost: np.ndarray, dist: dict, ai_ids: list[str], report_ids: list[str], max_cost: float) -> list[Pair]:
    """One-to-one least-cost assignment (Hungarian); pairs that are infinite or cost more than ``max_cost`` are
    left out."""
    forbidden = max_cost * 1e3 + 1.0
    solvable = np.where(np.isfinite(cost) & (cost <= max_cost), cost, forbidden)
    rows, cols = linear_sum_assignment(solvable)
    return [Pair(ai=ai_ids[i], report=report_ids[j], cost=float(cost[i, j]),
                 distance_mm=None if dist[(i, j)] is None else round(float(dist[(i, j)]), 2))
            for i, j in zip(rows, cols) if solvable[i, j] < forbidden]


def pair_cost(a: AIFinding, r: ReportFinding, cfg: MatchingConfig, mm_per_image: float) -> tuple[float, float | None]:
    """(cost, distance_mm) of pairing ``a`` with ``r``; cost is ``math.inf`` for a forbidden pair."""
    side_a, side_r = finding_side(a.location), finding_side(r.location)
    if side_a and side_r and side_a != side_r:
        return math.inf, None
    cost = 0.0
    lobe_a, lobe_r = finding_lobe(a.location), finding_lobe(r.location)
    if lobe_a and lobe_r and lobe_a != lobe_r:
        cost += cfg.lobe_mismatch_cost_mm

    terms: list[float] = []
    dz = None
    image = getattr(r.image_ref, "image", None) if r.image_ref is not None else None
    if image is not None and a.instance_number is not None:
        dz = abs(int(image) - int(a.instance_number)) * mm_per_image
    d_r = report_mean_diameter(r)
    if d_r is not None:
        d_a = float(a.mean_diameter_mm)
        gap = abs(d_a - d_r)
        # sizes far apart are a different nodule, unless the report points at the AI's slice or lobe
        image_agrees = dz is not None and dz <= cfg.image_agree_mm
        lobe_agrees = lobe_a is not None and lobe_a == lobe_r
        if _sizes_far_apart(d_a, d_r, cfg) and not (image_agrees or lobe_agrees):
            return math.inf, None
        cost += cfg.size_cost_per_mm * gap
        terms.append(gap)
    else:
        cost += cfg.missing_size_cost_mm  # a report finding with a size that fits beats one without any
    if dz is not None:
        cost += cfg.image_cost_per_mm * dz
        terms.append(dz)

    comp_a, comp_r = _composition(a.composition), _composition(r.composition)
    if comp_a and comp_r and comp_a != comp_r:
        cost += cfg.calcified_mismatch_cost_mm if "calcified" in (comp_a, comp_r) else cfg.composition_mismatch_cost_mm

    center_r = getattr(r, "center_mm", None)
    if center_r is not None and len(center_r) == 3:
        distance = float(np.linalg.norm(np.asarray(a.center_mm, float) - np.asarray(center_r, float)))
        cost += distance
    else:
        distance = float(math.sqrt(sum(t * t for t in terms))) if terms else None
    return cost, distance


def match_findings(
    ai_findings: list[AIFinding],
    report_findings: list[ReportFinding],
    cfg: MatchingConfig,
    *,
    slice_spacing_mm: float | None = None,
) -> MatchResult:
    """Assign AI findings to report findings one-to-one (a report finding with count N takes up to N).

    ``slice_spacing_mm`` turns an image-number difference into mm; without it ``default_mm_per_image`` is used
    (image references only steer the assignment, they never decide a category).
    """
    mm_per_image = float(slice_spacing_mm) if slice_spacing_mm else cfg.default_mm_per_image
    slots: list[ReportFinding] = []
    for r in report_findings:
        slots.extend([r] * max(1, min(int(r.count or 1), max(1, len(ai_findings)))))
    pairs: list[Pair] = []
    if ai_findings and slots:
        cost = np.full((len(ai_findings), len(slots)), np.inf)
        dist: dict[tuple[int, int], float | None] = {}
        for i, a in enumerate(ai_findings):
            for j, r in enumerate(slots):
                c, d = pair_cost(a, r, cfg, mm_per_image)
                cost[i, j] = c
                dist[(i, j)] = d
        pairs = _assign(cost, dist, [a.id for a in ai_findings], [r.id for r in slots], cfg.max_cost_mm)
    matched_ai = {p.ai for p in pairs}
    matched_report = {p.report for p in pairs}
    result = MatchResult(
        pairs=sorted(pairs, key=lambda p: (p.report, p.ai)),
        unmatched_ai=[a.id for a in ai_findings if a.id not in matched_ai],
        unmatched_report=[r.id for r in report_findings if r.id not in matched_report],
    )
    log.debug("matched %d pairs; %d AI and %d report findings unmatched", len(pairs), len(result.unmatched_ai),
              len(result.unmatched_report))
    return result


def _contradicts(comp_a: str | None, comp_r: str | None) -> bool:
    """Solid vs ground-glass, or calcified vs not calcified (part-solid lies between solid and ground-glass)."""
    if not comp_a or not comp_r or comp_a == comp_r:
        return False
    return "calcified" in (comp_a, comp_r) or {comp_a, comp_r} == {"solid", "ground-glass"}


def report_guided_pairs(
    ai_findings: list[AIFinding],
    report_findings: list[ReportFinding],
    cfg: MatchingConfig,
    guided: ReportGuidedConfig,
    *,
    slice_spacing_mm: float | None = None,
) -> list[Pair]:
    """Pairs of report findings with AI findings the AI itself would not raise, where the report points at them.

    Stricter than :func:`match_findings`: a pair needs the report's side (stated, or from its lobe) to equal the
    finding's, the same lobe when both name one (``same_lobe``; else a lobe mismatch only costs), the report's
    referenced image within ``guided.image_mm`` of the finding's slice, and (``composition_must_agree``) no
    contradicting composition; sizes too far apart (``max_size_ratio`` and ``min_size_gap_mm``) never pair. A
    report finding without an image reference or a side takes none. One-to-one, least cost first.
    """
    if not guided.enabled or not ai_findings or not report_findings:
        return []
    mm_per_image = float(slice_spacing_mm) if slice_spacing_mm else cfg.default_mm_per_image
    cost = np.full((len(ai_findings), len(report_findings)), np.inf)
    dist: dict[tuple[int, int], float | None] = {}
    for j, r in enumerate(report_findings):
        image = getattr(r.image_ref, "image", None) if r.image_ref is not None else None
        side_r, lobe_r, d_r = finding_side(r.location), finding_lobe(r.location), report_mean_diameter(r)
        if image is None or side_r is None:
            continue
        for i, a in enumerate(ai_findings):
            lobe_a = finding_lobe(a.location)
            if finding_side(a.location) != side_r or (guided.same_lobe and lobe_a and lobe_r and lobe_a != lobe_r):
                continue
            if a.instance_number is None or abs(int(image) - int(a.instance_number)) * mm_per_image > guided.image_mm:
                continue
            if guided.composition_must_agree and _contradicts(_composition(a.composition), _composition(r.composition)):
                continue
            if d_r is not None and _sizes_far_apart(float(a.mean_diameter_mm), d_r, cfg):
                continue
            cost[i, j], dist[(i, j)] = pair_cost(a, r, cfg, mm_per_image)
    if not np.isfinite(cost).any():
        return []
    # no cost cap: the gates above decide what may pair
    cap = float(cost[np.isfinite(cost)].max())
    pairs = _assign(cost, dist, [a.id for a in ai_findings], [r.id for r in report_findings], cap)
    log.debug("report-guided: %d pairs", len(pairs))
    return pairs
