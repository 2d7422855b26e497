"""Classical lung segmentation: left and right lung, airways excluded, juxtapleural nodules kept inside.

Method (after Hu, Hoffman & Reinhardt, IEEE TMI 2001; rolling-ball closing after Armato et al., Med Phys
1999), on a coarse grid of about 2 mm, then returned at the native grid:

1. body = largest 3-D component of tissue above ``body_hu`` after an in-plane opening (drops the table);
2. lung candidates = voxels below ``lung_hu`` enclosed by the body in their axial slice; small and
   gas-like components (bowel gas, air under the patient) are dropped;
3. trachea and main bronchi: grown from a trachea seed with a lumen threshold that is tightened while it
   leaks, plus small isolated air blobs near the body's midline in each axial slice; removed with a margin;
4. left/right: two components, or an in-plane erosion that cuts the junction lines, then nearest-marker
   growth; the side comes from the LPS x of each lung's centre (+x is the patient's left);
5. per lung, an in-plane closing (``closing_radius_mm``) keeps pleural-based nodules inside, and holes
   (vessels, nodules, intrapulmonary bronchi) are filled per axial slice.

Lobes are *approximate*: assigned from the position within each lung (fissure planes from anatomical
landmarks in ``configs/lungmask.yaml``), not from detected fissures, and only when the whole lung height
is in the volume. ``LungSegmentation.lobes_approximate`` says so.

Measured by ``benchmarks/lungmask.py`` (results in ``benchmarks/results/<hardware>/lungmask.json``): Dice
0.96 on the TotalSegmentator lung bases, 0.98 on synthetic studies; approximate lobes Dice 0.72 (RML) to
0.95 (LUL) on synthetic studies, not measurable on the real data here. Known limits: the boundary is
exact to about half the 2.5 mm working grid; with thick (8 mm) slices, stomach gas under the left dome
can join the left lung.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy import ndimage as ndi

from pipelines.config import load_yaml_config
from pipelines.errors import ConfigError, PreprocessError
from pipelines.types import Volume

logger = logging.getLogger(__name__)

RIGHT, LEFT = 1, 2
SIDE_NAMES = {RIGHT: "right", LEFT: "left"}
LOBE_CODES = {"RUL": 1, "RML": 2, "RLL": 3, "LUL": 4, "LLL": 5}
LOBE_NAMES = {v: k for k, v in LOBE_CODES.items()}


class LobeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    oblique_height_posterior: float = Field(0.70, ge=0, le=1)
    oblique_height_anterior: float = Field(0.05, ge=0, le=1)
    horizontal_height: float = Field(0.55, ge=0, le=1)
    max_edge_fraction: float = Field(0.10, ge=0, le=1)


class LungMaskConfig(BaseModel):
    """Thresholds of the classical lung mask; defaults and sources in ``configs/lungmask.yaml``."""

    model_config = ConfigDict(extra="forbid")
    coarse_inplane_mm: float = Field(2.5, gt=0)
    coarse_slice_mm: float = Field(2.0, gt=0)
    body_hu: float = -500.0
    body_opening_mm: float = Field(4.0, ge=0)
    lung_hu: float = -320.0
    min_lung_component_ml: float = Field(5.0, ge=0)
    min_lung_fraction: float = Field(0.02, ge=0, le=1)
    gas_hu: float = -950.0
    max_gas_fraction: float = Field(0.35, ge=0, le=1)
    max_median_hu: float = -600.0
    airway_hu: float = -900.0
    airway_hu_tighten_to: float = -990.0
    airway_hu_step: float = Field(20.0, gt=0)
    max_airway_ml: float = Field(120.0, gt=0)
    trachea_area_mm2: tuple[float, float] = (80.0, 900.0)
    trachea_max_offset_mm: float = Field(45.0, gt=0)
    airway_dilation_mm: float = Field(2.0, ge=0)
    split_min_ratio: float = Field(0.15, gt=0, le=1)
    split_max_erosion_mm: float = Field(12.0, ge=0)
    closing_radius_mm: float = Field(12.0, ge=0)
    fill_holes_2d: bool = True
    pleural_hull_depth_mm: float = Field(20.0, ge=0)
    pleural_hull_min_depth_mm: float = Field(5.0, ge=0)
    pleural_hull_max_area_fraction: float = Field(0.25, ge=0)
    pleural_hull_min_compactness: float = Field(0.1, ge=0)
    lobes: LobeConfig = Field(default_factory=LobeConfig)


def load_config(path: str | Path | None = None) -> LungMaskConfig:
    """Read ``configs/lungmask.yaml`` (or ``path``) into a typed config."""
    return load_yaml_config(LungMaskConfig, "lungmask.yaml", path, what="lung mask config")


@dataclass
class LungSegmentation:
    """Lung labels on the volume's grid ``[k, j, i]``: 0 outside, 1 right lung, 2 left lung.

    ``lobes`` (same grid, or None): 1 RUL, 2 RML, 3 RLL, 4 LUL, 5 LLL. When ``lobes_approximate`` is True
    they come from position within each lung, not from fissures: use them as a hint for reports, never
    as a measurement.
    """

    labels: np.ndarray
    spacing_mm: tuple[float, float, float]
    lobes: np.ndarray | None = None
    lobes_approximate: bool = True
    warnings: list[str] = field(default_factory=list)

    @property
    def mask(self) -> np.ndarray:
        return self.labels > 0

    def mask_with_margin(self, margin_mm: float) -> np.ndarray:
        """The lung mask grown in-plane by ``margin_mm`` (a square, O(N)): for masking probability maps, so
        that a juxtapleural nodule's edge at the pleura (within about one working-grid voxel) is not cut."""
        m = self.mask
        if margin_mm <= 0:
            return m
        sx, sy, _ = self.spacing_mm
        hj, hi = max(1, int(round(margin_mm / sy))), max(1, int(round(margin_mm / sx)))
        u = m.view(np.uint8)
        u = ndi.maximum_filter1d(ndi.maximum_filter1d(u, 2 * hj + 1, axis=1), 2 * hi + 1, axis=2)
        return u.astype(bool)

    def volume_ml(self, label: int) -> float:
        return float(np.count_nonzero(self.labels == label) * np.prod(self.spacing_mm) / 1000.0)

    def location_at(self, ijk) -> tuple[str | None, str | None]:
        """(side, lobe) at voxel (i, j, k); the nearest lung voxel within 10 mm when it is outside."""
        i, j, k = (int(round(v)) for v in ijk)
        kk, jj, ii = self.labels.shape
        if not (0 <= i < ii and 0 <= j < jj and 0 <= k < kk):
            return None, None
        lab = int(self.labels[k, j, i])
        lobe = int(self.lobes[k, j, i]) if self.lobes is not None else 0
        if lab == 0:
            r = [max(1, int(round(10.0 / s))) for s in self.spacing_mm]  # (ri, rj, rk)
            sl = (slice(max(0, k - r[2]), k + r[2] + 1), slice(max(0, j - r[1]), j + r[1] + 1),
                  slice(max(0, i - r[0]), i + r[0] + 1))
            sub = self.labels[sl]
            pts = np.argwhere(sub > 0)
            if len(pts) == 0:
                return None, None
            centre = np.array([k - sl[0].start, j - sl[1].start, i - sl[2].start])
            d = (((pts - centre) * np.array(self.spacing_mm[::-1])) ** 2).sum(1)
            p = pts[int(np.argmin(d))]
            lab = int(sub[tuple(p)])
            if self.lobes is not None:
                lobe = int(self.lobes[sl][tuple(p)])
        return SIDE_NAMES.get(lab), LOBE_NAMES.get(lobe)


# --------------------------------------------------------------------------------------------------
# helpers


def _block_mean(a: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    """Mean over blocks of f = (fk, fj, fi) voxels (edges padded by replication)."""
    if f == (1, 1, 1):
        return a.astype(np.float32)
    pads = [(0, (-n) % s) for n, s in zip(a.shape, f)]
    b = np.pad(a, pads, mode="edge") if any(p[1] for p in pads) else a
    K, J, I = (n // s for n, s in zip(b.shape, f))
    acc = np.zeros((K, J, I), np.float32)
    for dk in range(f[0]):  # sum of the f0*f1*f2 strided sub-grids: no large temporaries
        for dj in range(f[1]):
            for di in range(f[2]):
                acc += b[dk::f[0], dj::f[1], di::f[2]]
    acc /= float(np.prod(f))
    return acc


def _upsample(c: np.ndarray, f: tuple[int, int, int], shape: tuple[int, int, int]) -> np.ndarray:
    """Nearest-block upsampling of a coarse label array back to ``shape``."""
    out = c
    for ax, r in enumerate(f):
        if r > 1:
            out = np.repeat(out, r, axis=ax)
    return np.ascontiguousarray(out[: shape[0], : shape[1], : shape[2]])


def _inplane_struct(radius_mm: float, sj: float, si: float) -> np.ndarray:
    """In-plane disk of radius_mm, at least the 4-neighbourhood (a radius below one pixel still acts)."""
    radius_mm = max(radius_mm, min(sj, si))
    rj, ri = max(1, int(round(radius_mm / sj))), max(1, int(round(radius_mm / si)))
    y, x = np.ogrid[-rj:rj + 1, -ri:ri + 1]
    disk = (y * sj) ** 2 + (x * si) ** 2 <= radius_mm ** 2 + 1e-6
    return disk[None, :, :]


_PLANE8 = np.zeros((3, 3, 3), bool)
_PLANE8[1] = True


def _fill_holes_2d(m: np.ndarray) -> np.ndarray:
    return ndi.binary_fill_holes(m, structure=_PLANE8)


def _closing_2d(m: np.ndarray, r_mm: float, sp_kji: tuple[float, float, float]) -> np.ndarray:
    """In-plane closing by a disk of radius r_mm, per axial slice, via distance transforms.

    (A square structuring element is faster but fills hilar concavities in boxes; the disk does not.)
    """
    if r_mm <= 0 or not m.any():
        return m
    pj, pi = int(np.ceil(r_mm / sp_kji[1])) + 2, int(np.ceil(r_mm / sp_kji[2])) + 2
    mp = np.pad(m, ((0, 0), (pj, pj), (pi, pi)))
    sampling = (1e4 * max(sp_kji), sp_kji[1], sp_kji[2])  # no distances across slices
    dil = ndi.distance_transform_edt(~mp, sampling=sampling) <= r_mm
    clo = ndi.distance_transform_edt(dil, sampling=sampling) > r_mm
    return (clo | mp)[:, pj:-pj, pi:-pi]


def _bbox(m: np.ndarray, margin: tuple[int, int, int]) -> tuple[slice, slice, slice]:
    idx = np.nonzero(m)
    return tuple(slice(max(0, int(ix.min()) - g), min(n, int(ix.max()) + g + 1))
                 for ix, g, n in zip(idx, margin, m.shape))


class _Grid:
    """Coarse grid ↔ native voxel ↔ LPS mm."""

    def __init__(self, volume: Volume, f: tuple[int, int, int], shape_c: tuple[int, int, int]):
        self.volume, self.f, self.shape = volume, f, shape_c
        sx, sy, sz = volume.spacing_mm
        self.sp_kji = (sz * f[0], sy * f[1], sx * f[2])

    def native_index(self, kji_c: np.ndarray) -> np.ndarray:
        """Coarse (k, j, i) → native fractional (i, j, k) of the block centre."""
        kji_c = np.asarray(kji_c, float)
        f = np.array(self.f, float)
        kji = kji_c * f + (f - 1) / 2.0
        return kji[..., ::-1]

    def to_mm(self, kji_c: np.ndarray) -> np.ndarray:
        return self.volume.voxel_to_mm(self.native_index(kji_c))

    def voxel_ml(self) -> float:
        return float(np.prod(self.sp_kji)) / 1000.0


# --------------------------------------------------------------------------------------------------
# the steps


def _body(hu: np.ndarray, cfg: LungMaskConfig, g: _Grid) -> np.ndarray:
    tissue = hu > cfg.body_hu
    if cfg.body_opening_mm > 0:
        st = _inplane_struct(cfg.body_opening_mm, g.sp_kji[1], g.sp_kji[2])
        opened = ndi.binary_opening(tissue, structure=st)
    else:
        opened = tissue
    lab, n = ndi.label(opened)
    if n == 0:
        raise PreprocessError("no body found: no voxel above "
                              f"{cfg.body_hu:.0f} HU", hint="is this a CT series in Hounsfield units?")
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    body = lab == int(np.argmax(sizes))
    if cfg.body_opening_mm > 0:  # give back the skin and edges the opening took, not the table
        body = ndi.binary_dilation(body, structure=st) & tissue | body
    return _fill_holes_2d(body)


def _components(m: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    lab, n = ndi.label(m)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    return lab, n, sizes


def _lung_candidates(hu, body, cfg, g, warnings) -> np.ndarray:
    cand = (hu < cfg.lung_hu) & body
    lab, n, sizes = _components(cand)
    if n == 0:
        return cand
    gas = np.bincount(lab.ravel(), weights=(hu < cfg.gas_hu).ravel().astype(np.float64), minlength=n + 1)
    gas_frac = gas / np.maximum(sizes, 1)
    min_vox = cfg.min_lung_component_ml / g.voxel_ml()
    ids = np.arange(n + 1)
    big = (sizes >= min_vox) & (ids > 0)
    median = np.zeros(n + 1)
    big_ids = ids[big]
    if len(big_ids):
        sel = big[lab]  # median only over the big components (the rest are dropped anyway)
        median[big_ids] = ndi.median(hu[sel], lab[sel], big_ids)
    lungish = big & (gas_frac <= cfg.max_gas_fraction) & (median <= cfg.max_median_hu)
    if not lungish.any() and big.any():
        warnings.append("lung mask: every air component is very dark (< "
                        f"{cfg.gas_hu:.0f} HU); emphysema or a phantom? kept the largest ones")
        lungish = big
    if not lungish.any():
        return np.zeros_like(cand)
    largest = sizes[lungish].max()
    keep = lungish & (sizes >= cfg.min_lung_fraction * largest)
    return keep[lab]


def _airways(hu, lung, body, cfg, g, warnings) -> np.ndarray:
    """Trachea and main bronchi on the coarse grid (boolean)."""
    ij_area = g.sp_kji[1] * g.sp_kji[2]
    a_min, a_max = cfg.trachea_area_mm2
    kz = g.volume.direction[2, 2]  # superior along k when > 0 (LPS +z is superior)
    airway2d = np.zeros_like(lung)
    seed = np.zeros_like(lung)
    # every axial cross-section of the lung candidates at once (in-plane 8-connectivity)
    lab, n = ndi.label(lung, structure=_PLANE8)
    if n:
        pk, pj, pi = np.nonzero(lab)
        lv = lab[pk, pj, pi]
        cnt_c = np.maximum(np.bincount(lv, minlength=n + 1)[1:], 1)
        area = cnt_c * ij_area
        com = np.stack([np.bincount(lv, weights=p, minlength=n + 1)[1:] / cnt_c for p in (pk, pj, pi)], axis=1)
        mean_hu = np.bincount(lv, weights=hu[pk, pj, pi], minlength=n + 1)[1:] / cnt_c
        # the body's centre per slice
        cnt = np.maximum(body.sum(axis=(1, 2)), 1)
        bj = (body.sum(axis=2) * np.arange(body.shape[1])).sum(axis=1) / cnt
        bi = (body.sum(axis=1) * np.arange(body.shape[2])).sum(axis=1) / cnt
        ks = np.round(com[:, 0]).astype(int)
        x_comp = g.to_mm(com)[:, 0]
        x_body = g.to_mm(np.stack([ks, bj[ks], bi[ks]], axis=1))[:, 0]
        sel = (area <= a_max) & (mean_hu <= cfg.airway_hu) & (np.abs(x_comp - x_body) <= cfg.trachea_max_offset_mm)
        keep = np.zeros(n + 1, bool)
        keep[1:] = sel
        airway2d = keep[lab]
        seeds = np.nonzero(sel & (area >= a_min))[0]
        if len(seeds):
            # the most superior isolated airway cross-section seeds the tree
            top = seeds[np.argmax(ks[seeds] if kz >= 0 else -ks[seeds])]
            seed = lab == (top + 1)
    tree = np.zeros_like(lung)
    if seed.any():
        sm = ndi.gaussian_filter(hu, sigma=0.5)
        max_vox = cfg.max_airway_ml / g.voxel_ml()
        thr = cfg.airway_hu
        grown = None
        while thr >= cfg.airway_hu_tighten_to - 1e-6:
            dark = (sm < thr) & lung
            lab, n = ndi.label(dark)
            ids = np.unique(lab[seed & dark])
            ids = ids[ids > 0]
            if len(ids):
                t = np.isin(lab, ids)
                if t.sum() <= max_vox:
                    grown = t
                    break
            thr -= cfg.airway_hu_step
        if grown is None:
            warnings.append("lung mask: airway tree growth leaked into the lungs at every threshold; "
                            "only isolated airway cross-sections were removed")
        else:
            tree = grown
    air = tree | airway2d
    if cfg.airway_dilation_mm > 0 and air.any():
        st = _inplane_struct(cfg.airway_dilation_mm, g.sp_kji[1], g.sp_kji[2])
        air = ndi.binary_dilation(air, structure=st)
    return air


def _split(lung, hu, body, cfg, g, warnings) -> np.ndarray:
    """Label 1 right, 2 left on the coarse grid."""
    out = np.zeros(lung.shape, np.uint8)
    lab, n, sizes = _components(lung)
    if n == 0:
        return out
    order = np.argsort(sizes)[::-1]
    order = order[sizes[order] > 0]
    comps = [lab == c for c in order]

    def cx(m):
        return float(g.to_mm(np.array(ndi.center_of_mass(m)))[0])

    body_cx = cx(body)
    if len(comps) >= 2 and sizes[order[1]] >= cfg.split_min_ratio * sizes[order[0]]:
        a, b = comps[0], comps[1]
    else:
        a, b = _erode_split(comps[0], cfg, g)
        if b is None:
            # one lung only, or the junction could not be cut: split at the body midline or keep one side
            m = comps[0]
            span = _x_span(m, g)
            if span[0] < body_cx - 10 and span[1] > body_cx + 10:
                warnings.append("lung mask: left and right lungs touch and could not be separated by "
                                "erosion; split at the body's midline")
                xs = _x_mm_grid(m.shape, g)
                a, b = m & (xs < body_cx), m & (xs >= body_cx)
            else:
                warnings.append("lung mask: only one lung found")
                side = LEFT if cx(m) > body_cx else RIGHT
                out[m] = side
                for c in comps[1:]:
                    out[c] = LEFT if cx(c) > body_cx else RIGHT
                return out
        rest = comps[1:]
    if len(comps) >= 2 and b is comps[1]:
        rest = comps[2:]
    xa, xb = cx(a), cx(b)
    left, right = (a, b) if xa > xb else (b, a)
    out[right] = RIGHT
    out[left] = LEFT
    mid = (xa + xb) / 2.0
    for c in rest:
        out[c & (out == 0)] = LEFT if cx(c) > mid else RIGHT
    return out


def _mm_grid(shape, g: _Grid, row: int, offset=(0, 0, 0)) -> np.ndarray:
    """LPS coordinate ``row`` (0 x, 1 y, 2 z; mm) of every coarse voxel of a block of ``shape`` at ``offset``."""
    k, j, i = (np.arange(o, o + n, dtype=np.float32) for o, n in zip(offset, shape))
    aff = g.volume.affine_lps
    f = g.f
    ni = (i * f[2] + (f[2] - 1) / 2)[None, None, :]
    nj = (j * f[1] + (f[1] - 1) / 2)[None, :, None]
    nk = (k * f[0] + (f[0] - 1) / 2)[:, None, None]
    a = aff[row].astype(np.float32)
    return np.broadcast_to(a[0] * ni + a[1] * nj + a[2] * nk + a[3], tuple(shape)).astype(np.float32)


def _x_mm_grid(shape, g: _Grid, offset=(0, 0, 0)) -> np.ndarray:
    return _mm_grid(shape, g, 0, offset)


def _x_span(m, g) -> tuple[float, float]:
    pts = np.argwhere(m)
    xs = g.to_mm(pts)[:, 0]
    return float(np.percentile(xs, 2)), float(np.percentile(xs, 98))


def _erode_split(m: np.ndarray, cfg: LungMaskConfig, g: _Grid):
    """Erode in-plane until m falls apart into two large parts; grow them back by nearest marker."""
    sl = _bbox(m, (1, 2, 2))
    sub = m[sl]
    n_iter = int(round(cfg.split_max_erosion_mm / min(g.sp_kji[1], g.sp_kji[2])))
    st = np.zeros((3, 3, 3), bool)
    st[1, 1, :] = st[1, :, 1] = True
    er = sub
    for it in range(max(0, n_iter)):
        er = ndi.binary_erosion(er, structure=st)
        lab, n, sizes = _components(er)
        if n < 2:
            if n == 0:
                break
            continue
        o = np.argsort(sizes)[::-1]
        if sizes[o[1]] >= cfg.split_min_ratio * sizes[o[0]]:
            # grow both parts back inside the lung, one in-plane step at a time, so the cut stays where
            # the junction was thinnest
            pa, pb = lab == o[0], lab == o[1]
            free = sub & ~pa & ~pb
            for _ in range(it + 2):  # as many steps as the erosion took, plus a margin
                ga = ndi.binary_dilation(pa, structure=st) & free
                gb = ndi.binary_dilation(pb, structure=st) & free & ~ga
                if not ga.any() and not gb.any():
                    break
                pa |= ga
                pb |= gb
                free &= ~(ga | gb)
            if free.any():
                # the rest (tips the erosion removed from whole slices): each piece goes to the part it
                # touches most, or to the side of its centre
                flab, fn = ndi.label(free)
                touch_a = np.bincount(flab[ndi.binary_dilation(pa) & free], minlength=fn + 1)
                touch_b = np.bincount(flab[ndi.binary_dilation(pb) & free], minlength=fn + 1)
                to_a = touch_a > touch_b
                tie = touch_a == touch_b
                if tie[1:].any():
                    xs = _x_mm_grid(sub.shape, g, tuple(t.start for t in sl))
                    xa, xb = xs[pa].mean(), xs[pb].mean()
                    cnt = np.maximum(np.bincount(flab.ravel(), minlength=fn + 1), 1)
                    xf = np.bincount(flab.ravel(), weights=xs.ravel(), minlength=fn + 1) / cnt
                    to_a = np.where(tie, np.abs(xf - xa) < np.abs(xf - xb), to_a)
                to_a[0] = False
                pa |= to_a[flab]
                pb |= free & ~to_a[flab]
            a = np.zeros_like(m)
            b = np.zeros_like(m)
            a[sl] = pa
            b[sl] = pb
            return a, b
    return m, None


def _lateral_hull_fill(m: np.ndarray, sl, side: int, cfg: LungMaskConfig, g: _Grid) -> np.ndarray:
    """Per axial slice, the parts of the lung's convex hull on its lateral (rib) side that are at most
    ``pleural_hull_depth_mm`` deep and small beside the lung's cross-section: broad-based pleural masses
    too wide for the closing (not the liver or spleen dome under a basal crescent)."""
    from skimage.morphology import convex_hull_image

    xs = _x_mm_grid(m.shape, g, tuple(t.start for t in sl))
    lateral = -1.0 if side == RIGHT else 1.0  # patient's right is LPS -x
    add = np.zeros_like(m)
    area_k = m.sum(axis=(1, 2))
    for k in np.nonzero(area_k >= 10)[0]:
        add[k] = convex_hull_image(m[k]) & ~m[k]
    lab, n = ndi.label(add, structure=_PLANE8)  # each component lies in one slice
    if n == 0:
        return add
    idx = np.arange(1, n + 1)
    pk, pj, pi = np.nonzero(lab)
    lv = lab[pk, pj, pi]
    area = np.bincount(lv, minlength=n + 1)[1:].astype(float)
    k_of = np.zeros(n + 1, int)
    k_of[lv] = pk
    k_of = k_of[1:]
    cx_lung = (m * xs).sum(axis=(1, 2)) / np.maximum(area_k, 1)
    cx_add = np.bincount(lv, weights=xs[pk, pj, pi], minlength=n + 1)[1:] / np.maximum(area, 1)
    area_mm2 = area * g.sp_kji[1] * g.sp_kji[2]
    # cheap tests first; the depth (distance transform) only where a component can still pass
    cand = ((cx_add - cx_lung[k_of]) * lateral > 0) \
        & (area <= cfg.pleural_hull_max_area_fraction * area_k[k_of]) \
        & (area_mm2 >= np.pi * cfg.pleural_hull_min_depth_mm ** 2)
    keep = np.zeros(n + 1, bool)
    if not cand.any():
        return keep[lab]
    sel = np.zeros(n + 1, bool)
    sel[1:] = cand
    sub_add = sel[lab]
    box = _bbox(sub_add, (0, 1, 1))
    depth = np.zeros(add.shape, np.float32)
    depth[box] = ndi.distance_transform_edt(sub_add[box], sampling=(1e4 * max(g.sp_kji), g.sp_kji[1], g.sp_kji[2]))
    max_depth = np.zeros(n + 1)
    np.maximum.at(max_depth, lv, depth[pk, pj, pi])
    max_depth = max_depth[1:]
    keep[1:] = cand & (max_depth <= cfg.pleural_hull_depth_mm) & (max_depth >= cfg.pleural_hull_min_depth_mm) \
        & (max_depth ** 2 >= cfg.pleural_hull_min_compactness * area_mm2)
    return keep[lab]


def _approx_lobes(labels: np.ndarray, g: _Grid, cfg: LobeConfig, warnings) -> np.ndarray | None:
    kz = g.volume.direction[2, 2]
    if abs(kz) < 0.8:
        warnings.append("lung mask: series is not axial; lobes not assigned")
        return None
    lobes = np.zeros(labels.shape, np.uint8)
    for side in (RIGHT, LEFT):
        m = labels == side
        if not m.any():
            continue
        area = m.sum(axis=(1, 2)).astype(float)
        if max(area[0], area[-1]) > cfg.max_edge_fraction * area.max():
            warnings.append("lung mask: the lungs extend beyond the first or last slice; "
                            "lobes not assigned (they need the whole lung height)")
            return None
        sl = _bbox(m, (0, 0, 0))
        off = tuple(t.start for t in sl)
        mb = m[sl]
        z = _mm_grid(mb.shape, g, 2, off)[mb]
        y = _mm_grid(mb.shape, g, 1, off)[mb]
        zn = (z - z.min()) / max(z.max() - z.min(), 1e-6)  # 0 base .. 1 apex (LPS +z is superior)
        yn = (y - y.min()) / max(y.max() - y.min(), 1e-6)  # 0 anterior .. 1 posterior (LPS +y is posterior)
        oblique = cfg.oblique_height_anterior + (cfg.oblique_height_posterior - cfg.oblique_height_anterior) * yn
        lower = zn < oblique
        if side == RIGHT:
            code = np.where(lower, LOBE_CODES["RLL"],
                            np.where(zn < cfg.horizontal_height, LOBE_CODES["RML"], LOBE_CODES["RUL"]))
        else:
            code = np.where(lower, LOBE_CODES["LLL"], LOBE_CODES["LUL"])
        sub = lobes[sl]
        sub[mb] = code
    return lobes


# --------------------------------------------------------------------------------------------------


def _coerce_config(config) -> LungMaskConfig:
    if config is None:
        return load_config()
    if isinstance(config, LungMaskConfig):
        return config
    if isinstance(config, (str, Path)):
        return load_config(config)
    if isinstance(config, dict):
        try:
            return LungMaskConfig.model_validate(config)
        except ValidationError as err:
            raise ConfigError(f"invalid lung mask config: {err}") from err
    raise ConfigError(f"lung mask config must be a LungMaskConfig, dict or path, not {type(config).__name__}")


def segment_lungs(volume: Volume, *, config: LungMaskConfig | dict | str | Path | None = None) -> LungSegmentation:
    """Segment the lungs of a CT volume in HU; labels 1 = patient's right lung, 2 = left (LPS +x is left).

    Raises PreprocessError when the array is not usable CT (non-finite values, no air, no body, no lung).
    """
    cfg = _coerce_config(config)
    a = volume.array
    warnings: list[str] = []
    if a.size == 0 or min(a.shape) < 1:
        raise PreprocessError(f"empty volume {a.shape}", hint="the series has no pixels")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise PreprocessError("volume has NaN or infinite values", hint="check the rescale slope/intercept")
    if volume.modality and volume.modality.upper() != "CT":
        warnings.append(f"lung mask: modality is {volume.modality}, not CT; HU thresholds may not apply")
    if abs(volume.direction[2, 2]) < 0.8:
        warnings.append("lung mask: slices are not axial; in-plane steps treat k as the slice axis")

    sx, sy, sz = volume.spacing_mm
    f = (max(1, int(round(cfg.coarse_slice_mm / sz))), max(1, int(round(cfg.coarse_inplane_mm / sy))),
         max(1, int(round(cfg.coarse_inplane_mm / sx))))
    hu = _block_mean(a, f)
    g = _Grid(volume, f, hu.shape)
    if not (hu < cfg.lung_hu).any():
        raise PreprocessError(f"no air-density voxels (< {cfg.lung_hu:.0f} HU) in the volume",
                              hint="is this CT in Hounsfield units (rescale applied)?")

    body = _body(hu, cfg, g)
    lung = _lung_candidates(hu, body, cfg, g, warnings)
    if not lung.any():
        raise PreprocessError("no lung found in the volume",
                              hint="the series must be a chest CT that shows the lungs")
    air = _airways(hu, lung, body, cfg, g, warnings)
    lung &= ~air
    # airway removal can leave small crumbs
    lab, n, sizes = _components(lung)
    if n:
        keep = sizes >= max(cfg.min_lung_component_ml / g.voxel_ml(), cfg.min_lung_fraction * sizes.max())
        keep[0] = False
        lung = keep[lab]
    if not lung.any():
        raise PreprocessError("no lung left after removing the airways",
                              hint="the series must be a chest CT that shows the lungs")
    labels_c = _split(lung, hu, body, cfg, g, warnings)

    # per-lung closing and hole filling (keeps juxtapleural nodules and vessels inside)
    r_mm = cfg.closing_radius_mm
    margin = (1, int(np.ceil(r_mm / g.sp_kji[1])) + 1, int(np.ceil(r_mm / g.sp_kji[2])) + 1)
    final = np.zeros_like(labels_c)
    for side in (RIGHT, LEFT):
        m = labels_c == side
        if not m.any():
            continue
        sl = _bbox(m, margin)
        sub = _closing_2d(m[sl], r_mm, g.sp_kji)
        if cfg.pleural_hull_depth_mm > 0:
            sub |= _lateral_hull_fill(m[sl], sl, side, cfg, g)  # bites of the unclosed lung
        if cfg.fill_holes_2d:
            sub = _fill_holes_2d(sub)
        other = (labels_c[sl] != 0) & (labels_c[sl] != side)
        sub &= body[sl] & ~other & ~air[sl] | m[sl]
        tgt = final[sl]
        tgt[sub & (tgt == 0)] = side
    labels_c = final

    # back to the native grid (nearest block)
    labels = _upsample(labels_c, f, a.shape)

    lobes = None
    if cfg.lobes.enabled:
        lobes_c = _approx_lobes(labels_c, g, cfg.lobes, warnings)
        if lobes_c is not None:
            lobes = _upsample(lobes_c, f, a.shape)
    for w in warnings:
        logger.info(w)
    return LungSegmentation(labels=labels, spacing_mm=volume.spacing_mm, lobes=lobes,
                            lobes_approximate=True, warnings=warnings)
