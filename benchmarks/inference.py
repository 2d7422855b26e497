"""Speed of the AI read on one whole chest CT: ours (lungs only, coarse then fine) against plain MONAI.

Baseline (as in the MONAI lung nodule bundle's recipe): the whole volume resampled to 0.703×0.703×1.25 mm,
``sliding_window_inference`` with a 96³ window and 0.25 overlap, the *same* network and weights, nodules =
connected components of probability ≥ the card's threshold. Ours: ``pipelines.infer.detect_nodules`` with
the lung mask (``pipelines.lungmask.segment_lungs``; its time is reported separately and in the total).

Each (method, backend) runs in its own subprocess so its peak resident memory (ru_maxrss) is its own.
Sensitivity: reference nodules ≥ 5 mm hit by a candidate centre within their radius (LUNA16 rule).

    nice -n 10 python benchmarks/inference.py [--preset full] [--seed 910000] [--backends torch onnxruntime]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("benchmarks.inference")
BASELINE_SPACING = (0.703, 0.703, 1.25)  # (x, y, z) mm


def _study_cache(preset: str, seed: int, cache_dir: Path) -> Path:
    p = cache_dir / f"synthetic-{preset}-{seed}.npz"
    if not p.is_file():
        from training.synthetic import SynthConfig, make_study

        t = time.perf_counter()
        s = make_study(seed, SynthConfig.preset(preset))
        refs = [{"center_voxel": list(map(float, n["center_voxel"])), "mean_diameter_mm": float(n["mean_diameter_mm"])}
                for n in s.truth["nodules"]]
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.savez(p, hu=s.volume.array, spacing=np.asarray(s.volume.spacing_mm), refs=json.dumps(refs))
        log.info("study generated in %.0f s", time.perf_counter() - t)
    return p


def _load(p: Path):
    from pipelines.types import Volume

    z = np.load(p)
    return Volume(array=z["hu"], spacing_mm=tuple(z["spacing"])), json.loads(str(z["refs"]))


def _sensitivity(volume, cand_ijk: list, refs: list, min_d: float = 5.0) -> tuple[float | None, int]:
    from training.evaluate import RefNodule, ScanDetections, match_scan

    rs = [RefNodule(volume.voxel_to_mm(r["center_voxel"]), r["mean_diameter_mm"], r["mean_diameter_mm"] >= min_d)
          for r in refs]
    hit, _ = match_scan(ScanDetections([volume.voxel_to_mm(c) for c in cand_ijk], [1.0] * len(cand_ijk), rs))
    counted = [n for n, r in enumerate(rs) if r.counted]
    found = {h for h in hit if h is not None and rs[h].counted}
    fps = sum(h is None for h in hit)
    return (len(found) / len(counted) if counted else None), fps


def run_one(method: str, backend: str, study: Path, device: str) -> dict:
    import torch
    from monai.inferers import sliding_window_inference
    from scipy import ndimage

    from pipelines.infer import detect_nodules, get_model
    from pipelines.preprocess import resample, window_hu

    vol, refs = _load(study)
    dev = torch.device(device)
    spec, be = get_model(None, backend, dev)
    warm = torch.zeros(1, 1, 32, 32, 32, device=dev)
    be(warm)  # load/initialise outside the timing
    out = {"method": method, "backend": be.name, "device": be.device, "precision": getattr(be, "precision", "fp32")}
    t0 = time.perf_counter()
    if method == "ours":
        from pipelines.lungmask import segment_lungs

        t = time.perf_counter()
        lungs = segment_lungs(vol)
        out["lungmask_s"] = time.perf_counter() - t
        det = detect_nodules(vol, lungs.labels, backend=backend, device=dev)
        out["model_s"] = det.timings_s["total"]
        out["timings_s"] = det.timings_s
        cands = [c.center_voxel for c in det.candidates]
    else:
        t = time.perf_counter()
        target = BASELINE_SPACING
        size = tuple(int(round(n * s / t_)) for n, s, t_ in zip(vol.array.shape, vol.spacing_mm[::-1], target[::-1]))
        img = resample(window_hu(torch.from_numpy(vol.array), spec.input.hu_window)[None, None].to(dev), size)
        out["preprocess_s"] = time.perf_counter() - t
        t = time.perf_counter()
        with torch.no_grad():
            prob = sliding_window_inference(img, (96, 96, 96), spec.inference.sw_batch_size, be, overlap=0.25,
                                            mode="constant", sw_device=dev, device=dev)[0, 0]
        out["model_s"] = time.perf_counter() - t
        lab, n = ndimage.label((prob >= spec.inference.threshold).cpu().numpy())
        scale = np.asarray(vol.array.shape) / np.asarray(size)
        cands = []
        for sl_i, sl in enumerate(ndimage.find_objects(lab), start=1):
            c = np.argwhere(lab[sl] == sl_i).mean(axis=0) + [s.start for s in sl]
            if (lab[sl] == sl_i).sum() * np.prod(target) >= spec.inference.min_volume_mm3:
                kji = (c + 0.5) * scale - 0.5
                cands.append([kji[2], kji[1], kji[0]])
    out["total_s"] = time.perf_counter() - t0
    out["sensitivity_ge_5mm"], out["false_positives"] = _sensitivity(vol, cands, refs)
    out["candidates"] = len(cands)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if dev.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="full")
    ap.add_argument("--seed", type=int, default=910000)
    ap.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--cache", default=str(REPO / ".cache" / "benchmarks"))
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "BACKEND"), help=argparse.SUPPRESS)
    ap.add_argument("--study", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], Path(args.study), device)))
        return 0
    from benchmarks.hardware import hardware_info, hardware_slug

    study = _study_cache(args.preset, args.seed, Path(args.cache))
    vol, refs = _load(study)
    rows = []
    for backend in args.backends:
        for method in ("baseline", "ours"):
            cmd = [sys.executable, __file__, "--one", method, backend, "--study", str(study), "--device", device]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if res.returncode != 0:
                rows.append({"method": method, "backend": backend, "error": res.stderr.strip().splitlines()[-1:]})
                continue
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    hw = hardware_info()
    print(f"{'backend':12} {'method':9} {'device':22} {'total s':>8} {'model s':>8} {'peak MB':>8} {'sens≥5mm':>8} {'FP':>4}")
    for r in rows:
        if "error" in r:
            print(f"{r['backend']:12} {r['method']:9} error: {r['error']}")
            continue
        print(f"{r['backend']:12} {r['method']:9} {r['device']:22} {r['total_s']:8.1f} {r['model_s']:8.1f} "
              f"{r['peak_rss_mb']:8.0f} {str(r['sensitivity_ge_5mm']):>8} {r['false_positives']:4d}")
    ratios = {}
    for backend in args.backends:
        b = next((r for r in rows if r.get("backend") in (backend, "onnxruntime" if backend == "onnx" else backend)
                  and r["method"] == "baseline" and "error" not in r), None)
        o = next((r for r in rows if r.get("backend") == b.get("backend") and r["method"] == "ours" and "error" not in r), None) if b else None
        if b and o:
            ratios[backend] = round(b["total_s"] / o["total_s"], 2)
            print(f"{backend}: ours is {ratios[backend]}x faster than the plain MONAI baseline (end to end incl. lung mask)")
    result = {"benchmark": "inference", "study": {"preset": args.preset, "seed": args.seed,
              "shape_kji": list(vol.array.shape), "spacing_mm": list(vol.spacing_mm), "nodules": len(refs)},
              "baseline": {"spacing_mm": BASELINE_SPACING, "roi": [96, 96, 96], "overlap": 0.25},
              "rows": rows, "speedup": ratios, "hardware": hw}
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / hardware_slug(hw) / "inference.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
