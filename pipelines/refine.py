"""Mask refinement after detection: each candidate's mask grown out to the nodule's edge in the image.

The network's mask (probability at or above the card's ``threshold``) lies inside the nodule. A solid nodule loses
its partial-volumed border (on the held-out synthetic set the mean diameter came out 0.54 mm short, and on
``lidc-idri-0001`` the mask held 43 % of the readers' consensus, all of it inside); a ground-glass or part-solid nodule loses its faint
rim, a few tens of HU above the lung, which is part of what a radiologist measures.

For each candidate, the voxels that are

* within ``reach_mm`` of the mask,
* at or above the nodule's edge level once smoothed by a Gaussian of ``sigma_mm``,
* inside the lung mask (when one is given), and
* connected to the mask after an in-plane opening by a 3×3 cross (a thin bridge to a vessel is cut),

are added, and the holes of the result filled. The lung level is the median HU of a shell ``shell_mm`` away from the
mask, over voxels below ``background_max_hu``. The edge level depends on the core (``configs/measurement.yaml``
composition: the mask eroded one voxel in-plane):

* solid (or calcified) core: ``solid_edge_fraction`` of the way from the lung to the core's median HU; 0.5 is the
  half-maximum edge, where a voxel is half nodule and half lung;
* otherwise: ``subsolid_delta_hu`` above the lung; the growth is refused when more than
  ``subsolid_max_solid_fraction`` of the added voxels are solid (``solid_min_hu``): that is a vessel or the chest
  wall, not ground glass.

Settings: the model card's ``inference.edge_growth`` (``models.registry.EdgeGrowthSpec``), chosen on tuning seeds (see
the card's notes). Everything is on the volume's own grid [k, j, i]; spacing is (x, y, z) mm as everywhere in
``pipelines``.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from models.registry import EdgeGrowthSpec
from pipelines.measure import MeasurementConfig, core_hu, has_solid_core, load_measurement_config
from pipelines.preprocess import Box, grow_box

log = logging.getLogger(__name__)

_CROSS = np.zeros((1, 3, 3), dtype=bool)
_CROSS[0, 1, :] = True
_CROSS[0, :, 1] = True


def grow_to_edge(mask: np.ndarray, offset: tuple[int, int, int], hu: np.ndarray, spacing_xyz, spec: EdgeGrowthSpec,
                 lung_labels: np.ndarray | None = None, cfg: MeasurementConfig | None = None
                 ) -> tuple[np.ndarray, tuple[int, int, int], str]:
    """Grow a candidate's mask (a bool crop placed at ``offset`` (k, j, i) in ``hu``'s grid) out to the nodule's edge.

    Returns (mask, offset, outcome): the grown crop and its offset, or the input unchanged, with why. Outcomes:
    ``grown-solid``, ``grown-subsolid``, ``off`` (the card leaves this kind as it is), ``no-background``,
    ``nothing``, ``solid-rim``.
    """
    cfg = cfg or load_measurement_config()
    sp = np.asarray(spacing_xyz[::-1], dtype=np.float64)  # (k, j, i)
    cbox: Box = tuple((o, o + n) for o, n in zip(offset, mask.shape))  # type: ignore[assignment]
    local = np.asarray(hu[tuple(slice(a, b) for a, b in cbox)], dtype=np.float32)
    if not mask.any() or not np.isfinite(local).all():
        return mask, offset, "off"
    solid = has_solid_core(local, mask, cfg)
    if (spec.solid_edge_fraction if solid else spec.subsolid_delta_hu) is None:
        return mask, offset, "off"
    box = grow_box(cbox, max(spec.shell_mm[1], spec.reach_mm) + 1.0, spacing_xyz, hu.shape)
    sl = tuple(slice(a, b) for a, b in box)
    crop = np.asarray(hu[sl], dtype=np.float32)
    m = np.zeros(crop.shape, dtype=bool)
    o = tuple(offset[a] - box[a][0] for a in range(3))
    m[o[0]:o[0] + mask.shape[0], o[1]:o[1] + mask.shape[1], o[2]:o[2] + mask.shape[2]] = mask
    dist = ndimage.distance_transform_edt(~m, sampling=sp)
    shell = (dist >= spec.shell_mm[0]) & (dist <= spec.shell_mm[1]) & (crop < spec.background_max_hu)
    if int(shell.sum()) < spec.min_background_voxels:
        return mask, offset, "no-background"
    lung_hu = float(np.median(crop[shell]))
    if solid:
        level = lung_hu + spec.solid_edge_fraction * (float(np.median(core_hu(local, mask, cfg))) - lung_hu)
    else:
        level = lung_hu + spec.subsolid_delta_hu
    smooth = ndimage.gaussian_filter(crop, spec.sigma_mm / sp) if spec.sigma_mm > 0 else crop
    rim = (smooth >= level) & (dist <= spec.reach_mm)
    if lung_labels is not None:
        rim &= lung_labels[sl] > 0
    rim = ndimage.binary_opening(rim, structure=_CROSS) | m
    lab, _ = ndimage.label(rim)
    keep = np.unique(lab[m])
    grown = ndimage.binary_fill_holes(np.isin(lab, keep[keep > 0]))
    added = grown & ~m
    if not added.any():
        return mask, offset, "nothing"
    if not solid and float(np.mean(crop[added] >= cfg.composition.solid_min_hu)) > spec.subsolid_max_solid_fraction:
        return mask, offset, "solid-rim"
    objs = ndimage.find_objects(grown.astype(np.uint8))[0]
    new_offset = tuple(int(box[a][0] + objs[a].start) for a in range(3))
    return grown[objs], new_offset, "grown-solid" if solid else "grown-subsolid"  # type: ignore[return-value]


def refine_candidates(cands: list, hu: np.ndarray, spacing_xyz, spec: EdgeGrowthSpec,
                      lung_labels: np.ndarray | None = None) -> list:
    """:func:`grow_to_edge` on each candidate (``pipelines.infer.Candidate``), in place: its mask, offset and volume
    change; its centre and confidence (the detection) do not. Returns the candidates."""
    cfg = load_measurement_config()
    vox_mm3 = float(np.prod(spacing_xyz))
    outcomes: dict[str, int] = {}
    for c in cands:
        c.mask, c.offset, why = grow_to_edge(c.mask, c.offset, hu, spacing_xyz, spec, lung_labels, cfg)
        c.volume_mm3 = float(c.mask.sum()) * vox_mm3
        outcomes[why] = outcomes.get(why, 0) + 1
    if cands:
        log.debug("edge growth: %s", outcomes)
    return cands
