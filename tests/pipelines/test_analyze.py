"""The whole pre-read on synthetic studies (truth known) and on the real LIDC slab, through the CLI too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from pipelines.analyze import AnalyzeOptions, analyze_study
from serving.cli import main
from training.synthetic import SynthConfig, make_study, write_study


def _study(tmp_path: Path, seed: int, relation: str) -> Path:
    cfg = SynthConfig.preset("fast", report_relation=relation)
    return write_study(make_study(seed, cfg), tmp_path / f"study-{seed}")


@pytest.fixture(scope="module")
def negative_study(tmp_path_factory) -> Path:
    # A study with nodules whose report says there are none: the textbook major discordance.
    return _study(tmp_path_factory.mktemp("neg"), 9101, "negative")


def test_report_negative_study_is_major_discordance_with_artifacts(negative_study, tmp_path):
    truth = json.loads((negative_study / "truth.json").read_text())
    big = [n for n in truth["nodules"] if n["mean_diameter_mm"] >= 6 and n["composition"] != "calcified"]
    result = analyze_study(negative_study / "dicom", (negative_study / "report.txt").read_text(),
                           out_dir=tmp_path / "out")
    assert result.verdict == "discordant" if big else result.verdict in ("concordant", "discordant")
    if big:
        types = {(d.type, d.severity) for d in result.discordances}
        assert ("report_negative_ai_positive", "major") in types, result.discordances
        assert result.priority > 50
    # Each AI finding carries geometry in both frames, and its slice as the InstanceNumber a reader sees.
    for f in result.ai_findings:
        assert len(f.center_mm) == 3 and len(f.center_voxel) == 3
        assert f.instance_number is not None
        assert f.long_axis_mm >= f.short_axis_mm > 0
    art = result.model_extra.get("artifacts", {})
    if result.ai_findings:
        assert art["overlays"] and all(Path(p).is_file() for p in art["overlays"])
        seg = pydicom.dcmread(art["seg"])
        sr = pydicom.dcmread(art["sr"])
        assert seg.Modality == "SEG" and sr.Modality == "SR"
        assert seg.StudyInstanceUID == result.study_uid == sr.StudyInstanceUID
    for stage in ("ingest", "preprocess", "infer", "measure", "total"):
        assert result.timings_s[stage] >= 0


_LOBE_WORDS = {"RUL": "right upper lobe", "RML": "right middle lobe", "RLL": "right lower lobe",
               "LUL": "left upper lobe", "LLL": "left lower lobe"}


def test_a_set_apart_candidate_is_taken_only_where_the_report_points(negative_study, tmp_path):
    """A candidate the model set apart (below its false-positive reduction's threshold) is no finding on its own;
    a report finding on its lobe and image takes it (report-guided), and it then travels with the findings."""
    from pipelines.analyze import finish_study, prepare_study, run_model
    from pipelines.measure import measure_mask
    from pipelines.report import parse_report

    opts = AnalyzeOptions(overlays=False, dicom_out=True)
    prep = prepare_study(negative_study / "dicom", "No pulmonary nodules.", opts)
    det = run_model(prep, opts)
    assert det.candidates, "the model finds the study's nodules"
    set_apart = det.candidates[0]  # as if the reduction had scored it 0.001, and kept no other candidate
    det.candidates = []
    set_apart.confidence = 0.001
    det.rejected.insert(0, set_apart)
    m = measure_mask(prep.volume, set_apart.full_mask(prep.volume.array.shape), lung_labels=prep.lungs.labels,
                     lobe_labels=prep.lungs.lobes)
    assert m.location.lobe in _LOBE_WORDS
    size = round(m.mean_diameter_mm + 10)

    def report(image: int) -> str:
        return f"Findings: There is a {size} mm nodule in the {_LOBE_WORDS[m.location.lobe]} (series 3, image {image})."

    prep.parsed = parse_report(report(m.instance_number))
    pointed = finish_study(prep, det, opts, out_dir=tmp_path / "pointed")
    guided = [x for x in pointed.matches if x.report_guided]
    assert len(guided) == 1 and guided[0].ai == "ai-g1", (pointed.matches, pointed.ai_findings, prep.parsed.findings)
    taken = next(a for a in pointed.ai_findings if a.id == "ai-g1")
    assert taken.confidence == pytest.approx(0.001) and taken.instance_number == m.instance_number
    assert all("only where the report points" in d.explanation for d in pointed.discordances if d.ai == "ai-g1")
    seg = pydicom.dcmread(pointed.model_extra["artifacts"]["seg"])
    assert len(seg.SegmentSequence) == len(pointed.ai_findings)  # the taken candidate is segmented too

    prep2 = prepare_study(negative_study / "dicom", report(m.instance_number + 60), opts)
    elsewhere = finish_study(prep2, det, opts)
    assert not any(x.report_guided for x in elsewhere.matches)
    assert "ai-g1" not in {a.id for a in elsewhere.ai_findings}
    assert ("unconfirmed_report_finding", "minor") in {(d.type, d.severity) for d in elsewhere.discordances}


def test_cli_analyze_writes_study_result_json(negative_study, tmp_path):
    out = tmp_path / "result.json"
    rc = main(["analyze", str(negative_study / "dicom"), "--report", str(negative_study / "report.txt"),
               "--json", str(out), "--no-progress", "--overlays", str(tmp_path / "ov")])
    assert rc == 0
    data = json.loads(out.read_text())
    for key in ("study_uid", "series_uid", "series", "ai_findings", "report_findings", "report_context",
                "matches", "discordances", "verdict", "priority", "model", "timings_s"):
        assert key in data
    assert data["model"]["backend"] and data["model"]["device"] == "cpu"
    assert data["series"]["spacing_mm"] == pytest.approx(
        json.loads((negative_study / "truth.json").read_text())["spacing_mm"], abs=1e-3)


def test_cli_analyze_bad_inputs_exit_2_one_line(tmp_path):
    report = tmp_path / "r.txt"
    report.write_text("CT chest. No pulmonary nodules.")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.dcm").write_bytes(b"\x00" * 300)
    for args in (["analyze", str(junk), "--report", str(report)],
                 ["analyze", str(tmp_path / "missing"), "--report", str(report)],
                 ["analyze", str(junk), "--report", str(tmp_path / "no-report.txt")]):
        proc = subprocess.run([sys.executable, "-c", "from serving.cli import run; run()", *args, "--no-progress"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_real_lidc_slab_negative_report_is_major_readers_report_is_not(shared_data):
    """LIDC-IDRI-0001: four radiologists outlined a ~3 cm nodule in the left lower lobe. A report that says
    there are no nodules is a major discordance; a report with the readers' size and lobe is not (the bundled
    model's false positives may still raise minor flags: see the model card)."""
    slab = shared_data / "ct" / "lidc-idri-0001"
    opts = AnalyzeOptions(overlays=False, dicom_out=False)
    negative = analyze_study(slab, "CT CHEST WITHOUT CONTRAST.\nFINDINGS: Lungs: No pulmonary nodules.\n"
                             "IMPRESSION: No pulmonary nodules.", options=opts)
    assert negative.series.slices == 16
    assert negative.series.spacing_mm[2] == pytest.approx(2.5, abs=0.01)
    assert ("report_negative_ai_positive", "major") in {(d.type, d.severity) for d in negative.discordances}
    assert negative.verdict == "discordant" and negative.priority >= 60

    readers = analyze_study(slab, "CT CHEST WITHOUT CONTRAST.\nFINDINGS: Lungs: 3.1 x 2.6 cm solid mass in the "
                            "left lower lobe.\nIMPRESSION: 3.1 cm left lower lobe mass. Recommend PET/CT and "
                            "tissue sampling.", options=opts)
    assert not [d for d in readers.discordances if d.severity == "major"], readers.discordances
    matched = [m for m in readers.matches if m.ai and m.report]
    assert matched, "the readers' nodule is matched to an AI finding"
    assert readers.priority < negative.priority
