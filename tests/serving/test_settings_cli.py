"""Settings refuse unsafe defaults outside development; `preread token create` and `preread worklist`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.errors import ConfigError
from serving.settings import Settings, load_settings
from tests.serving.conftest import service_env


def test_production_refuses_the_development_secret_and_open_binding(tmp_path, monkeypatch):
    monkeypatch.setenv("PREREAD_ENVIRONMENT", "production")
    monkeypatch.setenv("PREREAD_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="PREREAD_SECRET_KEY"):
        load_settings()
    monkeypatch.setenv("PREREAD_SECRET_KEY", "x" * 40)
    assert load_settings().environment == "production"
    with pytest.raises(ConfigError, match="0.0.0.0"):
        load_settings(host="0.0.0.0")
    assert load_settings(host="0.0.0.0", allow_public_bind=True).host == "0.0.0.0"
    with pytest.raises(ConfigError, match="invalid PREREAD_"):
        load_settings(port=70000)
    monkeypatch.delenv("PREREAD_ENVIRONMENT")
    assert Settings(data_dir=tmp_path).db_url.startswith("sqlite:///")


def _cli(env, *args):
    return subprocess.run([sys.executable, "-c", "from serving.cli import run; run()", *args], env=env,
                          capture_output=True, text=True)


def test_token_create_prints_a_working_token_and_bad_role_exits_2(tmp_path):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    env = service_env(tmp_path / "data")
    out = _cli(env, "token", "create", "--role", "reader", "--name", "dr a")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("prt_") and len(token) > 40 and "\n" not in token
    bad = _cli(env, "token", "create", "--role", "root")
    assert bad.returncode == 2 and "unknown role" in bad.stderr and "Traceback" not in bad.stderr
    client = TestClient(create_app(Settings(data_dir=tmp_path / "data")))
    assert client.get("/me", headers={"Authorization": f"Bearer {token}"}).json()["name"] == "dr a"
    wl = _cli(env, "worklist", "--status", "nope")
    assert wl.returncode == 2 and "unknown status" in wl.stderr
