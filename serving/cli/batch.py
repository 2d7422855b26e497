"""``preread batch INPUTS... [--ray-address ADDR] [--out results.parquet | --to-worklist]``."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from serving.cli._common import write_json


def register(app: typer.Typer) -> None:
    @app.command("batch")
    def batch_cmd(
        inputs: list[Path] = typer.Argument(..., help="Study folders (report.txt + DICOM), or folders of them."),
        ray_address: str | None = typer.Option(None, "--ray-address", envvar="PREREAD_RAY_ADDRESS",
                                               help="Ray cluster address; default: embedded Ray on loopback."),
        out: Path | None = typer.Option(None, "--out", help="results.parquet or results.jsonl"),
        to_worklist: bool = typer.Option(False, "--to-worklist", help="Also store the results in the worklist."),
        workers: int | None = typer.Option(None, "--workers", min=1, help="Inference actors (default: one per GPU, "
                                           "or 1 without GPUs)."),
        model: str | None = typer.Option(None, "--model"),
        backend: str = typer.Option("torch", "--backend"),
        json_path: str | None = typer.Option(None, "--json", help="Summary JSON ('-' = stdout)."),
    ) -> None:
        """Run a backlog of studies as a Ray Data pipeline; failing studies are recorded, the rest go on."""
        from serving.batch import discover_studies, init_ray, run_batch, write_rows

        studies = discover_studies(list(inputs))
        init_ray(ray_address, num_cpus=None if ray_address else os.cpu_count())
        summary_store = None
        rows = run_batch(studies, settings={"model": model, "backend": backend}, workers=workers)
        if out is not None:
            write_rows(rows, out)
        if to_worklist:
            from serving.worklist_import import import_rows

            summary_store = import_rows(rows)
        summary = {
            "studies": len(rows),
            "done": sum(r["error"] is None for r in rows),
            "failed": [{"name": r["name"], "error": r["error"]} for r in rows if r["error"]],
            "discordant": sum(r["verdict"] == "discordant" for r in rows),
            "out": str(out) if out else None,
            "worklist": summary_store if to_worklist else None,
        }
        write_json(summary, json_path or "-")
        if summary["done"] == 0:
            raise typer.Exit(1)
