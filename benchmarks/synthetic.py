"""Speed of the synthetic chest CT generator (``training.synthetic.make_study``), per preset.

    python benchmarks/synthetic.py [--full 2] [--fast 5] [--seed 100]

For each preset it times ``make_study`` (wall and CPU seconds, per stage) and compares it in the same run
with two references:

* the budget the project set (full 512×512×300 study with its report: 20 s; fast preset: 1.5 s);
* reading the same study back from disk through ``pipelines.ingest.load_study`` (the DICOM series
  ``write_study`` wrote) — the alternative to generating on the fly is caching the series.

The machine is shared: the load average is recorded before and after each study and CPU seconds are
reported beside wall seconds. Writes benchmarks/results/<hardware>/synthetic.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.hardware import hardware_info, hardware_slug  # noqa: E402

log = logging.getLogger("benchmarks.synthetic")
BUDGET_S = {"full": 20.0, "fast": 1.5}


def run_preset(preset: str, n: int, seed: int, tmp: Path) -> dict:
    from pipelines.ingest import load_study
    from training.synthetic import SynthConfig, make_study, write_study

    cfg = SynthConfig.preset(preset)
    rows = []
    for i in range(n):
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        study = make_study(seed + i, cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        folder = write_study(study, tmp / f"{preset}-{i}", nifti=False)
        write_s = time.perf_counter() - t1
        t2, c2 = time.perf_counter(), time.process_time()
        res = load_study(folder / "dicom")
        read_wall, read_cpu = time.perf_counter() - t2, time.process_time() - c2
        same = bool((res.volume.array == study.volume.array).all())
        res.close()
        rows.append({"seed": seed + i, "shape_ijk": study.truth["shape_ijk"], "spacing_mm": study.truth["spacing_mm"],
                     "nodules": len(study.truth["nodules"]), "make_wall_s": round(wall, 3), "make_cpu_s": round(cpu, 3),
                     "stages_s": study.timings_s, "write_dicom_s": round(write_s, 3),
                     "ingest_wall_s": round(read_wall, 3), "ingest_cpu_s": round(read_cpu, 3),
                     "ingest_identical": same, "loadavg_before": round(load0, 2),
                     "loadavg_after": round(os.getloadavg()[0], 2)})
        log.info("%s seed %d: %s make %.2f s wall / %.2f s cpu, ingest %.2f s (load %.1f)", preset, seed + i,
                 "x".join(map(str, study.truth["shape_ijk"])), wall, cpu, read_wall, load0)
    med = {k: statistics.median(r[k] for r in rows) for k in ("make_wall_s", "make_cpu_s", "ingest_wall_s",
                                                                "ingest_cpu_s")}
    return {"preset": preset, "n": n, "studies": rows, "median": med, "budget_s": BUDGET_S.get(preset)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", type=int, default=2, help="studies of the full preset (512x512x300)")
    ap.add_argument("--fast", type=int, default=5, help="studies of the fast preset")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    hw = hardware_info()
    results = {"benchmark": "synthetic", "hardware": hw, "settings": {k: str(v) for k, v in vars(args).items()},
               "presets": []}
    with tempfile.TemporaryDirectory() as tmp:
        for preset, n in (("fast", args.fast), ("full", args.full)):
            if n > 0:
                results["presets"].append(run_preset(preset, n, args.seed, Path(tmp)))
    print(f"\nsynthetic studies on {hw['cpu']} ({hw['cpu_count']} cores, shared), numpy "
          f"{hw['versions'].get('numpy')}")
    print(f"{'preset':8s} {'shape (i,j,k)':>16s} {'make wall':>10s} {'make cpu':>9s} {'budget':>7s} "
          f"{'budget/wall':>11s} {'budget/cpu':>10s} {'ingest wall':>11s} {'make/ingest':>11s}")
    for p in results["presets"]:
        m = p["median"]
        shape = "x".join(map(str, p["studies"][0]["shape_ijk"]))
        b = p["budget_s"]
        p["ratios"] = {"budget_over_make_wall": round(b / m["make_wall_s"], 2),
                       "budget_over_make_cpu": round(b / m["make_cpu_s"], 2),
                       "make_wall_over_ingest_wall": round(m["make_wall_s"] / m["ingest_wall_s"], 2)}
        r = p["ratios"]
        print(f"{p['preset']:8s} {shape:>16s} {m['make_wall_s']:9.2f}s {m['make_cpu_s']:8.2f}s {b:6.1f}s "
              f"{r['budget_over_make_wall']:11.2f} {r['budget_over_make_cpu']:10.2f} {m['ingest_wall_s']:10.2f}s "
              f"{r['make_wall_over_ingest_wall']:11.2f}")
    out = args.out or Path(__file__).resolve().parent / "results" / hardware_slug(hw) / "synthetic.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
