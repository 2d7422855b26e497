"""Equivalence of ``preread batch`` (embedded Ray) and ``preread analyze`` one by one, on synthetic studies.

The full check (20 studies; about 30 minutes on the 2-core machine with the current model: ~5 s to make a
study, ~35 s for each side to analyse it; run it when the machine is quiet)::

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/batch_equivalence.py --studies 20

Studies: ``training.synthetic`` preset ``fast``, seeds from 910000 (outside the training seeds 1000-1040,
the validation seeds 2000-2006 and the evaluation seeds 900000-900019), the report's relation to the truth
forced in turn through every relation (concordant, missed, undersized, oversized, negative, hedged,
phantom), the images written as a DICOM series by ``write_study``, and every second report written as a
DICOM Basic Text SR (``report.dcm``) instead of ``report.txt``.

Both sides run through the CLI itself (``serving.cli.main``, in this process): ``preread batch ROOT --out
rows.jsonl --workers N`` once on all studies, then ``preread analyze DICOM --report REPORT --json OUT`` per
study. Every field of the two StudyResults is compared except ``timings_s``: AI findings (count, centres,
diameters, volumes, confidence, location), report findings, matches, discordances (type, severity, ...),
verdict and priority. Floats must agree to ``--tol`` (absolute, default 1e-6); the table also says whether
they are bit-identical. Any difference is printed field by field.

Writes ``benchmarks/results/<hardware>/batch_equivalence.json`` (``--json`` to change); exit status 0 only
when every study is identical. The model weights' sha256 and the sha256 of every file in pipelines/,
models/, serving/ and configs/ are taken before and after: an edit during the run (the checkout is shared)
to the weights, a config, or a module this process ran makes the comparison meaningless, and the run says so.

Thread counts: Ray's workers run torch with one thread. With ``OMP_NUM_THREADS`` unset, ``analyze`` in this
process uses all cores, and float32 confidences may then differ in the last bit (6e-8, seen on 1 of 2
studies; centres, sizes, volumes, discordances and verdicts were still identical): inside ``--tol``, shown
as "identical within tol". With ``OMP_NUM_THREADS=1`` (the command above) both sides are bit-identical.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import math
import re
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.hardware import hardware_info, hardware_slug  # noqa: E402

log = logging.getLogger("benchmarks.batch_equivalence")

SEED0 = 910000
RELATIONS = ("concordant", "missed", "undersized", "oversized", "negative", "hedged", "phantom")
IGNORED = ("timings_s",)  # wall-clock times: the only fields allowed to differ
REPO = Path(__file__).resolve().parents[1]
COMMAND = "nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/batch_equivalence.py --studies 20"


# ---------------------------------------------------------------- studies


def write_report_sr(text: str, path: Path, image_dir: Path) -> Path:
    """The report as a DICOM Basic Text SR (PS3.3 A.35.1) with one TEXT item, in the images' study."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    first = pydicom.dcmread(next(iter(sorted(image_dir.iterdir()))), stop_before_pixels=True)

    def code(value: str, meaning: str) -> Dataset:
        c = Dataset()
        c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, "DCM", meaning
        return c

    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "TEXT"
    item.ConceptNameCodeSequence = [code("121070", "Findings")]
    item.TextValue = text

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    for key in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "AccessionNumber"):
        if key in first:
            setattr(ds, key, first.get(key))
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality, ds.ValueType = "SR", "CONTAINER"
    ds.ConceptNameCodeSequence = [code("18748-4", "Diagnostic Imaging Report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = [item]
    ds.save_as(path, enforce_file_format=True)
    return path


def make_studies(root: Path, n: int, *, seed0: int = SEED0, preset: str = "fast") -> list[dict]:
    """``n`` study folders under ``root`` (``dicom/`` + ``report.txt`` or ``report.dcm`` + ``truth.json``)."""
    from training.synthetic import SynthConfig, make_study, write_study

    studies = []
    for i in range(n):
        seed, relation = seed0 + i, RELATIONS[i % len(RELATIONS)]
        report_format = "sr" if i % 2 else "txt"
        t0 = time.perf_counter()
        study = make_study(seed, SynthConfig.preset(preset, report_relation=relation))
        folder = write_study(study, root / f"study-{i:03d}-{seed}", nifti=False)
        if report_format == "sr":
            write_report_sr(study.report, folder / "report.dcm", folder / "dicom")
            (folder / "report.txt").unlink()  # batch takes report.txt first; the SR must be the only report
        truth = study.truth.get("report", {})
        studies.append({"name": folder.name, "seed": seed, "relation": truth.get("relation", relation),
                        "report_format": report_format, "folder": str(folder),
                        "report": str(folder / ("report.dcm" if report_format == "sr" else "report.txt")),
                        "true_nodules": len(study.truth.get("nodules", []))})
        log.info("study %d/%d (seed %d, %s, %s) made in %.1f s", i + 1, n, seed, relation, report_format,
                 time.perf_counter() - t0)
    return studies


# ---------------------------------------------------------------- the two runs


def _cli(argv: list[str]) -> tuple[int, str]:
    """``preread ARGV`` in this process; its exit code and the last line it wrote on stderr."""
    from serving.cli import main as cli_main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli_main(argv)
    lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("error:")]
    return code, (lines[-1] if lines else "")


def run_batch_side(root: Path, out_dir: Path, workers: int | None) -> tuple[dict[str, dict], float]:
    """``preread batch ROOT --out rows.jsonl`` on an embedded Ray; {study name: row}."""
    rows_path, summary_path = out_dir / "batch_rows.jsonl", out_dir / "batch_summary.json"
    argv = ["batch", str(root), "--out", str(rows_path), "--json", str(summary_path)]
    if workers:
        argv += ["--workers", str(workers)]
    t0 = time.perf_counter()
    try:
        code, err = _cli(argv)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    wall = time.perf_counter() - t0
    if not rows_path.exists():
        raise RuntimeError(f"preread batch wrote no rows (exit {code}): {err}")
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    return {r["name"]: r for r in rows}, wall


def run_analyze_side(study: dict, out_dir: Path) -> tuple[dict | None, str | None, float]:
    """``preread analyze DICOM --report REPORT --json OUT``; (StudyResult dict or None, error, seconds)."""
    out = out_dir / f"analyze-{study['name']}.json"
    t0 = time.perf_counter()
    code, err = _cli(["analyze", str(Path(study["folder"]) / "dicom"), "--report", study["report"],
                      "--json", str(out), "--no-progress"])
    wall = time.perf_counter() - t0
    if code != 0 or not out.exists():
        return None, err or f"exit {code}", wall
    return json.loads(out.read_text()), None, wall


# ---------------------------------------------------------------- comparison


def diff(a, b, path: str = "", *, tol: float = 1e-6) -> tuple[list[dict], bool]:
    """Field-by-field differences between two JSON values beyond ``tol`` (absolute, floats), and whether
    the two are bit-identical. ``IGNORED`` top-level keys are skipped."""
    out: list[dict] = []
    exact = True

    def walk(x, y, p):
        nonlocal exact
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                if not p and k in IGNORED:
                    continue
                q = f"{p}.{k}" if p else k
                if k not in x or k not in y:
                    exact = False
                    out.append({"field": q, "batch": x.get(k, "<absent>"), "analyze": y.get(k, "<absent>")})
                else:
                    walk(x[k], y[k], q)
        elif isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                exact = False
                out.append({"field": f"{p} (length)", "batch": len(x), "analyze": len(y)})
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{p}[{i}]")
        elif _is_num(x) and _is_num(y) and not isinstance(x, bool) and not isinstance(y, bool):
            if x != y:
                exact = False
                if not math.isclose(float(x), float(y), rel_tol=0.0, abs_tol=tol):
                    out.append({"field": p, "batch": x, "analyze": y, "abs_diff": abs(float(x) - float(y))})
        elif x != y:
            exact = False
            out.append({"field": p, "batch": x, "analyze": y})

    walk(a, b, path)
    return out, exact


def _is_num(x) -> bool:
    return isinstance(x, (int, float))


def _brief(result: dict | None, *, findings: bool = True) -> dict:
    """What the table and the JSON show of one StudyResult (findings as [x, y, z, mean diameter, volume])."""
    if result is None:
        return {}
    out = {
        "n_ai": len(result["ai_findings"]),
        "discordances": [[d["type"], d["severity"]] for d in result["discordances"]],
        "verdict": result["verdict"], "priority": result["priority"],
    }
    if findings:
        out["ai_center_mm_diameter_mm_volume_mm3"] = [[*f["center_mm"], f["mean_diameter_mm"], f["volume_mm3"]]
                                                      for f in result["ai_findings"]]
    return out


_FLAT_LIST = re.compile(r"\[\s*([-+0-9.eE]+(?:,\s*[-+0-9.eE]+)*|\"[^\"]*\",\s*\"[^\"]*\")\s*\]")


def _dumps(doc: dict) -> str:
    """Indented JSON with short lists of numbers (and [type, severity] pairs) kept on one line."""
    return _FLAT_LIST.sub(lambda m: "[" + re.sub(r"\s*,\s*", ", ", m.group(1)) + "]", json.dumps(doc, indent=2))


def compare_study(study: dict, row: dict | None, single: dict | None, single_err: str | None, tol: float) -> dict:
    batch_err = None if row is None else row.get("error")
    if row is None:
        batch_err = "no row from preread batch"
    batch = json.loads(row["result_json"]) if row and not batch_err and row.get("result_json") else None
    rec = {k: study[k] for k in ("name", "seed", "relation", "report_format", "true_nodules")}
    rec.update(batch_error=batch_err, analyze_error=single_err, batch=_brief(batch),
               analyze=_brief(single, findings=False),
               actor=row.get("actor") if row else None)
    if batch is None or single is None:
        rec.update(status="failed", identical=False, bit_identical=False, differences=[])
        if batch_err == single_err and batch_err is not None:
            rec["status"] = "both failed (same error)"
        return rec
    differences, exact = diff(batch, single, tol=tol)
    # The row's own columns (what --to-worklist stores) must say what its StudyResult says.
    for col in ("verdict", "priority", "study_uid"):
        if row.get(col) != batch.get(col):
            exact = False
            differences.append({"field": f"batch row column {col}", "batch": row.get(col), "analyze": batch.get(col)})
    rec.update(identical=not differences, bit_identical=exact, differences=differences,
               status="identical" if exact else ("identical within tol" if not differences else "DIFFERENT"))
    return rec


# ---------------------------------------------------------------- main


def _weights_sha() -> dict:
    from models.registry import load_spec

    spec = load_spec(None)
    path = spec.weights.path()
    h = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return {"model": spec.name, "version": spec.version, "file": str(path), "sha256": h}


def _code_hashes() -> dict[str, str]:
    """sha256 of each source and config file the two sides could run (the checkout is shared and edited)."""
    files = [*REPO.glob("pipelines/*.py"), *REPO.glob("models/*.py"), *REPO.glob("serving/**/*.py"),
             *REPO.glob("configs/**/*.yaml")]
    return {str(f.relative_to(REPO)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(files) if f.is_file()}


def _code_change(before: dict[str, str], after: dict[str, str]) -> dict:
    """Files edited during the run, and those of them that matter: a module this process ran (the analyze side
    and the batch driver; Ray's workers run the same stage modules) or a config other than configs/training."""
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    loaded = set()
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if f:
            with contextlib.suppress(ValueError):
                loaded.add(str(Path(f).resolve().relative_to(REPO)))
    relevant = [k for k in changed
                if k in loaded or (k.startswith("configs/") and not k.startswith("configs/training/"))]
    return {"changed": changed, "relevant": relevant, "files_hashed": len(after)}


def _git_head() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _print_table(records: list[dict]) -> None:
    print(f"{'study':<20} {'relation':<11} {'rep':<4} {'AI b/a':>7} {'discordances, batch (major/minor/info)':<44} "
          f"{'verdict b/a':<25} {'priority b/a':<15} status")
    for r in records:
        b, a = r["batch"], r["analyze"]
        disc = _count_discordances(b.get("discordances"))
        print(f"{r['name']:<20} {r['relation']:<11} {r['report_format']:<4} "
              f"{str(b.get('n_ai', '-')) + '/' + str(a.get('n_ai', '-')):>7} {disc[:44]:<44} "
              f"{str(b.get('verdict', '-')) + '/' + str(a.get('verdict', '-')):<25} "
              f"{_fmt(b.get('priority')) + '/' + _fmt(a.get('priority')):<15} {r['status']}")
        for err_side in ("batch_error", "analyze_error"):
            if r.get(err_side):
                print(f"    {err_side}: {r[err_side]}")
        for d in r["differences"]:
            extra = f" (|diff| {d['abs_diff']:.3g})" if "abs_diff" in d else ""
            print(f"    {d['field']}: batch={json.dumps(d['batch'])[:80]} "
                  f"analyze={json.dumps(d['analyze'])[:80]}{extra}")


def _count_discordances(items: list | None) -> str:
    if items is None:
        return "-"
    by_sev = {s: sum(1 for _, sev in items if sev == s) for s in ("major", "minor", "info")}
    types = sorted({t for t, _ in items})
    return f"{len(items)} ({by_sev['major']}/{by_sev['minor']}/{by_sev['info']}) {','.join(types)}"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; returns the JSON document it writes (``summary.all_identical`` is the verdict)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=20, help="number of synthetic studies (default 20)")
    ap.add_argument("--workers", type=int, default=None, help="inference actors for preread batch "
                    "(default: the CLI's, one per GPU or 1 without GPUs)")
    ap.add_argument("--seed0", type=int, default=SEED0, help=f"first seed (default {SEED0})")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--tol", type=float, default=1e-6, help="absolute tolerance on floats (default 1e-6)")
    ap.add_argument("--json", type=Path, default=None,
                    help="output JSON (default benchmarks/results/<hardware>/batch_equivalence.json)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the studies and both sides' results here")
    args = ap.parse_args(argv)
    if args.studies < 1:
        ap.error("--studies must be >= 1")
    if args.seed0 < 900000:
        ap.error("--seed0 must be >= 900000 (seeds below are used for training and validation)")

    hw = hardware_info()
    weights_before, code_before, head = _weights_sha(), _code_hashes(), _git_head()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with contextlib.ExitStack() as stack:
        if args.keep:
            root = args.keep.resolve()
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batch-equiv-")))
        studies_dir, results_dir = root / "studies", root / "results"
        results_dir.mkdir(parents=True, exist_ok=True)

        t0 = time.perf_counter()
        studies = make_studies(studies_dir, args.studies, seed0=args.seed0, preset=args.preset)
        make_s = time.perf_counter() - t0
        log.info("made %d studies in %.1f s; running preread batch", len(studies), make_s)

        rows, batch_s = run_batch_side(studies_dir, results_dir, args.workers)
        log.info("preread batch: %d rows in %.1f s; running preread analyze one by one", len(rows), batch_s)

        records, analyze_s = [], 0.0
        for i, s in enumerate(studies, start=1):
            single, err, secs = run_analyze_side(s, results_dir)
            analyze_s += secs
            rec = compare_study(s, rows.get(s["name"]), single, err, args.tol)
            rec["analyze_s"] = round(secs, 2)
            records.append(rec)
            log.info("analyze %d/%d %s: %.1f s, %s", i, len(studies), s["name"], secs, rec["status"])

    weights_after, code_change = _weights_sha(), _code_change(code_before, _code_hashes())
    n_ident = sum(r["identical"] for r in records)
    n_bit = sum(r["bit_identical"] for r in records)
    weights_stable = weights_before["sha256"] == weights_after["sha256"]
    code_stable = not code_change["relevant"]
    summary = {
        "studies": len(records), "identical": n_ident, "bit_identical": n_bit,
        "different": sum(r["status"] == "DIFFERENT" for r in records),
        "failed": sum(r["status"].startswith(("failed", "both failed")) for r in records),
        "all_identical": n_ident == len(records) and weights_stable and code_stable,
        "weights_unchanged_during_run": weights_stable, "code_unchanged_during_run": code_stable,
        "make_s": round(make_s, 1), "batch_wall_s": round(batch_s, 1), "analyze_wall_s": round(analyze_s, 1),
        "ai_findings_compared": sum(r["batch"].get("n_ai", 0) for r in records if r["identical"]),
        "discordances_compared": sum(len(r["batch"].get("discordances", [])) for r in records if r["identical"]),
    }
    doc = {
        "benchmark": "batch_equivalence",
        "command": "python benchmarks/batch_equivalence.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started_utc": started, "hardware": hw,
        "env": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "settings": {"studies": args.studies, "workers": args.workers, "seed0": args.seed0, "preset": args.preset,
                     "tol_abs": args.tol, "ignored_fields": list(IGNORED),
                     "kept_in": str(args.keep) if args.keep else None},
        "model": {"before": weights_before, "after": weights_after},
        "code": {"git_head": head, **code_change},
        "summary": summary, "studies": records,
    }

    print(f"hardware: {hw['cpu']} ({hw['cpu_count']} cores), gpu: {hw['gpu']}; torch {hw['versions']['torch']}, "
          f"ray {hw['versions']['ray']}, monai {hw['versions']['monai']}, preread {hw['versions']['preread']}")
    print(f"model: {weights_before['model']} {weights_before['version']} sha256 {str(weights_before['sha256'])[:12]}"
          f"{'' if weights_stable else ' -> ' + str(weights_after['sha256'])[:12] + ' (CHANGED during the run)'}")
    _print_table(records)
    print(f"{n_ident}/{len(records)} identical ({n_bit} bit-identical, floats within {args.tol:g} otherwise; "
          f"timings_s ignored); {summary['ai_findings_compared']} AI findings and "
          f"{summary['discordances_compared']} discordances compared; batch {batch_s:.0f} s wall, "
          f"analyze one by one {analyze_s:.0f} s")
    if not weights_stable:
        print("the model weights changed during the run: the comparison is not valid, run it again")
    if not code_stable:
        print(f"code the two sides run was edited during the run (shared checkout): {code_change['relevant']}; "
              "they may have run different code; run it again")
    elif code_change["changed"]:
        print(f"edited during the run, but not run by either side: {code_change['changed']}")

    out = args.json or Path(__file__).resolve().parent / "results" / hardware_slug(hw) / "batch_equivalence.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_dumps(doc) + "\n")
    print(f"wrote {out}")
    return doc


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    sys.exit(0 if main()["summary"]["all_identical"] else 1)
