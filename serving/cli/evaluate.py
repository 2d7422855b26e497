"""``preread evaluate``: FROC/CPM, Dice and diameter error on held-out synthetic studies and on real CT."""

from __future__ import annotations

import typer

from serving.cli._common import write_json


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        model: str = typer.Option(None, "--model", help="Model card name (default: the card marked default)."),
        backend: str = typer.Option("torch", "--backend", help="torch | onnxruntime | bundle"),
        device: str = typer.Option(None, "--device", help="torch device (default: cuda when torch sees one, else cpu)."),
        synthetic: int = typer.Option(20, "--synthetic", help="Number of held-out synthetic studies (0: none)."),
        seed0: int = typer.Option(900000, "--seed0", help="First held-out seed (training seeds are refused)."),
        preset: str = typer.Option("fast", "--preset", help="Synthetic preset (fast | full | clinical)."),
        lungs: str = typer.Option("truth", "--lungs", help="Synthetic lung mask: truth | segment."),
        real: bool = typer.Option(True, "--real/--no-real", help="Also run on ../shared/data/ct when present."),
        cache: str = typer.Option(None, "--cache", help="Keep generated held-out studies here as .npz."),
        json_path: str = typer.Option("-", "--json", help="Write the results JSON here ('-' = stdout)."),
    ) -> None:
        """Evaluate the nodule model; prints a short summary on stderr and the full results as JSON."""
        import torch

        from pipelines.paths import SHARED_DATA_DIR
        from training.evaluate import evaluate_real, evaluate_synthetic, summary_lines

        dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        out: dict = {}
        if synthetic > 0:
            out["synthetic"] = evaluate_synthetic(list(range(seed0, seed0 + synthetic)), preset=preset, model=model,
                                                  backend=backend, device=dev, lungs=lungs, cache_dir=cache)
        ct = SHARED_DATA_DIR / "ct"
        if real and ct.is_dir():
            out["real"] = evaluate_real(ct, model=model, backend=backend, device=dev)
        for line in summary_lines(out):
            typer.echo(line, err=True)
        write_json(out, json_path)
