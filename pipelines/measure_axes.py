"""Planar and 3-D diameters of a lesion boundary, in millimetres.

The boundary of a lesion on one plane is a set of closed polygons in 2-D plane coordinates (mm). From it:

* the **long axis** is the greatest distance between two boundary points (the Feret diameter, what a
  reader's caliper gives; Bankier A.A. et al., "Recommendations for Measuring Pulmonary Nodules at CT: A
  Statement from the Fleischner Society", Radiology 2017;285:584-600);
* the **short axis** is the longest chord perpendicular to the long axis that lies inside the lesion
  (even-odd rule over all polygons, so holes and lobes are respected);
* the **maximum 3-D diameter** is the greatest distance between two surface points.

All functions work on physical coordinates, so anisotropic pixels and any direction matrix are handled by
the caller mapping voxel indices to mm first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, QhullError


@dataclass(frozen=True)
class PlanarAxes:
    """Long and short axis of one planar section, endpoints in 2-D plane coordinates (mm)."""

    long_mm: float
    short_mm: float
    long_endpoints: np.ndarray  # (2, 2)
    short_endpoints: np.ndarray  # (2, 2)


def _hull_points(points: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull (all points when too few or degenerate)."""
    if len(points) < points.shape[1] + 2:
        return points
    try:
        return points[ConvexHull(points).vertices]
    except QhullError:
        return points


def farthest_pair(points: np.ndarray, chunk: int = 1024) -> tuple[float, np.ndarray]:
    """Greatest distance between two of ``points`` (N, d) and the pair: (distance, (2, d) array)."""
    pts = np.unique(np.asarray(points, dtype=np.float64), axis=0)
    if len(pts) == 0:
        raise ValueError("no points")
    if len(pts) == 1:
        return 0.0, np.stack([pts[0], pts[0]])
    hull = _hull_points(pts)
    centre = hull.mean(axis=0)
    h = hull - centre  # centred: better conditioned squared distances
    sq = (h ** 2).sum(1)
    best, pair = -1.0, (0, 0)
    for start in range(0, len(h), chunk):
        d2 = sq[start:start + chunk, None] + sq[None, :] - 2.0 * (h[start:start + chunk] @ h.T)
        idx = int(np.argmax(d2))
        a, b = divmod(idx, len(h))
        if d2[a, b] > best:
            best, pair = float(d2[a, b]), (start + a, b)
    p0, p1 = hull[pair[0]], hull[pair[1]]
    return float(np.linalg.norm(p1 - p0)), np.stack([p0, p1])


def _edges(polygons: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    starts, ends = [], []
    for poly in polygons:
        if len(poly) < 2:
            continue
        closed = poly if np.allclose(poly[0], poly[-1]) else np.vstack([poly, poly[:1]])
        starts.append(closed[:-1])
        ends.append(closed[1:])
    if not starts:
        return np.zeros((0, 2)), np.zeros((0, 2))
    return np.concatenate(starts), np.concatenate(ends)


def longest_perpendicular_chord(
    polygons: list[np.ndarray], long_endpoints: np.ndarray, step_mm: float
) -> tuple[float, np.ndarray]:
    """Longest chord inside the polygons perpendicular to the segment ``long_endpoints``.

    Lines perpendicular to the long axis are laid every ``step_mm`` along it; each is cut by the
    polygon edges and the longest inside segment (even-odd rule) wins. Returns (length, (2, 2) endpoints).
    """
    p0, p1 = np.asarray(long_endpoints, dtype=np.float64)
    axis = p1 - p0
    length = float(np.linalg.norm(axis))
    a, b = _edges(polygons)
    if length == 0.0 or len(a) == 0:
        return 0.0, np.stack([p0, p0])
    u = axis / length
    v = np.array([-u[1], u[0]])
    ta, tb = (a - p0) @ u, (b - p0) @ u
    sa, sb = (a - p0) @ v, (b - p0) @ v
    n = max(int(np.ceil(length / step_mm)), 2)
    ts = np.linspace(0.0, length, n + 1)[1:-1]  # interior lines; the ends touch a single point
    if ts.size == 0:
        return 0.0, np.stack([p0, p0])
    best_len, best = 0.0, np.stack([p0, p0])
    dt = tb - ta
    for start in range(0, len(ts), 256):
        t = ts[start:start + 256][:, None]
        crosses = ((ta[None, :] <= t) & (tb[None, :] > t)) | ((tb[None, :] <= t) & (ta[None, :] > t))
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = (t - ta[None, :]) / dt[None, :]
        s = np.where(crosses, sa[None, :] + frac * (sb - sa)[None, :], np.nan)
        s.sort(axis=1)  # NaNs go last
        counts = crosses.sum(axis=1)
        max_pairs = int(counts.max()) // 2 if counts.size else 0
        if max_pairs == 0:
            continue
        lo = s[:, 0:2 * max_pairs:2]
        hi = s[:, 1:2 * max_pairs:2]
        seg = hi - lo
        seg = np.where(np.isnan(seg), -np.inf, seg)
        row_best = seg.max(axis=1)
        r = int(np.argmax(row_best))
        if row_best[r] > best_len:
            c = int(np.argmax(seg[r]))
            best_len = float(row_best[r])
            tt = float(ts[start + r])
            best = np.stack([p0 + tt * u + lo[r, c] * v, p0 + tt * u + hi[r, c] * v])
    return best_len, best


def planar_axes(polygons: list[np.ndarray], step_mm: float) -> PlanarAxes | None:
    """Long axis (Feret) and longest perpendicular chord of a planar section; ``None`` if empty."""
    polygons = [p for p in polygons if len(p) >= 2]
    if not polygons:
        return None
    pts = np.concatenate(polygons)
    long_mm, long_ends = farthest_pair(pts)
    short_mm, short_ends = longest_perpendicular_chord(polygons, long_ends, step_mm)
    return PlanarAxes(long_mm, short_mm, long_ends, short_ends)


def polygon_area(poly: np.ndarray) -> float:
    """Unsigned shoelace area of a closed polygon (mm²)."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
