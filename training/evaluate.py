"""Evaluation of the nodule model (``preread evaluate``).

* **FROC / CPM in the LUNA16 way** (Setio et al., Med Image Anal 2017;42:1-13): a candidate is a hit when
  its centre lies within the radius of a reference nodule; several hits on one nodule count once (the most
  confident); hits on nodules below the size of interest are neither true nor false positives; every
  other candidate is a false positive. Sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 false positives per scan;
  CPM is their mean.
* **Dice** of each found nodule's mask against its reference mask, and **mean diameter error** of the
  measured candidate (``pipelines.measure``) against the reference.
* Synthetic studies from seeds never used in training (the training config's seeds are refused), and the
  real series in ``../shared/data/ct`` (LIDC-IDRI-0001 against the readers' 50 % consensus,
  Lung-PET-CT-Dx A0001 against its tumour boxes, candidates per scan on the others).
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.errors import ConfigError
from pipelines.infer import Candidate, Detections, detect_nodules
from pipelines.types import Volume

log = logging.getLogger(__name__)

FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


# ----------------------------------------------------------------------------------------------- FROC
@dataclass
class RefNodule:
    center_mm: np.ndarray
    diameter_mm: float
    counted: bool  # True when the nodule is in the size range of interest
    key: str = ""


@dataclass
class ScanDetections:
    """One scan: candidate centres (mm) and confidences, and the reference nodules."""

    cand_mm: list[np.ndarray]
    confidence: list[float]
    refs: list[RefNodule]


def match_scan(scan: ScanDetections) -> tuple[list[int | None], list[bool]]:
    """For each candidate: the index of the nodule it hits (None = none) and whether it is ignored."""
    hit: list[int | None] = []
    ignored: list[bool] = []
    for c in scan.cand_mm:
        best, best_d = None, np.inf
        for n, r in enumerate(scan.refs):
            d = float(np.linalg.norm(np.asarray(c) - r.center_mm))
            if d <= r.diameter_mm / 2.0 and d < best_d:
                best, best_d = n, d
        hit.append(best)
        ignored.append(best is not None and not scan.refs[best].counted)
    return hit, ignored


def froc(scans: list[ScanDetections]) -> dict[str, Any]:
    """LUNA16 FROC: sensitivity at each rate of :data:`FROC_RATES` false positives per scan, and the CPM."""
    n_scans = len(scans)
    n_ref = sum(r.counted for s in scans for r in s.refs)
    nodule_conf: list[float] = []  # best confidence of each counted nodule (-inf if missed)
    fp_conf: list[float] = []
    for s in scans:
        hit, ignored = match_scan(s)
        best = [-np.inf] * len(s.refs)
        for c, h, ig in zip(s.confidence, hit, ignored):
            if h is None:
                fp_conf.append(c)
            elif not ig:
                best[h] = max(best[h], c)
        nodule_conf.extend(b for b, r in zip(best, s.refs) if r.counted)
    thresholds = sorted(set(nodule_conf + fp_conf) - {-np.inf}, reverse=True)
    nc, fc = np.asarray(nodule_conf, dtype=float), np.asarray(fp_conf, dtype=float)
    curve = [(float((fc >= t).sum()) / max(n_scans, 1), float((nc >= t).sum()) / max(n_ref, 1)) for t in thresholds]
    sens = {}
    for rate in FROC_RATES:
        ok = [se for fp, se in curve if fp <= rate]
        sens[str(rate)] = max(ok) if ok else 0.0
    return {"scans": n_scans, "nodules": n_ref, "sensitivity_at_fp_per_scan": sens,
            "cpm": float(np.mean(list(sens.values()))), "max_sensitivity": curve[-1][1] if curve else 0.0,
            "fp_per_scan_at_max_sensitivity": curve[-1][0] if curve else 0.0,
            "curve": [{"fp_per_scan": fp, "sensitivity": se, "threshold": t} for (fp, se), t in zip(curve, thresholds)]}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / s if s else 1.0


def candidate_centres_mm(volume: Volume, cands: list[Candidate]) -> list[np.ndarray]:
    """Each candidate's centre in LPS mm: its fractional centroid (``center_ijk``), as LUNA16 scores
    continuous coordinates; the rounded voxel only for a candidate made without one."""
    return [candidate_centre_mm(volume, c) for c in cands]


def candidate_centre_mm(volume: Volume, c: Candidate) -> np.ndarray:
    return volume.voxel_to_mm(c.center_ijk if c.center_ijk is not None else c.center_voxel)


# ----------------------------------------------------------------------------------------- synthetic
def training_seeds(config: str = "nodule-unet-s") -> set[int]:
    from training.train import load_config

    cfg = load_config(config)
    seeds = set(range(*cfg.data.train_seeds)) | set(range(*cfg.data.val_seeds))
    for ex in cfg.data.extra:
        seeds |= set(range(*ex.train_seeds)) | (set(range(*ex.val_seeds)) if ex.val_seeds else set())
    return seeds


def evaluate_synthetic(seeds: list[int], *, preset: str = "fast", model: str | None = None, backend: str = "torch",
                       device: torch.device | None = None, min_diameter_mm: float = 5.0,
                       dice_min_diameter_mm: float = 6.0, train_config: str = "nodule-unet-s",
                       lungs: str = "truth", cache_dir: Path | str | None = None) -> dict[str, Any]:
    """FROC/CPM, Dice and diameter error on synthetic studies drawn from ``seeds`` (none used in training).

    ``lungs``: ``truth`` (the generator's lung labels: the model alone) or ``segment``
    (``pipelines.lungmask.segment_lungs``: the whole pipeline).
    """
    from pipelines.measure import measure_mask

    used = training_seeds(train_config) & set(seeds)
    if used:
        raise ConfigError(f"seeds {sorted(used)[:5]} were used in training ({train_config}); evaluate on others")
    scans: list[ScanDetections] = []
    per_nodule: list[dict] = []
    times: list[float] = []
    for seed in seeds:
        study = _synthetic_study(int(seed), preset, cache_dir)
        vol = study.volume
        if lungs == "segment":
            from pipelines.lungmask import segment_lungs

            lung_labels = segment_lungs(vol).labels
        else:
            lung_labels = np.asarray(study.lung_labels)
        t = time.perf_counter()
        det = detect_nodules(vol, lung_labels, model=model, backend=backend, device=device)
        times.append(time.perf_counter() - t)
        labels = np.asarray(study.labels)
        refs = []
        for n, nod in enumerate(study.truth["nodules"]):
            lab = _label_of(nod, n)
            centre = vol.voxel_to_mm(nod["center_voxel"])
            d = float(nod["mean_diameter_mm"])
            refs.append(RefNodule(center_mm=centre, diameter_mm=max(d, 1e-3), counted=d >= min_diameter_mm,
                                  key=f"{seed}:{lab}"))
        scan = ScanDetections(candidate_centres_mm(vol, det.candidates), [c.confidence for c in det.candidates], refs)
        scans.append(scan)
        hit, _ = match_scan(scan)
        for n, (nod, ref) in enumerate(zip(study.truth["nodules"], refs)):
            lab = _label_of(nod, n)
            mine = [c for c, h in zip(det.candidates, hit) if h == n]
            rec = {"seed": seed, "label": lab, "diameter_mm": ref.diameter_mm,
                   "composition": nod.get("composition"), "found": bool(mine)}
            if mine:
                c = max(mine, key=lambda c: c.confidence)
                ref_mask = labels == lab
                m = c.full_mask(labels.shape)
                rec["confidence"] = c.confidence
                rec["dice"] = dice(m, ref_mask)
                try:
                    rec["measured_mean_diameter_mm"] = measure_mask(vol, m, lung_labels=lung_labels).mean_diameter_mm
                    rec["diameter_error_mm"] = rec["measured_mean_diameter_mm"] - ref.diameter_mm
                except Exception as err:  # noqa: BLE001 - a degenerate mask is reported, not fatal
                    rec["measure_error"] = str(err)
            per_nodule.append(rec)
        log.info("seed %d: %d candidates, %d reference nodules, %.1f s", seed, len(det.candidates), len(refs), times[-1])
    fr = froc(scans)
    big = [r for r in per_nodule if r["found"] and r["diameter_mm"] >= dice_min_diameter_mm and "dice" in r]
    derr = [r["diameter_error_mm"] for r in per_nodule if "diameter_error_mm" in r and r["diameter_mm"] >= min_diameter_mm]
    fp_default = _fp_per_scan(scans)
    return {
        "set": "synthetic", "preset": preset, "seeds": list(seeds), "lungs": lungs,
        "min_diameter_mm": min_diameter_mm, "froc": fr,
        "sensitivity_at_operating_point": _sens(per_nodule, min_diameter_mm),
        "fp_per_scan_at_operating_point": fp_default,
        "dice_mean_ge_%gmm" % dice_min_diameter_mm: float(np.mean([r["dice"] for r in big])) if big else None,
        "dice_median_ge_%gmm" % dice_min_diameter_mm: float(np.median([r["dice"] for r in big])) if big else None,
        "diameter_abs_error_mm_mean": float(np.mean(np.abs(derr))) if derr else None,
        "diameter_error_mm_mean": float(np.mean(derr)) if derr else None,
        "seconds_per_scan_mean": float(np.mean(times)) if times else None,
        "nodules": per_nodule,
    }


@dataclass
class _Study:
    volume: Volume
    labels: np.ndarray
    lung_labels: np.ndarray
    truth: dict


def _synthetic_study(seed: int, preset: str, cache_dir: Path | str | None) -> _Study:
    """A synthetic study (volume, nodule labels, lung labels, truth), kept as .npz in ``cache_dir`` when given."""
    import json

    from training.synthetic import SynthConfig, make_study

    from training.data import generator_version

    p = Path(cache_dir) / f"eval-{preset}-{generator_version()}-{seed}.npz" if cache_dir else None
    if p is not None and p.is_file():
        z = np.load(p)
        vol = Volume(array=z["hu"], spacing_mm=tuple(z["spacing"]), origin_mm=tuple(z["origin"]), direction=z["direction"])
        return _Study(vol, z["labels"], z["lung"], json.loads(str(z["truth"])))
    s = make_study(seed, SynthConfig.preset(preset))
    out = _Study(s.volume, np.asarray(s.labels), np.asarray(s.lung_labels), {"nodules": s.truth["nodules"]})
    if p is not None:
        p.parent.mkdir(parents=True, exist_ok=True)
        np.savez(p, hu=s.volume.array, spacing=np.asarray(s.volume.spacing_mm), origin=np.asarray(s.volume.origin_mm),
                 direction=s.volume.direction, labels=out.labels, lung=out.lung_labels,
                 truth=json.dumps({"nodules": s.truth["nodules"]}))
    return out


def _label_of(nod: dict, n: int) -> int:
    for key in ("label", "id"):
        v = nod.get(key)
        if isinstance(v, (int, np.integer)):
            return int(v)
    return n + 1


def _sens(per_nodule: list[dict], min_d: float) -> float | None:
    rel = [r for r in per_nodule if r["diameter_mm"] >= min_d]
    return sum(r["found"] for r in rel) / len(rel) if rel else None


def _fp_per_scan(scans: list[ScanDetections]) -> float:
    fp = 0
    for s in scans:
        hit, _ = match_scan(s)
        fp += sum(h is None for h in hit)
    return fp / max(len(scans), 1)


# ------------------------------------------------------------------------------------------ real CT
@dataclass
class ReaderNodule:
    reader: int
    mask: np.ndarray  # bool [k, j, i] on the volume grid (only the slices present in the volume)
    centre_mm: np.ndarray


def parse_lidc_contours(xml_path: Path | str, volume: Volume) -> tuple[list[ReaderNodule], list[np.ndarray]]:
    """LIDC reads (``annotations-lidc.xml``) rasterised on ``volume``'s grid.

    Returns each reader's nodules ≥ 3 mm (contours, inclusion regions filled, exclusions removed; only
    contours whose ``imageZposition`` matches a slice of the volume) and the centres (mm) of the small
    nodules (< 3 mm, one point) and contoured nodules outside the slab, whose hits are not false positives.
    """
    from skimage.draw import polygon, polygon_perimeter

    root = ET.parse(str(xml_path)).getroot()
    ns = {"l": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {"l": ""}
    q = (lambda t: f"l:{t}") if ns["l"] else (lambda t: t)
    shape = volume.array.shape
    zs = np.array([volume.voxel_to_mm([0, 0, k])[2] for k in range(shape[0])])
    tol = 0.5 * volume.spacing_mm[2]
    nodules: list[ReaderNodule] = []
    others: list[np.ndarray] = []
    for r, session in enumerate(root.findall(q("readingSession"), ns)):
        for node in session.findall(q("unblindedReadNodule"), ns):
            mask = np.zeros(shape, dtype=bool)
            pts_all = []
            for roi in node.findall(q("roi"), ns):
                z = float(roi.find(q("imageZposition"), ns).text)
                inclusion = (roi.find(q("inclusion"), ns).text or "").strip().upper() == "TRUE"
                xs = [int(e.find(q("xCoord"), ns).text) for e in roi.findall(q("edgeMap"), ns)]
                ys = [int(e.find(q("yCoord"), ns).text) for e in roi.findall(q("edgeMap"), ns)]
                pts_all.extend((x, y, z) for x, y in zip(xs, ys))
                k = int(np.argmin(np.abs(zs - z)))
                if abs(zs[k] - z) > tol or len(xs) < 3:
                    continue
                rr, cc = polygon(ys, xs, shape=shape[1:])
                pr, pc = polygon_perimeter(ys, xs, shape=shape[1:])
                sl = np.zeros(shape[1:], dtype=bool)
                sl[rr, cc] = True
                sl[pr, pc] = True
                if inclusion:
                    mask[k] |= sl
                else:
                    mask[k] &= ~sl
            if mask.any():
                kji = np.argwhere(mask).mean(axis=0)
                nodules.append(ReaderNodule(r, mask, volume.voxel_to_mm(kji[::-1])))
            elif pts_all:
                x, y, z = np.mean(np.asarray(pts_all, dtype=float), axis=0)
                xy = volume.voxel_to_mm([x, y, 0])[:2]  # axial series: in-plane mm from the pixel position
                others.append(np.array([xy[0], xy[1], z]))
    return nodules, others


def consensus_groups(nodules: list[ReaderNodule], *, dist_mm: float = 10.0) -> list[dict]:
    """Group the readers' nodules that overlap or lie within ``dist_mm``; 50 % consensus mask per group."""
    groups: list[list[ReaderNodule]] = []
    for n in nodules:
        for g in groups:
            if any((n.mask & m.mask).any() or np.linalg.norm(n.centre_mm - m.centre_mm) < dist_mm for m in g):
                g.append(n)
                break
        else:
            groups.append([n])
    out = []
    for g in groups:
        readers = {n.reader for n in g}
        votes = np.sum([n.mask for n in g], axis=0)
        cons = votes >= max(1, int(np.ceil(0.5 * len(readers))))
        out.append({"readers": len(readers), "mask": cons, "centre_mm": np.mean([n.centre_mm for n in g], axis=0)})
    return sorted(out, key=lambda g: -g["readers"])


def _equivalent_diameter(mask: np.ndarray, volume: Volume) -> float:
    return float((6.0 * mask.sum() * np.prod(volume.spacing_mm) / np.pi) ** (1 / 3))


def _load_real(folder: Path):
    from pipelines.ingest import load_study
    from pipelines.lungmask import segment_lungs

    vol = load_study(folder).volume
    return vol, segment_lungs(vol)


def evaluate_lidc_0001(folder: Path, *, model=None, backend="torch", device=None) -> dict[str, Any]:
    vol, lungs = _load_real(folder)
    det = detect_nodules(vol, lungs.labels, model=model, backend=backend, device=device)
    nods, others = parse_lidc_contours(folder / "annotations-lidc.xml", vol)
    groups = consensus_groups(nods)
    out: dict[str, Any] = {"series": folder.name, "shape_kji": list(vol.array.shape), "spacing_mm": list(vol.spacing_mm),
                           "candidates": len(det.candidates), "model": det.model_info.model_dump(),
                           "seconds": det.timings_s.get("total"), "consensus_nodules": []}
    used = set()
    for g in groups:
        d = _equivalent_diameter(g["mask"], vol)
        r = max(d / 2.0, 5.0)
        hits = [n for n, c in enumerate(det.candidates)
                if np.linalg.norm(candidate_centre_mm(vol, c) - g["centre_mm"]) <= r
                or (c.full_mask(vol.array.shape) & g["mask"]).any()]
        rec = {"readers": g["readers"], "consensus_voxels": int(g["mask"].sum()),
               "consensus_equivalent_diameter_mm_in_slab": round(d, 2), "found": bool(hits)}
        if hits:
            best = max(hits, key=lambda n: dice(det.candidates[n].full_mask(vol.array.shape), g["mask"]))
            used.update(hits)
            c = det.candidates[best]
            rec.update({"confidence": round(c.confidence, 4), "dice_vs_50pct_consensus": round(dice(c.full_mask(vol.array.shape), g["mask"]), 4),
                        "candidate_voxels": int(c.mask.sum())})
        out["consensus_nodules"].append(rec)
    fps = [n for n, c in enumerate(det.candidates) if n not in used
           and not any(np.linalg.norm(candidate_centre_mm(vol, c) - o) < 10 for o in others)]
    out["false_positives"] = len(fps)
    return out


def parse_voc_boxes(folder: Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """PASCAL VOC boxes per SOPInstanceUID (file name): (xmin, ymin, xmax, ymax) in pixels (column, row)."""
    out: dict[str, list[tuple[int, int, int, int]]] = {}
    for p in sorted(folder.glob("*.xml")):
        root = ET.parse(str(p)).getroot()
        for obj in root.findall("object"):
            bb = obj.find("bndbox")
            out.setdefault(p.stem, []).append(tuple(int(float(bb.find(t).text)) for t in ("xmin", "ymin", "xmax", "ymax")))
    return out


def _box_voxels_on(vol: Volume, folder: Path, boxes: dict) -> list[tuple[int, int, int, int, int]]:
    """Boxes mapped onto ``vol``'s grid through each annotated file's own geometry: (k, i0, j0, i1, j1)."""
    import pydicom

    out = []
    for f in folder.rglob("*.dcm"):
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not a readable DICOM file: no box there
            continue
        uid = str(getattr(ds, "SOPInstanceUID", ""))
        if uid not in boxes:
            continue
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        ps = np.asarray(ds.PixelSpacing, dtype=float)  # row spacing, column spacing
        for x0, y0, x1, y1 in boxes[uid]:
            corners = [ipp + iop[:3] * x * ps[1] + iop[3:] * y * ps[0] for x, y in ((x0, y0), (x1, y1))]
            a, b = (vol.mm_to_voxel(c) for c in corners)
            k = int(round((a[2] + b[2]) / 2))
            out.append((k, int(np.floor(min(a[0], b[0]))), int(np.floor(min(a[1], b[1]))),
                        int(np.ceil(max(a[0], b[0]))), int(np.ceil(max(a[1], b[1])))))
    return out


def evaluate_pet_ct_a0001(folder: Path, *, model=None, backend="torch", device=None) -> dict[str, Any]:
    vol, lungs = _load_real(folder)
    det = detect_nodules(vol, lungs.labels, model=model, backend=backend, device=device)
    vboxes = _box_voxels_on(vol, folder, parse_voc_boxes(folder / "tumour-boxes"))
    box_mask = np.zeros(vol.array.shape, dtype=bool)
    for k, i0, j0, i1, j1 in vboxes:
        if 0 <= k < box_mask.shape[0]:
            box_mask[k, max(j0, 0):j1 + 1, max(i0, 0):i1 + 1] = True
    inside = []
    for c in det.candidates:
        m = c.full_mask(vol.array.shape)
        on_box_slices = m[np.unique([b[0] for b in vboxes if 0 <= b[0] < m.shape[0]])] if vboxes else m[:0]
        frac = float((m & box_mask).sum()) / max(int(on_box_slices.sum()), 1)
        i, j, k = c.center_voxel
        inside.append({"confidence": round(c.confidence, 4), "centre_in_box": bool(box_mask[k, j, i]),
                       "fraction_inside_boxes_on_box_slices": round(frac, 3), "voxels": int(c.mask.sum())})
    found = any(r["centre_in_box"] for r in inside)
    return {"series": folder.name, "shape_kji": list(vol.array.shape), "spacing_mm": list(vol.spacing_mm),
            "boxes_mapped": len(vboxes), "candidates": len(det.candidates), "tumour_found_in_boxes": found,
            "false_positives": sum(not r["centre_in_box"] and r["fraction_inside_boxes_on_box_slices"] == 0 for r in inside),
            "candidate_details": inside, "seconds": det.timings_s.get("total"), "model": det.model_info.model_dump()}


def evaluate_real(ct_root: Path, *, model=None, backend="torch", device=None) -> dict[str, Any]:
    """All real series under ``ct_root``: annotated ones scored, the others run and their candidates counted."""
    from pipelines.errors import PrereadError

    out: dict[str, Any] = {"set": "real", "series": {}}
    for folder in sorted(p for p in ct_root.iterdir() if p.is_dir()):
        name = folder.name
        try:
            if name == "lidc-idri-0001":
                out["series"][name] = evaluate_lidc_0001(folder, model=model, backend=backend, device=device)
            elif name == "lung-pet-ct-dx-a0001":
                out["series"][name] = evaluate_pet_ct_a0001(folder, model=model, backend=backend, device=device)
            else:
                vol, lungs = _load_real(folder)
                det = detect_nodules(vol, lungs.labels, model=model, backend=backend, device=device)
                out["series"][name] = {"shape_kji": list(vol.array.shape), "spacing_mm": list(vol.spacing_mm),
                                       "candidates": len(det.candidates),
                                       "confidences": [round(c.confidence, 3) for c in det.candidates],
                                       "seconds": det.timings_s.get("total")}
        except PrereadError as err:  # a series the pipeline refuses (e.g. gantry tilt): reported, not fatal
            out["series"][name] = {"refused": err.one_line()}
    return out


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A few human-readable lines: CPM, sensitivity, FPs, Dice; the real series' headline figures."""
    lines = []
    s = results.get("synthetic")
    if s:
        fr = s["froc"]
        sens = ", ".join(f"{k}: {v:.3f}" for k, v in fr["sensitivity_at_fp_per_scan"].items())
        lines.append(f"synthetic ({fr['scans']} scans, {fr['nodules']} nodules >= {s['min_diameter_mm']} mm): "
                     f"CPM {fr['cpm']:.3f}; sensitivity at FP/scan {{{sens}}}")
        dk = next(k for k in s if k.startswith("dice_mean"))
        lines.append(f"operating point: sensitivity {s['sensitivity_at_operating_point']}, "
                     f"FP/scan {s['fp_per_scan_at_operating_point']:.2f}; {dk} {s[dk]}; "
                     f"mean |diameter error| {s['diameter_abs_error_mm_mean']} mm")
    r = results.get("real")
    if r:
        for name, v in r["series"].items():
            if "refused" in v:
                lines.append(f"{name}: refused ({v['refused']})")
            elif "consensus_nodules" in v:
                main = v["consensus_nodules"][0] if v["consensus_nodules"] else {}
                lines.append(f"{name}: nodule found {main.get('found')}, Dice vs 50% consensus "
                             f"{main.get('dice_vs_50pct_consensus')}, FPs {v['false_positives']}")
            elif "tumour_found_in_boxes" in v:
                lines.append(f"{name}: tumour found in boxes {v['tumour_found_in_boxes']}, FPs {v['false_positives']}")
            else:
                lines.append(f"{name}: {v['candidates']} candidates")
    return lines
