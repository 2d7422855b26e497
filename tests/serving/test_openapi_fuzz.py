"""Property-based requests generated from the app's own OpenAPI schema (schemathesis): never a 5xx, and every
error answer is the JSON ``{"error", "detail"}`` body."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import zlib
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from serving.app import create_app  # noqa: E402
from serving.auth import create_token  # noqa: E402
from serving.settings import Settings  # noqa: E402

_DIR = Path(tempfile.mkdtemp(prefix="preread-fuzz-"))
atexit.register(shutil.rmtree, _DIR, True)
APP = create_app(Settings(data_dir=_DIR / "data", max_queue=20, max_upload_mb=2))
TOKENS = {role: create_token(APP.state.db, APP.state.settings.secret_key, role, f"fuzz-{role}")[0]
          for role in ("reader", "submitter", "admin")}
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(method="DELETE")


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_5xx_and_json_errors(case):
    role = ("admin", "reader", "submitter")[zlib.crc32(case.operation.label.encode()) % 3]
    response = case.call(headers={"Authorization": f"Bearer {TOKENS[role]}"})
    assert response.status_code < 500, (case.operation.label, response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "detail"}, body


def test_openapi_names_the_fixed_routes():
    paths = APP.openapi()["paths"]
    for route in ("/health", "/studies", "/studies/{job_id}", "/worklist"):
        assert route in paths
    assert {"multipart/form-data", "application/json"} <= set(paths["/studies"]["post"]["requestBody"]["content"])
