"""Typed view of ``configs/ingest.yaml``: limits, geometry tolerances, selection rule data."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.config import load_yaml_config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArchiveLimits(_Strict):
    max_entries: int = Field(20000, gt=0)
    max_total_bytes: int = Field(8 << 30, gt=0)
    max_entry_bytes: int = Field(2 << 30, gt=0)
    max_ratio: float = Field(200.0, gt=1)


class IngestLimits(_Strict):
    """Hard limits so that a hostile input cannot take the machine's memory or time."""

    max_files: int = Field(20000, gt=0)
    max_file_bytes: int = Field(2 << 30, gt=0)
    max_voxels: int = Field(512 * 512 * 2048, gt=0)
    max_frames: int = Field(4096, gt=0)
    archive: ArchiveLimits = Field(default_factory=ArchiveLimits)


class GeometryConfig(_Strict):
    orientation_tolerance: float = Field(1e-3, gt=0)
    tilt_tolerance_deg: float = Field(0.5, ge=0)
    spacing_tolerance_mm: float = Field(0.05, ge=0)
    spacing_tolerance_ratio: float = Field(0.02, ge=0)
    duplicate_tolerance_mm: float = Field(0.01, ge=0)
    non_uniform: Literal["resample", "refuse"] = "resample"
    tilt: Literal["resample", "refuse"] = "resample"
    axial_max_angle_deg: float = Field(30.0, gt=0, lt=90)


class MeasurementGradeConfig(_Strict):
    max_gap_ratio: float = Field(1.5, gt=1)
    max_gap_mm: float = Field(10.0, gt=0)
    min_slices: int = Field(3, ge=1)


class PixelConfig(_Strict):
    padding_fill_hu: int = -1024
    lossy_transfer_syntaxes: list[str] = Field(default_factory=list)
    decode_threads: int = Field(0, ge=0)


class SelectionConfig(_Strict):
    spacing_tie_mm: float = Field(0.1, ge=0)
    lung_kernel_patterns: list[str] = Field(default_factory=list)


class IngestConfig(_Strict):
    limits: IngestLimits = Field(default_factory=IngestLimits)
    geometry: GeometryConfig = Field(default_factory=GeometryConfig)
    measurement_grade: MeasurementGradeConfig = Field(default_factory=MeasurementGradeConfig)
    pixels: PixelConfig = Field(default_factory=PixelConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)


def load_ingest_config(path: str | Path | None = None) -> IngestConfig:
    """Read and validate the ingest configuration (default ``configs/ingest.yaml``)."""
    return load_yaml_config(IngestConfig, "ingest.yaml", path, what="ingest configuration")


@lru_cache(maxsize=1)
def default_ingest_config() -> IngestConfig:
    return load_ingest_config()
