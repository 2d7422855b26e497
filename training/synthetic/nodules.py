"""Nodules: analytic shapes, placement in the lung, partial-volume rendering and exact measurements.

A nodule is an implicit solid in patient space (LPS mm): an ellipsoid whose radius is modulated by smooth
lobes (lobulated), with optional tapering spicules (spiculated), optionally clipped by the lung surface
(juxtapleural), and for part-solid nodules a solid ellipsoidal core. The truth measurements are computed
on this analytic solid at fine resolution, following the Fleischner Society's measurement definitions
(Bankier AA et al., Radiology 2017;285:584): long axis and the longest perpendicular short axis on the
axial slice where the nodule is largest, mean diameter = (long + short) / 2, and volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from training.synthetic.phantom import Anatomy
from training.synthetic.vessels import Segments


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@dataclass
class NoduleShape:
    """An analytic nodule. ``rot`` columns are the shape's axes in LPS; ``axes`` its semi-axes (mm)."""

    center: np.ndarray  # LPS mm (construction centre; the truth centre is the solid's centroid)
    rot: np.ndarray
    axes: np.ndarray
    lobes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))  # dir(3), amplitude, sharpness
    spikes: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))  # dir(3), start, end, base radius
    core_center: np.ndarray | None = None  # local (shape frame) offset of the solid core
    core_axes: np.ndarray | None = None
    clip: Anatomy | None = None  # juxtapleural: keep only the part inside the lung

    def extent(self) -> float:
        """Radius (mm) of a sphere about ``center`` that contains the solid."""
        r = float(self.axes.max()) * (1.0 + float(np.clip(self.lobes[:, 3], 0, None).sum()))
        if len(self.spikes):
            r = max(r, float(self.spikes[:, 4].max()) + float(self.spikes[:, 5].max()))
        return r + 0.1

    def _local(self, q: np.ndarray) -> np.ndarray:
        return (q - self.center) @ self.rot

    def inside(self, q: np.ndarray) -> np.ndarray:
        """Boolean occupancy of the outer solid at LPS points ``q`` (..., 3)."""
        u = self._local(q)
        n = np.sqrt((u * u).sum(-1)) + 1e-9
        s = np.sqrt(((u / self.axes) ** 2).sum(-1))
        rmod = np.ones_like(s)
        for lb in self.lobes:
            cosang = (u @ lb[:3]) / n
            rmod = rmod + lb[3] * np.exp(lb[4] * (cosang - 1.0))
        ins = s <= rmod
        for sp in self.spikes:
            d = sp[:3]
            t = np.clip(((u @ d) - sp[3]) / (sp[4] - sp[3]), 0.0, 1.0)
            c = (sp[3] + t * (sp[4] - sp[3]))[..., None] * d
            dist = np.sqrt(((u - c) ** 2).sum(-1))
            ins |= dist <= sp[5] * (1.0 - t) + 0.05
        if self.clip is not None and ins.any():
            sel = np.nonzero(ins)
            ins[sel] = self.clip.lung_sd_at(q[sel]) > 0
        return ins

    def inside_core(self, q: np.ndarray) -> np.ndarray:
        if self.core_axes is None:
            return np.zeros(q.shape[:-1], bool)
        u = self._local(q) - self.core_center
        return ((u / self.core_axes) ** 2).sum(-1) <= 1.0

    def core_shape(self) -> "NoduleShape | None":
        if self.core_axes is None:
            return None
        return NoduleShape(center=self.center + self.rot @ self.core_center, rot=self.rot, axes=self.core_axes)


def make_shape(rng: np.random.Generator, shape: str, diameter: float, center: np.ndarray,
               composition: str, solid_fraction: float | None = None) -> NoduleShape:
    """A nodule of nominal equivalent-sphere ``diameter`` (mm) and the given shape class."""
    R = diameter / 2.0
    if shape == "round":
        ratios = np.array([1.0, rng.uniform(0.94, 1.0), rng.uniform(0.94, 1.0)])
        rot = np.eye(3)
    else:
        ratios = np.array([1.0, rng.uniform(0.6, 0.85), rng.uniform(0.6, 0.9)]) if shape == "oval" \
            else np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0)])
        rot = _rotation(rng)
    axes = R * ratios / np.prod(ratios) ** (1.0 / 3.0)
    lobes = np.zeros((0, 5))
    spikes = np.zeros((0, 6))
    if shape == "lobulated":
        k = int(rng.integers(3, 6))
        lobes = np.column_stack([_unit(rng, k), rng.uniform(0.12, 0.25, k), rng.uniform(3.0, 6.0, k)])
        axes = axes / (1.0 + 0.08 * k * 0.2)
    elif shape == "spiculated":
        k = int(rng.integers(2, 4))
        lobes = np.column_stack([_unit(rng, k), rng.uniform(0.05, 0.12, k), rng.uniform(3.0, 6.0, k)])
        m = int(rng.integers(6, 12))
        dirs = _unit(rng, m)
        base_r = np.clip(0.12 * R, 0.35, 1.2) * rng.uniform(0.8, 1.2, m)
        start = 0.75 * R * np.ones(m)
        end = R * rng.uniform(1.25, 1.6, m)
        spikes = np.column_stack([dirs, start, end, base_r])
    core_center = core_axes = None
    if composition == "part-solid":
        f = solid_fraction if solid_fraction is not None else rng.uniform(0.3, 0.65)
        core_axes = axes.min() * f * np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0)])
        core_center = rng.uniform(-0.15, 0.15, 3) * axes.min()
    return NoduleShape(center=np.asarray(center, float), rot=rot, axes=axes, lobes=lobes, spikes=spikes,
                       core_center=core_center, core_axes=core_axes)


# ---- measurements ------------------------------------------------------------------------------------------

def _feret_2d(pts: np.ndarray) -> tuple[float, np.ndarray]:
    """Longest distance between two of the 2-D points and its unit direction."""
    if len(pts) < 2:
        return 0.0, np.array([1.0, 0.0])
    try:
        hull = pts[ConvexHull(pts).vertices] if len(pts) >= 4 else pts
    except QhullError:
        hull = pts
    d = hull[:, None, :] - hull[None, :, :]
    dd = (d * d).sum(-1)
    a, b = np.unravel_index(np.argmax(dd), dd.shape)
    L = float(np.sqrt(dd[a, b]))
    v = (hull[a] - hull[b]) / (L + 1e-12)
    return L, v


def _axes_2d(pts: np.ndarray, h: float) -> tuple[float, float]:
    """Long axis and longest perpendicular short axis (mm) of a 2-D pixel set with pixel size ``h``."""
    L, v = _feret_2d(pts)
    if L == 0.0:
        return (h, h) if len(pts) else (0.0, 0.0)
    w = np.array([-v[1], v[0]])
    a = pts @ v
    b = pts @ w
    bins = np.floor((a - a.min()) / h).astype(int)
    order = np.argsort(bins, kind="stable")
    bins, b = bins[order], b[order]
    starts = np.r_[0, np.nonzero(np.diff(bins))[0] + 1]
    S = float(np.max(np.maximum.reduceat(b, starts) - np.minimum.reduceat(b, starts))) + h
    return L + h, S


def measure(shape: NoduleShape, n3: int = 56, n2: int = 256, core: bool = False) -> dict:
    """Truth measurements of ``shape`` from its analytic solid (mm, mm³, LPS)."""
    fn = shape.inside_core if core else shape.inside
    ext = shape.extent() if not core else float(np.max(shape.core_axes)) + np.abs(shape.core_center).max() + 0.1
    h = 2.0 * ext / n3
    g = (np.arange(n3) + 0.5) * h - ext
    c = shape.center
    Z, Y, X = np.meshgrid(g + c[2], g + c[1], g + c[0], indexing="ij")
    q = np.stack([X, Y, Z], -1)
    ins = fn(q)
    n_in = int(ins.sum())
    if n_in == 0:
        return {"volume_mm3": 0.0, "long_axis_mm": 0.0, "short_axis_mm": 0.0, "mean_diameter_mm": 0.0,
                "max_3d_diameter_mm": 0.0, "center_mm": c.tolist(), "axial_z_mm": float(c[2])}
    volume = n_in * h ** 3
    pts = q[ins]
    centroid = pts.mean(0)
    # max 3-D diameter from the hull of the inside cell centres (+ one cell)
    try:
        hull = pts[ConvexHull(pts).vertices]
    except QhullError:
        hull = pts
    dd = ((hull[:, None, :] - hull[None, :, :]) ** 2).sum(-1)
    d3 = float(np.sqrt(dd.max())) + h
    # coarse long axis per axial plane, then refine the best planes on a fine 2-D grid
    ang = np.linspace(0.0, np.pi, 36, endpoint=False)
    dirs = np.stack([np.cos(ang), np.sin(ang)])  # (2, 36)
    proj = pts[:, :2] @ dirs
    kidx = np.floor((pts[:, 2] - (c[2] - ext)) / h + 0.5).astype(int)  # pts are ordered by z (meshgrid "ij")
    starts = np.r_[0, np.nonzero(np.diff(kidx))[0] + 1]
    width = (np.maximum.reduceat(proj, starts, axis=0) - np.minimum.reduceat(proj, starts, axis=0)).max(1)
    best = int(kidx[starts[int(np.argmax(width))]])
    h2 = 2.0 * ext / n2
    # refine on a fine grid over the planes' extent (the coarse inside cells near the best plane, + 2 cells)
    near = np.abs(pts[:, 2] - (g[best] + c[2])) <= 1.5 * h
    lo = pts[near, :2].min(0) - 2.0 * h
    hi = pts[near, :2].max(0) + 2.0 * h
    gx = np.arange(lo[0] + h2 / 2, hi[0], h2)
    gy = np.arange(lo[1] + h2 / 2, hi[1], h2)
    Y2, X2 = np.meshgrid(gy, gx, indexing="ij")
    result = (0.0, 0.0, float(g[best] + c[2]))
    for zz in g[best] + c[2] + np.linspace(-h, h, 3):
        q2 = np.stack([X2, Y2, np.full_like(X2, zz)], -1)
        m2 = fn(q2)
        if not m2.any():
            continue
        L, S = _axes_2d(np.stack([X2[m2], Y2[m2]], -1), h2)
        if L > result[0]:
            result = (L, S, float(zz))
    L, S, zbest = result
    return {
        "volume_mm3": float(volume), "long_axis_mm": float(L), "short_axis_mm": float(S),
        "mean_diameter_mm": float((L + S) / 2.0), "max_3d_diameter_mm": d3,
        "center_mm": centroid.tolist(), "axial_z_mm": zbest, "grid_mm": float(h), "grid2d_mm": float(h2),
    }


# ---- rendering ---------------------------------------------------------------------------------------------

def render_occupancy(shape: NoduleShape, origin: np.ndarray, spacing: np.ndarray, shape_kji: tuple,
                     s_xy: int = 3, s_z: int = 4):
    """Partial-volume occupancy of the outer solid and the core in the nodule's voxel box.

    Returns ``(slices, occ, occ_core)`` where ``slices`` index the output volume [k, j, i]. Each output
    voxel averages ``s_z × s_xy × s_xy`` samples spread over its footprint (slice thickness along z).
    """
    ext = shape.extent()
    lo = np.floor((shape.center - ext - origin) / spacing).astype(int) - 1
    hi = np.ceil((shape.center + ext - origin) / spacing).astype(int) + 2
    nk, nj, ni = shape_kji
    lo = np.clip(lo, 0, [ni, nj, nk])
    hi = np.clip(hi, 0, [ni, nj, nk])
    (i0, j0, k0), (i1, j1, k1) = lo, hi
    if i1 <= i0 or j1 <= j0 or k1 <= k0:
        return None, None, None
    sx, sy, sz = spacing

    def axis(o, s, a, b, m):
        sub = ((np.arange(m) + 0.5) / m - 0.5) * s
        return ((o + s * np.arange(a, b))[:, None] + sub[None, :]).ravel()

    xs = axis(origin[0], sx, i0, i1, s_xy)
    ys = axis(origin[1], sy, j0, j1, s_xy)
    zs = axis(origin[2], sz, k0, k1, s_z)
    Z, Y, X = np.meshgrid(zs, ys, xs, indexing="ij")
    q = np.stack([X, Y, Z], -1)
    shp = (k1 - k0, s_z, j1 - j0, s_xy, i1 - i0, s_xy)
    occ = shape.inside(q).reshape(shp).mean((1, 3, 5)).astype(np.float32)
    core = None
    if shape.core_axes is not None:
        core = shape.inside_core(q).reshape(shp).mean((1, 3, 5)).astype(np.float32)
        core = np.minimum(core, occ)
    return (slice(k0, k1), slice(j0, j1), slice(i0, i1)), occ, core


# ---- placement ---------------------------------------------------------------------------------------------

def place(anat: Anatomy, vessels: Segments, rng: np.random.Generator, placement: str, radius: float,
          taken: list[tuple[np.ndarray, float]], side: int | None = None,
          bounds: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, int] | None:
    """A centre (LPS) for a nodule of ``radius`` mm with the requested relation to vessels and pleura, inside
    the box ``bounds`` (the scanned field of view, shrunk by the nodule's size) when given."""
    from training.synthetic.vessels import sample_lung_points

    def free(c, r):
        if bounds is not None and (np.any(c < bounds[0]) or np.any(c > bounds[1])):
            return False
        return all(np.linalg.norm(c - c2) > r + r2 + 4.0 for c2, r2 in taken)

    sides = [side] if side else [int(rng.integers(1, 3))]
    sides.append(3 - sides[0])
    for sd in sides:
        if placement == "central":
            cand = sample_lung_points(anat, rng, sd, 80, margin=radius + 5.0, bounds=bounds)
            for c in cand:
                dist, rv = vessels.distance(c)
                if np.all(dist - rv > radius + 1.0) and free(c, radius):
                    return c, sd
            for c in cand:  # dense vessel trees: accept touching small vessels
                if free(c, radius):
                    return c, sd
        elif placement == "juxtavascular":
            mid = 0.5 * (vessels.p0 + vessels.p1)
            inb = np.ones(len(mid), bool) if bounds is None else np.all((mid > bounds[0]) & (mid < bounds[1]), axis=1)
            ok = np.where((vessels.r1 >= 0.9) & (vessels.r1 <= 4.0) & inb
                          & (anat.lung_side_at(mid, radius + 4.0) == sd))[0]
            rng.shuffle(ok)
            for s in ok[:80]:
                t = rng.uniform(0.2, 0.8)
                p = vessels.p0[s] + t * (vessels.p1[s] - vessels.p0[s])
                d = vessels.p1[s] - vessels.p0[s]
                d /= np.linalg.norm(d) + 1e-9
                v = rng.normal(size=3)
                v -= (v @ d) * d
                v /= np.linalg.norm(v) + 1e-9
                rv = vessels.r0[s] + t * (vessels.r1[s] - vessels.r0[s])
                c = p + v * (rv + 0.8 * radius)
                if anat.lung_sd_at(c[None])[0] > radius + 2.0 and free(c, radius):
                    return c, sd
        elif placement == "juxtapleural":
            starts = sample_lung_points(anat, rng, sd, 80, margin=radius + 6.0, bounds=bounds)
            body = np.array([anat.bx, anat.by])
            for p in starts:
                d = np.array([p[0] - body[0], (p[1] - body[1]) * 1.2, 0.0])
                d[:2] += rng.normal(scale=0.25 * np.linalg.norm(d[:2]), size=2)
                d /= np.linalg.norm(d) + 1e-9
                steps = np.arange(0.0, 160.0, 0.5)
                ray = p[None, :] + steps[:, None] * d[None, :]
                sdv = anat.lung_sd_at(ray)
                out = np.where(sdv <= 0)[0]
                if len(out) == 0:
                    continue
                b = ray[out[0]]
                # the wall must be chest wall (not mediastinum): far enough from the midline
                if abs(b[0] - anat.bx - anat.xm) < anat.w_med + 25.0:
                    continue
                c = b - d * (0.7 * radius)
                if anat.lung_sd_at(c[None])[0] > 0.3 * radius and free(c, radius):
                    return c, sd
        else:
            raise ValueError(f"unknown placement {placement!r}")
    return None
