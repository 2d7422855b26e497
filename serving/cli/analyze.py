"""``preread analyze STUDY --report REPORT --json OUT [--overlays DIR] [--dicom-out DIR]``."""

from __future__ import annotations

from pathlib import Path

import typer

from serving.cli._common import write_json


def register(app: typer.Typer) -> None:
    @app.command("analyze")
    def analyze_cmd(
        study: Path = typer.Argument(..., help="DICOM folder, zip, multi-frame file, or NIfTI/NRRD/MHA volume."),
        report: Path = typer.Option(..., "--report", "-r", help="The original report: plain text or DICOM SR."),
        json_path: str = typer.Option("-", "--json", help="Write the StudyResult JSON here ('-' = stdout)."),
        overlays: Path | None = typer.Option(None, "--overlays", help="Folder for overlay PNGs."),
        dicom_out: Path | None = typer.Option(None, "--dicom-out", help="Folder for the DICOM SEG and SR."),
        series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID to analyse (default: rule)."),
        model: str | None = typer.Option(None, "--model", help="Model name from configs/models (default model)."),
        backend: str = typer.Option("torch", "--backend", help="torch | onnx | bundle"),
        device: str | None = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default: CUDA if present)"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
    ) -> None:
        """Pre-read one chest CT study against its report and write the StudyResult."""
        from pipelines.analyze import AnalyzeOptions, analyze_study
        from pipelines.report import parse_report_file

        parsed = parse_report_file(report)
        opts = AnalyzeOptions(series_uid=series, model=model, backend=backend, device=device,
                              overlays_dir=overlays, dicom_dir=dicom_out)
        result = _run_with_progress(lambda o: analyze_study(study, parsed, options=o), opts, progress)
        write_json(result, json_path)


def _run_with_progress(fn, opts, show: bool):
    if not show:
        return fn(opts)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<12}"), BarColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("pre-read", total=1.0)

        def on_progress(stage: str, frac: float) -> None:
            bar.update(task, description=stage, completed=frac)

        opts.progress = on_progress
        return fn(opts)
