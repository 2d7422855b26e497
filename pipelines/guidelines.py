"""Guideline tables as data: Fleischner 2017 and Lung-RADS v2022 from ``configs/guidelines/*.yaml``.

A table is a list of rules (first match wins) over a nodule's composition, rounded mean diameter, solid
component, count, risk and change (new / growing). Each rule names a recommendation; the recommendation's
``rank`` orders management intensity, so two categories of equal rank lead to the same next step.

Rounding follows each guideline's measurement rule: Fleischner 2017 rounds the mean diameter to the nearest
whole mm (Bankier et al., Radiology 2017;285:584-600), Lung-RADS v2022 keeps one decimal. Both round half up.
The value actually compared with the thresholds is reported as ``Category.size_used_mm``.
"""

from __future__ import annotations

import logging
import math
import re
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.errors import ConfigError, GuidelineError
from pipelines.paths import config_path
from pipelines.types import ReportContext

log = logging.getLogger(__name__)

COMPOSITIONS = ("solid", "part-solid", "ground-glass", "calcified")
RISKS = ("low", "high")
GUIDELINE_FILES = {"fleischner_2017": "fleischner_2017.yaml", "lung_rads_2022": "lung_rads_2022.yaml"}

# Spellings seen in reports and model outputs → the four compositions the tables use.
_COMPOSITION_ALIASES = {
    "solid": "solid", "soft tissue": "solid", "soft-tissue": "solid",
    "part-solid": "part-solid", "part solid": "part-solid", "partsolid": "part-solid", "part_solid": "part-solid",
    "partly solid": "part-solid", "semi-solid": "part-solid", "semisolid": "part-solid", "mixed": "part-solid",
    "ground-glass": "ground-glass", "ground glass": "ground-glass", "ground_glass": "ground-glass",
    "groundglass": "ground-glass", "ggo": "ground-glass", "ggn": "ground-glass", "non-solid": "ground-glass",
    "nonsolid": "ground-glass", "non solid": "ground-glass", "pure ground-glass": "ground-glass",
    "calcified": "calcified", "calcification": "calcified", "calcified granuloma": "calcified",
    "granuloma": "calcified", "fat-containing": "calcified",
}


def normalize_composition(value: str) -> str:
    """Map a composition's spelling to one of ``COMPOSITIONS``; raise GuidelineError listing them if unknown."""
    key = " ".join(str(value).strip().lower().split())
    if key in _COMPOSITION_ALIASES:
        return _COMPOSITION_ALIASES[key]
    raise GuidelineError(
        f"unknown nodule composition {value!r}",
        hint=f"use one of {', '.join(COMPOSITIONS)}",
    )


def round_half_up(value: float, decimals: int) -> float:
    """Round as radiologists do (5.5 → 6, 5.95 → 6.0), on the decimal text of the float, not its binary value."""
    quantum = Decimal(1).scaleb(-decimals)
    return float(Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_UP))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Recommendation(_Strict):
    text: str
    short: str
    rank: int = Field(ge=0)


class When(_Strict):
    """Conditions of one rule; an omitted condition matches anything. Sizes are the rounded values."""

    composition: list[Literal["solid", "part-solid", "ground-glass", "calcified"]] | None = None
    count: Literal["single", "multiple"] | None = None
    risk: Literal["low", "high"] | None = None
    new: bool | None = None
    growing: bool | None = None
    new_or_growing: bool | None = None
    juxtapleural: bool | None = None
    size_lt: float | None = None
    size_ge: float | None = None
    solid_lt: float | None = None
    solid_ge: float | None = None

    def matches(self, f: "_Facts") -> bool:
        checks = (
            self.composition is None or f.composition in self.composition,
            self.count is None or self.count == ("multiple" if f.count > 1 else "single"),
            self.risk is None or self.risk == f.risk,
            self.new is None or self.new == f.new,
            self.growing is None or self.growing == f.growing,
            self.new_or_growing is None or self.new_or_growing == (f.new or f.growing),
            self.juxtapleural is None or self.juxtapleural == f.juxtapleural,
            self.size_lt is None or f.size < self.size_lt,
            self.size_ge is None or f.size >= self.size_ge,
            # an unknown solid component satisfies no solid-size condition
            self.solid_lt is None or (f.solid is not None and f.solid < self.solid_lt),
            self.solid_ge is None or (f.solid is not None and f.solid >= self.solid_ge),
        )
        return all(checks)


class Rule(_Strict):
    code: str
    label: str
    when: When
    recommendation: str


class Modifier(_Strict):
    flag: Literal["suspicious_features"]
    codes: list[str]
    code: str
    label: str
    recommendation: str


class NoNodule(_Strict):
    code: str
    label: str
    recommendation: str


class Measurement(_Strict):
    metric: Literal["mean_diameter"]
    decimals: int = Field(ge=0, le=2)
    rounding: Literal["half_up"]


class AppliesTo(_Strict):
    screening: bool
    min_age_years: float | None = None
    known_cancer: bool | None = None
    immunocompromised: bool | None = None


class Category(BaseModel):
    """The guideline's answer for one nodule (or for a study without nodules)."""

    model_config = ConfigDict(frozen=True)

    guideline: str  # e.g. "fleischner_2017"
    display: str  # e.g. "Fleischner" / "Lung-RADS"
    code: str  # "fleischner:solid:<6" or "2", "3", "4A", ...
    label: str
    recommendation: str  # plain text, as the guideline words it
    recommendation_short: str
    recommendation_id: str
    rank: int  # management intensity; equal rank = same next step
    size_used_mm: float | None  # the rounded mean diameter that was compared with the thresholds
    solid_component_used_mm: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Short human name: "Lung-RADS 3", or the Fleischner row label."""
        return f"{self.display} {self.code}" if not self.code.startswith("fleischner:") else self.label

    def summary(self) -> str:
        """"Fleischner: CT at 6–12 months" / "Lung-RADS 3 (LDCT in 6 months)", for explanations."""
        if self.code.startswith("fleischner:"):
            return f"{self.display}: {self.recommendation_short}"
        return f"{self.display} {self.code} ({self.recommendation_short})"


class _Facts(BaseModel):
    composition: str
    size: float
    solid: float | None
    count: int
    risk: str
    new: bool
    growing: bool
    juxtapleural: bool


class Guideline(_Strict):
    """One guideline table (validated from YAML). Call :meth:`categorize` for a nodule."""

    name: str
    display: str
    title: str
    sources: list[str] = Field(min_length=1)
    notes: list[str] = Field(default_factory=list)
    applies_to: AppliesTo
    measurement: Measurement
    growth_threshold_mm: float = Field(gt=0)
    growth_inclusive: bool
    recommendations: dict[str, Recommendation]
    rules: list[Rule] = Field(min_length=1)
    modifiers: list[Modifier] = Field(default_factory=list)
    no_nodule: NoNodule

    @model_validator(mode="after")
    def _check_references(self) -> "Guideline":
        named = [r.recommendation for r in self.rules] + [m.recommendation for m in self.modifiers]
        named.append(self.no_nodule.recommendation)
        missing = sorted({n for n in named if n not in self.recommendations})
        if missing:
            raise ValueError(f"rules name recommendations that are not defined: {missing}")
        return self

    # -- measurement ---------------------------------------------------------------------------------------
    def round_size(self, mm: float) -> float:
        """The guideline's rounding of a mean diameter (nearest mm for Fleischner, one decimal for Lung-RADS)."""
        return round_half_up(mm, self.measurement.decimals)

    def is_growth(self, current_mm: float, prior_mm: float) -> bool:
        """Growth as the guideline counts it (Lung-RADS: > 1.5 mm; Fleischner: about 2 mm or more)."""
        delta = round_half_up(current_mm - prior_mm, self.measurement.decimals + 1)
        return delta >= self.growth_threshold_mm if self.growth_inclusive else delta > self.growth_threshold_mm

    # -- categories ----------------------------------------------------------------------------------------
    def _category(self, code: str, label: str, rec_id: str, size: float | None, solid: float | None,
                  notes: tuple[str, ...] = ()) -> Category:
        rec = self.recommendations[rec_id]
        return Category(guideline=self.name, display=self.display, code=code, label=label, recommendation=rec.text,
                        recommendation_short=rec.short, recommendation_id=rec_id, rank=rec.rank,
                        size_used_mm=size, solid_component_used_mm=solid, notes=notes)

    def no_nodule_category(self) -> Category:
        """The study's category when it holds no nodule (Lung-RADS 1; Fleischner: nothing to follow)."""
        n = self.no_nodule
        return self._category(n.code, n.label, n.recommendation, None, None)

    def categorize(
        self,
        composition: str,
        mean_diameter_mm: float,
        *,
        solid_component_mm: float | None = None,
        count: int = 1,
        new: bool = False,
        growing: bool = False,
        risk: str = "low",
        juxtapleural: bool = False,
        suspicious_features: bool = False,
    ) -> Category:
        """Category and recommendation for one nodule.

        ``mean_diameter_mm`` is the unrounded mean of long and short axis; it is rounded here as the guideline
        prescribes. ``count`` is the number of nodules in the study (Fleischner distinguishes single from
        multiple). ``new``/``growing`` describe change against a prior (both False: first detection).
        ``juxtapleural`` means a juxtapleural solid nodule with smooth margins and benign shape (Lung-RADS 2).
        """
        comp = normalize_composition(composition)
        if mean_diameter_mm is None or not math.isfinite(float(mean_diameter_mm)) or float(mean_diameter_mm) <= 0:
            raise GuidelineError(f"a nodule's mean diameter must be a positive number of mm, got {mean_diameter_mm!r}")
        if risk not in RISKS:
            raise GuidelineError(f"unknown risk {risk!r}", hint="use 'low' or 'high' (Fleischner 2017 patient risk)")
        if int(count) < 1:
            raise GuidelineError(f"nodule count must be at least 1, got {count!r}")
        if solid_component_mm is not None and (not math.isfinite(solid_component_mm) or solid_component_mm < 0):
            raise GuidelineError(f"solid component must be a non-negative number of mm, got {solid_component_mm!r}")
        size = self.round_size(float(mean_diameter_mm))
        solid = self.round_size(float(solid_component_mm)) if solid_component_mm is not None else None
        notes: list[str] = []
        if comp == "part-solid" and solid is None:
            notes.append("solid component not measured: categorised on the total size alone")
        if comp != "part-solid":
            solid = None
        if self.name.startswith("fleischner") and (new or growing):
            notes.append("Fleischner 2017 rows describe first detection; change against the prior is noted only")
        facts = _Facts(composition=comp, size=size, solid=solid, count=int(count), risk=risk, new=bool(new),
                       growing=bool(growing), juxtapleural=bool(juxtapleural))
        for rule in self.rules:
            if rule.when.matches(facts):
                code, label, rec = rule.code, rule.label, rule.recommendation
                for mod in self.modifiers:
                    if mod.flag == "suspicious_features" and suspicious_features and code in mod.codes:
                        code, label, rec = mod.code, mod.label, mod.recommendation
                return self._category(code, label, rec, size, solid, tuple(notes))
        raise GuidelineError(
            f"{self.title} has no row for a {comp} nodule of {size:g} mm (count {count}, risk {risk}, "
            f"new {new}, growing {growing})",
            hint=f"check configs/guidelines/{GUIDELINE_FILES.get(self.name, self.name)}",
        )

    def applicability_problem(self, *, screening: bool, patient_age: float | None, known_cancer: bool,
                              immunocompromised: bool) -> str | None:
        """Why this guideline does not apply to the patient, or None when it does."""
        a = self.applies_to
        if a.screening != screening:
            return f"{self.title} applies to {'screening' if a.screening else 'incidental'} examinations only"
        if a.min_age_years is not None and patient_age is not None and patient_age < a.min_age_years:
            return f"{self.title} applies to patients aged {a.min_age_years:g} or older (patient: {patient_age:g})"
        if a.known_cancer is False and known_cancer:
            return f"{self.title} does not apply to patients with a known primary cancer"
        if a.immunocompromised is False and immunocompromised:
            return f"{self.title} does not apply to immunocompromised patients"
        return None


@lru_cache(maxsize=16)
def _load(path: str) -> Guideline:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"guideline table {p} not found", hint=f"expected one of {sorted(GUIDELINE_FILES)}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        return Guideline.model_validate(data)
    except yaml.YAMLError as err:
        raise ConfigError(f"guideline table {p} is not valid YAML: {err}") from err
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"guideline table {p} is invalid at {where}: {first['msg']}") from err


def load_guideline(name_or_path: str | Path) -> Guideline:
    """Load a guideline table by name (``fleischner_2017``, ``lung_rads_2022``) or from a YAML path."""
    key = str(name_or_path)
    if key in GUIDELINE_FILES:
        return _load(str(config_path("guidelines", GUIDELINE_FILES[key])))
    if key.endswith((".yaml", ".yml")):
        return _load(str(Path(key).resolve()))
    raise ConfigError(f"unknown guideline {key!r}", hint=f"use one of {sorted(GUIDELINE_FILES)} or a YAML path")


_LUNG_RADS_WORDS = re.compile(r"lung[- ]?rads", re.IGNORECASE)
_LUNG_RADS_CODE = re.compile(r"^\s*(?:lung[- ]?rads\s*(?:category\s*)?)?(?:[0-3]|4[ABX])S?\s*$", re.IGNORECASE)


def _is_screening(context: ReportContext) -> bool:
    """Screening context, or a report that states a Lung-RADS category ("4A", "Lung-RADS 3")."""
    if context.screening:
        return True
    stated = context.stated_category or ""
    return bool(_LUNG_RADS_CODE.match(stated) or _LUNG_RADS_WORDS.search(stated)
                or _LUNG_RADS_WORDS.search(context.recommendation or ""))


def select_guideline(
    context: ReportContext,
    *,
    patient_age: float | None = None,
    known_cancer: bool = False,
    immunocompromised: bool = False,
) -> Guideline:
    """Lung-RADS v2022 for screening examinations (or a report that states a Lung-RADS category), else
    Fleischner 2017. Raises GuidelineError when Fleischner does not apply (under 35, known primary cancer,
    immunocompromised): neither table covers such a patient.

    Patient facts not passed here are read from the context when a parser put them there
    (``patient_age``, ``known_cancer``, ``immunocompromised`` as extra fields).
    """
    age = patient_age if patient_age is not None else getattr(context, "patient_age", None)
    cancer = known_cancer or bool(getattr(context, "known_cancer", False))
    immuno = immunocompromised or bool(getattr(context, "immunocompromised", False))
    if _is_screening(context):
        return load_guideline("lung_rads_2022")
    g = load_guideline("fleischner_2017")
    problem = g.applicability_problem(screening=False, patient_age=age, known_cancer=cancer,
                                      immunocompromised=immuno)
    if problem:
        raise GuidelineError(problem, hint="no configured guideline covers this patient; read the study without one")
    return g
