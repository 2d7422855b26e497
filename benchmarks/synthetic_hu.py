"""Tissue HU of synthetic studies beside the real chest CT series in ../shared/data/ct, side by side.

    python benchmarks/synthetic_hu.py [--preset demo] [--seeds 0 1 2 3]

The same statistics (``training.synthetic.hu_stats.tissue_stats``: air outside the body, lung, the fat and
soft-tissue histogram peaks, bone percentiles) are computed on each real series and on synthetic studies,
printed as one table, and written to benchmarks/results/<hardware>/synthetic_hu.json. The last line says
whether every synthetic value lies inside the range spanned by the real series (widened by a tolerance
per tissue, since four real series do not span all of real CT).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.hardware import hardware_info, hardware_slug  # noqa: E402

REAL = ("lung-pet-ct-dx-a0001/series-3-soft-kernel", "lung-pet-ct-dx-a0001/series-2-lung-kernel",
        "lung-pet-ct-dx-a0002", "lidc-idri-0001", "lidc-idri-0002", "lidc-idri-0003")
# (tissue, statistic, tolerance in HU around the real range)
ROWS = (("air", "median", 30), ("lung", "median", 40), ("fat", "mode", 30), ("soft_tissue", "mode", 25),
        ("bone", "p99", 250))


def main() -> int:
    from pipelines.ingest import load_study
    from pipelines.paths import SHARED_DATA_DIR
    from training.synthetic import SynthConfig, make_study
    from training.synthetic.hu_stats import tissue_stats

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--real", type=Path, default=SHARED_DATA_DIR / "ct")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    columns = []
    for rel in REAL:
        p = args.real / rel
        if not p.exists():
            continue
        res = load_study(p)
        v = res.volume
        columns.append({"name": f"real {rel}", "kind": "real", "kernel": str(v.metadata.get("kernel", "")),
                        "spacing_mm": list(v.spacing_mm), "stats": tissue_stats(v.array)})
        res.close()
    for seed in args.seeds:
        s = make_study(seed, SynthConfig.preset(args.preset))
        columns.append({"name": f"synthetic {args.preset} seed {seed}", "kind": "synthetic",
                        "kernel": s.volume.metadata["kernel"], "ctdi_vol_mgy": s.volume.metadata["ctdi_vol_mgy"],
                        "spacing_mm": list(s.volume.spacing_mm), "stats": tissue_stats(s.volume.array)})
    real = [c for c in columns if c["kind"] == "real"]
    synth = [c for c in columns if c["kind"] == "synthetic"]
    print(f"{'series':52s} " + " ".join(f"{t + ' ' + st:>18s}" for t, st, _ in ROWS))
    for c in columns:
        vals = [c["stats"][t].get(st) for t, st, _ in ROWS]
        print(f"{c['name'][:52]:52s} " + " ".join(f"{v:18.1f}" if v is not None else f"{'-':>18s}" for v in vals))
    verdict = {}
    if real:
        print("\nreal range (min..max) and synthetic range per tissue:")
        for t, st, tol in ROWS:
            rv = [c["stats"][t][st] for c in real if c["stats"][t].get(st) is not None]
            sv = [c["stats"][t][st] for c in synth if c["stats"][t].get(st) is not None]
            ok = bool(rv and sv and min(sv) >= min(rv) - tol and max(sv) <= max(rv) + tol)
            verdict[f"{t}.{st}"] = {"real": [min(rv), max(rv)] if rv else None, "synthetic": [min(sv), max(sv)] if sv else None,
                                    "tolerance_hu": tol, "inside": ok}
            print(f"  {t + ' ' + st:20s} real {min(rv):8.1f} .. {max(rv):8.1f}   synthetic {min(sv):8.1f} .. "
                  f"{max(sv):8.1f}   {'inside' if ok else 'OUTSIDE'} (±{tol} HU)")
        print("all synthetic tissue values inside the real ranges:", all(v["inside"] for v in verdict.values()))
    hw = hardware_info()
    out = args.out or Path(__file__).resolve().parent / "results" / hardware_slug(hw) / "synthetic_hu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "synthetic_hu", "hardware": hw, "settings": {"preset": args.preset,
                                                                                       "seeds": args.seeds},
                               "columns": columns, "verdict": verdict}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
