"""Nodule detection and segmentation with the model of ``configs/models/<name>.yaml``.

Coarse then fine, only inside the lungs:

1. the bounding box of the lung mask, grown by ``lung_margin_mm``, is windowed and resampled to
   ``coarse_spacing_mm`` isotropic and swept by ``sliding_window_inference``; probabilities outside the
   (grown) lung mask are zeroed;
   with ``second_pass_spacing_mm``, the lung box is swept again at that spacing and the two probabilities are
   fused by the voxel-wise maximum (the coarser sweep keeps a large lesion whole, the finer one finds small
   faint nodules);
2. each connected region of the coarse probability ≥ ``candidate_threshold`` gives a box (grown by
   ``fine_margin_mm``) that is resampled to ``fine_spacing_mm`` and predicted again; the fine probability
   is resampled back onto the volume's own grid inside that box;
   (``fine_fusion``: alone, or combined voxel by voxel with the coarse probability of the same box, whose
   wider context keeps a large heterogeneous lesion whole; ``coarse``: no fine prediction, the coarse
   probability resampled onto the volume's grid is used, for a network whose output does not depend on the
   crop (batch norm) swept at the fine spacing already);
3. candidates are the connected components of fine probability ≥ ``threshold`` whose maximum
   probability (the candidate's ``confidence``) reaches ``min_confidence``, whose volume reaches
   ``min_volume_mm3`` (with ``grow_threshold``, a component under ``grow_below_mm3`` is first replaced by its region
   of probability ≥ ``grow_threshold``: hysteresis, for small nodules on thick slices), which are compact
   (``min_compactness``, ``max_elongation``: vessels are not) and of which at least ``min_lung_fraction`` lies within
   ``lung_fraction_margin_mm``
   of the lung mask (so the mediastinum, hila and chest wall inside the lung box give no candidates);
4. when the model card has a ``fp_reduction`` block, each candidate is scored by it (``pipelines.fpr``) and
   that score becomes its ``confidence``; candidates below the block's ``min_score`` are set apart
   (``Detections.rejected``): never findings on their own, but the comparison may take one that a report
   points at (``configs/discordance.yaml``, ``report_guided``).
5. with ``edge_growth``, each candidate's mask is grown out to the nodule's edge in the image: a solid one to its
   half-maximum border, a subsolid one into its faint ground-glass rim (``pipelines.refine``); its centre and
   confidence, the detection, do not change.

A candidate's ``mask`` is a *crop*: a bool array [k, j, i] whose voxel (0, 0, 0) is voxel ``offset``
(k, j, i) of the volume; ``full_mask(shape)`` gives it on the whole grid.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage

from models.backends import Backend, create_backend
from models.errors import ModelError as _ModelsModelError
from models.fpr import Reducer
from models.networks import size_divisor
from models.registry import ModelSpec, load_spec
from pipelines.errors import ModelError, PreprocessError
from pipelines.fpr import candidate_features, feature_matrix
from pipelines.preprocess import Box, grow_box, mask_box, prepare_crop, resample
from pipelines.refine import refine_candidates
from pipelines.types import ModelInfo, Volume

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One nodule candidate. ``mask`` is a crop placed at ``offset`` (k, j, i) in the volume's grid."""

    mask: np.ndarray  # bool [k, j, i] crop
    offset: tuple[int, int, int]  # (k0, j0, i0) of mask[0, 0, 0] in the volume
    confidence: float  # max fine probability in the component
    mean_probability: float
    center_voxel: list[int]  # [i, j, k], rounded centroid of the mask
    volume_mm3: float
    # [i, j, k] probability-weighted centroid of the mask, fractional: a small nodule on thick slices is a few
    # voxels, and rounding moves its centre by up to half a slice (1.25 mm at 2.5 mm), half a 5 mm nodule's radius
    center_ijk: tuple[float, float, float] | None = None
    network_confidence: float | None = None  # the network's max probability when ``confidence`` is a FPR score
    features: dict[str, float] | None = None  # the false-positive reduction's inputs (when the card has one)

    def full_mask(self, shape: tuple[int, int, int]) -> np.ndarray:
        out = np.zeros(shape, dtype=bool)
        k0, j0, i0 = self.offset
        dk, dj, di = self.mask.shape
        out[k0:k0 + dk, j0:j0 + dj, i0:i0 + di] = self.mask
        return out

    @property
    def box(self) -> Box:
        return tuple((o, o + n) for o, n in zip(self.offset, self.mask.shape))  # type: ignore[return-value]


@dataclass
class Detections:
    candidates: list[Candidate]
    model_info: ModelInfo
    probabilities: np.ndarray | None = None  # float16 [k, j, i] on the volume's grid (when asked for)
    lung_box: Box | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    # candidates the false-positive reduction scored below its ``min_score`` (their ``confidence`` is that score):
    # never findings on their own, but a report that points at one lets the comparison take it (report-guided)
    rejected: list[Candidate] = field(default_factory=list)


@functools.lru_cache(maxsize=8)
def _cached_backend(name: str | None, backend: str, device: str) -> tuple[ModelSpec, Backend]:
    spec = load_spec(name)
    if spec.fp_reduction is not None and spec.fp_reduction.kind == "trees":
        spec.fp_reduction.load()  # a missing or altered trees file fails here, before any study is read
    return spec, create_backend(spec, backend, torch.device(device))


def get_model(model: str | None = None, backend: str = "torch",
              device: torch.device | None = None) -> tuple[ModelSpec, Backend]:
    """The model card and a ready backend (cached per model/backend/device). Raises pipelines ModelError."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    try:
        return _cached_backend(model, backend, str(dev))
    except _ModelsModelError as err:
        raise ModelError(str(err)) from err


@torch.no_grad()
def _predict(backend: Backend, image: torch.Tensor, spec: ModelSpec, device: torch.device,
             roi_size: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Probabilities for ``image`` [1, 1, D, H, W]; with the card's ``tta_flips``, the mean of the prediction and
    of the predictions of the image mirrored along each of those axes (0 = D, 1 = H, 2 = W), mirrored back."""
    prob = _predict_once(backend, image, spec, device, roi_size)
    flips = spec.inference.tta_flips
    for axis in flips:
        dim = 2 + axis
        prob = prob + torch.flip(_predict_once(backend, torch.flip(image, (dim,)), spec, device, roi_size), (dim,))
    return prob / (1 + len(flips)) if flips else prob


def _predict_once(backend: Backend, image: torch.Tensor, spec: ModelSpec, device: torch.device,
                  roi_size: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Probabilities for ``image``: whole when it is small enough, else ``sliding_window_inference``.
    ``roi_size`` given: always in windows of that size."""
    inf = spec.inference
    roi = tuple(roi_size or inf.roi_size)
    try:
        whole = all(s <= r for s, r in zip(image.shape[2:], roi)) or \
            (roi_size is None and int(np.prod(image.shape[2:])) <= inf.single_pass_max_voxels)
        if whole:
            div = size_divisor(spec.architecture.name, spec.architecture.params)
            pad = [(-s) % div for s in image.shape[2:]]
            if any(pad):
                x = torch.nn.functional.pad(image, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
                y = backend(x)
                return y[:, :, :image.shape[2], :image.shape[3], :image.shape[4]]
            return backend(image)
        return sliding_window_inference(image, roi, inf.sw_batch_size, backend, overlap=inf.overlap,
                                        mode="gaussian", sw_device=device, device=device)
    except _ModelsModelError as err:
        raise ModelError(str(err)) from err


def detect_nodules(volume: Volume, lung_labels: np.ndarray | None, *, model: str | None = None,
                   backend: str = "torch", device: torch.device | None = None,
                   return_probabilities: bool = False, raw_candidates: bool = False) -> Detections:
    """Find and segment lung nodules in ``volume`` (HU, [k, j, i]) inside ``lung_labels`` (> 0 = lung).

    ``raw_candidates``: skip the card's false-positive reduction and attach each candidate's features
    instead (what ``training/fpr.py`` fits the reduction on).
    """
    t0 = time.perf_counter()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    spec, be = get_model(model, backend, dev)
    inf, hu = spec.inference, tuple(spec.input.hu_window)
    div = size_divisor(spec.architecture.name, spec.architecture.params)
    arr = volume.array
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise PreprocessError(f"volume array must be 3-D [k, j, i], got shape {arr.shape}")
    sp = volume.spacing_mm
    vox_mm3 = float(np.prod(sp))
    timings: dict[str, float] = {}

    # 1. lung box and coarse pass
    t = time.perf_counter()
    if lung_labels is not None:
        if lung_labels.shape != arr.shape:
            raise PreprocessError(f"lung mask shape {lung_labels.shape} differs from the volume's {arr.shape}")
        lung_box = mask_box(lung_labels > 0, inf.lung_margin_mm, sp)
        if lung_box is None:
            log.warning("empty lung mask: no nodule search")
            return Detections([], _info(spec, be), None, None, {"total": time.perf_counter() - t0})
    else:
        log.warning("no lung mask given: searching the whole volume")
        lung_box = tuple((0, n) for n in arr.shape)  # type: ignore[assignment]
    coarse = prepare_crop(arr, sp, lung_box, hu, inf.coarse_spacing_mm, divisor=1, device=dev)
    timings["preprocess"] = time.perf_counter() - t
    t = time.perf_counter()
    prob_c, lung_c, masks = _coarse_map(be, coarse.image, spec, dev, lung_labels, lung_box, inf.coarse_spacing_mm, None)
    maps = [(prob_c, lung_c)]
    timings["coarse"] = time.perf_counter() - t
    if inf.second_pass_spacing_mm is not None:  # a second sweep of the lung box at another spacing
        t = time.perf_counter()
        win = prepare_crop(arr, sp, lung_box, hu, inf.second_pass_spacing_mm, divisor=1, device=dev)
        roi = tuple(inf.second_pass_roi_size) if inf.second_pass_roi_size else None
        maps.append(_coarse_map(be, win.image, spec, dev, lung_labels, lung_box, inf.second_pass_spacing_mm, roi,
                                masks)[:2])
        timings["second_pass"] = time.perf_counter() - t

    # 2. fine pass around each coarse region
    t = time.perf_counter()
    boxes = []
    n = 0
    for prob_c, lung_c in maps:
        lab, n_map = ndimage.label(prob_c >= inf.candidate_threshold)
        n += n_map
        scale = np.asarray([b[1] - b[0] for b in lung_box], dtype=np.float64) / np.asarray(prob_c.shape)
        for idx, sl in enumerate(ndimage.find_objects(lab), start=1):
            if sl is None:
                continue
            if lung_c is not None and float(lung_c[sl][lab[sl] == idx].mean()) < 0.5 * inf.min_lung_fraction:
                continue  # a region mostly outside the lungs (hilum, mediastinum, wall): no fine pass
            b = tuple((lung_box[a][0] + int(np.floor(sl[a].start * scale[a])),
                       lung_box[a][0] + int(np.ceil(sl[a].stop * scale[a]))) for a in range(3))
            boxes.append(grow_box(b, inf.fine_margin_mm, sp, arr.shape))
    boxes = _merge_boxes(boxes)
    full_prob = np.zeros(arr.shape, dtype=np.float16) if return_probabilities else None
    coarse_up = None
    if full_prob is not None or (boxes and inf.fine_fusion != "fine"):
        lung_shape = tuple(b[1] - b[0] for b in lung_box)
        coarse_up = resample(torch.from_numpy(maps[0][0]), lung_shape).numpy()
        for prob_w, _ in maps[1:]:  # the second coarse pass: voxel-wise maximum
            np.maximum(coarse_up, resample(torch.from_numpy(prob_w), lung_shape).numpy(), out=coarse_up)
    if full_prob is not None:
        _crop(full_prob, lung_box)[...] = coarse_up.astype(np.float16)
    if inf.fine_fusion == "fine":
        coarse_up = None
    cands: list[Candidate] = []
    for box in boxes:
        if inf.fine_fusion == "coarse":  # no second prediction: the coarse probability on the volume's grid
            pn = _on_box(coarse_up, box, lung_box)
        else:
            fine = prepare_crop(arr, sp, box, hu, inf.fine_spacing_mm, divisor=div, device=dev)
            pf = _predict(be, fine.image, spec, dev)
            pn = resample(pf, tuple(b[1] - b[0] for b in box))[0, 0].float().cpu().numpy()
            if coarse_up is not None:
                pn = _fuse(pn, coarse_up, box, lung_box, inf.fine_fusion)
        if full_prob is not None:
            _crop(full_prob, box)[...] = np.maximum(_crop(full_prob, box), pn.astype(np.float16))
        cands.extend(c for c in _components(pn, box, inf.threshold, inf.min_confidence, inf.min_volume_mm3, vox_mm3,
                                            inf.grow_threshold, inf.grow_below_mm3)
                     if _shape_ok(c, sp, inf.min_compactness, inf.max_elongation))
    timings["fine"] = time.perf_counter() - t
    if lung_labels is not None:
        cands = [c for c in cands
                 if _lung_fraction(c, lung_labels, inf.lung_fraction_margin_mm, sp) >= inf.min_lung_fraction]
    cands = _dedupe(cands)
    rejected: list[Candidate] = []
    if spec.fp_reduction is not None and not raw_candidates:
        cands, rejected = _reduce_false_positives(cands, spec.fp_reduction, arr, sp, lung_labels)
    elif raw_candidates:
        for c in cands:
            c.features = candidate_features(c.mask, c.offset, arr, sp, lung_labels, c.confidence,
                                            c.mean_probability, c.volume_mm3)
    if inf.edge_growth is not None and not raw_candidates:  # 5. masks grown out to the nodule's edge
        t = time.perf_counter()
        refine_candidates(cands + rejected, arr, sp, inf.edge_growth, lung_labels)
        timings["refine"] = time.perf_counter() - t
    cands.sort(key=lambda c: -c.confidence)
    rejected.sort(key=lambda c: -c.confidence)
    timings["total"] = time.perf_counter() - t0
    timings = {k: round(v, 4) for k, v in timings.items()}
    log.info("%d nodule candidates from %d coarse regions in %.2f s (%s on %s)", len(cands), n,
             timings["total"], be.name, be.device)
    return Detections(cands, _info(spec, be), full_prob, lung_box, timings, rejected)


def _coarse_map(be: Backend, image: torch.Tensor, spec: ModelSpec, dev: torch.device, lung_labels: np.ndarray | None,
                lung_box: Box, spacing_mm: float, roi: tuple[int, int, int] | None,
                masks: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[np.ndarray, np.ndarray | None, tuple[torch.Tensor, torch.Tensor] | None]:
    """One coarse pass over the lung box: (probability on its grid, zero beyond ``lung_margin_mm`` of the lungs;
    the lung mask on the same grid, or None without one; (lung mask, grown lung mask) as tensors).

    ``masks``: an earlier pass's (lung mask, grown lung mask), resampled onto this pass's grid instead of growing
    the mask again (a cube dilation on a fine grid costs more than the network)."""
    inf = spec.inference
    prob = _predict(be, image, spec, dev, roi)[0, 0].float()
    if lung_labels is None:
        return prob.cpu().numpy(), None, None
    if masks is None:
        lm = torch.from_numpy(np.ascontiguousarray(_crop(lung_labels, lung_box) > 0)).to(dev)
        lm = resample(lm.float(), tuple(prob.shape), mode="trilinear") > 0.01
        grown = _dilate_cube(lm, max(1, int(round(inf.lung_margin_mm / spacing_mm))))
    else:
        lm, grown = (resample(m, tuple(prob.shape), mode="nearest") > 0.5 for m in masks)
    return (prob * grown).cpu().numpy(), lm.cpu().numpy(), (lm, grown)


def _reduce_false_positives(cands: list[Candidate], fpr: Reducer, hu: np.ndarray, spacing_xyz,
                            lung_labels: np.ndarray | None) -> tuple[list[Candidate], list[Candidate]]:
    """Score each candidate with the card's second stage: (those reaching ``fpr.min_score``, the others)."""
    if not cands:
        return cands, []
    rows = [candidate_features(c.mask, c.offset, hu, spacing_xyz, lung_labels, c.confidence, c.mean_probability,
                               c.volume_mm3) for c in cands]
    scores = fpr.score(feature_matrix(rows, fpr.features))
    out, rejected = [], []
    for c, f, s in zip(cands, rows, scores):
        c.network_confidence, c.confidence, c.features = c.confidence, float(s), f
        (out if s >= fpr.min_score else rejected).append(c)
    log.debug("false-positive reduction kept %d of %d candidates", len(out), len(cands))
    return out, rejected


def _on_box(coarse_up: np.ndarray, box: Box, lung_box: Box) -> np.ndarray:
    """The coarse probability (given on ``lung_box``'s grid) on ``box``'s grid; 0 outside the lung box."""
    c = np.zeros(tuple(b[1] - b[0] for b in box), dtype=coarse_up.dtype)
    lo = [max(box[a][0], lung_box[a][0]) for a in range(3)]
    hi = [min(box[a][1], lung_box[a][1]) for a in range(3)]
    if all(h > l for l, h in zip(lo, hi)):
        dst = tuple(slice(lo[a] - box[a][0], hi[a] - box[a][0]) for a in range(3))
        src = tuple(slice(lo[a] - lung_box[a][0], hi[a] - lung_box[a][0]) for a in range(3))
        c[dst] = coarse_up[src]
    return c


def _fuse(fine: np.ndarray, coarse_up: np.ndarray, box: Box, lung_box: Box, how: str) -> np.ndarray:
    """The fine probability on ``box`` combined with the coarse one (given on ``lung_box``'s grid; 0 outside)."""
    c = _on_box(coarse_up, box, lung_box)
    return np.maximum(fine, c) if how == "max" else 0.5 * (fine + c)


def _info(spec: ModelSpec, be: Backend) -> ModelInfo:
    return ModelInfo(name=spec.name, version=spec.version, backend=be.name, device=be.device)


def _dilate_cube(mask: torch.Tensor, r: int) -> torch.Tensor:
    """Binary dilation of a [D, H, W] mask by a (2r+1)³ cube, as three 1-D max pools (a cube is separable:
    3·(2r+1) comparisons per voxel instead of (2r+1)³)."""
    x = mask[None, None].float()
    for k in ((2 * r + 1, 1, 1), (1, 2 * r + 1, 1), (1, 1, 2 * r + 1)):
        x = torch.nn.functional.max_pool3d(x, k, stride=1, padding=tuple(v // 2 for v in k))
    return x[0, 0] > 0


def _crop(a: np.ndarray, box: Box) -> np.ndarray:
    (k0, k1), (j0, j1), (i0, i1) = box
    return a[k0:k1, j0:j1, i0:i1]


def _merge_boxes(boxes: list[Box]) -> list[Box]:
    """Union overlapping boxes until none overlap (so no region is predicted twice)."""
    out = list(boxes)
    merged = True
    while merged:
        merged = False
        for a in range(len(out)):
            for b in range(a + 1, len(out)):
                if all(out[a][x][0] < out[b][x][1] and out[b][x][0] < out[a][x][1] for x in range(3)):
                    out[a] = tuple((min(out[a][x][0], out[b][x][0]), max(out[a][x][1], out[b][x][1]))
                                   for x in range(3))  # type: ignore[assignment]
                    del out[b]
                    merged = True
                    break
            if merged:
                break
    return out


def _components(prob: np.ndarray, box: Box, threshold: float, min_conf: float, min_vol: float,
                vox_mm3: float, grow_threshold: float | None = None, grow_below_mm3: float = 0.0) -> list[Candidate]:
    """Candidates from the connected components of ``prob >= threshold`` (``prob`` on ``box``'s grid).

    With ``grow_threshold``, a component smaller than ``grow_below_mm3`` is replaced by its connected region of
    ``prob >= grow_threshold`` (hysteresis); regions reached from several small components are taken once, and
    one that holds a component large enough to stand as it is is not taken (that component already does)."""
    lab, _ = ndimage.label(prob >= threshold)
    regions: list[tuple[np.ndarray, tuple[slice, ...]]] = []
    small: list[int] = []  # for each small component, the label of its region in ``low``
    big: list[int] = []  # labels (in ``lab``) of the components that stand as they are
    low = None
    for idx, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        m = lab[sl] == idx
        if grow_threshold is not None and float(m.sum()) * vox_mm3 < grow_below_mm3:
            if low is None:
                low, _ = ndimage.label(prob >= grow_threshold)
            k, j, i = np.argwhere(m)[0] + np.asarray([s.start for s in sl])
            small.append(int(low[k, j, i]))
            continue
        regions.append((m, sl))
        big.append(idx)
    if small:
        kept = set(np.unique(low[np.isin(lab, big)]).tolist())
        objs = ndimage.find_objects(low)
        for lid in sorted(set(small) - kept):
            sl = objs[lid - 1]
            regions.append((low[sl] == lid, sl))
    out = []
    for m, sl in regions:
        p = prob[sl][m]
        vol = float(m.sum()) * vox_mm3
        conf = float(p.max())
        if conf < min_conf or vol < min_vol:
            continue
        off = tuple(int(box[a][0] + sl[a].start) for a in range(3))
        pts = np.argwhere(m)
        ck, cj, ci = pts.mean(axis=0) + np.asarray(off)
        wk, wj, wi = np.average(pts, axis=0, weights=p.astype(np.float64)) + np.asarray(off)
        out.append(Candidate(mask=m, offset=off, confidence=conf, mean_probability=float(p.mean()),  # type: ignore[arg-type]
                             center_voxel=[int(round(ci)), int(round(cj)), int(round(ck))], volume_mm3=vol,
                             center_ijk=(float(wi), float(wj), float(wk))))
    return out


def _shape_ok(c: Candidate, spacing_xyz, min_compactness: float, max_elongation: float) -> bool:
    """Compact enough to be a nodule: a vessel segment is long for its volume and elongated."""
    sp = np.asarray(spacing_xyz[::-1], dtype=np.float64)  # (k, j, i)
    pts = np.argwhere(c.mask) * sp
    extent = float(np.ptp(pts, axis=0).max() + sp.min()) if len(pts) else 0.0
    eq = (6.0 * c.volume_mm3 / np.pi) ** (1.0 / 3.0)
    if extent > 0 and eq / extent < min_compactness:
        return False
    if len(pts) > 3:
        ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T) + 1e-6 * np.eye(3)))[::-1]
        if np.sqrt(ev[0] / max(ev[1], 1e-9)) > max_elongation:
            return False
    return True


def _lung_fraction(c: Candidate, lung_labels: np.ndarray, margin_mm: float, spacing_xyz) -> float:
    """Fraction of the candidate's voxels within ``margin_mm`` of the lung mask."""
    box = grow_box(c.box, margin_mm, spacing_xyz, lung_labels.shape)
    lung = _crop(lung_labels, box) > 0
    if not lung.any():
        return 0.0
    o = tuple(c.offset[a] - box[a][0] for a in range(3))
    sl = tuple(slice(o[a], o[a] + c.mask.shape[a]) for a in range(3))
    dist = ndimage.distance_transform_edt(~lung, sampling=(spacing_xyz[2], spacing_xyz[1], spacing_xyz[0]))
    return float((dist[sl][c.mask] <= margin_mm).mean())


def _dedupe(cands: list[Candidate]) -> list[Candidate]:
    """Drop a candidate whose voxels are mostly inside a more confident one (overlapping fine boxes)."""
    keep: list[Candidate] = []
    for c in sorted(cands, key=lambda c: -c.confidence):
        dup = False
        for k in keep:
            ov = _overlap(c, k)
            if ov > 0.5 * c.mask.sum():
                dup = True
                break
        if not dup:
            keep.append(c)
    return keep


def _overlap(a: Candidate, b: Candidate) -> int:
    lo = [max(a.offset[x], b.offset[x]) for x in range(3)]
    hi = [min(a.offset[x] + a.mask.shape[x], b.offset[x] + b.mask.shape[x]) for x in range(3)]
    if any(h <= l for l, h in zip(lo, hi)):
        return 0
    sa = tuple(slice(lo[x] - a.offset[x], hi[x] - a.offset[x]) for x in range(3))
    sb = tuple(slice(lo[x] - b.offset[x], hi[x] - b.offset[x]) for x in range(3))
    return int((a.mask[sa] & b.mask[sb]).sum())
