"""preread bench: every stage, model time and the hardware block in its JSON; fp16 refused on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.stages import STAGES, readme_text
from serving.cli import main
from tests.models.conftest import write_card

@pytest.fixture()
def tiny_card(tmp_path) -> Path:
    """The tests' small random-weight card; a high candidate threshold and a coarse first pass keep it quick."""
    return write_card(tmp_path, inference={
        "coarse_spacing_mm": 3.0, "fine_spacing_mm": 1.0, "roi_size": [32, 32, 32], "overlap": 0.25,
        "sw_batch_size": 2, "candidate_threshold": 0.999, "threshold": 0.5, "min_confidence": 0.5,
        "lung_margin_mm": 4.0, "fine_margin_mm": 4.0, "min_volume_mm3": 1.0})


def test_bench_one_study_records_every_stage_and_the_hardware(tmp_path, tiny_card, capsys):
    res_dir = tmp_path / "results" / "here"
    out = tmp_path / "bench.json"
    code = main(["bench", "--model", str(tiny_card), "--backend", "torch", "--studies", "1", "--preset", "fast",
                 "--device", "cpu", "--results-dir", str(res_dir), "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    res = json.loads(out.read_text())

    hw = res["hardware"]
    assert hw["cpu"] and hw["cpu_count"] >= 1 and hw["versions"]["torch"] == torch.__version__
    assert res["hardware_slug"] and res["settings"]["device"] == "cpu" and res["settings"]["warmup_studies"] == 1

    (run,) = res["runs"]
    assert (run["backend"], run["precision"], run["device_used"]) == ("torch", "fp32", "cpu")
    for stage in STAGES:
        s = run["stages_s"][stage]
        assert set(s) == {"mean", "median", "p90", "n"} and s["n"] == 1 and s["mean"] >= 0, stage
    st = run["stages_s"]
    assert st["total"]["mean"] >= st["infer"]["mean"] + st["ingest"]["mean"] + st["preprocess"]["mean"] - 1e-3
    assert st["infer"]["mean"] >= run["model_per_volume_s"]["mean"] > 0  # the network runs inside infer
    assert run["windows_per_study"] >= 1 and run["model_per_window_ms"] > 0
    assert run["studies_per_hour"] > 0 and run["warmup_s"] > 0
    (study,) = run["studies"]
    assert study["slices"] > 0 and study["verdict"]

    # The JSON and the plot land in the results folder, and the README table is made from them.
    (jf,) = res_dir.glob("stage_bench*.json")
    png = jf.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme = readme_text(tmp_path / "results")
    row = next(line for line in readme.splitlines() if "| torch |" in line)
    assert "tiny 0.0.1" in row and png.name in row and f"{st['total']['mean']:.2f}" in row


def test_bench_refuses_fp16_on_cpu_with_one_line(tiny_card, capsys):
    code = main(["bench", "--model", str(tiny_card), "--precision", "fp16", "--device", "cpu", "--studies", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "ConfigError" in err and "fp16" in err and "CUDA" in err


def test_bench_unknown_backend_is_a_one_line_error(tiny_card, capsys):
    code = main(["bench", "--model", str(tiny_card), "--backend", "tensorflow", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "tensorflow" in err
