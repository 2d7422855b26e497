"""benchmarks/inference.py: ours and plain MONAI on one small synthetic study, written as JSON with the ratio."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.inference import BASELINE_SPACING_MM, main, synth_config
from tests.models.conftest import write_card

# A whole chest at 4 mm pixels, 12 slices of 8 mm: small in millimetres, so the baseline's 0.703 mm grid is too.
SMALL = ["--preset", "fast", "--rows", "50", "--pixel-mm", "4", "--slices", "12", "--slice-mm", "8", "--nodules", "2"]


def _windows(n: int, roi: int = 96, overlap: float = 0.25) -> int:
    step = int(roi * (1 - overlap))
    return 1 if n <= roi else math.ceil((n - roi) / step) + 1


def test_inference_bench_writes_both_methods_with_ratio_memory_and_sensitivity(tmp_path, capsys):
    card = write_card(tmp_path)
    out = tmp_path / "inference.json"
    code = main([*SMALL, "--backends", "torch", "--device", "cpu", "--threads", "1", "--model", str(card),
                 "--cache", str(tmp_path / "cache"), "--in-process", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    res = json.loads(out.read_text())

    assert res["benchmark"] == "inference" and res["hardware"]["versions"]["torch"]
    assert res["baseline"]["spacing_mm"] == list(BASELINE_SPACING_MM) and res["baseline"]["roi"] == [96, 96, 96]
    shape, sp = res["study"]["shape_kji"], res["study"]["spacing_mm"]
    assert shape == [12, 50, 50] and sp == [4.0, 4.0, 8.0] and len(res["study"]["nodules"]) == 2

    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"baseline", "ours"}
    for r in rows.values():
        assert "error" not in r, r
        assert r["backend"] == "torch" and r["device"] == "cpu" and r["threads"] == 1
        assert r["total_s"] > 0 and r["network_s"] > 0 and r["peak_rss_mb"] > 0
        d = r["detection"]
        assert d["nodules"] == 2 and 0 <= d["found"] <= 2 and d["false_positives"] >= 0
        assert r["model"]["name"] == "tiny"
    # The baseline swept the whole volume on the 0.703 x 0.703 x 1.25 mm grid with 96^3 windows at 0.25 overlap.
    grid = [round(n * s / t) for n, s, t in zip(shape, sp[::-1], BASELINE_SPACING_MM[::-1])]
    assert rows["baseline"]["windows"] == math.prod(_windows(n) for n in grid)
    assert "lungmask" in rows["ours"]["timings_s"] and "detect" in rows["ours"]["timings_s"]

    s = res["speedup"]["torch"]
    assert s["speedup"] == pytest.approx(rows["baseline"]["total_s"] / rows["ours"]["total_s"], abs=0.01)
    assert isinstance(s["goal_met"], bool) and s["goal_met"] == (s["speedup"] >= 3 and s["equal_or_better_sensitivity"])
    assert "baseline" in printed and "ours" in printed and f"{s['speedup']}x" in printed


def test_small_study_options_keep_or_shrink_the_field_of_view():
    full = synth_config("full")
    kept = synth_config("full", rows=128)
    assert kept.rows == kept.cols == 128
    assert kept.pixel_spacing_mm[1] * 128 == pytest.approx(full.pixel_spacing_mm[1] * 512, rel=1e-3)
    thin = synth_config("full", slice_mm=2.0)
    assert thin.n_slices * 2.0 == pytest.approx(full.n_slices * max(full.slice_thickness_mm))


def test_unknown_preset_is_one_line_exit_2(tmp_path, capsys):
    code = main(["--preset", "nope", "--cache", str(tmp_path), "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nope" in err
    assert not (tmp_path / "x.json").exists()
