"""Lung mask: Dice against reference labels, and speed of the coarse grid against the native grid.

    python benchmarks/lungmask.py [--synthetic N] [--seed 9100] [--skip-speed]

* TotalSegmentator example (``example_ct_sm.nii.gz`` with ``example_seg.nii.gz``, TotalSegmentator v2
  classes 10 LUL, 11 LLL, 12 RUL, 13 RML, 14 RLL, from ``totalsegmentator/map_to_binary.py``): Dice per
  lung side and for both lungs. This volume is an upper abdomen with the lung bases only.
* Synthetic studies (``training.synthetic.make_study``, when that module is present): Dice per side against
  ``lung_labels``, and per approximate lobe against ``lobe_labels`` when the study has them.
* Real series in ``../shared/data/ct``: time, lung volumes and warnings (no reference labels there).
* Speed: a 512x512x300 volume (lung-pet-ct-dx-a0001 interpolated to 300 slices), baseline = the same
  method on the native grid (coarse factors 1), ours = the default coarse grid; ratio and the Dice
  between the two results.

Writes benchmarks/results/<hardware>/lungmask.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.hardware import hardware_info, hardware_slug  # noqa: E402
from pipelines.lungmask import LOBE_CODES, load_config, segment_lungs  # noqa: E402
from pipelines.paths import SHARED_DATA_DIR  # noqa: E402
from pipelines.types import Volume  # noqa: E402

log = logging.getLogger("benchmarks.lungmask")
TS_LOBES = {10: "LUL", 11: "LLL", 12: "RUL", 13: "RML", 14: "RLL"}  # TotalSegmentator v2 "total" task
TS_RIGHT, TS_LEFT = (12, 13, 14), (10, 11)


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    s = int(a.sum()) + int(b.sum())
    return None if s == 0 else round(2.0 * int((a & b).sum()) / s, 4)


def read_image(path: Path) -> Volume:
    """DICOM folder or NIfTI file → Volume (SimpleITK; ingest's reader once it lands)."""
    import SimpleITK as sitk

    if path.is_dir():
        r = sitk.ImageSeriesReader()
        files = r.GetGDCMSeriesFileNames(str(path), r.GetGDCMSeriesIDs(str(path))[0])
        r.SetFileNames(files)
        img = r.Execute()
    else:
        img = sitk.ReadImage(str(path))
    return Volume(array=sitk.GetArrayFromImage(img).astype(np.int16), spacing_mm=img.GetSpacing(),
                  origin_mm=img.GetOrigin(), direction=np.array(img.GetDirection()).reshape(3, 3))


def bench_totalsegmentator(root: Path) -> dict:
    ts = root / "ct" / "totalsegmentator-examples"
    vol = read_image(ts / "example_ct_sm.nii.gz")
    ref = read_image(ts / "example_seg.nii.gz").array
    t0 = time.perf_counter()
    seg = segment_lungs(vol)
    dt = time.perf_counter() - t0
    right, left = np.isin(ref, TS_RIGHT), np.isin(ref, TS_LEFT)
    return {
        "case": "totalsegmentator example_ct_sm (lung bases only, 3 mm)",
        "shape_kji": list(vol.array.shape), "time_s": round(dt, 3),
        "dice_right": dice(seg.labels == 1, right), "dice_left": dice(seg.labels == 2, left),
        "dice_both": dice(seg.labels > 0, right | left),
        "reference_ml": {"right": round(right.sum() * np.prod(vol.spacing_mm) / 1000, 1),
                         "left": round(left.sum() * np.prod(vol.spacing_mm) / 1000, 1)},
        "ours_ml": {"right": round(seg.volume_ml(1), 1), "left": round(seg.volume_ml(2), 1)},
        "lobes": "not assigned (lung apices outside the volume)" if seg.lobes is None else "assigned",
        "warnings": seg.warnings,
    }


def bench_synthetic(n: int, seed: int) -> dict:
    try:
        from training.synthetic import SynthConfig, make_study
    except ImportError as err:
        return {"skipped": f"training.synthetic not available: {err}"}
    rows = []
    for s in range(seed, seed + n):
        try:
            study = make_study(s, SynthConfig.preset("fast"))
        except Exception as err:  # the generator is developed in parallel; say so instead of losing the run
            return {"skipped": f"training.synthetic.make_study({s}) failed: {type(err).__name__}: {err}"}
        vol = study.volume
        truth = np.asarray(study.lung_labels)
        t0 = time.perf_counter()
        seg = segment_lungs(vol)
        row = {"seed": s, "shape_kji": list(vol.array.shape), "time_s": round(time.perf_counter() - t0, 3),
               "dice_right": dice(seg.labels == 1, truth == 1), "dice_left": dice(seg.labels == 2, truth == 2),
               "dice_both": dice(seg.labels > 0, truth > 0), "warnings": seg.warnings}
        nod = np.asarray(study.labels)
        truth_by_label = {int(t.get("label", t.get("id"))): t for t in study.truth.get("nodules", [])}
        cover, detail = [], []
        for n in np.unique(nod[nod > 0]):
            c = float((seg.labels[nod == n] > 0).mean())
            cover.append(c)
            t = truth_by_label.get(int(n), {})
            detail.append({"label": int(n), "mean_diameter_mm": t.get("mean_diameter_mm"),
                           "placement": t.get("placement"), "fraction_inside_mask": round(c, 4)})
        row["nodules"] = len(cover)
        row["nodule_detail"] = detail
        row["nodule_voxels_inside_mask_min"] = round(min(cover), 4) if cover else None
        lobes_truth = getattr(study, "lobe_labels", None)
        if lobes_truth is not None and seg.lobes is not None:
            lobes_truth = np.asarray(lobes_truth)
            row["dice_lobes_approximate"] = {name: dice(seg.lobes == c, lobes_truth == c)
                                             for name, c in LOBE_CODES.items()}
        rows.append(row)
    out: dict = {"n": len(rows), "seeds": [seed, seed + n - 1], "studies": rows}
    for key in ("dice_right", "dice_left", "dice_both"):
        vals = [r[key] for r in rows if r[key] is not None]
        out[f"mean_{key}"] = round(float(np.mean(vals)), 4) if vals else None
        out[f"min_{key}"] = round(float(np.min(vals)), 4) if vals else None
    cov = [r["nodule_voxels_inside_mask_min"] for r in rows if r.get("nodule_voxels_inside_mask_min") is not None]
    out["nodule_voxels_inside_mask_min"] = round(float(np.min(cov)), 4) if cov else None
    out["nodules"] = int(sum(r["nodules"] for r in rows))
    big = [d for r in rows for d in r["nodule_detail"] if (d["mean_diameter_mm"] or 0) >= 5.0]
    out["nodules_ge_5mm"] = len(big)
    out["nodules_ge_5mm_fraction_inside_min"] = round(min(d["fraction_inside_mask"] for d in big), 4) if big else None
    jp = [d for r in rows for d in r["nodule_detail"] if d["placement"] == "juxtapleural"]
    out["juxtapleural_fraction_inside"] = [d["fraction_inside_mask"] for d in jp]
    lobe_rows = [r["dice_lobes_approximate"] for r in rows if "dice_lobes_approximate" in r]
    if lobe_rows:
        out["mean_dice_lobes_approximate"] = {
            k: round(float(np.mean([r[k] for r in lobe_rows if r[k] is not None])), 4) for k in LOBE_CODES}
    return out


def bench_real(root: Path) -> list[dict]:
    rows = []
    for name in ("lidc-idri-0001", "lidc-idri-0002", "lidc-idri-0003", "lung-pet-ct-dx-a0001/series-2-lung-kernel",
                 "lung-pet-ct-dx-a0002"):
        vol = read_image(root / "ct" / name)
        t0, c0 = time.perf_counter(), time.process_time()
        seg = segment_lungs(vol)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        # sanity of the sides: the right lung's centre lies at smaller LPS x than the left's
        cx = {}
        for lab in (1, 2):
            pts = np.argwhere(seg.labels == lab)
            cx[lab] = float(vol.voxel_to_mm(pts.mean(0)[::-1])[0]) if len(pts) else None
        rows.append({"series": name, "shape_kji": list(vol.array.shape), "time_s": round(dt, 3),
                     "cpu_s": round(cpu, 3),
                     "right_ml": round(seg.volume_ml(1), 1), "left_ml": round(seg.volume_ml(2), 1),
                     "right_centre_x_mm": cx[1], "left_centre_x_mm": cx[2],
                     "lobes_assigned": seg.lobes is not None, "warnings": seg.warnings})
    return rows


def bench_speed(root: Path, repeats: int = 1) -> dict:
    from scipy import ndimage as ndi

    src = read_image(root / "ct" / "lung-pet-ct-dx-a0001" / "series-2-lung-kernel")
    k_out = 300
    zoom = k_out / src.array.shape[0]
    arr = ndi.zoom(src.array, (zoom, 1, 1), order=1).astype(np.int16)
    sx, sy, sz = src.spacing_mm
    vol = Volume(array=arr, spacing_mm=(sx, sy, sz * src.array.shape[0] / k_out), origin_mm=src.origin_mm,
                 direction=src.direction)
    cfg = load_config()
    native = cfg.model_copy(update={"coarse_inplane_mm": min(sx, sy) / 2, "coarse_slice_mm": vol.spacing_mm[2] / 2})

    def best(c) -> tuple[float, float, object]:
        walls, cpus, seg = [], [], None
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            seg = segment_lungs(vol, config=c)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        return min(walls), min(cpus), seg

    load_before = os.getloadavg()[0]
    t_base, c_base, seg_base = best(native)
    t_ours, c_ours, seg_ours = best(cfg)
    return {
        "note": "wall time depends on the machine's load (shared by several users); CPU time of this "
                "single-threaded process is the steadier figure",
        "load_average_1min_before": round(load_before, 2), "load_average_1min_after": round(os.getloadavg()[0], 2),
        "baseline_cpu_s": round(c_base, 3), "ours_cpu_s": round(c_ours, 3),
        "speedup_cpu": round(c_base / c_ours, 2),
        "volume": f"lung-pet-ct-dx-a0001 lung kernel interpolated to {arr.shape} (k, j, i), "
                  f"spacing {tuple(round(s, 3) for s in vol.spacing_mm)} mm",
        "baseline": "same method on the native grid", "baseline_s": round(t_base, 3),
        "ours": f"coarse grid ~{cfg.coarse_inplane_mm} mm in-plane, {cfg.coarse_slice_mm} mm slices",
        "ours_s": round(t_ours, 3), "speedup": round(t_base / t_ours, 2), "repeats_best_of": repeats,
        "dice_ours_vs_native": dice(seg_ours.labels > 0, seg_base.labels > 0),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic", type=int, default=5, help="number of synthetic studies")
    ap.add_argument("--seed", type=int, default=9100, help="first synthetic seed")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    hw = hardware_info()
    res: dict = {"hardware": hw, "settings": {"synthetic": args.synthetic, "seed": args.seed,
                                              "config": load_config().model_dump()}}
    if SHARED_DATA_DIR.is_dir():
        res["totalsegmentator"] = bench_totalsegmentator(SHARED_DATA_DIR)
        res["real_series"] = bench_real(SHARED_DATA_DIR)
        if not args.skip_speed:
            res["speed"] = bench_speed(SHARED_DATA_DIR)
    else:
        res["totalsegmentator"] = {"skipped": f"no real data at {SHARED_DATA_DIR}"}
    res["synthetic"] = bench_synthetic(args.synthetic, args.seed)

    t = res["totalsegmentator"]
    if "dice_both" in t:
        print(f"TotalSegmentator lung bases: Dice right {t['dice_right']}  left {t['dice_left']}  "
              f"both {t['dice_both']}")
    s = res["synthetic"]
    if "skipped" in s:
        print(f"synthetic: {s['skipped']}")
    else:
        print(f"synthetic (n={s['n']}): mean Dice right {s['mean_dice_right']}  left {s['mean_dice_left']}  "
              f"both {s['mean_dice_both']}  (min both {s['min_dice_both']})")
        print(f"  synthetic nodules ({s['nodules']}): smallest fraction of a nodule's voxels inside the mask "
              f"{s['nodule_voxels_inside_mask_min']}; nodules >= 5 mm ({s['nodules_ge_5mm']}): "
              f"{s['nodules_ge_5mm_fraction_inside_min']}; juxtapleural: {s['juxtapleural_fraction_inside']}")
        if "mean_dice_lobes_approximate" in s:
            print(f"  approximate lobes, mean Dice: {s['mean_dice_lobes_approximate']}")
    for r in res.get("real_series", []):
        print(f"{r['series']:45s} {r['time_s']:6.2f} s (CPU {r['cpu_s']:5.2f} s)  right {r['right_ml']:7.1f} mL  left {r['left_ml']:7.1f} mL"
              f"  lobes {'yes' if r['lobes_assigned'] else 'no'}")
    if "speed" in res:
        sp = res["speed"]
        print(f"speed on {sp['volume']}:\n  baseline (native grid) wall {sp['baseline_s']} s, CPU {sp['baseline_cpu_s']} s"
              f"\n  ours (coarse grid)     wall {sp['ours_s']} s, CPU {sp['ours_cpu_s']} s"
              f"\n  ratio wall {sp['speedup']}x, CPU {sp['speedup_cpu']}x; Dice ours vs native {sp['dice_ours_vs_native']}"
              f"; load average {sp['load_average_1min_before']} -> {sp['load_average_1min_after']}")
    print(f"hardware: {hw['cpu']} ({hw['cpu_count']} cores), numpy {np.__version__}")
    out = args.out or Path(__file__).resolve().parent / "results" / hardware_slug(hw) / "lungmask.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
