"""Speed of lesion measurement: a 30 mm lesion mask on a 512 x 512 x 300 CT volume.

Ours: ``measure_mask`` (crops to the lesion's bounding box first) and ``measure_labels`` (binary mask →
connected components → one measurement each). Baseline: the same measurement code run on the whole
volume without cropping (``_measure_box`` with the full image as the box), which is what the crop saves.
Prints both and their ratio with the hardware and versions; writes benchmarks/results/measure_speed.json.

    python benchmarks/measure_speed.py [--repeats 5] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from importlib import metadata

import numpy as np

from benchmarks.measure_shapes import random_shape
from pipelines.measure import Plane, _measure_box, load_measurement_config, measure_labels, measure_mask
from pipelines.paths import REPO_ROOT
from pipelines.types import Volume

RESULTS = REPO_ROOT / "benchmarks" / "results" / "measure_speed.json"


def make_case(seed: int = 0, shape_kji=(300, 512, 512), spacing=(0.7, 0.7, 1.0), diameter_mm: float = 30.0):
    """CT-like volume (lung background with noise) holding one lobulated 30 mm lesion, and its mask."""
    rng = np.random.default_rng(seed)
    hu = rng.normal(-850.0, 20.0, size=shape_kji).astype(np.float32)
    vol = Volume(array=hu, spacing_mm=spacing, origin_mm=(-179.0, -179.0, -300.0))
    shape = random_shape(rng, "lobulated", diameter_mm)
    shape.center_mm = vol.voxel_to_mm([300.0, 220.0, 150.0])  # right of the image centre = patient left
    r = shape.bounding_radius()
    lo = np.floor(vol.mm_to_voxel(shape.center_mm - r)).astype(int)
    hi = np.ceil(vol.mm_to_voxel(shape.center_mm + r)).astype(int) + 1
    k, j, i = np.mgrid[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
    pts = vol.voxel_to_mm(np.column_stack([i.ravel(), j.ravel(), k.ravel()]))
    inside = (shape.implicit(pts) <= 0).reshape(k.shape)
    mask = np.zeros(shape_kji, dtype=bool)
    mask[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = inside
    hu[mask] = 40.0 + rng.normal(0, 20.0, int(mask.sum()))
    return vol, mask


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-baseline", action="store_true", help="skip the uncropped baseline (slow, ~2 GB RAM)")
    args = ap.parse_args(argv)
    vol, mask = make_case()
    cfg = load_measurement_config()
    m = measure_mask(vol, mask)  # warm-up (imports, config)
    ours, ours_all = timed(lambda: measure_mask(vol, mask), args.repeats)
    labels_t, labels_all = timed(lambda: measure_labels(vol, mask), args.repeats)
    res = {
        "benchmark": "measure_speed",
        "case": {"shape_kji": list(vol.array.shape), "spacing_mm": list(vol.spacing_mm), "lesion_voxels": int(mask.sum()),
                 "long_axis_mm": m.long_axis_mm, "mean_diameter_mm": m.mean_diameter_mm, "volume_mm3": m.volume_mm3},
        "ours_measure_mask_s": {"median": ours, "all": ours_all},
        "ours_measure_labels_s": {"median": labels_t, "all": labels_all},
        "environment": {"python": platform.python_version(), "machine": platform.machine(),
                        "processor": cpu_model(), "cpus": os.cpu_count(),
                        "load_avg_1min": os.getloadavg()[0],
                        **{lib: metadata.version(lib) for lib in ("numpy", "scipy", "scikit-image")}},
    }
    print(f"case: {vol.array.shape[::-1]} voxels (i, j, k) at {vol.spacing_mm} mm, lesion {int(mask.sum())} voxels, "
          f"long axis {m.long_axis_mm:.2f} mm, mean {m.mean_diameter_mm:.2f} mm")
    print(f"hardware: {res['environment']['processor']}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"numpy {res['environment']['numpy']}, scipy {res['environment']['scipy']}, "
          f"scikit-image {res['environment']['scikit-image']}")
    print(f"ours  measure_mask   (crop first): median {ours * 1000:8.1f} ms over {args.repeats}")
    print(f"ours  measure_labels (components): median {labels_t * 1000:8.1f} ms over {args.repeats}")
    if not args.skip_baseline:
        full = tuple(slice(0, n) for n in vol.array.shape)
        base, base_all = timed(lambda: _measure_box(vol, mask, full, cfg, Plane.AXIAL, None, None, True, None), 1)
        res["baseline_uncropped_s"] = {"median": base, "all": base_all}
        res["speedup_vs_uncropped"] = base / ours
        print(f"base  uncropped (whole volume)  : {base * 1000:8.1f} ms (1 run)")
        print(f"ratio baseline / ours           : {base / ours:8.1f} x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
