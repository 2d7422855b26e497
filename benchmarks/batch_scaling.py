"""Throughput of ``preread batch`` on an embedded Ray with 1..N inference workers, and per-stage times.

    python benchmarks/batch_scaling.py --studies 8 --workers 1 2 [--preset fast]

Prints a table (studies/hour per worker count, scaling efficiency = throughput(N) / (N × throughput(1))),
writes benchmarks/results/<hardware>/batch_scaling.json and two plots (per-stage time per study,
throughput against workers).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.hardware import hardware_info, hardware_slug  # noqa: E402

log = logging.getLogger("benchmarks.batch_scaling")
STAGES = ("report", "ingest", "preprocess", "infer", "measure", "compare")


def make_studies(root: Path, n: int, seed: int, preset: str) -> list[Path]:
    from training.synthetic import SynthConfig, make_study, write_study

    out = []
    for i in range(n):
        study = make_study(seed + i, SynthConfig.preset(preset))
        out.append(write_study(study, root / f"study-{i:03d}"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--seed", type=int, default=7000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import ray

    from serving.batch import discover_studies, init_ray, run_batch

    hw = hardware_info()
    results = {"hardware": hw, "settings": vars(args) | {"out": str(args.out)}, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_studies(root, args.studies, args.seed, args.preset)
        log.info("made %d synthetic studies in %.1f s", args.studies, time.perf_counter() - t0)
        studies = discover_studies([root])
        init_ray(None)
        try:
            # Warm-up: Ray worker start-up and model load are paid once, not per run.
            run_batch(studies[:1], workers=1, show_progress=False)
            for n in args.workers:
                t0 = time.perf_counter()
                rows = run_batch(studies, workers=n, show_progress=False)
                wall = time.perf_counter() - t0
                done = [r for r in rows if r["error"] is None]
                stage_means = {}
                for stage in STAGES:
                    vals = [json.loads(r["result_json"])["timings_s"].get(stage, 0.0) for r in done]
                    stage_means[stage] = round(statistics.fmean(vals), 3) if vals else None
                results["runs"].append({
                    "workers": n, "studies": len(rows), "done": len(done), "wall_s": round(wall, 2),
                    "studies_per_hour": round(3600 * len(done) / wall, 1) if wall > 0 else None,
                    "stage_mean_s": stage_means, "actors_used": sorted({r["actor"] for r in done}),
                })
                log.info("workers=%d: %d/%d done in %.1f s", n, len(done), len(rows), wall)
        finally:
            ray.shutdown()

    base = results["runs"][0]["studies_per_hour"] or 0.0
    base_n = results["runs"][0]["workers"]
    for run in results["runs"]:
        run["scaling_efficiency"] = (round(run["studies_per_hour"] / (base * run["workers"] / base_n), 3)
                                     if base else None)
    print(f"hardware: {hw['cpu']} ({hw['cpu_count']} cores), gpu: {hw['gpu']}; torch {hw['versions']['torch']}, "
          f"ray {hw['versions']['ray']}")
    print(f"{'workers':>8} {'studies/h':>10} {'wall s':>8} {'efficiency':>10}   mean stage s")
    for run in results["runs"]:
        stages = " ".join(f"{k}={v}" for k, v in run["stage_mean_s"].items())
        print(f"{run['workers']:>8} {run['studies_per_hour']:>10} {run['wall_s']:>8} "
              f"{run['scaling_efficiency']:>10}   {stages}")

    out_dir = args.out or Path(__file__).resolve().parent / "results" / hardware_slug(hw)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "batch_scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    _plots(results, out_dir)
    print(f"wrote {out_dir / 'batch_scaling.json'}")
    return 0


def _plots(results: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, ax = plt.subplots(figsize=(6, 4))
    stages = [s for s in STAGES if runs[0]["stage_mean_s"].get(s) is not None]
    bottom = 0.0
    for stage in stages:
        v = runs[0]["stage_mean_s"][stage]
        ax.bar(["per study"], [v], bottom=bottom, label=stage)
        bottom += v
    ax.set_ylabel("seconds per study (1 worker)")
    ax.set_title("preread: time per stage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "stage_times.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["workers"] for r in runs]
    ax.plot(xs, [r["studies_per_hour"] for r in runs], "o-", label="measured")
    ax.plot(xs, [runs[0]["studies_per_hour"] * x / xs[0] for x in xs], "--", label="linear")
    ax.set_xlabel("inference workers")
    ax.set_ylabel("studies per hour")
    ax.set_title(f"preread batch throughput ({results['hardware']['cpu_count']} CPU cores)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "throughput_vs_workers.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
