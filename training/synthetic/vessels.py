"""Branching, tapering vessel and airway trees that fill each lung, and their partial-volume rendering.

A tree grows from a hilum towards a cloud of attractor points sampled inside the lung: each branch owns a
subset of the points, splits it in two along its principal axis, and sends one child towards each half's
centroid. Radii follow Murray's law with flow proportional to the points served (r_child = r (n_child /
n)^(1/3)), so branches taper from ~7 mm at the hilum to ~0.7 mm at the periphery. Airways follow the
arterial tree (bronchovascular bundles) down to ~1 mm lumen radius.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synthetic.phantom import Anatomy


@dataclass
class Segments:
    """Tapered capsules: ``p0, p1`` (N, 3) LPS mm, radii ``r0, r1`` (N,) mm, ``gen`` generation."""

    p0: np.ndarray
    p1: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    gen: np.ndarray

    @classmethod
    def empty(cls) -> "Segments":
        z = np.zeros((0, 3))
        return cls(z, z.copy(), np.zeros(0), np.zeros(0), np.zeros(0, int))

    @classmethod
    def cat(cls, parts: list["Segments"]) -> "Segments":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("p0", "p1", "r0", "r1", "gen")))

    def __len__(self) -> int:
        return len(self.r0)

    def distance(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance from point ``q`` (3,) to each segment's axis and the radius there."""
        d = self.p1 - self.p0
        L2 = np.maximum((d * d).sum(1), 1e-9)
        t = np.clip(((q - self.p0) * d).sum(1) / L2, 0.0, 1.0)
        c = self.p0 + t[:, None] * d
        return np.linalg.norm(q - c, axis=1), self.r0 + t * (self.r1 - self.r0)


def sample_lung_points(anat: Anatomy, rng: np.random.Generator, side: int, n: int, margin: float,
                       bounds: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Up to ``n`` random LPS points inside lung ``side`` (1 right, 2 left), at least ``margin`` mm from its
    surface, inside the box ``bounds`` (lo, hi) when given."""
    out = []
    got = 0
    lo = np.array([anat.bx - anat.a0, anat.by - anat.b0, anat.z0 - 5.0])
    hi = np.array([anat.bx + anat.a0, anat.by + anat.b0, anat.z0 + anat.H])
    if bounds is not None:
        lo, hi = np.maximum(lo, bounds[0]), np.minimum(hi, bounds[1])
        if np.any(hi <= lo):
            return np.zeros((0, 3))
    for _ in range(40):
        cand = rng.uniform(lo, hi, size=(max(4 * n, 2000), 3))
        keep = cand[anat.lung_side_at(cand, margin) == side]
        out.append(keep)
        got += len(keep)
        if got >= n:
            break
    return np.concatenate(out)[:n]


def grow_tree(anat: Anatomy, rng: np.random.Generator, start: np.ndarray, hilum: np.ndarray,
              points: np.ndarray, r_root: float, side: int) -> tuple[Segments, list]:
    """Grow one tree from ``start`` through ``hilum`` into ``points``, one generation at a time.

    Returns the segments and, per segment, the index of its parent segment (-1 for the root).
    """
    P0, P1, R0, R1, G, parents = [start], [hilum], [r_root * 1.1], [r_root], [0], [-1]
    frontier = [(hilum, np.arange(len(points)), r_root, 0)]
    gen = 1
    while frontier:
        props = []  # (pos, end direction, L, sub, rc, r, parent)
        for pos, idx, r, parent in frontier:
            pts = points[idx]
            n = len(idx)
            if n <= 2:
                for p in pts[:2]:
                    P0.append(pos); P1.append(p); R0.append(r * 0.9); R1.append(r * 0.75); G.append(gen)
                    parents.append(parent)
                continue
            c = pts.mean(0)
            X = pts - c
            cov = X.T @ X
            v = rng.normal(size=3)
            for _ in range(6):
                v = cov @ v
                v /= np.linalg.norm(v) + 1e-12
            order = np.argsort(X @ v)
            cut = int(np.clip(round(n * rng.uniform(0.3, 0.7)), 1, n - 1))
            for sub in (idx[order[:cut]], idx[order[cut:]]):
                d = points[sub].mean(0) - pos
                dist = float(np.linalg.norm(d))
                if dist < 1e-6:
                    continue
                rc = r * (len(sub) / n) ** (1.0 / 2.7)
                # segment length ~ 7 radii (length/diameter ~3.5 in pulmonary arterial trees), so wide vessels
                # stay near the hilum and the thin ones fan out to the periphery
                L = min(dist * rng.uniform(0.5, 0.8), 7.0 * rc * rng.uniform(0.8, 1.3))
                L = max(L, min(dist, 3.0 * rc))
                props.append((pos, d / dist, L, sub, rc, r, parent))
        if not props:
            break
        pos = np.array([p[0] for p in props])
        dirs = np.array([p[1] for p in props])
        L = np.array([p[2] for p in props])
        if gen >= 2:  # keep branches inside the lung: shorten towards the parent where needed
            for _ in range(4):
                bad = anat.lung_side_at(pos + dirs * L[:, None], 0.5) != side
                if not bad.any():
                    break
                L = np.where(bad, L * 0.6, L)
        ends = pos + dirs * L[:, None]
        frontier = []
        for (p, _, _, sub, rc, r, parent), e in zip(props, ends):
            P0.append(p); P1.append(e); R0.append(min(r, rc * 1.08)); R1.append(rc); G.append(gen)
            parents.append(parent)
            frontier.append((e, sub, rc, len(P0) - 1))
        gen += 1
    seg = Segments(np.array(P0), np.array(P1), np.array(R0), np.array(R1), np.array(G))
    return seg, parents


def airways_from(arteries: Segments, nodes: list, min_r: float, up: np.ndarray) -> Segments:
    """Bronchi beside the arteries: same topology, node positions offset sideways, lumen radius ~ artery."""
    keep = np.where((arteries.r1 >= min_r) & (arteries.gen >= 1))[0]
    if len(keep) == 0:
        return Segments.empty()
    d = arteries.p1 - arteries.p0
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
    perp = up[None, :] - (d @ up)[:, None] * d
    perp /= np.linalg.norm(perp, axis=1, keepdims=True) + 1e-9
    off = (arteries.r1 * 2.0 + 0.8)[:, None] * perp  # offset of each segment's end node
    p1 = arteries.p1 + off
    par = np.array(nodes)
    p0 = np.where((par >= 0)[:, None], p1[np.maximum(par, 0)], arteries.p0)
    # first in-lung generation starts at the hilum, not offset
    p0 = np.where((arteries.gen == 1)[:, None], arteries.p0 + off * 0.3, p0)
    sel = keep
    return Segments(p0[sel], p1[sel], arteries.r0[sel] * 0.95, arteries.r1[sel] * 0.95, arteries.gen[sel])


def build_trees(anat: Anatomy, rng: np.random.Generator, n_points: int) -> tuple[Segments, Segments, Segments]:
    """Vessel segments (arteries + veins), airway lumen segments, and the same airways' outer walls."""
    s = anat.a0 / 155.0
    L = np.array([anat.bx, anat.by, anat.z0])
    yv = anat.spine_y()
    zc = anat.z_carina
    tr_y = yv - anat.r_vb - 21.0 * s
    pa_bif = L + [anat.xm + 8.0 * s, -0.12 * anat.b0, zc - 12.0]
    la = L + [anat.xm + 5.0 * s, yv - anat.r_vb - 30.0 * s, anat.heart_c[2] + 0.35 * anat.heart_ax[2]]
    vessels, lumens, walls = [], [], []
    carina = L + [anat.xm, tr_y, zc]
    top = L + [anat.xm, tr_y, anat.H + 60.0]
    lumens.append(Segments(top[None], carina[None], np.array([8.5 * s]), np.array([8.0 * s]), np.array([0])))
    for side in (1, 2):
        sg = -1.0 if side == 1 else 1.0
        hil_a = L + [anat.xm + sg * (anat.w_med + 28.0 * s), -0.02 * anat.b0, zc - 18.0 - 4.0 * (side == 1)]
        hil_v = L + [anat.xm + sg * (anat.w_med + 25.0 * s), 0.05 * anat.b0, zc - 45.0]
        hil_b = hil_a + [0.0, 8.0 * s, 6.0]
        pts_a = sample_lung_points(anat, rng, side, n_points, margin=4.0)
        pts_v = sample_lung_points(anat, rng, side, n_points, margin=4.0)
        art, nodes = grow_tree(anat, rng, pa_bif, hil_a, pts_a, 7.0 * s, side)
        vein, _ = grow_tree(anat, rng, la, hil_v, pts_v, 6.5 * s, side)
        vessels += [art, vein]
        main_b = Segments(carina[None], hil_b[None], np.array([6.5 * s]), np.array([5.5 * s]), np.array([0]))
        up = np.array([0.0, -0.6, 0.8]) / 1.0
        aw = airways_from(art, nodes, min_r=1.5, up=up / np.linalg.norm(up))
        # connect the first in-lung generation to the main bronchus end
        first = aw.gen == 1
        aw.p0[first] = hil_b
        lumens += [main_b, aw]
    lum = Segments.cat(lumens)
    # bronchial wall thickness ~ 0.2 of the lumen radius (plus a constant for the smallest bronchi)
    walls = Segments(lum.p0, lum.p1, lum.r0 * 1.2 + 0.25, lum.r1 * 1.2 + 0.25, lum.gen)
    return Segments.cat(vessels), lum, walls


def _split(seg: Segments, px: float, sz: float) -> Segments:
    """Cut long capsules into pieces about 3 radii (at least 3 voxels) long, so their boxes stay tight."""
    L = np.linalg.norm(seg.p1 - seg.p0, axis=1)
    target = np.maximum(3.0 * np.maximum(seg.r0, seg.r1), 3.0 * max(px, sz))
    n = np.maximum(1, np.ceil(L / target).astype(int))
    if n.max() == 1:
        return seg
    idx = np.repeat(np.arange(len(seg)), n)
    start = np.repeat(np.cumsum(n) - n, n)
    piece = np.arange(len(idx)) - start
    f0 = (piece / n[idx])[:, None]
    f1 = ((piece + 1) / n[idx])[:, None]
    d = seg.p1 - seg.p0
    p0 = seg.p0[idx] + f0 * d[idx]
    p1 = seg.p0[idx] + f1 * d[idx]
    dr = (seg.r1 - seg.r0)[idx]
    return Segments(p0, p1, seg.r0[idx] + f0[:, 0] * dr, seg.r0[idx] + f1[:, 0] * dr, seg.gen[idx])


_PAD = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192,
                 224, 256, 320, 384, 448, 512, 640, 768, 1024, 2048, 4096])


def render_segments(vol: np.ndarray, seg: Segments, origin: np.ndarray, spacing: np.ndarray,
                    m_z: int, max_elems: int = 1 << 21) -> None:
    """Max-composite the partial-volume occupancy of each capsule into ``vol`` (uint8 0..255, [k, j, i]).

    In-plane the occupancy is a one-pixel ramp on the distance to the capsule surface (capsules thinner
    than a pixel keep their cross-section area); along z each output slice averages ``m_z`` sub-slices
    spread over its thickness (the slice sensitivity profile of a contiguous reconstruction). Capsules are
    evaluated in batches of equal (padded) box size.
    """
    if len(seg) == 0:
        return
    nk, nj, ni = vol.shape
    sx, sy, sz = (float(v) for v in spacing)
    px = float(min(sx, sy))
    seg = _split(seg, px, sz)
    sub = (((np.arange(m_z) + 0.5) / m_z - 0.5) * sz).astype(np.float32)
    rmax = np.maximum(seg.r0, seg.r1)[:, None]
    lo_all = np.minimum(seg.p0, seg.p1) - rmax - px
    hi_all = np.maximum(seg.p0, seg.p1) + rmax + px
    shape = np.array([ni, nj, nk])
    ilo = np.clip(np.floor((lo_all - origin) / spacing).astype(int), 0, shape)
    ihi = np.clip(np.ceil((hi_all - origin) / spacing).astype(int) + 1, 0, shape)
    size = ihi - ilo
    ok = np.all(size > 0, axis=1)
    padded = _PAD[np.searchsorted(_PAD, size)]
    key = padded[:, 0] * 10**8 + padded[:, 1] * 10**4 + padded[:, 2]
    d_all = (seg.p1 - seg.p0).astype(np.float32)
    L2_all = np.maximum((d_all * d_all).sum(1), 1e-9).astype(np.float32)
    for kv in np.unique(key[ok]):
        members = np.nonzero(ok & (key == kv))[0]
        si, sj, sk = (int(v) for v in padded[members[0]])
        per = si * sj * sk * m_z
        step = max(1, max_elems // per)
        for c0 in range(0, len(members), step):
            g = members[c0:c0 + step]
            p0 = seg.p0[g].astype(np.float32)
            xs = (origin[0] + sx * (ilo[g, 0][:, None] + np.arange(si))).astype(np.float32) - p0[:, 0:1]
            ys = (origin[1] + sy * (ilo[g, 1][:, None] + np.arange(sj))).astype(np.float32) - p0[:, 1:2]
            zc = (origin[2] + sz * (ilo[g, 2][:, None] + np.arange(sk))).astype(np.float32)
            zs = (zc[:, :, None] + sub[None, None, :]).reshape(len(g), sk * m_z) - p0[:, 2:3]
            X = xs[:, None, None, :]
            Y = ys[:, None, :, None]
            Z = zs[:, :, None, None]
            d = d_all[g]
            dx, dy, dz = (d[:, i][:, None, None, None] for i in range(3))
            t = np.clip((X * dx + Y * dy + Z * dz) / L2_all[g][:, None, None, None], 0.0, 1.0)
            ex = X - t * dx
            ey = Y - t * dy
            ez = Z - t * dz
            dist = np.sqrt(ex * ex + ey * ey + ez * ez)
            r0 = seg.r0[g].astype(np.float32)[:, None, None, None]
            r1 = seg.r1[g].astype(np.float32)[:, None, None, None]
            r = r0 + t * (r1 - r0)
            occ = np.minimum(1.0, r * (2.0 / px)) * np.clip((np.maximum(r, px / 2) - dist) * (1.0 / px) + 0.5, 0.0, 1.0)
            if m_z > 1:
                occ = occ.reshape(len(g), sk, m_z, sj, si).mean(2)
            occ8 = (occ * 255.0 + 0.5).astype(np.uint8)
            for n, s_ in enumerate(g):
                i0, j0, k0 = ilo[s_]
                a, b, c = size[s_]
                view = vol[k0:k0 + c, j0:j0 + b, i0:i0 + a]
                np.maximum(view, occ8[n, :c, :b, :a], out=view)
