"""Domain types shared by every stage.

Frames and units are named in the fields:

* ``Volume.array`` is indexed ``[k, j, i]`` (slice, row, column), values in Hounsfield units.
* ``spacing_mm`` is ``(sx, sy, sz)`` along ``(i, j, k)``: column spacing, row spacing, slice spacing.
* ``origin_mm`` is the LPS position (mm) of the *centre* of voxel ``(i, j, k) = (0, 0, 0)``.
* ``direction`` is a 3x3 matrix whose *columns* are the LPS unit vectors of the i, j and k axes
  (the same convention as ITK/SimpleITK, ``direction[:, 0]`` is the row direction cosine of DICOM).
* ``instance_numbers[k]`` / ``sop_instance_uids[k]`` belong to slice ``k`` (``None`` for non-DICOM input).

Results that travel as JSON (findings, discordances, ``StudyResult``) are pydantic models whose field
names are fixed by DESIGN.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


@dataclass
class Volume:
    """A CT volume in HU with its geometry. Spacing always travels with the array."""

    array: np.ndarray  # [k, j, i], HU (int16 or float32)
    spacing_mm: tuple[float, float, float]  # (sx, sy, sz) along i, j, k
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # LPS centre of voxel (0,0,0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))  # columns: LPS unit vectors of i, j, k
    instance_numbers: list[int | None] | None = None
    sop_instance_uids: list[str | None] | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    frame_of_reference_uid: str | None = None
    modality: str | None = "CT"
    warnings: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spacing_mm = tuple(float(s) for s in self.spacing_mm)  # type: ignore[assignment]
        self.origin_mm = tuple(float(o) for o in self.origin_mm)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if self.array.ndim != 3:
            raise ValueError(f"Volume.array must be 3-D [k, j, i], got shape {self.array.shape}")
        if any(s <= 0 for s in self.spacing_mm):
            raise ValueError(f"spacing_mm must be positive, got {self.spacing_mm}")

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        k, j, i = self.array.shape
        return (i, j, k)

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous voxel (i, j, k, 1) to LPS mm."""
        aff = np.eye(4)
        aff[:3, :3] = self.direction @ np.diag(self.spacing_mm)
        aff[:3, 3] = self.origin_mm
        return aff

    def voxel_to_mm(self, ijk) -> np.ndarray:
        """Voxel index (i, j, k), possibly fractional, or an (N, 3) array of them → LPS mm."""
        ijk = np.asarray(ijk, dtype=np.float64)
        aff = self.affine_lps
        return ijk @ aff[:3, :3].T + aff[:3, 3]

    def mm_to_voxel(self, xyz) -> np.ndarray:
        """LPS mm (3,) or (N, 3) → fractional voxel index (i, j, k)."""
        xyz = np.asarray(xyz, dtype=np.float64)
        aff = self.affine_lps
        return (xyz - aff[:3, 3]) @ np.linalg.inv(aff[:3, :3]).T

    def instance_number(self, k: int) -> int | None:
        if self.instance_numbers and 0 <= k < len(self.instance_numbers):
            return self.instance_numbers[k]
        return None

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same geometry, another array of the same shape (e.g. a mask or a probability map)."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} differs from the volume's {self.array.shape}")
        return Volume(
            array=array, spacing_mm=self.spacing_mm, origin_mm=self.origin_mm, direction=self.direction.copy(),
            instance_numbers=self.instance_numbers, sop_instance_uids=self.sop_instance_uids,
            study_uid=self.study_uid, series_uid=self.series_uid,
            frame_of_reference_uid=self.frame_of_reference_uid, modality=self.modality,
            warnings=list(self.warnings), metadata=dict(self.metadata),
        )


Composition = Literal["solid", "part-solid", "ground-glass", "calcified"]
Side = Literal["left", "right"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Location(_Model):
    side: str | None = None
    lobe: str | None = None


class AIFinding(_Model):
    id: str
    kind: str = "nodule"
    confidence: float
    center_mm: list[float]
    center_voxel: list[int]
    instance_number: int | None = None
    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    max_3d_diameter_mm: float
    volume_mm3: float
    uncertainty_mm: float
    composition: Composition = "solid"
    solid_component_mm: float | None = None
    location: Location = Field(default_factory=Location)


class ImageRef(_Model):
    series: int | None = None
    image: int | None = None


class ReportFinding(_Model):
    id: str
    kind: str
    text: str
    span: list[int]
    size_mm: list[float] = Field(default_factory=list)
    mean_diameter_mm: float | None = None
    count: int = 1
    negated: bool = False
    hedged: bool = False
    location: Location = Field(default_factory=Location)
    composition: str | None = None
    prior_size_mm: list[float] | None = None
    image_ref: ImageRef = Field(default_factory=ImageRef)


class ReportContext(_Model):
    screening: bool = False
    stated_category: str | None = None
    recommendation: str | None = None


class Match(_Model):
    ai: str | None = None
    report: str | None = None
    distance_mm: float | None = None
    # the AI finding is one the AI would not raise itself (below its confidence threshold), taken because the
    # report points at it (configs/discordance.yaml, report_guided)
    report_guided: bool = False


DiscordanceType = Literal[
    "missed_finding", "category_change", "report_negative_ai_positive",
    "unconfirmed_report_finding", "borderline", "hedged_report",
]
Severity = Literal["major", "minor", "info"]


class Discordance(_Model):
    type: DiscordanceType
    severity: Severity
    guideline: str
    report_category: str | None = None
    ai_category: str | None = None
    ai: str | None = None
    report: str | None = None
    explanation: str


class SeriesSummary(_Model):
    rows: int
    cols: int
    slices: int
    spacing_mm: list[float]
    warnings: list[str] = Field(default_factory=list)


class ModelInfo(_Model):
    name: str
    version: str
    backend: str
    device: str


class StudyResult(_Model):
    study_uid: str | None
    series_uid: str | None
    series: SeriesSummary
    ai_findings: list[AIFinding] = Field(default_factory=list)
    report_findings: list[ReportFinding] = Field(default_factory=list)
    report_context: ReportContext = Field(default_factory=ReportContext)
    matches: list[Match] = Field(default_factory=list)
    discordances: list[Discordance] = Field(default_factory=list)
    verdict: Literal["discordant", "concordant", "indeterminate"] = "indeterminate"
    priority: float = 0.0
    model: ModelInfo
    timings_s: dict[str, float] = Field(default_factory=dict)


def field_of(obj, name: str, default=None):
    """A field of a finding or measurement, whether it is a pydantic model (declared field or extra), a
    mapping, or any object; ``default`` when absent or None."""
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    val = getattr(obj, name, None)
    extra = getattr(obj, "model_extra", None)
    if val is None and extra:
        val = extra.get(name)
    return default if val is None else val
