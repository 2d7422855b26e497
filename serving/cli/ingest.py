"""``preread ingest PATH [--series UID] --json -``: the series found in a study and the one selected."""

from __future__ import annotations

from pathlib import Path

import typer

from pipelines.ingest import load_study
from pipelines.ingest_config import load_ingest_config
from serving.cli._common import write_json


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest_cmd(
        path: Path = typer.Argument(..., help="DICOM folder, zip, DICOM file, or NIfTI/NRRD/MHA volume."),
        series: str | None = typer.Option(
            None, "--series", help="Read this SeriesInstanceUID instead of the rule's choice."),
        json_path: str = typer.Option("-", "--json", help="Write the JSON summary here ('-' = stdout)."),
        config: Path | None = typer.Option(
            None, "--config", help="Ingest configuration (default configs/ingest.yaml)."),
    ) -> None:
        """Read a CT study: list its series, select the one for nodules, report its geometry and warnings."""
        cfg = load_ingest_config(config) if config is not None else None
        with load_study(path, series_uid=series, config=cfg) as result:
            write_json(result.summary(), json_path)
