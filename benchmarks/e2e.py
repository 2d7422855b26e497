"""The whole pre-read of one chest CT, DICOM in to DICOM SEG + TID 1500 SR out, each stage timed.

One synthetic study (``training.synthetic``; preset ``full`` = 512×512×300) is written as a DICOM series
with its radiology report (not timed; cached under ``.cache/benchmarks``). Then, with the functions that
``preread analyze`` runs (``pipelines.analyze.prepare_study``, ``run_model``, ``finish_study``, which write
the SEG and SR through ``pipelines.dicom_out``), each repeat times: report parsing, ingest (DICOM decode
and geometry), lung mask, inference, measurement, comparison with the report (matching, Fleischner 2017 /
Lung-RADS v2022 categories, discordance), overlays (``--overlays`` only) and DICOM output (source headers,
SEG, SR). The model is loaded once before the repeats (``model_load_s``, not in the per-study time: a
service keeps it loaded). The SEG and SR are read back with pydicom after the clock stops. ``--threads``
sets torch's intra-op threads; ONNX Runtime (``--backend onnx``) keeps its own default pool, as in
``preread analyze``.

Goal: ≤ 30 s per study on this CPU, ≤ 2 s on a GPU, judged on the median wall time per study over the
repeats. The full run::

    nice -n 10 python benchmarks/e2e.py --preset full --repeats 3

writes ``benchmarks/results/<hardware>/e2e.json``. A quick check on a small study::

    nice -n 19 python benchmarks/e2e.py --preset fast --json /tmp/e2e.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.inference import (  # noqa: E402
    add_study_options, generator_digest, size_flags, size_of, study_tag, synth_config,
)

log = logging.getLogger("benchmarks.e2e")

GOAL_S = {"cpu": 30.0, "cuda": 2.0}
STAGES = ("report", "ingest", "lungmask", "infer", "measure", "compare", "overlays", "dicom_out")
DICOM_PARTS = ("dicom_seg", "dicom_sr")


def make_cached_dicom_study(cfg, seed: int, cache_dir: Path, tag: str) -> Path:
    """A folder with ``dicom/``, ``report.txt`` and ``truth.json``, generated once per generator version."""
    from training.synthetic import make_study, write_study

    out = cache_dir / f"e2e-{tag}-{generator_digest()}-{seed}"
    done = out / ".complete"
    if done.is_file():
        return out
    t = time.perf_counter()
    write_study(make_study(seed, cfg), out, dicom=True, nifti=False)
    done.write_text("ok\n")
    log.info("study %s generated and written as DICOM in %.0f s", out.name, time.perf_counter() - t)
    return out


@contextlib.contextmanager
def timed_calls(timings: dict[str, float], targets: dict[str, tuple[object, str]]):
    """Add the run time of each ``module.attr`` function (the real one) to ``timings[name]`` while inside."""
    saved = []
    for name, (module, attr) in targets.items():
        fn = getattr(module, attr)

        def wrapper(*a, __fn=fn, __name=name, **k):
            t = time.perf_counter()
            try:
                return __fn(*a, **k)
            finally:
                timings[__name] = timings.get(__name, 0.0) + time.perf_counter() - t

        saved.append((module, attr, fn))
        setattr(module, attr, wrapper)
    try:
        yield timings
    finally:
        for module, attr, fn in saved:
            setattr(module, attr, fn)


def run_once(study: Path, out_dir: Path, opts_kw: dict, overlays: bool) -> dict:
    """One pre-read of ``study`` (DICOM + report.txt) into ``out_dir``; stage seconds and what came out."""
    import pipelines.dicom_out as dicom_out
    import pipelines.overlays as overlays_mod
    from pipelines.analyze import AnalyzeOptions, finish_study, prepare_study, run_model
    from pipelines.report import parse_report_file

    opts = AnalyzeOptions(**opts_kw, overlays=overlays, dicom_out=True, dicom_dir=out_dir / "dicom",
                          overlays_dir=(out_dir / "overlays") if overlays else None)
    parts: dict[str, float] = {}
    t0 = time.perf_counter()
    parsed = parse_report_file(study / "report.txt")
    t_report = time.perf_counter() - t0
    prepared = prepare_study(study / "dicom", parsed, opts)
    detections = run_model(prepared, opts)
    with timed_calls(parts, {"overlays": (overlays_mod, "render_overlays"), "dicom_seg": (dicom_out, "write_seg"),
                             "dicom_sr": (dicom_out, "write_sr")}):
        result = finish_study(prepared, detections, opts)
    wall = time.perf_counter() - t0
    t = result.timings_s
    artifacts = float(t.get("artifacts", 0.0))
    stages = {
        "report": t_report, "ingest": t.get("ingest", 0.0), "lungmask": t.get("preprocess", 0.0),
        "infer": t.get("infer", 0.0), "measure": t.get("measure", 0.0), "compare": t.get("compare", 0.0),
        "overlays": parts.get("overlays", 0.0), "dicom_out": max(0.0, artifacts - parts.get("overlays", 0.0)),
    }
    art = getattr(result, "artifacts", None) or {}
    return {
        "stages_s": {k: round(float(v), 4) for k, v in stages.items()},
        "dicom_parts_s": {k: round(parts.get(k, 0.0), 4) for k in DICOM_PARTS},
        "infer_detail_s": dict(detections.timings_s),
        "total_s": round(sum(stages.values()), 4),
        "wall_s": round(wall, 4),
        "ai_findings": len(result.ai_findings),
        "report_findings": len(result.report_findings),
        "verdict": result.verdict,
        "model": result.model.model_dump() if hasattr(result.model, "model_dump") else dict(result.model),
        "artifacts": art,
    }


def check_dicom(art: dict) -> dict:
    """Read the SEG and SR back (pydicom): modality, SOP class, segments/frames, the source series referenced."""
    import pydicom

    out: dict = {"seg": None, "sr": None}
    if art.get("seg"):
        ds = pydicom.dcmread(art["seg"])
        out["seg"] = {"modality": ds.Modality, "sop_class": ds.SOPClassUID.name,
                      "segments": len(ds.SegmentSequence), "frames": int(ds.NumberOfFrames),
                      "bytes": Path(art["seg"]).stat().st_size}
    if art.get("sr"):
        ds = pydicom.dcmread(art["sr"])
        out["sr"] = {"modality": ds.Modality, "sop_class": ds.SOPClassUID.name,
                     "template": str(ds.ContentTemplateSequence[0].TemplateIdentifier)
                     if "ContentTemplateSequence" in ds else None,
                     "bytes": Path(art["sr"]).stat().st_size}
    if "dicom_skipped" in art:
        out["skipped"] = art["dicom_skipped"]
    return out


def _summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def run_e2e(*, preset: str, seed: int, backend: str, device: str | None, repeats: int, overlays: bool,
            model: str | None, threads: int | None, cache: Path, size: dict | None = None,
            keep: Path | None = None) -> dict:
    import torch

    from benchmarks.hardware import hardware_info, hardware_slug
    from pipelines.errors import ConfigError
    from pipelines.infer import get_model

    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {repeats}")
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but torch sees no CUDA GPU; use --device cpu")
    if threads:
        torch.set_num_threads(threads)
    size = {k: v for k, v in (size or {}).items() if v is not None}
    tag = study_tag(preset, **size)
    study = make_cached_dicom_study(synth_config(preset, **size), seed, cache, tag)
    truth = json.loads((study / "truth.json").read_text())
    files = [p for p in (study / "dicom").rglob("*") if p.is_file()]

    t = time.perf_counter()
    spec, be = get_model(model, backend, dev)  # what run_model will find in the cache
    be(torch.zeros(1, 1, 32, 32, 32, device=dev))
    load_s = time.perf_counter() - t

    opts_kw = {"model": model, "backend": backend, "device": str(dev)}
    runs = []
    with contextlib.ExitStack() as stack:
        root = keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="preread-e2e-")))
        for r in range(repeats):
            out_dir = root / f"run-{r + 1}"
            rec = run_once(study, out_dir, opts_kw, overlays)
            rec["dicom_check"] = check_dicom(rec["artifacts"])
            rec["artifacts"] = {k: (Path(v).name if isinstance(v, str) else [Path(p).name for p in v]
                                    if isinstance(v, list) else v) for k, v in rec["artifacts"].items()}
            log.info("repeat %d: %.1f s wall, %d AI findings, verdict %s", r + 1, rec["wall_s"],
                     rec["ai_findings"], rec["verdict"])
            runs.append(rec)

    hw = hardware_info()
    goal = GOAL_S["cuda" if dev.type == "cuda" else "cpu"]
    wall = _summary([r["wall_s"] for r in runs])
    stages = {s: _summary([r["stages_s"][s] for r in runs]) for s in STAGES}
    stages.update({s: _summary([r["dicom_parts_s"][s] for r in runs]) for s in DICOM_PARTS})
    dicom_written = all(r["dicom_check"]["seg"] and r["dicom_check"]["sr"] for r in runs)
    first = runs[0]
    return {
        "benchmark": "e2e",
        "command": " ".join(["python benchmarks/e2e.py", f"--preset {preset}", *size_flags(size), f"--seed {seed}",
                             f"--backend {backend}", f"--device {dev}", f"--repeats {repeats}"]
                            + (["--overlays"] if overlays else []) + ([f"--model {model}"] if model else [])
                            + ([f"--threads {threads}"] if threads else [])),
        "study": {"preset": preset, "tag": tag, "seed": seed, "generator": generator_digest(),
                  "slices": len(files), "dicom_mb": round(sum(p.stat().st_size for p in files) / 2**20, 1),
                  "truth_nodules": len(truth.get("nodules", [])),
                  "report_relation": (truth.get("report") or {}).get("relation"),
                  "shape_kji": list(truth["shape_ijk"][::-1]), "spacing_mm": truth["spacing_mm"]},
        "settings": {"backend": backend, "device": str(dev), "repeats": repeats, "overlays": overlays,
                     "torch_threads": torch.get_num_threads(), "model": model},
        "model": first["model"],
        "model_load_s": round(load_s, 3),
        "stages_s": stages,
        "total_s": _summary([r["total_s"] for r in runs]),
        "wall_s": wall,
        "dicom_written": dicom_written,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "runs": runs,
        "goal": {"seconds_per_study": goal, "device": dev.type, "basis": "median wall time per study, model loaded",
                 "met": bool(wall["median"] <= goal), "measured_s": wall["median"]},
        "hardware": hw,
        "hardware_slug": hardware_slug(hw),
    }


def format_table(res: dict) -> str:
    n = res["settings"]["repeats"]
    lines = [f"{'stage':14} {'median s':>9} {'min s':>8} {'max s':>8} {'share':>6}   ({n} repeat{'s' * (n > 1)})"]
    tot = res["total_s"]["median"] or 1.0
    for s in (*STAGES, *DICOM_PARTS):
        if s == "overlays" and not res["settings"]["overlays"]:
            continue
        v = res["stages_s"][s]
        name = f"  {s}" if s in DICOM_PARTS else s
        lines.append(f"{name:14} {v['median']:9.2f} {v['min']:8.2f} {v['max']:8.2f} {100 * v['median'] / tot:5.0f}%")
    lines.append(f"{'stages total':14} {res['total_s']['median']:9.2f} {res['total_s']['min']:8.2f} "
                 f"{res['total_s']['max']:8.2f}")
    lines.append(f"{'wall':14} {res['wall_s']['median']:9.2f} {res['wall_s']['min']:8.2f} {res['wall_s']['max']:8.2f}")
    lines.append(f"peak memory (RSS, whole process): {res['peak_rss_mb']:.0f} MB; "
                 f"model load (once, not per study): {res['model_load_s']:.2f} s; "
                 f"{res['model']['name']} {res['model']['version']} on "
                 f"{res['model']['backend']}/{res['model']['device']}")
    r0 = res["runs"][0]
    dc = r0["dicom_check"]
    lines.append(f"study: {res['study']['slices']} DICOM slices ({res['study']['dicom_mb']} MB), "
                 f"{res['study']['truth_nodules']} true nodules; AI findings {r0['ai_findings']}, "
                 f"verdict {r0['verdict']}; "
                 f"SEG {'%d segments' % dc['seg']['segments'] if dc['seg'] else 'not written'}, "
                 f"SR {dc['sr']['template'] if dc['sr'] else 'not written'}")
    g = res["goal"]
    lines.append(f"goal <= {g['seconds_per_study']:g} s per study on {g['device']}: "
                 f"{'met' if g['met'] else 'NOT met'} ({g['measured_s']:.1f} s)")
    hw, v = res["hardware"], res["hardware"]["versions"]
    lines.append(f"hardware: {hw['cpu']} ({hw['cpu_count']} cores, {hw['memory_gb']} GB), GPU {hw['gpu']}; "
                 f"torch {v.get('torch')} ({res['settings']['torch_threads']} threads), monai {v.get('monai')}, "
                 f"pydicom {v.get('pydicom')}, highdicom {v.get('highdicom')}, "
                 f"onnxruntime-gpu {v.get('onnxruntime-gpu')}")
    return "\n".join(lines)


def default_json(res: dict) -> Path:
    tag = res["study"]["tag"]
    name = "e2e.json" if tag == "full" else f"e2e-{tag}.json"
    return REPO / "benchmarks" / "results" / res["hardware_slug"] / name


def main(argv: list[str] | None = None) -> int:
    from pipelines.errors import PrereadError

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_study_options(ap)
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx", "onnxruntime", "bundle"])
    ap.add_argument("--device", default=None, help="cpu | cuda[:N] (default: CUDA when torch sees one)")
    ap.add_argument("--repeats", type=int, default=1, help="pre-reads of the study (median reported)")
    ap.add_argument("--overlays", action="store_true", help="also render the overlay PNGs (timed)")
    ap.add_argument("--model", default=None, help="model name or card path (default: the default model)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--cache", default=str(REPO / ".cache" / "benchmarks"))
    ap.add_argument("--keep", default=None, help="keep the outputs (SEG, SR, overlays) in this folder")
    ap.add_argument("--json", default=None,
                    help="result file, '-' = stdout (default benchmarks/results/<hardware>/e2e*.json)")
    args = ap.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
    try:
        res = run_e2e(preset=args.preset, seed=args.seed, backend=args.backend, device=args.device,
                      repeats=args.repeats, overlays=args.overlays, model=args.model, threads=args.threads,
                      cache=Path(args.cache), size=size_of(args), keep=Path(args.keep) if args.keep else None)
    except PrereadError as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    text = json.dumps(res, indent=2) + "\n"
    if args.json == "-":
        print(text, end="")
        print(format_table(res), file=sys.stderr)
        return 0
    print(format_table(res))
    out = Path(args.json) if args.json else default_json(res)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
