"""Lesion measurement: sizes a radiologist would sign, with their uncertainty.

For each lesion mask in physical space (any spacing and direction, slices up to 5 mm):

* long axis and the longest perpendicular chord on the axial image where the lesion is largest (largest
  long axis), or on a coronal / sagittal plane on request (multiplanar); mean diameter, rounded to the
  nearest mm for Fleischner 2017 and to one decimal for Lung-RADS v2022 (Bankier A.A. et al., Radiology
  2017;285:584-600; MacMahon H. et al., Radiology 2017;284:228-243; ACR Lung-RADS v2022);
* maximum 3-D diameter, volume (mm³), sphere-equivalent diameter;
* composition from HU (``configs/measurement.yaml``), the solid component of a part-solid nodule;
* location: side, lobe (from lobe labels), the DICOM InstanceNumber of the slice, the centre in mm and voxels;
* an uncertainty (mm) of the mean diameter from pixel size, slice spacing and partial volume.

Boundaries are sub-voxel: the mask becomes an occupancy map (0..1), refined with the image's partial
volume where lesion and background differ enough (each voxel at most half a voxel either way, so the
mask keeps the final say), and boundaries are the 0.5 iso-contour of that map, not voxel centres
(voxel-centre distances underestimate by about one voxel). Distances are in mm on the physical grid
(spacing and direction), never in voxels.
"""

from __future__ import annotations

import logging
import math
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage
from skimage.measure import find_contours, marching_cubes

from pipelines.config import load_yaml_config
from pipelines.errors import MeasureError
from pipelines.measure_axes import farthest_pair, planar_axes, polygon_area
from pipelines.paths import config_path
from pipelines.types import AIFinding, Composition, Location, Volume

log = logging.getLogger(__name__)

LOBE_CODES: dict[int, str] = {1: "RUL", 2: "RML", 3: "RLL", 4: "LUL", 5: "LLL"}
LOBE_SIDE: dict[str, str] = {"RUL": "right", "RML": "right", "RLL": "right", "LUL": "left", "LLL": "left"}


# --------------------------------------------------------------------------------------------- config
class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CompositionConfig(_Cfg):
    calcified_min_hu: float
    calcified_min_fraction: float = Field(ge=0, le=1)
    solid_min_hu: float
    aerated_max_hu: float
    solid_min_fraction: float = Field(ge=0, le=1)
    ground_glass_max_solid_fraction: float = Field(ge=0, le=1)
    solid_component_min_mm: float = Field(ge=0)
    # a solid component at least this large (mean of its axes, mm) makes a nodule part-solid whatever its share
    # of the core (a large ground-glass nodule with a 6 mm solid part); None: the share alone decides
    solid_component_decides_mm: float | None = Field(default=None, gt=0)


class PartialVolumeConfig(_Cfg):
    enabled: bool = True
    background_max_hu: float
    min_background_voxels: int = Field(ge=1)
    min_core_voxels: int = Field(ge=1)
    min_contrast_hu: float = Field(gt=0)


class UncertaintyConfig(_Cfg):
    boundary_factor_binary: float = Field(ge=0)
    boundary_factor_refined: float = Field(ge=0)
    coverage_k: float = Field(gt=0)


class GeometryConfig(_Cfg):
    chord_step_fraction: float = Field(gt=0, le=1)
    axis_parallel_cos: float = Field(gt=0.9, le=1)
    binary_smoothing_px: float = Field(ge=0, le=2)
    binary_smoothing_margin: float = Field(ge=0, lt=0.5)


class MeasurementConfig(_Cfg):
    version: int = 1
    composition: CompositionConfig
    partial_volume: PartialVolumeConfig
    uncertainty: UncertaintyConfig
    geometry: GeometryConfig


@lru_cache(maxsize=8)
def _load_config_cached(path: str) -> MeasurementConfig:
    return load_yaml_config(MeasurementConfig, "measurement.yaml", path, what="measurement config")


def load_measurement_config(path: str | Path | None = None) -> MeasurementConfig:
    """Read ``configs/measurement.yaml`` (or ``path``) into a typed :class:`MeasurementConfig`."""
    return _load_config_cached(str(path or config_path("measurement.yaml")))


# --------------------------------------------------------------------------------------------- types
class Plane(str, Enum):
    """Measurement plane, named in the patient frame (LPS)."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"


# normal, then in-plane (u, v) used when the lesion must be resampled; all LPS unit vectors
_PLANE_FRAMES: dict[Plane, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
    Plane.AXIAL: (np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),
    Plane.CORONAL: (np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])),
    Plane.SAGITTAL: (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])),
}


def _plane(plane: str | Plane) -> Plane:
    try:
        return Plane(plane.value if isinstance(plane, Plane) else str(plane).lower())
    except ValueError:
        allowed = ", ".join(p.value for p in Plane)
        raise MeasureError(f"unknown measurement plane {plane!r}; choose one of: {allowed}") from None


class LesionMeasurement(BaseModel):
    """One lesion's measurements. Millimetres, mm³ and HU; points in LPS mm and fractional voxel (i, j, k)."""

    model_config = ConfigDict(extra="forbid")

    label: int | None = None
    plane: str = "axial"
    center_mm: list[float]
    center_voxel: list[int]
    axial_slice_k: int
    instance_number: int | None = None
    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    mean_diameter_fleischner_mm: int
    mean_diameter_lungrads_mm: float
    max_3d_diameter_mm: float
    volume_mm3: float
    sphere_equivalent_diameter_mm: float
    uncertainty_mm: float
    composition: Composition
    solid_component_mm: float | None = None
    solid_fraction: float
    mean_hu: float | None = None
    location: Location
    long_axis_endpoints_mm: list[list[float]]
    long_axis_endpoints_voxel: list[list[float]]
    short_axis_endpoints_mm: list[list[float]]
    short_axis_endpoints_voxel: list[list[float]]
    voxel_count: int
    partial_volume_refined: bool
    warnings: list[str] = Field(default_factory=list)

    def to_ai_finding(self, id: str, confidence: float) -> AIFinding:  # noqa: A002 - name fixed by contract
        """This measurement as an :class:`AIFinding` (fields of DESIGN.md, plus endpoints for overlays/SR)."""
        return AIFinding(
            id=id, kind="nodule", confidence=float(confidence),
            center_mm=self.center_mm, center_voxel=self.center_voxel, instance_number=self.instance_number,
            long_axis_mm=self.long_axis_mm, short_axis_mm=self.short_axis_mm,
            mean_diameter_mm=self.mean_diameter_mm, max_3d_diameter_mm=self.max_3d_diameter_mm,
            volume_mm3=self.volume_mm3, uncertainty_mm=self.uncertainty_mm, composition=self.composition,
            solid_component_mm=self.solid_component_mm, location=self.location.model_copy(),
            mean_diameter_fleischner_mm=self.mean_diameter_fleischner_mm,
            mean_diameter_lungrads_mm=self.mean_diameter_lungrads_mm,
            axial_slice_k=self.axial_slice_k,
            long_axis_endpoints_mm=self.long_axis_endpoints_mm,
            short_axis_endpoints_mm=self.short_axis_endpoints_mm,
            long_axis_endpoints_voxel=self.long_axis_endpoints_voxel,
            short_axis_endpoints_voxel=self.short_axis_endpoints_voxel,
        )


def round_fleischner(mean_mm: float) -> int:
    """Fleischner 2017: mean diameter rounded to the nearest mm (half up: 5.5 → 6)."""
    return int(Decimal(repr(float(mean_mm))).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def round_lungrads(mean_mm: float) -> float:
    """Lung-RADS v2022: mean diameter to one decimal place (half up)."""
    return float(Decimal(repr(float(mean_mm))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


# --------------------------------------------------------------------------------------------- input checks
def _check_volume(volume: Volume) -> None:
    if not isinstance(volume, Volume):
        raise MeasureError(f"expected a pipelines.types.Volume, got {type(volume).__name__}")
    m = volume.direction @ np.diag(volume.spacing_mm)
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < 1e-9:
        raise MeasureError("the image's direction matrix is singular or not finite; cannot map voxels to mm",
                           hint="check the image header (orientation / spacing)")


def _as_binary(volume: Volume, mask: np.ndarray, what: str = "mask") -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != volume.array.shape:
        raise MeasureError(
            f"{what} shape {mask.shape} (k, j, i) differs from the image's {volume.array.shape}",
            hint="the mask must be on the image's voxel grid; resample it first")
    if mask.dtype == bool:
        return mask
    if not (np.issubdtype(mask.dtype, np.number)):
        raise MeasureError(f"{what} has dtype {mask.dtype}; expected bool or numbers 0/1")
    nz = mask != 0
    vals = mask[nz]
    if vals.size and not np.all(vals == 1):
        bad = np.unique(vals[vals != 1])[:5]
        raise MeasureError(
            f"{what} is not binary: it holds values other than 0 and 1 (e.g. {', '.join(repr(v.item()) for v in bad)})",
            hint="threshold a probability map (e.g. > 0.5) or use measure_labels for a label map")
    return nz


def _bbox(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(np.any(mask, axis=other))
        if idx.size == 0:
            return None
        out.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(out)  # type: ignore[return-value]


def _pad_box(box: tuple[slice, ...], shape: tuple[int, ...], pad: int) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(box, shape))


# --------------------------------------------------------------------------------------------- public API
def measure_mask(
    volume: Volume,
    mask: np.ndarray,
    *,
    lung_labels: np.ndarray | None = None,
    lobe_labels: np.ndarray | None = None,
    plane: str | Plane = "axial",
    use_image: bool = True,
    config: MeasurementConfig | None = None,
) -> LesionMeasurement:
    """Measure the lesion in ``mask`` (bool [k, j, i] on ``volume``'s grid), all of it as one lesion.

    ``lung_labels`` (0 outside, 1 right lung, 2 left lung as from ``pipelines.lungmask``; a binary lung
    mask sets the midline instead) gives the side; ``lobe_labels`` (1 RUL, 2 RML, 3 RLL, 4 LUL, 5 LLL)
    gives the lobe. Without either, the side is from LPS x relative to the scanner isocentre.
    ``plane``: axial (default), coronal or sagittal. ``use_image=False`` ignores the HU at the boundary.
    Raises :class:`MeasureError` for an empty, full, non-binary or mis-shaped mask.
    """
    cfg = config or load_measurement_config()
    _check_volume(volume)
    plane_e = _plane(plane)
    binary = _as_binary(volume, mask)
    box = _bbox(binary)
    if box is None:
        raise MeasureError("the mask is empty: no voxel is set, so there is no lesion to measure")
    n_set = int(np.count_nonzero(binary[box]))
    if n_set == binary.size:
        raise MeasureError("the mask covers the whole image; that is not a lesion (is the mask inverted?)")
    return _measure_box(volume, binary, box, cfg, plane_e, lung_labels, lobe_labels, use_image, label=None)


def measure_labels(
    volume: Volume,
    labels: np.ndarray,
    *,
    connectivity: int = 26,
    min_voxels: int = 1,
    lung_labels: np.ndarray | None = None,
    lobe_labels: np.ndarray | None = None,
    plane: str | Plane = "axial",
    use_image: bool = True,
    config: MeasurementConfig | None = None,
) -> list[LesionMeasurement]:
    """One measurement per label value of a label map, or per connected component of a binary mask.

    A map with a single non-zero value (0/1, 0/255, bool) is binary; two or more values make a label map.

    ``connectivity`` is 6, 18 or 26 (face, edge, corner neighbours) for binary masks. Components smaller
    than ``min_voxels`` are skipped. Results are in label order (binary: scan order of the components).
    """
    cfg = config or load_measurement_config()
    _check_volume(volume)
    plane_e = _plane(plane)
    labels = np.asarray(labels)
    if labels.shape != volume.array.shape:
        raise MeasureError(
            f"label map shape {labels.shape} (k, j, i) differs from the image's {volume.array.shape}",
            hint="the mask must be on the image's voxel grid; resample it first")
    if connectivity not in (6, 18, 26):
        raise MeasureError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    if labels.dtype != bool and not np.issubdtype(labels.dtype, np.number):
        raise MeasureError(f"label map has dtype {labels.dtype}; expected integers")
    nonzero = labels != 0
    box = _bbox(nonzero)
    if box is None:
        raise MeasureError("the mask is empty: no voxel is set, so there is no lesion to measure")
    sub = labels[box]
    if np.issubdtype(sub.dtype, np.floating) and not (np.all(np.isfinite(sub)) and np.all(np.mod(sub, 1) == 0)):
        raise MeasureError("label map holds non-integer values",
                           hint="threshold a probability map (e.g. > 0.5) before measuring")
    if np.any(sub < 0):
        raise MeasureError("label map holds negative values; labels must be 0 (background) or positive")
    if np.count_nonzero(sub) == labels.size:
        raise MeasureError("the mask covers the whole image; that is not a lesion (is the mask inverted?)")

    out: list[LesionMeasurement] = []
    values = np.unique(sub[sub != 0])
    if values.size == 1:  # binary (0/1, 0/255, bool): one lesion per connected component
        structure = ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
        comp, n = ndimage.label(sub != 0, structure=structure)
        objects = ndimage.find_objects(comp)
        for idx, sl in enumerate(objects, start=1):
            if sl is None:
                continue
            local = comp[sl] == idx
            if int(local.sum()) < min_voxels:
                continue
            gbox = tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, sl))
            m = _LocalMask(local, gbox, volume.array.shape)
            out.append(_measure_box(volume, m, gbox, cfg, plane_e, lung_labels, lobe_labels, use_image, label=idx))
    else:
        for v in values:
            vm = sub == v
            if int(vm.sum()) < min_voxels:
                continue
            lbox = _bbox(vm)
            gbox = tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, lbox))
            m = _LocalMask(vm[lbox], gbox, volume.array.shape)
            out.append(_measure_box(volume, m, gbox, cfg, plane_e, lung_labels, lobe_labels, use_image,
                                    label=int(v)))
    log.info("measured %d lesion(s)", len(out))
    return out


class _LocalMask:
    """A mask given only inside a box of the full grid; reads outside the box are False."""

    def __init__(self, local: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]):
        self.local, self.box, self.shape = local, box, shape

    def crop(self, box: tuple[slice, ...]) -> np.ndarray:
        out = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
        src = tuple(slice(max(b.start, c.start), min(b.stop, c.stop)) for b, c in zip(self.box, box))
        dst = tuple(slice(s.start - c.start, s.stop - c.start) for s, c in zip(src, box))
        loc = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(src, self.box))
        out[dst] = self.local[loc]
        return out


# --------------------------------------------------------------------------------------------- core
_PAD = 2


def _measure_box(volume, binary, box, cfg: MeasurementConfig, plane: Plane, lung_labels, lobe_labels,
                 use_image: bool, label: int | None) -> LesionMeasurement:
    shape = volume.array.shape
    warnings: list[str] = []
    if any(s.start == 0 or s.stop == n for s, n in zip(box, shape)):
        warnings.append("lesion touches the image edge; it may be cut off and its size underestimated")
    pbox = _pad_box(box, shape, _PAD)
    m = binary.crop(pbox) if isinstance(binary, _LocalMask) else np.asarray(binary[pbox])
    # pad with zeros where the box was clamped at the image edge, so boundaries always close
    lo = [_PAD - (b.start - p.start) for b, p in zip(box, pbox)]
    hi = [_PAD - (p.stop - b.stop) for b, p in zip(box, pbox)]
    pad_w = list(zip(lo, hi))
    m = np.pad(m, pad_w)
    hu = np.pad(np.asarray(volume.array[pbox], dtype=np.float32), pad_w, mode="edge")
    offset = np.array([p.start - w[0] for p, w in zip(pbox, pad_w)], dtype=np.float64)  # (k, j, i)
    offset_ijk = offset[::-1]

    soft, refined = _occupancy(hu, m, cfg, use_image)
    aff = volume.affine_lps
    lin = aff[:3, :3]

    def crop_kji_to_mm(kji: np.ndarray) -> np.ndarray:
        ijk = np.asarray(kji, dtype=np.float64)[..., ::-1] + offset_ijk
        return ijk @ lin.T + aff[:3, 3]

    voxel_volume = float(abs(np.linalg.det(lin)))
    n_vox = int(m.sum())
    volume_mm3 = float(soft.sum(dtype=np.float64) * voxel_volume) if refined else n_vox * voxel_volume

    # centre: occupancy-weighted centroid
    kk, jj, ii = np.nonzero(soft > 0)
    w = soft[kk, jj, ii].astype(np.float64)
    c_kji = np.array([np.average(kk, weights=w), np.average(jj, weights=w), np.average(ii, weights=w)])
    center_mm = crop_kji_to_mm(c_kji)
    center_ijk = c_kji[::-1] + offset_ijk
    center_voxel = [int(np.clip(np.floor(c + 0.5), 0, n - 1)) for c, n in zip(center_ijk, volume.shape_ijk)]

    # planar axes
    geo = cfg.geometry
    section = _largest_section(soft, volume, offset_ijk, plane, geo, smooth=not refined)
    if section is None:  # cannot happen for a non-empty mask; guard against degenerate geometry
        raise MeasureError("no boundary could be traced for the mask (degenerate geometry)")
    long_mm, short_mm, long_pts, short_pts, slice_k, through_spacing, inplane_spacing = section
    mean_mm = 0.5 * (long_mm + short_mm)

    # maximum 3-D diameter from the 0.5 iso-surface
    soft3d = soft if refined else _smooth_keeping_mask(soft, geo.binary_smoothing_px, geo.binary_smoothing_margin)
    max3d = _max_3d_diameter(soft3d, crop_kji_to_mm)
    max3d = max(max3d, long_mm)

    sphere_eq = float((6.0 * volume_mm3 / math.pi) ** (1.0 / 3.0)) if volume_mm3 > 0 else 0.0

    # composition
    comp, solid_fraction, mean_hu, solid_mm = _composition(hu, m, volume, offset_ijk, plane, cfg, use_image)

    # location
    location, loc_warn = _location(volume, center_mm, m, pbox, pad_w, lung_labels, lobe_labels)
    warnings.extend(loc_warn)

    unc = _uncertainty(mean_mm, inplane_spacing, through_spacing, refined, cfg.uncertainty)

    long_vox = volume.mm_to_voxel(long_pts)
    short_vox = volume.mm_to_voxel(short_pts)
    if plane is Plane.AXIAL and slice_k is not None:
        axial_k = int(slice_k)
    else:
        mid = volume.mm_to_voxel(0.5 * (long_pts[0] + long_pts[1]))
        axial_k = int(np.clip(np.floor(mid[2] + 0.5), 0, shape[0] - 1))

    return LesionMeasurement(
        label=label, plane=plane.value,
        center_mm=[round(float(x), 3) for x in center_mm], center_voxel=center_voxel,
        axial_slice_k=axial_k, instance_number=volume.instance_number(axial_k),
        long_axis_mm=round(long_mm, 3), short_axis_mm=round(short_mm, 3), mean_diameter_mm=round(mean_mm, 3),
        mean_diameter_fleischner_mm=round_fleischner(mean_mm), mean_diameter_lungrads_mm=round_lungrads(mean_mm),
        max_3d_diameter_mm=round(max3d, 3), volume_mm3=round(volume_mm3, 2),
        sphere_equivalent_diameter_mm=round(sphere_eq, 3), uncertainty_mm=round(unc, 3),
        composition=comp, solid_component_mm=None if solid_mm is None else round(solid_mm, 3),
        solid_fraction=round(solid_fraction, 4), mean_hu=None if mean_hu is None else round(mean_hu, 1),
        location=location,
        long_axis_endpoints_mm=np.round(long_pts, 3).tolist(),
        long_axis_endpoints_voxel=np.round(long_vox, 3).tolist(),
        short_axis_endpoints_mm=np.round(short_pts, 3).tolist(),
        short_axis_endpoints_voxel=np.round(short_vox, 3).tolist(),
        voxel_count=n_vox, partial_volume_refined=refined, warnings=warnings,
    )


_INPLANE = np.ones((1, 3, 3), dtype=bool)
_CUBE = np.ones((3, 3, 3), dtype=bool)


def _occupancy(hu: np.ndarray, m: np.ndarray, cfg: MeasurementConfig, use_image: bool) -> tuple[np.ndarray, bool]:
    """Occupancy map in [0, 1]: the mask, refined on its boundary by the image's partial volume.

    Voxels of the mask keep a lesion fraction in [0.5, 1], voxels outside it one in [0, 0.5): the image
    moves the boundary by at most half a voxel. Falls back to the binary mask when the lesion/background
    contrast, the core or the background are too small to trust (``partial_volume`` in the config).
    """
    soft = m.astype(np.float32)
    pv = cfg.partial_volume
    if not (use_image and pv.enabled) or not np.all(np.isfinite(hu)):
        return soft, False
    core = ndimage.binary_erosion(m, structure=_INPLANE)
    if int(core.sum()) < pv.min_core_voxels:
        return soft, False
    hu_in = float(np.median(hu[core]))
    d1 = ndimage.binary_dilation(m, structure=_INPLANE)
    d2 = ndimage.binary_dilation(d1, structure=_INPLANE)
    ring = d2 & ~d1
    bg = hu[ring & (hu < pv.background_max_hu)]
    if bg.size < pv.min_background_voxels:
        return soft, False
    hu_out = float(np.median(bg))
    contrast = hu_in - hu_out
    if contrast < pv.min_contrast_hu:
        return soft, False
    band = ndimage.binary_dilation(m, structure=_CUBE) & ~ndimage.binary_erosion(m, structure=_CUBE)
    f = (hu - hu_out) / contrast
    inside = band & m
    outside = band & ~m
    soft[inside] = np.clip(f[inside], 0.5, 1.0)
    soft[outside] = np.clip(f[outside], 0.0, 0.499)
    return soft, True


def _plane_stack(soft: np.ndarray, volume: Volume, offset_ijk: np.ndarray, plane: Plane, geo: GeometryConfig):
    """The occupancy as a stack of planar sections [s, r, c] with a map (s, r, c) → LPS mm.

    Native slices when a volume axis is parallel to the plane's normal (no interpolation); otherwise the
    lesion is resampled (trilinear) onto a patient-aligned grid at the finest spacing.
    Returns (stack, to_mm, native_axis_ijk or None, through-plane spacing, in-plane spacing).
    """
    normal, u_ax, v_ax = _PLANE_FRAMES[plane]
    d = volume.direction
    cosines = np.abs(normal @ d)
    a = int(np.argmax(cosines))
    aff = volume.affine_lps
    lin, org = aff[:3, :3], aff[:3, 3]
    sp = np.asarray(volume.spacing_mm)
    if cosines[a] >= geo.axis_parallel_cos:
        arr_axis = 2 - a
        stack = np.moveaxis(soft, arr_axis, 0)
        rest = [q for q in range(3) if q != arr_axis]  # array axes of (r, c)
        perm = [arr_axis] + rest

        def to_mm(src: np.ndarray) -> np.ndarray:
            src = np.asarray(src, dtype=np.float64)
            kji = np.empty_like(src)
            for mpos, q in enumerate(perm):
                kji[..., q] = src[..., mpos]
            ijk = kji[..., ::-1] + offset_ijk
            return ijk @ lin.T + org

        inplane = [sp[2 - q] for q in rest]
        return stack, to_mm, a, float(sp[a]), inplane

    # oblique: resample onto (normal, v, u) at the finest spacing
    h = float(sp.min())
    kk, jj, ii = np.nonzero(soft > 0)
    corners = np.array([[i, j, k] for i in (ii.min() - 1, ii.max() + 1) for j in (jj.min() - 1, jj.max() + 1)
                        for k in (kk.min() - 1, kk.max() + 1)], dtype=np.float64) + offset_ijk
    cmm = corners @ lin.T + org
    basis = np.stack([normal, v_ax, u_ax])  # rows: s, r, c directions
    proj = cmm @ basis.T
    lo, hi = proj.min(0), proj.max(0)
    n = np.maximum(np.ceil((hi - lo) / h).astype(int) + 1, 2)
    grids = [lo[t] + h * np.arange(n[t]) for t in range(3)]
    S, R, C = np.meshgrid(*grids, indexing="ij")
    pts = S[..., None] * normal + R[..., None] * v_ax + C[..., None] * u_ax
    ijk = (pts.reshape(-1, 3) - org) @ np.linalg.inv(lin).T - offset_ijk
    stack = ndimage.map_coordinates(soft, ijk[:, ::-1].T, order=1, cval=0.0).reshape(S.shape).astype(np.float32)

    def to_mm_oblique(src: np.ndarray) -> np.ndarray:
        src = np.asarray(src, dtype=np.float64)
        return (lo[0] + h * src[..., 0:1]) * normal + (lo[1] + h * src[..., 1:2]) * v_ax \
            + (lo[2] + h * src[..., 2:3]) * u_ax

    return stack, to_mm_oblique, None, float(sp.max()), [h, h]


def _section_polygons(slice2d: np.ndarray, s: int, to_mm, e1: np.ndarray, e2: np.ndarray, o: np.ndarray):
    padded = np.pad(slice2d, 1)
    contours = find_contours(padded, 0.5, fully_connected="high")
    polys2d = []
    for c in contours:
        src = np.column_stack([np.full(len(c), float(s)), c[:, 0] - 1.0, c[:, 1] - 1.0])
        p = to_mm(src)
        polys2d.append(np.column_stack([(p - o) @ e1, (p - o) @ e2]))
    return polys2d


def _smooth_keeping_mask(binary_map: np.ndarray, sigma, margin: float) -> np.ndarray:
    """Gaussian-smoothed binary map, clamped so mask voxels stay >= 0.5 + margin and others <= 0.5 - margin:
    the staircase goes, thin parts (one voxel wide) stay, and the boundary moves by under half a voxel."""
    m = binary_map >= 0.5
    g = ndimage.gaussian_filter(binary_map.astype(np.float32), sigma=sigma)
    return np.where(m, np.maximum(g, 0.5 + margin), np.minimum(g, 0.5 - margin)).astype(np.float32)


def _largest_section(soft, volume, offset_ijk, plane: Plane, geo: GeometryConfig, smooth: bool):
    """Long/short axis on the section with the greatest long axis (ties: the larger area).

    ``smooth``: the map is a binary mask; smooth it in-plane (Gaussian, ``binary_smoothing_px`` of the
    native pixel, clamped to the mask) before contouring, which removes the staircase that biases the
    caliper upward.
    """
    stack, to_mm, native_axis, through, inplane = _plane_stack(soft, volume, offset_ijk, plane, geo)
    if smooth and geo.binary_smoothing_px > 0:
        native_px = inplane if native_axis is not None else [float(np.mean(volume.spacing_mm[:2]))] * 2
        sig = [geo.binary_smoothing_px * n / p for n, p in zip(native_px, inplane)]
        stack = _smooth_keeping_mask(stack, (0.0, sig[0], sig[1]), geo.binary_smoothing_margin)
    # orthonormal in-plane basis from the stack's column and row directions
    o = to_mm(np.zeros(3))
    e1 = to_mm(np.array([0.0, 0.0, 1.0])) - o
    e1 /= np.linalg.norm(e1)
    e2 = to_mm(np.array([0.0, 1.0, 0.0])) - o
    e2 -= (e2 @ e1) * e1
    e2 /= np.linalg.norm(e2)
    best = None
    for s in range(stack.shape[0]):
        sl = stack[s]
        if sl.max() < 0.5:
            continue
        polys = _section_polygons(sl, s, to_mm, e1, e2, o)
        polys = [p for p in polys if len(p) >= 2]
        if not polys:
            continue
        long_mm, ends = farthest_pair(np.concatenate(polys))
        area = sum(polygon_area(p) for p in polys)
        key = (round(long_mm, 6), area)
        if best is None or key > best[0]:
            best = (key, s, polys)
    if best is None:
        return None
    _, s, polys = best
    step = geo.chord_step_fraction * float(min(inplane))
    axes = planar_axes(polys, step)
    s_origin = to_mm(np.array([float(s), 0.0, 0.0]))
    plane_off = (s_origin - o) - ((s_origin - o) @ e1) * e1 - ((s_origin - o) @ e2) * e2

    def back(p2: np.ndarray) -> np.ndarray:
        return o + plane_off + p2[:, 0:1] * e1 + p2[:, 1:2] * e2

    long_pts, short_pts = back(axes.long_endpoints), back(axes.short_endpoints)
    slice_k = None
    if native_axis == 2:
        slice_k = int(round(s + offset_ijk[2]))
    return axes.long_mm, axes.short_mm, long_pts, short_pts, slice_k, through, inplane


def _max_3d_diameter(soft: np.ndarray, crop_kji_to_mm) -> float:
    padded = np.pad(soft, 1)
    try:
        verts, _, _, _ = marching_cubes(padded, level=0.5)
    except (ValueError, RuntimeError):
        return 0.0
    pts = crop_kji_to_mm(verts - 1.0)
    d, _ = farthest_pair(pts)
    return d


def core_hu(hu: np.ndarray, m: np.ndarray, cfg: MeasurementConfig) -> np.ndarray:
    """The finite HU of a mask's core: the mask eroded one voxel in-plane (its partial-volumed rim does not vote),
    the whole mask when the core has fewer than ``partial_volume.min_core_voxels``."""
    core = ndimage.binary_erosion(m, structure=_INPLANE)
    if int(core.sum()) < cfg.partial_volume.min_core_voxels:
        core = m
    vals = hu[core]
    return vals[np.isfinite(vals)]


def has_solid_core(hu: np.ndarray, m: np.ndarray, cfg: MeasurementConfig) -> bool:
    """Whether the mask's core reads solid (or calcified): at least ``solid_min_fraction`` of its non-aerated voxels
    at or above ``solid_min_hu``, as :func:`_composition` decides."""
    cc = cfg.composition
    vals = core_hu(hu, m, cfg)
    tissue = vals[vals > cc.aerated_max_hu]
    return bool(tissue.size) and float(np.mean(tissue >= cc.solid_min_hu)) >= cc.solid_min_fraction


def _composition(hu, m, volume, offset_ijk, plane, cfg: MeasurementConfig, use_image: bool):
    """Composition from the HU of the core (mask eroded one voxel in-plane; the whole mask if too small)."""
    cc = cfg.composition
    vals = core_hu(hu, m, cfg)
    if vals.size == 0:
        return "solid", 1.0, None, None
    mean_hu = float(vals.mean())
    tissue = vals[vals > cc.aerated_max_hu]
    if tissue.size == 0:
        return "ground-glass", 0.0, mean_hu, None
    calc_frac = float(np.mean(tissue >= cc.calcified_min_hu))
    solid_frac = float(np.mean(tissue >= cc.solid_min_hu))
    if calc_frac >= cc.calcified_min_fraction:
        return "calcified", solid_frac, mean_hu, None
    if solid_frac >= cc.solid_min_fraction:
        return "solid", solid_frac, mean_hu, None
    small_share = solid_frac <= cc.ground_glass_max_solid_fraction
    if small_share and cc.solid_component_decides_mm is None:
        return "ground-glass", solid_frac, mean_hu, None
    solid = m & (hu >= cc.solid_min_hu)
    lab, n = ndimage.label(solid, structure=_CUBE)
    if n == 0:
        return "ground-glass", solid_frac, mean_hu, None
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    part = lab == (int(np.argmax(sizes)) + 1)
    section = _largest_section(part.astype(np.float32), volume, offset_ijk, plane, cfg.geometry, smooth=True)
    if section is None:
        return "ground-glass", solid_frac, mean_hu, None
    solid_mm = 0.5 * (section[0] + section[1])
    if solid_mm < cc.solid_component_min_mm or (small_share and solid_mm < cc.solid_component_decides_mm):
        return "ground-glass", solid_frac, mean_hu, None
    return "part-solid", solid_frac, mean_hu, float(solid_mm)


def _crop_labels(arr, volume, pbox, pad_w, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape != volume.array.shape:
        raise MeasureError(f"{what} shape {arr.shape} differs from the image's {volume.array.shape}")
    return np.pad(arr[pbox], pad_w)


def _shell_mode(lab: np.ndarray, m: np.ndarray, codes) -> int | None:
    """Most common of ``codes`` in and around the lesion (masks from lung models often leave it out)."""
    shell = ndimage.binary_dilation(m, structure=_CUBE, iterations=2)
    vals = lab[shell]
    vals = vals[np.isin(vals, list(codes))]
    return int(np.bincount(vals.astype(np.int64)).argmax()) if vals.size else None


def _location(volume, center_mm, m, pbox, pad_w, lung_labels, lobe_labels) -> tuple[Location, list[str]]:
    """Side and lobe. Side: from lung labels 1 right / 2 left (pipelines.lungmask) around the lesion, else
    from the lobe, else from the midline (middle of the lung mask's x extent, or LPS x = 0, the scanner
    isocentre, without a lung mask); LPS +x is the patient's left. Lobe: lobe codes around the lesion."""
    warnings: list[str] = []
    side = None
    if lung_labels is not None:
        lab = _crop_labels(lung_labels, volume, pbox, pad_w, "lung label map")
        code = _shell_mode(lab, m, (1, 2))
        if code is not None and np.any(np.asarray(lung_labels) == 2):  # a right/left labelled lung map
            side = "right" if code == 1 else "left"
    lobe = None
    if lobe_labels is not None:
        lab = _crop_labels(lobe_labels, volume, pbox, pad_w, "lobe label map")
        code = _shell_mode(lab, m, LOBE_CODES)
        if code is None:
            warnings.append("no lobe label touches the lesion; lobe unknown")
        else:
            lobe = LOBE_CODES[code]
            if side is not None and LOBE_SIDE[lobe] != side:
                warnings.append(f"lobe {lobe} disagrees with the {side} lung label; lobe left unknown")
                lobe = None
    if side is None and lobe is not None:
        side = LOBE_SIDE[lobe]
    if side is None:
        midline_x = 0.0
        if lung_labels is not None:
            step = 4
            kk, jj, ii = np.nonzero(np.asarray(lung_labels)[::step, ::step, ::step])
            if kk.size:
                pts = volume.voxel_to_mm(np.column_stack([ii, jj, kk]) * step)
                midline_x = 0.5 * (float(pts[:, 0].min()) + float(pts[:, 0].max()))
            else:
                warnings.append("lung mask is empty; side taken from the scanner isocentre (LPS x = 0)")
        side = "left" if center_mm[0] > midline_x else "right"
    return Location(side=side, lobe=lobe), warnings


def slab_loss_rms_mm(mean_mm: float, slab_mm: float, samples: int = 64) -> float:
    """RMS shortfall (mm) of a diameter read on the best slice of thickness ``slab_mm`` (slices contiguous).

    Model: a sphere of radius R = mean/2; the best slice is centred at an offset d from its largest
    section, d uniform in [-h, h], h = slab/2; a point of the section is in the mask when at least half
    of the slab's thickness through it is lesion (partial volume, threshold 0.5), which holds for radius
    rho <= sqrt(R^2 - s^2) with s = max(h/2, |d|). Shortfall 2 (R - rho), or 2 R if the slice misses it.
    """
    r = max(mean_mm / 2.0, 1e-6)
    h = slab_mm / 2.0
    d = (np.arange(samples) + 0.5) / samples * h
    s = np.maximum(h / 2.0, d)
    rho = np.sqrt(np.clip(r * r - s * s, 0.0, None))
    loss = 2.0 * (r - rho)
    return float(np.sqrt(np.mean(loss ** 2)))


def _uncertainty(mean_mm: float, inplane: list[float], through: float, refined: bool,
                 uc: UncertaintyConfig) -> float:
    """Uncertainty (mm) of the mean diameter: see ``uncertainty`` in configs/measurement.yaml."""
    pix = float(np.mean(inplane))
    factor = uc.boundary_factor_refined if refined else uc.boundary_factor_binary
    u_boundary = factor * pix
    u_slice = slab_loss_rms_mm(mean_mm, through)
    return float(uc.coverage_k * math.hypot(u_boundary, u_slice))
