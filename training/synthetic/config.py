"""Typed configuration of the synthetic chest CT generator, read from ``configs/synthetic.yaml``."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from pipelines.errors import ConfigError
from pipelines.paths import config_path

COMPOSITIONS = ("solid", "part-solid", "ground-glass", "calcified")
SHAPES = ("round", "oval", "lobulated", "spiculated")
PLACEMENTS = ("central", "juxtavascular", "juxtapleural")
RELATIONS = ("concordant", "missed", "undersized", "oversized", "negative", "hedged", "phantom")


class Kernel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    vendor: str
    psf_sigma_mm: float = Field(gt=0)
    sharpen: float = Field(ge=0)
    noise_hu: float = Field(gt=0)
    nps_peak_cpmm: float = Field(gt=0)
    family: Literal["soft", "sharp"]


class ReportTables(BaseModel):
    model_config = ConfigDict(extra="forbid")
    relation_weights: dict[str, float]
    size_thresholds_mm: list[float]
    screening_probability: float = Field(ge=0, le=1)
    prior_probability: float = Field(ge=0, le=1)
    cm_probability: float = Field(ge=0, le=1)
    lungrads_solid_mm: list[tuple[float, str]]
    lungrads_ggo_mm: list[tuple[float, str]]
    lungrads_part_solid_total_mm: float
    lungrads_part_solid_solid_mm: list[tuple[float, str]]


class SynthTables(BaseModel):
    """The data part of ``configs/synthetic.yaml``: tissue HU, kernels, presets, report tables."""

    model_config = ConfigDict(extra="forbid")
    tissue_hu: dict[str, float]
    kernels: list[Kernel]
    presets: dict[str, dict]
    report: ReportTables


@functools.lru_cache(maxsize=4)
def load_tables(path: str | None = None) -> SynthTables:
    p = config_path("synthetic.yaml") if path is None else path
    try:
        with open(p) as fh:
            raw = yaml.safe_load(fh)
        tables = SynthTables.model_validate(raw)
    except FileNotFoundError as err:
        raise ConfigError(f"synthetic data config not found: {p}", hint="restore configs/synthetic.yaml") from err
    except Exception as err:  # pydantic / yaml errors
        raise ConfigError(f"invalid synthetic data config {p}: {err}") from err
    unknown = set(tables.report.relation_weights) - set(RELATIONS)
    if unknown:
        raise ConfigError(f"unknown report relations {sorted(unknown)} in {p}; allowed: {list(RELATIONS)}")
    return tables


@dataclass(frozen=True)
class NoduleSpec:
    """A nodule asked for explicitly (tests, demos). ``None`` fields are drawn from the seed."""

    composition: str | None = None
    shape: str | None = None
    placement: str | None = None
    diameter_mm: float | None = None  # nominal equivalent-sphere diameter of the outer shape
    solid_fraction: float | None = None  # part-solid: core diameter / outer diameter
    side: str | None = None


@dataclass(frozen=True)
class SynthConfig:
    """How one synthetic study is drawn. Ranges ``(lo, hi)`` are sampled uniformly from the seed."""

    rows: int = 192
    cols: int = 192
    pixel_spacing_mm: tuple[float, float] = (1.6, 2.0)
    slice_thickness_mm: tuple[float, ...] = (1.25, 2.5)  # choices; slice spacing equals thickness
    n_slices: int | None = None  # None: cover the thorax from above the apices to the upper abdomen
    n_nodules: tuple[int, int] = (1, 4)
    p_no_nodule: float = 0.1
    nodule_diameter_mm: tuple[float, float] = (3.0, 30.0)
    composition_weights: dict[str, float] = field(
        default_factory=lambda: {"solid": 0.5, "part-solid": 0.17, "ground-glass": 0.2, "calcified": 0.13})
    shape_weights: dict[str, float] = field(
        default_factory=lambda: {"round": 0.3, "oval": 0.3, "lobulated": 0.25, "spiculated": 0.15})
    placement_weights: dict[str, float] = field(
        default_factory=lambda: {"central": 0.5, "juxtavascular": 0.25, "juxtapleural": 0.25})
    nodules: tuple[NoduleSpec, ...] | None = None  # explicit nodules (overrides n_nodules)
    emphysema_probability: float = 0.3
    fissures: bool = True
    kernel: str | None = None  # a name from configs/synthetic.yaml kernels; None: drawn
    ctdi_mgy: tuple[float, float] | None = None  # None: low dose for screening, standard otherwise
    noise: bool = True
    report_relation: str | None = None  # force one of RELATIONS; None: drawn from the configured mix
    screening: bool | None = None  # None: drawn
    vessel_points_per_tree: int = 500
    fine_step_mm: float = 1.0  # sub-slice step for partial-volume integration of thin structures
    background_step_mm: float = 2.5  # sub-slice step for the smooth anatomy (thick slices only)

    def __post_init__(self) -> None:
        if self.rows < 32 or self.cols < 32:
            raise ConfigError(f"rows/cols must be >= 32, got {self.rows}x{self.cols}")
        if not (0 < self.pixel_spacing_mm[0] <= self.pixel_spacing_mm[1]):
            raise ConfigError(f"pixel_spacing_mm must be (lo, hi) with 0 < lo <= hi, got {self.pixel_spacing_mm}")
        if not self.slice_thickness_mm or any(t <= 0 for t in self.slice_thickness_mm):
            raise ConfigError(f"slice_thickness_mm must be positive choices, got {self.slice_thickness_mm}")
        if self.n_slices is not None and self.n_slices < 1:
            raise ConfigError(f"n_slices must be >= 1 or None, got {self.n_slices}")
        if self.report_relation is not None and self.report_relation not in RELATIONS:
            raise ConfigError(f"report_relation {self.report_relation!r} is not one of {list(RELATIONS)}")
        if self.kernel is not None and self.kernel not in {k.name for k in load_tables().kernels}:
            raise ConfigError(f"kernel {self.kernel!r} unknown; allowed: {[k.name for k in load_tables().kernels]}")
        lo, hi = self.nodule_diameter_mm
        if not (0 < lo <= hi):
            raise ConfigError(f"nodule_diameter_mm must be (lo, hi) with 0 < lo <= hi, got {self.nodule_diameter_mm}")
        for name, allowed in (("composition_weights", COMPOSITIONS), ("shape_weights", SHAPES),
                              ("placement_weights", PLACEMENTS)):
            bad = set(getattr(self, name)) - set(allowed)
            if bad:
                raise ConfigError(f"{name} has unknown keys {sorted(bad)}; allowed: {list(allowed)}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "SynthConfig":
        """A named preset from ``configs/synthetic.yaml`` (``fast``, ``faint``, ``demo``, ``full``, ``clinical``), with overrides."""
        presets = load_tables().presets
        if name not in presets:
            raise ConfigError(f"unknown synthetic preset {name!r}; allowed: {sorted(presets)}")
        values = dict(presets[name])
        values.update(overrides)
        names = {f.name for f in dataclasses.fields(cls)}
        bad = set(values) - names
        if bad:
            raise ConfigError(f"preset {name!r} sets unknown SynthConfig fields {sorted(bad)}")
        for key in ("pixel_spacing_mm", "slice_thickness_mm", "n_nodules", "nodule_diameter_mm", "ctdi_mgy"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    def replace(self, **changes) -> "SynthConfig":
        return dataclasses.replace(self, **changes)
