"""``preread parse-report REPORT --json -``: the nodule findings and context of a report (text or DICOM SR)."""

from __future__ import annotations

from pathlib import Path

import typer

from serving.cli._common import write_json


def register(app: typer.Typer) -> None:
    @app.command("parse-report")
    def parse_report_cmd(
        report: Path = typer.Argument(..., help="Report: a text file (any encoding) or a DICOM Structured Report."),
        json_path: str = typer.Option("-", "--json", help="Write JSON here ('-' = stdout)."),
    ) -> None:
        """Extract every pulmonary nodule the report describes (size, place, certainty, history) and its context."""
        from pipelines.report import parse_report_file

        parsed = parse_report_file(report)
        write_json(parsed.to_json(), json_path)
