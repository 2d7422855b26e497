"""Which series of a study the nodule pipeline reads.

The rule, best first (ties fall through to the next line):

1. eligible: CT, not a localizer or secondary capture, geometry usable, pixels decodable;
2. axial (slice normal within ``geometry.axial_max_angle_deg`` of the patient S axis) before any other;
3. thinnest slice spacing (derived from positions), compared in steps of ``selection.spacing_tie_mm``;
4. a lung kernel (``selection.lung_kernel_patterns``) before any other kernel: of two reconstructions of
   the same acquisition, the sharp lung kernel shows nodule margins best;
5. measurement grade (no large gaps) before not;
6. more slices (more coverage); 7. lower SeriesNumber; 8. SeriesInstanceUID (deterministic).

``--series UID`` (``series_uid=``) overrides the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from pipelines.errors import IngestError
from pipelines.ingest_config import IngestConfig


@dataclass
class SeriesInfo:
    """One series found in the input, with why it was or was not selected."""

    series_uid: str | None  # None only for NIfTI/NRRD/MHA input
    study_uid: str | None
    frame_of_reference_uid: str | None
    series_number: int | None
    modality: str | None
    description: str | None
    kernel: str | None
    lung_kernel: bool
    rows: int
    cols: int
    images: int  # image frames found in the series (all)
    slices: int  # slices in the stack used for the volume (after excluding localizers, duplicates)
    spacing_mm: list[float] | None  # [x, y, z] of the output grid, z derived from positions
    slice_thickness_mm: float | None
    orientation: list[float] | None  # ImageOrientationPatient (row cosines, column cosines)
    orientation_label: str  # axial | coronal | sagittal | oblique | unknown
    transfer_syntax: str
    transfer_syntax_name: str
    lossy: bool
    tilt_deg: float
    measurement_grade: bool
    uids_derived: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    eligible: bool = True
    ineligible_because: str | None = None
    selected: bool = False
    selection_reason: str = ""
    error: Exception | None = field(default=None, repr=False)
    key: tuple = field(default=(), repr=False)

    def to_dict(self) -> dict:
        return {
            "series_uid": self.series_uid, "study_uid": self.study_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid, "series_number": self.series_number,
            "modality": self.modality, "description": self.description, "kernel": self.kernel,
            "lung_kernel": self.lung_kernel, "rows": self.rows, "cols": self.cols, "images": self.images,
            "slices": self.slices, "spacing_mm": self.spacing_mm, "slice_thickness_mm": self.slice_thickness_mm,
            "orientation": self.orientation, "orientation_label": self.orientation_label,
            "transfer_syntax": self.transfer_syntax, "transfer_syntax_name": self.transfer_syntax_name,
            "lossy": self.lossy, "tilt_deg": round(self.tilt_deg, 3), "measurement_grade": self.measurement_grade,
            "uids_derived": self.uids_derived, "warnings": self.warnings, "eligible": self.eligible,
            "selected": self.selected, "selection_reason": self.selection_reason,
        }


@lru_cache(maxsize=8)
def _compiled(patterns: tuple[str, ...]) -> list[re.Pattern]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


def is_lung_kernel(kernel: str | None, cfg: IngestConfig) -> bool:
    if not kernel:
        return False
    return any(p.search(kernel.strip()) for p in _compiled(tuple(cfg.selection.lung_kernel_patterns)))


def orientation_label(iop: np.ndarray | None, cfg: IngestConfig) -> str:
    if iop is None:
        return "unknown"
    n = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(n)
    if norm < 0.5:
        return "unknown"
    n = np.abs(n / norm)
    cos_lim = np.cos(np.radians(cfg.geometry.axial_max_angle_deg))
    axis = int(np.argmax(n))
    if n[axis] < cos_lim:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _key(s: SeriesInfo, cfg: IngestConfig) -> tuple:
    tie = cfg.selection.spacing_tie_mm or 1e-6
    sz = s.spacing_mm[2] if s.spacing_mm and s.spacing_mm[2] is not None else float("inf")
    return (
        0 if s.orientation_label == "axial" else 1,
        round(sz / tie) if np.isfinite(sz) else 1 << 30,
        0 if s.lung_kernel else 1,
        0 if s.measurement_grade else 1,
        -s.slices,
        s.series_number if s.series_number is not None else 1 << 30,
        s.series_uid or "",
    )


def _why_not(s: SeriesInfo, best: SeriesInfo) -> str:
    if not s.eligible:
        return f"not selected: {s.ineligible_because}"
    for idx, (a, b) in enumerate(zip(s.key, best.key)):
        if a == b:
            continue
        if idx == 0:
            return f"not selected: {s.orientation_label}, an axial series exists"
        if idx == 1:
            return (f"not selected: thicker slices ({s.spacing_mm[2]:.2f} mm) than the selected series "
                    f"({best.spacing_mm[2]:.2f} mm)")
        if idx == 2:
            return (f"not selected: kernel {s.kernel!r} is not a lung kernel; the selected series of the same "
                    f"spacing has lung kernel {best.kernel!r}")
        if idx == 3:
            return "not selected: not measurement grade, a series of the same spacing is"
        if idx == 4:
            return f"not selected: fewer slices ({s.slices}) than the selected series ({best.slices})"
        return "not selected: tie broken by SeriesNumber / SeriesInstanceUID"
    return "not selected: identical rank, tie broken by SeriesInstanceUID"


def select_series(infos: list[SeriesInfo], cfg: IngestConfig, series_uid: str | None = None) -> SeriesInfo:
    """Mark and return the series to read; raises :class:`IngestError` when none can be read."""
    for s in infos:
        s.key = _key(s, cfg)
    if series_uid is not None:
        chosen = next((s for s in infos if s.series_uid == series_uid.strip()), None)
        if chosen is None:
            avail = ", ".join(s.series_uid for s in infos[:10]) or "none"
            raise IngestError(f"series {series_uid} not found in the input; series found: {avail}")
        if not chosen.eligible:
            if chosen.error is not None:
                raise chosen.error
            raise IngestError(f"series {series_uid} cannot be read: {chosen.ineligible_because}")
        chosen.selected = True
        chosen.selection_reason = "selected: requested with --series"
        for s in infos:
            if s is not chosen:
                s.selection_reason = "not selected: another series was requested with --series"
        return chosen
    eligible = sorted((s for s in infos if s.eligible), key=lambda s: s.key)
    if not eligible:
        ct = [s for s in infos if (s.modality or "CT").upper() == "CT"]
        if ct:
            worst = max(ct, key=lambda s: s.images)
            if worst.error is not None:
                raise worst.error
            raise IngestError(f"no readable CT series: series {worst.series_uid} {worst.ineligible_because}")
        found = ", ".join(sorted({f"{s.modality or 'unknown modality'}" for s in infos})) or "no images"
        raise IngestError(f"no CT image series found (found: {found})",
                          hint="preread reads chest CT; check that the input holds the CT series")
    best = eligible[0]
    best.selected = True
    parts = [f"{best.orientation_label} CT"]
    if len(eligible) > 1:
        parts.append(f"thinnest slice spacing ({best.spacing_mm[2]:.2f} mm)")
        same = [s for s in eligible[1:] if s.key[:2] == best.key[:2]]
        if best.lung_kernel and same:
            parts.append(f"lung kernel {best.kernel!r} preferred over {', '.join(repr(s.kernel) for s in same)}")
    else:
        parts.append("the only readable CT series")
    if best.orientation_label != "axial":
        parts.append("no axial series found")
    best.selection_reason = "selected: " + ", ".join(parts)
    for s in infos:
        if s is not best:
            s.selection_reason = _why_not(s, best)
    return best
