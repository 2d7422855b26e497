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
    return None
