"""Fixtures for the service tests: a fresh data folder, the app, tokens per role, study zips from real DICOM."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from pipelines.paths import SHARED_DATA_DIR


@pytest.fixture()
def make_settings(tmp_path):
    from serving.settings import Settings

    def _make(**kw):
        kw.setdefault("data_dir", tmp_path / "data")
        return Settings(**kw)

    return _make


@pytest.fixture()
def service(make_settings):
    """(app, TestClient, tokens by role) on a fresh store, no workers."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.auth import create_token

    def _make(**kw):
        app = create_app(make_settings(**kw))
        tokens = {role: create_token(app.state.db, app.state.settings.secret_key, role, f"test-{role}")[0]
                  for role in ("reader", "submitter", "admin")}
        return app, TestClient(app), tokens

    return _make


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_folder(folder: Path) -> bytes:
    return zip_bytes({p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()})


@pytest.fixture(scope="session")
def small_dicom() -> bytes:
    """A one-slice real CT (pydicom's CT_small.dcm, MIT): enough for intake tests."""
    p = SHARED_DATA_DIR / "dicom" / "pydicom-testfiles" / "CT_small.dcm"
    if not p.is_file():
        pytest.skip(f"real data not present at {SHARED_DATA_DIR}")
    return p.read_bytes()


@pytest.fixture(scope="session")
def lidc_folder() -> Path:
    p = SHARED_DATA_DIR / "ct" / "lidc-idri-0001"
    if not p.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA_DIR}")
    return p


def pipeline_ready() -> str | None:
    """None when the end-to-end pipeline can be imported, else what is missing."""
    import importlib

    for mod in ("pipelines.analyze", "pipelines.ingest", "pipelines.lungmask", "pipelines.report",
                "pipelines.infer", "pipelines.measure", "pipelines.discordance", "pipelines.overlays",
                "pipelines.dicom_out"):
        try:
            importlib.import_module(mod)
        except ImportError as err:
            return f"{mod}: {err}"
    from pipelines.errors import PrereadError
    from pipelines.infer import get_model

    import os

    try:  # the default model's weights are trained and committed by models/ and training/
        get_model(os.environ.get("PREREAD_MODEL") or None)
    except PrereadError as err:
        return err.one_line()
    return None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(data_dir: Path, **extra) -> dict:
    import os

    keep = ("PREREAD_MODEL", "PREREAD_BACKEND", "PREREAD_DEVICE", "PREREAD_SHARED_DATA", "PREREAD_CONFIGS_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREREAD_") or k in keep}
    env.update({"PREREAD_DATA_DIR": str(data_dir), "PREREAD_LOG_LEVEL": "INFO", "OMP_NUM_THREADS": "1",
                "PREREAD_POLL_S": "0.2"})
    env.update({f"PREREAD_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def stop_process(proc, timeout_s: float = 30.0) -> None:
    """SIGTERM a server the test started, SIGKILL it if it does not exit in time, and reap it."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for(predicate, timeout_s: float, what: str, interval: float = 0.5):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


LIVE_REPORT = ("CT CHEST WITHOUT CONTRAST. FINDINGS: There is a 2.5 cm spiculated mass in the left lower lobe. "
               "No other pulmonary nodules. IMPRESSION: Left lower lobe mass, suspicious for malignancy.")


@pytest.fixture(scope="session")
def live_service(tmp_path_factory, lidc_folder):
    """`preread serve` in a subprocess (one worker) on a free loopback port, with one real study analysed.

    Yields (base_url, tokens by role, job id of the analysed study, data dir).
    """
    import subprocess
    import sys

    import httpx

    reason = pipeline_ready()
    if reason:
        pytest.skip(f"end-to-end pipeline not available yet ({reason})")
    data_dir = tmp_path_factory.mktemp("live") / "data"
    port = free_port()
    env = service_env(data_dir, workers=1)
    tokens = {}
    for role in ("reader", "submitter", "admin"):
        out = subprocess.run([sys.executable, "-c", "from serving.cli import run; run()", "token", "create",
                              "--role", role, "--name", f"live-{role}"], env=env, capture_output=True, text=True,
                             check=True)
        tokens[role] = out.stdout.strip()
    log = open(data_dir / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", "from serving.cli import run; run()", "serve", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def up():
            try:
                return httpx.get(base + "/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return proc.poll() is not None and pytest.fail("preread serve exited: " +
                                                               (data_dir / "serve.log").read_text()[-2000:])
        wait_for(up, 60, "preread serve to answer /health")
        r = httpx.post(base + "/studies", headers=auth(tokens["submitter"]),
                       files={"file": ("study.zip", zip_folder(lidc_folder), "application/zip")},
                       data={"report": LIVE_REPORT}, timeout=60)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]

        def finished():
            d = httpx.get(f"{base}/studies/{job_id}", headers=auth(tokens["reader"]), timeout=10).json()
            return d if d["status"] in ("done", "failed") else None
        detail = wait_for(finished, 900, "the study to be analysed", interval=2)
        assert detail["status"] == "done", detail
        yield base, tokens, job_id, data_dir
    finally:
        stop_process(proc, 30)
        log.close()
