"""20 synthetic studies through ``preread batch`` (embedded Ray) and ``preread analyze`` one by one: identical
findings, discordances, verdicts and priorities (benchmarks/batch_equivalence.py; about 30 minutes on 2 cores)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")


@pytest.mark.slow
def test_batch_and_analyze_identical_on_20_studies(tmp_path):
    from benchmarks.batch_equivalence import main

    doc = main(["--studies", "20", "--json", str(tmp_path / "batch_equivalence.json")])
    records = doc["studies"]
    assert len(records) == 20
    failed = [(r["name"], r["batch_error"], r["analyze_error"]) for r in records
              if r["batch_error"] or r["analyze_error"]]
    assert not failed, failed
    different = {r["name"]: r["differences"] for r in records if not r["identical"]}
    assert not different, different
    assert doc["summary"]["weights_unchanged_during_run"], "model weights changed during the run; run it again"
    assert doc["summary"]["code_unchanged_during_run"], "pipelines/models/configs changed during the run; run it again"
    assert doc["summary"]["all_identical"]
    # Every relation was exercised, through both report formats.
    assert {r["relation"] for r in records} >= {"concordant", "missed", "negative", "phantom"}
    assert {r["report_format"] for r in records} == {"txt", "sr"}


def test_the_comparison_reports_each_differing_field():
    """The comparator the 20-study proof relies on: a moved centre, a changed verdict, a lost discordance and a
    float beyond the tolerance are each reported by field; wall-clock timings are not; tiny float noise is
    within tolerance but not bit-identical."""
    from benchmarks.batch_equivalence import diff

    a = {"ai_findings": [{"center_mm": [10.0, -20.0, 30.0], "volume_mm3": 100.0}], "verdict": "discordant",
         "discordances": [{"type": "missed_finding", "severity": "major"}], "priority": 91.92,
         "timings_s": {"infer": 12.0}}
    b = {"ai_findings": [{"center_mm": [10.0, -20.5, 30.0], "volume_mm3": 100.0 + 1e-9}], "verdict": "concordant",
         "discordances": [], "priority": 91.92, "timings_s": {"infer": 30.0}}
    out, exact = diff(a, b, tol=1e-6)
    fields = {d["field"] for d in out}
    assert fields == {"ai_findings[0].center_mm[1]", "verdict", "discordances (length)"}
    assert not exact
    same, exact_same = diff(a, dict(a, timings_s={"infer": 1.0}))
    assert same == [] and exact_same
    near, exact_near = diff(a, dict(a, priority=91.92 + 1e-9))
    assert near == [] and not exact_near
