"""Tissue HU statistics of a chest CT volume, computed the same way for synthetic and real series.

* body: voxels above -500 HU, largest 3-D component, holes filled slice by slice;
* air: outside the body and not padding (> -1100 HU), away from the table (first 10 % of rows);
* lung: inside the filled body and below -400 HU (or an explicit lung mask);
* fat / soft tissue: the histogram peak of body voxels in [-200, -30] and [0, 100] HU;
* bone: the high percentiles of body voxels and the fraction above +300 HU.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _peak(values: np.ndarray, lo: float, hi: float) -> float | None:
    v = values[(values >= lo) & (values <= hi)]
    if v.size < 100:
        return None
    hist, edges = np.histogram(v, bins=np.arange(lo, hi + 5, 5))
    hist = ndimage.uniform_filter1d(hist.astype(float), 3)
    i = int(np.argmax(hist))
    return float((edges[i] + edges[i + 1]) / 2)


def _summary(v: np.ndarray) -> dict:
    if v.size == 0:
        return {"n": 0}
    p = np.percentile(v, [1, 25, 50, 75, 99])
    return {"n": int(v.size), "median": float(p[2]), "p01": float(p[0]), "p25": float(p[1]), "p75": float(p[3]),
            "p99": float(p[4]), "mean": float(v.mean()), "std": float(v.std())}


def tissue_stats(hu: np.ndarray, lung_mask: np.ndarray | None = None, max_voxels: int = 4_000_000) -> dict:
    """HU statistics per tissue class of an array [k, j, i] in HU (see the module docstring)."""
    step = max(1, int(np.ceil(hu.size / max_voxels)) // 1)
    kstep = max(1, int(round(step ** (1 / 3))))
    a = hu[::kstep]
    lm = lung_mask[::kstep] if lung_mask is not None else None
    body = a > -500
    lab, n = ndimage.label(body)
    if n > 1:
        sizes = ndimage.sum(body, lab, index=np.arange(1, n + 1))
        body = lab == (1 + int(np.argmax(sizes)))
    filled = np.stack([ndimage.binary_fill_holes(s) for s in body])
    rows = max(2, int(0.1 * a.shape[1]))
    air_zone = np.zeros_like(filled)
    air_zone[:, :rows, :] = True
    air = a[air_zone & ~filled & (a > -1100)]
    lung = a[lm] if lm is not None else a[filled & (a < -400)]
    b = a[filled & ~(a < -400)]
    out = {
        "air": _summary(air.astype(np.float32)),
        "lung": _summary(lung.astype(np.float32)),
        "fat": {"mode": _peak(b, -200, -30)},
        "soft_tissue": {"mode": _peak(b, 0, 100)},
        "bone": {"p99": float(np.percentile(b, 99)) if b.size else None,
                 "p999": float(np.percentile(b, 99.9)) if b.size else None,
                 "fraction_above_300": float((b > 300).mean()) if b.size else None},
    }
    return out
