"""Speed of the AI read on one whole chest CT: ours (lungs only, coarse then fine) against plain MONAI.

* **Baseline** (the recipe of the MONAI lung nodule bundle): the whole volume windowed and resampled to
  0.703×0.703×1.25 mm, ``monai.inferers.sliding_window_inference`` with a 96³ window, 0.25 overlap and
  MONAI's default (constant) blending, the *same* network, weights and backend object; nodules = connected
  components of probability ≥ the card's ``threshold`` of at least ``min_volume_mm3``.
* **Ours**: ``pipelines.lungmask.segment_lungs`` then ``pipelines.infer.detect_nodules`` (lung box, coarse
  pass, fine pass around coarse regions only); the lung mask's time is part of our total.

Each (method, backend) runs in its own subprocess, so its peak resident memory (``ru_maxrss``) is its own;
the model is loaded and called once on a small input before the clock starts. Both methods run with the
same number of threads (``--threads``: torch intra-op threads and ONNX Runtime's intra-op pool).
Sensitivity: a reference nodule of the synthetic truth is found when a candidate centre lies within its
radius (LUNA16 rule, ``training.evaluate.match_scan``); reported for all nodules and for those ≥ 5 mm;
every candidate that hits no nodule is a false positive. Goal on the CPU: ours ≥ 3× faster at a
sensitivity at least the baseline's.

The full run (one 512×512×300 study, preset ``full``, seed 910000: the baseline sweeps 192 windows of 96³,
ours about a dozen; a few minutes per backend on 2 cores, the study is generated once in about 40 s)::

    nice -n 10 python benchmarks/inference.py --preset full --backends torch onnxruntime

writes ``benchmarks/results/<hardware>/inference.json``. A quick check on a small study::

    nice -n 19 python benchmarks/inference.py --preset fast --rows 64 --pixel-mm 2.5 --slices 40 --slice-mm 4 \\
        --json /tmp/inference.json

(a small study must be small in millimetres: the baseline resamples the field of view to 0.703 mm).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

log = logging.getLogger("benchmarks.inference")

BASELINE_SPACING_MM = (0.703, 0.703, 1.25)  # (x, y, z)
BASELINE_ROI = (96, 96, 96)
BASELINE_OVERLAP = 0.25
MIN_DIAMETER_MM = 5.0
GOAL_SPEEDUP = 3.0
METHODS = ("baseline", "ours")


# ------------------------------------------------------------------------------------------ the study


def synth_config(preset: str, *, rows: int | None = None, pixel_mm: float | None = None,
                 slices: int | None = None, slice_mm: float | None = None, nodules: int | None = None):
    """The ``training.synthetic`` preset, optionally smaller (for quick checks of the benchmarks).

    ``rows``: rows = cols; without ``pixel_mm`` the pixel spacing is scaled so the field of view stays the
    preset's. ``pixel_mm``: this pixel spacing (a smaller ``rows`` then gives a smaller field of view).
    ``slice_mm``: this slice thickness; a preset with a fixed slice count keeps its z coverage unless
    ``slices`` is given. ``slices``: this many slices, centred on the thorax. ``nodules``: exactly this many.
    """
    from pipelines.errors import ConfigError
    from training.synthetic import SynthConfig

    cfg = SynthConfig.preset(preset)
    over: dict = {}
    for name, v in (("rows", rows), ("slices", slices)):
        if v is not None and v < 1:
            raise ConfigError(f"--{name} must be positive, got {v}")
    for name, v in (("pixel-mm", pixel_mm), ("slice-mm", slice_mm)):
        if v is not None and not v > 0:
            raise ConfigError(f"--{name} must be positive, got {v}")
    if rows is not None:
        over.update(rows=rows, cols=rows)
        if pixel_mm is None:
            f = max(cfg.rows, cfg.cols) / float(rows)
            over["pixel_spacing_mm"] = tuple(round(s * f, 4) for s in cfg.pixel_spacing_mm)
    if pixel_mm is not None:
        over["pixel_spacing_mm"] = (float(pixel_mm), float(pixel_mm))
    if slice_mm is not None:
        over["slice_thickness_mm"] = (float(slice_mm),)
        if cfg.n_slices is not None and slices is None:
            over["n_slices"] = max(1, int(round(cfg.n_slices * max(cfg.slice_thickness_mm) / slice_mm)))
    if slices is not None:
        over["n_slices"] = int(slices)
    if nodules is not None:
        if nodules < 0:
            raise ConfigError(f"--nodules must be >= 0, got {nodules}")
        over.update(n_nodules=(nodules, nodules), p_no_nodule=0.0 if nodules else 1.0)
    return cfg.replace(**over) if over else cfg


def generator_digest() -> str:
    """Digest of the synthetic generator's code and tables: a cached study from another generator is redone."""
    h = hashlib.sha256()
    for f in sorted((REPO / "training" / "synthetic").glob("*.py")) + [REPO / "configs" / "synthetic.yaml"]:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


SIZE_OPTIONS = ("rows", "pixel_mm", "slices", "slice_mm", "nodules")


def study_tag(preset: str, **size) -> str:
    """Short name of a study variant for result and cache file names (just the preset when unchanged)."""
    short = {"rows": "r", "pixel_mm": "p", "slices": "s", "slice_mm": "t", "nodules": "n"}
    return preset + "".join(f"-{short[k]}{size[k]:g}" for k in SIZE_OPTIONS if size.get(k) is not None)


def add_study_options(ap: argparse.ArgumentParser, preset: str = "full") -> None:
    """The study options shared by the benchmarks of this folder."""
    ap.add_argument("--preset", default=preset, help="training.synthetic preset: fast, demo, full (512x512x300), "
                    "clinical")
    ap.add_argument("--rows", type=int, default=None, help="smaller study: rows = cols (field of view kept "
                    "unless --pixel-mm)")
    ap.add_argument("--pixel-mm", type=float, default=None, help="pixel spacing (mm)")
    ap.add_argument("--slices", type=int, default=None, help="number of slices")
    ap.add_argument("--slice-mm", type=float, default=None, help="slice thickness (mm)")
    ap.add_argument("--nodules", type=int, default=None, help="exactly this many nodules (default: drawn)")
    ap.add_argument("--seed", type=int, default=910000, help="study seed (never a training seed)")


def size_of(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in SIZE_OPTIONS}


def size_flags(size: dict) -> list[str]:
    return [f"--{k.replace('_', '-')} {v:g}" for k, v in size.items() if v is not None]


def make_cached_study(cfg, seed: int, cache_dir: Path, tag: str) -> Path:
    """The study as ``.npz`` (HU, geometry, truth nodules), generated once per generator version."""
    p = cache_dir / f"inference-{tag}-{generator_digest()}-{seed}.npz"
    if p.is_file():
        return p
    from training.synthetic import make_study

    t = time.perf_counter()
    s = make_study(seed, cfg)
    v = s.volume
    refs = [{"center_mm": [float(c) for c in n["center_mm"]], "mean_diameter_mm": float(n["mean_diameter_mm"]),
             "composition": n.get("composition")} for n in s.truth["nodules"]]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp.npz")
    np.savez(tmp, hu=v.array, spacing=np.asarray(v.spacing_mm), origin=np.asarray(v.origin_mm),
             direction=np.asarray(v.direction), refs=json.dumps(refs))
    tmp.replace(p)
    log.info("study %s generated in %.0f s", p.name, time.perf_counter() - t)
    return p


def load_cached_study(p: Path):
    """(Volume, reference nodules) from :func:`make_cached_study`'s file."""
    from pipelines.types import Volume

    z = np.load(p)
    vol = Volume(array=z["hu"], spacing_mm=tuple(float(s) for s in z["spacing"]),
                 origin_mm=tuple(float(o) for o in z["origin"]), direction=np.asarray(z["direction"]))
    return vol, json.loads(str(z["refs"]))


# --------------------------------------------------------------------------------------- measurement


def sensitivity(cand_mm: list, refs: list[dict], min_d: float = MIN_DIAMETER_MM) -> dict:
    """Found / total reference nodules (all, and ≥ ``min_d`` mm) and false positives, LUNA16 hit rule."""
    from training.evaluate import RefNodule, ScanDetections, match_scan

    rs = [RefNodule(np.asarray(r["center_mm"], dtype=np.float64), max(r["mean_diameter_mm"], 1e-3), True)
          for r in refs]
    hit, _ = match_scan(ScanDetections([np.asarray(c) for c in cand_mm], [1.0] * len(cand_mm), rs))
    found = {h for h in hit if h is not None}
    big = [n for n, r in enumerate(refs) if r["mean_diameter_mm"] >= min_d]
    return {
        "nodules": len(refs), "found": len(found),
        "sensitivity": round(len(found) / len(refs), 4) if refs else None,
        f"nodules_ge_{min_d:g}mm": len(big), f"found_ge_{min_d:g}mm": len(found & set(big)),
        f"sensitivity_ge_{min_d:g}mm": round(len(found & set(big)) / len(big), 4) if big else None,
        "false_positives": sum(h is None for h in hit),
    }


class CountedBackend:
    """A backend whose calls are counted and timed (CUDA synchronised): network time and windows."""

    def __init__(self, inner, cuda: bool):
        self.inner, self.cuda = inner, cuda
        self.name, self.device = inner.name, inner.device
        self.precision = getattr(inner, "precision", "fp32")
        self.seconds, self.calls, self.windows = 0.0, 0, 0

    def __call__(self, x):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        y = self.inner(x)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t
        self.calls += 1
        self.windows += int(x.shape[0])
        return y


def make_backend(spec, backend: str, device, threads: int | None):
    """The card's network on ``backend`` (``torch`` or ``onnxruntime``) with ``threads`` intra-op threads."""
    from models.backends import OnnxRuntimeBackend, create_backend
    from models.errors import ModelError as ModelsError
    from pipelines.errors import ModelError

    try:
        if backend in ("onnx", "onnxruntime", "ort"):
            if spec.onnx is None:
                raise ModelError(f"model {spec.name!r} has no ONNX file in its card; run "
                                 f"`preread export --format onnx --model {spec.name}` first")
            return OnnxRuntimeBackend(spec.onnx.path(), device, sha256=spec.onnx.sha256, threads=threads)
        return create_backend(spec, backend, device)
    except ModelsError as err:
        raise ModelError(str(err)) from err


def serving(spec, be):
    """``pipelines.infer.detect_nodules`` uses this card and backend object (not its own cached one)."""
    from benchmarks.stages import model_served

    return model_served(spec, be)


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def run_baseline(vol, spec, be, dev) -> tuple[list, dict]:
    """Plain MONAI on the whole volume; candidate centres (LPS mm) and stage seconds."""
    import torch
    from monai.inferers import sliding_window_inference
    from scipy import ndimage

    from pipelines.preprocess import resample, window_hu

    timings = {}
    t = time.perf_counter()
    shape = np.asarray(vol.array.shape)
    sp_kji = np.asarray(vol.spacing_mm[::-1], dtype=np.float64)
    tgt_kji = np.asarray(BASELINE_SPACING_MM[::-1], dtype=np.float64)
    size = tuple(int(max(1, round(n))) for n in shape * sp_kji / tgt_kji)
    img = resample(window_hu(torch.from_numpy(vol.array).to(dev), spec.input.hu_window)[None, None], size)
    timings["resample"] = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        prob = sliding_window_inference(img, BASELINE_ROI, spec.inference.sw_batch_size, be,
                                        overlap=BASELINE_OVERLAP, sw_device=dev, device=dev)[0, 0]
    del img
    timings["sliding_window"] = time.perf_counter() - t
    t = time.perf_counter()
    fg = (prob >= spec.inference.threshold).cpu().numpy()
    del prob
    lab, n = ndimage.label(fg)
    cands = []
    if n:
        idx = np.arange(1, n + 1)
        counts = ndimage.sum_labels(fg, lab, idx)
        centres = np.asarray(ndimage.center_of_mass(fg, lab, idx), dtype=np.float64).reshape(-1, 3)
        keep = counts * float(np.prod(tgt_kji)) >= spec.inference.min_volume_mm3
        kji = (centres[keep] + 0.5) * (shape / np.asarray(size)) - 0.5  # align_corners=False back to the grid
        cands = list(vol.voxel_to_mm(kji[:, ::-1]))
    timings["components"] = time.perf_counter() - t
    return cands, timings


def run_ours(vol, dev) -> tuple[list, dict]:
    """Lung mask then ``detect_nodules`` (coarse then fine); candidate centres (LPS mm) and stage seconds."""
    from pipelines.infer import detect_nodules
    from pipelines.lungmask import segment_lungs
    from training.evaluate import candidate_centres_mm

    t = time.perf_counter()
    lungs = segment_lungs(vol)
    timings = {"lungmask": time.perf_counter() - t}
    det = detect_nodules(vol, lungs.labels, device=dev)
    timings.update({f"detect_{k}": v for k, v in det.timings_s.items() if k != "total"})
    timings["detect"] = det.timings_s["total"]
    return candidate_centres_mm(vol, det.candidates), timings


def run_one(method: str, backend: str, study: Path, device: str, model: str | None, threads: int | None) -> dict:
    """One method on one backend in this process: times, memory, sensitivity (JSON-ready)."""
    import torch

    from models.errors import ModelError as ModelsError
    from models.registry import load_spec
    from pipelines.errors import ConfigError, ModelError

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; one of {METHODS}")
    if threads:
        torch.set_num_threads(threads)
    vol, refs = load_cached_study(study)
    dev = torch.device(device)
    try:
        spec = load_spec(model)
    except ModelsError as err:
        raise ModelError(str(err)) from err
    t = time.perf_counter()
    inner = make_backend(spec, backend, dev, threads)
    inner(torch.zeros(1, 1, 32, 32, 32, device=dev))  # first call (allocation, kernels) outside the clock
    load_s = time.perf_counter() - t
    be = CountedBackend(inner, dev.type == "cuda")
    rss0 = _rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    if method == "baseline":
        cands, timings = run_baseline(vol, spec, be, dev)
    else:
        with serving(spec, be):
            cands, timings = run_ours(vol, dev)
    total = time.perf_counter() - t0
    out = {
        "method": method, "backend": backend, "backend_used": be.name, "device": be.device,
        "precision": be.precision, "threads": threads or torch.get_num_threads(),
        "model": {"name": spec.name, "version": spec.version, "weights_sha256": spec.weights.sha256},
        "load_s": round(load_s, 3), "total_s": round(total, 3),
        "network_s": round(be.seconds, 3), "network_calls": be.calls, "windows": be.windows,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "candidates": len(cands),
        "detection": sensitivity(cands, refs),
        "rss_before_mb": round(rss0, 1) if rss0 is not None else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }
    if dev.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return out


# ------------------------------------------------------------------------------------------ the run


def _child(method: str, backend: str, study: Path, device: str, model: str | None, threads: int | None,
           in_process: bool = False) -> dict:
    if in_process:  # quick checks only: the peak memory is then the whole process's
        from pipelines.errors import PrereadError

        try:
            return run_one(method, backend, study, device, model, threads)
        except PrereadError as err:
            return {"method": method, "backend": backend, "error": f"{type(err).__name__}: {err}"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", method, backend, "--study", str(study),
           "--device", device]
    if model:
        cmd += ["--model", model]
    if threads:
        cmd += ["--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        err = (res.stderr.strip().splitlines() or ["no output"])[-1]
        log.error("%s on %s failed: %s", method, backend, err)
        return {"method": method, "backend": backend, "error": err}
    return json.loads(lines[-1])


def speedups(rows: list[dict], backends: list[str]) -> dict:
    """Per backend: baseline total / ours total, and whether ours reaches the goal at equal sensitivity."""
    out = {}
    for b in backends:
        base = next((r for r in rows if r["backend"] == b and r["method"] == "baseline" and "error" not in r), None)
        ours = next((r for r in rows if r["backend"] == b and r["method"] == "ours" and "error" not in r), None)
        if not (base and ours) or ours["total_s"] <= 0:
            continue
        key = f"sensitivity_ge_{MIN_DIAMETER_MM:g}mm"
        sb, so = base["detection"][key], ours["detection"][key]
        if sb is None:  # no nodule of that size in the study: compare on all nodules
            sb, so = base["detection"]["sensitivity"], ours["detection"]["sensitivity"]
        ratio = base["total_s"] / ours["total_s"]
        equal = sb is None or (so is not None and so >= sb)
        out[b] = {"speedup": round(ratio, 2), "speedup_network": round(base["network_s"] / ours["network_s"], 2)
                  if ours["network_s"] > 0 else None,
                  "sensitivity_baseline": sb, "sensitivity_ours": so, "equal_or_better_sensitivity": equal,
                  "goal": f">= {GOAL_SPEEDUP:g}x at equal sensitivity",
                  "goal_met": bool(ratio >= GOAL_SPEEDUP and equal)}
    return out


def run_benchmark(*, preset: str, seed: int, backends: list[str], device: str, model: str | None,
                  threads: int | None, cache: Path, size: dict | None = None, in_process: bool = False) -> dict:
    """Both methods on every backend, each in its own subprocess (unless ``in_process``), on one study."""
    from benchmarks.hardware import hardware_info, hardware_slug

    size = {k: v for k, v in (size or {}).items() if v is not None}
    cfg = synth_config(preset, **size)
    tag = study_tag(preset, **size)
    study = make_cached_study(cfg, seed, cache, tag)
    vol, refs = load_cached_study(study)
    rows_out = []
    for backend in backends:
        for method in METHODS:
            log.info("running %s on %s", method, backend)
            rows_out.append(_child(method, backend, study, device, model, threads, in_process))
    hw = hardware_info()
    return {
        "benchmark": "inference",
        "command": " ".join(["python benchmarks/inference.py", f"--preset {preset}", *size_flags(size),
                             f"--seed {seed}", "--backends " + " ".join(backends), f"--device {device}"]
                            + ([f"--model {model}"] if model else []) + ([f"--threads {threads}"] if threads else [])),
        "study": {"preset": preset, "tag": tag, "seed": seed, "generator": generator_digest(),
                  "shape_kji": list(vol.array.shape), "spacing_mm": [round(s, 4) for s in vol.spacing_mm],
                  "nodules": [{"mean_diameter_mm": r["mean_diameter_mm"], "composition": r["composition"]}
                              for r in refs]},
        "baseline": {"spacing_mm": list(BASELINE_SPACING_MM), "roi": list(BASELINE_ROI), "overlap": BASELINE_OVERLAP,
                     "blend": "constant", "inferer": "monai.inferers.sliding_window_inference"},
        "hit_rule": "candidate centre within the reference nodule's radius (LUNA16)",
        "memory_isolated": not in_process,
        "rows": rows_out,
        "speedup": speedups(rows_out, backends),
        "hardware": hw,
        "hardware_slug": hardware_slug(hw),
    }


def format_table(result: dict) -> str:
    key = f"sensitivity_ge_{MIN_DIAMETER_MM:g}mm"
    lines = [f"{'backend':12} {'method':9} {'device':21} {'total s':>8} {'network s':>9} {'windows':>7} "
             f"{'peak MB':>8} {'found':>6} {'sens>=5mm':>9} {'FP':>5}"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"{r['backend']:12} {r['method']:9} error: {r['error']}")
            continue
        d = r["detection"]
        s5 = "n/a" if d[key] is None else f"{d[key]:.2f}"
        lines.append(f"{r['backend']:12} {r['method']:9} {r['device'][:21]:21} {r['total_s']:8.1f} "
                     f"{r['network_s']:9.1f} {r['windows']:7d} {r['peak_rss_mb']:8.0f} "
                     f"{d['found']:>2}/{d['nodules']:<3} {s5:>9} {d['false_positives']:5d}")
    for b, s in result["speedup"].items():
        lines.append(f"{b}: ours {s['speedup']}x faster than plain MONAI end to end (network alone "
                     f"{s['speedup_network']}x); sensitivity ours {s['sensitivity_ours']} vs baseline "
                     f"{s['sensitivity_baseline']}; goal {s['goal']}: {'met' if s['goal_met'] else 'NOT met'}")
    hw = result["hardware"]
    v = hw["versions"]
    lines.append(f"hardware: {hw['cpu']} ({hw['cpu_count']} cores), GPU {hw['gpu']}; torch {v.get('torch')}, "
                 f"monai {v.get('monai')}, onnxruntime-gpu {v.get('onnxruntime-gpu')}; "
                 f"study {result['study']['shape_kji']} at {result['study']['spacing_mm']} mm")
    return "\n".join(lines)


def default_json(result: dict) -> Path:
    tag = result["study"]["tag"]
    name = "inference.json" if tag == "full" else f"inference-{tag}.json"
    return REPO / "benchmarks" / "results" / result["hardware_slug"] / name


def main(argv: list[str] | None = None) -> int:
    from pipelines.errors import PrereadError

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_study_options(ap)
    ap.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"])
    ap.add_argument("--device", default=None, help="cpu | cuda[:N] (default: CUDA when torch sees one)")
    ap.add_argument("--model", default=None, help="model name or card path (default: the default model)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads for both methods")
    ap.add_argument("--cache", default=str(REPO / ".cache" / "benchmarks"))
    ap.add_argument("--json", default=None, help="result file (default benchmarks/results/<hardware>/inference*.json)")
    ap.add_argument("--in-process", action="store_true",
                    help="no subprocess per run (quicker; peak memory is then the whole process's)")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "BACKEND"), help=argparse.SUPPRESS)
    ap.add_argument("--study", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        if args.one:
            print(json.dumps(run_one(args.one[0], args.one[1], Path(args.study), device, args.model, args.threads)))
            return 0
        result = run_benchmark(preset=args.preset, seed=args.seed, backends=list(dict.fromkeys(args.backends)),
                               device=device, model=args.model, threads=args.threads, cache=Path(args.cache),
                               size=size_of(args), in_process=args.in_process)
    except PrereadError as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    print(format_table(result))
    out = Path(args.json) if args.json else default_json(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")
    return 0 if all("error" not in r for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
