"""False-positive reduction at inference: the features of a nodule candidate (shape, density, its
surroundings, the network's output) scored by the model card's :class:`models.fpr.FPReducer`.

The score becomes the candidate's ``confidence``; the network's own maximum probability is kept as
``network_confidence``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from models.fpr import FEATURES, FPReducer, feature_matrix  # noqa: F401 - re-exported for callers


def candidate_features(mask: np.ndarray, offset: tuple[int, int, int], hu: np.ndarray, spacing_xyz,
                       lung: np.ndarray | None, network_confidence: float, mean_probability: float,
                       volume_mm3: float) -> dict[str, float]:
    """The :data:`FEATURES` of one candidate (``mask`` a crop at ``offset`` (k, j, i) of ``hu``'s grid)."""
    sp = np.asarray(spacing_xyz[::-1], dtype=np.float64)  # (k, j, i)
    pad = np.maximum(1, np.ceil(3.0 / sp)).astype(int)  # room for a 2 mm shell
    lo = np.maximum(np.asarray(offset) - pad, 0)
    hi = np.minimum(np.asarray(offset) + np.asarray(mask.shape) + pad, hu.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    m = np.zeros(tuple(int(b - a) for a, b in zip(lo, hi)), dtype=bool)
    o = np.asarray(offset) - lo
    m[tuple(slice(int(o[a]), int(o[a] + mask.shape[a])) for a in range(3))] = mask
    h = hu[sl].astype(np.float32)
    vals = h[m]
    dist_out = ndimage.distance_transform_edt(~m, sampling=sp)
    shell = (dist_out > 0) & (dist_out <= 2.0)
    sv = h[shell] if shell.any() else vals
    pts = np.argwhere(mask) * sp
    extent = float(np.ptp(pts, axis=0).max() + sp.min()) if len(pts) else 0.0
    eq = (6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0)
    elong = 1.0
    if len(pts) > 3:
        ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T) + 1e-6 * np.eye(3)))[::-1]
        elong = float(np.sqrt(ev[0] / max(ev[1], 1e-9)))
    depth = 0.0
    if lung is not None:
        c = np.round(np.argwhere(mask).mean(axis=0) + np.asarray(offset)).astype(int)
        r = np.ceil(30.0 / sp).astype(int)  # look 30 mm around the centre
        lo2, hi2 = np.maximum(c - r, 0), np.minimum(c + r + 1, lung.shape)
        sub = lung[tuple(slice(int(a), int(b)) for a, b in zip(lo2, hi2))] > 0
        cc = tuple(int(x) for x in c - lo2)
        if sub[cc]:
            depth = float(min(ndimage.distance_transform_edt(sub, sampling=sp)[cc], 30.0))
    return {
        "network_confidence": float(network_confidence),
        "mean_probability": float(mean_probability),
        "log_volume_mm3": float(np.log(max(volume_mm3, 1e-3))),
        "compactness": float(eq / extent) if extent > 0 else 0.0,
        "elongation": min(elong, 20.0),
        "hu_mean": float(vals.mean()),
        "hu_std": float(vals.std()),
        "hu_p90": float(np.percentile(vals, 90)),
        "dense_fraction": float((vals > -300).mean()),
        "shell_hu_mean": float(sv.mean()),
        "shell_dense_fraction": float((sv > -300).mean()),
        "lung_depth_mm": depth,
    }


