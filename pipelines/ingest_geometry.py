"""Slice geometry of one DICOM stack: sort, de-duplicate, spacing, gantry tilt, gaps; resampling.

Slices are ordered by ImagePositionPatient projected on the slice normal (row cosine x column cosine,
DICOM PS3.3 C.7.6.2.1.1), never by file name or InstanceNumber, and the slice spacing is derived from
those positions. A stack whose positions do not move along the normal (gantry tilt: the slices are
sheared) or whose gaps are uneven is resampled onto a regular grid, or refused, as configured; it is
never treated as a uniform stack.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pipelines.errors import GeometryError
from pipelines.ingest_config import IngestConfig
from pipelines.ingest_dicom import SliceRecord

log = logging.getLogger(__name__)


@dataclass
class StackPlan:
    """Geometry of one stack, from headers only. ``records`` are sorted along ``normal``."""

    records: list[SliceRecord]
    row: np.ndarray  # LPS unit vector of increasing column index i
    col: np.ndarray  # LPS unit vector of increasing row index j
    normal: np.ndarray  # row x col
    positions_mm: np.ndarray  # each slice's IPP projected on the normal (ascending)
    offsets_mm: np.ndarray  # [K, 2] in-plane offset of each IPP from the first slice's, along row/col
    spacing_xy: tuple[float, float]  # (sx along i, sy along j)
    spacing_z: float  # slice spacing of the output grid
    tilt_deg: float
    uniform: bool
    resample: bool
    gaps_mm: list[float]
    measurement_grade: bool
    not_measurement_grade_because: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dropped: int = 0

    @property
    def out_rows_cols(self) -> tuple[int, int]:
        """In-plane size of the output grid: enlarged after tilt correction so no slice loses pixels."""
        rows, cols = self.records[0].rows, self.records[0].cols
        if not self.resample:
            return rows, cols
        sx, sy = self.spacing_xy
        span_i = float(self.offsets_mm[:, 0].max() - self.offsets_mm[:, 0].min()) / sx
        span_j = float(self.offsets_mm[:, 1].max() - self.offsets_mm[:, 1].min()) / sy
        return rows + int(math.ceil(span_j - 1e-3)), cols + int(math.ceil(span_i - 1e-3))

    @property
    def n_out(self) -> int:
        if not self.resample:
            return len(self.records)
        span = float(self.positions_mm[-1] - self.positions_mm[0])
        return int(math.floor(span / self.spacing_z + 0.5)) + 1


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n


def plan_stack(records: list[SliceRecord], cfg: IngestConfig) -> StackPlan:
    """Sort and check a stack of slices of one orientation and size; raises :class:`GeometryError`."""
    g = cfg.geometry
    if not records:
        raise GeometryError("no slices in the series")
    missing = [r for r in records if r.ipp is None or r.iop is None]
    if missing:
        raise GeometryError(
            f"{len(missing)} of {len(records)} slices lack ImagePositionPatient/ImageOrientationPatient "
            f"(e.g. {missing[0].rel}); the slices cannot be placed in patient space")
    if any(r.pixel_spacing is None or min(r.pixel_spacing) <= 0 for r in records):
        raise GeometryError("PixelSpacing is missing or not positive; sizes in mm cannot be known",
                            hint="the series cannot be measured; export it again with its full header")
    iop = records[0].iop
    row, col = iop[:3], iop[3:]
    if min(np.linalg.norm(row), np.linalg.norm(col)) < 0.5:
        raise GeometryError(f"ImageOrientationPatient {np.round(iop, 4).tolist()} is degenerate")
    row, col = _unit(row), _unit(col)
    if abs(float(row @ col)) > 1e-3:
        raise GeometryError(f"ImageOrientationPatient {np.round(iop, 4).tolist()} is not orthogonal")
    normal = _unit(np.cross(row, col))
    warnings: list[str] = []

    ipps = np.array([r.ipp for r in records])
    d = ipps @ normal
    order = sorted(range(len(records)), key=lambda i: (d[i], records[i].instance_number or 0, records[i].rel,
                                                          records[i].frame or 0))
    recs = [records[i] for i in order]
    d = d[order]
    ipps = ipps[order]

    # several acquisitions at the same positions (e.g. repeated scans under one SeriesInstanceUID): keep one
    acq_groups: dict[int | None, list[int]] = {}
    for i, r in enumerate(recs):
        acq_groups.setdefault(r.acquisition_number, []).append(i)
    if len(acq_groups) > 1:
        pos_sets = {a: np.round(d[idx] / max(g.duplicate_tolerance_mm, 1e-6)) for a, idx in acq_groups.items()}
        keys = list(pos_sets)
        overlapping = any(np.intersect1d(pos_sets[a], pos_sets[b]).size
                          for n, a in enumerate(keys) for b in keys[n + 1:])
        if overlapping:
            best = max(acq_groups, key=lambda a: (len(acq_groups[a]), -(a if a is not None else 1 << 30)))
            idx = acq_groups[best]
            warnings.append(f"{len(acq_groups)} acquisitions share slice positions in one series; "
                            f"used AcquisitionNumber {best} ({len(idx)} slices)")
            recs = [recs[i] for i in idx]
            d = d[idx]
            ipps = ipps[idx]
    # duplicate positions
    keep = [0]
    dup_same, dup_diff = 0, 0
    for i in range(1, len(recs)):
        if d[i] - d[keep[-1]] <= g.duplicate_tolerance_mm:
            prev = recs[keep[-1]]
            if recs[i].sop_instance_uid == prev.sop_instance_uid and recs[i].frame == prev.frame:
                dup_same += 1
            else:
                dup_diff += 1
            continue
        keep.append(i)
    dropped = len(recs) - len(keep)
    if dup_same:
        warnings.append(f"{dup_same} duplicate copies of the same image dropped")
    if dup_diff:
        warnings.append(f"{dup_diff} slices share a position with another slice (different images); "
                        "kept the lowest InstanceNumber at each position")
    recs = [recs[i] for i in keep]
    d = d[keep]
    ipps = ipps[keep]

    sy, sx = recs[0].pixel_spacing  # PixelSpacing = (between rows, between columns)
    offsets = np.stack([(ipps - ipps[0]) @ row, (ipps - ipps[0]) @ col], axis=1)
    gaps = np.diff(d)
    reasons: list[str] = []
    mg = cfg.measurement_grade
    tilt_deg = 0.0
    uniform = True
    resample = False
    header_tilt = recs[0].gantry_tilt_deg
    if len(recs) == 1:
        sz = recs[0].slice_thickness if recs[0].slice_thickness and recs[0].slice_thickness > 0 else 1.0
        warnings.append(f"single slice: no slice spacing can be derived; using SliceThickness {sz:g} mm as its depth")
        reasons.append("a single slice")
    else:
        med = float(np.median(gaps))
        tol = max(g.spacing_tolerance_mm, g.spacing_tolerance_ratio * med)
        uniform = bool(np.max(np.abs(gaps - med)) <= tol)
        # gantry tilt: in-plane drift of the slice positions as they move along the normal
        drift = np.linalg.norm(offsets, axis=1)
        dd = d - d[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            angles = np.degrees(np.arctan2(drift[1:], dd[1:]))
        tilted = bool(np.any((angles > g.tilt_tolerance_deg) & (drift[1:] > 0.01)))
        tilt_deg = float(np.degrees(np.arctan2(drift[-1], dd[-1]))) if dd[-1] > 0 else 0.0
        if tilted:
            msg = (f"gantry tilt: slice positions drift {tilt_deg:.1f} deg off the slice normal"
                   + (f" (header GantryDetectorTilt {header_tilt:g} deg)" if header_tilt else ""))
            if g.tilt == "refuse":
                raise GeometryError(msg + "; refused by configuration (geometry.tilt: refuse)",
                                    hint="set geometry.tilt: resample in configs/ingest.yaml to correct it")
            warnings.append(msg + "; slices shifted in-plane onto a regular, unsheared grid "
                                  "(enlarged so no pixel is lost)")
            resample = True
        if not uniform:
            desc = ", ".join(f"{x:.2f}" for x in sorted(set(np.round(gaps, 2).tolist())))
            msg = f"uneven slice gaps ({desc} mm; median {med:.2f} mm)"
            if g.non_uniform == "refuse":
                raise GeometryError(msg + "; refused by configuration (geometry.non_uniform: refuse)",
                                    hint="set geometry.non_uniform: resample in configs/ingest.yaml")
            warnings.append(msg + f"; resampled to a regular {med:.2f} mm grid by linear interpolation")
            if float(np.max(gaps)) > mg.max_gap_mm:
                warnings.append(f"gap(s) wider than {mg.max_gap_mm:g} mm are not interpolated: "
                                f"grid slices inside them hold {cfg.pixels.padding_fill_hu} HU (no data)")
            resample = True
            big = gaps[gaps > mg.max_gap_ratio * med]
            if big.size:
                n_missing = int(round(float(np.sum(big / med - 1))))
                warnings.append(f"{big.size} gap(s) up to {big.max():.2f} mm, about {n_missing} missing slice(s)")
                reasons.append(f"gap of {big.max():.2f} mm is more than {mg.max_gap_ratio:g}x the median {med:.2f} mm")
        if float(np.max(gaps)) > mg.max_gap_mm:
            reasons.append(f"gap of {float(np.max(gaps)):.2f} mm exceeds {mg.max_gap_mm:g} mm")
        sz = med if resample else float((d[-1] - d[0]) / (len(d) - 1))
        if sz <= 0:
            raise GeometryError("all slices lie at the same position; the series has no depth")
        thick = recs[0].slice_thickness
        if thick and thick > 0 and med < thick - max(0.05, 0.02 * thick):
            warnings.append(f"overlapping slices: {thick:g} mm thick, {med:.2f} mm apart")
    if dup_diff:
        reasons.append("several images share slice positions")
    if len(recs) < mg.min_slices:
        reasons.append(f"fewer than {mg.min_slices} slices")
    if header_tilt and abs(header_tilt) > g.tilt_tolerance_deg and tilt_deg == 0.0 and len(recs) > 1:
        warnings.append(f"header GantryDetectorTilt {header_tilt:g} deg but positions show no shear; "
                        "positions were used")
    return StackPlan(
        records=recs, row=row, col=col, normal=normal, positions_mm=d, offsets_mm=offsets,
        spacing_xy=(float(sx), float(sy)), spacing_z=float(sz), tilt_deg=tilt_deg, uniform=uniform,
        resample=resample, gaps_mm=[float(x) for x in gaps], measurement_grade=not reasons,
        not_measurement_grade_because=reasons, warnings=warnings, dropped=dropped,
    )


@dataclass
class Assembled:
    array: np.ndarray
    origin_mm: np.ndarray
    direction: np.ndarray
    spacing_mm: tuple[float, float, float]
    source_index: list[int]  # for each output slice k, the index of the nearest source slice
    interpolated: list[bool]


def assemble(stack: np.ndarray, plan: StackPlan, padding_fill: float,
             max_interp_gap_mm: float = float("inf")) -> Assembled:
    """Place decoded slices (in ``plan.records`` order) on the output grid, resampling if planned.

    Grid slices inside a gap wider than ``max_interp_gap_mm`` are not invented by interpolation: they are
    filled with ``padding_fill`` (and flagged in ``interpolated``).
    """
    direction = np.stack([plan.row, plan.col, plan.normal], axis=1)
    sx, sy = plan.spacing_xy
    ipp0 = plan.records[0].ipp
    if not plan.resample:
        return Assembled(stack, np.asarray(ipp0, dtype=np.float64), direction, (sx, sy, plan.spacing_z),
                         list(range(len(plan.records))), [False] * len(plan.records))
    d = plan.positions_mm
    off = plan.offsets_mm
    ref = off.min(axis=0)  # in-plane origin of the output grid: every slice's pixels fit in it
    rows, cols = stack.shape[1:]
    out_rows, out_cols = plan.out_rows_cols
    shifted = np.full((stack.shape[0], out_rows, out_cols), padding_fill, dtype=np.float32)
    canvas = np.empty((out_rows, out_cols), dtype=np.float32)
    for a in range(stack.shape[0]):
        di = (off[a, 0] - ref[0]) / sx  # >= 0: where this slice's first column lands on the grid
        dj = (off[a, 1] - ref[1]) / sy
        canvas.fill(padding_fill)
        canvas[:rows, :cols] = stack[a]
        if abs(di) < 1e-3 and abs(dj) < 1e-3:
            shifted[a] = canvas
        else:
            ndimage.shift(canvas, shift=(dj, di), order=1, mode="constant", cval=padding_fill, output=shifted[a])
    n = plan.n_out
    z = d[0] + np.arange(n) * plan.spacing_z
    out = np.empty((n, out_rows, out_cols), dtype=np.float32)
    src_idx, interp = [], []
    for k, zk in enumerate(z):
        b = int(np.searchsorted(d, zk))
        b = min(max(b, 1), len(d) - 1)
        a = b - 1
        w = float((zk - d[a]) / (d[b] - d[a]))
        w = min(max(w, 0.0), 1.0)
        wide = float(d[b] - d[a]) > max_interp_gap_mm
        if wide and 1e-4 <= w <= 1 - 1e-4:
            out[k] = padding_fill
        elif w < 1e-4:
            out[k] = shifted[a]
        elif w > 1 - 1e-4:
            out[k] = shifted[b]
        else:
            np.multiply(shifted[a], 1 - w, out=out[k])
            out[k] += w * shifted[b]
        nearest = a if w <= 0.5 else b
        src_idx.append(nearest)
        interp.append(bool(abs(zk - d[nearest]) > 0.01))
    origin = ipp0 + ref[0] * plan.row + ref[1] * plan.col
    return Assembled(out, origin, direction, (sx, sy, plan.spacing_z), src_idx, interp)
