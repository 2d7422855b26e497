"""benchmarks/e2e.py: one small synthetic DICOM study through the whole pre-read, each stage timed, as JSON."""

from __future__ import annotations

import json

import pydicom

from benchmarks.e2e import DICOM_PARTS, STAGES, main
from tests.models.conftest import write_card

SMALL = ["--preset", "fast", "--rows", "50", "--pixel-mm", "4", "--slices", "12", "--slice-mm", "8", "--nodules", "2"]


def test_e2e_bench_times_every_stage_and_writes_seg_and_sr(tmp_path, capsys):
    card = write_card(tmp_path, inference={
        "coarse_spacing_mm": 4.0, "fine_spacing_mm": 2.0, "roi_size": [32, 32, 32], "overlap": 0.25,
        "sw_batch_size": 2, "candidate_threshold": 0.0, "threshold": 0.0, "min_confidence": 0.0,
        "lung_margin_mm": 4.0, "fine_margin_mm": 4.0, "min_volume_mm3": 1.0, "min_compactness": 0.0,
        "max_elongation": 1000.0, "min_lung_fraction": 0.0})
    out, keep = tmp_path / "e2e.json", tmp_path / "keep"
    code = main([*SMALL, "--backend", "torch", "--device", "cpu", "--threads", "1", "--repeats", "2",
                 "--model", str(card), "--cache", str(tmp_path / "cache"), "--keep", str(keep), "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    res = json.loads(out.read_text())

    assert res["benchmark"] == "e2e" and res["hardware"]["versions"]["highdicom"]
    assert res["study"]["slices"] == 12 and res["study"]["shape_kji"] == [12, 50, 50]
    assert res["settings"] == {"backend": "torch", "device": "cpu", "repeats": 2, "overlays": False,
                               "torch_threads": 1, "model": str(card)}
    assert res["model"]["name"] == "tiny" and res["model_load_s"] > 0
    for s in (*STAGES, *DICOM_PARTS):
        assert set(res["stages_s"][s]) == {"median", "min", "max", "n"} and res["stages_s"][s]["n"] == 2, s
    assert len(res["runs"]) == 2
    for run in res["runs"]:
        st = run["stages_s"]
        assert st["ingest"] > 0 and st["lungmask"] > 0 and st["infer"] > 0 and st["overlays"] == 0
        assert abs(run["total_s"] - sum(st.values())) < 1e-3 and run["wall_s"] >= run["total_s"] - 1e-3
        assert st["dicom_out"] >= run["dicom_parts_s"]["dicom_seg"] + run["dicom_parts_s"]["dicom_sr"] - 1e-3

    # Threshold 0 inside the lungs: the random network always yields findings, so the SEG and SR are written
    # from the source series and read back.
    run = res["runs"][0]
    assert run["ai_findings"] >= 1 and res["dicom_written"]
    seg, sr = run["dicom_check"]["seg"], run["dicom_check"]["sr"]
    assert seg["modality"] == "SEG" and 1 <= seg["segments"] <= run["ai_findings"]
    assert sr["modality"] == "SR" and sr["template"] == "1500"
    seg_ds = pydicom.dcmread(next(keep.glob("run-1/dicom/*seg*.dcm")))
    source = pydicom.dcmread(next((tmp_path / "cache").glob("e2e-*/dicom/*.dcm")), stop_before_pixels=True)
    assert seg_ds.StudyInstanceUID == source.StudyInstanceUID  # the SEG belongs to the source study

    goal = res["goal"]
    assert goal["seconds_per_study"] == 30.0 and goal["device"] == "cpu"
    assert goal["met"] == (res["wall_s"]["median"] <= 30.0)
    assert "dicom_seg" in printed and "goal <= 30 s per study on cpu" in printed


def test_e2e_bench_refuses_zero_repeats(tmp_path, capsys):
    code = main([*SMALL, "--repeats", "0", "--cache", str(tmp_path), "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--repeats" in err
