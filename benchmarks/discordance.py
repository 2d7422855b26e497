"""Discordance on held-out synthetic studies whose report's relation to the truth is known.

Each study comes from ``training.synthetic.make_study(seed, cfg)`` with its report relation forced in turn
(concordant, missed, undersized, oversized, negative, hedged, phantom) and seeds from 920000 up (training
uses 1000-1024, validation 2000-2004, evaluation >= 900000). The report is read by the real parser
(``pipelines.report.parse_report``); the AI side depends on ``--mode``:

* ``oracle``: AI findings are the truth nodules' own numbers (sizes, composition, lobe, slice), with the
  uncertainty ``pipelines.measure`` would give for that series; ``--size-noise`` adds a measurement error
  drawn with that uncertainty (taken as a 2-sigma value, as configs/measurement.yaml defines it). This tests
  parser + matching + guidelines + discordance, not the detector.
* ``truth-masks``: the truth label map measured by ``pipelines.measure.measure_labels`` (measurement +
  discordance, no detector).
* ``pipeline``: the whole pre-read, ``pipelines.analyze.analyze_study`` on the study written as DICOM.

The reference ("expected") comes from the truth and the guideline tables alone, never from
``pipelines.discordance``: a study is expected to carry a MAJOR flag when
  undersized/oversized: the true and the stated size of the target fall in categories of different rank;
  missed: the missed nodule's category outranks the report's own (with the nodule count it implies);
  negative: some non-calcified nodule is not dismissed by the guideline;
and none when concordant, hedged or phantom. Expected major cases that the tolerance rule demotes to
borderline therefore count as misses: that is the price of the tolerance, measured here.

Prints the confusion tables and writes ``benchmarks/results/<hardware>/discordance_<mode>.json``.

    python benchmarks/discordance.py --mode oracle --n 70
    python benchmarks/discordance.py --mode pipeline --n 70
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.hardware import hardware_info, hardware_slug  # noqa: E402
from pipelines.discordance import compare  # noqa: E402
from pipelines.guidelines import Guideline, load_guideline  # noqa: E402
from pipelines.types import AIFinding, ImageRef, Location, ReportContext, ReportFinding  # noqa: E402

log = logging.getLogger("benchmarks.discordance")

RELATIONS = ("concordant", "missed", "undersized", "oversized", "negative", "hedged", "phantom")
FLAG_TYPES = ("category_change", "missed_finding", "report_negative_ai_positive", "unconfirmed_report_finding",
              "borderline", "hedged_report")
EXPECTED_TYPE = {"undersized": "category_change", "oversized": "category_change", "missed": "missed_finding",
                 "negative": "report_negative_ai_positive"}
SEED0 = 920000


# -- the reference, from truth and tables only ---------------------------------------------------------------
def _mean(sizes) -> float | None:
    s = [float(x) for x in (sizes or []) if x]
    if not s:
        return None
    return s[0] if len(s) == 1 else (s[0] + s[1]) / 2.0


def _rank(g: Guideline, comp: str, mean: float, solid: float | None, count: int, prior) -> int:
    prior_mean = _mean(prior)
    growing = prior_mean is not None and g.is_growth(mean, prior_mean)
    return g.categorize(comp, mean, solid_component_mm=solid, count=max(1, count), growing=growing).rank


def expected_for(truth: dict) -> dict:
    """Whether the study should carry a major flag, and of which type, from truth + guideline tables."""
    rep = truth["report"]
    relation = rep["relation"]
    g = load_guideline("lung_rads_2022" if rep["screening"] else "fleischner_2017")
    nodules = {n["id"]: n for n in truth["nodules"]}
    noncalc = [n for n in truth["nodules"] if n["composition"] != "calcified"]
    stated = [p for p in rep["per_nodule"] if p.get("mentioned")] + list(rep.get("phantom_findings") or [])
    stated_noncalc = [p for p in stated if p.get("stated_composition") != "calcified"]
    n_stated = len(stated_noncalc)
    out = {"relation": relation, "guideline": g.name, "major": False, "type": None}
    if relation in ("undersized", "oversized"):
        rec = next(p for p in rep["per_nodule"] if p.get("nodule_id") == rep["target_nodule_id"])
        n = nodules[rec["nodule_id"]]
        count = max(n_stated, len(noncalc))
        r_true = _rank(g, n["composition"], n["mean_diameter_mm"], n.get("solid_component_mm"), count,
                       rec.get("prior_size_mm"))
        r_stated = _rank(g, rec["stated_composition"], rec["stated_mean_mm"],
                         rec.get("solid_component_stated_mm") or n.get("solid_component_mm"), count,
                         rec.get("prior_size_mm"))
        out.update(major=r_true != r_stated, true_rank=r_true, stated_rank=r_stated)
    elif relation == "missed":
        n = nodules[rep["target_nodule_id"]]
        report_rank = max((_rank(g, p["stated_composition"], p["stated_mean_mm"], p.get("solid_component_stated_mm"),
                                 n_stated, p.get("prior_size_mm")) for p in stated_noncalc),
                          default=g.no_nodule_category().rank)
        if n["composition"] == "calcified":
            out.update(major=False)
        else:
            r = _rank(g, n["composition"], n["mean_diameter_mm"], n.get("solid_component_mm"), n_stated + 1, None)
            out.update(major=r > report_rank, true_rank=r, stated_rank=report_rank)
    elif relation == "negative":
        ranks = [_rank(g, n["composition"], n["mean_diameter_mm"], n.get("solid_component_mm"), len(noncalc), None)
                 for n in noncalc]
        out.update(major=any(r > g.no_nodule_category().rank for r in ranks))
    out["types"] = []
    if out["major"]:
        out["type"] = EXPECTED_TYPE[relation]
        out["types"] = [out["type"]]
        if relation == "missed" and not stated:  # the report then says nothing or "no nodules": either flag fits
            out["types"].append("report_negative_ai_positive")
    return out


# -- the AI side -----------------------------------------------------------------------------------------------
def oracle_findings(truth: dict, *, noise: bool, rng: np.random.Generator) -> list[AIFinding]:
    from pipelines.measure import _uncertainty, load_measurement_config

    unc_cfg = load_measurement_config().uncertainty
    sx, sy, sz = truth["spacing_mm"]
    out = []
    for n in truth["nodules"]:
        u = _uncertainty(n["mean_diameter_mm"], [sx, sy], sz, True, unc_cfg)
        scale = 1.0
        if noise:  # the measurement error an AI with this stated uncertainty (2 sigma) would make
            scale = max(0.2, 1.0 + float(rng.normal(0.0, u / 2.0)) / n["mean_diameter_mm"])
        long_, short = n["long_axis_mm"] * scale, n["short_axis_mm"] * scale
        solid = n.get("solid_component_mm")
        out.append(AIFinding(
            id=f"ai-{n['id']}", kind="nodule", confidence=1.0, center_mm=n["center_mm"],
            center_voxel=n["center_voxel"], instance_number=n["instance_number"], long_axis_mm=long_,
            short_axis_mm=short, mean_diameter_mm=(long_ + short) / 2.0,
            max_3d_diameter_mm=n["max_3d_diameter_mm"] * scale, volume_mm3=n["volume_mm3"] * scale ** 3,
            uncertainty_mm=u, composition=n["composition"],
            solid_component_mm=solid * scale if solid is not None else None,
            location=Location(side=n["side"], lobe=n["lobe"]),
        ))
    return out


def truth_report(truth: dict) -> tuple[list[ReportFinding], ReportContext]:
    """The report as the generator wrote it (stated sizes, places, images), bypassing the parser."""
    rep = truth["report"]
    findings: list[ReportFinding] = []
    negated_done = False
    for p in list(rep["per_nodule"]) + list(rep.get("phantom_findings") or []):
        span = list(p.get("span") or [0, 0])
        if not p.get("mentioned"):
            if p.get("relation") == "negated" and not negated_done:
                findings.append(ReportFinding(id="t-neg", kind="nodule", text=p.get("text") or "", span=span,
                                              count=0, negated=True, negation_scope="all"))
                negated_done = True
            continue
        ref = p.get("image_ref") or {}
        findings.append(ReportFinding(
            id=f"t-{p.get('nodule_id') or 'phantom'}", kind="nodule", text=p.get("text") or "", span=span,
            size_mm=list(p["stated_size_mm"]), mean_diameter_mm=_mean(p["stated_size_mm"]),
            hedged=bool(p.get("hedged")), composition=p.get("stated_composition"),
            location=Location(side=p.get("stated_side"), lobe=p.get("stated_lobe")),
            prior_size_mm=p.get("prior_size_mm"), image_ref=ImageRef(series=ref.get("series"), image=ref.get("image")),
            solid_component_mm=p.get("solid_component_stated_mm"),
        ))
    context = ReportContext(screening=bool(rep["screening"]), stated_category=rep.get("stated_category"),
                            recommendation=rep.get("recommendation"))
    return findings, context


def truth_mask_findings(study) -> list[AIFinding]:
    from pipelines.measure import measure_labels

    if not np.any(study.labels):
        return []  # a study without nodules
    ms = measure_labels(study.volume, study.labels, lung_labels=study.lung_labels, lobe_labels=study.lobe_labels)
    return [m.to_ai_finding(f"ai-{m.label}", 1.0) for m in ms]


# -- the run -----------------------------------------------------------------------------------------------------
@dataclass
class _Cached:
    """What the oracle mode needs of a study: its truth and its report text (``--cache``)."""

    truth: dict
    report: str


def run(mode: str, n: int, seed0: int, preset: str, size_noise: bool, workdir: Path | None,
        report_source: str = "parsed", cache: Path | None = None) -> list[dict]:
    from pipelines.report import parse_report
    from training.synthetic import SynthConfig, make_study

    rows = []
    rng = np.random.default_rng(seed0)
    for idx in range(n):
        relation = RELATIONS[idx % len(RELATIONS)]
        seed = seed0 + idx
        t0 = time.perf_counter()
        cached = cache / f"{preset}-{relation}-{seed}.json" if cache and mode == "oracle" else None
        if cached is not None and cached.is_file():
            study = _Cached(**json.loads(cached.read_text()))
        else:
            study = make_study(seed, SynthConfig.preset(preset, report_relation=relation))
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps({"truth": study.truth, "report": study.report}, default=float))
        t_gen = time.perf_counter() - t0
        truth = study.truth
        expected = expected_for(truth)
        t1 = time.perf_counter()
        if mode == "pipeline":
            from pipelines.analyze import AnalyzeOptions, analyze_study
            from training.synthetic import write_study

            base = Path(workdir or tempfile.mkdtemp(prefix="preread-disc-"))
            sdir = write_study(study, base / f"study-{seed}")
            res = analyze_study(sdir / "dicom", study.report, options=AnalyzeOptions(overlays=False, dicom_out=False))
            discordances, verdict, priority = res.discordances, res.verdict, res.priority
            n_ai = len(res.ai_findings)
        else:
            if report_source == "truth":
                report_findings, context = truth_report(truth)
            else:
                parsed = parse_report(study.report)
                report_findings, context = parsed.findings, parsed.context
            ai = truth_mask_findings(study) if mode == "truth-masks" else oracle_findings(truth, noise=size_noise,
                                                                                          rng=rng)
            cmp = compare(ai, report_findings, context, slice_spacing_mm=truth["spacing_mm"][2])
            discordances, verdict, priority = cmp.discordances, cmp.verdict, cmp.priority
            n_ai = len(ai)
        flags = [{"type": d.type, "severity": d.severity, "explanation": d.explanation} for d in discordances]
        rows.append({
            "seed": seed, "relation": truth["report"]["relation"], "requested": relation,
            "guideline": expected["guideline"], "expected_major": expected["major"],
            "expected_type": expected["type"], "expected_types": expected["types"], "verdict": verdict,
            "priority": priority,
            "any_major": any(f["severity"] == "major" for f in flags), "flags": flags, "ai_findings": n_ai,
            "truth_nodules": len(truth["nodules"]), "seconds_generate": round(t_gen, 2),
            "seconds_analyse": round(time.perf_counter() - t1, 3),
        })
        log.info("%d/%d seed %d %s: expected major %s, flags %s", idx + 1, n, seed, rows[-1]["relation"],
                 expected["major"], [(f["type"], f["severity"]) for f in flags])
    return rows


def summarise(rows: list[dict]) -> dict:
    exp_major = [r for r in rows if r["expected_major"]]
    concordant = [r for r in rows if r["relation"] == "concordant"]
    not_major = [r for r in rows if not r["expected_major"]]
    hit = [r for r in exp_major if r["any_major"]]
    typed_hit = [r for r in exp_major if any(f["severity"] == "major" and f["type"] in r["expected_types"]
                                             for f in r["flags"])]
    per_relation: dict[str, dict] = defaultdict(lambda: {"n": 0, "expected_major": 0, "any_major": 0,
                                                          "verdict": Counter(), "flags": Counter()})
    for r in rows:
        d = per_relation[r["relation"]]
        d["n"] += 1
        d["expected_major"] += int(r["expected_major"])
        d["any_major"] += int(r["any_major"])
        d["verdict"][r["verdict"]] += 1
        for t in {(f["type"], f["severity"]) for f in r["flags"]}:
            d["flags"][f"{t[0]}:{t[1]}"] += 1
    confusion: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        majors = sorted({f["type"] for f in r["flags"] if f["severity"] == "major"})
        right = [t for t in majors if t in r["expected_types"]]
        raised = right[0] if right else (majors[0] if majors else "no major")
        confusion[r["expected_type"] or "no major expected"][raised] += 1

    def frac(a, b):
        return round(a / b, 4) if b else None

    return {
        "studies": len(rows),
        "expected_major": len(exp_major),
        "recall_major": frac(len(hit), len(exp_major)),
        "recall_major_right_type": frac(len(typed_hit), len(exp_major)),
        "concordant_studies": len(concordant),
        "major_on_concordant": frac(sum(r["any_major"] for r in concordant), len(concordant)),
        "major_on_not_expected": frac(sum(r["any_major"] for r in not_major), len(not_major)),
        "per_relation": {k: {**v, "verdict": dict(v["verdict"]), "flags": dict(v["flags"])}
                         for k, v in per_relation.items()},
        "confusion_expected_vs_raised_major": {k: dict(v) for k, v in confusion.items()},
        "missed_major_cases": [{"seed": r["seed"], "relation": r["relation"], "flags": r["flags"]}
                               for r in exp_major if not r["any_major"]],
        "false_major_cases": [{"seed": r["seed"], "relation": r["relation"], "flags": r["flags"]}
                              for r in not_major if r["any_major"]],
    }


def print_tables(summary: dict, mode: str) -> None:
    short = {"category_change": "cat_change", "missed_finding": "missed", "report_negative_ai_positive": "neg_ai_pos",
             "unconfirmed_report_finding": "unconfirmed", "borderline": "borderline", "hedged_report": "hedged"}
    print(f"\nDiscordance benchmark, mode {mode}: {summary['studies']} held-out synthetic studies")
    print("Cells: studies with a flag of that type, as major/minor/info counts (M/m/i).")
    head = f"{'relation':<11}{'n':>3}{'exp.maj':>8}{'any maj':>8}  " + "".join(f"{short[t]:>13}" for t in FLAG_TYPES) \
        + "   verdict d/c/i"
    print(head)
    print("-" * len(head))
    for rel in RELATIONS:
        d = summary["per_relation"].get(rel)
        if not d:
            continue
        cells = []
        for t in FLAG_TYPES:
            m, mi, inf = (d["flags"].get(f"{t}:{s}", 0) for s in ("major", "minor", "info"))
            cells.append(f"{m}/{mi}/{inf}" if (m or mi or inf) else "-")
        v = d["verdict"]
        print(f"{rel:<11}{d['n']:>3}{d['expected_major']:>8}{d['any_major']:>8}  " + "".join(f"{c:>13}" for c in cells)
              + f"   {v.get('discordant', 0)}/{v.get('concordant', 0)}/{v.get('indeterminate', 0)}")
    print("\nExpected major type (rows) vs major flag raised (columns):")
    conf = summary["confusion_expected_vs_raised_major"]
    cols = sorted({c for v in conf.values() for c in v})
    print(f"{'':<30}" + "".join(f"{c[:26]:>28}" for c in cols))
    for k, v in sorted(conf.items()):
        print(f"{k:<30}" + "".join(f"{v.get(c, 0):>28}" for c in cols))
    print(f"\nrecall of major discordances: {summary['recall_major']}  (goal >= 0.95; "
          f"{summary['expected_major']} expected), with the expected type: {summary['recall_major_right_type']}")
    print(f"major flags on concordant studies: {summary['major_on_concordant']}  (goal <= 0.05; "
          f"{summary['concordant_studies']} concordant); on all studies expected without one: "
          f"{summary['major_on_not_expected']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("oracle", "truth-masks", "pipeline"), default="oracle")
    ap.add_argument("--n", type=int, default=70, help="number of studies (relations cycle through all seven)")
    ap.add_argument("--seed", type=int, default=SEED0, help="first held-out seed")
    ap.add_argument("--preset", default="fast", help="synthetic preset (fast | full | clinical)")
    ap.add_argument("--size-noise", action="store_true", help="oracle: add measurement error at the AI's uncertainty")
    ap.add_argument("--report", dest="report_source", choices=("parsed", "truth"), default="parsed",
                    help="oracle/truth-masks: read the report with the parser (default) or take the generator's "
                         "own record of what it wrote (tests the discordance logic alone)")
    ap.add_argument("--workdir", type=Path, default=None, help="pipeline mode: where the DICOM studies are written")
    ap.add_argument("--cache", type=Path, default=None,
                    help="oracle: keep each study's truth and report text here and reuse them (regenerate after "
                         "the synthetic generator changes)")
    ap.add_argument("--out", type=Path, default=None, help="JSON result path")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("pipelines", "training", "monai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.n < 1:
        ap.error("--n must be at least 1")

    t0 = time.perf_counter()
    if args.mode == "pipeline" and args.report_source == "truth":
        ap.error("--report truth applies to the oracle and truth-masks modes; the pipeline parses the report")
    rows = run(args.mode, args.n, args.seed, args.preset, args.size_noise, args.workdir, args.report_source,
               args.cache)
    summary = summarise(rows)
    label = args.mode + (" + size noise" if args.size_noise else "") + f", report {args.report_source}"
    print_tables(summary, label)
    hw = hardware_info()
    name = (f"discordance_{args.mode}{'_noise' if args.size_noise else ''}"
            f"{'_truthreport' if args.report_source == 'truth' else ''}.json")
    out = args.out or Path(__file__).resolve().parent / "results" / hardware_slug(hw) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "discordance", "mode": args.mode, "size_noise": args.size_noise, "report": args.report_source,
        "settings": {"n": args.n, "seed": args.seed, "preset": args.preset},
        "command": "python benchmarks/discordance.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "hardware": hw, "seconds": round(time.perf_counter() - t0, 1), "summary": summary, "studies": rows,
    }
    out.write_text(json.dumps(result, indent=1, default=lambda o: o if not isinstance(o, float) or math.isfinite(o)
                              else None))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
