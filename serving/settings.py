"""Runtime settings of the service, read once from ``PREREAD_*`` environment variables.

The embedded default needs nothing running: a SQLite file and artifacts under ``PREREAD_DATA_DIR``, a local
worker pool, listening on 127.0.0.1. Outside ``PREREAD_ENVIRONMENT=development`` the settings refuse unsafe
defaults (the development token secret, a listen address open to the network without an explicit opt-in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.errors import ConfigError

DEV_SECRET = "development-only-secret-change-me"


class Settings(BaseSettings):
    """Every knob of ``preread serve``; environment variable = ``PREREAD_`` + the field name in capitals."""

    model_config = SettingsConfigDict(env_prefix="PREREAD_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Field(default=Path("preread-data"), description="SQLite file, uploads and artifacts live here")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/preread.db")
    secret_key: str = Field(default=DEV_SECRET, description="HMAC key under which API tokens are stored hashed")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    allow_public_bind: bool = Field(default=False, description="allow a non-loopback host outside development")

    workers: int = Field(default=1, ge=0, le=64, description="local worker processes started by `preread serve`")
    max_queue: int = Field(default=200, ge=1, description="queued+running jobs above which POST /studies answers 429")
    max_attempts: int = Field(default=3, ge=1, le=20, description="tries per job before it ends as failed")
    lease_s: float = Field(default=300.0, gt=0, description="a running job whose worker is silent this long is retaken")
    heartbeat_s: float | None = Field(default=None, gt=0, description="lease renewal period; default lease_s / 3")
    job_timeout_s: float = Field(default=3600.0, gt=0, description="a try running longer stops renewing its lease")
    poll_s: float = Field(default=1.0, gt=0, description="idle worker's wait between queue polls")
    retry_backoff_s: float = Field(default=5.0, ge=0, description="delay before a failed try is retried")

    max_upload_mb: float = Field(default=1024.0, gt=0, description="largest accepted request body")
    max_report_chars: int = Field(default=100_000, ge=100)

    dicomweb_url: str | None = Field(default=None, description="PACS DICOMweb root (QIDO/WADO/STOW), e.g. http://pacs/dicom-web")
    dicomweb_timeout_s: float = Field(default=120.0, gt=0)
    dicomweb_token: str | None = Field(default=None, description="bearer token sent to the PACS, if it needs one")
    dicomweb_poll_s: float = Field(default=0.0, ge=0, description="poll the PACS for new CT studies this often; 0 = off")
    dicomweb_poll_limit: int = Field(default=100, ge=1, le=10000, description="studies per poll")
    stow_results: bool = Field(default=True, description="store SEG and SR back to the PACS for studies pulled from it")

    device: str | None = Field(default=None, description="torch device for the workers; default CUDA when present")
    model: str | None = None
    backend: str = "torch"
    ray_address: str | None = Field(default=None, description="Ray cluster address: workers send each analysis "
                                    "there (one GPU per task when the cluster has GPUs) instead of running it here; "
                                    "'local' starts an embedded Ray on loopback")
    viewer_slices: bool = Field(default=True, description="render lung-window slices and AI outlines for the viewer")

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> "Settings":
        if self.environment != "development":
            if self.secret_key == DEV_SECRET or len(self.secret_key) < 32:
                raise ConfigError(
                    "PREREAD_SECRET_KEY is unset or shorter than 32 characters outside development",
                    hint="set it to a long random value, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`",
                )
            if self.host not in ("127.0.0.1", "localhost", "::1") and not self.allow_public_bind:
                raise ConfigError(
                    f"PREREAD_HOST={self.host} opens the service to the network outside development",
                    hint="put it behind a TLS proxy and set PREREAD_ALLOW_PUBLIC_BIND=true to confirm",
                )
        return self

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'preread.db').resolve()}"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def incoming_dir(self) -> Path:
        return self.data_dir / "incoming"

    @property
    def heartbeat_period_s(self) -> float:
        return self.heartbeat_s if self.heartbeat_s else self.lease_s / 3.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def ensure_dirs(self) -> None:
        for d in (self.data_dir, self.jobs_dir, self.incoming_dir):
            d.mkdir(parents=True, exist_ok=True)


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with keyword overrides (used by the CLI and the tests)."""
    try:
        return Settings(**overrides)
    except ConfigError:
        raise
    except ValueError as err:  # pydantic ValidationError: name the bad variable
        raise ConfigError(f"invalid PREREAD_* setting: {' '.join(str(err).split())}") from err
