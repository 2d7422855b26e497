"""``preread train``: train the nodule model from a config in configs/training/ (resumable)."""

from __future__ import annotations

import typer

from serving.cli._common import write_json


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        config: str = typer.Option("nodule-unet-s", "--config", help="Name under configs/training/ or a YAML path."),
        run: str = typer.Option("runs/nodule-unet-s", "--run", help="Run folder: checkpoint.pt, log.jsonl, best.pt."),
        device: str = typer.Option(None, "--device", help="torch device (default: cuda when torch sees one, else cpu)."),
        steps: int = typer.Option(None, "--steps", help="Stop after this many steps (default: the config's)."),
        no_resume: bool = typer.Option(False, "--no-resume", help="Start over even if the run has a checkpoint."),
        no_publish: bool = typer.Option(False, "--no-publish", help="Do not overwrite the model card's weights."),
        json_path: str = typer.Option("-", "--json", help="Write the summary JSON here ('-' = stdout)."),
    ) -> None:
        """Train the nodule segmentation network on synthetic studies; publish the best weights to the card."""
        import torch

        from training.train import load_config, train

        dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        cfg = load_config(config)
        summary = train(cfg, run, device=dev, resume=not no_resume, write_weights=not no_publish, max_steps=steps)
        write_json(summary, json_path)
