"""Per-stage times and throughput of the whole pre-read, per backend and precision (``preread bench``).

For each requested (backend, precision) the studies run through the same stages as ``preread analyze``
(report, ingest, preprocess = lung mask, infer, measure, compare), after an untimed warm-up study (model
load, ``torch.compile``, ONNX/TensorRT session set-up, allocator and library caches). Recorded per stage:
mean, median and p90 seconds per study; throughput (studies/hour over the timed wall clock, all workers
together); model-only time per volume and per sliding window (the network's own calls, CUDA synchronised);
the hardware, driver and library versions (``benchmarks.hardware``). Results go to
``benchmarks/results/<hardware>/stage_bench-*.json`` with a PNG, and ``benchmarks/README.md`` is
regenerated from every committed result file.

    nice -n 10 python benchmarks/stages.py --studies 3 --preset fast --backend torch --backend onnx
    python benchmarks/stages.py --readme          # rewrite benchmarks/README.md from the JSON files

Backends: ``torch`` (eager), ``torch-compile`` (``torch.compile``), ``onnx`` (ONNX Runtime: CUDA provider on
CUDA, CPU otherwise), ``tensorrt`` (ONNX Runtime's TensorRT provider, fp16; CUDA only). Precisions: fp32;
fp16 and bf16 (torch autocast) only on CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipelines.errors import ConfigError, ModelError  # noqa: E402

log = logging.getLogger("benchmarks.stages")

BACKENDS = ("torch", "torch-compile", "onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16")
PRESETS = ("fast", "demo", "full")
STAGES = ("report", "ingest", "preprocess", "infer", "measure", "compare", "total")
RESULTS_ROOT = REPO / "benchmarks" / "results"
README = REPO / "benchmarks" / "README.md"
LEAD_PLOTS = ("stage_times.png", "throughput_vs_workers.png")  # from benchmarks/batch_scaling.py


@dataclass
class BenchRequest:
    """What to measure. ``device`` None picks CUDA when torch sees one."""

    model: str | None = None
    backends: list[str] = field(default_factory=lambda: ["torch"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    batch_size: int | None = None  # sliding-window batch; None: the model card's
    workers: int = 1
    studies: int = 3
    preset: str = "fast"
    device: str | None = None
    warmup: int = 1
    seed: int = 7100
    inputs: list[Path] = field(default_factory=list)  # existing study folders instead of synthetic ones


# --------------------------------------------------------------------------------------------- checks


def _resolve_device(name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    dev = name.strip().lower()
    if dev.split(":")[0] not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {name!r}; use cpu or cuda")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for but torch sees no CUDA GPU; use --device cpu")
    return dev


def plan_variants(req: BenchRequest) -> tuple[str, list[tuple[str, str]], list[dict]]:
    """The device and the (backend, precision) pairs to run; pairs that cannot run are returned as skipped.

    Raises ConfigError for a request that cannot run at all (fp16/bf16 on the CPU, unknown names, ...).
    """
    device = _resolve_device(req.device)
    for b in req.backends:
        if b not in BACKENDS:
            raise ConfigError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    for p in req.precisions:
        if p not in PRECISIONS:
            raise ConfigError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    if device == "cpu":
        low = [p for p in req.precisions if p != "fp32"]
        if low:
            raise ConfigError(f"--precision {low[0]} needs a CUDA GPU (autocast runs only on CUDA here); "
                              "on the CPU use --precision fp32")
        if "tensorrt" in req.backends:
            raise ConfigError("--backend tensorrt needs a CUDA GPU; on the CPU use torch, torch-compile or onnx")
    if req.workers < 1 or req.studies < 1 or req.warmup < 0 or (req.batch_size is not None and req.batch_size < 1):
        raise ConfigError("--workers, --studies and --batch-size must be at least 1, --warmup at least 0")
    if req.workers > max(req.studies, len(req.inputs)):
        raise ConfigError(f"--workers {req.workers} exceeds the number of studies; give at least as many studies")
    runs, skipped = [], []
    for b in dict.fromkeys(req.backends):
        for p in dict.fromkeys(req.precisions):
            why = None
            if b == "onnx" and p != "fp32":
                why = "ONNX Runtime runs the exported fp32 graph; use --backend tensorrt for fp16"
            elif b == "tensorrt" and p != "fp16":
                why = "the TensorRT provider is built with fp16 enabled; ask for --precision fp16"
            elif b == "tensorrt":
                import onnxruntime as ort

                if "TensorrtExecutionProvider" not in ort.get_available_providers():
                    why = "onnxruntime has no TensorrtExecutionProvider on this machine"
            if why:
                skipped.append({"backend": b, "precision": p, "reason": why})
            else:
                runs.append((b, p))
    if not runs:
        raise ConfigError("no requested backend/precision pair can run here: "
                          + "; ".join(f"{s['backend']}/{s['precision']}: {s['reason']}" for s in skipped))
    return device, runs, skipped


# ------------------------------------------------------------------------------------------- backends


class _Autocast:
    """A torch backend run under CUDA autocast at fp16 or bf16 (``models.backends.TorchBackend`` with amp off)."""

    def __init__(self, inner, precision: str):
        import torch

        self.inner = inner
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self.name, self.device, self.precision = inner.name, inner.device, f"amp-{precision}"

    def __call__(self, x):
        import torch

        with torch.no_grad():
            x = x.to(self.inner.torch_device, dtype=torch.float32)
            with torch.autocast(device_type="cuda", dtype=self.dtype):
                return self.inner.module(x).float()


class _Timed:
    """Counts the network's own calls: seconds (CUDA synchronised), calls and windows (batch items)."""

    def __init__(self, inner, device: str):
        self.inner = inner
        self.cuda = device.startswith("cuda")
        self.name, self.device = inner.name, inner.device
        self.precision = getattr(inner, "precision", "fp32")
        self.reset()

    def reset(self) -> None:
        self.seconds, self.calls, self.windows = 0.0, 0, 0

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def __call__(self, x):
        self._sync()
        t = time.perf_counter()
        y = self.inner(x)
        self._sync()
        self.seconds += time.perf_counter() - t
        self.calls += 1
        self.windows += int(x.shape[0])
        return y


def build_backend(spec, backend: str, precision: str, device: str):
    """A ready backend for the model card ``spec``: the models package's own classes, configured per variant."""
    import torch

    from models.backends import TorchBackend, create_backend, load_network
    from models.errors import ModelError as _ModelsError

    dev = torch.device(device)
    try:
        if backend in ("torch", "torch-compile"):
            be = TorchBackend(load_network(spec), dev, amp=False)
            if backend == "torch-compile":
                # Static shapes: one graph per window shape (automatic dynamic shapes fail to lower the UNet's
                # strided convolutions in Inductor, torch 2.13).
                be.module = torch.compile(be.module, dynamic=False)
            return be if precision == "fp32" else _Autocast(be, precision)
        be = create_backend(spec, "onnxruntime", dev, tensorrt=backend == "tensorrt")
    except _ModelsError as err:
        raise ModelError(str(err)) from err
    if backend == "tensorrt" and be.device != "TensorrtExecutionProvider":
        raise ModelError(f"TensorRT was asked for but ONNX Runtime runs on {be.device}")
    return be


@contextlib.contextmanager
def model_served(spec, be):
    """Make ``pipelines.infer.detect_nodules`` use this spec and backend object (it otherwise builds its own
    cached default backend from the names it is given)."""
    import pipelines.infer as infer

    original = infer.get_model
    infer.get_model = lambda model=None, backend="torch", device=None: (spec, be)
    try:
        yield
    finally:
        infer.get_model = original


# ------------------------------------------------------------------------------------------- running


def make_studies(root: Path, n: int, seed: int, preset: str) -> list[Path]:
    """``n`` synthetic studies (``training.synthetic``), each a folder with dicom/ and report.txt."""
    from training.synthetic import SynthConfig, make_study, write_study

    return [write_study(make_study(seed + i, SynthConfig.preset(preset)), root / f"study-{i:03d}")
            for i in range(n)]


def _run_study(study, model_name: str | None, device: str, timed: _Timed) -> dict:
    from pipelines.analyze import AnalyzeOptions, finish_study, prepare_study, run_model
    from pipelines.report import parse_report_file

    opts = AnalyzeOptions(model=model_name, device=device, overlays=False, dicom_out=False)
    timed.reset()
    t0 = time.perf_counter()
    parsed = parse_report_file(Path(study.report_path))
    t_report = time.perf_counter() - t0
    prepared = prepare_study(study.study_path, parsed, opts)
    detections = run_model(prepared, opts)
    result = finish_study(prepared, detections, opts)
    wall = time.perf_counter() - t0
    timings = {k: float(v) for k, v in result.timings_s.items() if k != "total"}
    timings["report"] = t_report
    timings["total"] = sum(timings.values())
    return {
        "name": study.name,
        "slices": result.series.slices,
        "timings_s": {k: round(timings.get(k, 0.0), 4) for k in STAGES},
        "wall_s": round(wall, 4),
        "model_s": round(timed.seconds, 4),
        "model_calls": timed.calls,
        "windows": timed.windows,
        "infer_detail_s": dict(detections.timings_s),
        "ai_findings": len(result.ai_findings),
        "verdict": result.verdict,
    }


def _run_share(studies, warmup_studies, model: str | None, backend: str, precision: str, device: str,
               batch_size: int | None, threads: int | None, barrier=None) -> dict:
    """Load the model, warm up, then run ``studies`` one after another. Runs in-process or in a worker."""
    import torch

    from models.registry import load_spec
    from models.errors import ModelError as _ModelsError

    if threads:
        torch.set_num_threads(threads)
    try:
        spec = load_spec(model)
    except _ModelsError as err:
        raise ModelError(str(err)) from err
    if batch_size:
        spec = spec.model_copy(update={"inference": spec.inference.model_copy(update={"sw_batch_size": batch_size})})
    t = time.perf_counter()
    timed = _Timed(build_backend(spec, backend, precision, device), device)
    load_s = time.perf_counter() - t
    with model_served(spec, timed):
        t = time.perf_counter()
        for s in warmup_studies:
            _run_study(s, model, device, timed)
        warmup_s = time.perf_counter() - t
        if barrier is not None:
            barrier.wait()
        start = time.time()
        records = [_run_study(s, model, device, timed) for s in studies]
        end = time.time()
    return {"records": records, "start": start, "end": end, "load_s": load_s, "warmup_s": warmup_s,
            "backend_used": timed.name, "device_used": timed.device, "precision_used": timed.precision,
            "model": {"name": spec.name, "version": spec.version, "weights_sha256": spec.weights.sha256,
                      "sw_batch_size": spec.inference.sw_batch_size,
                      "roi_size": list(spec.inference.roi_size)}}


def _worker_main(queue, *args) -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        queue.put(("ok", _run_share(*args)))
    except Exception as err:  # noqa: BLE001 - reported to the parent as one line
        args[-1].abort()  # the barrier: the other workers stop waiting for this one
        kind = type(err).__name__
        queue.put(("error", f"{kind}: {' '.join(str(err).split())}"))


def _run_variant(studies, req: BenchRequest, backend: str, precision: str, device: str) -> dict:
    warm = studies[: req.warmup] if req.warmup else []
    if req.workers == 1:
        shares = [_run_share(studies, warm, req.model, backend, precision, device, req.batch_size, None)]
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        barrier, queue = ctx.Barrier(req.workers), ctx.Queue()
        threads = max(1, (os.cpu_count() or 1) // req.workers)
        procs = [ctx.Process(target=_worker_main, args=(queue, studies[w::req.workers], warm, req.model, backend,
                                                        precision, device, req.batch_size, threads, barrier))
                 for w in range(req.workers)]
        for p in procs:
            p.start()
        got = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        errors = [msg for kind, msg in got if kind == "error"]
        if errors:
            raise ModelError(f"a bench worker failed: {errors[0]}")
        shares = [share for _, share in got]
    records = [r for s in shares for r in s["records"]]
    wall = max(s["end"] for s in shares) - min(s["start"] for s in shares)
    first = shares[0]
    windows = sum(r["windows"] for r in records)
    model_s = sum(r["model_s"] for r in records)
    return {
        "backend": backend, "precision": precision,
        "backend_used": first["backend_used"], "device_used": first["device_used"],
        "precision_used": first["precision_used"], "model": first["model"],
        "load_s": round(max(s["load_s"] for s in shares), 3), "warmup_s": round(max(s["warmup_s"] for s in shares), 3),
        "wall_s": round(wall, 3), "studies_per_hour": round(3600 * len(records) / wall, 1) if wall > 0 else None,
        "stages_s": {st: _summary([r["timings_s"][st] for r in records]) for st in STAGES},
        "model_per_volume_s": _summary([r["model_s"] for r in records]),
        "model_per_window_ms": round(1000 * model_s / windows, 2) if windows else None,
        "windows_per_study": round(windows / len(records), 1),
        "studies": records,
    }


def _summary(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(a.mean()), 4), "median": round(float(np.median(a)), 4),
            "p90": round(float(np.percentile(a, 90)), 4), "n": int(a.size)}


def command_of(req: BenchRequest, device: str) -> str:
    """The ``preread bench`` command line that repeats ``req`` (recorded in the results)."""
    parts = ["preread bench"]
    if req.model:
        parts.append(f"--model {req.model}")
    parts += [f"--backend {','.join(req.backends)}", f"--precision {','.join(req.precisions)}"]
    if req.batch_size:
        parts.append(f"--batch-size {req.batch_size}")
    parts += [f"--workers {req.workers}", f"--studies {req.studies}"]
    parts += [f"--input {p}" for p in req.inputs] or [f"--preset {req.preset}"]
    parts += [f"--device {device}", f"--warmup {req.warmup}"]
    return " ".join(parts)


def run_bench(req: BenchRequest) -> dict:
    """Measure every runnable (backend, precision) of ``req``; the results as a JSON-ready dict."""
    from benchmarks.hardware import hardware_info, hardware_slug
    from serving.batch import discover_studies

    device, variants, skipped = plan_variants(req)
    hw = hardware_info()
    out = {
        "benchmark": "stage_bench",
        "command": command_of(req, device),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hardware": hw,
        "hardware_slug": hardware_slug(hw),
        "settings": {"model": req.model, "device": device, "preset": None if req.inputs else req.preset,
                     "studies": req.studies, "workers": req.workers, "batch_size": req.batch_size,
                     "warmup_studies": req.warmup, "seed": req.seed, "inputs": [str(p) for p in req.inputs],
                     "torch_threads": _torch_threads()},
        "runs": [],
        "skipped": skipped,
        "failed": [],
    }
    with tempfile.TemporaryDirectory(prefix="preread-bench-") as tmp:
        if req.inputs:
            studies = discover_studies(list(req.inputs))[: req.studies]
        else:
            t = time.perf_counter()
            make_studies(Path(tmp), req.studies, req.seed, req.preset)
            log.info("made %d synthetic %s studies in %.1f s", req.studies, req.preset, time.perf_counter() - t)
            studies = discover_studies([Path(tmp)])
        out["settings"]["studies"] = len(studies)
        for backend, precision in variants:
            log.info("bench %s/%s on %s: %d studies, %d worker(s)", backend, precision, device, len(studies),
                     req.workers)
            try:
                run = _run_variant(studies, req, backend, precision, device)
            except Exception as err:  # noqa: BLE001 - one variant failing must not lose the others' results
                if len(variants) == 1:
                    raise
                msg = f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]
                log.warning("%s/%s failed: %s", backend, precision, msg)
                out["failed"].append({"backend": backend, "precision": precision, "error": msg})
                continue
            out["runs"].append(run)
            log.info("%s/%s: %.1f studies/h, total %.2f s/study (median)", backend, precision,
                     run["studies_per_hour"] or 0.0, run["stages_s"]["total"]["median"])
    if not out["runs"]:
        raise ModelError("every backend failed: " + "; ".join(f"{f['backend']}/{f['precision']}: {f['error']}"
                                                             for f in out["failed"]))
    return out


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ------------------------------------------------------------------------------------------- outputs


def result_stem(res: dict) -> str:
    s = res["settings"]
    src = s["preset"] or "inputs"
    batch = f"-b{s['batch_size']}" if s["batch_size"] else ""
    return f"stage_bench-{src}-{s['device'].replace(':', '')}{batch}-w{s['workers']}"


def save_results(res: dict, results_dir: Path | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.png`` under ``results_dir`` (default benchmarks/results/<hardware>/)."""
    out_dir = Path(results_dir) if results_dir else RESULTS_ROOT / res["hardware_slug"]
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = result_stem(res)
    jp, pp = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    jp.write_text(json.dumps(res, indent=2) + "\n")
    plot(res, pp)
    return jp, pp


def plot(res: dict, path: Path) -> None:
    """Mean seconds per stage per study (stacked) and throughput, one bar per backend/precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = res["runs"]
    labels = [f"{r['backend']}\n{r['precision']}" for r in runs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    bottom = np.zeros(len(runs))
    for st in STAGES[:-1]:
        v = np.asarray([r["stages_s"][st]["mean"] for r in runs])
        ax1.bar(labels, v, bottom=bottom, label="preprocess (lung mask)" if st == "preprocess" else st)
        bottom += v
    ax1.set_ylabel("mean seconds per study")
    ax1.set_title("time per stage")
    ax1.legend(fontsize=7)
    ax2.bar(labels, [r["studies_per_hour"] or 0 for r in runs], color="tab:gray")
    ax2.set_ylabel("studies per hour")
    ax2.set_title(f"throughput ({res['settings']['workers']} worker(s))")
    hw = res["hardware"]
    fig.suptitle(f"preread bench: {hw.get('gpu') or hw['cpu']} ({res['settings']['device']}), "
                 f"{res['settings']['studies']} {res['settings']['preset'] or 'given'} studies", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(res: dict, file=sys.stdout) -> None:
    hw = res["hardware"]
    v = hw["versions"]
    print(f"hardware: {hw['cpu']} ({hw['cpu_count']} cores), gpu: {hw['gpu']}, cuda: {hw['cuda']}; "
          f"torch {v.get('torch')}, onnxruntime-gpu {v.get('onnxruntime-gpu')}, monai {v.get('monai')}", file=file)
    head = f"{'backend':>14} {'prec':>5} {'studies/h':>9} {'total mean/median/p90 s':>24} {'infer s':>8} " \
           f"{'model s/vol':>11} {'ms/window':>9}"
    print(head, file=file)
    for r in res["runs"]:
        t = r["stages_s"]["total"]
        print(f"{r['backend']:>14} {r['precision']:>5} {r['studies_per_hour']:>9} "
              f"{t['mean']:>8.2f}/{t['median']:.2f}/{t['p90']:.2f}".ljust(57) +
              f" {r['stages_s']['infer']['mean']:>8.2f} {r['model_per_volume_s']['mean']:>11.2f} "
              f"{r['model_per_window_ms'] or 0:>9.1f}", file=file)
    for s in res["skipped"]:
        print(f"skipped {s['backend']}/{s['precision']}: {s['reason']}", file=file)
    for f in res.get("failed", []):
        print(f"failed {f['backend']}/{f['precision']}: {f['error']}", file=file)


def _rel(p: Path) -> str:
    return Path(os.path.relpath(p, README.parent)).as_posix()


def readme_text(results_root: Path = RESULTS_ROOT) -> str:
    """benchmarks/README.md from the committed results: one table row per run, the plots linked."""
    files = sorted(results_root.glob("*/stage_bench*.json"))
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/stages.py --readme` from the JSON files under `benchmarks/results/`;",
        "do not edit by hand. Each row is one `preread bench` run (the command is in its JSON file, with the",
        "hardware, driver and library versions). Times are seconds per study after one untimed warm-up study;",
        "throughput counts all workers together over the timed wall clock; model time is the network's own calls",
        "(CUDA synchronised), and a window is one network input (a sliding-window patch of the coarse pass, or a",
        "whole fine-pass crop). The model column gives the first 8 hex digits of the weights' sha256.",
        "",
        "## Per-stage times and throughput (`preread bench`)",
        "",
        "| hardware | device | model | backend | precision | batch | workers | studies | ingest | lung mask "
        "| infer | measure | compare | total mean / median / p90 | model s/volume | ms/window | studies/h | plot |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    plots: dict[str, list[Path]] = {}
    for f in files:
        res = json.loads(f.read_text())
        s, hw = res["settings"], res["hardware"]
        where = hw.get("gpu") or f"{hw['cpu_count']}-core CPU"
        png = f.with_suffix(".png")
        plots.setdefault(f.parent.name, [])
        if png.is_file():
            plots[f.parent.name].append(png)
        for r in res["runs"]:
            st = r["stages_s"]
            tot = st["total"]
            lines.append(
                f"| {where} | {r['device_used']} | {r['model']['name']} {r['model']['version']}"
                f"{' (' + r['model']['weights_sha256'][:8] + ')' if r['model'].get('weights_sha256') else ''} "
                f"| {r['backend']} "
                f"| {r['precision_used']} | {r['model']['sw_batch_size']} | {s['workers']} "
                f"| {s['studies']} {s['preset'] or 'given'} | {st['ingest']['mean']:.2f} "
                f"| {st['preprocess']['mean']:.2f} | {st['infer']['mean']:.2f} | {st['measure']['mean']:.2f} "
                f"| {st['compare']['mean']:.2f} | {tot['mean']:.2f} / {tot['median']:.2f} / {tot['p90']:.2f} "
                f"| {r['model_per_volume_s']['mean']:.2f} | {r['model_per_window_ms'] or 0:.1f} "
                f"| {r['studies_per_hour']} | [png]({_rel(png)}) |")
        for sk in res.get("skipped", []) + res.get("failed", []):
            why = f"skipped: {sk['reason']}" if "reason" in sk else f"failed: {sk['error'][:120]}"
            lines.append(f"| {where} | {s['device']} | | {sk['backend']} | {sk['precision']} | | | | "
                         f"{why.replace('|', '/')} | | | | | | | | | |")
    if not files:
        lines.append("| (no runs committed yet) | | | | | | | | | | | | | | | | | |")
    lines += ["", "Commands:", ""]
    for f in files:
        res = json.loads(f.read_text())
        v = res["hardware"]["versions"]
        lines.append(f"- [{_rel(f)}]({_rel(f)}): `{res.get('command') or 'preread bench'}` — "
                     f"{res['created_utc']}, torch {v.get('torch')}, onnxruntime-gpu {v.get('onnxruntime-gpu')}, "
                     f"monai {v.get('monai')}, CUDA {res['hardware'].get('cuda')}")
    scaling = sorted(results_root.glob("*/batch_scaling.json"))
    if scaling:
        lines += ["", "## Ray batch scaling (`benchmarks/batch_scaling.py`)", "",
                  "| hardware | workers | studies | studies/h | scaling efficiency |", "|---|---|---|---|---|"]
        for f in scaling:
            res = json.loads(f.read_text())
            hw = res["hardware"]
            for r in res["runs"]:
                where = hw.get("gpu") or f"{hw['cpu_count']}-core CPU"
                lines.append(f"| {where} | {r['workers']} | {r['done']}/{r['studies']} | {r['studies_per_hour']} "
                             f"| {r.get('scaling_efficiency')} |")
    lines += ["", "## Plots", ""]
    for hw_dir in sorted({p.parent for p in results_root.glob("*/*.png")}):
        lines.append(f"### {hw_dir.name}")
        lines.append("")
        for name in LEAD_PLOTS:
            p = hw_dir / name
            if p.is_file():
                lines.append(f"![{name}]({_rel(p)})")
                lines.append("")
        for p in plots.get(hw_dir.name, []):
            lines.append(f"![{p.name}]({_rel(p)})")
            lines.append("")
    lines += ["## Other benchmark scripts", ""]
    for script in sorted(README.parent.glob("*.py")):
        if script.name.startswith("_") or script.name == "hardware.py":
            continue
        lines.append(f"- `benchmarks/{script.name}`: {_first_doc_line(script)}")
    return "\n".join(lines) + "\n"


def _first_doc_line(path: Path) -> str:
    import ast

    try:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    except (OSError, SyntaxError):
        return ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def write_readme(results_root: Path = RESULTS_ROOT, path: Path = README) -> Path:
    path.write_text(readme_text(results_root))
    return path


# ------------------------------------------------------------------------------------------- script


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readme", action="store_true", help="only rewrite benchmarks/README.md from the results")
    ap.add_argument("--model")
    ap.add_argument("--backend", action="append", choices=BACKENDS)
    ap.add_argument("--precision", action="append", choices=PRECISIONS)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--studies", type=int, default=3)
    ap.add_argument("--preset", default="fast", choices=PRESETS)
    ap.add_argument("--device")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--results-dir", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.readme:
        print(f"wrote {write_readme()}")
        return 0
    req = BenchRequest(model=args.model, backends=args.backend or ["torch"], precisions=args.precision or ["fp32"],
                       batch_size=args.batch_size, workers=args.workers, studies=args.studies, preset=args.preset,
                       device=args.device, warmup=args.warmup)
    try:
        res = run_bench(req)
    except (ConfigError, ModelError) as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        return 2
    print_table(res)
    jp, pp = save_results(res, args.results_dir)
    print(f"wrote {jp} and {pp}")
    if args.results_dir is None:
        print(f"wrote {write_readme()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
