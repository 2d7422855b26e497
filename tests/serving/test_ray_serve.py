"""The Ray Serve predictor: the model loaded once per replica, batched requests, the same result as analyze,
and a bad study answered with its typed error without failing its batch-mates."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from pipelines.analyze import AnalyzeOptions, analyze_study  # noqa: E402
from serving.batch import init_ray  # noqa: E402
from training.synthetic import SynthConfig, make_study, write_study  # noqa: E402


def test_serve_predictor_matches_analyze_and_types_errors(tmp_path):
    from ray import serve

    from serving.ray_serve import build_predictor_app

    study = write_study(make_study(4400, SynthConfig.preset("fast")), tmp_path / "s")
    report = (study / "report.txt").read_text()
    if ray.is_initialized():
        ray.shutdown()
    init_ray(None, num_cpus=2)
    try:
        handle = serve.run(build_predictor_app(), name="preread-test", route_prefix=None)
        good = handle.analyze.remote({"study_path": str(study / "dicom"), "report_text": report})
        bad = handle.analyze.remote({"study_path": str(tmp_path / "missing"), "report_text": report})
        good, bad = good.result(timeout_s=300), bad.result(timeout_s=300)
    finally:
        serve.shutdown()
        ray.shutdown()
    assert good["error"] is None
    local = analyze_study(study / "dicom", report, options=AnalyzeOptions(overlays=False, dicom_out=False))
    assert good["result"]["verdict"] == local.verdict
    assert [round(f["mean_diameter_mm"], 2) for f in good["result"]["ai_findings"]] == \
        [round(f.mean_diameter_mm, 2) for f in local.ai_findings]
    assert bad["result"] is None and bad["code"] == "ingest_error" and bad["http_status"] == 422
    assert "Traceback" not in bad["error"]
