"""One study end to end: ingest → lung mask → nodule model → measure → report → discordance → artifacts.

``analyze_study`` is what the CLI (``preread analyze``), the service's workers and the Ray batch job call.
Each stage is a plain function of its own module; this module only wires them and times them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.errors import PrereadError
from pipelines.types import AIFinding, SeriesSummary, StudyResult

if TYPE_CHECKING:
    from pipelines.report import ParsedReport

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float], None]  # (stage name, fraction of the study done 0..1)

STAGES = ("ingest", "preprocess", "infer", "measure", "report", "compare", "artifacts")


@dataclass
class AnalyzeOptions:
    """What to run and where. ``device`` is a torch device string; None picks CUDA when torch sees one."""

    series_uid: str | None = None
    model: str | None = None
    backend: str = "torch"
    device: str | None = None
    overlays: bool = True
    dicom_out: bool = True
    overlays_dir: Path | None = None  # default: <out_dir>/overlays
    dicom_dir: Path | None = None  # default: <out_dir>/dicom
    waited_s: float = 0.0
    progress: ProgressFn | None = None
    extra: dict = field(default_factory=dict)


def _device(name: str | None):
    import torch

    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Timer:
    def __init__(self, progress: ProgressFn | None):
        self.timings: dict[str, float] = {}
        self._progress = progress
        self._t0 = time.perf_counter()

    def stage(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self_inner):
                if timer._progress:
                    timer._progress(name, STAGES.index(name) / len(STAGES) if name in STAGES else 0.0)
                self_inner.t = time.perf_counter()

            def __exit__(self_inner, *exc):
                timer.timings[name] = round(timer.timings.get(name, 0.0) + time.perf_counter() - self_inner.t, 4)
                return False

        return _Ctx()

    def total(self) -> float:
        return round(time.perf_counter() - self._t0, 4)


@dataclass
class PreparedStudy:
    """A study after the CPU stages that need no model: its volume, lung mask and parsed report."""

    ingested: object  # pipelines.ingest.IngestResult
    volume: object  # pipelines.types.Volume
    lungs: object  # pipelines.lungmask.LungSegmentation
    parsed: object  # pipelines.report.ParsedReport
    timings: dict[str, float]


def prepare_study(study_path: Path | str, report: "str | ParsedReport",
                  options: AnalyzeOptions | None = None) -> PreparedStudy:
    """CPU stages: parse the report, ingest the series, segment the lungs."""
    from pipelines.ingest import load_study
    from pipelines.lungmask import segment_lungs
    from pipelines.report import parse_report

    opts = options or AnalyzeOptions()
    timer = _Timer(opts.progress)
    with timer.stage("report"):
        parsed = parse_report(report) if isinstance(report, str) else report
    with timer.stage("ingest"):
        ingested = load_study(Path(study_path), series_uid=opts.series_uid)
        volume = ingested.volume
    with timer.stage("preprocess"):
        lungs = segment_lungs(volume)
    return PreparedStudy(ingested=ingested, volume=volume, lungs=lungs, parsed=parsed, timings=timer.timings)


def run_model(prepared: PreparedStudy, options: AnalyzeOptions | None = None):
    """The accelerator stage: nodule candidates from the model inside the lung mask."""
    from pipelines.infer import detect_nodules

    opts = options or AnalyzeOptions()
    timer = _Timer(opts.progress)
    with timer.stage("infer"):
        detections = detect_nodules(prepared.volume, prepared.lungs.labels, model=opts.model, backend=opts.backend,
                                    device=_device(opts.device))
    prepared.timings.update(timer.timings)
    detections.stage_timings_s = dict(timer.timings)  # travels with the detections across processes (Ray)
    return detections


def finish_study(prepared: PreparedStudy, detections, options: AnalyzeOptions | None = None, *,
                 out_dir: Path | str | None = None) -> StudyResult:
    """CPU stages after the model: measure each candidate, compare with the report, write artifacts."""
    from pipelines.discordance import compare
    from pipelines.measure import measure_mask

    opts = options or AnalyzeOptions()
    timer = _Timer(opts.progress)
    volume, lungs, parsed = prepared.volume, prepared.lungs, prepared.parsed
    out = Path(out_dir) if out_dir is not None else None

    ai_findings: list[AIFinding] = []
    masks: dict[str, np.ndarray] = {}
    measurements = {}
    reserve: list[AIFinding] = []  # candidates the model set apart, for report-guided matching only
    with timer.stage("measure"):
        order = sorted(detections.candidates, key=lambda c: -float(c.confidence))
        rejected = list(getattr(detections, "rejected", []))
        if rejected and _points_at_images(parsed):
            order += rejected
        for n, cand in enumerate(order, start=1):
            kept = n <= len(detections.candidates)
            fid = f"ai-{n}" if kept else f"ai-g{n - len(detections.candidates)}"
            mask = cand.full_mask(volume.array.shape) if hasattr(cand, "full_mask") else cand.mask
            try:
                m = measure_mask(volume, mask, lung_labels=lungs.labels, lobe_labels=lungs.lobes)
            except PrereadError as err:  # a candidate too small or degenerate to measure
                log.info("candidate %s not measurable: %s", fid, err)
                continue
            (ai_findings if kept else reserve).append(m.to_ai_finding(fid, float(cand.confidence)))
            masks[fid] = mask
            measurements[fid] = m

    with timer.stage("compare"):
        cmp = compare(ai_findings, parsed.findings, parsed.context, waited_s=opts.waited_s,
                      slice_spacing_mm=float(volume.spacing_mm[2]),
                      ai_available=bool(getattr(detections, "ok", True)), reserve=reserve)
        taken = {m.ai for m in cmp.matches if m.report_guided}
        ai_findings += [a for a in reserve if a.id in taken]  # a set-apart candidate the report points at
        for a in reserve:
            if a.id not in taken:
                masks.pop(a.id, None)
                measurements.pop(a.id, None)

    artifacts: dict = {}
    if opts.overlays_dir is not None or opts.dicom_dir is not None or out is not None:
        with timer.stage("artifacts"):
            artifacts = _write_artifacts(out, opts, prepared.ingested, volume, ai_findings, masks, measurements,
                                         parsed, cmp)

    close = getattr(prepared.ingested, "close", None)
    if close is not None:
        close()  # a zip's temporary folder is no longer needed
    timings = dict(getattr(detections, "stage_timings_s", {}))
    timings.update(prepared.timings)
    timings.update(timer.timings)
    timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 4)
    result = StudyResult(
        study_uid=volume.study_uid,
        series_uid=volume.series_uid,
        series=SeriesSummary(
            rows=int(volume.array.shape[1]), cols=int(volume.array.shape[2]), slices=int(volume.array.shape[0]),
            spacing_mm=[round(float(s), 4) for s in volume.spacing_mm], warnings=list(volume.warnings),
        ),
        ai_findings=ai_findings,
        report_findings=parsed.findings,
        report_context=parsed.context,
        matches=cmp.matches,
        discordances=cmp.discordances,
        verdict=cmp.verdict,
        priority=cmp.priority,
        model=detections.model_info,
        timings_s=timings,
    )
    if artifacts:
        result.artifacts = artifacts  # type: ignore[attr-defined]  (extra field, allowed by the model)
    if opts.progress:
        opts.progress("done", 1.0)
    log.info("study analysed: %d AI findings, %d report findings, verdict %s, %.1f s",
             len(ai_findings), len(parsed.findings), cmp.verdict, timings["total"])
    return result


def analyze_study(
    study_path: Path | str,
    report: "str | ParsedReport",
    *,
    out_dir: Path | str | None = None,
    options: AnalyzeOptions | None = None,
) -> StudyResult:
    """Run the whole pre-read on one study and its report; write artifacts under ``out_dir`` when given.

    ``report`` is the report text, or a report already parsed (e.g. from a DICOM SR by
    :func:`pipelines.report.parse_report_file`). The same three stages run in the Ray batch job.
    """
    opts = options or AnalyzeOptions()
    prepared = prepare_study(study_path, report, opts)
    detections = run_model(prepared, opts)
    return finish_study(prepared, detections, opts, out_dir=out_dir)


def _write_artifacts(out: Path | None, opts, ingested, volume, ai_findings, masks, measurements, parsed, cmp) -> dict:
    artifacts: dict = {}
    overlays_dir = opts.overlays_dir or (out / "overlays" if out is not None and opts.overlays else None)
    dicom_dir = opts.dicom_dir or (out / "dicom" if out is not None and opts.dicom_out else None)
    if overlays_dir is not None and ai_findings:
        from pipelines.overlays import render_overlays

        report_sizes = _report_size_text(cmp, parsed)
        paths = render_overlays(volume, ai_findings, masks, measurements, report_sizes, overlays_dir)
        artifacts["overlays"] = [str(p) for p in paths]
    if dicom_dir is not None and ai_findings:
        from pipelines.dicom_out import write_seg, write_sr

        if volume.metadata.get("resampled") or any(f is not None for f in getattr(ingested, "source_frames", [])):
            log.warning("DICOM SEG/SR not written: the volume was resampled or came from a multi-frame file, "
                        "so its slices are not the source images one to one")
            artifacts["dicom_skipped"] = "volume resampled or multi-frame source"
        elif getattr(ingested, "source_files", None):
            sources = ingested.source_headers()
            seg = write_seg(sources, masks, ai_findings, dicom_dir)
            sr = write_sr(sources, seg, ai_findings, measurements, dicom_dir)
            artifacts["seg"] = str(seg)
            artifacts["sr"] = str(sr)
    return artifacts


def _points_at_images(parsed) -> bool:
    """Whether any positive report finding names an image (only then can a set-apart candidate be taken)."""
    return any(not f.negated and f.image_ref is not None and f.image_ref.image is not None
               for f in getattr(parsed, "findings", []))


def _report_size_text(cmp, parsed) -> dict[str, str]:
    """For each matched AI finding, the report's words for its size (shown beside the AI's on overlays)."""
    by_id = {f.id: f for f in parsed.findings}
    out: dict[str, str] = {}
    for m in cmp.matches:
        if m.ai and m.report and m.report in by_id:
            rf = by_id[m.report]
            if rf.size_mm:
                out[m.ai] = "Report: " + " x ".join(f"{s:g}" for s in rf.size_mm) + " mm"
            else:
                out[m.ai] = "Report: no size given"
    return out
