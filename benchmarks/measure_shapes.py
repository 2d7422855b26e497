"""Analytic lesions (ellipsoids and lobulated star shapes) with exact measurements, and their CT rasterisation.

A shape is star-shaped about its centre: in its body frame (rotation ``R``), the boundary along the unit
direction ``d`` lies at ``t(d) = g(d) / rho(d)`` with ``rho(d) = |d / semi_axes|`` (ellipsoid) and
``g(d) = 1 + sum_m A_m exp((d . w_m - 1) / kappa_m)`` (lobulation bumps; none for an ellipsoid).
Truth is computed from the implicit function, not from voxels: the volume by quadrature over the sphere,
the maximum 3-D diameter from dense boundary points, and the axial long/short axes from a fine
(0.2 mm) marching-squares section of the smooth implicit function with the same caliper definitions as
``pipelines.measure_axes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation
from skimage.measure import find_contours

from pipelines.measure_axes import farthest_pair, planar_axes, polygon_area
from pipelines.types import Volume


def fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5 ** 0.5) * i
    return np.column_stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)])


@dataclass
class Shape:
    center_mm: np.ndarray  # LPS
    rotation: np.ndarray  # 3x3, body → LPS
    semi_axes_mm: np.ndarray  # (3,)
    bumps_w: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    bumps_a: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bumps_kappa: np.ndarray = field(default_factory=lambda: np.zeros(0))
    kind: str = "ellipsoid"

    def implicit(self, p_mm: np.ndarray) -> np.ndarray:
        """< 0 inside, 0 on the boundary, > 0 outside (smooth away from the centre). p_mm: (..., 3) LPS."""
        q = (np.asarray(p_mm) - self.center_mm) @ self.rotation  # body frame
        rho = np.sqrt(((q / self.semi_axes_mm) ** 2).sum(-1))
        return rho - self._g(q)

    def _g(self, q: np.ndarray) -> np.ndarray:
        if len(self.bumps_a) == 0:
            return np.ones(q.shape[:-1])
        n = np.linalg.norm(q, axis=-1, keepdims=True)
        d = q / np.maximum(n, 1e-12)
        return 1.0 + (self.bumps_a * np.exp((d @ self.bumps_w.T - 1.0) / self.bumps_kappa)).sum(-1)

    def radius(self, d_body: np.ndarray) -> np.ndarray:
        rho = np.sqrt(((d_body / self.semi_axes_mm) ** 2).sum(-1))
        return self._g(d_body) / rho

    def bounding_radius(self) -> float:
        if not hasattr(self, "_rmax"):
            d = fibonacci_sphere(4000)
            self._rmax = float(self.radius(d).max()) * 1.02 + 0.1
        return self._rmax

    def volume_mm3(self, n: int = 200_000) -> float:
        d = fibonacci_sphere(n)
        return float(4 * np.pi * np.mean(self.radius(d) ** 3) / 3)

    def max_3d_diameter_mm(self, n: int = 3000) -> float:
        """Farthest pair of boundary points: coarse over ``n`` directions, then dense near the two ends."""
        d = fibonacci_sphere(n)
        pts = d * self.radius(d)[:, None]
        best, ends = farthest_pair(pts)
        caps = []
        dense = fibonacci_sphere(200_000)
        for e in ends:
            u = e / np.linalg.norm(e)
            near = dense[dense @ u > np.cos(0.12)]
            caps.append(near * self.radius(near)[:, None])
        a, b = caps
        sa, sb = (a ** 2).sum(1), (b ** 2).sum(1)
        d2 = sa[:, None] + sb[None, :] - 2 * a @ b.T
        return max(best, float(np.sqrt(max(d2.max(), 0.0))))

    def axial_section(self, z: float, h: float = 0.2, long_only: bool = False):
        """Long/short axis (mm) and area of the exact section at LPS z (None if the plane misses it)."""
        r = self.bounding_radius()
        xs = self.center_mm[0] + np.arange(-r, r + h, h)
        ys = self.center_mm[1] + np.arange(-r, r + h, h)
        X, Y = np.meshgrid(xs, ys, indexing="ij")
        P = np.stack([X, Y, np.full_like(X, z)], -1)
        F = self.implicit(P)
        if F.min() >= 0:
            return None
        polys = [np.column_stack([xs[0] + c[:, 0] * h, ys[0] + c[:, 1] * h]) for c in find_contours(F, 0.0)]
        if long_only:
            return farthest_pair(np.concatenate(polys))[0], None, None
        ax = planar_axes(polys, 0.05)
        if ax is None:
            return None
        return ax.long_mm, ax.short_mm, sum(polygon_area(p) for p in polys)

    def largest_axial_section(self, dz: float = 0.1):
        """(z, long, short) of the axial section with the greatest long axis (coarse scan, then fine)."""
        r = self.bounding_radius()
        zc = self.center_mm[2]
        best = None
        for z in np.arange(zc - r, zc + r, 0.5):
            s = self.axial_section(z, h=0.4, long_only=True)
            if s and (best is None or s[0] > best[1]):
                best = (z, s[0])
        if best is None:
            raise ValueError("shape has no axial section")
        fine = None
        for z in np.arange(best[0] - 0.6, best[0] + 0.6 + 1e-9, dz):
            s = self.axial_section(z, long_only=True)
            if s and (fine is None or s[0] > fine[1]):
                fine = (float(z), s[0])
        long_mm, short_mm, _ = self.axial_section(fine[0])
        return fine[0], long_mm, short_mm


def random_shape(rng: np.random.Generator, kind: str, diameter_mm: float) -> Shape:
    """A randomly rotated ellipsoid or lobulated shape whose largest semi-axis is about diameter/2."""
    a = diameter_mm / 2
    semi = np.array([a, a * rng.uniform(0.6, 1.0), a * rng.uniform(0.6, 1.0)])
    rot = Rotation.random(random_state=rng).as_matrix()
    center = rng.uniform(-5, 5, 3)
    if kind == "ellipsoid":
        return Shape(center, rot, semi, kind=kind)
    m = int(rng.integers(3, 7))
    w = rng.normal(size=(m, 3))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    amp = rng.uniform(0.08, 0.25, m)
    kappa = rng.uniform(0.15, 0.35, m)  # lobules some mm wide (lobulated, not spiculated)
    semi = semi / (1 + amp.max())  # keep the overall size near the requested diameter
    return Shape(center, rot, semi, w, amp, kappa, kind="lobulated")


@dataclass
class CTSettings:
    lesion_hu: float = 40.0
    background_hu: float = -850.0
    psf_sigma_mm: float = 0.4  # in-plane blur of the scanner (FWHM ~0.95 mm)
    noise_hu: float = 20.0


def rasterise(shape: Shape, inplane_mm: float, slice_mm: float, rng: np.random.Generator,
              ct: CTSettings | None = None, in_plane_angle: float | None = None, sub_xy: int = 4,
              sub_z_mm: float = 0.25):
    """CT-like volume of the shape: occupancy by supersampling each voxel (slab of the slice thickness),
    mask = occupancy >= 0.5 (what a segmentation would mark), HU = mix of lesion and background, in-plane
    PSF blur and noise. The image axes are rotated in-plane by ``in_plane_angle`` (random if None) and
    flipped at random, so direction matrices other than identity are exercised. Returns (Volume, mask, occ).
    """
    ct = ct or CTSettings()
    ang = rng.uniform(0, 2 * np.pi) if in_plane_angle is None else in_plane_angle
    c, s = np.cos(ang), np.sin(ang)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    if rng.random() < 0.5:
        direction[:, 1] *= -1  # left-handed in-plane (flipped rows)
        direction[:, 2] *= -1  # keep... k towards feet, as some scanners store slices
    spacing = np.array([inplane_mm, inplane_mm, slice_mm])
    r = shape.bounding_radius()
    n = np.ceil(2 * (r + 3 * spacing) / spacing).astype(int) + 1  # (ni, nj, nk)
    lin = direction @ np.diag(spacing)
    jitter = rng.uniform(-0.5, 0.5, 3)
    center_idx = (n - 1) / 2 + jitter
    origin = shape.center_mm - lin @ center_idx
    nz = max(2, int(np.ceil(slice_mm / sub_z_mm)))
    offs_xy = (np.arange(sub_xy) + 0.5) / sub_xy - 0.5
    offs_z = (np.arange(nz) + 0.5) / nz - 0.5
    occ = np.zeros((n[2], n[1], n[0]), dtype=np.float32)
    ii, jj = np.meshgrid(np.arange(n[0]), np.arange(n[1]), indexing="xy")  # [j, i]
    # F grows at least like distance / (largest radius) near the boundary and at most like
    # (1 + lobulation slope) / (smallest semi-axis): only voxels within that reach are supersampled.
    half_diag = 0.5 * float(np.linalg.norm(spacing))
    slope = (1.0 + float(np.sum(shape.bumps_a / np.sqrt(shape.bumps_kappa)))) / float(shape.semi_axes_mm.min())
    reach = 2.0 * half_diag * slope
    for k in range(n[2]):
        centre = np.stack([ii, jj, np.full_like(ii, k)], -1).astype(float) @ lin.T + origin
        f0 = shape.implicit(centre)
        occ[k] = f0 <= -reach
        band = np.abs(f0) < reach
        if not band.any():
            continue
        bi, bj = ii[band].astype(float), jj[band].astype(float)
        acc = np.zeros(bi.shape, dtype=np.float32)
        for dz in offs_z:
            for dy in offs_xy:
                for dx in offs_xy:
                    idx = np.column_stack([bi + dx, bj + dy, np.full_like(bi, k + dz)])
                    acc += shape.implicit(idx @ lin.T + origin) <= 0
        occ[k][band] = acc / (nz * sub_xy * sub_xy)
    mask = occ >= 0.5
    hu = ct.background_hu + occ * (ct.lesion_hu - ct.background_hu)
    if ct.psf_sigma_mm > 0:
        hu = ndimage.gaussian_filter(hu, sigma=(0.0, ct.psf_sigma_mm / inplane_mm, ct.psf_sigma_mm / inplane_mm))
    if ct.noise_hu > 0:
        hu = hu + rng.normal(0, ct.noise_hu, hu.shape)
    vol = Volume(array=hu.astype(np.float32), spacing_mm=tuple(spacing), origin_mm=tuple(origin),
                 direction=direction, instance_numbers=list(range(1, n[2] + 1)))
    return vol, mask, occ
