"""``preread bench``: per-stage times and throughput per backend and precision (logic: benchmarks/stages.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from serving.cli._common import write_json


def _split(values: list[str] | None) -> list[str] | None:
    """``--backend torch --backend onnx`` and ``--backend torch,onnx`` both give ["torch", "onnx"]."""
    if not values:
        return None
    return [v.strip().lower() for item in values for v in item.split(",") if v.strip()]


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_cmd(
        model: str | None = typer.Option(None, "--model", help="Model card name or path (default: the default card)."),
        backend: list[str] | None = typer.Option(None, "--backend", help="torch, torch-compile, onnx, tensorrt; "
                                                 "repeat or comma-separate for several (default torch)."),
        precision: list[str] | None = typer.Option(None, "--precision", help="fp32, fp16, bf16 (fp16/bf16 only on "
                                                   "CUDA); repeat or comma-separate (default fp32)."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Sliding-window batch (default: the card's)."),
        workers: int = typer.Option(1, "--workers", help="Worker processes sharing the studies."),
        studies: int = typer.Option(3, "--studies", help="Timed studies (after the warm-up)."),
        preset: str = typer.Option("fast", "--preset", help="Synthetic study size: fast, demo or full."),
        device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: CUDA when torch sees one)."),
        warmup: int = typer.Option(1, "--warmup", help="Untimed warm-up studies per backend/precision."),
        inputs: list[Path] | None = typer.Option(None, "--input", help="Existing study folders (report.txt + DICOM) "
                                                 "instead of synthetic ones."),
        results_dir: Path | None = typer.Option(None, "--results-dir", help="Where the JSON and PNG go (default "
                                                "benchmarks/results/<hardware>/)."),
        save: bool = typer.Option(True, "--save/--no-save", help="Write the JSON and PNG under --results-dir."),
        json_path: str | None = typer.Option(None, "--json", help="Also write the results JSON here ('-' = stdout)."),
    ) -> None:
        """Time every stage of the pre-read per study, and the throughput, for each backend and precision."""
        from benchmarks.stages import (PRESETS, RESULTS_ROOT, BenchRequest, print_table, run_bench, save_results,
                                       write_readme)
        from pipelines.errors import ConfigError

        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        req = BenchRequest(model=model, backends=_split(backend) or ["torch"], precisions=_split(precision) or ["fp32"],
                           batch_size=batch_size, workers=workers, studies=studies, preset=preset, device=device,
                           warmup=warmup, inputs=list(inputs or []))
        res = run_bench(req)
        print_table(res, file=sys.stderr if json_path == "-" else sys.stdout)
        if save:
            jp, pp = save_results(res, results_dir)
            typer.echo(f"wrote {jp} and {pp}", err=True)
            if results_dir is None or Path(results_dir).resolve().parent == RESULTS_ROOT.resolve():
                typer.echo(f"wrote {write_readme()}", err=True)
        write_json(res, json_path)
