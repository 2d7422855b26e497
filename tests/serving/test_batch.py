"""preread batch on an embedded Ray: same results as analyze, one actor per GPU, failures recorded, loopback only."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

ray = pytest.importorskip("ray")

from pipelines.analyze import AnalyzeOptions, analyze_study  # noqa: E402
from serving.batch import discover_studies, init_ray, run_batch, write_rows  # noqa: E402
from training.synthetic import SynthConfig, make_study, write_study  # noqa: E402


def _make(root: Path, n: int, seed: int = 4200) -> Path:
    for i in range(n):
        write_study(make_study(seed + i, SynthConfig.preset("fast")), root / f"s{i:02d}")
    return root


def _key(result: dict, with_priority: bool = True) -> tuple:
    findings = tuple(sorted((tuple(round(c, 2) for c in f["center_mm"]), round(f["mean_diameter_mm"], 2),
                             f["composition"]) for f in result["ai_findings"]))
    discord = tuple(sorted((d["type"], d["severity"]) for d in result["discordances"]))
    return findings, discord, result["verdict"], round(result["priority"], 3) if with_priority else None


@pytest.fixture(scope="module")
def ray_two_fake_gpus():
    if ray.is_initialized():
        ray.shutdown()
    # Two declared GPU resources on a CPU machine: scheduling is shown without GPUs.
    init_ray(None, num_cpus=2, num_gpus=2)
    yield
    ray.shutdown()


def _descendants() -> set[int]:
    me = psutil.Process()
    return {p.pid for p in me.children(recursive=True)} | {me.pid}


def test_batch_equals_analyze_one_actor_per_gpu_and_failures_recorded(tmp_path, ray_two_fake_gpus):
    root = _make(tmp_path / "studies", 3)
    broken = tmp_path / "studies" / "zz-broken"
    (broken / "dicom").mkdir(parents=True)
    (broken / "dicom" / "slice.dcm").write_bytes(b"not a dicom file at all")
    (broken / "report.txt").write_text("CT chest. No pulmonary nodules.")

    studies = discover_studies([root])
    assert len(studies) == 4
    rows = run_batch(studies, show_progress=False)
    by_name = {r["name"]: r for r in rows}

    # The broken study is recorded with a one-line typed error; the others finish.
    assert by_name["zz-broken"]["error"] and "Traceback" not in by_name["zz-broken"]["error"]
    done = [r for r in rows if r["error"] is None]
    assert len(done) == 3

    # One inference actor per declared GPU, each holding a different GPU, and both used.
    gpu_sets = {r["actor"]: r["gpu_ids"] for r in done}
    assert len(gpu_sets) == 2, gpu_sets
    assert sorted(gpu_sets.values()) == ["0", "1"]

    # Batch and one-by-one analyze give identical findings and verdicts.
    for r in done:
        folder = root / r["name"]
        single = analyze_study(folder / "dicom", (folder / "report.txt").read_text(),
                               options=AnalyzeOptions(overlays=False, dicom_out=False))
        assert _key(json.loads(r["result_json"])) == _key(single.model_dump(mode="json")), r["name"]

    out = write_rows(rows, tmp_path / "results.parquet")
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 4

    # --to-worklist: the finished studies land in the worklist store, once, with their verdicts.
    from serving.settings import load_settings
    from serving.worklist_import import import_rows

    settings = load_settings(data_dir=tmp_path / "store")
    assert import_rows(rows, settings) == {"added": 3, "duplicate": 0, "failed": 0, "skipped": 1}
    assert import_rows(rows, settings)["duplicate"] == 3
    from serving.store import Store, WorklistQuery
    from serving.db import Database

    db = Database(settings.db_url)
    items = Store(db).worklist(WorklistQuery(status=["done"]))["items"]
    db.dispose()
    assert sorted(i["verdict"] for i in items) == sorted(r["verdict"] for r in done)

    # The embedded Ray listens on loopback only.
    pids = _descendants()
    listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening, "expected Ray's own listening sockets"
    bad = [c.laddr for c in listening if c.laddr.ip not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
    assert not bad, f"Ray listens beyond loopback: {bad}"


def test_service_worker_sends_the_analysis_to_ray(ray_two_fake_gpus, service, tmp_path):
    """With PREREAD_RAY_ADDRESS the service's worker runs each study as a Ray task (here on the embedded
    cluster with declared GPUs) and stores the same StudyResult the local path would."""
    from serving.worker import Worker
    from tests.serving.conftest import auth, zip_folder

    study = _make(tmp_path / "svc", 1, seed=4300) / "s00"
    app, client, tokens = service(ray_address="local")
    r = client.post("/studies", headers=auth(tokens["submitter"]),
                    files={"file": ("s.zip", zip_folder(study / "dicom"), "application/zip")},
                    data={"report": (study / "report.txt").read_text()})
    assert r.status_code == 202
    assert Worker(app.state.settings, "w-ray", db=app.state.db).run_once()
    d = client.get(f"/studies/{r.json()['id']}", headers=auth(tokens["reader"])).json()
    assert d["status"] == "done", d.get("error")
    local = analyze_study(study / "dicom", (study / "report.txt").read_text(),
                          options=AnalyzeOptions(overlays=False, dicom_out=False))
    # Priority grows with waiting time, so it is the one field that may differ.
    assert _key(d["result"], False) == _key(local.model_dump(mode="json"), False)
